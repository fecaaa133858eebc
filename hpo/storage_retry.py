"""Riding out storage outages: a storage whose calls wait for the server to come back.

:func:`hpo.storage.open_storage` wraps every PostgreSQL/MySQL storage, and every ``grpc://``
storage (``hpo storage-proxy``, :mod:`hpo.proxy`), in :class:`RetryingStorage`. A storage call
that fails because the server cannot be reached is retried with capped exponential backoff
(:func:`backoff`: 0.5 s doubling to 5 s) until it succeeds or the outage has lasted
``outage_limit_s`` (``workers.outage_limit_s``, default 300 s). "Cannot be reached" is, for a
database: connection refused or dropped, database not accepting connections, account locked, a
killed session; for the proxy: gRPC status UNAVAILABLE (what the client raises, as
``grpc.RpcError``, both for a refused connection while the proxy is down and for a call in
flight when it dies: "Stream removed ... Connection reset by peer"), and UNKNOWN carrying the
proxy's own "storage unreachable" error (its database stayed down past the proxy's limit).
Behind the proxy a database outage does not reach the worker as an error at all: the proxy's
own storage waits it out, so the worker's call just takes that long; its clock starts with the
call (:meth:`RetryingStorage._call`). Training waits at the next
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
outage this process declares no other trial stale: their workers had the same outage. Through the
proxy a call that took half a ``grace_period`` or more counts as such an outage too (the proxy
was waiting out its database, and the other workers' beats waited with it).

Only the RDB wrapping counts SQLAlchemy's own failed attempts (engine event hooks); the proxy's
client caches trials itself, so it is used as it is (no ``CachedStorage`` around it).

    >>> [backoff(n) for n in range(6)]
    [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    >>> from sqlalchemy.exc import OperationalError
    >>> is_outage(OperationalError("SELECT 1", {}, ConnectionRefusedError("refused")))
    True
    >>> is_outage(KeyError("no study"))
    False
    >>> import grpc
    >>> class Refused(grpc.RpcError):
    ...     def code(self): return grpc.StatusCode.UNAVAILABLE
    ...     def details(self): return "failed to connect to all addresses"
    >>> is_outage(Refused()), describe(Refused())
    (True, 'UNAVAILABLE: failed to connect to all addresses')
"""

from __future__ import annotations

import copy
import logging
import sys
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
UNREACHABLE = "storage unreachable"  # how StorageUnavailable past the limit begins (RDB)
# what a gRPC server answers when the servicer raised: the proxy's own StorageUnavailable
_PROXY_STORAGE_DOWN = "Exception calling application: " + UNREACHABLE


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


