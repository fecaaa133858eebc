"""deploy/slurm/hpo-workers.sbatch run for real, with only Slurm itself left out: ``srun`` is a
shim that runs its arguments in place (``exec "$@"``), and SIGTERM is sent by hand where
``#SBATCH --signal=TERM@120`` would send it. Task 0 creates the study and trains; SIGTERM
mid-trial makes it exit 143 with the trial queued for retry; task 1 (``hpo worker``) resumes
that trial from its checkpoint and finishes the study.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from optuna.trial import TrialState
from resume_support import finish, load, make_project, running_with_checkpoint
from waiting import wait_for

SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "slurm" / "hpo-workers.sbatch"


def _array_task(task: int, project: Path, env: dict, log: Path) -> subprocess.Popen:
    """The sbatch script as array task ``task`` would run it (bash, then srun, then hpo:
    one process, each ``exec``s the next)."""
    with open(log, "w") as handle:  # the child keeps its own copy of the file descriptor
        return subprocess.Popen(["bash", str(SCRIPT)], cwd=project,
                                env={**env, "SLURM_ARRAY_TASK_ID": str(task)},
                                stdout=handle, stderr=subprocess.STDOUT)


def test_array_tasks_create_join_and_stop_on_sigterm(tmp_path):
    shim = tmp_path / "bin" / "srun"
    shim.parent.mkdir()
    shim.write_text('#!/bin/sh\nexec "$@"\n')
    shim.chmod(0o755)
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    env = {**os.environ, "PATH": f"{shim.parent}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "HPO_STUDY": "rt", "HPO_STORAGE": url, "HPO_ARTIFACTS": str(tmp_path / "artifacts"),
           "SLURM_CPUS_PER_TASK": "1", "PYTHONUNBUFFERED": "1"}
    project = make_project(tmp_path / "submit", n_trials=1, max_epochs=3)

    first = _array_task(0, project, env, tmp_path / "task0.log")
    victim = wait_for(lambda: running_with_checkpoint(url, 1), 240,
                      what=lambda: (tmp_path / "task0.log").read_text())
    first.send_signal(signal.SIGTERM)  # Slurm's --signal, 120 s before the time limit
    assert finish(first, 120) == 143, (tmp_path / "task0.log").read_text()[-3000:]
    log0 = (tmp_path / "task0.log").read_text()
    assert "torch threads: 1" in log0  # HPO_THREADS from --cpus-per-task
    trials = load(url).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING], log0[-3000:]

    worker_dir = tmp_path / "node1"  # another node: no study file, config from the storage
    worker_dir.mkdir()
    second = _array_task(1, worker_dir, env, tmp_path / "task1.log")
    assert finish(second, 240) == 0, (tmp_path / "task1.log").read_text()[-3000:]
    assert "worker joins study 'rt'" in (tmp_path / "task1.log").read_text()
    final = load(url).get_trials(deepcopy=False)[-1]
    assert final.state == TrialState.COMPLETE
    assert final.user_attrs["resumed"]["from_trial"] == victim.number
    assert final.user_attrs["resumed"]["epoch"] >= 1
