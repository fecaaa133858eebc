"""Parallel workers on PostgreSQL.

1. 1 vs 2 ``hpo study`` workers (one torch thread each) on one mobilenet digits study for the
   same wall time: finished trials per hour, and the ratio (target: at least 1.8x).
2. 32 light workers (a cheap quadratic objective, no torch) for a fixed time: trials per second,
   and a check that no trial is lost or duplicated (every objective call is one stored trial).

    python -m benchmarks.bench_workers --quick
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from benchmarks.common import study_config, table, write_result
from hpo.storage import open_storage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from resume_support import drop_storage, make_storage  # noqa: E402  (real databases, fresh names)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def training_workers(n: int, seconds: float, quick: bool, tmp: Path) -> dict:
    """Run ``n`` real workers for ``seconds``; count the trials they finished."""
    url = make_storage("postgresql", tmp / f"w{n}")
    try:
        overrides = {"budget": {"n_trials": 10_000, "max_epochs": 2 if quick else 4},
                     "model": {"image_size": 16 if quick else 32},
                     "artifacts": {"path": str(tmp / f"w{n}" / "artifacts")}}
        cfg = study_config("mobilenet", f"workers-{n}", overrides, tmp)
        study_file = tmp / "studies" / f"workers-{n}.yaml"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "hpo.cli", "study", str(study_file), "--storage", url,
               "--no-progress"]
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for _ in range(n)]
        time.sleep(seconds)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=120)
        trials = optuna.load_study(study_name=cfg.name, storage=url).get_trials(states=FINISHED)
        return {"workers": n, "seconds": seconds, "finished": len(trials),
                "trials_per_hour": len(trials) / seconds * 3600}
    finally:
        drop_storage(url)


def light_worker(url: str, name: str, seconds: float, out: str) -> None:
    """One light worker: a quadratic objective until ``seconds`` pass; writes its call count."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=open_storage(url),
                              sampler=optuna.samplers.RandomSampler())
    calls = []

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -5, 5)
        calls.append(trial.number)
        return (x - 1) ** 2

    study.optimize(objective, timeout=seconds)
    Path(out).write_text(json.dumps(calls))


def light_workers(n: int, seconds: float, tmp: Path) -> dict:
    url = make_storage("postgresql", tmp / "light")
    try:
        optuna.create_study(study_name="light", storage=open_storage(url))
        outs = [tmp / f"light-{i}.json" for i in range(n)]
        procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.bench_workers",
                                   "--light-worker", url, "light", str(seconds), str(out)])
                 for out in outs]
        started = time.perf_counter()
        codes = [p.wait(timeout=seconds + 300) for p in procs]
        wall = time.perf_counter() - started
        calls = [num for out in outs if out.exists() for num in json.loads(out.read_text())]
        trials = optuna.load_study(study_name="light", storage=url).trials
        numbers = [t.number for t in trials]
        return {"workers": n, "seconds": seconds, "wall_s": wall, "crashed": sum(c != 0 for c in codes),
                "trials": len(trials), "objective_calls": len(calls),
                "trials_per_second": len(trials) / wall,
                "lost": len(set(calls) - set(numbers)),
                "duplicated": len(numbers) - len(set(numbers)) + len(calls) - len(set(calls)),
                "not_complete": sum(t.state != TrialState.COMPLETE for t in trials)}
    finally:
        drop_storage(url)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=600, help="per training-worker run")
    parser.add_argument("--light-seconds", type=float, default=30)
    parser.add_argument("--light-worker", nargs=4, metavar=("URL", "NAME", "SECONDS", "OUT"))
    args = parser.parse_args(argv)
    if args.light_worker:
        url, name, seconds, out = args.light_worker
        light_worker(url, name, float(seconds), out)
        return
    seconds, light_seconds, n_light = (45, 5, 8) if args.quick else (
        args.seconds, args.light_seconds, 32)
    with tempfile.TemporaryDirectory() as tmp:
        one, two = (training_workers(n, seconds, args.quick, Path(tmp)) for n in (1, 2))
        light = light_workers(n_light, light_seconds, Path(tmp))
    ratio = two["trials_per_hour"] / max(one["trials_per_hour"], 1e-9)
    md = table(["run", "finished trials", "trials/hour", "ratio"],
               [["1 worker", one["finished"], round(one["trials_per_hour"], 1), 1.0],
                ["2 workers", two["finished"], round(two["trials_per_hour"], 1), round(ratio, 2)]])
    md += "\n\n" + table(
        ["light workers", "seconds", "trials", "trials/s", "lost", "duplicated", "crashed"],
        [[light["workers"], light["seconds"], light["trials"], round(light["trials_per_second"], 1),
          light["lost"], light["duplicated"], light["crashed"]]])
    print(md)
    result = {"title": "Parallel workers on PostgreSQL", "table_md": md,
              "target": "2 workers >= 1.8x the trials/hour of 1; no trial lost or duplicated",
              "training": [one, two], "ratio_2_vs_1": ratio, "light": light}
    print("wrote", write_result("workers", result, args.quick))


if __name__ == "__main__":
    main()