def _grpc_status(err: BaseException) -> tuple[Any, str] | None:
    """``(StatusCode, details)`` of a ``grpc.RpcError`` that carries them, else None (grpc is
    not imported here: an RpcError exists only once something imported it)."""
    grpc = sys.modules.get("grpc")
    if grpc is None or not isinstance(err, grpc.RpcError) or not callable(
            getattr(err, "code", None)):
        return None
    details = err.details() if callable(getattr(err, "details", None)) else ""
    return err.code(), details or ""


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it, e.g. the SQLAlchemy error inside Optuna's
    ``StorageInternalError``) says the database could not be reached or dropped the session, or
    that the storage proxy could not be reached (gRPC UNAVAILABLE) or its database stayed down
    past the proxy's own limit (UNKNOWN with the proxy's "storage unreachable")."""
    for err in _chain(exc):
        status = _grpc_status(err)
        if status is not None:
            code, details = status
            if code.name == "UNAVAILABLE" or (
                    code.name == "UNKNOWN" and details.startswith(_PROXY_STORAGE_DOWN)):
                return True
            continue
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
    """``Type: first line of the driver's message`` (one line, at most 200 characters); for a
    gRPC error ``STATUS: details``."""
    for err in _chain(exc):
        status = _grpc_status(err)
        if status is not None:
            details = status[1].removeprefix("Exception calling application: ")
            return redact_secrets(f"{status[0].name}: {' '.join(details.split())}"[:200])
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
    """An Optuna storage that forwards to ``backend`` and waits out outages; see the module
    docstring. An RDBStorage is used through Optuna's own trial cache (as
    ``optuna.load_study(storage=rdb)`` would), any other storage (the proxy's client,
    :class:`hpo.proxy.ProxyStorage`) as it is.

    Attributes the wrapper lacks (``engine``, ``url``, ``grace_period``...) are the backend's.
    ``outage_limit_s`` may be changed at any time; ``limit_given`` says whether the opener set it.
    """

    def __init__(self, backend: BaseStorage, *, url: str | None = None,
                 outage_limit_s: float | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        rdb = isinstance(backend, RDBStorage)
        self._rdb = backend  # the name hpo.optuna_private.heartbeat_ages looks for
        self._inner: BaseStorage = CachedStorage(backend) if rdb else backend
        self._url = url or str(getattr(backend, "url", type(backend).__name__))
        self._proxied = not rdb  # a call's wait is the proxy waiting for its database
        self._what = "storage" if rdb else "storage proxy"
        self.limit_given = outage_limit_s is not None
        self.outage_limit_s = float(outage_limit_s or DEFAULT_OUTAGE_LIMIT_S)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._recovered_at: float | None = None
        self._db_errors = 0  # failed attempts: ours, and the engine's (Optuna's retries)
        self.outages: list[float] = []  # seconds each outage this process rode out lasted
        if rdb:
            event.listen(backend.engine, "handle_error", self._on_db_error)
            # Optuna rolls back the session on every failed attempt (its own retries included)
            event.listen(backend.scoped_session.session_factory, "after_soft_rollback",
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

    def _down(self, exc: BaseException, since: float | None = None) -> float:
        """Note that the storage is unreachable (since ``since``, a monotonic time, or now);
        the seconds it has been so."""
        now = time.monotonic()
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = now if since is None else min(since, now)
            down = now - self._down_since  # type: ignore[operator]
        if first:

            log.warning("%s %s unreachable (%s); waiting for it, up to %g s "
                        "(workers.outage_limit_s)", self._what, redact(self._url), describe(exc),
                        self.outage_limit_s)
        return down

    def _took(self, seconds: float) -> None:
        """A proxied call that answered after ``seconds``: half a grace period or more means
        the proxy was waiting out its database, and the other workers' beats waited too."""
        grace = self._grace_s()
        if not grace or seconds < grace / 2:
            return
        self._recovered_at = time.monotonic()
        log.info("storage proxy answered after %.1f s; no other trial counts as stale for %g s",
                 seconds, grace)

    def _past_limit(self, down: float, exc: BaseException) -> StorageUnavailable:
        """The one-line error for an outage past ``outage_limit_s``."""
        limit = f"workers.outage_limit_s: {self.outage_limit_s:g}"
        if self._proxied:
            return StorageUnavailable(f"{self._what} {redact(self._url)} unreachable for "
                                      f"{down:.0f} s ({describe(exc)}; {limit})")
        return StorageUnavailable(f"{UNREACHABLE} for {down:.0f} s ({redact(self._url)}: "
                                  f"{describe(exc)}; {limit})")

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
        log.warning("%s reachable again after %.1f s; continuing", self._what, lasted)

    def _call(self, fn: Callable[..., T], *args: Any,
              recover: Callable[[], tuple[bool, Any]] | None = None) -> T:
        """``fn(*args)``, retried while the storage is unreachable (up to the outage limit).

        After a failed attempt, ``recover()`` (when given) checks whether that attempt took
        effect after all: ``(True, result)`` ends the call with ``result``. Through the proxy
        the outage is counted from the start of the first failed attempt (the proxy may have
        been waiting for its database all that time), on a database from its failure.
        """
        attempt = 0
        while True:
            began = time.monotonic()
            try:
                result = fn(*args)
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self._db_errors += 1  # the attempt may have taken effect (see create_new_trial)
                down = self._down(exc, began if self._proxied else None)
                if down >= self.outage_limit_s:
                    raise self._past_limit(down, exc) from None
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
            if self._proxied:
                self._took(time.monotonic() - began)
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
        began = time.monotonic()
        try:
            self._inner.record_heartbeat(trial_id)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._down(exc, began if self._proxied else None)
            return
        self._up()
        if self._proxied:
            self._took(time.monotonic() - began)

    def _grace_s(self) -> float:
        """Seconds a running trial may go without a beat (the backend's ``grace_period``, by
        default two heartbeat intervals); 0 without heartbeats."""
        return self._rdb.grace_period or 2 * (self._rdb.heartbeat_interval or 0)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        grace = self._grace_s()
        stale = self._call(stale_trial_ids, self._inner, study_id)
        recovered = self._recovered_at  # looked at after the call: it may have waited one out
        if recovered is not None and time.monotonic() - recovered < grace:
            return []  # their workers were cut off too: give them a grace period to beat again
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._rdb.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(
            self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._rdb.get_heartbeat_stale_trial_callback()
