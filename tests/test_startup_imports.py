"""Commands that train nothing start without importing torch or timm (real processes).

Each command runs the real ``hpo.cli.main`` in a fresh interpreter; a wrapper prints which heavy
modules were imported by the time it returned, whatever the exit code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from report_studies import DEFAULTS, SPACE, make_study

HEAVY = ("torch", "timm", "torchvision")
WRAPPER = f"""
import sys
from hpo.cli import main
code = 1
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # argparse: --help, usage errors
    code = exc.code
finally:
    heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
    print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


def run_wrapped(*args: str, cwd: Path = REPO) -> tuple[int, str, list[str]]:
    """(exit code, stdout + stderr, heavy modules imported) of ``hpo ARGS``."""
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False)
    marker = [line for line in proc.stderr.splitlines() if line.startswith("HEAVY=")]
    assert marker, proc.stderr
    heavy = [m for m in marker[-1].removeprefix("HEAVY=").split(",") if m]
    return proc.returncode, proc.stdout + proc.stderr, heavy


@pytest.fixture(scope="module")
def small_study(tmp_path_factory) -> tuple[Path, str]:
    """A real study (12 trials with curves and the stored config) in a tmp SQLite file, and a
    study file for it (``hpo analyze`` reads one)."""
    folder = tmp_path_factory.mktemp("startup")
    url = f"sqlite:///{folder / 'hpo.db'}"
    make_study(url, "st", n_trials=12)
    make_study(url, "st2", n_trials=6, seed=1)
    (folder / "space.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False), encoding="utf-8")
    (folder / "st.yaml").write_text(yaml.safe_dump({
        "name": "st", "search_space": "space.yaml", "train": DEFAULTS,
        "budget": {"n_trials": 30, "max_epochs": 8},
        "sampler": {"type": "llm-tpe", "analyst": "rules"}}), encoding="utf-8")
    return folder, url


def test_help_imports_no_torch() -> None:
    code, out, heavy = run_wrapped("--help")
    assert code == 0, out
    assert heavy == [], f"`hpo --help` imported {heavy}"


def test_report_imports_no_torch(small_study) -> None:
    """Also draws the planned learning-rate curve (hpo.training.schedule.lr_factor)."""
    folder, url = small_study
    code, out, heavy = run_wrapped("report", "st", "--storage", url, "--out", str(folder / "rep"))
    assert code == 0, out
    assert (folder / "rep" / "st.html").is_file()
    assert heavy == [], f"`hpo report` imported {heavy}"


def test_compare_imports_no_torch(small_study) -> None:
    folder, url = small_study
    code, out, heavy = run_wrapped("compare", "st", "st2", "--storage", url,
                                   "--out", str(folder / "cmp"))
    assert code == 0, out
    assert heavy == [], f"`hpo compare` imported {heavy}"


def test_analyze_rules_dry_run_imports_no_torch(small_study) -> None:
    folder, url = small_study
    code, out, heavy = run_wrapped("analyze", str(folder / "st.yaml"), "--storage", url,
                                   "--analyst", "rules", "--dry-run")
    assert code == 0, out
    assert heavy == [], f"`hpo analyze --analyst rules --dry-run` imported {heavy}"


def test_migrate_imports_no_torch(small_study) -> None:
    folder, url = small_study
    code, out, heavy = run_wrapped("migrate", "st2", "--from", url,
                                   "--to", f"sqlite:///{folder / 'copy.db'}")
    assert code == 0, out
    assert "copied study 'st2'" in out
    assert heavy == [], f"`hpo migrate` imported {heavy}"


def test_dashboard_module_imports_no_torch() -> None:
    """``hpo dashboard`` serves until stopped; its modules are checked instead."""
    proc = subprocess.run(
        [sys.executable, "-c", ("import sys, hpo.cli, hpo.dashboard, hpo.storage; "
                                f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_status_imports_no_torch(small_study) -> None:
    _folder, url = small_study
    code, out, heavy = run_wrapped("status", "st", "--storage", url)
    assert code == 0, out
    assert "finished 12 of" in out and "best: trial" in out, out
    assert heavy == [], f"`hpo status` imported {heavy}"
