"""Where studies live: an Optuna RDB storage URL (SQLite by default, PostgreSQL or MySQL to share).

The URL comes from ``--storage``, else the ``HPO_STORAGE`` environment variable, else
``sqlite:///runs/hpo.db``. Passwords never reach logs or reports: use :func:`redact`.

    >>> redact("postgresql://ml:s3cret@db.example:5432/hpo")
    'postgresql://ml:***@db.example:5432/hpo'
"""

from __future__ import annotations

import fcntl
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from hpo.errors import ConfigError

DEFAULT_STORAGE = "sqlite:///runs/hpo.db"
_DRIVERS = {
    "sqlite": "sqlite",
    "postgresql": "postgresql+psycopg2",
    "postgres": "postgresql+psycopg2",
    "postgresql+psycopg2": "postgresql+psycopg2",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "mysql+pymysql": "mysql+pymysql",
}


def resolve_storage_url(cli_value: str | None = None) -> str:
    """``--storage`` beats ``$HPO_STORAGE`` beats the default SQLite file; checked and normalised."""
    url = cli_value or os.environ.get("HPO_STORAGE") or DEFAULT_STORAGE
    source = "--storage" if cli_value else ("HPO_STORAGE" if os.environ.get("HPO_STORAGE") else "default")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(source, "storage", redact(url), _allowed()) from None
    if parsed.drivername not in _DRIVERS:
        raise ConfigError(source, "storage", redact(url), _allowed())
    parsed = parsed.set(drivername=_DRIVERS[parsed.drivername])
    if parsed.drivername == "sqlite" and not parsed.database:
        raise ConfigError(source, "storage", url, "a SQLite file, e.g. sqlite:///runs/hpo.db")
    return parsed.render_as_string(hide_password=False)


def _allowed() -> str:
    return ("sqlite:///PATH, postgresql://USER:PASS@HOST:PORT/DB or "
            "mysql+pymysql://USER:PASS@HOST:PORT/DB")


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (safe for logs, errors and reports)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable storage URL>"


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, else None."""
    parsed = make_url(url)
    return Path(parsed.database) if parsed.drivername == "sqlite" and parsed.database else None


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retries: int | None = None,
) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage on ``url``; SQLite gets its folder created and safe locking.

    With ``heartbeat_interval`` every running trial records a heartbeat; a trial silent for
    ``grace_period`` seconds is failed by whichever worker looks next and retried (at most
    ``max_retries`` times) with the same parameters, as a WAITING trial any worker picks up.
    """
    engine_kwargs: dict = {"pool_pre_ping": True}
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    heartbeat: dict = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat_interval is not None:
                heartbeat = {
                    "heartbeat_interval": heartbeat_interval,
                    "grace_period": grace_period,
                    "heartbeat_stale_trial_callback":
                        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retries),
                }
            if path is None or path.name == ":memory:":
                return _server_storage(url, engine_kwargs, heartbeat)
            with _file_lock(path.with_name(path.name + ".lock")):
                storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
            _serialise_sqlite_writes(storage)
            return storage
    except Exception as exc:  # noqa: BLE001 - driver errors differ per database
        raise ConfigError("storage", "storage", redact(url),
                          f"a reachable database ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200].replace(url, redact(url))})") from None


def _server_storage(url: str, engine_kwargs: dict, heartbeat: dict) -> optuna.storages.RDBStorage:
    """PostgreSQL/MySQL: workers starting together race to create the tables; retry a few times."""
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
        except DBAPIError as exc:
            if exc.connection_invalidated or attempt == 4 or "connect" in str(exc).lower()[:200]:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes of one machine (SQLite is one machine only)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _serialise_sqlite_writes(storage: optuna.storages.RDBStorage) -> None:
    """Many workers on one SQLite file without "database is locked".

    SQLite answers a transaction that upgrades a read lock to a write lock with an immediate
    "database is locked" when another writer is active (the busy timeout does not apply, to
    avoid a deadlock). Starting every transaction with ``BEGIN IMMEDIATE`` takes the write lock
    first, so workers queue on the 60 s busy timeout instead; WAL lets readers run meanwhile.
    """
    engine = storage.engine

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 60000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners existed are dropped
