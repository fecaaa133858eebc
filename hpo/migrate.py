"""``hpo migrate NAME --from URL --to URL``: move a study to a bigger storage (SQLite -> server).

Copies the study's user and system attrs (config, search space, analyses, LLM ledger, dashboard
notes), every trial with its params, values, intermediate values and attrs (trial numbers are
kept), then checks the copy; a copy that fails half way is deleted again (all or nothing).
Trials left RUNNING by a killed worker are failed and queued for retry first (heartbeats).
optuna-dashboard keys trial notes by the storage's internal trial id, which changes between
storages; those keys are rewritten. Checkpoints stay where they are
(the artifact ids in the trials are kept): point the new workers at the same artifact store, or
copy the ``artifacts/`` folder along.

After the copy checks out, the source study is marked as moved (study system attr
:data:`MOVED_ATTR`: the destination, password redacted, and the time), and ``hpo study`` /
``hpo worker`` refuse to continue it there without ``--force`` (:func:`refuse_if_moved`), so
a study is not silently forked. The summary says exactly what changed in the source.
Times are compared at the destination's precision: MySQL/MariaDB keep whole seconds.

    >>> print(migrate_study("smoke", "sqlite:///runs/hpo.db",
    ...                     "postgresql://hpo:pw@db/hpo"))              # doctest: +SKIP
    copied study 'smoke': 12 trials, 5 user attrs, 31 system attrs -> postgresql://hpo:***@db/hpo
    source: marked as moved (study system attr hpo:moved_to): `hpo study`/`hpo worker` on ...
"""

from __future__ import annotations

import re
import sys
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.errors import ConfigError, HpoError
from hpo.optuna_private import study_id_of, study_system_attrs, trial_id_of
from hpo.record import CONFIG_ATTR, DASHBOARD_PREFIX, FAILED_TRIAL_ATTR, MOVED_ATTR
from hpo.redaction import redact, redact_secrets
from hpo.storage import open_existing_storage, open_storage, resolve_storage_url

# optuna-dashboard's key of a trial's note: "dashboard:<internal trial id>:..."
_TRIAL_KEY = re.compile(rf"^{re.escape(DASHBOARD_PREFIX)}(\d+):")


class MigrationError(HpoError):
    """The copy failed or does not match its source (nothing is deleted from the source)."""


class StudyMovedError(HpoError):
    """``hpo study``/``hpo worker`` on a study that ``hpo migrate`` moved elsewhere (exit 2)."""

    exit_code = 2


def moved_to(study: optuna.Study) -> dict[str, Any] | None:
    """The moved marker of ``study`` (``{"url": ..., "at": ...}``), or None."""
    return study_system_attrs(study).get(MOVED_ATTR)


def refuse_if_moved(study: optuna.Study, force: bool = False) -> None:
    """Refuse (exit 2) to run a study that was migrated away; with ``force``, warn and go on.

        >>> from hpo.optuna_private import set_study_system_attr
        >>> study = optuna.create_study(study_name="rt")
        >>> refuse_if_moved(study)  # never moved: nothing to say
        >>> set_study_system_attr(study, MOVED_ATTR, {
        ...     "url": "postgresql://ml:***@db/hpo", "at": "2025-01-02 03:04:05 UTC"})
        >>> refuse_if_moved(study)
        Traceback (most recent call last):
        ...
        hpo.migrate.StudyMovedError: study 'rt' was moved to postgresql://ml:***@db/hpo on 2025-01-02 03:04:05 UTC; run it there, or pass --force to continue this copy
    """
    moved = moved_to(study)
    if not moved:
        return
    where, when = (moved.get("url", "?"), moved.get("at", "?")) if isinstance(moved, dict) \
        else (str(moved), "?")
    if not force:
        raise StudyMovedError(f"study {study.study_name!r} was moved to {where} on {when}; run "
                              "it there, or pass --force to continue this copy")
    print(f"hpo: warning: study {study.study_name!r} was moved to {where} on {when}; "
          "continuing this copy (--force): the two copies now differ", file=sys.stderr)


