"""``hpo status NAME``: what a study's fleet of workers is doing, read from its storage.

Running trials (which host and process, epoch, heartbeat age, epochs per minute), stale ones
(no heartbeat for ``workers.grace_period``: the next worker that looks fails and retries them)
and the retries made so far, the WAITING queue and where each queued trial came from (a retry,
an analyst's proposal, or enqueued by a user), finished counts, the best trial so far and an
estimate of the time left. Reads only; works on SQLite, PostgreSQL, MySQL and through the gRPC
storage proxy (``grpc://``). No torch.

    >>> import optuna
    >>> study = optuna.create_study(study_name="doc", direction="maximize")
    >>> study.enqueue_trial({"lr": 0.01})
    >>> from hpo.optuna_private import storage_of
    >>> print(status_text(storage_of(study), "doc", "memory", now=0.0))  # doctest: +ELLIPSIS
    study 'doc' in memory at ...
    finished 0 of ?: complete 0, pruned 0, failed 0 | running 0 | waiting 1
    best: none yet
    waiting (1):
      trial    0  user (enqueued)  lr=0.01
    time left: unknown (no finished trial yet)
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from hpo.errors import ConfigError
from hpo.optuna_private import heartbeat_ages, trial_id_of
from hpo.record import (
    ANALYSIS_ATTR,
    CONFIG_ATTR,
    EPOCHS_ATTR,
    FAILED_TRIAL_ATTR,
    FIXED_PARAMS_ATTR,
    LOST_RACE_ATTR,
    PROPOSAL_ATTR,
    RETRY_HISTORY_ATTR,
    RUN_BY_ATTR,
    SOURCE_ATTR,
)
from hpo.redaction import redact

RECENT = 10  # finished trials whose durations estimate the time left


def show_status(name: str, storage_url: str, watch: float | None = None,
                echo: Callable[[str], None] = print) -> None:
    """Print the status of study ``name`` once, or every ``watch`` seconds until Ctrl-C."""
    from hpo.storage import open_existing_storage

    storage = open_existing_storage(storage_url)
    if not watch:
        echo(status_text(storage, name, redact(storage_url)))
        return
    # Ctrl-C is how a watch ends (exit 0). It sets a flag rather than raising: a
    # KeyboardInterrupt raised inside a __del__ (SQLAlchemy's garbage-collection hooks) is
    # printed as "ignored" and lost, and the watch would go on redrawing.
    stop: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: stop.append(signum))
    try:
        while not stop:
            text = status_text(storage, name, redact(storage_url))
            echo("\033[H\033[J" + text if sys.stdout.isatty() else text)  # redraw in place
            until = time.monotonic() + watch
            while not stop and time.monotonic() < until:
                time.sleep(min(0.1, watch))
    finally:
        signal.signal(signal.SIGINT, previous)


def status_text(storage: Any, name: str, where: str, now: float | None = None) -> str:
    """The status of study ``name`` in ``storage`` (shown as ``where``) as lines of text."""
    now = time.time() if now is None else now
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        raise ConfigError("--storage", "study", name, f"a study that exists in {where}") from None
    config = storage.get_study_user_attrs(study_id).get(CONFIG_ATTR) or {}
    budget, workers = config.get("budget") or {}, config.get("workers") or {}
    direction = storage.get_study_directions(study_id)[0].name.lower()
    trials = [t for t in storage.get_all_trials(study_id, deepcopy=False)
              if not t.system_attrs.get(LOST_RACE_ATTR)]
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    complete, pruned = by_state[TrialState.COMPLETE], by_state[TrialState.PRUNED]
    running, waiting = by_state[TrialState.RUNNING], by_state[TrialState.WAITING]
    n_trials = budget.get("n_trials")
    lines = [(f"study {name!r} in {where} at "
             f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"),
             (f"finished {len(complete) + len(pruned)} of {n_trials or '?'}: complete "
             f"{len(complete)}, pruned {len(pruned)}, failed {len(by_state[TrialState.FAIL])} "
             f"| running {len(running)} | waiting {len(waiting)}"),
             _best(complete, direction, (config.get("objective") or {}).get("metric"))]
    if running:
        ages = heartbeat_ages(storage, study_id)
        grace = workers.get("grace_period")
        lines.append(f"running ({len(running)}):")
        lines += [_running(t, ages.get(trial_id_of(t)), grace, budget.get("max_epochs"), now)
                  for t in running]
    retries = [t for t in trials if FAILED_TRIAL_ATTR in t.system_attrs]
    if retries:
        lines.append(f"retries of stale or interrupted trials ({len(retries)}):")
        lines += [f"  trial {t.number:4d}  retries trial {t.system_attrs[FAILED_TRIAL_ATTR]}"
                  f" (attempt {len(t.system_attrs.get(RETRY_HISTORY_ATTR) or []) + 1}, "
                  f"earlier {t.system_attrs.get(RETRY_HISTORY_ATTR)})  {t.state.name}"
                  for t in retries]
    if waiting:
        lines.append(f"waiting ({len(waiting)}):")
        lines += [f"  trial {t.number:4d}  {queue_source(t)}  {_params(t)}" for t in waiting]
    lines.append(_time_left(complete + pruned, n_trials, len(running)))
    return "\n".join(lines)


def queue_source(trial: FrozenTrial) -> str:
    """Where a queued trial came from: a retry, an analyst's proposal, or a user's enqueue."""
    if FAILED_TRIAL_ATTR in trial.system_attrs:
        return f"retry of trial {trial.system_attrs[FAILED_TRIAL_ATTR]}"
    if SOURCE_ATTR in trial.user_attrs:
        return (f"proposal ({trial.user_attrs[SOURCE_ATTR]} analysis "
                f"{trial.user_attrs.get(ANALYSIS_ATTR)}, #{trial.user_attrs.get(PROPOSAL_ATTR)})")
    return "user (enqueued)"


def _params(trial: FrozenTrial) -> str:
    params = trial.params or trial.system_attrs.get(FIXED_PARAMS_ATTR) or {}
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in params.items())


def _best(complete: list[FrozenTrial], direction: str, metric: str | None) -> str:
    scored = [t for t in complete if t.values]  # several objectives: by the first
    if not scored:
        return "best: none yet"
    best = (max if direction == "maximize" else min)(scored, key=lambda t: t.values[0])
    return (f"best: trial {best.number} {metric or 'value'}={best.values[0]:.4f} ({direction}) "
            f"{_params(best)}")


def _running(t: FrozenTrial, db_age: float | None, grace: float | None,
             max_epochs: int | None, now: float) -> str:
    from hpo.proxy import beat_age

    by = t.user_attrs.get(RUN_BY_ATTR) or {}
    epoch = t.user_attrs.get(EPOCHS_ATTR) or max(t.intermediate_values, default=0)
    ages = [a for a in (db_age, beat_age(t, now)) if a is not None]
    age = min(ages) if ages else None
    started = t.datetime_start.timestamp() if t.datetime_start else now
    minutes = max(now - started, 1.0) / 60
    line = (f"  trial {t.number:4d}  {by.get('host', '?')} pid {by.get('pid', '?')}  "
            f"epoch {epoch}/{max_epochs or '?'}  "
            f"heartbeat {'none' if age is None else f'{age:.0f}s ago'}  "
            f"{epoch / minutes:.2f} epochs/min")
    if age is not None and grace and age > grace:
        line += f"  STALE (> grace {grace}s: the next worker that looks retries it)"
    return line


def _time_left(finished: list[FrozenTrial], n_trials: int | None, n_running: int) -> str:
    """Trials left x the mean duration of the last :data:`RECENT` finished ones / workers.

        >>> from datetime import datetime, timedelta
        >>> t = FrozenTrial(number=0, state=TrialState.COMPLETE, value=1.0, values=None,
        ...     datetime_start=datetime(2026, 1, 1), datetime_complete=datetime(2026, 1, 1, 0, 1),
        ...     params={}, distributions={}, user_attrs={}, system_attrs={},
        ...     intermediate_values={}, trial_id=0)
        >>> _time_left([t], 5, 2)
        'time left: about 2.0 min (4 trials left, 60 s each over the last 1, 2 running)'
    """
    durations = [(t.datetime_complete - t.datetime_start).total_seconds()
                 for t in sorted(finished, key=lambda t: t.datetime_complete)[-RECENT:]
                 if t.datetime_start and t.datetime_complete]
    if not durations:
        return "time left: unknown (no finished trial yet)"
    if not n_trials:
        return "time left: unknown (the study stores no budget.n_trials)"
    left = max(n_trials - len(finished), 0)
    if not left:
        return f"time left: none (the budget of {n_trials} finished trials is reached)"
    each = sum(durations) / len(durations)
    seconds = left * each / max(n_running, 1)
    return (f"time left: about {seconds / 60:.1f} min ({left} trials left, {each:.0f} s each "
            f"over the last {len(durations)}, {n_running} running)")
