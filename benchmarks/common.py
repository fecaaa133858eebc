"""What every benchmark shares: the machine description, the JSON file, the printed table.

    >>> from benchmarks.common import median_spread
    >>> median_spread([3.0, 1.0, 2.0, 10.0])
    {'median': 2.5, 'min': 1.0, 'max': 10.0, 'n': 4}
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """CPU model, cores, torch version and GPU (if any) of the machine the figures come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def median_spread(values: list[float]) -> dict[str, float]:
    """Median with the min-max spread (what the tables print for repeated measurements)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def write_result(name: str, payload: dict[str, Any], quick: bool) -> Path:
    """Write ``results/<name>.json`` with the machine, the time and whether it was a quick run."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
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
    """``studies/<base>.yaml`` with ``overrides`` merged in, saved as ``workdir/studies/<name>.yaml``.

    The benchmarks run the shipped studies with other seeds, pruners, samplers and budgets
    through the same loader a user's file goes through.
    """
    import yaml

    from hpo.config import load_study, read_yaml

    repo = Path(__file__).resolve().parents[1]
    data = read_yaml(repo / "studies" / f"{base}.yaml")
    _deep_merge(data, overrides)
    data["name"] = name
    space = Path(data["search_space"])
    if not space.suffix:
        data["search_space"] = str(repo / "search_spaces" / f"{space}.yaml")
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
