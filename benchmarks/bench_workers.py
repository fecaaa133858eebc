"""Parallel workers on PostgreSQL.

1. Training workers: ``hpo study`` processes with default settings (no thread count given:
   each takes its share of the cores, :mod:`hpo.threads`; the threads each said are recorded),
   on one study
   (mobilenet digits at 16 px, 2 epochs per trial, random sampler, no pruning, a budget of
   ``--trials`` trials): 1 worker against 2 workers, runs alternating (1, 2, 1, 2, ...), each on
   a fresh database. Trials per hour = finished trials / (first trial start to last trial end).
   Figure: the ratio 2 workers / 1 worker (median, min-max over the pairs; target >= 1.8x), and
   that the budget is exact (finished == budget, nothing left RUNNING or WAITING).
2. Light workers: 32 processes (``benchmarks.light_worker``: a quadratic objective, no torch) on
   one study for a fixed time, all started together once every one has loaded the study.
   Trials per second, and a real lost/duplicate check: every objective call each worker made
   (trial number and id) against the trials in the storage: none lost (a call whose trial is not
   COMPLETE), none duplicated (a trial number or id called twice, or stored twice), none
   unaccounted (a COMPLETE trial no worker called), none left RUNNING/WAITING, no crash.

    python -m benchmarks.bench_workers --quick
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import light_worker
from benchmarks.common import (
    REPO,
    check,
    fmt_spread,
    median_spread,
    quiet,
    study_config,
    table,
    work_dir,
    write_result,
)

sys.path.insert(0, str(REPO / "tests"))
from resume_support import drop_storage, make_storage

RATIO_TARGET = 1.8


def _env() -> dict[str, str]:
    """A worker's environment as a user's shell gives it: no thread count set anywhere."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for key in ("HPO_STORAGE", "HPO_ARTIFACTS", "HPO_THREADS", "OMP_NUM_THREADS",
                "MKL_NUM_THREADS"):
        env.pop(key, None)
    return env


def _threads_said(log: Path) -> list[str]:
    """The ``torch threads: ...`` lines a worker printed (its first line, and any change)."""
    return [line.split("torch threads: ", 1)[1].strip()
            for line in log.read_text(errors="replace").splitlines() if "torch threads: " in line]


def training_run(n: int, n_trials: int, max_epochs: int, tmp: Path, run_id: str) -> dict:
    """``n`` ``hpo study`` workers on a fresh PostgreSQL study of ``n_trials`` trials."""
    import optuna
    from optuna.trial import TrialState

    from hpo.storage import resolve_storage_url

    url = resolve_storage_url(make_storage("postgresql", tmp))
    try:
        overrides = {"budget": {"n_trials": n_trials, "max_epochs": max_epochs},
                     "model": {"image_size": 16}, "sampler": {"type": "random"},
                     "pruner": {"type": "none"},
                     "artifacts": {"path": str(tmp / f"artifacts-{run_id}")}}
        name = f"workers-{run_id}"
        study_config("mobilenet", name, overrides, tmp)
        study_file = tmp / "studies" / f"{name}.yaml"
        cmd = [sys.executable, "-m", "hpo.cli", "study", str(study_file), "--storage", url,
               "--no-progress"]
        logs = [tmp / f"{name}-{i}.log" for i in range(n)]
        started = time.perf_counter()
        procs = [subprocess.Popen(cmd, env=_env(), cwd=tmp, stdout=log.open("w"),
                                  stderr=subprocess.STDOUT) for log in logs]
        codes = [p.wait(timeout=3600) for p in procs]
        wall = time.perf_counter() - started
        study = optuna.load_study(study_name=name, storage=url)
        trials = study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        span = ((max(t.datetime_complete for t in finished)
                 - min(t.datetime_start for t in finished)).total_seconds() if finished else 0.0)
        durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in finished]
        return {"workers": n, "run": run_id, "exit_codes": codes, "wall_s": round(wall, 1),
                "span_s": round(span, 2), "finished": len(finished), "budget": n_trials,
                "left_running_or_waiting": sum(t.state in (TrialState.RUNNING, TrialState.WAITING)
                                               for t in trials),
                "trials_per_hour": len(finished) / span * 3600 if span else 0.0,
                "trial_seconds": median_spread(durations),
                "threads_said": [_threads_said(log) for log in logs],
                "log_tail": [log.read_text(errors="replace")[-300:] for log, c in
                             zip(logs, codes, strict=True) if c != 0]}
    finally:
        drop_storage(url)


