"""Workers: many processes, on one or many machines, run one study in a shared storage.

``hpo worker NAME --storage URL`` (:func:`hpo.runner.join_study`) needs nothing else: the
study's resolved config and search space are stored in the study when it is created
(:func:`stored_config`). A worker that also
has ``studies/NAME.yaml`` refuses to run when it differs from the stored config
(:func:`config_diff`), so two machines never train two different studies under one name.

:func:`run_trials` is the trial loop every worker runs (``hpo study`` too):

- before each trial, trials whose heartbeat stopped (a killed or preempted worker) are failed
  and retried as WAITING trials with the same params, which any worker picks up first;
- the budget is exact across workers: a worker starts a trial only while finished + running
  trials are below ``target``; a trial it lost the race for is never run (:func:`_give_up`:
  back to the queue when it was queued, else finished as FAIL marked ``hpo:lost_race``);
- Ctrl-C/SIGTERM: the running trial checkpoints, is failed and retried, the process exits
  130/143 (:mod:`hpo.signals`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Self

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import OperationalError

from hpo.config import StudyConfig
from hpo.errors import ConfigError, StorageUnavailable, StudyConfigChanged
from hpo.optuna_private import BaseHeartbeat, storage_of, trial_id_of
from hpo.record import (
    CONFIG_ATTR,
    FAIL_REASON_ATTR,
    FAILED_TRIAL_ATTR,
    FINISHED,
    FIXED_PARAMS_ATTR,
    LOST_RACE_ATTR,
    RESUMED_ATTR,
    RUN_BY_ATTR,
    SPACE_ATTR,
)
from hpo.redaction import redact_secrets
from hpo.signals import Interrupted, critical, handle_signals, raise_if_received, shielded
from hpo.space import SearchSpace

log = logging.getLogger("hpo.worker")

# Keys that may differ between machines (where files are), runs (how long this run may take)
# or over the study's life (``budget.n_trials``: a user extends a study by raising it).
MACHINE_KEYS = ("artifacts", "budget.timeout", "budget.n_trials", "description", "workers.threads",
                "workers.outage_limit_s", "sampler.wait_for_analysis_s",
                "sampler.keep_waiting_proposals", "dataset.root", "dataset.train_dir", "dataset.val_dir",
                "dataset.csv")


# -- the study's stored config ---------------------------------------------------------------

def stored_config(study: optuna.Study) -> StudyConfig:
    """The StudyConfig stored in the study when it was created (no YAML needed)."""
    attrs = study.user_attrs
    if CONFIG_ATTR not in attrs or SPACE_ATTR not in attrs:
        raise ConfigError(f"study {study.study_name!r}", CONFIG_ATTR, None,
                          "a study created by `hpo study` (it stores its config)")
    cfg = StudyConfig(**attrs[CONFIG_ATTR])
    cfg.space = SearchSpace.model_validate(attrs[SPACE_ATTR])
    return cfg


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def config_diff(local: StudyConfig, stored: dict[str, Any],
                stored_space: dict[str, Any] | None = None) -> list[str]:
    """``key: local -> stored`` lines where the local study file differs from the stored one.

    Keys the stored config lacks (written by an older hpo) and :data:`MACHINE_KEYS` are ignored.
    Passwords are compared redacted (the stored config has them as ``***``).
    """
    mine = _flatten(redact_secrets(local.model_dump(mode="json")))
    theirs = _flatten(redact_secrets(stored))
    if stored_space is not None and local.space is not None:
        mine.update(_flatten(local.space.model_dump(mode="json"), "search_space_params"))
        theirs.update(_flatten(stored_space, "search_space_params"))
    lines = []
    for key in sorted(set(mine) | set(theirs)):
        if any(key == k or key.startswith(k + ".") for k in MACHINE_KEYS):
            continue
        if key not in theirs:
            continue
        if mine.get(key, "<unset>") != theirs[key]:
            lines.append(f"{key}: local {mine.get(key, '<unset>')!r} != stored {theirs[key]!r}")
    return lines


def check_same_config(local: StudyConfig, study: optuna.Study, source: str) -> None:
    """Refuse (:class:`~hpo.errors.StudyConfigChanged`, exit 2) when ``local`` differs from the
    config stored in ``study``."""
    attrs = study.user_attrs
    if CONFIG_ATTR not in attrs:
        return
    diff = config_diff(local, attrs[CONFIG_ATTR], attrs.get(SPACE_ATTR))
    if diff:
        more = f" (and {len(diff) - 10} more)" if len(diff) > 10 else ""
        raise StudyConfigChanged(
            f"{source} differs from the config stored in study {study.study_name!r}: "
            + "; ".join(diff[:10]) + more + ". Revert the file, run it under a new study name "
            "(a copy of the file), or in another storage (--storage)")


# -- heartbeats ------------------------------------------------------------------------------

class _Heartbeat:
    """Records the trial's heartbeat every ``interval`` s; a failed write is retried next beat."""

    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="hpo-heartbeat")

    def _run(self) -> None:
        while True:
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried, never fatal
                log.warning("heartbeat of trial id %s failed (%s); retrying", self._trial_id,
                            type(exc).__name__)
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> Self:
        if self._interval:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


