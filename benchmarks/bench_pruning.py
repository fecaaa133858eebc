"""Pruning savings: hyperband and median against no pruning, same seeds and trial count.

The mobilenet digits study (its search space, TPE sampler, objective) with a cheap but real
model so that the full run fits on a 2-core CPU: timm's ``test_efficientnet`` (a 0.1 M-parameter
EfficientNet) at 16 px, about 0.5 s per epoch. For every seed each pruner runs the same number
of trials with the same sampler seed; the figures per pruner are, over seeds, the median
(min-max) of the total epochs trained, of the epoch saving against ``none`` on the same seed
(none's epochs / this pruner's) and of the best value's gap to ``none`` in points (accuracy x
100; positive = below none). Target: at least 3x fewer epochs at a best value within 0.5 points.

    python -m benchmarks.bench_pruning --quick
"""

from __future__ import annotations

import argparse
import shutil

from benchmarks.common import (
    check,
    default_jobs,
    fmt_spread,
    median_spread,
    run_jobs,
    table,
    work_dir,
    write_result,
)

PRUNERS = {
    "none": {"type": "none"},
    "median": {"type": "median", "n_startup_trials": 5, "n_warmup_steps": 2},
    "hyperband": {"type": "hyperband", "min_resource": 1, "reduction_factor": 3},
}
MODEL = {"name": "test_efficientnet", "image_size": 16}
SAVING_TARGET, GAP_TARGET = 3.0, 0.5


def run(quick: bool, seeds: list[int], n_trials: int, max_epochs: int, jobs: int) -> dict:
    tmp = work_dir("pruning")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    specs = []
    for pruner, pruner_cfg in PRUNERS.items():  # the longest (none) first: better packing
        for seed in seeds:
            cfg = dict(pruner_cfg)
            if quick and pruner == "median":
                cfg.update(n_startup_trials=1, n_warmup_steps=0)
            specs.append({"base": "mobilenet", "name": f"prune-{pruner}-s{seed}",
                          "url": f"sqlite:///{tmp / f'{pruner}-s{seed}.db'}", "workdir": str(tmp),
                          "threads": 1, "pruner": pruner, "seed": seed,
                          "overrides": {"seed": seed, "pruner": cfg, "model": MODEL,
                                        "budget": {"n_trials": n_trials, "max_epochs": max_epochs},
                                        "artifacts": {"path": str(tmp / "artifacts")}}})
    results = run_jobs(specs, jobs)
    shutil.rmtree(tmp, ignore_errors=True)
    runs = []
    for spec, res in zip(specs, results, strict=True):
        values = [t["value"] for t in res["trials"] if t["state"] == "COMPLETE"]
        runs.append({"pruner": spec["pruner"], "seed": spec["seed"],
                     "epochs": sum(t["epochs"] for t in res["trials"]),
                     "best": max(values) if values else None,
                     "pruned": sum(t["state"] == "PRUNED" for t in res["trials"]),
                     "trials": len(res["trials"]), "seconds": res["seconds"]})

    def base(seed: int) -> dict:
        return next(b for b in runs if b["pruner"] == "none" and b["seed"] == seed)

    summary, rows, checks = {}, [], []
    for pruner in PRUNERS:
        mine = [r for r in runs if r["pruner"] == pruner]
        s = {"epochs": median_spread([r["epochs"] for r in mine]),
             "best": median_spread([r["best"] for r in mine if r["best"] is not None]),
             "pruned": median_spread([r["pruned"] for r in mine]),
             "epoch_saving_x": median_spread([base(r["seed"])["epochs"] / r["epochs"]
                                              for r in mine]),
             "best_gap_points": median_spread([100 * (base(r["seed"])["best"] - r["best"])
                                               for r in mine if r["best"] is not None])}
        summary[pruner] = s
        if pruner == "none":
            result = "(reference)"
        else:
            saving_ok = s["epoch_saving_x"]["median"] >= SAVING_TARGET
            gap_ok = s["best_gap_points"]["median"] <= GAP_TARGET
            s["passed"] = saving_ok and gap_ok
            result = "pass" if s["passed"] else "MISS (" + ", ".join(
                w for w, ok in (("epochs", saving_ok), ("best", gap_ok)) if not ok) + ")"
            checks.append(check(f"{pruner}: epoch saving", round(s["epoch_saving_x"]["median"], 3),
                                f">= {SAVING_TARGET}x", saving_ok))
            checks.append(check(f"{pruner}: best gap (points)",
                                round(s["best_gap_points"]["median"], 3), f"<= {GAP_TARGET}",
                                gap_ok))
        rows.append([pruner, fmt_spread(s["epochs"], "{:.0f}"),
                     fmt_spread(s["epoch_saving_x"], "{:.2f}x"),
                     fmt_spread(s["best"], "{:.4f}"), fmt_spread(s["best_gap_points"], "{:+.2f}"),
                     fmt_spread(s["pruned"], "{:.0f}"),
                     "" if pruner == "none" else f">= {SAVING_TARGET:g}x, <= {GAP_TARGET} points",
                     result])
    md = table(["pruner", "epochs trained", "fewer epochs than none", "best val accuracy",
                "points below none", "pruned trials", "target", "result"], rows)
    md += (f"\n\nMedian (min-max) over {len(seeds)} seeds, {n_trials} trials of at most "
           f"{max_epochs} epochs each.")
    return {"title": "Pruning savings (mobilenet digits study, test_efficientnet 16 px, TPE)",
            "target": f">= {SAVING_TARGET:g}x fewer epochs than no pruning at a best value within "
                      f"{GAP_TARGET} points", "table_md": md,
            "settings": {"seeds": seeds, "n_trials": n_trials, "max_epochs": max_epochs,
                         "model": MODEL, "dataset": "digits", "sampler": "tpe",
                         "pruners": PRUNERS, "jobs": jobs, "threads_per_job": 1},
            "summary": summary, "runs": runs, "checks": checks,
            "passed": all(c["passed"] for c in checks)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--max-epochs", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="studies in parallel")
    args = parser.parse_args(argv)
    if args.quick:  # in this process: spawning workers costs more than the studies
        args.seeds, args.n_trials, args.max_epochs, args.jobs = 1, 3, 2, 1
    result = run(args.quick, list(range(args.seeds)), args.n_trials, args.max_epochs, args.jobs)
    print(result["table_md"])
    print("wrote", write_result("pruning", result, args.quick))


if __name__ == "__main__":
    main()
