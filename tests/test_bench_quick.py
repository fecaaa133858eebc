"""``make bench QUICK=1`` end to end: every benchmark runs and writes every field.

The smoke run writes to a temporary folder (``BENCH_OUT``), never to ``benchmarks/results/``.
It needs the local PostgreSQL (overhead and workers benchmarks), like the worker tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

COMMON = ["benchmark", "quick", "machine", "finished_at", "title", "target", "table_md",
          "settings", "checks", "passed"]
MACHINE = ["cpu", "cores", "torch", "torch_threads", "gpu", "python", "platform"]
CHECK = ["name", "value", "target", "passed"]
SPREAD = ["median", "min", "max", "q1", "q3", "n"]

# benchmark -> (top-level fields, dotted paths to median/spread dicts)
EXPECTED: dict[str, tuple[list[str], list[str]]] = {
    "trainer": (["device", "models"],
                ["models.0.ratios.trainer_vs_bare_fp32",
                 "models.0.images_per_second_stats.trainer_fp32",
                 "models.0.images_per_second_stats.bare_fp32",
                 "models.1.ratios.trainer_vs_bare_fp32"]),
    "overhead": (["runs"], ["runs.0.overhead_share_per_trial", "runs.0.trial_seconds",
                            "runs.1.overhead_share_per_trial", "runs.1.trial_seconds"]),
    "pruning": (["summary", "runs"],
                [f"summary.{p}.{k}" for p in ("none", "median", "hyperband")
                 for k in ("epochs", "best", "epoch_saving_x", "best_gap_points")]),
    "sampler": (["summary", "runs", "marks", "compare"],
                [f"summary.{s}.{k}" for s in ("random", "tpe", "llm-tpe (rules)")
                 for k in ("trials_to_tpe_best",)]),
    "workers": (["training", "ratio_2_vs_1", "light"], ["ratio_2_vs_1"]),
    "llm": (["prompt", "growth", "latency"],
            [f"prompt.{n}.prompt_tokens" for n in (10, 100, 500)]),
    "startup": (["commands"], ["commands.hpo --help.seconds",
                               "commands.hpo report (small study).seconds"]),
    "reports": (["studies", "steps"], []),
    "proxy": (["runs"], []),
    "replay": (["summary", "pruning", "target_value", "compare"],
               [f"summary.{s}.trials_to_target" for s in ("random", "tpe", "llm-tpe (rules)")]
               + [f"pruning.{p}.saving_x" for p in ("median", "hyperband", "successive halving")]),
    "real": (["summary", "p_reach", "warm_reach", "runs"],
             [f"summary.{s}.trials_to_target" for s in ("tpe", "llm-tpe (rules)")]),
}


def dig(doc, path: str):
    for part in path.split("."):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def test_make_bench_quick_writes_every_field(tmp_path):
    out = tmp_path / "bench"
    results = REPO / "benchmarks" / "results"
    before = {p: p.stat().st_mtime for p in results.glob("*")} if results.exists() else {}
    env = {k: v for k, v in os.environ.items() if k not in ("BENCH_OUT", "QUICK")}
    env.pop("HPO_LLM_BASE_URL", None)  # the quick run must not depend on an endpoint
    started = time.perf_counter()
    proc = subprocess.run(["make", "bench", "QUICK=1", f"BENCH_OUT={out}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    seconds = time.perf_counter() - started
    print(f"make bench QUICK=1: {seconds:.0f}s")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    for name, (fields, spreads) in EXPECTED.items():
        doc = json.loads((out / f"{name}.json").read_text())
        assert doc["benchmark"] == name and doc["quick"] is True
        missing = [f for f in COMMON + fields if f not in doc]
        assert not missing, f"{name}.json lacks {missing}"
        assert all(k in doc["machine"] for k in MACHINE), doc["machine"]
        assert doc["machine"]["cpu"] and doc["machine"]["cores"] >= 1
        assert doc["checks"], f"{name}.json has no target checks"
        for c in doc["checks"]:
            assert all(k in c for k in CHECK), c
        assert doc["table_md"].startswith("| ") and "result" in doc["table_md"]
        for path in spreads:
            s = dig(doc, path)
            assert all(k in s for k in SPREAD), f"{name}: {path} = {s}"
            assert s["n"] >= 1 and s["min"] <= s["median"] <= s["max"], f"{name}: {path} = {s}"

    trainer = json.loads((out / "trainer.json").read_text())
    assert [m["timm_name"] for m in trainer["models"]] == ["mobilenetv3_small_050",
                                                           "efficientnet_b0"]
    overhead = json.loads((out / "overhead.json").read_text())
    assert [r["storage"] for r in overhead["runs"]] == ["sqlite", "postgresql"]
    assert overhead["settings"]["sampler"] == "llm-tpe"
    assert overhead["settings"]["analyst"] == "rules"
    assert all(r["analyses"] >= 1 for r in overhead["runs"])
    sampler = json.loads((out / "sampler.json").read_text())
    assert sampler["compare"].get("markdown"), sampler["compare"]
    assert Path(sampler["compare"]["html"]).exists() and (out / "sampler_compare.md").exists()
    assert sampler["summary"]["llm-tpe (rules)"]["analyses"] >= 1
    workers = json.loads((out / "workers.json").read_text())
    light = workers["light"]
    assert light["ok"] is True, light
    assert light["objective_calls"] == light["states"]["COMPLETE"] > 0
    proxy = json.loads((out / "proxy.json").read_text())
    assert [r["via"] for r in proxy["runs"]] == ["direct", "proxy"], proxy["runs"]
    assert all(r["ok"] and r["complete"] > 0 for r in proxy["runs"]), proxy["runs"]
    assert proxy["runs"][1]["proxy_rss_mb_peak"] > 0
    assert light["lost"] == light["duplicated"] == light["unaccounted"] == 0
    assert all(r["finished"] == r["budget"] for r in workers["training"])
    llm = json.loads((out / "llm.json").read_text())
    assert set(llm["prompt"]) == {"10", "100", "500"}
    assert "skipped" in llm["latency"] or llm["latency"]["sizes"]

    startup = json.loads((out / "startup.json").read_text())
    assert not any(c["torch_imported"] for c in startup["commands"].values()), startup
    threads = [said for run in workers["training"] for said in run["threads_said"]]
    assert all(said and "(auto: " in said[0] for said in threads), threads  # default settings

    replay = json.loads((out / "replay.json").read_text())  # its sampler studies, compared
    assert Path(replay["compare"]["html"]).exists(), replay["compare"]
    assert "--group 'llm-tpe (rules)=sampler-llm-tpe_rules-s*'" in replay["compare"]["command"]
    real = json.loads((out / "real.json").read_text())  # trained for real, warm start included
    assert real["runs"]["real-warm-s0"]["analyses"][0]["id"] == "warm_start-0000", real["runs"]
    assert all(t["epochs"] == 1 for r in real["runs"].values() for t in r["trials"])
    reports = json.loads((out / "reports.json").read_text())
    assert {c["name"] for c in reports["checks"]} >= {"report HTML size", "hpo compare of two"}

    md = (out / "RESULTS.md").read_text()
    for name in EXPECTED:
        assert f"## {name}" in md
    assert "Did not finish" not in md and "## Summary" in md
    # the smoke run left the committed results alone
    after = {p: p.stat().st_mtime for p in results.glob("*")} if results.exists() else {}
    assert after == before
