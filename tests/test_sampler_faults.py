"""The LLM analyst against a misbehaving local HTTP endpoint: the study always finishes,
TPE and the rules analyst take over, every failure is in the ledger, the key is never stored."""

from __future__ import annotations

import json
import re

import optuna
import pytest
from test_sampler_helpers import GOOD, SPACE, FakeLLM, make_study, quadratic

from hpo.sampler import load_analyses
from hpo.sampler.history import from_study
from hpo.sampler.ledger import Ledger
from hpo.sampler.llm import LLMAnalyst, LLMFailure
from hpo.sampler.llm_request import _FORMAT_MEMO
from hpo.sampler.settings import LLMConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)
KEY = "sk-test-secret-0123456789"


@pytest.fixture
def fake(request):
    server = FakeLLM(request.param)
    yield server
    server.close()


def llm_cfg(url, **kw):
    # a timeout far above the fake server's answer time, however loaded the machine: only the
    # test of timeouts sets a short one (against a server that answers later still)
    return {"base_url": url, "model": "fake-model", "api_key_env": "HPO_TEST_KEY",
            "timeout": 60.0, "max_retries": 2, "backoff": 0.01, **kw}


def run(tmp_path, fake, monkeypatch, n_trials=10, **llm):
    monkeypatch.setenv("HPO_TEST_KEY", KEY)
    url = f"sqlite:///{tmp_path / 'f.db'}"
    study = make_study(url, every_n_trials=5, analyst="llm", llm=llm_cfg(fake.url, **llm))
    study.optimize(quadratic, n_trials=n_trials)
    return study, load_analyses(study), Ledger(study).entries()


def assert_key_never_stored(study, tmp_path):
    dump = json.dumps([study._storage.get_study_system_attrs(study._study_id),
                       [t.user_attrs for t in study.get_trials()]])
    assert KEY not in dump and KEY.encode() not in (tmp_path / "f.db").read_bytes()


@pytest.mark.parametrize("fake", [[("ok", GOOD)]], indirect=True)
def test_good_endpoint_enqueues_and_sends_key_only_in_header(tmp_path, fake, monkeypatch):
    study, analyses, ledger = run(tmp_path, fake, monkeypatch, price_per_1k_prompt=1.0,
                                  price_per_1k_completion=2.0)
    assert analyses[0]["analyst"] == "llm" and analyses[0]["model"] == "fake-model"
    assert fake.requests[0]["auth"] == f"Bearer {KEY}"
    assert fake.requests[0]["body"]["response_format"]["type"] == "json_schema"
    p = analyses[0]["proposals"][0]
    assert p["status"] == "enqueued" and study.trials[p["trial_number"]].params["x"] == 1.4
    assert ledger[0]["outcome"] == "ok" and ledger[0]["cost"] == pytest.approx(0.24)
    assert_key_never_stored(study, tmp_path)


@pytest.mark.parametrize("fake", [[("llamacpp", GOOD)]], indirect=True)
def test_llamacpp_style_500_on_json_schema_falls_back_to_json_object(tmp_path, fake, monkeypatch):
    _, analyses, ledger = run(tmp_path, fake, monkeypatch)
    assert analyses[0]["analyst"] == "llm"
    formats = [r["body"].get("response_format", {}).get("type") for r in fake.requests]
    assert formats[:2] == ["json_schema", "json_object"]
    assert "schema" in fake.requests[1]["body"]["response_format"]
    assert [e["outcome"] for e in ledger][:2] == ["http_500", "ok"]
    assert ledger[0]["format_rejected"] is True
    # the next round starts with the format that worked: no second 500
    assert formats[2:] == ["json_object"] and len(analyses) == 2


@pytest.mark.parametrize("fake", [[("status", 500), ("status", 503), ("ok", GOOD)]],
                         indirect=True)
def test_transient_5xx_is_retried_in_the_same_format_and_not_memoised(tmp_path, fake,
                                                                       monkeypatch):
    _, analyses, ledger = run(tmp_path, fake, monkeypatch)
    assert [a["analyst"] for a in analyses] == ["llm", "llm"]
    formats = [r["body"]["response_format"]["type"] for r in fake.requests]
    assert formats == ["json_schema"] * 4  # 500, 503, ok; and round two still json_schema
    assert [e["outcome"] for e in ledger] == ["http_500", "http_500", "ok", "ok"]
    assert not any(e.get("format_rejected") for e in ledger)


