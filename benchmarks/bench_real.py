"""The headroom task trained for real, not replayed (issue 13): a confirmation and a warm start.

``studies/headroom.yaml`` (noisy digits, test_efficientnet at 16 px) through the real
``run_study`` path with real training, at a CPU-sized budget (``BUDGET``: 30 trials of at most
10 epochs, median pruner), so the replayed findings are checked on the task itself:

- confirmation: TPE vs llm-tpe (rules analyst, inline), seeds 0-4: best after 10, 20 and 30
  trials (median, min-max), the trials each needs to reach TPE's median best@30 and a paired
  one-sided Wilcoxon test by seed (scipy);
- warm start across studies: a source study on a related task (the same data at 12 px, TPE,
  seed 100), then llm-tpe (rules) with ``warm_start_from`` it on the 16 px task, seeds 0-2:
  trials to reach the cold TPE study's best@30 of the same seed.

Targets (printed pass/MISS, never asserted): llm-tpe reaches TPE's median best@30 in at most
half of TPE's trials with p < 0.05; the warm start reaches the cold best@30 in at most a third
of the trials (10).

Every study lives in one SQLite file (``runs/bench/real/real.db``) and is resumed there: a
killed run, started again, keeps the finished studies and continues the one it was in (hpo's
own resume). ``--fresh`` starts over. Both cores by default (one study per process).

    python -m benchmarks.bench_real --quick     # 1 seed, 3 trials of 1 epoch each part
    python -m benchmarks.bench_real             # ~20 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from typing import Any

from benchmarks.bench_replay import best_so_far, reach, wilcoxon
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

BUDGET = {"n_trials": 30, "max_epochs": 10}
QUICK_BUDGET = {"n_trials": 3, "max_epochs": 1}
PRUNER = {"type": "median", "n_startup_trials": 5, "n_warmup_steps": 3}
SAMPLERS: dict[str, dict[str, Any]] = {
    "tpe": {"type": "tpe", "n_startup_trials": 10},
    "llm-tpe (rules)": {"type": "llm-tpe", "n_startup_trials": 10, "analyst": "rules",
                        "every_n_trials": 5, "background": False},
}
SOURCE = {"name": "real-source-12px", "seed": 100, "model": {"image_size": 12}}
P_TARGET = 0.05


def _spec(name: str, seed: int, sampler: dict[str, Any], budget: dict[str, int], url: str,
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    tmp = work_dir("real")
    overrides = {"seed": seed, "sampler": sampler, "budget": budget, "pruner": PRUNER,
                 "artifacts": {"path": str(tmp / "artifacts")}, **(extra or {})}
    return {"base": "headroom", "name": name, "url": url, "workdir": str(tmp), "threads": 1,
            "overrides": overrides}


def _slug(label: str) -> str:
    return "llmtpe" if label.startswith("llm") else label


def run(quick: bool, seeds: list[int], warm_seeds: list[int], jobs: int) -> dict[str, Any]:
    budget = QUICK_BUDGET if quick else BUDGET
    n = budget["n_trials"]
    url = f"sqlite:///{work_dir('real') / 'real.db'}"
    # phase 1: the confirmation studies and the warm start's source; phase 2: the warm starts
    first = [_spec(SOURCE["name"], SOURCE["seed"], SAMPLERS["tpe"], budget, url,
                   {"model": SOURCE["model"]})]
    first += [_spec(f"real-{_slug(label)}-s{seed}", seed, sampler, budget, url)
              for seed in seeds for label, sampler in SAMPLERS.items()]
    warm_sampler = {**SAMPLERS["llm-tpe (rules)"], "warm_start_from": [SOURCE["name"]]}
    second = [_spec(f"real-warm-s{seed}", seed, warm_sampler, budget, url) for seed in warm_seeds]
    results = {r["name"]: r for r in run_jobs(first, jobs) + run_jobs(second, jobs)}

    curves = {label: [best_so_far(results[f"real-{_slug(label)}-s{s}"]["trials"]) for s in seeds]
              for label in SAMPLERS}
    target = statistics.median(c[-1] for c in curves["tpe"])
    marks = sorted({max(1, n // 3), max(1, 2 * n // 3), n})
    summary: dict[str, Any] = {}
    for label, cs in curves.items():
        names = [f"real-{_slug(label)}-s{s}" for s in seeds]
        summary[label] = {
            **{f"best@{m}": median_spread([c[m - 1] for c in cs]) for m in marks},
            "trials_per_seed": [reach(c, target) for c in cs],
            "epochs": median_spread([sum(t["epochs"] for t in results[x]["trials"])
                                     for x in names]),
            "proposal_trials": sum(t["source"] in ("rules", "llm") for x in names
                                   for t in results[x]["trials"]),
            "seconds": round(sum(results[x]["seconds"] for x in names), 1)}
        summary[label]["trials_to_target"] = median_spread(summary[label]["trials_per_seed"])
    tpe, llm = summary["tpe"], summary["llm-tpe (rules)"]
    p_reach = wilcoxon(llm["trials_per_seed"], tpe["trials_per_seed"])
    half = tpe["trials_to_target"]["median"] / 2
    fast = llm["trials_to_target"]["median"] <= half and p_reach is not None and p_reach < P_TARGET

    warm_rows, warm_reach = [], []
    for seed in warm_seeds:
        cold = best_so_far(results[f"real-tpe-s{seed}"]["trials"])
        warm = results[f"real-warm-s{seed}"]
        warm_curve = best_so_far(warm["trials"])
        k = reach(warm_curve, cold[-1])
        warm_reach.append(k)
        warm_rows.append([seed, f"{cold[-1]:.4f}", reach(cold, cold[-1]), f"{warm_curve[-1]:.4f}",
                          k if k <= n else f"never ({n + 1})",
                          sum(t["source"] == "rules" for t in warm["trials"])])
    third = n / 3
    warm_ok = statistics.median(warm_reach) <= third
    source = results[SOURCE["name"]]

    def result(label: str) -> str:
        return "(reference)" if label == "tpe" else ("pass" if fast else "MISS")

    md = table(["sampler"] + [f"best val acc after {m} (median, min-max)" for m in marks]
               + [f"trials to TPE's median best@{n} ({target:.4f}), median (min-max)",
                  "per seed", "epochs trained (median)", "proposal trials", "seconds",
                  "result"],
               [[label] + [fmt_spread(s[f"best@{m}"], "{:.4f}") for m in marks]
                + [fmt_spread(s["trials_to_target"], "{:g}"), s["trials_per_seed"],
                   f"{s['epochs']['median']:g}", s["proposal_trials"], s["seconds"],
                   result(label)]
                for label, s in summary.items()])
    md += (f"\n\nPaired one-sided Wilcoxon (llm-tpe < TPE, trials to target, by seed): p = "
           f"{'n/a (all tied)' if p_reach is None else f'{p_reach:.3g}'}; target <= {half:g} "
           f"trials with p < {P_TARGET}: {'pass' if fast else 'MISS'}. {len(seeds)} seeds, "
           f"{n} trials of at most {budget['max_epochs']} epochs, median pruner; a seed that never "
           f"reaches the target counts as {n + 1}.")
    md += ("\n\nWarm start: llm-tpe (rules) with `warm_start_from` the 12 px study "
           f"(`{SOURCE['name']}`, TPE, best {max(best_so_far(source['trials'])):.4f}), "
           "against the cold TPE study of the same seed:\n\n")
    md += table(["seed", f"cold TPE best@{n}", "cold: trials to it", f"warm best@{n}",
                 "warm: trials to the cold best", "warm proposal trials"], warm_rows)
    md += (f"\n\nWarm start reaches the cold best@{n} in a median {statistics.median(warm_reach):g}"
           f" trials (target <= {third:g}): {'pass' if warm_ok else 'MISS'}.")
    checks = [check(f"real task, llm-tpe (rules): trials to TPE's median best@{n}",
                    llm["trials_to_target"]["median"], f"<= {half:g} with p < {P_TARGET}", fast,
                    f"p = {p_reach}"),
              check(f"real task, warm start: trials to the cold best@{n}",
                    statistics.median(warm_reach), f"<= {third:g}", warm_ok)]
    return {"title": "The headroom task trained for real: TPE vs llm-tpe (rules), and a warm start "
                     "across studies",
            "target": f"llm-tpe reaches TPE's median best@{n} in <= half its trials (p < "
                      f"{P_TARGET}); warm start reaches the cold best@{n} in <= 1/3 of the trials",
            "table_md": md,
            "settings": {"seeds": seeds, "warm_seeds": warm_seeds, "budget": budget,
                         "pruner": PRUNER, "samplers": SAMPLERS, "source": SOURCE, "jobs": jobs,
                         "storage": url, "study": "studies/headroom.yaml"},
            "summary": summary, "p_reach": p_reach, "warm_reach": warm_reach,
            "runs": {name: {"seconds": r["seconds"], "trials": r["trials"],
                            "analyses": r["analyses"]} for name, r in results.items()},
            "checks": checks, "passed": all(c["passed"] for c in checks)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--warm-seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=default_jobs())
    parser.add_argument("--fresh", action="store_true", help="drop the studies of an earlier run")
    args = parser.parse_args(argv)
    seeds, warm = (1, 1) if args.quick else (args.seeds, args.warm_seeds)
    if args.fresh or args.quick:
        shutil.rmtree(work_dir("real"), ignore_errors=True)
    result = run(args.quick, list(range(seeds)), list(range(warm)), args.jobs)
    print(result["table_md"])
    print("wrote", write_result("real", result, args.quick))


if __name__ == "__main__":
    main()
