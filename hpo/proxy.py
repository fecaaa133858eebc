"""Optuna's gRPC storage proxy: ``hpo storage-proxy`` serves one RDB storage to many workers.

Hundreds of workers each holding database connections is what breaks first when a study scales
out; with the proxy only the proxy holds them (a small pool), and workers join with
``--storage grpc://HOST:PORT``. Server and client are Optuna's own
(``optuna.storages.run_grpc_proxy_server``, ``GrpcStorageProxy``). The proxy carries every
storage call (trials, params, values, user and system attrs, so analyses, the ledger, notes
and checkpoint pointers all pass through) but not Optuna's heartbeat, which hpo's stale-trial
retry needs. :class:`ProxyStorage` builds it on what the proxy does carry: a worker's beat is a
trial system attr (:data:`~hpo.record.HEARTBEAT_ATTR`, its Unix time), a trial RUNNING with a
beat older than ``grace_period`` is stale, and Optuna's retry callback queues its retry as on
an RDB storage. The proxy also records each such beat as an Optuna heartbeat in the database
(:class:`HeartbeatRelay`), so workers connected to the database directly see them too.

A proxy that goes away (killed, restarted on the same port) is an outage like a database's:
:func:`hpo.storage.open_storage` wraps the client in :class:`hpo.storage_retry.RetryingStorage`,
whose calls wait for it (gRPC UNAVAILABLE) up to ``workers.outage_limit_s``. The client's channel
reconnects within :data:`MAX_RECONNECT_BACKOFF_MS` of the proxy's return (gRPC's default backoff
grows to 120 s: measured, a proxy back after 60 s was seen 13.5 s later; with 2 s, 1.5 s later).

The proxy has no TLS and no authentication: it binds 127.0.0.1 unless told otherwise; across
machines keep it on a private network or behind an ssh tunnel / TLS-terminating proxy (README).

    >>> parse_grpc_url("grpc://127.0.0.1:13000")
    ('127.0.0.1', 13000)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages import GrpcStorageProxy
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from hpo.errors import ConfigError, StorageUnavailable
from hpo.optuna_private import (
    BaseHeartbeat,
    trial_id_of,
    wrap_grpc_stub,
)
from hpo.record import HEARTBEAT_ATTR

DEFAULT_PORT = 13000
MAX_RECONNECT_BACKOFF_MS = 2000  # how late the client may notice the proxy is back
KEEPALIVE_MS = 10_000  # a call in flight pings the proxy (after this long without traffic),
# and gives up on it after another KEEPALIVE_MS without an answer: a proxy host frozen or cut
# off by the network (no connection refused, no reset) is then an outage like any other, not a
# call that waits forever (measured with the proxy SIGSTOPped: the call ends in 10 s; with
# gRPC's own ping timeout, 60 s). The proxy accepts pings this often (:data:`KEEPALIVE_SERVER`).
KEEPALIVE_CLIENT = (("grpc.keepalive_time_ms", KEEPALIVE_MS),
                    ("grpc.keepalive_timeout_ms", KEEPALIVE_MS),
                    ("grpc.http2.max_pings_without_data", 0),  # a call blocked in the proxy
                    ("grpc.http2.ping_timeout_ms", KEEPALIVE_MS))  # gRPC's own: 60 s
KEEPALIVE_SERVER = (("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_MS // 2),
                    ("grpc.http2.max_ping_strikes", 0))


def parse_grpc_url(url: str) -> tuple[str, int]:
    """``(host, port)`` of ``grpc://HOST:PORT``; anything else is a ConfigError."""
    parsed = make_url(url)
    if parsed.drivername != "grpc" or not parsed.host or parsed.database or parsed.username:
        raise ConfigError("storage", "storage", url,
                          f"grpc://HOST:PORT of `hpo storage-proxy` (default port {DEFAULT_PORT})")
    return parsed.host, parsed.port or DEFAULT_PORT


# -- the worker's side -----------------------------------------------------------------------

