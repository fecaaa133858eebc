"""What every benchmark shares: where results go, the machine, statistics, tables, study files.

Results go to ``benchmarks/results/`` (or ``$BENCH_OUT`` when set, so a smoke test can write
elsewhere); scratch files (databases, artifacts, the sampler comparison's storage and HTML) go
to ``runs/bench/`` (or ``$BENCH_OUT/runs``).

    >>> s = median_spread([3.0, 1.0, 2.0, 10.0])
    >>> s["median"], s["min"], s["max"], s["n"]
    (2.5, 1.0, 10.0, 4)
    >>> fmt_spread(s, "{:.1f}")
    '2.5 (1.0-10.0)'
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def results_dir() -> Path:
    """Where the JSON files and RESULTS.md go: ``$BENCH_OUT`` or ``benchmarks/results``."""
    out = os.environ.get("BENCH_OUT")
    return Path(out).resolve() if out else REPO / "benchmarks" / "results"


def work_dir(name: str) -> Path:
    """A fresh-per-name scratch folder: ``runs/bench/<name>`` (or ``$BENCH_OUT/runs/<name>``)."""
    out = os.environ.get("BENCH_OUT")
    base = Path(out).resolve() / "runs" if out else REPO / "runs" / "bench"
    path = base / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def set_threads(n: int | None) -> None:
    """Pin torch (and child processes through the environment) to ``n`` threads."""
    if not n:
        return
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)
    import torch

    torch.set_num_threads(n)


def machine() -> dict[str, Any]:
    """CPU model, cores, torch version and GPU (if any) of the machine the figures come from."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if gpu else None,
        "gpu": gpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": load,
    }


def median_spread(values: list[float]) -> dict[str, Any]:
    """Median with its spread: min-max and the interquartile range (q1, q3)."""
    values = [float(v) for v in values]
    if not values:
        return {"median": None, "min": None, "max": None, "q1": None, "q3": None, "n": 0}
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "q1": q1, "q3": q3, "n": len(values)}


def fmt_spread(s: dict[str, Any], form: str = "{:.3g}", spread: str = "minmax") -> str:
    """``median (low-high)`` with min-max (``spread="minmax"``) or the IQR (``"iqr"``)."""
    if s.get("median") is None:
        return "n/a"
    lo, hi = (s["min"], s["max"]) if spread == "minmax" else (s["q1"], s["q3"])
    return f"{form.format(s['median'])} ({form.format(lo)}-{form.format(hi)})"


def verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else ("pass" if passed else "MISS")


def check(name: str, value: Any, target: str, passed: bool | None, note: str = "") -> dict:
    """One target of a benchmark, as stored in the JSON and summarised in RESULTS.md."""
    return {"name": name, "value": value, "target": target, "passed": passed,
            **({"note": note} if note else {})}


def write_result(name: str, payload: dict[str, Any], quick: bool) -> Path:
    """Write ``<results>/<name>.json`` with the machine, the time and whether it was quick."""
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    doc = {"benchmark": name, "quick": quick, "machine": machine(),
           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **payload}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (printed to the terminal and pasted into RESULTS.md)."""
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def study_config(base: str, name: str, overrides: dict[str, Any], workdir: Path):
    """``studies/<base>.yaml`` with ``overrides`` merged in, saved as
    ``workdir/studies/<name>.yaml``.

    The benchmarks run the shipped studies with other seeds, models, pruners, samplers and
    budgets through the same loader a user's file goes through.
    """
    import yaml

    from hpo.config import load_study, read_yaml

    data = read_yaml(REPO / "studies" / f"{base}.yaml")
    _deep_merge(data, overrides)
    data["name"] = name
    space = Path(data["search_space"])
    if not space.suffix:
        data["search_space"] = str(REPO / "search_spaces" / f"{space}.yaml")
    path = workdir / "studies" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_study(str(path))


def _deep_merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


def quiet() -> None:
    """Silence Optuna's per-trial logging and the experimental-feature warnings."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# -- running many small studies in parallel processes ------------------------------------------

def run_study_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one study (in a worker process) and return its trials as plain data.

    ``spec``: ``base`` (a shipped study), ``name``, ``overrides``, ``url`` (storage), ``workdir``
    and ``threads``. Returned: ``seconds`` and ``trials`` (number, state, value, epochs, source,
    start/end as epoch seconds), in trial-number order.
    """
    set_threads(spec.get("threads", 1))
    quiet()
    from optuna.trial import TrialState

    from hpo.runner import run_study

    cfg = study_config(spec["base"], spec["name"], spec["overrides"], Path(spec["workdir"]))
    started = time.perf_counter()
    study = run_study(cfg, spec["url"], show_progress=False, echo=lambda _: None)
    seconds = time.perf_counter() - started
    trials = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state == TrialState.WAITING:
            continue
        trials.append({"number": t.number, "state": t.state.name, "value": t.value,
                       "epochs": t.user_attrs.get("epochs", 0),
                       "source": t.user_attrs.get("hpo_source", "tpe"),
                       "start": t.datetime_start.timestamp() if t.datetime_start else None,
                       "end": t.datetime_complete.timestamp() if t.datetime_complete else None})
    from hpo.sampler import load_analyses

    analyses = [{"id": a.get("id"), "analyst": a.get("analyst"),
                 "fallback_reason": a.get("fallback_reason"),
                 "enqueued": sum(p.get("status") == "enqueued" for p in a.get("proposals", []))}
                for a in load_analyses(study)]
    return {"name": spec["name"], "seconds": round(seconds, 2), "trials": trials,
            "direction": study.direction.name.lower(), "analyses": analyses}


def run_jobs(specs: list[dict[str, Any]], jobs: int) -> list[dict[str, Any]]:
    """:func:`run_study_job` for every spec, ``jobs`` processes at a time (spawned, one torch
    thread each unless a spec says otherwise); results in the order of ``specs``."""
    if jobs <= 1:
        return [run_study_job(s) for s in specs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_study_job, s) for s in specs]
        out = []
        for spec, fut in zip(specs, futures, strict=True):
            out.append(fut.result())
            print(f"  {spec['name']}: {len(out[-1]['trials'])} trials in "
                  f"{out[-1]['seconds']:.0f}s", flush=True)
        return out


def default_jobs() -> int:
    """Parallel studies: one per core, at most 2 (``$BENCH_JOBS`` overrides)."""
    return int(os.environ.get("BENCH_JOBS") or min(2, os.cpu_count() or 1))
