"""``make bench-table``: a learning-curve table of a task where tuning matters (issue 13).

The task (``TASK``): scikit-learn's digits at 16 px, half for training (898 images) and half for
validation (899), Gaussian pixel noise (sigma 0.35, drawn once from seed 0, clipped to [0, 1])
on every image; timm's ``test_efficientnet`` (0.1 M parameters) trained from scratch for 30
epochs, cosine schedule, gradient clipping 5 (the generator's knobs also allow label noise; a
first try with 25 % random labels peaked by epoch 6 and spread seeds by 5 points, so it is 0).
The space (``GRID``, also ``search_spaces/headroom.yaml``): learning rate, optimizer, batch size
and label smoothing, a full factorial of 40 configurations. They run in a shuffled order
(seed 0), so a table cut short is a random design of the grid.

Every run trains one configuration with one seed through hpo's :class:`~hpo.training.Trainer`
(no Optuna) and keeps the full per-epoch curve of every metric it reports (train/val loss,
val accuracy, macro-F1, lr, epoch seconds). Finished runs are appended to a JSONL file
(``runs/bench/table/<task>.jsonl``), one line each; a restarted run skips the runs it holds, so
a kill loses at most the runs in flight. Two processes (one torch thread each) share the cores;
on a CUDA machine they share the GPU. At the end (or with ``--write`` alone) the runs become the
compact committed table ``benchmarks/tables/<task>.json.gz`` with its recipe (task, grid, code
version, seconds) and the headroom figures are printed:

    python -m benchmarks.bench_table --jobs 2          # resumes; Ctrl-C / kill safe
    python -m benchmarks.bench_table --write           # table + figures from the JSONL only
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, work_dir

TASK: dict[str, Any] = {
    "name": "digits-noisy", "dataset": "digits", "image_size": 16, "val_fraction": 0.5,
    "split_seed": 0, "label_noise": 0.0, "pixel_noise": 0.35, "noise_seed": 0,
    "model": "test_efficientnet", "epochs": 30, "scheduler": "cosine", "grad_clip_norm": 5.0,
    "objective": "val_accuracy", "n_classes": 10,
}
GRID: dict[str, list[Any]] = {  # ordered levels; every combination is one configuration
    "lr": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
    "optimizer": ["adamw", "sgd"],
    "batch_size": [32, 128],
    "label_smoothing": [0.0, 0.2],
}
SEEDS = (0, 1)
DIGITS = 5  # curve values are rounded to this many decimals in the table


def configs(grid: dict[str, list[Any]] = GRID, seed: int = 0) -> list[dict[str, Any]]:
    """Every combination of the grid's levels, in a shuffled order fixed by ``seed``.

        >>> c = configs({"lr": [0.1, 0.01], "optimizer": ["sgd"]})
        >>> sorted(x["lr"] for x in c), c[0]["optimizer"]
        ([0.01, 0.1], 'sgd')
    """
    names = list(grid)
    out = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]
    random.Random(seed).shuffle(out)
    return out


def key(params: dict[str, Any], seed: int) -> str:
    return json.dumps({"params": params, "seed": seed}, sort_keys=True)


def build_data(task: dict[str, Any] = TASK):
    """The task's train/validation splits (noise drawn once from ``noise_seed``)."""
    import torch

    from hpo.data.digits import load_digits_splits
    from hpo.data.splits import DataSplits

    clean = load_digits_splits(task["image_size"], 3, task["val_fraction"], task["split_seed"])
    g = torch.Generator().manual_seed(task["noise_seed"])
    n = len(clean.train_y)
    flip = torch.rand(n, generator=g) < task["label_noise"]
    train_y = torch.where(flip, torch.randint(0, clean.num_classes, (n,), generator=g),
                          clean.train_y)
    sigma = task["pixel_noise"]
    train_x = (clean.train_x + sigma * torch.randn(clean.train_x.shape, generator=g)).clamp(0, 1)
    val_x = (clean.val_x + sigma * torch.randn(clean.val_x.shape, generator=g)).clamp(0, 1)
    return DataSplits(train_x, train_y, val_x, clean.val_y, clean.class_names,
                      info={"fingerprint": f"{task['name']}-{json.dumps(task, sort_keys=True)}"})


