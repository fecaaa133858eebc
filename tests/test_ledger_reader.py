"""One reader of the LLM ledger (issue 11, item 7): the sampler's budget and ``hpo report`` count
the same entries the same way. A paid call is a request sent to the endpoint; ``no_api_key``,
``budget`` and ``cache_hit`` are not; a failure is a paid call that gave no usable reply."""

from __future__ import annotations

import re

import optuna
import pytest
from conftest import run_hpo
from test_sampler_helpers import GOOD, FakeLLM, make_study, quadratic

from hpo.report.data import load
from hpo.sampler.ledger import Ledger, read_totals

optuna.logging.set_verbosity(optuna.logging.WARNING)


def llm(url):
    return {"base_url": url, "model": "fake-model", "api_key_env": "HPO_TEST_KEY",
            "timeout": 5.0, "max_retries": 0, "response_format": "json_schema"}


def report_items(markdown: str) -> dict[str, str]:
    """The ``- **label**: value`` lines of the report's "LLM ledger" section."""
    section = markdown.split("LLM ledger", 1)[1]
    return {k.replace("\\", ""): v.strip()
            for k, v in re.findall(r"^- \*\*(.+?)\*\*: (.*)$", section, re.MULTILINE)}


def test_sampler_report_and_reader_agree_after_no_api_key_then_ok(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    # round 1: the key is missing and the endpoint is remote: refused, nothing sent
    monkeypatch.delenv("HPO_TEST_KEY", raising=False)
    study = make_study(url, "led", every_n_trials=5, analyst="llm",
                       llm=llm("https://llm.example.invalid/v1"))
    study.optimize(quadratic, n_trials=5)
    # round 2: a real local endpoint answers
    server = FakeLLM([("ok", GOOD)])
    try:
        monkeypatch.setenv("HPO_TEST_KEY", "sk-test-ledger-0123456789")
        study = make_study(url, "led", every_n_trials=5, analyst="llm", llm=llm(server.url))
        study.optimize(quadratic, n_trials=5)
    finally:
        server.close()
    assert len(server.requests) == 1
    entries = Ledger(study).entries()
    assert [e["outcome"] for e in entries] == ["no_api_key", "ok"]
    ok = entries[1]

    usage = Ledger(study).usage()  # what the sampler holds against max_calls / max_tokens
    totals = read_totals(study)
    assert usage == {"calls": 1, "tokens": ok["prompt_tokens"] + ok["completion_tokens"],
                     "cost": 0.0}
    assert (totals.calls, totals.failures, totals.refused, totals.cache_hits) == (1, 0, 1, 0)
    assert load(study).ledger == totals  # the report reads the ledger with the sampler's reader

    out = tmp_path / "reports"
    proc = run_hpo("report", "led", "--storage", url, "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    items = report_items((out / "led.md").read_text())
    assert items["calls"] == "1" and items["failures"] == "0"
    assert items["refused (no request: budget spent or no API key)"] == "1"
    assert items["tokens"].startswith(f"{usage['tokens']} ")


def test_sent_abandoned_and_unknown_statuses_count_as_paid_calls(tmp_path):
    """Entries the run records while it waits (``sent``, then rewritten in place with the
    outcome; ``abandoned`` when it stopped waiting) and a status this version does not know
    are counted, never fatal; the report shows the same numbers."""
    from hpo.report import build_report

    study = optuna.create_study(study_name="st", storage=f"sqlite:///{tmp_path / 's.db'}")
    led = Ledger(study)
    pending = led.record(outcome="sent", model="m")
    done = led.record(outcome="sent", model="m")
    led.update(done, outcome="ok", prompt_tokens=100, completion_tokens=50, cost=0.01)
    led.record(outcome="abandoned", model="m", error="the run stopped waiting after 120 s")
    led.record(outcome="some_future_status", model="m", prompt_tokens="7")
    led.record(outcome="cache_hit", model="m")
    led.record(outcome="budget", model="m")
    led.record(outcome="no_api_key", model="m")
    study._storage.set_study_system_attr(study._study_id, "hpo:ledger:broken", "no entry")

    t = read_totals(study)
    assert [e["id"] for e in led.entries()].count(done) == 1  # one request, one entry
    assert (t.calls, t.failures, t.pending, t.cache_hits, t.refused) == (4, 2, 1, 1, 2)
    assert t.tokens == 157 and t.cost == pytest.approx(0.01)
    assert t.outcomes["sent"] == 1 and t.outcomes["ok"] == 1 and pending
    assert led.usage() == {"calls": 4, "tokens": 157, "cost": 0.01}
    rep = build_report(study, out_dir=tmp_path)
    s = rep.summary["ledger"]
    assert (s["calls"], s["failures"], s["refused"], s["cache_hits"]) == (4, 2, 2, 1)
    items = report_items(rep.markdown.read_text())
    assert items["calls"] == "4" and items["failures"] == "2" and items["cache hits"] == "1"
