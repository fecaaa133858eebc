"""``make bench``: run every benchmark, then write ``benchmarks/RESULTS.md`` from their JSON.

Each benchmark runs in its own process (a clean torch/Optuna state, and one failing benchmark
does not hide the others' figures). ``--quick`` passes ``--quick`` to each: a smoke run.

    python -m benchmarks.run_all --quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import RESULTS_DIR, machine

BENCHMARKS = {  # module -> JSON it writes under results/
    "benchmarks.bench_trainer": "trainer",
    "benchmarks.bench_overhead": "overhead",
    "benchmarks.bench_pruning": "pruning",
    "benchmarks.bench_sampler": "sampler",
    "benchmarks.bench_workers": "workers",
}
RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"


def run_all(quick: bool) -> dict[str, int]:
    """Run each benchmark module; returns its exit code by name."""
    codes = {}
    for module, name in BENCHMARKS.items():
        print(f"== {module}{' --quick' if quick else ''}", flush=True)
        started = time.perf_counter()
        codes[name] = subprocess.run([sys.executable, "-m", module, *(["--quick"] if quick else [])],
                                     check=False).returncode
        print(f"== {module}: exit {codes[name]} in {time.perf_counter() - started:.0f}s", flush=True)
    return codes


def write_results_md(codes: dict[str, int]) -> Path:
    """One section per benchmark: its table (or its JSON when it has no table) and its settings."""
    lines = ["# Benchmark results", "", "Written by `make bench` (`python -m benchmarks.run_all`).",
             "Machine: `" + json.dumps(machine()) + "`", ""]
    for name, code in codes.items():
        path = RESULTS_DIR / f"{name}.json"
        lines.append(f"## {name}")
        if code != 0 or not path.exists():
            lines += ["", f"Did not finish (exit code {code}).", ""]
            continue
        doc = json.loads(path.read_text())
        lines += ["", f"**{doc.get('title', name)}**" + (" (quick run)" if doc.get("quick") else ""),
                  ""]
        if "target" in doc:
            lines += [f"Target: {doc['target']}", ""]
        lines += [doc.get("table_md") or "```json\n" + json.dumps(doc, indent=1)[:3000] + "\n```",
                  ""]
    RESULTS_MD.write_text("\n".join(lines))
    return RESULTS_MD


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    codes = run_all(args.quick)
    print("wrote", write_results_md(codes))
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
