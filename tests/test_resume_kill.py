"""kill -9 a worker mid-trial; a worker elsewhere resumes the trial from its checkpoint.

Real processes, real SQLite/PostgreSQL/MySQL. Worker B runs in another folder with no study
file (it reads the config from the storage) and shares only the storage URL and the artifact
store. Prints the epochs lost per kill and the extra wall time recovery cost (RESUME-METRICS).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import time

import pytest
from optuna.trial import TrialState

from resume_support import (
    PASSWORD,
    finish,
    load,
    make_project,
    running_with_checkpoint,
    spawn,
    storage_url,  # noqa: F401 - fixture
    wait_for,
)

MAX_EPOCHS = 4


@pytest.mark.timeout(240)
def test_killed_trial_resumes_at_its_checkpoint_on_another_worker(storage_url, tmp_path):  # noqa: F811
    url = storage_url
    artifacts = tmp_path / "shared" / "artifacts"
    a = make_project(tmp_path / "machine_a", n_trials=2, max_epochs=MAX_EPOCHS)
    b = tmp_path / "machine_b"
    b.mkdir()

    worker_a = spawn(["study", "rt", "--storage", url, "--artifacts", str(artifacts),
                      "--no-progress"], a, tmp_path / "a.log")
    victim = wait_for(lambda: running_with_checkpoint(url, 1), 150, what="a checkpoint")
    os.kill(worker_a.pid, signal.SIGKILL)
    killed_at = time.time()
    worker_a.wait()
    ckpt = victim.user_attrs["checkpoint"]

    worker_b = spawn(["worker", "rt", "--storage", url, "--artifacts", str(artifacts),
                      "--no-progress"], b, tmp_path / "b.log")
    rc = finish(worker_b, 180)
    log_b = (tmp_path / "b.log").read_text()
    assert rc == 0, log_b[-3000:]

    trials = load(url).get_trials(deepcopy=False)
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    # exactly n_trials finished; the killed attempt is the only FAIL; nothing left behind
    assert len(by_state[TrialState.COMPLETE]) == 2, [(t.number, t.state) for t in trials]
    assert [t.number for t in by_state[TrialState.FAIL]] == [victim.number]
    assert not by_state[TrialState.RUNNING] and not by_state[TrialState.WAITING]

    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == victim.number)
    assert retry.state == TrialState.COMPLETE
    assert retry.params == victim.params
    resumed = retry.user_attrs["resumed"]
    killed_epoch = max(load(url).trials[victim.number].intermediate_values)
    # resumed at the newest checkpoint the killed worker had uploaded (maybe one newer than
    # the one we saw, if an epoch ended between our look and the kill)
    assert resumed["from_trial"] == victim.number
    assert ckpt["epoch"] <= resumed["epoch"] <= killed_epoch
    # the curve is continuous: the earlier values were re-reported unchanged, then the rest
    assert sorted(retry.intermediate_values) == list(range(1, MAX_EPOCHS + 1))
    killed_values = load(url).trials[victim.number].intermediate_values
    for step in range(1, resumed["epoch"] + 1):
        assert retry.intermediate_values[step] == pytest.approx(killed_values[step])
    assert len(retry.user_attrs["curve"]["val_accuracy"]) == MAX_EPOCHS
    # only the remaining epochs were trained on worker B: the earlier epochs' timings are the
    # killed worker's own (a re-run would measure new ones)
    killed_curve = load(url).trials[victim.number].user_attrs["curve"]
    n = resumed["epoch"]
    assert retry.user_attrs["curve"]["epoch_seconds"][:n] == killed_curve["epoch_seconds"][:n]
    # checkpoints of finished trials are pruned to keep_best_k = 1 (+ nothing for the FAIL)
    assert len(list(artifacts.iterdir())) == 1

    # what the kill cost: work since the last checkpoint, and time until training went on
    epoch_s = statistics.mean(retry.user_attrs["curve"]["epoch_seconds"])
    saved_at = resumed_ckpt_saved_at(url, victim.number, resumed["epoch"], ckpt)
    lost_epochs = max(0.0, killed_at - saved_at) / epoch_s
    restart_s = resumed["at"] - killed_at
    metrics = {"storage": url.split(":")[0], "checkpoint_epoch": resumed["epoch"],
               "epochs_lost": round(lost_epochs, 2), "epoch_s": round(epoch_s, 2),
               "kill_to_resumed_s": round(restart_s, 1),
               "extra_wall_s": round(restart_s + lost_epochs * epoch_s, 1)}
    print("RESUME-METRICS " + json.dumps(metrics))
    out = os.environ.get("HPO_RESUME_METRICS")
    if out:
        with open(out, "a") as handle:
            handle.write(json.dumps(metrics) + "\n")
    assert lost_epochs < 1.5  # a kill costs at most the epoch in progress (plus the look's lag)
    for log in (tmp_path / "a.log", tmp_path / "b.log"):
        assert PASSWORD not in log.read_text()


def resumed_ckpt_saved_at(url: str, number: int, epoch: int, seen: dict) -> float:
    """When the checkpoint the retry resumed from was uploaded (from the killed trial's attrs)."""
    ptr = load(url).trials[number].user_attrs["checkpoint"]
    return ptr["saved_at"] if ptr["epoch"] == epoch else seen["saved_at"]