def migrate_study(name: str, from_url: str | None, to_url: str | None) -> str:
    """Copy study ``name`` from ``from_url`` to ``to_url`` (each resolved as
    :func:`~hpo.storage.resolve_storage_url` does, else ``$HPO_MIGRATE_FROM``/``$HPO_MIGRATE_TO``);
    returns the summary: a line on the copy, a line on what changed in the source (stale
    trials failed, the moved marker).

    All or nothing: a copy that fails half way (a value the destination cannot hold, a lost
    connection, Ctrl-C) is deleted from the destination again, so the command can simply be
    re-run. Trials whose worker died (stale heartbeat) are failed and queued for retry first,
    as any live worker would; a study with trials that are really running is refused.

    Example:

        >>> import tempfile, optuna
        >>> folder = tempfile.mkdtemp()
        >>> src, dst = f"sqlite:///{folder}/laptop.db", f"sqlite:///{folder}/shared.db"
        >>> study = optuna.create_study(study_name="demo", storage=src)
        >>> study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        >>> print(migrate_study("demo", src, dst).splitlines()[0])  # doctest: +ELLIPSIS
        copied study 'demo': 3 trials, 0 user attrs, 0 system attrs -> sqlite:///.../shared.db
        >>> len(optuna.load_study(study_name="demo", storage=dst).trials)
        3

    Args:
        name:
            The study to copy; the destination must not have a study of that name.
        from_url:
            The source storage URL (``${VAR}`` expanded, ``@PATH`` read from a file); None:
            ``$HPO_MIGRATE_FROM``. It is never created.
        to_url:
            The destination storage URL, as ``from_url`` (None: ``$HPO_MIGRATE_TO``);
            created when it does not exist.
    """
    src_url = resolve_storage_url(from_url, option="--from", env="HPO_MIGRATE_FROM", default=None)
    dst_url = resolve_storage_url(to_url, option="--to", env="HPO_MIGRATE_TO", default=None)
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
    src, failed = _fail_dead_trials(src, src_url)
    trials = src.get_trials(deepcopy=False)
    changed = _source_changes(trials, failed)  # what this command changed in the source
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    if running:
        raise ConfigError("--from", "study", name,
                          f"a study with no running trial (trials {running} are running: "
                          "stop its workers first, or wait for them to be declared dead); "
                          + (f"source: {changed}" if changed else "the source is untouched"))

    dst = optuna.create_study(study_name=name, storage=dst_storage, directions=src.directions)
    step = "trials"
    try:
        id_map: dict[int, int] = {}
        # trials go in through the plain RDBStorage: the retrying wrapper of a server storage
        # marks each trial it creates (hpo:create_token), and a copy must equal its source
        raw = getattr(dst_storage, "_rdb", dst_storage)
        for trial in trials:
            step = f"trial {trial.number}"
            id_map[trial_id_of(trial)] = raw.create_new_trial(study_id_of(dst),
                                                              template_trial=trial)
        copied = src.user_attrs
        for key, value in copied.items():
            step = f"study user attr {key!r}"
            dst.set_user_attr(key, value)
        system = {k: v for k, v in src_storage.get_study_system_attrs(study_id_of(src)).items()
                  if k != MOVED_ATTR}  # an earlier move's marker stays with its source
        for key, value in system.items():
            step = f"study system attr {key!r}"
            dst_storage.set_study_system_attr(study_id_of(dst), _remap(key, id_map), value)
        step = "the check of the copy"
        _verify(src, optuna.load_study(study_name=name, storage=dst_storage), src_storage,
                dst_storage, id_map, whole_seconds=_whole_seconds(dst_storage))
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
            + (f"; source: {changed}; not marked as moved" if changed
               else "; the source is untouched")) from None
    try:
        src_storage.set_study_system_attr(study_id_of(src), MOVED_ATTR, {
            "url": redact(dst_url), "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")})
        marked = (f"marked as moved (study system attr {MOVED_ATTR}): `hpo study`/`hpo worker` "
                  "on the source now refuse without --force")
    except Exception as exc:  # noqa: BLE001 - the copy is done and checked; say it plainly
        marked = (f"NOT marked as moved ({type(exc).__name__}: "
                  f"{_first_line(exc, (src_url, dst_url))}): do not run the study there")
    return (f"copied study {name!r}: {len(trials)} trials, {len(copied)} user attrs, "
            f"{len(system)} system attrs -> {redact(dst_url)}\n"
            f"source: {changed + '; ' if changed else ''}{marked}")


