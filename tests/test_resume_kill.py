"""kill -9 workers mid-trial; a worker elsewhere resumes the trial from its checkpoint.

Real processes, real SQLite/PostgreSQL/MySQL. Worker A runs the study; it and then the workers
that resume the trial are killed, each at a random moment of an epoch (KILLS kills of one
trial: the retry budget, ``max_retries: 3``); the last one finishes. The workers after A run in
other folders with no study file (they read the config from the storage) and share only the
storage URL and the artifact store. Prints the epochs lost per kill and the extra wall time
recovery cost (RESUME-METRICS; also appended to ``$HPO_RESUME_METRICS`` when set): measured,
printed, never asserted (wall-clock numbers depend on the machine's load). What is asserted is
counted in epochs: each retry resumes at the newest checkpoint its killed attempt had uploaded,
so a kill costs at most the epoch in progress and one whose upload it cut short.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import time

import pytest
from conftest import run_hpo
from optuna.trial import TrialState
from resume_support import (
    PASSWORD,
    finish,
    load,
    make_project,
    spawn,
    storage_url,  # noqa: F401 - fixture
    study_exists,
    wait_for,
)

MAX_EPOCHS = 10
KILLS = 3  # = workers.max_retries: the third retry must then finish


@pytest.mark.timeout(600)
def test_killed_trial_resumes_at_its_checkpoint_on_another_worker(storage_url, tmp_path):  # noqa: F811
    url = storage_url
    artifacts = tmp_path / "shared" / "artifacts"
    # one trial: a new worker then waits for the dead one's heartbeat to go stale and retries
    # it, whenever it starts (with two, a worker up before the grace period ran the other first)
    a = make_project(tmp_path / "machine_0", n_trials=1, max_epochs=MAX_EPOCHS)
    args = ["--storage", url, "--artifacts", str(artifacts), "--no-progress"]
    worker = spawn(["study", "rt", *args], a, tmp_path / "w0.log")
    kills = []  # per kill: the attempt killed, when, and its checkpoint then
    for k in range(KILLS):
        done = {kill["attempt"].number for kill in kills}  # RUNNING until declared dead
        attempt = wait_for(lambda done=done: _running_except(url, done), 300,
                           what=f"a checkpoint of attempt {k}")
        # kill at a random moment of an epoch (the shortest yet: the attempt must not end first):
        # the phase against the (periodic) checkpoints is then uniform, whatever our look's lag
        seconds = attempt.user_attrs["curve"]["epoch_seconds"]
        time.sleep(random.uniform(0, min(seconds)))
        os.kill(worker.pid, signal.SIGKILL)
        kills.append({"attempt": attempt, "at": time.time(), "pid": worker.pid})
        worker.wait()
        # the worker is gone, so the storage shows what it was running when it died
        dead = [t.number for t in load(url).get_trials(deepcopy=False)
                if t.state == TrialState.RUNNING and t.number not in done]
        assert dead == [attempt.number], (
            f"kill {k} was meant for trial {attempt.number} (seen at epoch "
            f"{max(attempt.intermediate_values)} of {MAX_EPOCHS}); running at the kill: {dead}")
        folder = tmp_path / f"machine_{k + 1}"  # no study file: config from the storage
        folder.mkdir()
        worker = spawn(["worker", "rt", *args], folder, tmp_path / f"w{k + 1}.log")
    rc = finish(worker, 300)
    last_log = (tmp_path / f"w{KILLS}.log").read_text()
    assert rc == 0, last_log[-3000:]

    study = load(url)
    trials = study.get_trials(deepcopy=False)
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    victims = [k["attempt"] for k in kills]
    # exactly n_trials finished; the killed attempts are the only FAILs; nothing left behind
    assert len(by_state[TrialState.COMPLETE]) == 1, [(t.number, t.state) for t in trials]
    assert [t.number for t in by_state[TrialState.FAIL]] == [v.number for v in victims]
    assert not by_state[TrialState.RUNNING] and not by_state[TrialState.WAITING]
    first = victims[0]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == first.number]
    assert [t.number for t in retries] == [v.number for v in victims[1:]] + [retries[-1].number]
    final = retries[-1]
    assert final.state == TrialState.COMPLETE
    assert final.system_attrs["retry_history"] == [v.number for v in victims]

    metrics = []
    for k, (kill, resumer) in enumerate(zip(kills, retries)):
        killed = study.trials[kill["attempt"].number]
        resumed = resumer.user_attrs["resumed"]
        killed_epoch = max(killed.intermediate_values)
        seen = kill["attempt"].user_attrs["checkpoint"]
        # the retry, on another worker, resumed at the newest checkpoint the killed attempt had
        # uploaded (one newer than the one we saw if an epoch ended between our look and the kill;
        # an epoch is saved before it is reported, so it may be one the kill kept from reporting)
        assert resumer.params == first.params
        assert resumed["from_trial"] == killed.number
        assert seen["epoch"] <= resumed["epoch"] <= killed_epoch + 1
        # its curve is continuous: the earlier values were re-reported unchanged
        for step in range(1, min(resumed["epoch"], killed_epoch) + 1):
            assert resumer.intermediate_values[step] == pytest.approx(
                killed.intermediate_values[step])
        # only the remaining epochs were trained: the earlier epochs' timings are the killed
        # attempt's own (a re-run would measure new ones)
        n = min(resumed["epoch"], killed_epoch)  # (an epoch saved, then killed before reported)
        assert resumer.user_attrs["curve"]["epoch_seconds"][:n] == \
            killed.user_attrs["curve"]["epoch_seconds"][:n]
        # what the kill cost, counted in epochs: the retry resumed at the newest checkpoint the
        # killed attempt had (every epoch), so at most the epoch whose upload the kill cut short
        # is trained again (besides the epoch in progress, never reported)
        assert resumed["epoch"] == killed.user_attrs["checkpoint"]["epoch"]
        assert killed_epoch <= resumed["epoch"], (killed_epoch, resumed)
        # and in seconds (printed only): work since the last checkpoint, time to train again
        epoch_s = statistics.mean(killed.user_attrs["curve"]["epoch_seconds"])
        saved_at = _saved_at(killed, resumed["epoch"], seen)
        lost = max(0.0, kill["at"] - saved_at) / epoch_s
        restart_s = resumed["at"] - kill["at"]
        metrics.append({"kill": k, "checkpoint_epoch": resumed["epoch"],
                        "epochs_lost": round(lost, 2), "epoch_s": round(epoch_s, 2),
                        "kill_to_resumed_s": round(restart_s, 1),
                        "extra_wall_s": round(restart_s + lost * epoch_s, 1)})
    # each attempt records the process that ran it; the report lists the retries
    for kill in kills:
        assert study.trials[kill["attempt"].number].user_attrs["hpo_run_by"]["pid"] == kill["pid"]
    assert final.user_attrs["hpo_run_by"]["pid"] == worker.pid
    report = run_hpo("report", "rt", "--storage", url, "--out", str(tmp_path / "reports"))
    assert report.returncode == 0, report.stderr[-2000:]
    md = (tmp_path / "reports" / "rt.md").read_text()
    assert "Retries and resumes" in md
    for kill, resumer in zip(kills, retries):
        killed = study.trials[kill["attempt"].number]
        lost = max(0, max(killed.intermediate_values) - resumer.user_attrs["resumed"]["epoch"])
        assert (f"| {resumer.number} | {resumer.state.name} | {killed.number} | "
                f"{killed.user_attrs['hpo_run_by']['host']}:{kill['pid']} | ") in md, md
        assert f"| {resumer.user_attrs['resumed']['epoch']} | {lost} |" in md, md
    assert sorted(final.intermediate_values) == list(range(1, MAX_EPOCHS + 1))
    assert len(final.user_attrs["curve"]["val_accuracy"]) == MAX_EPOCHS
    # the finished trial keeps its checkpoint (keep_best_k = 1), the killed attempts' are gone
    assert len(list(artifacts.iterdir())) == 1

    summary = {"storage": url.split(":")[0], "kills": KILLS,
               "mean_epochs_lost": round(statistics.mean(m["epochs_lost"] for m in metrics), 2),
               "mean_extra_wall_s": round(statistics.mean(m["extra_wall_s"] for m in metrics), 1),
               "per_kill": metrics}
    print("RESUME-METRICS " + json.dumps(summary))
    out = os.environ.get("HPO_RESUME_METRICS")
    if out:
        with open(out, "a") as handle:
            handle.write(json.dumps(summary) + "\n")
    for k in range(KILLS + 1):
        assert PASSWORD not in (tmp_path / f"w{k}.log").read_text()


def _running_except(url: str, numbers: set[int]):
    """A RUNNING trial with a checkpoint of its own, other than the attempts already killed."""
    if not study_exists(url):
        return None
    for t in load(url).get_trials(deepcopy=False):
        ptr = t.user_attrs.get("checkpoint")
        # (an epoch is checkpointed just before its curve is stored: wait for both)
        if t.state == TrialState.RUNNING and t.number not in numbers and ptr \
                and ptr["trial"] == t.number and ptr["epoch"] >= 1 \
                and len(t.user_attrs.get("curve", {}).get("epoch_seconds", [])) >= ptr["epoch"]:
            return t
    return None


def _saved_at(killed, epoch: int, seen: dict) -> float:
    """When the checkpoint the retry resumed from was uploaded (from the killed trial's attrs)."""
    ptr = killed.user_attrs["checkpoint"]
    return ptr["saved_at"] if ptr["epoch"] == epoch else seen["saved_at"]