def light_run(n: int, seconds: float, tmp: Path) -> dict:
    """``n`` light workers for ``seconds`` on one study; counts and the lost/duplicate check."""
    import optuna
    from optuna.trial import TrialState

    from hpo.storage import open_storage, resolve_storage_url

    url = resolve_storage_url(make_storage("postgresql", tmp))
    storage = open_storage(url)
    try:
        optuna.create_study(study_name="light", storage=storage)
        procs, outs, go, startup = light_worker.start(url, "light", n, seconds, tmp, "light",
                                                      _env(), REPO, ready_timeout=300)
        start, codes = light_worker.release(procs, go, seconds)
        called, returned = light_worker.read_calls(outs)
        trials = optuna.load_study(study_name="light", storage=storage).get_trials(deepcopy=False)
        by_number = {t.number: t for t in trials}
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        end = max((t.datetime_complete.timestamp() for t in complete), default=start)
        numbers = [c[0] for c in called]
        ids = [c[1] for c in called]
        stored_numbers = [t.number for t in trials]
        stored_ids = [t._trial_id for t in trials]
        lost = sorted(num for num in set(numbers) if num not in by_number
                      or by_number[num].state != TrialState.COMPLETE)
        unaccounted = sorted({t.number for t in complete} - set(numbers))
        duplicated = ((len(numbers) - len(set(numbers))) + (len(ids) - len(set(ids)))
                      + (len(stored_numbers) - len(set(stored_numbers)))
                      + (len(stored_ids) - len(set(stored_ids))))
        left = sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
        crashed = sum(c != 0 for c in codes)
        counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
        return {"workers": n, "seconds": seconds, "startup_s": round(startup, 1),
                "measured_s": round(end - start, 2), "crashed": crashed,
                "objective_calls": len(called), "objective_returns": len(returned),
                "trials_stored": len(trials), "states": {k: v for k, v in counts.items() if v},
                "trials_per_second": len(complete) / max(end - start, 1e-9),
                "lost": len(lost), "lost_numbers": lost[:20],
                "unaccounted": len(unaccounted), "unaccounted_numbers": unaccounted[:20],
                "duplicated": duplicated, "left_running_or_waiting": left,
                "ok": (crashed == 0 and not lost and not unaccounted and duplicated == 0
                       and left == 0 and len(called) == len(complete) == len(returned)
                       and len(called) > 0)}
    finally:
        storage.engine.dispose()
        drop_storage(url)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trials", type=int, default=16, help="budget of each training run")
    parser.add_argument("--max-epochs", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=2, help="1-worker/2-worker run pairs")
    parser.add_argument("--light-workers", type=int, default=32)
    parser.add_argument("--light-seconds", type=float, default=30)
    args = parser.parse_args(argv)
    quiet()
    if args.quick:
        args.trials, args.max_epochs, args.pairs = 2, 1, 1
        args.light_workers, args.light_seconds = 8, 3
    tmp = work_dir("workers")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    runs = []
    for pair in range(args.pairs):
        for n in (1, 2):
            runs.append(training_run(n, args.trials, args.max_epochs, tmp, f"{n}w-{pair}"))
            r = runs[-1]
            print(f"  {n} worker(s): {r['finished']} trials in {r['span_s']:.0f}s, "
                  f"{r['trials_per_hour']:.0f}/h, exit {r['exit_codes']}, threads {r['threads_said']}",
                  flush=True)
    light = light_run(args.light_workers, args.light_seconds, tmp)
    print(f"  {light['workers']} light workers: {light['trials_per_second']:.1f} trials/s, "
          f"ok={light['ok']}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)

    ones = [r for r in runs if r["workers"] == 1]
    twos = [r for r in runs if r["workers"] == 2]
    ratio = median_spread([b["trials_per_hour"] / max(a["trials_per_hour"], 1e-9)
                           for a, b in zip(ones, twos, strict=True)])
    exact = all(r["finished"] == r["budget"] and r["left_running_or_waiting"] == 0
                and all(c == 0 for c in r["exit_codes"]) for r in runs)
    checks = [check("2 workers / 1 worker trials per hour", round(ratio["median"], 3),
                    f">= {RATIO_TARGET}", ratio["median"] >= RATIO_TARGET),
              check("training runs: budget exact, nothing left running, exit 0", exact,
                    "true", exact),
              check(f"{light['workers']} light workers: no trial lost or duplicated", light["ok"],
                    "true", light["ok"])]
    md = table(["workers", "runs", "trials/hour (median, min-max)", "s per trial (median)",
                "2 / 1 (median, min-max over pairs)", "target", "result"],
               [["1", len(ones), fmt_spread(median_spread([r["trials_per_hour"] for r in ones]),
                                            "{:.0f}"),
                 f"{median_spread([r['trial_seconds']['median'] for r in ones])['median']:.1f}",
                 "1 (reference)", "", ""],
                ["2", len(twos), fmt_spread(median_spread([r["trials_per_hour"] for r in twos]),
                                            "{:.0f}"),
                 f"{median_spread([r['trial_seconds']['median'] for r in twos])['median']:.1f}",
                 fmt_spread(ratio, "{:.2f}x"), f">= {RATIO_TARGET}x",
                 "pass" if checks[0]["passed"] else "MISS"]])
    md += "\n\n" + table(
        ["light workers", "seconds", "trials/s", "objective calls", "COMPLETE trials", "lost",
         "duplicated", "unaccounted", "left running/waiting", "crashed", "result"],
        [[light["workers"], light["measured_s"], round(light["trials_per_second"], 1),
          light["objective_calls"], light["states"].get("COMPLETE", 0), light["lost"],
          light["duplicated"], light["unaccounted"], light["left_running_or_waiting"],
          light["crashed"], "pass" if light["ok"] else "MISS"]])
    print(md)
    result = {"title": "Parallel workers on PostgreSQL",
              "target": f"2 workers >= {RATIO_TARGET}x the trials/hour of 1 (default thread "
                        "settings); no trial lost or duplicated with 32 light workers",
              "table_md": md,
              "settings": {"trials": args.trials, "max_epochs": args.max_epochs,
                           "pairs": args.pairs, "model": "mobilenetv3_small_050", "image_size": 16,
                           "sampler": "random", "pruner": "none",
                           "threads_per_worker": "auto (hpo.threads)",
                           "light_workers": args.light_workers,
                           "light_seconds": args.light_seconds},
              "training": runs, "ratio_2_vs_1": ratio, "light": light, "checks": checks,
              "passed": all(c["passed"] for c in checks)}
    print("wrote", write_result("workers", result, args.quick))


if __name__ == "__main__":
    main()
