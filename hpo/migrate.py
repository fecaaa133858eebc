"""``hpo migrate NAME --from URL --to URL``: move a study to a bigger storage (SQLite -> server).

Copies the study's user and system attrs (config, search space, analyses, LLM ledger, dashboard
notes), every trial with its params, values, intermediate values and attrs (trial numbers are
kept), then checks the copy; a copy that fails half way is deleted again (all or nothing).
Trials left RUNNING by a killed worker are failed and queued for retry first (heartbeats).
optuna-dashboard keys trial notes by the storage's internal trial id, which changes between
storages; those keys are rewritten. Checkpoints stay where they are
(the artifact ids in the trials are kept): point the new workers at the same artifact store, or
copy the ``artifacts/`` folder along.

    >>> migrate_study("smoke", "sqlite:///runs/hpo.db",
    ...               "postgresql://hpo:pw@db/hpo")                     # doctest: +SKIP
    "copied study 'smoke': 12 trials, 5 user attrs, 31 system attrs -> postgresql://hpo:***@db/hpo"
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.errors import ConfigError, HpoError
from hpo.storage import (
    CONFIG_ATTR,
    open_existing_storage,
    open_storage,
    redact,
    redact_secrets,
    resolve_storage_url,
)

_TRIAL_KEY = re.compile(r"^dashboard:(\d+):")


class MigrationError(HpoError):
    """The copy failed or does not match its source (nothing is deleted from the source)."""


def migrate_study(name: str, from_url: str, to_url: str) -> str:
    """Copy study ``name`` from ``from_url`` to ``to_url``; returns a one-line summary.

    All or nothing: a copy that fails half way (a value the destination cannot hold, a lost
    connection, Ctrl-C) is deleted from the destination again, so the command can simply be
    re-run. Trials whose worker died (stale heartbeat) are failed and queued for retry first,
    as any live worker would; a study with trials that are really running is refused.
    """
    src_url, dst_url = resolve_storage_url(from_url), resolve_storage_url(to_url)
    src_storage = open_existing_storage(src_url)  # a mistyped --from creates nothing
    dst_storage = open_storage(dst_url)
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
    src = _fail_dead_trials(src, src_url)
    trials = src.get_trials(deepcopy=False)
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    if running:
        raise ConfigError("--from", "study", name,
                          f"a study with no running trial (trials {running} are running: "
                          "stop its workers first, or wait for them to be declared dead)")

    dst = optuna.create_study(study_name=name, storage=dst_storage, directions=src.directions)
    step = "trials"
    try:
        id_map: dict[int, int] = {}
        for trial in trials:
            step = f"trial {trial.number}"
            id_map[trial._trial_id] = dst_storage.create_new_trial(dst._study_id,
                                                                   template_trial=trial)
        for key, value in src.user_attrs.items():
            step = f"study user attr {key!r}"
            dst.set_user_attr(key, value)
        system = src_storage.get_study_system_attrs(src._study_id)
        for key, value in system.items():
            step = f"study system attr {key!r}"
            dst_storage.set_study_system_attr(dst._study_id, _remap(key, id_map), value)
        step = "the check of the copy"
        _verify(src, optuna.load_study(study_name=name, storage=dst_storage), src_storage,
                dst_storage, id_map)
    except BaseException as exc:  # Ctrl-C too: never leave half a study behind
        undo_error = _delete_copy(name, dst_storage)
        if not isinstance(exc, Exception):
            raise
        why = exc if isinstance(exc, MigrationError) else \
            f"{type(exc).__name__}: {_first_line(exc, (src_url, dst_url))}"
        raise MigrationError(
            f"copying study {name!r} to {redact(dst_url)} failed at {step} ({why}); "
            + (f"the partial copy could not be deleted ({undo_error}): delete study {name!r} "
               f"in {redact(dst_url)} before re-running" if undo_error
               else "the partial copy was deleted, so the migrate can be re-run")
            + "; the source is untouched") from None
    return (f"copied study {name!r}: {len(trials)} trials, {len(src.user_attrs)} user attrs, "
            f"{len(system)} system attrs -> {redact(dst_url)}")


def _fail_dead_trials(study: optuna.Study, url: str) -> optuna.Study:
    """Fail and queue for retry the RUNNING trials whose heartbeat stopped (a killed worker).

    Uses the heartbeat settings stored with the study (``workers:``), as a live worker would.
    """
    cfg = study.user_attrs.get(CONFIG_ATTR)
    workers = cfg.get("workers") if isinstance(cfg, dict) else None
    if not isinstance(workers, dict) or not workers.get("heartbeat_interval") or not any(
            t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
        return study
    storage = open_storage(url, heartbeat_interval=workers["heartbeat_interval"],
                           grace_period=workers.get("grace_period"),
                           max_retries=workers.get("max_retries"))
    study = optuna.load_study(study_name=study.study_name, storage=storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return study


def _delete_copy(name: str, storage: Any) -> str:
    """Delete the partial copy; returns "" or why it could not be deleted."""
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        return ""  # not created at all
    except Exception as exc:  # noqa: BLE001 - the caller reports it with the original error
        return type(exc).__name__
    return ""


def _first_line(exc: BaseException, urls: tuple[str, ...]) -> str:
    """The error's first line, and its cause's (Optuna hides the database's reason there)."""
    text = (str(exc).splitlines() or [""])[0][:300].strip()
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        text += " <- " + (str(cause).splitlines() or [""])[0][:300].strip()
    for url in urls:
        text = text.replace(url, redact(url))
    return redact_secrets(text)


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
