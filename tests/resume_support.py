"""Helpers for the resume/worker/signal/migrate tests: real databases, real `hpo` processes.

Each test gets its own database (``hpo_rt_<random>``) on the local PostgreSQL and MariaDB (started
when down, as the README says) and a throw-away project folder with a tiny, fast study.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "s3cret-do-not-log"  # trust auth ignores it; it must never appear in any output

STUDY = """\
description: tiny study for the resume tests (test_vit at 16 px, about a second per epoch)
seed: 0
dataset: {{name: digits}}
model: {{name: test_vit, image_size: 16}}
search_space: rt
train: {{batch_size: 64}}
objective: {{metric: val_accuracy}}
budget: {{n_trials: {n_trials}, max_epochs: {max_epochs}}}
sampler: {{type: random}}
pruner: {{type: none}}
checkpoint: {{every_n_epochs: {every}, keep_best_k: {keep}}}
workers: {{heartbeat_interval: 1, grace_period: 3, max_retries: 3}}
"""
SPACE = "params:\n  lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n"


def make_project(root: Path, n_trials: int = 2, max_epochs: int = 4, every: int = 1,
                 keep: int = 1, name: str = "rt") -> Path:
    """A folder with studies/NAME.yaml and search_spaces/rt.yaml; returns the folder."""
    (root / "studies").mkdir(parents=True, exist_ok=True)
    (root / "search_spaces").mkdir(exist_ok=True)
    (root / "studies" / f"{name}.yaml").write_text(
        STUDY.format(n_trials=n_trials, max_epochs=max_epochs, every=every, keep=keep))
    (root / "search_spaces" / "rt.yaml").write_text(SPACE)
    return root


def _ensure_postgres() -> None:
    if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode:
        version = max(os.listdir("/etc/postgresql"))
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                       check=False)
        wait_for(lambda: subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"],
                                        check=False).returncode == 0,
                 120, every=0.5, what="PostgreSQL to accept connections")


def _ensure_mysql() -> None:
    import pymysql

    def up() -> bool:
        try:
            pymysql.connect(host="127.0.0.1", user="root", password="").close()
        except pymysql.err.OperationalError:
            return False
        return True

    if not up():
        subprocess.run(["start-stop-daemon", "--start", "--oknodo", "--background", "--exec",
                        "/usr/sbin/mariadbd"], check=False)
        wait_for(up, 120, every=0.5, what="MariaDB to accept connections")


def make_storage(kind: str, tmp_path: Path) -> str:
    """A fresh, empty storage URL of ``kind`` (sqlite, postgresql, mysql); dropped at teardown
    by :func:`drop_storage`."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'shared' / 'hpo.db'}"
    db = f"hpo_rt_{uuid.uuid4().hex[:10]}"
    if kind == "postgresql":
        import psycopg2

        _ensure_postgres()
        conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute(f"CREATE DATABASE {db}")
        conn.close()
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/{db}"
    import pymysql

    _ensure_mysql()
    conn = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    conn.cursor().execute(f"CREATE DATABASE {db}")
    conn.close()
    return f"mysql+pymysql://root@127.0.0.1:3306/{db}"


def drop_storage(url: str) -> None:
    storage = _STORAGES.pop(url, None)
    if storage is not None:
        storage.engine.dispose()
    db = url.rsplit("/", 1)[-1]
    if url.startswith("postgresql"):
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        conn.close()
    elif url.startswith("mysql"):
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
        conn.cursor().execute(f"DROP DATABASE IF EXISTS {db}")
        conn.close()


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def storage_url(request, tmp_path):
    url = make_storage(request.param, tmp_path)
    yield url
    drop_storage(url)


def spawn(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """Start ``hpo ARGS`` in ``cwd`` as its own process, output to ``log``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    env.pop("HPO_STORAGE", None)
    env.pop("HPO_ARTIFACTS", None)
    handle = open(log, "w")  # noqa: SIM115 - closed with the process by the OS
    return subprocess.Popen([sys.executable, "-m", "hpo.cli", *args], cwd=cwd, env=env,
                            stdout=handle, stderr=subprocess.STDOUT)


_STORAGES: dict[str, optuna.storages.RDBStorage] = {}


def load(url: str, name: str = "rt") -> optuna.Study:
    """The study, through hpo's own storage opener (SQLite locking as the workers do it)."""
    from hpo.storage import open_storage, resolve_storage_url

    if url not in _STORAGES:
        _STORAGES[url] = open_storage(resolve_storage_url(url))
    return optuna.load_study(study_name=name, storage=_STORAGES[url])


def study_exists(url: str, name: str = "rt") -> bool:
    try:
        load(url, name)
    except KeyError:
        return False
    except Exception:  # noqa: BLE001 - tables not created yet
        return False
    return True


def running_with_checkpoint(url: str, min_epoch: int = 1):
    """The RUNNING trial whose newest checkpoint is at ``min_epoch`` or later, else None."""
    if not study_exists(url):
        return None
    for t in load(url).get_trials(deepcopy=False):
        ptr = t.user_attrs.get("checkpoint")
        if t.state == optuna.trial.TrialState.RUNNING and ptr and ptr["epoch"] >= min_epoch \
                and ptr["trial"] == t.number:
            return t
    return None


def finish(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        pytest.fail(f"process {proc.args} did not finish in {timeout:.0f}s")


def copy_log(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


