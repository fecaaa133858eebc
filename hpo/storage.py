"""Where studies live: an Optuna RDB storage URL (SQLite by default, PostgreSQL or MySQL to share).

The URL comes from ``--storage``, else the ``HPO_STORAGE`` environment variable, else
``sqlite:///runs/hpo.db``. Passwords never reach logs or reports: use :func:`redact`. Nor need
they be on a command line (``ps`` shows every process's arguments to every user): the URL may
come from the environment, from a file only its owner can read (``--storage-file PATH`` or
``@PATH``), and ``${VAR}`` inside it is replaced by the environment variable VAR
(:func:`resolve_storage_url`).

    >>> redact("postgresql://ml:s3cret@db.example:5432/hpo")
    'postgresql://ml:***@db.example:5432/hpo'
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import optuna
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from hpo.errors import ConfigError, HpoError, StorageUnavailable
from hpo.proxy import open_proxy
from hpo.rdb_reader import FastReadRDBStorage
from hpo.record import LOST_RACE_ATTR
from hpo.redaction import PASSWORD_PART, redact
from hpo.storage_retry import RetryingStorage, describe, is_transient_connect_error

DEFAULT_STORAGE = "sqlite:///runs/hpo.db"
_DRIVERS = {
    "sqlite": "sqlite",
    "postgresql": "postgresql+psycopg2",
    "postgres": "postgresql+psycopg2",
    "postgresql+psycopg2": "postgresql+psycopg2",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "mysql+pymysql": "mysql+pymysql",
    "grpc": "grpc",  # `hpo storage-proxy` in front of one of the above (hpo.proxy)
}


def resolve_storage_url(cli_value: str | None = None, *, file: str | None = None,
                        env: str = "HPO_STORAGE", option: str = "--storage",
                        default: str | None = DEFAULT_STORAGE, from_argv: bool = False) -> str:
    """The storage URL, checked and normalised (the driver hpo installs, passwords kept).

    ``cli_value`` (``--storage``) or ``file`` (``--storage-file``) beats the environment
    variable ``env`` (``$HPO_STORAGE``) beats ``default`` (None: one of them is required). Any
    of them may be ``@PATH`` (or ``file:PATH``): the URL is the first line of that file, which
    must not be readable by group or others (mode 0600 or stricter). ``${VAR}`` in the URL is
    replaced by the environment variable VAR (percent-encoded inside ``user:password@``); an
    unset one is an error naming it. ``from_argv``: ``cli_value`` came from the command line,
    so a password written there (visible in ``ps``) gets a warning on stderr.

        >>> os.environ["HPO_DOC_PW"] = "p@ss/word"
        >>> resolve_storage_url("postgresql://ml:${HPO_DOC_PW}@db:5432/hpo")
        'postgresql+psycopg2://ml:p%40ss%2Fword@db:5432/hpo'
        >>> resolve_storage_url("postgresql://ml:${HPO_DOC_UNSET}@db/hpo")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        hpo.storage.StorageSecretError: --storage: ${HPO_DOC_UNSET} is not set in the environment...
    """
    if cli_value and file:
        raise StorageSecretError(f"give either {option} or {option}-file, not both")
    if file:
        text, source = _read_url_file(file, f"{option}-file"), f"{option}-file {file}"
    elif cli_value:
        text, source = cli_value, option
        if from_argv and password_in_text(cli_value):
            print(f"hpo: warning: the {option} URL on the command line holds a password "
                  f"(visible in ps); use ${env}, {option}-file or ${{VAR}}", file=sys.stderr)
    elif os.environ.get(env):
        text, source = os.environ[env], env
    elif default is not None:
        text, source = default, "default"
    else:
        raise StorageSecretError(f"no storage URL: give {option} URL, {option}-file PATH or "
                                 f"set ${env}")
    reference = _file_reference(text)
    if reference is not None:
        text = _read_url_file(reference, source)
    url = expand_env_refs(text, source)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(source, "storage", redact(url), _allowed()) from None
    if parsed.drivername not in _DRIVERS:
        raise ConfigError(source, "storage", redact(url), _allowed())
    parsed = parsed.set(drivername=_DRIVERS[parsed.drivername])
    if parsed.drivername == "sqlite" and not parsed.database:
        raise ConfigError(source, "storage", url, "a SQLite file, e.g. sqlite:///runs/hpo.db")
    if parsed.drivername == "grpc" and (not parsed.host or parsed.database or parsed.username):
        raise ConfigError(source, "storage", redact(url),
                          "grpc://HOST:PORT of `hpo storage-proxy`, e.g. grpc://127.0.0.1:13000")
    return parsed.render_as_string(hide_password=False)


class StorageSecretError(HpoError):
    """A storage URL that cannot be resolved: an unsafe or missing URL file, an unset ``${VAR}``.
    Exit code 2 (bad input)."""

    exit_code = 2


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env_refs(text: str, source: str = "storage URL") -> str:
    """``text`` with each ``${VAR}`` replaced by the environment variable VAR; inside the URL's
    ``user:password@`` part the value is percent-encoded (a password may hold ``@`` or ``/``).

        >>> os.environ["HPO_DOC_USER"] = "ml"
        >>> expand_env_refs("mysql://${HPO_DOC_USER}@db/${HPO_DOC_USER}")
        'mysql://ml@db/ml'
    """
    refs = list(_ENV_REF.finditer(text))
    if not refs:
        return text
    unset = [m.group(1) for m in refs if m.group(1) not in os.environ]
    if unset:
        raise StorageSecretError(f"{source}: ${{{unset[0]}}} is not set in the environment (the "
                                 "storage URL refers to it)")
    begin = text.find("://")
    userinfo = (0, -1)
    if begin >= 0:
        begin += 3
        ends = [i for i in (text.find(c, begin) for c in "/?#") if i >= 0]
        at = text.rfind("@", begin, min(ends, default=len(text)))
        if at >= 0:
            userinfo = (begin, at)

    def value(match: re.Match[str]) -> str:
        raw = os.environ[match.group(1)]
        inside = userinfo[0] <= match.start() and match.end() <= userinfo[1]
        return quote(raw, safe="") if inside else raw

    return _ENV_REF.sub(value, text)


def password_in_text(text: str) -> bool:
    """Whether a storage URL as written holds a password itself (not only ``${VAR}``).

        >>> password_in_text("postgresql://ml:s3cret@db/hpo")
        True
        >>> [password_in_text(t) for t in ("postgresql://ml:${PGPASSWORD}@db/hpo",
        ...                                "postgresql://ml@db/hpo", "@/etc/hpo/storage")]
        [False, False, False]
    """
    if _file_reference(text) is not None:
        return False
    bare = _ENV_REF.sub("", text)
    try:
        return bool(make_url(bare).password)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy reads: ``://user:password@``?
        match = PASSWORD_PART.search(bare)
        return bool(match and len(match.group(0)) > len(match.group(1)))


def _file_reference(text: str) -> str | None:
    """The path of ``@PATH`` or ``file:PATH`` (``file:///abs/path`` too), else None."""
    if text.startswith("@"):
        return text[1:]
    if text.startswith("file:"):
        return text[len("file:"):].removeprefix("//")
    return None


def _read_url_file(path_text: str, source: str) -> str:
    """The first line (not blank, not ``#``) of a URL file only its owner may read."""
    path = Path(path_text).expanduser()
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if not path.is_file():
            raise StorageSecretError(f"{source}: {path} is not a file")
        if mode & 0o077:
            raise StorageSecretError(
                f"{source}: storage file {path} has mode {mode:04o}, readable by group or "
                f"others; it holds a password: chmod 600 {path}")
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise StorageSecretError(f"{source}: cannot read storage file {path} "
                                 f"({exc.strerror or type(exc).__name__})") from None
    for line in lines:
        if line.strip() and not line.strip().startswith("#"):
            return line.strip()
    raise StorageSecretError(f"{source}: storage file {path} holds no URL")


def _with_driver(url: str) -> str:
    """``url`` with the driver hpo installs (psycopg2, PyMySQL) when it names none."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    if parsed.drivername not in _DRIVERS:
        return url
    return parsed.set(drivername=_DRIVERS[parsed.drivername]).render_as_string(
        hide_password=False)


def _allowed() -> str:
    return ("sqlite:///PATH, postgresql://USER:PASS@HOST:PORT/DB, "
            "mysql+pymysql://USER:PASS@HOST:PORT/DB or grpc://HOST:PORT (hpo storage-proxy)")


def is_lost_race(trial: Any) -> bool:
    """Whether ``trial`` (a FrozenTrial) is a never-run trial that lost the budget race."""
    return bool(getattr(trial, "system_attrs", {}).get(LOST_RACE_ATTR))


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
    outage_limit_s: float | None = None,
) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage on ``url``; SQLite gets its folder created and safe locking.

    PostgreSQL/MySQL and ``grpc://`` storages wait out outages (of the database, of the proxy) of
    up to ``outage_limit_s`` (default 300 s) and then raise
    :class:`~hpo.errors.StorageUnavailable` (exit 75): :mod:`hpo.storage_retry`.

    With ``heartbeat_interval`` every running trial records a heartbeat; a trial silent for
    ``grace_period`` seconds is failed by whichever worker looks next and retried (at most
    ``max_retries`` times) with the same parameters, as a WAITING trial any worker picks up.

    ``grpc://HOST:PORT``: Optuna's gRPC proxy client (``hpo storage-proxy``), with heartbeats
    built on trial system attrs (:mod:`hpo.proxy`).

    Example:

        >>> import tempfile, optuna
        >>> url = f"sqlite:///{tempfile.mkdtemp()}/new/hpo.db"      # the folder is created
        >>> storage = open_storage(url, heartbeat_interval=10, grace_period=30, max_retries=2)
        >>> study = optuna.create_study(study_name="demo", storage=storage)
        >>> study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        >>> len(optuna.load_study(study_name="demo", storage=url).trials)
        2

    Args:
        url:
            ``sqlite:///PATH``, ``postgresql://...``, ``mysql://...`` (a driver is added when
            the URL names none) or ``grpc://HOST:PORT`` (resolve ``${VAR}``, ``@PATH`` and
            ``$HPO_STORAGE`` first with :func:`resolve_storage_url`).
        heartbeat_interval:
            Seconds between a running trial's heartbeats; None: no heartbeat, no retry.
        grace_period:
            Seconds of silence after which a running trial counts as dead (Optuna's default
            when None).
        max_retries:
            Retries of a dead trial, each a new WAITING trial with the same parameters.
        outage_limit_s:
            Seconds a PostgreSQL/MySQL or proxy outage is waited out before StorageUnavailable.
    """
    if url.startswith("grpc://"):  # a proxy that goes away mid-run is an outage too
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            proxy = open_proxy(url, heartbeat_interval=heartbeat_interval,
                               grace_period=grace_period,
                               stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                                   max_retry=max_retries) if heartbeat_interval is not None else None)
        return RetryingStorage(proxy, url=url, outage_limit_s=outage_limit_s)
    url = _with_driver(url)  # a plain postgresql:// would ask SQLAlchemy for psycopg 3
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
            if path is None:  # PostgreSQL/MySQL: calls wait out outages (hpo.storage_retry)
                return RetryingStorage(_server_storage(url, engine_kwargs, heartbeat), url=url,
                                       outage_limit_s=outage_limit_s)
            if path.name == ":memory:":
                return _server_storage(url, engine_kwargs, heartbeat)
            with _file_lock(path.with_name(path.name + ".lock")):
                storage = FastReadRDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
            _serialise_sqlite_writes(storage)
            return storage
    except Exception as exc:  # noqa: BLE001 - driver errors differ per database
        if is_transient_connect_error(exc):  # server down: exit 75 (try again), not 2
            raise StorageUnavailable(f"storage unreachable ({redact(url)}: "
                                     f"{describe(exc).replace(url, redact(url))}); "
                                     "try again later") from None
        raise ConfigError("storage", "storage", redact(url),
                          f"a reachable database ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200].replace(url, redact(url))})") from None


