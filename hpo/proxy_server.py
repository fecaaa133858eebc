"""``hpo storage-proxy``: Optuna's gRPC proxy server in front of one RDB storage.

The server side of :mod:`hpo.proxy` (the client side, ``grpc://`` storage URLs and the
heartbeats they carry, is there; :mod:`hpo.storage` opens it). It opens the database the way
every hpo command does (:func:`hpo.storage.open_storage`: outages waited out, SQLite locking)
and relays the workers' heartbeats into it (:class:`hpo.proxy.HeartbeatRelay`). It binds
127.0.0.1 unless told otherwise: it has no TLS and no authentication.

    >>> PortTaken("cannot listen on 127.0.0.1:13000").exit_code
    2
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import optuna

from hpo.errors import ConfigError, HpoError
from hpo.optuna_private import CachedStorage, add_storage_proxy_service
from hpo.proxy import DEFAULT_PORT, KEEPALIVE_SERVER, HeartbeatRelay
from hpo.redaction import redact
from hpo.storage import open_storage


class PortTaken(HpoError):
    """The proxy's port is in use on that address. Exit code 2."""

    exit_code = 2


def start_proxy(url: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                threads: int = 16) -> Any:
    """A started grpc server proxying the RDB storage at ``url`` (call ``.stop(grace)``)."""
    import grpc

    if url.startswith("grpc"):
        raise ConfigError("--storage", "storage", url, "the database URL (sqlite://, "
                          "postgresql://, mysql://) the proxy serves, not another proxy")
    storage = open_storage(url)
    if isinstance(storage, optuna.storages.RDBStorage):  # SQLite: Optuna's trial cache around it
        storage = CachedStorage(storage)               # (PostgreSQL/MySQL ones have it already)
    _check_port(host, port)  # before grpc, which would log its own bind error first
    server = grpc.server(ThreadPoolExecutor(max_workers=threads),
                         options=[("grpc.so_reuseport", 0),  # a second proxy is refused
                                  *KEEPALIVE_SERVER])
    add_storage_proxy_service(server, HeartbeatRelay(storage))
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise PortTaken(f"cannot listen on {host}:{port}; pick --port/--host")
    server.start()
    return server


def _check_port(host: str, port: int) -> None:
    """PortTaken (one line) when ``host:port`` cannot be bound."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise PortTaken(f"cannot listen on {host}:{port}: {exc.strerror or exc} (another "
                        "storage-proxy?); pick another --port, or --host") from None


def serve(url: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          echo: Callable[[str], None] = print) -> None:
    """``hpo storage-proxy``: serve ``url`` on ``host:port`` until SIGINT/SIGTERM."""
    server = start_proxy(url, host, port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    echo(f"storage proxy for {redact(url)} on grpc://{host}:{port} (workers: --storage "
         f"grpc://{host}:{port}); no TLS, no auth" + (": loopback only" if host in (
             "127.0.0.1", "localhost", "::1") else ": keep this port on a private network"))
    while not stop.wait(1.0):  # wake up: a signal the kernel gave one of gRPC's threads
        pass                   # runs its Python handler only when this thread runs
    echo("storage proxy stopping")
    server.stop(grace=5).wait()
