"""Riding out database outages: a storage whose calls wait for the server to come back.

:func:`hpo.storage.open_storage` wraps every PostgreSQL/MySQL storage in :class:`RetryingStorage`.
A storage call that fails because the server cannot be reached (connection refused or dropped,
database not accepting connections, account locked, a killed session) is retried with capped
exponential backoff (:func:`backoff`: 0.5 s doubling to 5 s) until it succeeds or the outage has
lasted ``outage_limit_s`` (``workers.outage_limit_s``, default 300 s). Training waits at the next
write (the epoch's curve, ``trial.report``, the checkpoint pointer) and goes on when the database
answers: the trial keeps its epochs and is reported as usual. Past the limit the call raises
:class:`~hpo.errors.StorageUnavailable` (one line, exit status 75, EX_TEMPFAIL: "try again"); the
running trial then stays RUNNING with a stale heartbeat, and the next worker that looks fails it
and retries it from its last checkpoint (:mod:`hpo.worker`).

Retried calls must not do twice what the lost attempt may already have done:

- ``create_new_trial`` marks the trial it creates with a unique system attr
  (:data:`~hpo.record.CREATE_TOKEN_ATTR`); after a failure it looks for that mark before trying
  again, and a second trial with the same mark (Optuna retries a failed commit itself) is
  finished as FAIL with ``hpo:lost_race``, which counts, reports and analysts leave out;
- ``set_trial_state_values`` (tell, the queue's WAITING -> RUNNING) counts "the trial is already
  in that state" as success, so a tell whose reply was lost is not refused as
  UpdateFinishedTrialError;
- ``create_new_study`` and ``delete_study`` check whether the lost attempt took effect.

Heartbeats are not retried (the next beat is the retry), and for one ``grace_period`` after an
outage this process declares no other trial stale: their workers had the same outage.

    >>> [backoff(n) for n in range(6)]
    [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    >>> from sqlalchemy.exc import OperationalError
    >>> is_outage(OperationalError("SELECT 1", {}, ConnectionRefusedError("refused")))
    True
    >>> is_outage(KeyError("no study"))
    False
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import uuid
from collections.abc import Callable, Container, Sequence
from datetime import datetime
from typing import Any, TypeVar

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event
from sqlalchemy import exc as sa_exc

from hpo.errors import StorageUnavailable
from hpo.optuna_private import (
    BaseHeartbeat,
    CachedStorage,
    FrozenStudy,
    StudyDirection,
    stale_trial_ids,
    trial_id_of,
)
from hpo.record import CREATE_TOKEN_ATTR, FAIL_REASON_ATTR, LOST_RACE_ATTR
from hpo.redaction import redact, redact_secrets

log = logging.getLogger("hpo.storage")

DEFAULT_OUTAGE_LIMIT_S = 300.0
FIRST_DELAY_S, MAX_DELAY_S = 0.5, 5.0
T = TypeVar("T")
# DB-API errors of the drivers hpo installs that mean "the server is not there (now)"
_DRIVER_MODULES = ("psycopg2", "psycopg", "pymysql", "MySQLdb")
# connection failures at start-up that a later try may not have (the rest, e.g. a wrong password
# or an unknown database, is configuration)
_TRANSIENT_CONNECT = ("not currently accepting connections", "connection refused",
                      "server closed the connection", "terminating connection",
                      "the database system is", "can't connect to", "lost connection",
                      "account is locked", "account has been locked", "timed out", "timeout",
                      "too many connections", "too many clients", "connection reset",
                      "no route to host")


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt + 1``: 0.5 s doubling, capped at 5 s."""
    return min(FIRST_DELAY_S * 2 ** attempt, MAX_DELAY_S)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it, e.g. the SQLAlchemy error inside Optuna's
    ``StorageInternalError``) says the database could not be reached or dropped the session."""
    for err in _chain(exc):
        if isinstance(err, (sa_exc.DisconnectionError, sa_exc.PendingRollbackError,
                            sa_exc.TimeoutError)):
            return True
        if isinstance(err, sa_exc.DBAPIError) and (
                err.connection_invalidated
                or isinstance(err, (sa_exc.OperationalError, sa_exc.InterfaceError))):
            return True
        if type(err).__module__.split(".")[0] in _DRIVER_MODULES and type(err).__name__ in (
                "OperationalError", "InterfaceError"):
            return True
    return False


def is_transient_connect_error(exc: BaseException) -> bool:
    """Whether a storage that cannot be opened may open later (server down, refusing
    connections, account locked), as opposed to a configuration error (wrong password, unknown
    database or host)."""
    text = " ".join(str(e) for e in _chain(exc)).lower()
    return is_outage(exc) and any(marker in text for marker in _TRANSIENT_CONNECT)


def describe(exc: BaseException) -> str:
    """``Type: first line of the driver's message`` (one line, at most 200 characters)."""
    inner = getattr(exc, "orig", None) or exc
    for err in _chain(exc):
        if isinstance(err, sa_exc.DBAPIError) and err.orig is not None:
            inner = err.orig
            break
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    text = " ".join((lines[0] if lines else "").split())

    return redact_secrets(f"{type(inner).__name__}: {text}"[:200])


