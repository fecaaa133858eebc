"""Samplers and pruners on the replayed learning-curve table (issue 13): many seeds, cheap.

Every study is a real ``run_study`` (SQLite storage, the real Optuna samplers and pruners,
llm-tpe with its rules analyst) whose trials are answered from the committed table
(:mod:`benchmarks.replay`, ``studies/headroom.yaml``): no training, so 20 seeds x 100 trials per
sampler take minutes. Figures:

- samplers (random, TPE, llm-tpe rules; no pruning): best-so-far against trials and against
  cumulative epochs (median and IQR over seeds), the trials each needs to reach TPE's median
  best@100 (a seed that never does counts as ``n_trials + 1``), and a paired Wilcoxon
  signed-rank test (scipy, by seed) of llm-tpe's against TPE's trials-to-target and best@100;
- pruners (none, median, hyperband, successive halving; TPE, same seeds): epochs trained, the
  saving against none on the same seed and the best value lost (points = accuracy x 100).

Targets (printed pass/MISS, never asserted): llm-tpe (rules) reaches TPE's median best@100 in at
most half the trials TPE itself needs for it, with p < 0.05; some pruner saves >= 3x epochs at
<= 0.5 points lost.

    python -m benchmarks.bench_replay --quick        # the tiny table, seconds
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import (
    check,
    default_jobs,
    fmt_spread,
    median_spread,
    quiet,
    set_threads,
    study_config,
    table,
    work_dir,
    write_result,
)

SAMPLERS: dict[str, dict[str, Any]] = {
    "random": {"type": "random"},
    "tpe": {"type": "tpe", "n_startup_trials": 10},
    "llm-tpe (rules)": {"type": "llm-tpe", "n_startup_trials": 10, "analyst": "rules",
                        "every_n_trials": 5},
}
PRUNERS: dict[str, dict[str, Any]] = {
    "none": {"type": "none"},
    "median": {"type": "median", "n_startup_trials": 5, "n_warmup_steps": 5},
    "hyperband": {"type": "hyperband", "min_resource": 1, "reduction_factor": 3},
    "successive halving": {"type": "successive_halving", "min_resource": 1,
                           "reduction_factor": 3},
}
SAVING_TARGET, GAP_TARGET, P_TARGET = 3.0, 0.5, 0.05
_TABLES: dict[str, Any] = {}


def run_replay_job(spec: dict[str, Any]) -> dict[str, Any]:
    """One replayed study (in a worker process); its trials as plain data."""
    set_threads(1)
    quiet()
    from benchmarks.replay import Table, replay_study

    if spec["table"] not in _TABLES:
        _TABLES[spec["table"]] = Table.load(spec["table"])
    cfg = study_config("headroom", spec["name"], spec["overrides"], Path(spec["workdir"]))
    study = replay_study(cfg, spec["url"], table=_TABLES[spec["table"]], show_progress=False,
                         echo=lambda _: None)
    trials = [{"number": t.number, "state": t.state.name, "value": t.value,
               "epochs": t.user_attrs.get("epochs", 0),
               "seconds": t.user_attrs.get("duration_s", 0.0),
               "source": t.user_attrs.get("hpo_source", "tpe")}
              for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
              if t.state.is_finished()]
    return {"name": spec["name"], "trials": trials}


def run_jobs(specs: list[dict[str, Any]], jobs: int) -> list[dict[str, Any]]:
    if jobs <= 1:
        return [run_replay_job(s) for s in specs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(run_replay_job, specs))


def best_so_far(trials: list[dict[str, Any]]) -> list[float]:
    """Best complete value after each finished trial (0 before the first)."""
    out, best = [], 0.0
    for t in trials:
        if t["state"] == "COMPLETE" and t["value"] is not None:
            best = max(best, t["value"])
        out.append(best)
    return out


def by_epochs(trials: list[dict[str, Any]], marks: list[int]) -> list[float]:
    """Best complete value once the cumulative epochs reach each mark."""
    out, best, spent, i = [], 0.0, 0, 0
    for mark in marks:
        while i < len(trials) and spent + trials[i]["epochs"] <= mark:
            t = trials[i]
            spent += t["epochs"]
            if t["state"] == "COMPLETE" and t["value"] is not None:
                best = max(best, t["value"])
            i += 1
        out.append(best)
    return out


def reach(curve: list[float], target: float) -> int:
    """Trials until the best-so-far reaches ``target`` (``len + 1`` when it never does)."""
    return next((i + 1 for i, v in enumerate(curve) if v >= target - 1e-12), len(curve) + 1)


def wilcoxon(a: list[float], b: list[float]) -> float | None:
    """One-sided paired signed-rank p-value that ``a`` is smaller than ``b`` (None: all ties)."""
    from scipy.stats import wilcoxon as test

    if all(x == y for x, y in zip(a, b, strict=True)):
        return None
    return float(test(a, b, alternative="less").pvalue)


def run(quick: bool, seeds: list[int], n_trials: int, jobs: int, table_path: Path) -> dict:
    tmp = work_dir("replay")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    def spec(kind: str, label: str, seed: int, sampler: dict, pruner: dict) -> dict:
        name = f"{kind}-{label.replace(' ', '_').replace('(', '').replace(')', '')}-s{seed}"
        return {"name": name, "kind": kind, "label": label, "seed": seed,
                "table": str(table_path), "url": f"sqlite:///{tmp / name}.db",
                "workdir": str(tmp),
                "overrides": {"seed": seed, "sampler": sampler, "pruner": pruner,
                              "budget": {"n_trials": n_trials, "max_epochs": 30},
                              "artifacts": {"path": str(tmp / "artifacts")}}}

    specs = [spec("sampler", s, seed, cfg, PRUNERS["none"])
             for s, cfg in SAMPLERS.items() for seed in seeds]
    specs += [spec("pruner", p, seed, SAMPLERS["tpe"], cfg)
              for p, cfg in PRUNERS.items() if p != "none" for seed in seeds]
    results = run_jobs(specs, jobs)
    shutil.rmtree(tmp, ignore_errors=True)
    runs = {(s["kind"], s["label"], s["seed"]): r["trials"]
            for s, r in zip(specs, results, strict=True)}
    for seed in seeds:  # TPE without pruning is the pruners' reference
        runs[("pruner", "none", seed)] = runs[("sampler", "tpe", seed)]

    # the task's headroom, from the table itself
    import gzip
    import json

    from benchmarks.bench_table import headroom

    with gzip.open(table_path, "rt") as fh:
        task = headroom(json.load(fh))
    md_task = (f"Task (table `{table_path.name}`, {task['runs']} runs of {task['configs']} "
               f"configurations): median configuration {task['median_config']:.4f}, best "
               f"{task['best_config']:.4f} ({task['gap_points']:.1f} points apart, target >= 10); "
               f"the best's seed-mean curve peaks at epoch {task['best_mean_curve_epoch']} (target "
               f">= 15; per seed {task['best_epochs']}); the best's "
               f"seed-to-seed spread {task['best_seed_spread_points']:.2f} points (target < 1), "
               f"median over configurations {task['median_abs_seed_diff_points']:.2f}.")

    # samplers
    curves = {s: [best_so_far(runs[("sampler", s, seed)]) for seed in seeds] for s in SAMPLERS}
    target = statistics.median(c[-1] for c in curves["tpe"])
    max_epochs = max(sum(t["epochs"] for t in runs[("sampler", s, seed)])
                     for s in SAMPLERS for seed in seeds)
    marks = [round(max_epochs * k / 10) for k in range(1, 11)]
    summary: dict[str, Any] = {}
    rows = []
    for s in SAMPLERS:
        reached = [reach(c, target) for c in curves[s]]
        at = {n: median_spread([c[min(n, len(c)) - 1] for c in curves[s]])
              for n in sorted({10, 25, 50, n_trials}) if n <= n_trials}
        ep = [by_epochs(runs[("sampler", s, seed)], marks) for seed in seeds]
        summary[s] = {"trials_to_target": median_spread(reached), "trials_per_seed": reached,
                      "reached": sum(r <= n_trials for r in reached),
                      "best_at": {str(n): v for n, v in at.items()},
                      "best_by_trial": [median_spread([c[i] for c in curves[s]])
                                        for i in range(n_trials)],
                      "best_by_epochs": {"marks": marks,
                                         "stats": [median_spread([e[i] for e in ep])
                                                   for i in range(len(marks))]},
                      "analysed": sum(t["source"] != "tpe" for seed in seeds
                                      for t in runs[("sampler", s, seed)])}
        rows.append([s] + [fmt_spread(at[n], "{:.4f}", "iqr") for n in at]
                    + [fmt_spread(summary[s]["trials_to_target"], "{:.0f}", "iqr"),
                       f"{summary[s]['reached']}/{len(seeds)}"])
    llm, tpe = summary["llm-tpe (rules)"], summary["tpe"]
    p_reach = wilcoxon(llm["trials_per_seed"], tpe["trials_per_seed"])
    p_best = wilcoxon([-c[-1] for c in curves["llm-tpe (rules)"]], [-c[-1] for c in curves["tpe"]])
    # the target: TPE's own median best@N in at most half the trials TPE needs for it
    half = tpe["trials_to_target"]["median"] / 2
    fast = llm["trials_to_target"]["median"] <= half
    significant = p_reach is not None and p_reach < P_TARGET
    checks = [check(f"llm-tpe (rules): trials to TPE's median best@{n_trials}",
                    llm["trials_to_target"]["median"], f"<= {half:g} (half of TPE's)", fast,
                    f"TPE itself: {tpe['trials_to_target']['median']:g}"),
              check("llm-tpe (rules) vs TPE: paired Wilcoxon p (trials to target)",
                    "n/a" if p_reach is None else round(p_reach, 4), f"< {P_TARGET}",
                    significant)]
    md = table(["sampler"] + [f"best@{n} (IQR)" for n in at]
               + [f"trials to TPE's median best@{n_trials} (IQR)", "seeds reaching it"], rows)
    md += (f"\n\nTarget value (TPE's median best@{n_trials}): {target:.4f}. Paired Wilcoxon "
           f"(one-sided, llm-tpe < TPE) by seed: trials to target p = {p_reach}, "
           f"best@{n_trials} p = {p_best}. {len(seeds)} seeds, {n_trials} trials each, "
           f"table `{table_path.name}`.\n\n")
    ep_rows = [[s] + [fmt_spread(summary[s]["best_by_epochs"]["stats"][i], "{:.4f}", "iqr")
                      for i in range(0, len(marks), 3)] for s in SAMPLERS]
    md += "Best-so-far against cumulative epochs, median (IQR):\n\n" + table(
        ["sampler"] + [f"{marks[i]} epochs" for i in range(0, len(marks), 3)], ep_rows)

    # pruners
    prune_rows, prune = [], {}
    for p in PRUNERS:
        mine = [runs[("pruner", p, seed)] for seed in seeds]
        base = [runs[("pruner", "none", seed)] for seed in seeds]
        epochs = [sum(t["epochs"] for t in r) for r in mine]
        saving = [sum(t["epochs"] for t in b) / max(e, 1) for b, e in zip(base, epochs,
                                                                            strict=True)]
        gap = [100 * (best_so_far(b)[-1] - best_so_far(r)[-1]) for b, r in zip(base, mine,
                                                                                  strict=True)]
        prune[p] = {"epochs": median_spread(epochs), "saving_x": median_spread(saving),
                    "gap_points": median_spread(gap),
                    "pruned": median_spread([sum(t["state"] == "PRUNED" for t in r)
                                             for r in mine])}
        ok = None
        if p != "none":
            ok = prune[p]["saving_x"]["median"] >= SAVING_TARGET and \
                prune[p]["gap_points"]["median"] <= GAP_TARGET
            checks.append(check(f"{p}: epoch saving x / points lost",
                                f"{prune[p]['saving_x']['median']:.2f}x / "
                                f"{prune[p]['gap_points']['median']:+.2f}",
                                f">= {SAVING_TARGET:g}x at <= {GAP_TARGET}", ok))
        prune_rows.append([p, fmt_spread(prune[p]["epochs"], "{:.0f}", "iqr"),
                           fmt_spread(prune[p]["saving_x"], "{:.2f}x", "iqr"),
                           fmt_spread(prune[p]["gap_points"], "{:+.2f}", "iqr"),
                           fmt_spread(prune[p]["pruned"], "{:.0f}", "iqr"),
                           "(reference)" if ok is None else ("pass" if ok else "MISS")])
    md += "\n\nPruners (TPE, same seeds, 30-epoch trials), median (IQR):\n\n" + table(
        ["pruner", "epochs trained", "fewer epochs than none", "points below none",
         "pruned trials", "result"], prune_rows)
    md += "\n\n" + md_task.strip()
    best_pruner = any(c["passed"] for c in checks[2:])
    return {"title": "Samplers and pruners on the replayed digits-noisy table",
            "target": (f"llm-tpe (rules) reaches TPE's median best@{n_trials} in at most half "
                       f"the trials TPE needs with p < {P_TARGET}; some pruner >= "
                       f"{SAVING_TARGET:g}x fewer epochs at <= {GAP_TARGET} points lost"),
            "table_md": md,
            "settings": {"seeds": seeds, "n_trials": n_trials, "table": table_path.name,
                         "samplers": SAMPLERS, "pruners": PRUNERS, "jobs": jobs},
            "task": task, "target_value": target, "p_trials_to_target": p_reach, "p_best": p_best,
            "summary": summary, "pruning": prune, "checks": checks,
            "passed": fast and significant and best_pruner,
            "runs": {f"{k[0]}|{k[1]}|{k[2]}": [[t["state"][0], t["value"], t["epochs"]]
                                              for t in v] for k, v in runs.items()}}


def main(argv: list[str] | None = None) -> None:
    from benchmarks.replay import TABLE, TINY

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--n-trials", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=default_jobs())
    parser.add_argument("--table", type=Path, default=TABLE)
    args = parser.parse_args(argv)
    if args.quick:  # in this process, on the tiny table
        args.seeds, args.n_trials, args.jobs, args.table = 2, 10, 1, TINY
    result = run(args.quick, list(range(args.seeds)), args.n_trials, args.jobs, args.table)
    print(result["table_md"])
    for c in result["checks"]:
        verdict = "pass" if c["passed"] else "MISS"
        print(f"{c['name']}: {c['value']} (target {c['target']}): {verdict}")
    print("wrote", write_result("replay", result, args.quick))


if __name__ == "__main__":
    main()
