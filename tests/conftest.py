"""Shared fixtures: the repository root and a helper to run the real ``hpo`` CLI.

Waiting on an event (never on the clock): :func:`waiting.wait_for`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# No test reaches the network: timm/Hugging Face never look for weights or data online. Set at
# import time, so this process and every process a test starts (run_hpo, resume_support.spawn,
# `make bench`) inherit it.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs ``-n 2``), each worker process trains with its
    share of the cores: two workers with torch's default of one thread per core would
    oversubscribe them (the hpo processes a test starts share the cores on their own,
    :mod:`hpo.threads`)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // int(workers)))


@pytest.fixture
def repo() -> Path:
    return REPO


def run_hpo(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: float = 600):
    """Run ``python -m hpo.cli ARGS`` as a real process; returns CompletedProcess (text)."""
    inherited = {k: v for k, v in os.environ.items() if k != "HPO_STORAGE"}
    full_env = {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hpo.cli", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False,
    )


@pytest.fixture
def hpo_cli():
    return run_hpo


def write_study_file(folder: Path, name: str, base: dict, **sections: object) -> Path:
    """``folder/NAME.yaml``: the study ``base`` with the top-level ``sections`` given replaced."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**base, **sections}, sort_keys=False), encoding="utf-8")
    return path


def ok(proc: subprocess.CompletedProcess) -> str:
    """The output of a command that must have succeeded (its output is the failure message)."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr
