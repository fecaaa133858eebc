"""Samplers compared: random vs TPE vs llm-tpe (rules analyst) on the mobilenet digits study.

Same budget and seeds for each: best-so-far after a third, two thirds and all of the trials
(10, 20, 30 by default; median and min-max over seeds), and how many trials each needs to
reach TPE's best-at-the-end of the same seed ("never" counts as budget + 1 in the median).
Whatever the table shows is what is reported.

    python -m benchmarks.bench_sampler --quick          # 2 seeds x 9 trials, tiny images
    python -m benchmarks.bench_sampler                  # 5 seeds x 30 trials (hours on a CPU)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from optuna.trial import TrialState

from benchmarks.common import median_spread, study_config, table, write_result
from hpo.runner import run_study

SAMPLERS = {
    "random": {"type": "random"},
    "tpe": {"type": "tpe", "n_startup_trials": 8},
    "llm-tpe (rules)": {"type": "llm-tpe", "n_startup_trials": 8, "analyst": "rules",
                        "every_n_trials": 5, "background": False},
}


def best_so_far(study) -> list[float | None]:
    """Best value after each trial (by trial number; complete trials count)."""
    out, best = [], None
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state == TrialState.COMPLETE and (best is None or t.value > best):
            best = t.value
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            out.append(best)
    return out


def run(quick: bool, seeds: list[int], n_trials: int, max_epochs: int) -> dict:
    marks = sorted({max(1, n_trials // 3), max(1, 2 * n_trials // 3), n_trials})
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'samplers.db'}"
        for seed in seeds:
            for name, sampler in SAMPLERS.items():
                overrides = {"seed": seed, "sampler": sampler,
                             "budget": {"n_trials": n_trials, "max_epochs": max_epochs}}
                if quick:
                    overrides["model"] = {"image_size": 16}
                    overrides["sampler"] = {**sampler, "n_startup_trials": 3}
                    if "every_n_trials" in sampler:
                        overrides["sampler"]["every_n_trials"] = 3
                slug = name.split()[0]
                cfg = study_config("mobilenet", f"bench-{slug}-s{seed}", overrides, Path(tmp))
                started = time.perf_counter()
                study = run_study(cfg, url, show_progress=False, echo=lambda _: None)
                curve = best_so_far(study)
                runs.append({"sampler": name, "seed": seed, "curve": curve,
                             "seconds": round(time.perf_counter() - started, 1),
                             "proposal_trials": sum(t.user_attrs.get("hpo_source") in
                                                    ("rules", "llm") for t in study.trials
                                                    if t.state != TrialState.WAITING)})
                print({k: v for k, v in runs[-1].items() if k != "curve"},
                      "best", curve[-1] if curve else None, flush=True)
    summary, rows = {}, []
    for name in SAMPLERS:
        mine = [r for r in runs if r["sampler"] == name]
        s = {f"best@{m}": median_spread([r["curve"][m - 1] or 0.0 for r in mine
                                         if len(r["curve"]) >= m]) for m in marks}
        reach = []
        for r in mine:
            tpe = next(x for x in runs if x["sampler"] == "tpe" and x["seed"] == r["seed"])
            target = tpe["curve"][-1]
            n = next((i + 1 for i, v in enumerate(r["curve"]) if v is not None and target is
                      not None and v >= target), n_trials + 1)
            reach.append(n)
        s["trials_to_tpe_best"] = median_spread(reach)
        s["reached"] = sum(n <= n_trials for n in reach)
        summary[name] = s
        cells = [(f"{s[f'best@{m}']['median']:.4f} ({s[f'best@{m}']['min']:.4f}-"
                  f"{s[f'best@{m}']['max']:.4f})") for m in marks]
        reached = f"{s['trials_to_tpe_best']['median']:g} (reached {s['reached']}/{len(mine)})"
        rows.append([name, *cells, reached])
    md = table(["sampler"] + [f"best val acc after {m} (median, min-max)" for m in marks]
               + [f"trials to TPE's best@{n_trials}"], rows)
    return {"title": "Samplers (mobilenet digits): random vs TPE vs llm-tpe with rules analyst",
            "table_md": md, "settings": {"seeds": seeds, "n_trials": n_trials,
                                         "max_epochs": max_epochs, "samplers": SAMPLERS},
            "summary": summary, "runs": runs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, help="default 5 (quick: 2)")
    parser.add_argument("--n-trials", type=int, help="default 30 (quick: 9)")
    parser.add_argument("--max-epochs", type=int, help="default 8 (quick: 2)")
    args = parser.parse_args(argv)
    for key, full, quick in (("seeds", 5, 2), ("n_trials", 30, 9), ("max_epochs", 8, 2)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    result = run(args.quick, list(range(args.seeds)), args.n_trials, args.max_epochs)
    print(result["table_md"])
    print("wrote", write_result("sampler", result, args.quick))


if __name__ == "__main__":
    main()
