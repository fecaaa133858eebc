"""Pruning savings: hyperband and median against no pruning on the mobilenet digits study.

Same seeds, same trial count, TPE sampler: total epochs trained and best value reached.
Target: at least 3x fewer epochs at a best value within 0.5 points (accuracy x 100).

    python -m benchmarks.bench_pruning --quick
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import median_spread, study_config, table, write_result
from hpo.runner import run_study

PRUNERS = {
    "none": {"type": "none"},
    "median": {"type": "median", "n_startup_trials": 5, "n_warmup_steps": 2},
    "hyperband": {"type": "hyperband", "min_resource": 1, "reduction_factor": 3},
}


def run(quick: bool, seeds: list[int], n_trials: int, max_epochs: int) -> dict:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'pruning.db'}"
        for seed in seeds:
            for pruner, pruner_cfg in PRUNERS.items():
                overrides = {"seed": seed, "pruner": pruner_cfg,
                             "budget": {"n_trials": n_trials, "max_epochs": max_epochs}}
                if quick:
                    overrides["model"] = {"image_size": 16}
                    overrides["pruner"] = {**pruner_cfg, "n_startup_trials": 2}
                cfg = study_config("mobilenet", f"prune-{pruner}-s{seed}", overrides, Path(tmp))
                study = run_study(cfg, url, show_progress=False, echo=lambda _: None)
                epochs = sum(t.user_attrs.get("epochs", 0) for t in study.trials)
                runs.append({"pruner": pruner, "seed": seed, "epochs": epochs,
                             "best": study.best_value,
                             "pruned": sum(t.state.name == "PRUNED" for t in study.trials)})
                print(runs[-1], flush=True)
    rows, summary = [], {}
    for pruner in PRUNERS:
        mine = [r for r in runs if r["pruner"] == pruner]
        ratios = [next(b["epochs"] for b in runs if b["pruner"] == "none" and b["seed"] == r["seed"])
                  / r["epochs"] for r in mine]
        gaps = [100 * (next(b["best"] for b in runs if b["pruner"] == "none" and b["seed"] == r["seed"])
                       - r["best"]) for r in mine]
        summary[pruner] = {
            "epochs": median_spread([r["epochs"] for r in mine]),
            "best": median_spread([r["best"] for r in mine]),
            "epoch_saving_x": median_spread(ratios),
            "best_gap_points": median_spread(gaps),
        }
        s = summary[pruner]
        rows.append([pruner, s["epochs"]["median"], f"{s['epoch_saving_x']['median']:.2f}x "
                     f"({s['epoch_saving_x']['min']:.2f}-{s['epoch_saving_x']['max']:.2f})",
                     f"{s['best']['median']:.4f} ({s['best']['min']:.4f}-{s['best']['max']:.4f})",
                     f"{s['best_gap_points']['median']:+.2f}"])
    md = table(["pruner", "epochs (median)", "fewer epochs than none", "best val acc (spread)",
                "points below none"], rows)
    return {"title": "Pruning savings (mobilenet digits, TPE)", "table_md": md,
            "settings": {"seeds": seeds, "n_trials": n_trials, "max_epochs": max_epochs},
            "target": ">= 3x fewer epochs, best within 0.5 points", "summary": summary,
            "runs": runs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--max-epochs", type=int, default=8)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.n_trials, args.max_epochs = 1, 4, 2
    result = run(args.quick, list(range(args.seeds)), args.n_trials, args.max_epochs)
    print(result["table_md"])
    print("wrote", write_result("pruning", result, args.quick))


if __name__ == "__main__":
    main()