_DATA = None


def train_one(params: dict[str, Any], seed: int, task: dict[str, Any] = TASK) -> dict[str, Any]:
    """One run: the Trainer with ``params`` and ``seed``; returns its per-epoch curves."""
    import torch

    from hpo.config import ModelConfig
    from hpo.models import build_model
    from hpo.objective import curve_values
    from hpo.training import Trainer, seed_everything
    from hpo.training.config import TrainConfig

    global _DATA
    torch.set_num_threads(1)
    if _DATA is None:
        _DATA = build_data(task)
    cfg = TrainConfig(epochs=task["epochs"], seed=seed, scheduler=task["scheduler"],
                      grad_clip_norm=task["grad_clip_norm"], **params)
    seed_everything(seed)
    model = build_model(ModelConfig(name=task["model"], image_size=task["image_size"],
                                    pretrained=False), _DATA.num_classes)
    curve: dict[str, list[float]] = {}

    def report(result) -> None:
        for k, v in curve_values(result).items():
            curve.setdefault(k, []).append(round(v, DIGITS))

    started = time.perf_counter()
    try:
        Trainer(cfg, model, _DATA).fit(report)
        diverged = None
    except Exception as exc:  # noqa: BLE001 - a diverged run is a row too (its curve so far)
        diverged = str(exc)
    return {"params": params, "seed": seed, "curve": curve, "diverged": diverged,
            "seconds": round(time.perf_counter() - started, 2)}


def read_runs(path: Path) -> list[dict[str, Any]]:
    """The finished runs of a JSONL file; a line cut by a kill is ignored."""
    runs = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                runs.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return runs


def build(jsonl: Path, jobs: int, limit: int | None) -> None:
    """Train every (configuration, seed) the JSONL does not hold yet, appending as they end."""
    done = {key(r["params"], r["seed"]) for r in read_runs(jsonl)}
    todo = [(c, s) for c in configs() for s in SEEDS if key(c, s) not in done]
    if limit is not None:
        todo = todo[:limit]
    print(f"{len(done)} runs done, {len(todo)} to train in {jobs} processes", flush=True)
    with jsonl.open("a") as out:
        def keep(run: dict[str, Any]) -> None:
            out.write(json.dumps(run) + "\n")
            out.flush()
            best = max(run["curve"].get("val_accuracy", [0]))
            print(f"  {run['params']} seed {run['seed']}: best {best:.3f} in "
                  f"{run['seconds']:.0f}s", flush=True)

        if jobs <= 1:
            for c, s in todo:
                keep(train_one(c, s))
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(train_one, c, s) for c, s in todo]):
                keep(fut.result())


def git_rev() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True, check=False).stdout.strip() or "unknown"


