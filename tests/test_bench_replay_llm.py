"""The replay benchmark's LLM analyst row (``--samplers ...,llm-tpe-llm``) on the tiny table.

The endpoint is a real local port nothing listens on (``HPO_LLM_BASE_URL``), so every LLM
request fails with ``connection`` and the rules analyst takes over: the row must count the
analyses, the requests the ledger recorded and each fallback with its reason, and the run must
write ``replay-llm.json``, never ``replay.json``. About 15 s.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_llm_row_counts_fallbacks_and_writes_its_own_json(tmp_path):
    env = {**os.environ, "BENCH_OUT": str(tmp_path), "HPO_LLM_MODEL": "smollm2",
           "HPO_LLM_BASE_URL": f"http://127.0.0.1:{closed_port()}/v1"}
    env.pop("HPO_LLM_API_KEY_ENV", None)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_replay", "--quick",
                           "--samplers", "tpe,llm-tpe-llm", "--no-pruners"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (tmp_path / "replay.json").exists()
    doc = json.loads((tmp_path / "replay-llm.json").read_text())
    assert doc["llm_endpoint"] == "HPO_LLM_BASE_URL"
    sampler = doc["settings"]["samplers"]["llm-tpe (llm)"]
    assert sampler["analyst"] == "llm" and sampler["background"] is False
    assert sampler["every_n_trials"] == 5 and sampler["llm"]["model"] == "smollm2"

    usage = doc["summary"]["llm-tpe (llm)"]["analyst"]
    total = usage["total"]
    assert total["analyses"] == 4  # 2 seeds x (after trial 5, after trial 10)
    assert total["llm_replies"] == 0 and total["fallbacks"] == 4
    assert total["fallback_reasons"] == {"connection": 4}
    assert total["requests"] == 8  # each analysis: the request and its one retry
    assert total["prompt_tokens"] == total["completion_tokens"] == 0
    assert [u["outcomes"] for u in usage["per_seed"]] == [{"connection": 4}] * 2
    assert usage["per_study"]["wall_s"]["n"] == 2
    rules = doc["summary"]["llm-tpe (rules)"]["analyst"]["total"]
    assert rules["analyses"] == 4 and rules["requests"] == 0 and rules["fallbacks"] == 0
    assert "valid LLM replies / fallbacks to rules" in doc["table_md"]
    assert "| llm-tpe (llm) |" in doc["table_md"] and "0 / 4" in doc["table_md"]
