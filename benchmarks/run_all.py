"""``make bench``: run every benchmark, then write ``RESULTS.md`` from their JSON.

Each benchmark runs in its own process (a clean torch/Optuna state, and one failing benchmark
does not hide the others' figures) and writes ``<results>/<name>.json``; ``<results>`` is
``benchmarks/results`` (RESULTS.md next to it, in ``benchmarks/``), or ``--out DIR`` /
``$BENCH_OUT`` (RESULTS.md in DIR). ``--quick`` passes ``--quick`` to each: a smoke run of a
minute or two. A benchmark that misses its target still exits 0 (the miss is a result); one that
crashes makes this exit 1.

    python -m benchmarks.run_all --quick --out /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = {  # JSON name -> module
    "trainer": "benchmarks.bench_trainer",
    "overhead": "benchmarks.bench_overhead",
    "pruning": "benchmarks.bench_pruning",
    "sampler": "benchmarks.bench_sampler",
    "workers": "benchmarks.bench_workers",
    "llm": "benchmarks.bench_llm",
    "startup": "benchmarks.bench_startup",  # seconds, also in --quick (2 runs each)
    "reports": "benchmarks.bench_reports",  # report/compare/dashboard at 10k trials (issue 15)
    "proxy": "benchmarks.bench_proxy",  # light workers via the gRPC storage proxy vs direct
    "replay": "benchmarks.bench_replay",  # samplers/pruners on a learning-curve table (issue 13)
    "real": "benchmarks.bench_real",  # the headroom task trained for real: confirmation, warm start
}
EXTRA = {  # measured elsewhere (another machine), shown when present
    "trainer_cuda": "Trainer throughput on a CUDA machine (`python -m benchmarks.bench_trainer "
                    "--name trainer_cuda` run there)",
}


def results_md_path() -> Path:
    from benchmarks.common import REPO

    out = os.environ.get("BENCH_OUT")
    return Path(out).resolve() / "RESULTS.md" if out else REPO / "benchmarks" / "RESULTS.md"


def run_all(quick: bool, names: list[str]) -> dict[str, dict]:
    """Run each benchmark module; returns exit code and seconds by name."""
    from benchmarks.common import results_dir

    out = {}
    for name in names:
        module = BENCHMARKS[name]
        (results_dir() / f"{name}.json").unlink(missing_ok=True)  # no stale figures
        print(f"== {module}{' --quick' if quick else ''}", flush=True)
        started = time.perf_counter()
        code = subprocess.run([sys.executable, "-m", module, *(["--quick"] if quick else [])],
                              check=False).returncode
        seconds = time.perf_counter() - started
        out[name] = {"exit": code, "seconds": round(seconds, 1)}
        print(f"== {module}: exit {code} in {seconds:.0f}s", flush=True)
    return out


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_results_md(status: dict[str, dict], quick: bool, total_s: float) -> Path:
    """A summary of every target, then one section per benchmark: its table and settings."""
    from benchmarks.common import machine, results_dir, table

    docs = {}
    for name in status:
        path = results_dir() / f"{name}.json"
        if status[name]["exit"] == 0 and path.exists():
            docs[name] = json.loads(path.read_text())
    mach = machine()
    lines = ["# Benchmark results", "",
             f"Written by `make bench{' QUICK=1' if quick else ''}` "
             f"(`python -m benchmarks.run_all{' --quick' if quick else ''}`) on "
             f"{time.strftime('%Y-%m-%d %H:%M %Z')} in {total_s / 60:.1f} min."
             + (" **Quick run: smoke-test sizes, the figures mean nothing.**" if quick else ""),
             "", (f"Machine: {mach['cpu']}, {mach['cores']} cores, torch {mach['torch']}, "
                  f"GPU: {mach['gpu'] or 'none'}, load average at the end "
                  f"{mach['load_average']}."),
             "", ("Every figure is a ratio or a median with its spread, measured side by side "
                  "in the same run; the settings of each benchmark are in its JSON under "
                  "`benchmarks/results/`."), "", "## Summary", ""]
    rows = []
    for name, st in status.items():
        doc = docs.get(name)
        if doc is None:
            rows.append([name, "did not finish", "", f"exit {st['exit']}", st["seconds"]])
            continue
        for c in doc.get("checks", []):
            result = "n/a" if c["passed"] is None else ("pass" if c["passed"] else "MISS")
            rows.append([name, c["name"], f"{_value(c['value'])} (target {c['target']})",
                         result + (f" ({c['note']})" if c.get("note") else ""), st["seconds"]])
    lines += [table(["benchmark", "figure", "value", "result", "benchmark seconds"], rows), ""]
    for name, st in status.items():
        doc = docs.get(name)
        lines.append(f"## {name}")
        lines.append("")
        if doc is None:
            lines += [f"Did not finish (exit code {st['exit']}); see the `make bench` output.", ""]
            continue
        lines += [f"**{doc.get('title', name)}**", "", f"Target: {doc.get('target', '-')}", "",
                  doc.get("table_md", ""), "",
                  "Settings: `" + json.dumps(doc.get("settings", {}), default=str) + "`", ""]
    for name, what in EXTRA.items():
        path = results_dir() / f"{name}.json"
        if not path.exists():
            continue
        doc = json.loads(path.read_text())
        m = doc.get("machine", {})
        lines += [f"## {name} (separate machine)", "", what + f", {doc.get('finished_at')}: "
                  f"{m.get('gpu')}, CUDA {m.get('cuda')}, {m.get('cpu')}, torch {m.get('torch')}."
                  + (" Quick run." if doc.get("quick") else ""), "",
                  f"Target: {doc.get('target', '-')}", "", doc.get("table_md", ""), ""]
    path = results_md_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (a minute or two)")
    parser.add_argument("--out", help="results folder (default benchmarks/results; "
                        "also $BENCH_OUT)")
    parser.add_argument("--only", nargs="*", choices=list(BENCHMARKS), help="a subset")
    args = parser.parse_args(argv)
    if args.out:
        os.environ["BENCH_OUT"] = str(Path(args.out).resolve())  # children inherit it
    started = time.perf_counter()
    status = run_all(args.quick, args.only or list(BENCHMARKS))
    total = time.perf_counter() - started
    print(f"== all benchmarks in {total:.0f}s")
    print("wrote", write_results_md(status, args.quick, total))
    return 0 if all(s["exit"] == 0 for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