def write_table(runs: list[dict[str, Any]], path: Path, task: dict[str, Any] = TASK,
                grid: dict[str, list[Any]] = GRID) -> dict[str, Any]:
    """The compact table: recipe, configurations, and per run its curves (gzipped JSON)."""
    order: list[str] = []
    for r in runs:
        k = json.dumps(r["params"], sort_keys=True)
        if k not in order:
            order.append(k)
    doc = {"recipe": {"task": task, "grid": grid, "seeds": sorted({r["seed"] for r in runs}),
                      "code_version": git_rev(),
                      "train_seconds": round(sum(r["seconds"] for r in runs), 1),
                      "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "how": "python -m benchmarks.bench_table (make bench-table)"},
           "configs": [json.loads(k) for k in order],
           "runs": [{"config": order.index(json.dumps(r["params"], sort_keys=True)),
                     "seed": r["seed"], "seconds": r["seconds"], "diverged": r["diverged"],
                     "curve": r["curve"]} for r in runs]}
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        json.dump(doc, fh, separators=(",", ":"))
    return doc


def write_tiny(runs: list[dict[str, Any]], path: Path, n_configs: int = 4,
               epochs: int = 6) -> None:
    """A tiny table for tests and ``make bench QUICK=1``: the first ``n_configs``
    configurations that have every seed, their curves cut to ``epochs``."""
    chosen: list[str] = []
    for r in runs:
        k = json.dumps(r["params"], sort_keys=True)
        if k not in chosen and len({x["seed"] for x in runs
                                    if json.dumps(x["params"], sort_keys=True) == k}) == len(SEEDS):
            chosen.append(k)
    chosen = chosen[:n_configs]
    small = [{**r, "curve": {k: v[:epochs] for k, v in r["curve"].items()}} for r in runs
             if json.dumps(r["params"], sort_keys=True) in chosen]
    write_table(small, path, {**TASK, "epochs": epochs})


def headroom(doc: dict[str, Any]) -> dict[str, Any]:
    """The three figures of issue 13's task: spread of configurations, epochs the best needs,
    seed-to-seed spread (points = accuracy x 100)."""
    by_config: dict[int, list[list[float]]] = {}
    for r in doc["runs"]:
        by_config.setdefault(r["config"], []).append(r["curve"].get("val_accuracy") or [0.0])
    best_of = {c: statistics.mean(max(v) for v in curves) for c, curves in by_config.items()}
    top = max(best_of, key=best_of.get)
    top_curves = by_config[top]
    epochs = [v.index(max(v)) + 1 for v in top_curves]
    mean = [statistics.mean(x) for x in zip(*top_curves, strict=False)]
    paired = [100 * (max(c[0]) - max(c[1])) for c in by_config.values() if len(c) >= 2]
    return {"configs": len(by_config), "runs": len(doc["runs"]),
            "median_config": statistics.median(best_of.values()), "best_config": best_of[top],
            "best_params": doc["configs"][top], "gap_points": 100 * (best_of[top] - statistics.median(best_of.values())),
            "best_epochs": epochs, "best_mean_curve_epoch": mean.index(max(mean)) + 1,
            "best_seed_spread_points": 100 * (max(map(max, top_curves))
                                                                      - min(map(max, top_curves))),
            "median_abs_seed_diff_points": statistics.median(abs(p) for p in paired) if paired
            else None}


def print_headroom(h: dict[str, Any]) -> None:
    def verdict(ok: bool) -> str:
        return "pass" if ok else "MISS"

    print(f"{h['runs']} runs of {h['configs']} configurations")
    print(f"median configuration {h['median_config']:.4f}, best {h['best_config']:.4f} "
          f"({h['best_params']}): {h['gap_points']:.1f} points apart (target >= 10): "
          f"{verdict(h['gap_points'] >= 10)}")
    print(f"epochs the best needs: its seed-mean curve peaks at epoch "
          f"{h['best_mean_curve_epoch']} (target >= 15): "
          f"{verdict(h['best_mean_curve_epoch'] >= 15)}; per seed {h['best_epochs']}")
    print(f"the best's seed-to-seed spread {h['best_seed_spread_points']:.2f} points "
          f"(target < 1): {verdict(h['best_seed_spread_points'] < 1)}; median |seed 0 - seed 1| "
          f"over configurations {h['median_abs_seed_diff_points']} points")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="training processes")
    parser.add_argument("--limit", type=int, help="train at most this many runs now")
    parser.add_argument("--write", action="store_true", help="only write the table from the JSONL")
    parser.add_argument("--jsonl", type=Path, default=None)
    parser.add_argument("--tiny", action="store_true", help="also write tables/tiny.json.gz: "
                        "the first 4 configurations with both seeds, 6 epochs (tests)")
    parser.add_argument("--table", type=Path,
                        default=REPO / "benchmarks" / "tables" / f"{TASK['name']}.json.gz")
    args = parser.parse_args(argv)
    jsonl = args.jsonl or work_dir("table") / f"{TASK['name']}.jsonl"
    if not args.write:
        build(jsonl, args.jobs, args.limit)
    runs = read_runs(jsonl)
    if not runs:
        sys.exit(f"no runs in {jsonl}")
    doc = write_table(runs, args.table)
    if args.tiny:
        write_tiny(runs, args.table.parent / "tiny.json.gz")
    print(f"wrote {args.table} ({args.table.stat().st_size / 1e3:.0f} kB, {len(runs)} runs)")
    print_headroom(headroom(doc))


if __name__ == "__main__":
    main()
