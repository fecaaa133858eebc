"""Workers through ``hpo storage-proxy`` (Optuna's gRPC proxy) on one study, and ``hpo status``.

Two worker processes join a study over ``grpc://`` in front of a SQLite file: the first is
killed mid-trial (after a checkpoint), the proxy-carried heartbeat goes stale, the second
fails it, retries it from its checkpoint and fills the budget exactly. ``hpo status`` shows
the running trial's host/pid/epoch while it trains and the retry afterwards; ``hpo report``
reads the study through the proxy. ``hpo status`` is also checked on PostgreSQL and MySQL
directly (a live heartbeat, the queue's sources).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import optuna
import pytest
from resume_support import (
    REPO,
    drop_storage,
    finish,
    load,
    make_project,
    make_storage,
    running_with_checkpoint,
    spawn,
)
from test_workers_concurrent import assert_exact_budget
from waiting import wait_for

from hpo.cli import main
from hpo.record import FAILED_TRIAL_ATTR, RESUMED_ATTR, RUN_BY_ATTR, SOURCE_ATTR

N_TRIALS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hpo(args: list[str], cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HPO_STORAGE", None)
    return subprocess.run([sys.executable, "-m", "hpo.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def paused_mid_trial(proc: subprocess.Popen, db: str) -> optuna.trial.FrozenTrial | None:
    """Stop ``proc`` (SIGSTOP) once it has a trial RUNNING with a checkpoint; the trial, or
    None (and ``proc`` continued) when that trial finished before the stop."""
    trial = running_with_checkpoint(db, 1)
    if trial is None:
        return None
    proc.send_signal(signal.SIGSTOP)
    if load(db).get_trials(deepcopy=False)[trial.number].state.name == "RUNNING":
        return trial
    proc.send_signal(signal.SIGCONT)
    return None


@pytest.fixture
def proxy(tmp_path):
    """A running ``hpo storage-proxy`` over a SQLite file: (grpc URL, SQLite URL)."""
    db = make_storage("sqlite", tmp_path)
    port = free_port()
    log = tmp_path / "proxy.log"
    proc = spawn(["storage-proxy", "--storage", db, "--port", str(port)], tmp_path, log)
    wait_for(lambda: "storage proxy for" in log.read_text() or proc.poll() is not None,
             60, what="the proxy to listen")
    assert proc.poll() is None, log.read_text()
    taken = hpo(["storage-proxy", "--storage", db, "--port", str(port)], tmp_path)
    assert taken.returncode == 2 and taken.stderr.count("\n") == 1, taken.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in taken.stderr
    yield f"grpc://127.0.0.1:{port}", db
    proc.send_signal(signal.SIGTERM)
    assert finish(proc, 30) == 0, log.read_text()
    assert "stopping" in log.read_text()


@pytest.mark.timeout(240)
def test_two_workers_through_the_proxy_retry_a_killed_trial(proxy, tmp_path):
    grpc_url, db = proxy
    folder = make_project(tmp_path / "a", n_trials=N_TRIALS, max_epochs=3, keep=3)
    art = str(tmp_path / "artifacts")
    first = spawn(["study", "rt", "--storage", grpc_url, "--artifacts", art, "--no-progress"],
                  folder, tmp_path / "a.log")
    killed = wait_for(lambda: paused_mid_trial(first, db), 120,
                      what=lambda: "a checkpointed trial: " + (tmp_path / "a.log").read_text())
    shown = hpo(["status", "rt", "--storage", grpc_url], folder)
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if f"trial {killed.number:4d}" in x)
    assert f"pid {first.pid}" in line and socket.gethostname() in line, shown.stdout
    assert "heartbeat " in line and "s ago" in line and "/3" in line, line
    first.send_signal(signal.SIGKILL)  # a machine lost mid-trial
    first.wait()

    (tmp_path / "b").mkdir()  # another machine: no study file, the stored config
    second = spawn(["worker", "rt", "--storage", grpc_url, "--artifacts", art, "--no-progress"],
                   tmp_path / "b", tmp_path / "b.log")
    assert finish(second, 180) == 0, (tmp_path / "b.log").read_text()[-3000:]

    trials = load(db).get_trials(deepcopy=False)
    assert_exact_budget([t for t in trials if t.number != killed.number], N_TRIALS)
    assert next(t for t in trials if t.number == killed.number).state.name == "FAIL"
    retry = next(t for t in trials if t.system_attrs.get(FAILED_TRIAL_ATTR) == killed.number)
    assert retry.user_attrs[RESUMED_ATTR]["from_trial"] == killed.number, retry.user_attrs
    assert retry.user_attrs[RUN_BY_ATTR]["pid"] == second.pid

    shown = hpo(["status", "rt", "--storage", grpc_url], folder)
    assert f"finished {N_TRIALS} of {N_TRIALS}" in shown.stdout, shown.stdout
    assert f"trial {retry.number:4d}  retries trial {killed.number}" in shown.stdout
    report = hpo(["report", "rt", "--storage", grpc_url, "--out", str(tmp_path / "rep")], folder)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "rep" / "rt.html").is_file()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_status_on_a_server_database(kind, tmp_path, capsys):
    from hpo.storage import open_storage, resolve_storage_url

    url = make_storage(kind, tmp_path)
    try:
        storage = open_storage(resolve_storage_url(url), heartbeat_interval=30, grace_period=90)
        study = optuna.create_study(study_name="st", storage=storage, direction="maximize")
        study.set_user_attr("hpo_config", {"budget": {"n_trials": 5, "max_epochs": 4},
                                           "workers": {"grace_period": 90},
                                           "objective": {"metric": "val_accuracy"}})
        study.add_trial(optuna.trial.create_trial(value=0.7, params={"lr": 0.01}, distributions={
            "lr": optuna.distributions.FloatDistribution(1e-3, 0.1)}))
        running = study.ask()
        running.set_user_attr(RUN_BY_ATTR, {"host": "gpu-7", "pid": 4242})
        running.report(0.5, 1)
        storage.record_heartbeat(running._trial_id)
        study.enqueue_trial({"lr": 0.02}, user_attrs={SOURCE_ATTR: "rules",
                                                      "hpo_analysis": "a1", "hpo_proposal": 0})
        study.enqueue_trial({"lr": 0.03})
        assert main(["status", "st", "--storage", url]) == 0
        out = capsys.readouterr().out
        assert "finished 1 of 5: complete 1, pruned 0, failed 0 | running 1 | waiting 2" in out
        assert "best: trial 0 val_accuracy=0.7000 (maximize) lr=0.01" in out
        line = next(x for x in out.splitlines() if "gpu-7" in x)
        assert "pid 4242  epoch 1/4  heartbeat " in line and "STALE" not in line, line
        assert "proposal (rules analysis a1, #0)  lr=0.02" in out
        assert "user (enqueued)  lr=0.03" in out
        assert "time left: about" in out and "4 trials left" in out
    finally:
        drop_storage(url)


def test_grpc_urls_the_dashboard_and_an_absent_proxy(tmp_path, capsys):
    port = free_port()  # nothing listens there
    assert main(["dashboard", "--storage", f"grpc://127.0.0.1:{port}"]) == 75
    assert f"storage proxy grpc://127.0.0.1:{port} does not answer" in capsys.readouterr().err
    assert main(["status", "x", "--storage", "grpc://user@127.0.0.1/db"]) == 2
    assert "grpc://HOST:PORT of `hpo storage-proxy`" in capsys.readouterr().err


def _study_view(port: int, name: str) -> dict:
    """The dashboard's list entry and view of study ``name`` (real HTTP)."""
    import json
    import urllib.request

    def get(path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
            return json.loads(r.read())

    (study_id,) = [s["study_id"] for s in get("/api/studies")["study_summaries"]
                   if s["study_name"] == name]
    return get(f"/api/studies/{study_id}?after=0")


@pytest.mark.timeout(180)
def test_dashboard_through_the_proxy_shows_what_the_database_shows(proxy, tmp_path):
    """``hpo dashboard --storage grpc://...``: the analyses published as notes through the
    proxy, and every trial, as the dashboard on the database itself shows them."""
    from report_studies import make_study
    from test_dashboard_scale import order_free

    from hpo.dashboard import start, wait_until_up
    from hpo.record import DASHBOARD_NOTE_HEADING

    grpc_url, db = proxy
    make_study(db, "seen", n_trials=12, analysis_after=5)
    views = []
    for url, publish in ((grpc_url, True), (db, False)):
        port = free_port()
        server = start(url, port=port, artifacts=str(tmp_path / "art"), publish=publish,
                       echo=lambda _: None)
        try:
            wait_until_up(port, proc=server)
            views.append(_study_view(port, "seen"))
        finally:
            server.terminate()
            server.wait(timeout=30)
    through_proxy, direct = views
    assert len(through_proxy["trials"]) == 12
    assert through_proxy["note"]["body"].startswith(DASHBOARD_NOTE_HEADING)
    assert order_free(through_proxy) == order_free(direct)


@pytest.mark.timeout(120)
def test_status_watch_redraws_until_ctrl_c(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    study = optuna.create_study(study_name="w", storage=url)
    study.enqueue_trial({"lr": 0.01})
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "hpo.cli", "status", "w", "--storage", url,
                             "--watch", "0.2"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = 0
    while seen < 2:  # two redraws, each a whole status
        line = proc.stdout.readline()
        assert line, f"hpo status --watch ended: exit {proc.wait()}"
        seen += line.startswith("study 'w' in ")
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0 and "Traceback" not in rest, rest


def start_proxy(db: str, port: int, log) -> subprocess.Popen:
    proc = spawn(["storage-proxy", "--storage", db, "--port", str(port)], log.parent, log)
    wait_for(lambda: "storage proxy for" in log.read_text() or proc.poll() is not None,
             60, what="the proxy to listen")
    assert proc.poll() is None, log.read_text()
    return proc


@pytest.mark.timeout(240)
def test_a_proxy_crash_stops_workers_with_75_and_the_trial_resumes(tmp_path):
    db, port = make_storage("sqlite", tmp_path), free_port()
    url = f"grpc://127.0.0.1:{port}"
    first_proxy = start_proxy(db, port, tmp_path / "p1.log")
    folder = make_project(tmp_path / "a", n_trials=1, max_epochs=3)
    study = folder / "studies" / "rt.yaml"  # a proxy away longer than the worker waits for it
    study.write_text(study.read_text().replace("max_retries: 3}",
                                               "max_retries: 3, outage_limit_s: 2}"))
    art = str(tmp_path / "artifacts")
    worker = spawn(["study", "rt", "--storage", url, "--artifacts", art, "--no-progress"],
                   folder, tmp_path / "a.log")
    killed = wait_for(lambda: paused_mid_trial(worker, db), 120, what="a checkpointed trial")
    first_proxy.send_signal(signal.SIGKILL)
    first_proxy.wait()
    worker.send_signal(signal.SIGCONT)
    assert finish(worker, 120) == 75, (tmp_path / "a.log").read_text()
    errors = [x for x in (tmp_path / "a.log").read_text().splitlines()
              if x.startswith("hpo: error")]
    assert len(errors) == 1 and errors[0].startswith(f"hpo: error: storage proxy {url} "
                                                     "unreachable"), errors
    assert f"trial {killed.number} is left for retry" in errors[0], errors

    second_proxy = start_proxy(db, port, tmp_path / "p2.log")
    rerun = spawn(["worker", "rt", "--storage", url, "--artifacts", art, "--no-progress"],
                  folder, tmp_path / "b.log")
    assert finish(rerun, 180) == 0, (tmp_path / "b.log").read_text()[-3000:]
    second_proxy.send_signal(signal.SIGTERM)
    assert finish(second_proxy, 30) == 0
    trials = load(db).get_trials(deepcopy=False)
    assert_exact_budget([t for t in trials if t.number != killed.number], 1)
    retry = next(t for t in trials if t.system_attrs.get(FAILED_TRIAL_ATTR) == killed.number)
    assert retry.user_attrs[RESUMED_ATTR]["from_trial"] == killed.number