def _source_changes(trials: list[optuna.trial.FrozenTrial], failed: list[int]) -> str:
    """What failing the stale trials changed in the source ("" for nothing).

        >>> _source_changes([], [])
        ''
    """
    if not failed:
        return ""
    queued = sorted(t.system_attrs.get(FAILED_TRIAL_ATTR) for t in trials
                    if t.state == TrialState.WAITING
                    and t.system_attrs.get(FAILED_TRIAL_ATTR) in failed)
    names = ", ".join(map(str, failed))
    if len(queued) == len(failed):
        return (f"{len(failed)} stale trial{'s' if len(failed) > 1 else ''} ({names}) failed and "
                "queued for retry")
    return (f"{len(failed)} stale trial{'s' if len(failed) > 1 else ''} ({names}) failed, "
            f"{len(queued)} of them queued for retry (the others had used their max_retries)")


def _fail_dead_trials(study: optuna.Study, url: str) -> tuple[optuna.Study, list[int]]:
    """Fail and queue for retry the RUNNING trials whose heartbeat stopped (a killed worker);
    returns the study and the numbers of the trials it failed.

    Uses the heartbeat settings stored with the study (``workers:``), as a live worker would.
    """
    cfg = study.user_attrs.get(CONFIG_ATTR)
    workers = cfg.get("workers") if isinstance(cfg, dict) else None
    if not isinstance(workers, dict) or not workers.get("heartbeat_interval") or not any(
            t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
        return study, []
    running = {t.number for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING}
    storage = open_storage(url, heartbeat_interval=workers["heartbeat_interval"],
                           grace_period=workers.get("grace_period"),
                           max_retries=workers.get("max_retries"))
    study = optuna.load_study(study_name=study.study_name, storage=storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return study, sorted(t.number for t in study.get_trials(deepcopy=False)
                         if t.number in running and t.state == TrialState.FAIL)


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
        return f"{DASHBOARD_PREFIX}{id_map[int(match.group(1))]}:" + key[match.end():]
    return key


def _trial_view(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {"number": t.number, "state": t.state, "values": t.values, "params": t.params,
            "intermediate": t.intermediate_values, "user_attrs": t.user_attrs,
            "system_attrs": t.system_attrs}


def _whole_seconds(storage: Any) -> bool:
    """Whether ``storage`` keeps trial times in whole seconds: Optuna's MySQL/MariaDB tables are
    plain DATETIME, with no fraction of a second."""
    engine = getattr(storage, "engine", None)
    return engine is not None and engine.dialect.name in ("mysql", "mariadb")


def same_time(src: datetime | None, dst: datetime | None, whole_seconds: bool) -> bool:
    """Whether ``dst`` is ``src`` as a storage of that precision keeps it: exactly, or (whole
    seconds) with the fraction cut off or rounded, as MariaDB and MySQL do.

        >>> t = datetime(2025, 1, 2, 3, 4, 5, 678000)
        >>> same_time(t, t.replace(microsecond=0), True), same_time(t, t.replace(second=6,
        ...     microsecond=0), True), same_time(t, t.replace(microsecond=0), False)
        (True, True, False)
        >>> same_time(t, t.replace(second=4, microsecond=0), True)
        False
    """
    if src is None or dst is None or src == dst:
        return src == dst
    if not whole_seconds:
        return False
    floor = src.replace(microsecond=0)
    return dst == floor or (src.microsecond >= 500_000 and dst == floor + timedelta(seconds=1))


def _verify(src: optuna.Study, dst: optuna.Study, src_storage: Any, dst_storage: Any,
            id_map: dict[int, int], whole_seconds: bool = False) -> None:
    src_trials, dst_trials = src.get_trials(deepcopy=False), dst.get_trials(deepcopy=False)
    a = [_trial_view(t) for t in src_trials]
    b = [_trial_view(t) for t in dst_trials]
    if a != b:
        bad = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y) if len(a) == len(b) else -1
        raise MigrationError(f"the copy differs from the source (trial index {bad}; "
                             f"{len(a)} vs {len(b)} trials)")
    for s, d in zip(src_trials, dst_trials):  # at the destination's precision
        for field in ("datetime_start", "datetime_complete"):
            if not same_time(getattr(s, field), getattr(d, field), whole_seconds):
                raise MigrationError(
                    f"the copy of trial {s.number} has {field} {getattr(d, field)}, the source "
                    f"{getattr(s, field)}"
                    + (" (the destination keeps whole seconds)" if whole_seconds else ""))
    if src.user_attrs != dst.user_attrs:
        raise MigrationError("the copied study user attrs differ")
    want = {_remap(k, id_map): v
            for k, v in src_storage.get_study_system_attrs(study_id_of(src)).items()
            if k != MOVED_ATTR}
    if want != dst_storage.get_study_system_attrs(study_id_of(dst)):
        raise MigrationError("the copied study system attrs differ")
