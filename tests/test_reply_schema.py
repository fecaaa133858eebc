"""Schema errors in LLM replies (issue 11, items 4 and 4b), through a real SQLite study whose
LLM analyst talks to a local OpenAI-compatible HTTP server (tests' FakeLLM, not a mock):
a rejected reply names each field path, what was expected and what came; a reply with
malformed prose keeps its valid proposals and the ledger says what was dropped; alternatives
are stored as data, checked against the search space like proposals."""

from __future__ import annotations

import json

import optuna
import pytest
from test_sampler_helpers import FakeLLM, make_study, quadratic

from hpo.sampler import load_analyses
from hpo.sampler.analysis import (
    Alternative,
    Proposal,
    ReplySchemaError,
    describe_validation_error,
    parse_reply_leniently,
)
from hpo.sampler.ledger import Ledger

optuna.logging.set_verbosity(optuna.logging.WARNING)
KEY = "sk-test-schema-0123456789"
PARAMS = {"lr": 0.01, "x": 1.4, "n": 5, "opt": "adamw"}


@pytest.fixture
def fake(request):
    server = FakeLLM(request.param)
    yield server
    server.close()


def run(tmp_path, fake, monkeypatch, n_trials=5):
    monkeypatch.setenv("HPO_TEST_KEY", KEY)
    study = make_study(f"sqlite:///{tmp_path / 's.db'}", every_n_trials=5, analyst="llm",
                       llm={"base_url": fake.url, "model": "fake-model", "max_retries": 0,
                            "api_key_env": "HPO_TEST_KEY", "timeout": 5.0,
                            "response_format": "json_schema"})
    study.optimize(quadratic, n_trials=n_trials)
    return study, load_analyses(study), Ledger(study).entries()


NO_USABLE = json.dumps({"summary": "s", "diagnosis": [],
                        "proposals": [{"params": "lr high, x 1.5", "rationale": "r"},
                                      {"params": ["lr", 0.01], "rationale": "r"}]})


@pytest.mark.parametrize("fake", [[("ok", NO_USABLE)]], indirect=True)
def test_rejected_reply_names_each_field_what_was_expected_and_what_came(tmp_path, fake,
                                                                         monkeypatch):
    _, analyses, ledger = run(tmp_path, fake, monkeypatch)
    (entry,) = ledger
    assert entry["outcome"] == "invalid_schema"
    assert entry["error"] == (
        "no usable proposal: proposals.0.params: expected an object, got 'lr high, x 1.5'; "
        "proposals.1.params: expected an object, got [\"lr\", 0.01]")
    assert "validation error for Reply" not in entry["error"]
    assert analyses[0]["analyst"] == "rules"  # the rules analyst took over, as before
    assert "proposals.0.params: expected an object" in analyses[0]["fallback_reason"]


PROSE_BROKEN = json.dumps({
    "summary": {"text": "lr is fine"},
    "diagnosis": "the learning rate looks too high",
    "proposals": [
        {"params": {**PARAMS, "x": 1.3}, "rationale": ["centre", "on best"],
         "expected_effect": "lower value", "risk": "low", "confidence": 0.7,
         "alternatives": [{"params": "lr=0.03", "note": "text params"},
                          {"params": {"lr": 50, "n": 4}, "note": "bolder"}]},
        {"params": 7, "rationale": "unusable"}]})


@pytest.mark.parametrize("fake", [[("ok", PROSE_BROKEN)]], indirect=True)
def test_malformed_prose_keeps_valid_proposals_and_the_ledger_says_what_was_dropped(
        tmp_path, fake, monkeypatch):
    study, analyses, ledger = run(tmp_path, fake, monkeypatch)
    (entry,) = ledger
    assert entry["outcome"] == "ok"
    assert entry["dropped"] == [
        "summary: expected a string, got {\"text\": \"lr is fine\"} (dropped)",
        "diagnosis.0: expected an object, got 'the learning rate looks too high' (dropped)",
        "proposals.0.rationale: expected a string, got [\"centre\", \"on best\"] (dropped)",
        ("proposals.0.alternatives.0.params: expected an object, got 'lr=0.03' "
         "(dropped proposals.0.alternatives.0)"),
        "proposals.1.params: expected an object, got 7 (dropped proposals.1)"]
    (a,) = analyses
    assert a["analyst"] == "llm" and a["fallback_reason"] is None
    assert a["dropped"] == entry["dropped"] and a["diagnosis"] == []
    (p,) = a["proposals"]
    assert p["status"] == "enqueued" and p["rationale"] == "" and p["risk"] == "low"
    assert p["params"]["x"] == pytest.approx(1.3)
    assert study.trials[p["trial_number"]].user_attrs["hpo_analysis"] == a["id"]
    # 4b: the alternative is data, checked like the proposal: lr clipped, n snapped to its
    # step, the values it did not name taken from the proposal
    (alt,) = p["alternatives"]
    assert alt["note"] == "bolder"
    assert alt["params"] == {**PARAMS, "x": pytest.approx(1.3), "lr": 1.0, "n": 5}
    assert any(c.startswith("lr: 50 clipped to 1.0") for c in alt["corrections"])
    assert any(c.startswith("n: ") for c in alt["corrections"])
    assert not any("missing" in c for c in alt["corrections"])


def test_alternatives_from_any_source_stay_data():
    """The rules analyst hands Alternative objects, an LLM dicts: both stay params + note (they
    were stored as ``{"params": {}, "note": "params={'lr': 0.03} ..."}``)."""
    p = Proposal(params={"lr": 0.01}, alternatives=[Alternative(params={"lr": 0.03}, note="n"),
                                                    {"params": {"lr": 0.02}}, "more epochs"])
    assert [a.model_dump() for a in p.alternatives] == [
        {"params": {"lr": 0.03}, "note": "n", "corrections": []},
        {"params": {"lr": 0.02}, "note": "", "corrections": []},
        {"params": {}, "note": "more epochs", "corrections": []}]


def test_error_messages_are_bounded_and_count_what_did_not_fit():
    data = {"proposals": [{"params": f"p{i}" * 20} for i in range(30)]}
    with pytest.raises(ReplySchemaError) as info:
        parse_reply_leniently(data)
    text = str(info.value)
    assert len(text) <= 340 and text.endswith("more)") and "proposals.0.params" in text
    from pydantic import ValidationError

    from hpo.sampler.analysis import Reply
    with pytest.raises(ValidationError) as exc:
        Reply.model_validate({"diagnosis": [{"evidence": [{"value": {"a": 1}}]}],
                              "proposals": [{"params": {}, "confidence": 1}]})
    # a union field (number or text) is one error, not one per member
    assert describe_validation_error(exc.value) == (
        "diagnosis.0.evidence.0.value: expected a number or a string, got {\"a\": 1}")


def test_a_valid_reply_comes_back_whole():
    reply, dropped = parse_reply_leniently({"summary": "s", "proposals": [{"params": PARAMS}],
                                            "dropped": ["made up by the model"]})
    assert dropped == [] and reply.dropped == [] and reply.proposals[0].params == PARAMS
