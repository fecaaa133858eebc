"""Database outages under a running `hpo study`: real PostgreSQL and MariaDB, real processes.

The outage is real (tests/outage_support.py): PostgreSQL refuses the database and terminates its
sessions; MariaDB locks the workers' account and kills its sessions. Each test waits on the
event that matters (trial 0 reported epoch 1; its tell waits inside its transaction), cuts the
database off, and lets it back after the outage's length:

- mid-epoch, 10 s and 30 s: the worker waits at its next write, then finishes the study (exit
  0): every trial COMPLETE, none duplicated, none left RUNNING/WAITING, no epoch retrained;
- during `tell`: the tell lost with its session is repeated once the database answers;
- longer than ``workers.outage_limit_s`` (8 s against a 20 s outage): exit 75 with one line,
  the trial stays RUNNING with its checkpoint; the next run retries it from that checkpoint.

Prints OUTAGE-METRICS lines (outage length, how long the worker waited, epochs lost); also
appended to ``$HPO_OUTAGE_METRICS`` when set. ``HPO_OUTAGE_LONG_S=60`` adds a mid-epoch outage of
that length.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from outage_support import (
    MYSQL_PASSWORD,
    Outage,
    drop_mysql_user,
    hold_tell,
    mysql_user_url,
    plain_storage,
    reported_epoch,
)
from resume_support import (
    PASSWORD,
    copy_log,
    drop_storage,
    finish,
    load,
    make_project,
    make_storage,
    spawn,
)
from waiting import wait_for

WAITED = re.compile(r"storage reachable again after ([0-9.]+) s")


@pytest.fixture(params=["postgresql", "mysql"])
def server_url(request, tmp_path):
    """A fresh database; on MariaDB a user of its own, whose account the outage locks."""
    root = make_storage(request.param, tmp_path)
    url = mysql_user_url(root) if request.param == "mysql" else root
    yield url
    drop_storage(url)
    if request.param == "mysql":
        drop_mysql_user(url)


def _start(tmp_path: Path, url: str, n_trials: int, max_epochs: int, log: str = "study.log",
           limit: int | None = None):
    project = make_project(tmp_path / "project", n_trials=n_trials, max_epochs=max_epochs)
    if limit is not None:
        study = project / "studies" / "rt.yaml"
        study.write_text(study.read_text().replace("max_retries: 3}",
                                                   f"max_retries: 3, outage_limit_s: {limit}}}"))
    args = ["study", "rt", "--storage", url, "--artifacts", str(tmp_path / "artifacts"),
            "--no-progress"]
    return spawn(args, project, tmp_path / log), tmp_path / log


def _wait_epoch(watch, proc, log: Path, number: int = 0, epoch: int = 1) -> int:
    wait_for(lambda: reported_epoch(watch, number) >= epoch or proc.poll() is not None, 240,
             what=f"trial {number} to report epoch {epoch}")
    assert proc.poll() is None, copy_log(log)[-3000:]
    return reported_epoch(watch, number)


def _clean(out: str) -> None:
    assert "Traceback" not in out, out[-4000:]
    assert PASSWORD not in out and MYSQL_PASSWORD not in out


def _all_complete(url: str, n_trials: int, max_epochs: int) -> list:
    """0 lost (the budget is reached), 0 duplicated (no trial beyond it), 0 stuck, and every
    trial trained its epochs once (no resume, nothing retrained)."""
    trials = load(url).get_trials(deepcopy=False)
    assert [(t.number, t.state) for t in trials] == [(n, TrialState.COMPLETE)
                                                      for n in range(n_trials)]
    for t in trials:
        assert sorted(t.intermediate_values) == list(range(1, max_epochs + 1))
        assert t.user_attrs["epochs"] == max_epochs and "resumed" not in t.user_attrs
    return trials


def _metrics(**figures) -> None:
    line = "OUTAGE-METRICS " + json.dumps(figures, sort_keys=True)
    print(line)
    if os.environ.get("HPO_OUTAGE_METRICS"):
        with open(os.environ["HPO_OUTAGE_METRICS"], "a") as handle:
            handle.write(line + "\n")


def _waited(out: str) -> float:
    return max((float(s) for s in WAITED.findall(out)), default=0.0)


@pytest.mark.timeout(480)
@pytest.mark.parametrize("seconds", [10, 30] + ([int(os.environ["HPO_OUTAGE_LONG_S"])]
                                                 if os.environ.get("HPO_OUTAGE_LONG_S") else []))
def test_worker_rides_out_an_outage_mid_epoch(server_url, tmp_path, seconds):
    url, n_trials, max_epochs = server_url, 2, 3
    watch = plain_storage(url)
    proc, log = _start(tmp_path, url, n_trials, max_epochs)
    at = _wait_epoch(watch, proc, log)
    outage = Outage(url)
    outage.start()
    try:
        assert outage.down()
        time.sleep(seconds)  # the outage itself (what is checked afterwards is waited on)
        alive = proc.poll() is None
    finally:
        outage.end()
    rc = finish(proc, 300)
    watch.engine.dispose()
    out = copy_log(log)
    assert alive and rc == 0, out[-4000:]
    _clean(out)
    assert "unreachable" in out and WAITED.search(out), out[-4000:]  # the worker met the outage
    _all_complete(url, n_trials, max_epochs)
    _metrics(db=url.split("+")[0].split(":")[0], scenario="mid-epoch", outage_s=round(
        outage.duration, 1), survived=True, worker_waited_s=_waited(out), cut_after_epoch=at,
        epochs_lost=0, trials=n_trials, exit=rc)


@pytest.mark.timeout(480)
def test_worker_rides_out_an_outage_during_tell(server_url, tmp_path):
    url, n_trials, max_epochs = server_url, 2, 2
    watch = plain_storage(url)
    proc, log = _start(tmp_path, url, n_trials, max_epochs)
    _wait_epoch(watch, proc, log)
    outage = Outage(url)
    try:
        with hold_tell(url) as waiting:  # trial 0's tell now waits inside its transaction
            wait_for(lambda: waiting() >= 1 or proc.poll() is not None, 240,
                     what="trial 0's tell to wait on trial_values")
            assert proc.poll() is None, copy_log(log)[-3000:]
            assert reported_epoch(watch, 0) == max_epochs
            outage.start()  # cuts the tell off mid-transaction; then the lock goes
        assert outage.down()
        time.sleep(10)  # the outage itself
        alive = proc.poll() is None
    finally:
        outage.end()
    rc = finish(proc, 300)
    watch.engine.dispose()
    out = copy_log(log)
    assert alive and rc == 0, out[-4000:]
    _clean(out)
    assert "unreachable" in out and WAITED.search(out), out[-4000:]
    trials = _all_complete(url, n_trials, max_epochs)
    assert trials[0].value is not None
    _metrics(db=url.split("+")[0].split(":")[0], scenario="during-tell",
             outage_s=round(outage.duration, 1), survived=True, worker_waited_s=_waited(out),
             epochs_lost=0, trials=n_trials, exit=rc)


@pytest.mark.timeout(480)
def test_outage_past_the_limit_exits_75_and_the_next_run_resumes_the_trial(server_url, tmp_path):
    url, n_trials, max_epochs, limit, seconds = server_url, 1, 4, 8, 20
    watch = plain_storage(url)
    proc, log = _start(tmp_path, url, n_trials, max_epochs, limit=limit)
    _wait_epoch(watch, proc, log)
    outage = Outage(url)
    outage.start()
    try:
        rc = finish(proc, 120)  # the worker gives up while the database is still away
        assert outage.down()
        gave_up_after = time.monotonic() - outage.started
        time.sleep(max(0.0, seconds - gave_up_after))
    finally:
        outage.end()
    out = copy_log(log)
    assert rc == 75, out[-4000:]
    _clean(out)
    errors = [line for line in out.splitlines() if line.startswith("hpo: error:")]
    assert len(errors) == 1, out[-4000:]
    assert re.fullmatch(r"hpo: error: storage unreachable for \d+ s \(.+; workers\.outage_limit_s:"
                        r" 8\); trial 0 is left for retry from its last checkpoint", errors[0])
    assert out.rstrip().endswith(errors[0])  # the last thing said

    # resumable: trial 0 is still RUNNING (its heartbeat goes stale) and has its checkpoint
    t0 = load(url).trials[0]
    assert t0.state == TrialState.RUNNING
    checkpoint = t0.user_attrs["checkpoint"]
    assert checkpoint["trial"] == 0 and checkpoint["epoch"] >= 1
    proc2, log2 = _start(tmp_path, url, n_trials, max_epochs, log="again.log", limit=limit)
    rc2 = finish(proc2, 300)
    watch.engine.dispose()
    out2 = copy_log(log2)
    assert rc2 == 0, out2[-4000:]
    _clean(out2)
    trials = load(url).get_trials(deepcopy=False)
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.FAIL),
                                                      (1, TrialState.COMPLETE)]
    retry = trials[1]
    assert retry.system_attrs["failed_trial"] == 0
    assert retry.user_attrs["resumed"]["epoch"] == checkpoint["epoch"]
    assert sorted(retry.intermediate_values) == list(range(1, max_epochs + 1))
    # lost: the epochs trial 0 trained after its checkpoint, the one cut off included
    trained = max(t0.intermediate_values) + (max(t0.intermediate_values) < max_epochs)
    _metrics(db=url.split("+")[0].split(":")[0], scenario=f"past-limit-{limit}s",
             outage_s=round(outage.duration, 1), survived=False, exit=rc,
             gave_up_after_s=round(gave_up_after, 1), resumed_from_epoch=checkpoint["epoch"],
             epochs_lost=trained - checkpoint["epoch"], trials=len(trials))


@pytest.mark.timeout(120)
def test_calls_whose_reply_is_lost_after_the_commit_are_not_done_twice(server_url):
    """create_new_trial (ask, enqueue) and set_trial_state_values (tell) committed on the real
    server, then the reply is lost (the session's after_commit hook raises the driver's
    disconnect error): no duplicate trial, no UpdateFinishedTrialError, values kept."""
    import optuna
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    from hpo.storage import open_storage, resolve_storage_url

    storage = open_storage(resolve_storage_url(server_url), heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(study_name="rt", storage=storage, direction="maximize")
    lose = {"n": 0}

    def after_commit(_session) -> None:
        if lose["n"]:
            lose["n"] -= 1
            raise OperationalError("COMMIT", {}, ConnectionResetError("reply lost"))

    event.listen(storage.scoped_session.session_factory, "after_commit", after_commit)
    lose["n"] = 1
    first = study.ask()
    lose["n"] = 1
    study.tell(first, 1.0)
    lose["n"] = 1
    study.enqueue_trial({"x": 0.5})
    second = study.ask()
    assert second.suggest_float("x", 0, 1) == 0.5  # the queued trial, created once
    lose["n"] = 1
    study.tell(second, 2.0)
    storage.engine.dispose()
    trials = load(server_url).get_trials(deepcopy=False)
    assert [(t.number, t.state, t.value) for t in trials] == [
        (0, TrialState.COMPLETE, 1.0), (1, TrialState.COMPLETE, 2.0)]
