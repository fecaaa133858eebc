"""Real database outages for the storage-outage tests (no mocks).

PostgreSQL: ``ALTER DATABASE db ALLOW_CONNECTIONS false`` and ``pg_terminate_backend`` of every
session on it (the workers' pooled connections die, new ones are refused), then back to true.
MariaDB: the workers connect as a user of their own (:func:`mysql_user_url`); the outage is
``ALTER USER ... ACCOUNT LOCK`` plus ``KILL`` of that user's sessions, then ``ACCOUNT UNLOCK``.

:func:`hold_tell` makes an outage hit a ``tell`` deterministically: it write-locks the
``trial_values`` table (which only a tell writes) so the worker's tell waits inside its
transaction, and :meth:`Outage.start` then cuts it off there.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import optuna
from sqlalchemy.engine import make_url

MYSQL_PASSWORD = "0utage-pw"


def _db(url: str) -> str:
    return make_url(url).database


def _pg_admin():
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    conn.autocommit = True
    return conn


def _mysql_root(db: str | None = None):
    import pymysql

    return pymysql.connect(host="127.0.0.1", user="root", password="", database=db,
                           autocommit=True)


def mysql_user_url(root_url: str) -> str:
    """A URL for ``root_url``'s database as a fresh user with every right on it (only its
    sessions are cut by an outage); drop it with :func:`drop_mysql_user`."""
    db = _db(root_url)
    user = f"hpo_o_{uuid.uuid4().hex[:8]}"
    conn = _mysql_root()
    with conn.cursor() as cur:
        for host in ("%", "localhost"):
            cur.execute(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{MYSQL_PASSWORD}'")
            cur.execute(f"GRANT ALL PRIVILEGES ON `{db}`.* TO '{user}'@'{host}'")
    conn.close()
    return f"mysql+pymysql://{user}:{MYSQL_PASSWORD}@127.0.0.1:3306/{db}"


def drop_mysql_user(url: str) -> None:
    user = make_url(url).username
    conn = _mysql_root()
    with conn.cursor() as cur:
        for host in ("%", "localhost"):
            cur.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")
    conn.close()


class Outage:
    """Cut the workers of ``url`` off their database (:meth:`start`) and let them back
    (:meth:`end`); ``duration`` is measured from the cut to the return."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.kind = "postgresql" if url.startswith("postgresql") else "mysql"
        self.db = _db(url)
        self.user = make_url(url).username
        self.started: float | None = None
        self.duration: float | None = None

    def start(self) -> None:
        if self.kind == "postgresql":
            conn = _pg_admin()
            with conn.cursor() as cur:
                cur.execute(f"ALTER DATABASE {self.db} ALLOW_CONNECTIONS false")
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()", (self.db,))
            conn.close()
        else:
            conn = _mysql_root()
            with conn.cursor() as cur:
                for host in ("%", "localhost"):
                    cur.execute(f"ALTER USER '{self.user}'@'{host}' ACCOUNT LOCK")
                cur.execute("SELECT id FROM information_schema.processlist WHERE user = %s",
                            (self.user,))
                for (pid,) in cur.fetchall():
                    with contextlib.suppress(Exception):  # gone already
                        cur.execute(f"KILL {int(pid)}")
            conn.close()
        self.started = time.monotonic()

    def end(self) -> None:
        if self.started is None:
            return
        if self.kind == "postgresql":
            conn = _pg_admin()
            with conn.cursor() as cur:
                cur.execute(f"ALTER DATABASE {self.db} ALLOW_CONNECTIONS true")
            conn.close()
        else:
            conn = _mysql_root()
            with conn.cursor() as cur:
                for host in ("%", "localhost"):
                    cur.execute(f"ALTER USER '{self.user}'@'{host}' ACCOUNT UNLOCK")
            conn.close()
        self.duration = time.monotonic() - self.started
        self.started = None

    def down(self) -> bool:
        """Whether new sessions of the workers' user are refused now (checked for real)."""
        try:
            if self.kind == "postgresql":
                import psycopg2

                psycopg2.connect(host="127.0.0.1", user=self.user, dbname=self.db).close()
            else:
                import pymysql

                pymysql.connect(host="127.0.0.1", user=self.user, password=MYSQL_PASSWORD,
                                database=self.db).close()
        except Exception:  # noqa: BLE001 - refused: the outage holds
            return True
        return False


@contextlib.contextmanager
def hold_tell(url: str) -> Iterator[callable]:
    """Write-lock ``trial_values`` (reads still pass) while the block runs; yields a function
    that says how many sessions wait on the lock (a tell blocked inside its transaction)."""
    db = _db(url)
    if url.startswith("postgresql"):
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname=db)
        cur = conn.cursor()
        cur.execute("LOCK TABLE trial_values IN SHARE MODE")  # opens the transaction

        def waiting() -> int:
            cur.execute("SELECT count(*) FROM pg_locks WHERE NOT granted "
                        "AND relation = 'trial_values'::regclass")
            return cur.fetchone()[0]
    else:
        conn = _mysql_root(db)
        cur = conn.cursor()
        cur.execute("LOCK TABLES trial_values READ")
        user = make_url(url).username

        def waiting() -> int:
            cur.execute("SELECT count(*) FROM information_schema.processlist "
                        "WHERE user = %s AND state LIKE 'Waiting for table%%'", (user,))
            return cur.fetchone()[0]
    try:
        yield waiting
    finally:
        with contextlib.suppress(Exception):  # the outage may have killed this session
            conn.close()


def plain_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's own storage on ``url`` (no hpo retries), to watch a study without waiting out
    the outage the test makes."""
    from hpo.storage import _with_driver

    return optuna.storages.RDBStorage(_with_driver(url),
                                      engine_kwargs={"pool_pre_ping": True})


def reported_epoch(storage: optuna.storages.BaseStorage, number: int, name: str = "rt") -> int:
    """The last epoch trial ``number`` reported (0: none yet, or no such trial)."""
    try:
        study_id = storage.get_study_id_from_name(name)
        trials = storage.get_all_trials(study_id, deepcopy=False)
    except Exception:  # noqa: BLE001 - study or tables not created yet
        return 0
    for t in trials:
        if t.number == number:
            return max(t.intermediate_values, default=0)
    return 0