# -- the trial loop --------------------------------------------------------------------------

def _counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts


def _retry_now(study: optuna.Study, trial_id: int) -> None:
    """Fail an interrupted trial and queue its retry at once (no need to wait for staleness).

    Only a trial still RUNNING: one already told, or handed back to the queue, is left as it is.
    """
    storage = storage_of(study)
    try:
        if storage.get_trial(trial_id).state != TrialState.RUNNING:
            return
        if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            callback = storage.get_heartbeat_stale_trial_callback() \
                if isinstance(storage, BaseHeartbeat) else None
            if callback is not None:
                callback(study, storage.get_trial(trial_id))
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def _lost_race(study: optuna.Study, trial: optuna.Trial, target: int) -> bool:
    """Whether earlier-numbered live trials already fill the budget (another worker won)."""
    ahead = sum(1 for t in study.get_trials(deepcopy=False)
                if t.number < trial.number and t.state in (*FINISHED, TrialState.RUNNING,
                                                           TrialState.WAITING))
    return ahead >= target


def _give_up(study: optuna.Study, trial: optuna.Trial) -> None:
    """Take a trial that lost the race for the last budget slot out of the study, unrun.

    A trial that was queued before this worker took it (an analyst's proposal, a retry of a dead
    trial: it carries params) goes back to the queue as it was. A trial this worker created
    cannot be deleted (Optuna has no delete), so it is finished as FAIL and marked with
    :data:`~hpo.record.LOST_RACE_ATTR`; reports, counts and analysts leave it out. Handing it
    back as WAITING instead would leave a stray trial behind once the study reached its target,
    which a later run would then run.
    """
    storage = storage_of(study)
    frozen = storage.get_trial(trial_id_of(trial))
    queued = bool(frozen.params) or FIXED_PARAMS_ATTR in frozen.system_attrs \
        or FAILED_TRIAL_ATTR in frozen.system_attrs
    if queued:
        storage.set_trial_state_values(trial_id_of(trial), state=TrialState.WAITING)
        return
    storage.set_trial_system_attr(trial_id_of(trial), LOST_RACE_ATTR, True)
    storage.set_trial_user_attr(trial_id_of(trial), FAIL_REASON_ATTR,
                                "not run: another worker took the last trial of the budget")
    storage.set_trial_state_values(trial_id_of(trial), state=TrialState.FAIL)


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    target: int,
    timeout: float | None = None,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    echo: Callable[[str], None] = print,
    poll_s: float | None = None,
) -> int:
    """Run trials until the study has ``target`` finished (complete + pruned) trials.

    Returns the number of trials this worker finished. Waits (polling every ``poll_s``) while
    other workers run the last trials, since one of them may die and need a retry.
    """
    storage = storage_of(study)
    _apply_outage_limit(study)
    interval = (storage.get_heartbeat_interval() or 0) if isinstance(storage, BaseHeartbeat) else 0
    poll = poll_s or (min(interval, 5.0) if interval else 2.0)
    started = time.monotonic()
    done = failed = 0
    waiting_said = False
    with handle_signals(), warnings.catch_warnings():
        # we run ask/tell with heartbeats ourselves; the retry helpers are "experimental"
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed", UserWarning)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        while True:
            raise_if_received()  # a signal whose raise was lost (hpo.signals) ends the run here
            if timeout is not None and time.monotonic() - started >= timeout:
                echo(f"timeout of {timeout:.0f}s reached")
                break
            try:
                if interval:
                    optuna.storages.fail_stale_trials(study)
                counts = _counts(study)
            except OperationalError as exc:  # a busy database: wait and look again
                log.warning("storage busy (%s); retrying", str(exc).splitlines()[0][:120])
                time.sleep(poll)
                continue
            finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
            if finished >= target:
                break
            if finished + counts[TrialState.RUNNING] >= target:
                if not interval:
                    break  # no heartbeats: a dead trial would never be retried, do not wait
                if not waiting_said:
                    echo(f"waiting for {counts[TrialState.RUNNING]} running trial(s) "
                         "on other workers")
                    waiting_said = True
                time.sleep(poll)
                continue
            waiting_said = False
            frozen = _one_trial(study, objective, target, interval)
            if frozen is None:
                time.sleep(poll)
                continue
            if frozen.state in FINISHED:
                done += 1
            elif frozen.state == TrialState.FAIL:
                failed += 1
            for callback in callbacks:
                callback(study, frozen)
            if failed >= max(3, target):
                echo(f"stopping: {failed} trials failed in this worker (see fail_reason)")
                break
    return done


