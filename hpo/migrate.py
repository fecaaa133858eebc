"""``hpo migrate NAME --from URL --to URL``: move a study to a bigger storage (SQLite -> server).

Copies the study's user and system attrs (config, search space, analyses, LLM ledger, dashboard
notes), every trial with its params, values, intermediate values and attrs (trial numbers are
kept), then checks the copy. optuna-dashboard keys trial notes by the storage's internal trial
id, which changes between storages; those keys are rewritten. Checkpoints stay where they are
(the artifact ids in the trials are kept): point the new workers at the same artifact store, or
copy the ``artifacts/`` folder along.

    >>> migrate_study("smoke", "sqlite:///runs/hpo.db",
    ...               "postgresql://hpo:pw@db/hpo")                     # doctest: +SKIP
    "copied study 'smoke': 12 trials, 5 user attrs, 31 system attrs -> postgresql://hpo:***@db/hpo"
"""

from __future__ import annotations

import re
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.errors import ConfigError, HpoError
from hpo.storage import open_storage, redact, resolve_storage_url

_TRIAL_KEY = re.compile(r"^dashboard:(\d+):")


class MigrationError(HpoError):
    """The copy does not match its source (nothing is deleted from the source)."""


def migrate_study(name: str, from_url: str, to_url: str) -> str:
    """Copy study ``name`` from ``from_url`` to ``to_url``; returns a one-line summary."""
    src_url, dst_url = resolve_storage_url(from_url), resolve_storage_url(to_url)
    src_storage, dst_storage = open_storage(src_url), open_storage(dst_url)
    try:
        src = optuna.load_study(study_name=name, storage=src_storage)
    except KeyError:
        raise ConfigError("--from", "study", name, f"a study in {redact(src_url)}") from None
    try:
        dst_storage.get_study_id_from_name(name)
    except KeyError:
        pass
    else:
        raise ConfigError("--to", "study", name,
                          f"a name not yet used in {redact(dst_url)} (migrate never overwrites)")
    trials = src.get_trials(deepcopy=False)
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    if running:
        raise ConfigError("--from", "study", name,
                          f"a study with no running trial (trials {running} are running: "
                          "stop its workers first, or wait for them to be declared dead)")

    dst = optuna.create_study(study_name=name, storage=dst_storage, directions=src.directions)
    id_map: dict[int, int] = {}
    for trial in trials:
        id_map[trial._trial_id] = dst_storage.create_new_trial(dst._study_id,
                                                               template_trial=trial)
    for key, value in src.user_attrs.items():
        dst.set_user_attr(key, value)
    system = src_storage.get_study_system_attrs(src._study_id)
    for key, value in system.items():
        dst_storage.set_study_system_attr(dst._study_id, _remap(key, id_map), value)
    _verify(src, optuna.load_study(study_name=name, storage=dst_storage), src_storage,
            dst_storage, id_map)
    return (f"copied study {name!r}: {len(trials)} trials, {len(src.user_attrs)} user attrs, "
            f"{len(system)} system attrs -> {redact(dst_url)}")


def _remap(key: str, id_map: dict[int, int]) -> str:
    match = _TRIAL_KEY.match(key)
    if match and int(match.group(1)) in id_map:
        return f"dashboard:{id_map[int(match.group(1))]}:" + key[match.end():]
    return key


def _trial_view(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {"number": t.number, "state": t.state, "values": t.values, "params": t.params,
            "intermediate": t.intermediate_values, "user_attrs": t.user_attrs,
            "system_attrs": t.system_attrs}


def _verify(src: optuna.Study, dst: optuna.Study, src_storage: Any, dst_storage: Any,
            id_map: dict[int, int]) -> None:
    a = [_trial_view(t) for t in src.get_trials(deepcopy=False)]
    b = [_trial_view(t) for t in dst.get_trials(deepcopy=False)]
    if a != b:
        bad = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y) if len(a) == len(b) else -1
        raise MigrationError(f"the copy differs from the source (trial index {bad}; "
                             f"{len(a)} vs {len(b)} trials); the source is untouched")
    if src.user_attrs != dst.user_attrs:
        raise MigrationError("the copied study user attrs differ; the source is untouched")
    want = {_remap(k, id_map): v
            for k, v in src_storage.get_study_system_attrs(src._study_id).items()}
    if want != dst_storage.get_study_system_attrs(dst._study_id):
        raise MigrationError("the copied study system attrs differ; the source is untouched")
