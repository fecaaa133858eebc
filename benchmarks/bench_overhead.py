"""Framework overhead: the share of a study's trial time not spent training and evaluating.

For each storage (SQLite, PostgreSQL) a mobilenet digits study runs ``n_trials`` unpruned trials.
Overhead = (time from the first trial's start to the last trial's end) minus the epochs' own
train + eval seconds, over that span: storage calls, sampling, model building, checkpoints,
curves. Imports and the one-time dataset build are left out. Target: under 2 % for trials of
10 s or more.

    python -m benchmarks.bench_overhead --quick
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks.common import study_config, table, write_result
from hpo.runner import run_study

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from resume_support import drop_storage, make_storage  # noqa: E402  (real databases, fresh names)


def measure(kind: str, n_trials: int, max_epochs: int, image_size: int, tmp: Path) -> dict:
    url = make_storage(kind, tmp / kind)
    try:
        overrides = {"pruner": {"type": "none"}, "model": {"image_size": image_size},
                     "budget": {"n_trials": n_trials, "max_epochs": max_epochs},
                     "artifacts": {"path": str(tmp / kind / "artifacts")}}
        cfg = study_config("mobilenet", f"overhead-{kind}", overrides, tmp)
        study = run_study(cfg, url, show_progress=False, echo=lambda _: None)
        trials = [t for t in study.trials if t.datetime_complete is not None]
        span = (max(t.datetime_complete for t in trials)
                - min(t.datetime_start for t in trials)).total_seconds()
        compute = sum(sum(t.user_attrs["curve"]["epoch_seconds"]) for t in trials)
        per_trial = span / len(trials)
        return {"storage": kind, "trials": len(trials), "span_s": span, "compute_s": compute,
                "seconds_per_trial": per_trial, "overhead_share": (span - compute) / span}
    finally:
        drop_storage(url)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n-trials", type=int, default=6)
    parser.add_argument("--max-epochs", type=int, default=3)
    args = parser.parse_args(argv)
    n_trials, max_epochs, size = (2, 1, 16) if args.quick else (args.n_trials, args.max_epochs, 32)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(kind, n_trials, max_epochs, size, Path(tmp))
                for kind in ("sqlite", "postgresql")]
    md = table(["storage", "trials", "s per trial", "train+eval s", "overhead"],
               [[r["storage"], r["trials"], round(r["seconds_per_trial"], 2),
                 round(r["compute_s"], 1), f"{100 * r['overhead_share']:.2f} %"] for r in rows])
    print(md)
    result = {"title": "Framework overhead (mobilenet digits, no pruning)", "table_md": md,
              "target": "< 2 % of trial time for trials of 10 s or more",
              "settings": {"n_trials": n_trials, "max_epochs": max_epochs, "image_size": size},
              "runs": rows}
    print("wrote", write_result("overhead", result, args.quick))


if __name__ == "__main__":
    main()