def _marked(template: FrozenTrial | None, token: str) -> FrozenTrial:
    """``template`` (or a fresh RUNNING trial, what Optuna creates without one) carrying the
    system attr :data:`CREATE_TOKEN_ATTR` = ``token``."""
    if template is None:
        return FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, values=None,
                           datetime_start=datetime.now(), datetime_complete=None, params={},
                           distributions={}, user_attrs={},
                           system_attrs={CREATE_TOKEN_ATTR: token}, intermediate_values={},
                           trial_id=-1)
    marked = copy.deepcopy(template)
    marked.system_attrs = {**marked.system_attrs, CREATE_TOKEN_ATTR: token}
    return marked


class RetryingStorage(BaseStorage, BaseHeartbeat):
    """An Optuna storage that forwards to ``rdb`` (through Optuna's own trial cache, as
    ``optuna.load_study(storage=rdb)`` would) and waits out outages; see the module docstring.

    Attributes the wrapper lacks (``engine``, ``url``, ``grace_period``...) are the RDBStorage's.
    ``outage_limit_s`` may be changed at any time; ``limit_given`` says whether the opener set it.
    """

    def __init__(self, rdb: RDBStorage, *, url: str | None = None,
                 outage_limit_s: float | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._rdb = rdb
        self._inner = CachedStorage(rdb)
        self._url = url or str(rdb.url)
        self.limit_given = outage_limit_s is not None
        self.outage_limit_s = float(outage_limit_s or DEFAULT_OUTAGE_LIMIT_S)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._recovered_at: float | None = None
        self._db_errors = 0  # errors the engine saw, Optuna's own retries included
        self.outages: list[float] = []  # seconds each outage this process rode out lasted
        event.listen(rdb.engine, "handle_error", self._on_db_error)
        # Optuna rolls back the session on every failed attempt (its own retries included)
        event.listen(rdb.scoped_session.session_factory, "after_soft_rollback",
                     lambda _session, _transaction: self._on_db_error(None))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_rdb", "_inner"):
            raise AttributeError(name)
        return getattr(self._rdb, name)

    def __repr__(self) -> str:

        return f"RetryingStorage({redact(self._url)}, outage_limit_s={self.outage_limit_s:g})"

    # -- the retry loop ----------------------------------------------------------------------

    def _on_db_error(self, _context: Any) -> None:
        self._db_errors += 1

    def _down(self, exc: BaseException) -> float:
        """Note that the storage is unreachable; the seconds it has been so."""
        now = time.monotonic()
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = now
            down = now - self._down_since  # type: ignore[operator]
        if first:

            log.warning("storage %s unreachable (%s); waiting for it, up to %g s "
                        "(workers.outage_limit_s)", redact(self._url), describe(exc),
                        self.outage_limit_s)
        return down

    def _up(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None:
                return
            lasted = time.monotonic() - self._down_since
            self._down_since = None
            self._recovered_at = time.monotonic()
            self.outages.append(lasted)
        log.warning("storage reachable again after %.1f s; continuing", lasted)

    def _call(self, fn: Callable[..., T], *args: Any,
              recover: Callable[[], tuple[bool, Any]] | None = None) -> T:
        """``fn(*args)``, retried while the storage is unreachable (up to the outage limit).

        After a failed attempt, ``recover()`` (when given) checks whether that attempt took
        effect after all: ``(True, result)`` ends the call with ``result``.
        """
        attempt = 0
        while True:
            try:
                result = fn(*args)
            except Exception as exc:
                if not is_outage(exc):
                    raise
                down = self._down(exc)
                if down >= self.outage_limit_s:

                    raise StorageUnavailable(
                        f"storage unreachable for {down:.0f} s ({redact(self._url)}: "
                        f"{describe(exc)}; workers.outage_limit_s: {self.outage_limit_s:g})"
                    ) from None
                self._sleep(min(backoff(attempt), self.outage_limit_s - down + 0.05))
                attempt += 1
                if recover is not None:
                    try:
                        done, value = recover()
                    except Exception as recover_exc:
                        if not is_outage(recover_exc):
                            raise
                        continue
                    if done:
                        self._up()
                        return value
                continue
            self._up()
            return result

    # -- studies -----------------------------------------------------------------------------

    def create_new_study(self, directions: Sequence[StudyDirection],
                         study_name: str | None = None) -> int:
        def recover() -> tuple[bool, Any]:
            if study_name is None:
                return False, None
            try:
                return True, self._rdb.get_study_id_from_name(study_name)
            except KeyError:
                return False, None

        return self._call(self._inner.create_new_study, directions, study_name, recover=recover)

    def delete_study(self, study_id: int) -> None:
        def recover() -> tuple[bool, Any]:
            try:
                self._rdb.get_study_name_from_id(study_id)
            except KeyError:
                return True, None
            return False, None

        self._call(self._inner.delete_study, study_id, recover=recover)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call(self._inner.set_study_user_attr, study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call(self._inner.set_study_system_attr, study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._call(self._inner.get_study_id_from_name, study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._call(self._inner.get_study_name_from_id, study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._call(self._inner.get_study_directions, study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call(self._inner.get_study_user_attrs, study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call(self._inner.get_study_system_attrs, study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._call(self._inner.get_all_studies)

    # -- trials ------------------------------------------------------------------------------

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        token = uuid.uuid4().hex
        errors = self._db_errors
        trial_id = self._call(self._inner.create_new_trial, study_id,
                              _marked(template_trial, token),
                              recover=lambda: self._find_marked(study_id, token))
        if self._db_errors != errors:  # an attempt failed somewhere: was a trial made twice?
            self._drop_duplicates(study_id, token, trial_id)
        return trial_id

    def _find_marked(self, study_id: int, token: str) -> tuple[bool, int | None]:
        ids = sorted(trial_id_of(t) for t in self._inner.get_all_trials(study_id, False)
                     if t.system_attrs.get(CREATE_TOKEN_ATTR) == token)
        return (True, ids[0]) if ids else (False, None)

    def _drop_duplicates(self, study_id: int, token: str, keep: int) -> None:
        extra = [t for t in self._call(self._inner.get_all_trials, study_id, False)
                 if t.system_attrs.get(CREATE_TOKEN_ATTR) == token and trial_id_of(t) != keep]
        for t in extra:
            log.warning("trial %d is a duplicate made by a retried storage call; finishing it "
                        "as FAIL (%s)", t.number, LOST_RACE_ATTR)
            self._call(self._inner.set_trial_system_attr, trial_id_of(t), LOST_RACE_ATTR, True)
            self._call(self._inner.set_trial_user_attr, trial_id_of(t), FAIL_REASON_ATTR,
                       "not run: a duplicate created when a storage call was retried")
            try:
                self.set_trial_state_values(trial_id_of(t), TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: optuna.distributions.BaseDistribution) -> None:
        # Optuna ignores the duplicate-key error of a repeated insert: safe to repeat
        self._call(self._inner.set_trial_param, trial_id, param_name, param_value_internal,
                   distribution)

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        def recover() -> tuple[bool, Any]:
            # the lost attempt may have been committed: already in that state is success
            return (self._rdb.get_trial(trial_id).state == state), True

        return self._call(self._inner.set_trial_state_values, trial_id, state, values,
                          recover=recover)

    def set_trial_intermediate_value(self, trial_id: int, step: int,
                                     intermediate_value: float) -> None:
        self._call(self._inner.set_trial_intermediate_value, trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call(self._inner.set_trial_user_attr, trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call(self._inner.set_trial_system_attr, trial_id, key, value)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._call(self._inner.get_trial_id_from_study_id_trial_number, study_id,
                          trial_number)

    def get_trial_number_from_id(self, trial_id: int) -> int:
        return self._call(self._inner.get_trial_number_from_id, trial_id)

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        return self._call(self._rdb.get_trial_param, trial_id, param_name)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._call(self._inner.get_trial, trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._call(self._inner.get_all_trials, study_id, deepcopy, states)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._call(self._inner.get_best_trial, study_id)

    def remove_session(self) -> None:
        self._rdb.remove_session()

    # -- heartbeats (BaseHeartbeat) ----------------------------------------------------------

    def record_heartbeat(self, trial_id: int) -> None:
        """One try: a beat lost to an outage is replaced by the next one."""
        try:
            self._inner.record_heartbeat(trial_id)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._down(exc)
            return
        self._up()

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        recovered = self._recovered_at
        grace = self._rdb.grace_period or 2 * (self._rdb.heartbeat_interval or 0)
        if recovered is not None and time.monotonic() - recovered < grace:
            return []  # their workers were cut off too: give them a grace period to beat again
        return self._call(stale_trial_ids, self._inner, study_id)

    def get_heartbeat_interval(self) -> int | None:
        return self._rdb.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(
            self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._rdb.get_heartbeat_stale_trial_callback()
