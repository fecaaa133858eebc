"""Workers through ``hpo storage-proxy`` ride out outages: real proxy processes, real workers.

- The proxy is killed (SIGKILL) while a worker trains, and restarted on the same port: the
  worker waits (gRPC UNAVAILABLE is an outage to :class:`hpo.storage_retry.RetryingStorage`),
  goes on when the proxy answers, and finishes the study (exit 0): every trial COMPLETE once,
  the interrupted one with all its epochs (not retried, not resumed).
- The proxy stays away past ``workers.outage_limit_s`` (2 s): exit 75, one ``hpo: error:`` line,
  the last thing said; the trial stays RUNNING with its checkpoint, for a retry.
- PostgreSQL goes away behind a running proxy: the proxy waits it out (its own
  RetryingStorage), the worker's calls just wait with it, and the worker never sees an error.

Every step waits on an event (a reported epoch, the worker's or the proxy's "unreachable"
line), never on the clock.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from outage_support import Outage, plain_storage, reported_epoch
from resume_support import REPO, drop_storage, finish, load, make_project, make_storage
from test_storage_proxy import free_port, start_proxy
from test_workers_concurrent import assert_exact_budget
from waiting import wait_for


def _worker(tmp_path: Path, url: str, n_trials: int, max_epochs: int, limit: int):
    """``hpo study rt --storage URL`` (tiny digits study, ``workers.outage_limit_s: limit``);
    (process, stdout file, stderr file)."""
    project = make_project(tmp_path / "project", n_trials=n_trials, max_epochs=max_epochs)
    study = project / "studies" / "rt.yaml"
    study.write_text(study.read_text().replace("max_retries: 3}",
                                               f"max_retries: 3, outage_limit_s: {limit}}}"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    env.pop("HPO_STORAGE", None)
    env.pop("HPO_ARTIFACTS", None)
    out, err = tmp_path / "worker.out", tmp_path / "worker.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpo.cli", "study", "rt", "--storage", url, "--artifacts",
             str(tmp_path / "artifacts"), "--no-progress"],
            cwd=project, env=env, stdout=stdout, stderr=stderr)
    return proc, out, err


def _trained(db: str, proc: subprocess.Popen, epoch: int = 1) -> int:
    """Wait until trial 0 is RUNNING and reported ``epoch`` (read from the database itself)."""
    def running_at() -> bool:
        try:
            trials = load(db).get_trials(deepcopy=False)
        except Exception:  # noqa: BLE001 - study or tables not created yet
            return False
        return bool(trials) and trials[0].state == TrialState.RUNNING \
            and max(trials[0].intermediate_values, default=0) >= epoch

    wait_for(lambda: running_at() or proc.poll() is not None, 80,
             what=f"trial 0 to report epoch {epoch}")
    assert proc.poll() is None, "the worker ended before the outage"
    return max(load(db).trials[0].intermediate_values)


def _met(err: Path, proc: subprocess.Popen, what: str) -> None:
    """Wait until the worker says it waits for the storage proxy."""
    wait_for(lambda: what in err.read_text() or proc.poll() is not None, 60,
             what=lambda: f"the worker to say '{what}': {err.read_text()[-2000:]}")
    assert proc.poll() is None, err.read_text()[-3000:]


def _all_complete(db: str, n_trials: int, max_epochs: int) -> None:
    """None lost, none duplicated, none retried; every trial trained each epoch once."""
    trials = load(db).get_trials(deepcopy=False)
    assert_exact_budget(trials, n_trials)
    assert [(t.number, t.state) for t in trials] == [(n, TrialState.COMPLETE)
                                                      for n in range(n_trials)]
    for t in trials:
        assert sorted(t.intermediate_values) == list(range(1, max_epochs + 1)), t.number
        assert t.user_attrs["epochs"] == max_epochs and "resumed" not in t.user_attrs
        assert "failed_trial" not in t.system_attrs


@pytest.mark.timeout(90)
def test_worker_rides_out_a_proxy_restart(tmp_path):
    db, port = make_storage("sqlite", tmp_path), free_port()
    url, n_trials, max_epochs = f"grpc://127.0.0.1:{port}", 2, 3
    first = start_proxy(db, port, tmp_path / "p1.log")
    proc, _out, err = _worker(tmp_path, url, n_trials, max_epochs, limit=60)
    at = _trained(db, proc)
    first.send_signal(signal.SIGKILL)  # the proxy's machine lost
    first.wait()
    _met(err, proc, f"storage proxy {url} unreachable")
    time.sleep(5)  # the outage itself: past grace_period (3 s) and gRPC's first reconnect tries
    assert proc.poll() is None, err.read_text()[-3000:]
    second = start_proxy(db, port, tmp_path / "p2.log")  # back on the same port
    try:
        rc = finish(proc, 70)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    said = err.read_text()
    assert rc == 0, said[-4000:]
    assert "Traceback" not in said and "hpo: error" not in said, said[-4000:]
    assert re.search(r"storage proxy reachable again after [0-9.]+ s", said), said[-4000:]
    assert at < max_epochs  # the outage came mid-trial
    _all_complete(db, n_trials, max_epochs)


@pytest.mark.timeout(90)
def test_proxy_away_past_the_limit_exits_75_with_one_line(tmp_path):
    db, port = make_storage("sqlite", tmp_path), free_port()
    url = f"grpc://127.0.0.1:{port}"
    proxy = start_proxy(db, port, tmp_path / "p.log")
    proc, _out, err = _worker(tmp_path, url, n_trials=1, max_epochs=4, limit=2)
    _trained(db, proc)
    proxy.send_signal(signal.SIGKILL)
    proxy.wait()
    rc = finish(proc, 60)
    said = err.read_text()
    assert rc == 75, said[-4000:]
    assert "Traceback" not in said, said[-4000:]
    errors = [line for line in said.splitlines() if line.startswith("hpo: error:")]
    assert len(errors) == 1 and said.rstrip().endswith(errors[0]), said[-4000:]
    assert re.fullmatch(rf"hpo: error: storage proxy {re.escape(url)} unreachable for \d+ s "
                        r"\(UNAVAILABLE: .+; workers\.outage_limit_s: 2\); trial 0 is left for "
                        r"retry from its last checkpoint", errors[0]), errors[0]
    trial = load(db).trials[0]  # left for a retry from its checkpoint
    assert trial.state == TrialState.RUNNING and trial.user_attrs["checkpoint"]["epoch"] >= 1


@pytest.mark.timeout(90)
def test_a_database_outage_behind_the_proxy_is_waited_out_by_the_proxy(tmp_path):
    db, port = make_storage("postgresql", tmp_path), free_port()
    url, n_trials, max_epochs = f"grpc://127.0.0.1:{port}", 2, 3
    watch = plain_storage(db)
    proxy_log = tmp_path / "p.log"
    proxy = start_proxy(db, port, proxy_log)
    try:
        proc, _out, err = _worker(tmp_path, url, n_trials, max_epochs, limit=60)
        wait_for(lambda: reported_epoch(watch, 0) >= 1 or proc.poll() is not None, 80,
                 what="trial 0 to report epoch 1")
        assert proc.poll() is None, err.read_text()[-3000:]
        outage = Outage(db)
        outage.start()
        try:
            assert outage.down()
            wait_for(lambda: "unreachable" in proxy_log.read_text(), 30,
                     what="a worker's call to wait in the proxy")
            time.sleep(4)  # the outage itself, past grace_period (3 s)
        finally:
            outage.end()
        rc = finish(proc, 70)
        said = err.read_text()
        assert rc == 0, said[-4000:]
        assert "unreachable" not in said and "Traceback" not in said, said[-4000:]
        assert "storage reachable again" in proxy_log.read_text()
        watch.engine.dispose()
        _all_complete(db, n_trials, max_epochs)
    finally:
        proxy.send_signal(signal.SIGTERM)
        finish(proxy, 30)
        drop_storage(db)


@pytest.mark.timeout(120)
def test_a_frozen_proxy_is_an_outage_not_a_call_that_waits_forever(tmp_path):
    """The proxy's process stopped (SIGSTOP: its host frozen or cut off; connections neither
    refused nor reset): the keepalive pings of a call in flight go unanswered, the call ends
    UNAVAILABLE within 2 x hpo.proxy.KEEPALIVE_MS, and past ``outage_limit_s`` the worker exits 75
    with its one line. (Without keepalive the call waited forever.)"""
    db, port = make_storage("sqlite", tmp_path), free_port()
    url = f"grpc://127.0.0.1:{port}"
    proxy = start_proxy(db, port, tmp_path / "p.log")
    try:
        proc, _out, err = _worker(tmp_path, url, n_trials=1, max_epochs=4, limit=2)
        _trained(db, proc)
        proxy.send_signal(signal.SIGSTOP)
        rc = finish(proc, 90)
        said = err.read_text()
        assert rc == 75, said[-4000:]
        errors = [line for line in said.splitlines() if line.startswith("hpo: error:")]
        assert len(errors) == 1 and said.rstrip().endswith(errors[0]), said[-4000:]
        assert re.fullmatch(rf"hpo: error: storage proxy {re.escape(url)} unreachable for \d+ s "
                            r"\(UNAVAILABLE: .+; workers\.outage_limit_s: 2\); trial 0 is left "
                            r"for retry from its last checkpoint", errors[0]), errors[0]
    finally:
        proxy.send_signal(signal.SIGCONT)
        proxy.send_signal(signal.SIGTERM)
        finish(proxy, 30)
    trial = load(db).trials[0]  # left for a retry from its checkpoint
    assert trial.state == TrialState.RUNNING and trial.user_attrs["checkpoint"]["epoch"] >= 1