class StorageNotFoundError(HpoError):
    """A read-only command was given a SQLite file that does not exist. Exit code 2."""

    exit_code = 2


def open_existing_storage(url: str) -> optuna.storages.RDBStorage:
    """:func:`open_storage` for commands that only read (``hpo report``, ``compare``,
    ``analyze``, ``dashboard``, the source of ``migrate``): a SQLite file that does not exist is
    a :class:`StorageNotFoundError` naming it, and neither the file nor its folder is created.
    Server databases (PostgreSQL, MySQL) are opened as usual.

        >>> open_existing_storage("sqlite:///no/such/typo.db")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        hpo.storage.StorageNotFoundError: no SQLite file no/such/typo.db (storage ...): this ...
        >>> Path("no").exists()
        False
    """
    path = sqlite_path(_with_driver(url))
    if path is not None and path.name != ":memory:" and not path.is_file():
        raise StorageNotFoundError(
            f"no SQLite file {path} (storage {redact(url)}): this command reads a storage and "
            "never creates one; check --storage or $HPO_STORAGE")
    return open_storage(url)


def _server_storage(url: str, engine_kwargs: dict, heartbeat: dict) -> optuna.storages.RDBStorage:
    """PostgreSQL/MySQL: workers starting together race to create the tables; retry a few times."""
    for attempt in range(5):
        try:
            return FastReadRDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
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