def _one_trial(study: optuna.Study, objective: Callable[[optuna.Trial], float], target: int,
               interval: float) -> FrozenTrial | None:
    """Ask, run and tell one trial; None when the trial went back to the queue.

    A signal at any point after the ask (held to the end of the ask block, or raised in
    training or in the tell) fails the trial and queues its retry, unless it already finished.
    """
    trial: optuna.Trial | None = None
    try:
        with critical():  # a RUNNING trial with no heartbeat would never be declared dead
            trial = study.ask()
            if interval:
                storage_of(study).record_heartbeat(trial_id_of(trial))
            if _lost_race(study, trial, target):
                _give_up(study, trial)
                return None
            # which machine and process ran this attempt (a retry is a new trial with its own)
            trial.set_user_attr(RUN_BY_ATTR, {"host": socket.gethostname(), "pid": os.getpid()})
            if trial.user_attrs.get(RESUMED_ATTR) is not None:  # copied from the attempt it
                trial.set_user_attr(RESUMED_ATTR, None)         # retries; set when it resumes
        return _run_and_tell(study, trial, objective, interval)
    except Interrupted:
        if trial is not None:
            with shielded():  # a second Ctrl-C exits after both writes: never FAIL, no retry
                _retry_now(study, trial_id_of(trial))
        raise


def _run_and_tell(study: optuna.Study, trial: optuna.Trial,
                  objective: Callable[[optuna.Trial], float], interval: float) -> FrozenTrial:
    """Train one asked trial under its heartbeat and store how it ended."""
    value: float | None = None
    state = TrialState.COMPLETE
    with _Heartbeat(storage_of(study), trial_id_of(trial), interval):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except StorageUnavailable as exc:  # the storage is gone: nothing can be written now
            raise _left_for_retry(exc, trial) from None
        except Exception as exc:  # noqa: BLE001 - one bad trial never stops the study
            state = TrialState.FAIL
            reason = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("trial %d failed: %s\n%s", trial.number, reason, traceback.format_exc())
            try:
                trial.set_user_attr(FAIL_REASON_ATTR, reason)
            except Exception as attr_exc:  # noqa: BLE001 - it may be failed elsewhere already
                log.debug("cannot record fail_reason: %s", attr_exc)
    try:
        if state == TrialState.COMPLETE:
            return study.tell(trial, value)
        return study.tell(trial, state=state)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as exc:
        # another worker declared this trial dead (missed heartbeats) and queued a retry
        log.warning("trial %d was finished elsewhere: %s", trial.number, exc)
        return storage_of(study).get_trial(trial_id_of(trial))
    except StorageUnavailable as exc:
        raise _left_for_retry(exc, trial) from None


def _left_for_retry(exc: StorageUnavailable, trial: optuna.Trial) -> StorageUnavailable:
    """The outage error, saying what becomes of the trial: it stays RUNNING, its heartbeat goes
    stale, and the next worker that looks fails it and retries it from its last checkpoint."""
    return StorageUnavailable(f"{exc}; trial {trial.number} is left for retry from its last "
                              "checkpoint")


def _apply_outage_limit(study: optuna.Study) -> None:
    """A storage that waits out outages (:mod:`hpo.storage_retry`) opened without a limit
    takes the study's ``workers.outage_limit_s``."""
    storage = storage_of(study)
    if not hasattr(storage, "outage_limit_s") or getattr(storage, "limit_given", True):
        return
    workers = (study.user_attrs.get(CONFIG_ATTR) or {}).get("workers") or {}
    if isinstance(workers.get("outage_limit_s"), (int, float)):
        storage.outage_limit_s = float(workers["outage_limit_s"])
