"""torch's CPU threads per training process: ``--threads``, ``$HPO_THREADS``, ``workers.threads``,
else the cores shared by the hpo processes training on this machine, said on the first line.

Each test runs the real ``hpo study`` with its own temporary folder (``TMPDIR``), so the hpo
processes it registers are only the ones it starts, whatever else runs on the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from hpo.threads import available_cores

CORES = available_cores()
STUDY = {"model": {"name": "mobilenetv3_small_050", "image_size": 16},
         "search_space": "smoke", "train": {"batch_size": 128},
         "budget": {"n_trials": 2, "max_epochs": 1}, "pruner": {"type": "none"}}


def _study(tmp_path: Path, **extra: object) -> Path:
    path = tmp_path / "threads.yaml"
    path.write_text(yaml.safe_dump({**STUDY, **extra}))
    return path


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return {"TMPDIR": str(tmp_path / "tmp"), "HPO_CACHE_DIR": str(tmp_path / "cache"), **extra}


def _registry(tmp_path: Path) -> Path:
    registry = tmp_path / "tmp" / f"hpo-{os.getuid()}" / "training"
    registry.mkdir(parents=True, exist_ok=True)
    return registry


def test_threads_flag_env_and_study_file_are_said_on_the_first_line(tmp_path: Path,
                                                                   hpo_cli) -> None:
    db = f"sqlite:///{tmp_path / 'hpo.db'}"
    flag = hpo_cli("study", str(_study(tmp_path)), "--storage", db, "--no-progress",
                   "--n-trials", "1", "--threads", "1", env=_env(tmp_path))
    assert flag.returncode == 0, flag.stderr[-2000:]
    assert "torch threads: 1 (set)" in flag.stdout.splitlines()[0]
    env = hpo_cli("study", str(_study(tmp_path)), "--storage", db, "--no-progress",
                  env=_env(tmp_path, HPO_THREADS="1"))
    assert env.returncode == 0, env.stderr[-2000:]
    assert "torch threads: 1 (set)" in env.stdout.splitlines()[0]
    path = _study(tmp_path, workers={"threads": 1})
    stored = hpo_cli("study", str(path), "--storage", db, "--no-progress", env=_env(tmp_path))
    assert stored.returncode == 0, stored.stderr[-2000:]  # a machine key: not a config change
    assert "torch threads: 1 (set)" in stored.stdout.splitlines()[0]


def test_bad_thread_settings_exit_2_and_write_nothing(tmp_path: Path, hpo_cli) -> None:
    db = tmp_path / "never.db"
    flag = hpo_cli("study", str(_study(tmp_path)), "--storage", f"sqlite:///{db}",
                   "--threads", "0", env=_env(tmp_path))
    assert flag.returncode == 2 and "--threads" in flag.stderr and "integer >= 1" in flag.stderr
    env = hpo_cli("study", str(_study(tmp_path)), "--storage", f"sqlite:///{db}",
                  env=_env(tmp_path, HPO_THREADS="many"))
    assert env.returncode == 2 and "HPO_THREADS = 'many'" in env.stderr, env.stderr
    file = hpo_cli("study", str(_study(tmp_path, workers={"threads": 0})), "--storage",
                   f"sqlite:///{db}", env=_env(tmp_path))
    assert file.returncode == 2 and "workers.threads" in file.stderr, file.stderr
    assert not db.exists()


def test_auto_takes_this_process_share_and_all_cores_again_when_alone(tmp_path: Path) -> None:
    # another hpo process training on this machine (a stand-in that we stop between trials)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (_registry(tmp_path) / str(other.pid)).write_text(str(other.pid))
        env = {**os.environ, **_env(tmp_path), "PYTHONUNBUFFERED": "1"}
        env.pop("HPO_THREADS", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpo.cli", "study", str(_study(tmp_path)), "--storage",
             f"sqlite:///{tmp_path / 'hpo.db'}", "--no-progress", "--n-trials", "3"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        lines = [proc.stdout.readline()]
        shared = max(1, CORES // 2)
        assert (f"torch threads: {shared} (auto: {CORES} cores, 2 hpo processes training "
                "on this machine)") in lines[0], lines
        while not lines[-1].startswith("trial    0"):  # the first trial finished
            lines.append(proc.stdout.readline())
            assert lines[-1], lines
        other.kill()  # trial 1 may have started already: trial 2 starts after this for sure
        other.wait()
        rest = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, rest
    finally:
        other.kill()
    if CORES > 1:
        assert (f"torch threads: {CORES} (auto: {CORES} cores, 1 hpo process training on this "
                "machine)") in rest, rest
    assert not (_registry(tmp_path) / str(proc.pid)).exists()  # unregistered when it ends