@pytest.mark.parametrize("fake", [[("hosted400", GOOD)]], indirect=True)
def test_4xx_about_the_format_moves_to_the_next_format(tmp_path, fake, monkeypatch):
    # an earlier round in this process settled on json_object (say the endpoint was swapped)
    monkeypatch.setitem(_FORMAT_MEMO, fake.url, "json_object")
    _, analyses, ledger = run(tmp_path, fake, monkeypatch, n_trials=5)
    formats = [r["body"]["response_format"]["type"] for r in fake.requests]
    assert formats == ["json_object", "json_schema"]
    assert [e["outcome"] for e in ledger] == ["http_4xx", "ok"]
    assert ledger[0]["format_rejected"] is True and analyses[0]["analyst"] == "llm"
    assert _FORMAT_MEMO[fake.url] == "json_schema"


def test_missing_api_key_is_named_in_the_ledger_and_rules_take_over(tmp_path, monkeypatch):
    for value in (None, "  "):
        if value is None:
            monkeypatch.delenv("HPO_TEST_KEY", raising=False)
        else:
            monkeypatch.setenv("HPO_TEST_KEY", value)
        url = f"sqlite:///{tmp_path / f'k{value is None}.db'}"
        study = make_study(url, every_n_trials=5, analyst="llm",
                           llm=llm_cfg("https://llm.example.invalid/v1"))
        study.optimize(quadratic, n_trials=5)
        (a,) = load_analyses(study)
        (entry,) = Ledger(study).entries()  # refused before any request: no connection error
        assert entry["outcome"] == "no_api_key" and "HPO_TEST_KEY" in entry["error"]
        assert a["analyst"] == "rules" and "HPO_TEST_KEY" in a["fallback_reason"]
        assert any(p["status"] == "enqueued" for p in a["proposals"])
        assert Ledger(study).usage()["calls"] == 0


@pytest.mark.parametrize("fake", [[("ok", GOOD)]], indirect=True)
def test_localhost_endpoint_needs_no_key(tmp_path, fake, monkeypatch):
    monkeypatch.delenv("HPO_TEST_KEY", raising=False)
    study = make_study(f"sqlite:///{tmp_path / 'f.db'}", every_n_trials=5, analyst="llm",
                       llm=llm_cfg(fake.url.replace("127.0.0.1", "localhost")))
    study.optimize(quadratic, n_trials=5)
    assert load_analyses(study)[0]["analyst"] == "llm"
    assert fake.requests[0]["auth"] == "Bearer unused"


@pytest.mark.parametrize("fake", [[("status", 429), ("status", 429), ("ok", GOOD)]],
                         indirect=True)
def test_429_is_retried_with_backoff(tmp_path, fake, monkeypatch):
    _, analyses, ledger = run(tmp_path, fake, monkeypatch, response_format="json_schema")
    assert analyses[0]["analyst"] == "llm"
    assert [e["outcome"] for e in ledger][:3] == ["http_429", "http_429", "ok"]


@pytest.mark.parametrize("fake,outcome", [
    ([("status", 500)], "http_500"),
    ([("slow", 3.0)], "timeout"),
    ([("ok", "I think you should lower the learning rate. {not json")], "invalid_json"),
    ([("ok", '{"summary": "nothing to propose", "proposals": []}')], "invalid_schema"),
], indirect=["fake"])
def test_failures_fall_back_to_rules_and_are_ledgered(tmp_path, fake, monkeypatch, outcome):
    study, analyses, ledger = run(tmp_path, fake, monkeypatch, n_trials=6, max_retries=1,
                                  timeout=1.0 if outcome == "timeout" else 60.0,
                                  response_format="json_schema")
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 6
    assert analyses[0]["analyst"] == "rules" and outcome in analyses[0]["fallback_reason"]
    assert any(p["status"] == "enqueued" for p in analyses[0]["proposals"])
    assert outcome in {e["outcome"] for e in ledger}
    assert set(analyses[0]["ledger"]) == {e["id"] for e in ledger}
    assert_key_never_stored(study, tmp_path)


BAD_PARAMS = json.dumps({"summary": "x", "diagnosis": {"state": "Over-fitting", "summary": "s"},
                         "proposals": [{"params": {"lr": 50, "x": "2", "n": 4.2, "opt": "SGD",
                                                   "warp_drive": 9},
                                        "rationale": "r", "confidence": "85%"}]})


@pytest.mark.parametrize("fake", [[("ok", "Here you go:\n```json\n" + BAD_PARAMS + "\n```\n")]],
                         indirect=True)
