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


def _stop(proc, signum: int, twice: bool = False) -> int:
    """Send ``signum`` (twice: again right after) and wait for the process to exit."""
    os.kill(proc.pid, signum)
    if twice:
        time.sleep(0.05)  # a user's second Ctrl-C; whatever the process did by then is allowed
        os.kill(proc.pid, signum)
    return finish(proc, 120)  # a bound for a hang, not a speed requirement


def _retried(url: str, number: int, history: list[int]):
    """Trial ``number`` failed and its WAITING retry (with ``history``) queued, else None."""
    trials = load(url).get_trials(deepcopy=False)
    if len(trials) <= number or trials[number].state != TrialState.FAIL:
        return None
    retries = [t for t in trials if t.state == TrialState.WAITING
               and t.system_attrs.get("retry_history") == history]
    return retries[0] if retries else None


def _states(url: str) -> str:
    return ", ".join(f"{t.number} {t.state.name} {t.system_attrs.get('retry_history')}"
                     for t in load(url).get_trials(deepcopy=False))


def _fail_stale(url: str):
    """What every worker does before each trial: fail the trials whose heartbeat stopped and
    queue their retries (the study's workers: heartbeat 1 s, grace 3 s, max 3 retries)."""
    import warnings

    import optuna

    from hpo.storage import open_storage, resolve_storage_url

    storage = open_storage(resolve_storage_url(url), heartbeat_interval=1, grace_period=3,
                           max_retries=3)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(optuna.load_study(study_name="rt", storage=storage))
    finally:
        storage.engine.dispose()


@pytest.mark.timeout(600)
def test_sigterm_and_sigint_checkpoint_and_leave_the_trial_for_retry(tmp_path):
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    project = make_project(tmp_path / "p", n_trials=1, max_epochs=EPOCHS, every=2)
    args = ["--storage", url, "--no-progress"]

    # 1. SIGTERM during the first attempt -> 143, trial FAIL + queued retry (that the first
    # signal stops the work at once: test_a_first_signal_raises_at_once_outside_critical_blocks)
    first = spawn(["study", "rt", *args], project, tmp_path / "1.log")
    wait_for(lambda: _running(url, resumed=False), 300, what="first epoch")
    code = _stop(first, signal.SIGTERM)
    log = (tmp_path / "1.log").read_text()
    assert code == 143, log[-2000:]
    # the process is gone, so this is final: FAIL and its retry, both written before the exit
    trials = load(url).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    killed, retry = trials
    assert retry.params == killed.params
    assert retry.system_attrs["failed_trial"] == killed.number
    # the interrupt uploaded the last finished epoch, even off the every-2-epochs schedule
    assert killed.user_attrs["checkpoint"]["epoch"] == max(killed.intermediate_values)

    # 2. the next worker resumes it; SIGINT -> 130, and the newer epochs are kept again
    second = spawn(["worker", "rt", *args], project, tmp_path / "2.log")
    resumed = wait_for(lambda: _running(url, resumed=True), 300, what="resumed trial")
    assert resumed.user_attrs["resumed"]["epoch"] == killed.user_attrs["checkpoint"]["epoch"]
    code = _stop(second, signal.SIGINT)
    assert code == 130, (tmp_path / "2.log").read_text()[-2000:]
    trials = load(url).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.WAITING]
    second_try = trials[1]
    assert second_try.user_attrs["checkpoint"]["epoch"] == max(second_try.intermediate_values)
    assert sorted(second_try.intermediate_values) == \
        list(range(1, max(second_try.intermediate_values) + 1))  # continuous after the resume
    assert trials[2].system_attrs["retry_history"] == [0, 1]

    # 3. Ctrl-C twice on a worker: it is gone, by 130 or by SIGINT itself (a second signal
    # during interpreter shutdown meets the default handler), without finishing the trial or a
    # traceback. That the second signal exits at once, even while the first one's clean-up is
    # still running, is test_a_second_signal_exits_at_once_even_inside_a_critical_block.
    third = spawn(["worker", "rt", *args], project, tmp_path / "3.log")
    third_try = wait_for(lambda: _running(url, resumed=True), 300, what="second resume")
    code = _stop(third, signal.SIGINT, twice=True)
    log = (tmp_path / "3.log").read_text()
    assert code in (130, -signal.SIGINT), log[-2000:]
    assert "Traceback" not in log, log[-2000:]
    trials = load(url).get_trials(deepcopy=False)
    assert trials[2].number == third_try.number
    assert trials[2].state in (TrialState.RUNNING, TrialState.FAIL), trials[2].state
    # The trial is left for retry either way, which is what is guaranteed eventually: either the
    # first Ctrl-C's clean-up failed it and queued the retry, or the second Ctrl-C cut that
    # clean-up short, the trial stayed RUNNING, and the next worker to look (after the grace
    # period) fails it and queues the retry. We look as that worker would, until it is there.
    retry = wait_for(lambda: _fail_stale(url) or _retried(url, 2, [0, 1, 2]), 120, every=1.0,
                     what=lambda: "trial 2 failed with a WAITING retry queued; trials: "
                     + _states(url) + "; log: " + log[-600:])
    assert retry.params == killed.params
    assert retry.system_attrs["failed_trial"] == 0


