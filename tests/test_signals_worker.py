"""SIGTERM / SIGINT on a real worker: checkpoint, leave the trial for retry, exit 143 / 130 fast.

One study (checkpoints every 2 epochs, so the interrupt itself must upload the last finished
epoch), three workers in turn: SIGTERM the first, SIGINT the second (which resumed the trial),
Ctrl-C twice the third (exits at once; the trial is left for retry).
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from optuna.trial import TrialState
from resume_support import finish, load, make_project, spawn, wait_for

EPOCHS = 12


def _running(url: str, resumed: bool):
    try:
        trials = load(url).get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - study not created yet
        return None
    for t in trials:
        if t.state == TrialState.RUNNING and t.intermediate_values \
                and ("resumed" in t.user_attrs) == resumed:
            return t
    return None


def _stop(proc, signum: int, twice: bool = False) -> tuple[int, float]:
    start = time.monotonic()
    os.kill(proc.pid, signum)
    if twice:
        time.sleep(0.05)
        os.kill(proc.pid, signum)
    code = finish(proc, 30)
    return code, time.monotonic() - start


@pytest.mark.timeout(200)
def test_sigterm_and_sigint_checkpoint_and_leave_the_trial_for_retry(tmp_path):
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    project = make_project(tmp_path / "p", n_trials=1, max_epochs=EPOCHS, every=2)
    args = ["--storage", url, "--no-progress"]

    # 1. SIGTERM during the first attempt -> 143, within seconds, trial FAIL + queued retry
    first = spawn(["study", "rt", *args], project, tmp_path / "1.log")
    wait_for(lambda: _running(url, resumed=False), 120, what="first epoch")
    code, took = _stop(first, signal.SIGTERM)
    log = (tmp_path / "1.log").read_text()
    assert code == 143, log[-2000:]
    assert took < 10, took
    trials = load(url).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    killed, retry = trials
    assert retry.params == killed.params
    assert retry.system_attrs["failed_trial"] == killed.number
    # the interrupt uploaded the last finished epoch, even off the every-2-epochs schedule
    assert killed.user_attrs["checkpoint"]["epoch"] == max(killed.intermediate_values)

    # 2. the next worker resumes it; SIGINT -> 130, and the newer epochs are kept again
    second = spawn(["worker", "rt", *args], project, tmp_path / "2.log")
    resumed = wait_for(lambda: _running(url, resumed=True), 120, what="resumed trial")
    assert resumed.user_attrs["resumed"]["epoch"] == killed.user_attrs["checkpoint"]["epoch"]
    code, took = _stop(second, signal.SIGINT)
    assert code == 130, (tmp_path / "2.log").read_text()[-2000:]
    assert took < 10, took
    trials = load(url).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.WAITING]
    second_try = trials[1]
    assert second_try.user_attrs["checkpoint"]["epoch"] == max(second_try.intermediate_values)
    assert sorted(second_try.intermediate_values) == \
        list(range(1, max(second_try.intermediate_values) + 1))  # continuous after the resume
    assert trials[2].system_attrs["retry_history"] == [0, 1]

    # 3. Ctrl-C twice on a worker: it is gone within seconds, by 130 or by SIGINT itself (a
    # second signal during interpreter shutdown meets the default handler), and the trial is
    # left for retry either way
    third = spawn(["worker", "rt", *args], project, tmp_path / "3.log")
    wait_for(lambda: _running(url, resumed=True), 120, what="second resume")
    code, took = _stop(third, signal.SIGINT, twice=True)
    log = (tmp_path / "3.log").read_text()
    assert code in (130, -signal.SIGINT), log[-2000:]
    assert "Traceback" not in log, log[-2000:]
    assert took < 5, took
    # RUNNING (the heartbeat will fail and retry it) or, when the first Ctrl-C's fast clean-up
    # already finished, FAIL with a queued retry
    trials = load(url).get_trials(deepcopy=False)
    assert trials[2].state in (TrialState.RUNNING, TrialState.FAIL)
    if trials[2].state == TrialState.FAIL:
        assert trials[-1].state == TrialState.WAITING


HELD = """
import sys, time
from hpo.signals import critical, handle_signals
with handle_signals():
    with critical():  # e.g. uploading the checkpoint of the first Ctrl-C
        print("in critical", flush=True)
        time.sleep(30)
print("clean-up finished", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_exits_at_once_even_inside_a_critical_block(tmp_path, signum):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", HELD], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout.readline().strip() == "in critical"
    os.kill(proc.pid, signum)  # held: the critical block must finish first
    time.sleep(0.5)
    assert proc.poll() is None
    start = time.monotonic()
    os.kill(proc.pid, signum)
    out = proc.communicate(timeout=10)[0]
    assert proc.returncode == 128 + signum
    assert time.monotonic() - start < 2
    name = signal.Signals(signum).name
    assert f"second {name}: exiting now" in out and "clean-up finished" not in out