def test_markup_out_of_range_and_unknown_params_are_corrected(tmp_path, fake, monkeypatch):
    _, analyses, _ = run(tmp_path, fake, monkeypatch, n_trials=5)
    a = analyses[0]
    assert a["analyst"] == "llm" and a["diagnosis"][0]["state"] == "overfitting"
    p = a["proposals"][0]
    assert p["params"]["lr"] == 1.0 and p["params"]["n"] == 5 and p["params"]["opt"] == "sgd"
    assert "momentum" in p["params"] and "warp_drive" not in p["params"]
    assert p["confidence"] == pytest.approx(0.85)
    text = " ".join(p["corrections"])
    assert "warp_drive" in text and "clipped" in text and "momentum: missing" in text


@pytest.mark.parametrize("fake", [[("ok", GOOD)]], indirect=True)
def test_budget_and_cache_replay(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("HPO_TEST_KEY", KEY)
    study = make_study(f"sqlite:///{tmp_path / 'f.db'}", every_n_trials=100)
    study.optimize(quadratic, n_trials=4)
    history = from_study(study, {n: {"type": p.type, **p.model_dump(exclude_defaults=True)}
                                 for n, p in SPACE.params.items()})
    cfg = LLMConfig(**llm_cfg(fake.url, max_calls=1))
    analyst = LLMAnalyst(cfg, Ledger(study))
    analyst.analyse(history)
    analyst.analyse(history)  # same prompt: replayed from the storage, no request
    assert len(fake.requests) == 1
    history.trials = history.trials[:3]  # a new prompt, but the budget (1 call) is spent
    with pytest.raises(LLMFailure, match="budget"):
        analyst.analyse(history)
    assert [e["outcome"] for e in Ledger(study).entries()] == ["ok", "cache_hit", "budget"]
    assert len(fake.requests) == 1


EVIL = ("[click me](http://evil.example/x) ![pic](http://evil.example/p.png) "
        "<img src=x onerror=alert(1)> <script>alert(1)</script> <a href='http://evil.example'>a</a>"
        " **bold** _em_ `code` https://evil.example/auto www.evil.example me@evil.example"
        " &lt;b&gt;\n# Heading\n- item | cell | ~~gone~~\n\n> quote")
MARKUP = json.dumps({
    "summary": EVIL,
    "diagnosis": [{"state": "converging", "summary": EVIL,
                   "evidence": [{"trial": 0, "metric": "<b>m</b>", "value": "<i>v</i>",
                                 "note": EVIL}]}],
    "proposals": [{"params": {"lr": 0.01, "x": 1.4, "n": 5, "opt": "adamw",
                              "<img src=x onerror=alert(2)>": 1},
                   "rationale": EVIL, "expected_effect": EVIL, "risk": EVIL, "confidence": 0.5,
                   "alternatives": [{"params": {"x": "<script>alert(3)</script>"},
                                     "note": EVIL}]}]})
OUR_TAGS = {"h2", "h3", "p", "strong", "em", "code", "ul", "li", "table", "thead", "tbody", "tr",
            "th", "td"}


@pytest.mark.parametrize("fake", [[("ok", MARKUP)]], indirect=True)
def test_markup_from_the_llm_is_escaped_in_dashboard_notes(tmp_path, fake, monkeypatch):
    markdown = pytest.importorskip("markdown")
    from types import SimpleNamespace

    from optuna_dashboard import get_note

    study, analyses, _ = run(tmp_path, fake, monkeypatch, n_trials=5)
    (p,) = analyses[0]["proposals"]
    trial = study.trials[p["trial_number"]]
    notes = {"study": get_note(study),
             "trial": get_note(SimpleNamespace(storage=study._storage, study=study,
                                               _trial_id=trial._trial_id))}
    for where, note in notes.items():
        assert "click me" in note and "alert" in note, where  # the text is there, as text
        # nothing a CommonMark/GFM renderer (the dashboard's) turns into a tag, link or block
        assert "<" not in note, where
        bare = re.sub(r"\\.", "", note)  # what is left once the escaped characters are gone
        for markup in ("](", "![", "://", "www.", "@", "~~", "`code"):
            assert markup not in bare, (where, markup)
        # and a real Markdown renderer makes none of the LLM's tags
        html = markdown.markdown(note, extensions=["tables"])
        tags = set(re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", html))
        assert tags <= OUR_TAGS, (where, tags - OUR_TAGS)
        assert "**bold**" in html and "# Heading" in html and "&lt;script&gt;" in html, where
        assert "href" not in re.sub(r"&lt;a href", "", html), where