HELD = """
import sys, time
from hpo.signals import critical, handle_signals, received
with handle_signals():
    with critical():  # e.g. uploading the checkpoint of the first Ctrl-C
        print("in critical", flush=True)
        while received() is None:  # the first signal: handled, but not raised in here
            time.sleep(0.01)
        print("held", flush=True)
        time.sleep(3600)  # a clean-up that would outlive any test
print("clean-up finished", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_exits_at_once_even_inside_a_critical_block(tmp_path, signum):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", HELD], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout.readline().strip() == "in critical"
        os.kill(proc.pid, signum)  # held: the critical block goes on
        lines = []
        for line in proc.stdout:  # until the block says it saw the signal and went on (or EOF)
            lines.append(line)
            if line.strip() == "held":
                break
        assert lines and lines[-1].strip() == "held", "".join(lines)
        assert proc.poll() is None
        os.kill(proc.pid, signum)  # exits now, not after the hour-long clean-up
        out = "".join(lines) + proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, out
    name = signal.Signals(signum).name
    assert f"second {name}: exiting now" in out and "clean-up finished" not in out


FIRST = """
import os, sys
from hpo.signals import Interrupted, handle_signals
steps = []
try:
    with handle_signals():
        os.kill(os.getpid(), int(sys.argv[1]))  # CPython runs the handler before kill returns
        for step in range(1000):  # the training: not one more step
            steps.append(step)
except Interrupted as exc:
    print(f"interrupted after {len(steps)} steps: {exc}, exit code {exc.exit_code}")
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_first_signal_raises_at_once_outside_critical_blocks(signum):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", FIRST, str(int(signum))], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    name = signal.Signals(signum).name
    assert out.strip() == f"interrupted after 0 steps: {name} received, exit code {128 + signum}"


SIGNAL_IN_ASK = """
import os, signal, sys
import optuna
from hpo.signals import Interrupted
from hpo.storage import open_storage
from hpo.worker import run_trials

class SignalInAsk(optuna.samplers.RandomSampler):
    '''A real sampler; the SIGTERM lands inside study.ask(), where the signal is held.'''
    def before_trial(self, study, trial):
        super().before_trial(study, trial)
        os.kill(os.getpid(), signal.SIGTERM)

storage = open_storage(sys.argv[1], heartbeat_interval=1, grace_period=3, max_retries=3)
study = optuna.create_study(study_name="rt", storage=storage, sampler=SignalInAsk(seed=0))
study.enqueue_trial({"x": 0.25})  # a queued point (say, an analyst's proposal)
try:
    run_trials(study, lambda trial: trial.suggest_float("x", 0, 1), target=2, echo=print)
except Interrupted as exc:
    print("exit code", exc.exit_code)
"""


def test_a_signal_held_while_a_trial_is_asked_still_leaves_it_for_retry(tmp_path):
    """The signal lands after the trial is RUNNING but before training starts: the trial is
    failed and retried with its parameters, never left RUNNING for no one."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'ask.db'}"
    out = subprocess.run([sys.executable, "-c", SIGNAL_IN_ASK, url], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.stdout.strip().splitlines()[-1] == "exit code 143", out.stdout + out.stderr
    trials = load(url).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING], _states(url)
    assert trials[1].system_attrs.get("retry_history") == [0]
    assert trials[1].system_attrs.get("fixed_params") == {"x": 0.25}  # the queued point


SIGNAL_LOST_IN_DEL = """
import os, signal, sys
import optuna
from hpo.signals import Interrupted
from hpo.storage import open_storage
from hpo.worker import run_trials

class Connection:
    '''Stands for any object whose __del__ or weakref callback runs while the signal arrives
    (seen: SQLAlchemy's _collection_gced): Python prints the handler's Interrupted as
    "Exception ignored" and goes on.'''
    def __del__(self):
        signal.raise_signal(signal.SIGTERM)

def objective(trial):
    x = trial.suggest_float("x", 0, 1)
    if trial.number == 0:
        Connection()  # collected at once: the SIGTERM's raise is lost in its __del__
    return x

storage = open_storage(sys.argv[1], heartbeat_interval=1, grace_period=3, max_retries=3)
study = optuna.create_study(study_name="rt", storage=storage)
try:
    run_trials(study, objective, target=3, echo=print)
except Interrupted as exc:
    print("exit code", exc.exit_code)
"""


def test_a_signal_whose_raise_was_lost_still_stops_the_worker(tmp_path):
    """A SIGTERM arriving inside a __del__ (its exception ignored by Python) still ends the
    run with exit 143 before the next trial, instead of being forgotten (a worker SIGTERMed
    mid-trial went on to finish the study with exit 0)."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'lost.db'}"
    out = subprocess.run([sys.executable, "-c", SIGNAL_LOST_IN_DEL, url], capture_output=True,
                         text=True, timeout=120, check=False)
    assert "Exception ignored" in out.stderr and "SIGTERM received" in out.stderr, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "exit code 143", out.stdout + out.stderr
    assert [t.state for t in load(url).get_trials(deepcopy=False)] == [TrialState.COMPLETE]
