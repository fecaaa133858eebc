"""Start-up time of the commands that train nothing: ``hpo --help`` and ``hpo report``.

Each command runs as a real process (``python -m hpo.cli ...``), ``runs`` times; the figure is
the median wall time with its spread. ``hpo report`` runs on a small real study (12 trials with
curves and the stored config, as ``tests/report_studies.py`` builds them) in a scratch SQLite
file; its import phase alone (``hpo.cli``, ``hpo.report``, ``hpo.storage``, ``hpo.config``) is
timed too. Each run also says whether torch was imported: none of these commands needs it.
Target: ``hpo --help`` under 1.5 s (median) on an idle machine.

    python -m benchmarks.bench_startup --quick
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from benchmarks.common import (
    REPO,
    check,
    fmt_spread,
    median_spread,
    quiet,
    table,
    work_dir,
    write_result,
)

sys.path.insert(0, str(REPO / "tests"))
from report_studies import make_study

TARGET_HELP_S = 1.5
# Runs the CLI's main; then prints whether torch was imported (to stderr, last line).
WRAPPER = ("import sys\nfrom hpo.cli import main\ntry:\n    code = main(sys.argv[1:])\n"
           "except SystemExit as exc:\n    code = exc.code\n"
           "print('TORCH=' + str('torch' in sys.modules), file=sys.stderr)\nsys.exit(code)\n")
IMPORTS = ("import sys, hpo.cli, hpo.report, hpo.storage, hpo.config; "
           "print('TORCH=' + str('torch' in sys.modules), file=sys.stderr)")


def timed(argv: list[str], runs: int) -> dict:
    """Median (spread) wall seconds of ``argv`` over ``runs`` runs, and whether torch loaded."""
    seconds, torch_seen = [], False
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
        seconds.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        torch_seen |= "TORCH=True" in proc.stderr
    return {"seconds": median_spread(seconds), "torch_imported": torch_seen}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (median)")
    args = parser.parse_args(argv)
    quiet()
    runs = 2 if args.quick else args.runs
    scratch = work_dir("startup")
    db = scratch / "hpo.db"
    db.unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    make_study(url, "startup", n_trials=4 if args.quick else 12)
    python = sys.executable
    commands = {
        "hpo --help": [python, "-c", WRAPPER, "--help"],
        "hpo report (imports only)": [python, "-c", IMPORTS],
        "hpo report (small study)": [python, "-c", WRAPPER, "report", "startup",
                                        "--storage", url, "--out", str(scratch / "reports")],
    }
    measured = {name: timed(cmd, runs) for name, cmd in commands.items()}
    help_s = measured["hpo --help"]["seconds"]["median"]
    checks = [check("hpo --help median seconds", round(help_s, 3), f"< {TARGET_HELP_S}",
                    help_s < TARGET_HELP_S)]
    checks += [check(f"{name}: torch not imported", not m["torch_imported"], "True",
                     not m["torch_imported"]) for name, m in measured.items()]
    rows = [[name, fmt_spread(m["seconds"], "{:.2f}"), "yes" if m["torch_imported"] else "no",
             f"< {TARGET_HELP_S} s" if name == "hpo --help" else "",
             ("pass" if help_s < TARGET_HELP_S else "MISS") if name == "hpo --help"
             else "(diagnostic)"]
            for name, m in measured.items()]
    md = table(["command", "seconds (median, min-max)", "torch imported", "target", "result"],
               rows)
    print(md)
    result = {"title": "Start-up of commands that train nothing",
              "target": f"`hpo --help` < {TARGET_HELP_S} s (median) on an idle machine; "
                        "no torch import",
              "table_md": md,
              "settings": {"runs": runs, "report_trials": 4 if args.quick else 12},
              "commands": measured, "checks": checks,
              "passed": all(c["passed"] for c in checks)}
    print("wrote", write_result("startup", result, args.quick))


if __name__ == "__main__":
    main()