class ProxyStorage(GrpcStorageProxy, BaseHeartbeat):
    """Optuna's gRPC proxy client plus heartbeats carried as a trial system attr.

    ``heartbeat_interval`` None: no heartbeats (as an RDBStorage opened without one). Staleness
    compares a beat (the beating worker's clock) with this machine's clock: keep the workers'
    clocks in NTP sync, to well within ``grace_period``.

    Calls raise ``grpc.RpcError`` (UNAVAILABLE) while the proxy is unreachable; waiting that out
    is :class:`hpo.storage_retry.RetryingStorage`'s job. The calls go through a channel of its
    own, which retries connecting at least every :data:`MAX_RECONNECT_BACKOFF_MS`.
    """

    def __init__(self, host: str, port: int, *, heartbeat_interval: int | None = None,
                 grace_period: int | None = None,
                 stale_trial_callback: Callable[..., None] | None = None) -> None:
        import grpc

        super().__init__(host=host, port=port)
        self.url = f"grpc://{host}:{port}"
        self._reconnecting = grpc.insecure_channel(f"{host}:{port}", options=[
            ("grpc.max_receive_message_length", -1),  # as Optuna's own channel
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.min_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
            *KEEPALIVE_CLIENT])
        # the generated stub class, on this channel (Optuna's own channel then stays unused)
        wrap_grpc_stub(self, lambda stub: type(stub)(self._reconnecting))
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self._stale_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        now = time.time()
        return [trial_id_of(t) for t in self.get_all_trials(study_id, deepcopy=False,
                                                         states=(TrialState.RUNNING,))
                if (age := beat_age(t, now)) is not None and age > grace]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[..., None] | None:
        return self._stale_callback

    def close(self) -> None:
        """Close the gRPC channels."""
        super().close()
        self._reconnecting.close()


def beat_age(trial: optuna.trial.FrozenTrial, now: float | None = None) -> float | None:
    """Seconds since ``trial``'s last beat through the proxy, None when it has none since it
    started (a retry inherits its predecessor's attrs: that older beat does not count).

        >>> from datetime import datetime
        >>> t = optuna.trial.create_trial(state=TrialState.RUNNING)
        >>> t.datetime_start = datetime.fromtimestamp(100.0)
        >>> t.system_attrs = {HEARTBEAT_ATTR: 130.0}
        >>> beat_age(t, now=160.0), beat_age(optuna.trial.create_trial(value=1.0), now=160.0)
        (30.0, None)
    """
    beat = trial.system_attrs.get(HEARTBEAT_ATTR)
    if not isinstance(beat, (int, float)):
        return None
    started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    if beat < started - 1.0:  # 1 s: the proxy's clock set datetime_start
        return None
    return max((time.time() if now is None else now) - beat, 0.0)


def open_proxy(url: str, *, heartbeat_interval: int | None = None,
               grace_period: int | None = None, stale_trial_callback: Any = None,
               wait_s: float = 10.0, kind: type[ProxyStorage] = ProxyStorage) -> ProxyStorage:
    """A :class:`ProxyStorage` (or its subclass ``kind``) on ``grpc://HOST:PORT``, once the
    proxy answers (else StorageUnavailable, exit 75, after ``wait_s``: a proxy absent at start
    is not waited out longer, as a database refusing connections at start is not)."""
    host, port = parse_grpc_url(url)
    storage = kind(host, port, heartbeat_interval=heartbeat_interval,
                   grace_period=grace_period, stale_trial_callback=stale_trial_callback)
    try:
        storage.wait_server_ready(timeout=wait_s)
    except ConnectionError:
        storage.close()
        raise StorageUnavailable(f"storage proxy {url} does not answer (after {wait_s:.0f}s): "
                                 "is `hpo storage-proxy` running there?") from None
    return storage


# -- the proxy's side ------------------------------------------------------------------------

class HeartbeatRelay:
    """The storage the proxy serves: ``storage`` as it is, except that a beat written as
    :data:`~hpo.record.HEARTBEAT_ATTR` is also recorded as Optuna's own heartbeat (database
    clock), for workers that use the database directly and for ``hpo status``."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage

    def __getattr__(self, name: str) -> Any:
        if name == "_storage":
            raise AttributeError(name)
        return getattr(self._storage, name)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._storage.set_trial_system_attr(trial_id, key, value)
        if key == HEARTBEAT_ATTR and isinstance(self._storage, BaseHeartbeat):
            self._storage.record_heartbeat(trial_id)
