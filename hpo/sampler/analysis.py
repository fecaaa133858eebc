"""The analysis: the structured form of a practitioner's tuning report (pydantic schema).

An analyst (rule-based or LLM) reads the trial history and writes an :class:`Analysis`: one or
more diagnoses of the training state, each with its evidence (numbers from trials and curves),
and proposals, each a full set of parameter values with rationale, expected effect, risk,
confidence and alternatives. The sampler then checks each proposal against the search space,
adds its diff from the best trial, and enqueues it as a WAITING trial.

Stored format (a colleague's report reads it; keep it stable, bump ``version`` on change)
------------------------------------------------------------------------------------------
Each analysis is one JSON object in the study's *system attrs* under the key
``hpo:analysis:<id>`` (read them with :func:`hpo.sampler.store.load_analyses`)::

    {"version": 1,
     "id": "every_n-0010",            # <trigger>-<finished trials seen>, sortable
     "trigger": "every_n",            # every_n | patience | warm_start | manual
     "created_at": "2025-01-01T12:00:00+00:00",
     "analyst": "llm",                # who wrote it: llm | rules
     "model": "gpt-4o-mini",          # null for rules
     "fallback_reason": null,         # why rules took over from the LLM (timeout, budget, ...)
     "n_trials_seen": 10, "best_trial": 7, "best_value": 0.93, "best_params": {...},
     "summary": "one paragraph",
     "diagnosis": [{"state": "overfitting",   # see STATES
                    "summary": "val loss rises after epoch 4 while train loss falls",
                    "evidence": [{"trial": 7, "metric": "val_loss", "value": 0.41,
                                  "note": "min 0.29 at epoch 4, 0.41 at epoch 8"}]}],
     "proposals": [{"params": {"lr": 0.003, ...},       # complete, checked set of values
                    "rationale": "...", "expected_effect": "...", "risk": "...",
                    "confidence": 0.6,                   # 0..1
                    "alternatives": [{"params": {"lr": 0.001}, "note": "more conservative"}],
                    "diff": [{"param": "lr", "old": 0.01, "new": 0.003, "change": "decrease"}],
                    "corrections": ["lr: 0.5 clipped to 0.03"],
                    "status": "enqueued",    # enqueued | duplicate | capped | dry_run
                    "trial_number": 12}],    # the enqueued trial (look up its outcome)
     "ledger": ["0003"]}                     # LLM calls made for it (hpo:ledger:<id>)

The enqueued trial carries user attrs ``hpo_source`` (``llm`` or ``rules``), ``hpo_analysis``
(the analysis id) and ``hpo_proposal`` (its index), so outcomes can be joined both ways.

    >>> p = Proposal(params={"lr": 0.01}, rationale="lower lr", confidence=1.7)
    >>> p.confidence
    1.0
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

VERSION = 1
STATES = ("underfitting", "overfitting", "diverging", "converging", "plateau", "range_edge",
          "unstable", "exploring", "unknown")
TRIGGERS = ("every_n", "patience", "warm_start", "manual")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Evidence(_Lenient):
    """A number taken from a trial or a curve, with what it shows."""

    trial: int | None = None
    metric: str = ""
    value: float | str | None = None
    note: str = ""


class Diagnosis(_Lenient):
    state: str = "unknown"
    summary: str = ""
    evidence: list[Evidence] = Field(default_factory=list)

    @field_validator("state", mode="before")
    @classmethod
    def _known_state(cls, v: Any) -> str:
        squash = "".join(c for c in str(v or "unknown").lower() if c.isalpha())
        return next((s for s in STATES if s.replace("_", "") == squash), "unknown")


class Alternative(_Lenient):
    params: dict[str, Any] = Field(default_factory=dict)
    note: str = ""


class Change(BaseModel):
    param: str
    old: Any = None
    new: Any = None
    change: Literal["increase", "decrease", "set", "same"] = "set"


class Proposal(_Lenient):
    params: dict[str, Any] = Field(default_factory=dict)
    rationale: str = ""
    expected_effect: str = ""
    risk: str = ""
    confidence: float = 0.5
    alternatives: list[Alternative] = Field(default_factory=list)
    # filled by the sampler after checking the proposal against the space:
    diff: list[Change] = Field(default_factory=list)
    corrections: list[str] = Field(default_factory=list)
    status: str = "proposed"
    trial_number: int | None = None

    @field_validator("confidence", mode="before")
    @classmethod
    def _unit_interval(cls, v: Any) -> float:
        try:
            x = float(str(v).rstrip("%")) / (100 if str(v).endswith("%") else 1)
        except (TypeError, ValueError):
            return 0.5
        if math.isnan(x):
            return 0.5
        return min(max(x, 0.0), 1.0)

    @field_validator("alternatives", mode="before")
    @classmethod
    def _alternatives(cls, v: Any) -> list[Any]:
        items = v if isinstance(v, list) else []
        return [a if isinstance(a, dict) else {"note": str(a)} for a in items]


class Reply(_Lenient):
    """What an analyst writes (the LLM's structured output); the sampler adds the rest."""

    summary: str = ""
    diagnosis: list[Diagnosis] = Field(default_factory=list)
    proposals: list[Proposal] = Field(default_factory=list)

    @field_validator("diagnosis", "proposals", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> list[Any]:
        if v is None:
            return []
        return v if isinstance(v, list) else [v]


class Analysis(Reply):
    """A stored analysis (see the module docstring for the JSON format)."""

    version: int = VERSION
    id: str
    trigger: str = "every_n"
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    analyst: str = "rules"
    model: str | None = None
    fallback_reason: str | None = None
    n_trials_seen: int = 0
    best_trial: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = Field(default_factory=dict)
    ledger: list[str] = Field(default_factory=list)


def diff_params(best: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Old -> new for every parameter that differs from the best trial's config."""
    changes = []
    for name in dict.fromkeys([*best, *new]):
        old, value = best.get(name), new.get(name)
        if old == value and type(old) is type(value):
            continue
        kind = "set"
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (old, value))
        if numeric:
            kind = "increase" if value > old else "decrease" if value < old else "same"
        changes.append(Change(param=name, old=old, new=value, change=kind))
    return changes


def reply_schema(space: dict[str, dict[str, Any]], max_proposals: int = 3,
                 text_chars: int = 400) -> dict[str, Any]:
    """JSON schema of a :class:`Reply` with ``params`` spelled out from the search space.

    Self-contained (no ``$ref``), so both OpenAI's ``json_schema`` and llama.cpp's grammar
    converter accept it; ``params`` lists the space's names, so a constrained model cannot
    invent one. Every text is at most ``text_chars`` long (``llm.reply_text_chars``): a
    grammar-constrained local model writes its reply within ``reply_max_tokens`` and fast.
    """
    props: dict[str, Any] = {}
    for name, p in space.items():
        if p["type"] == "categorical":
            props[name] = {"enum": list(p["choices"])}
        else:
            props[name] = {"type": "integer" if p["type"] == "int" else "number"}
    text = {"type": "string", "maxLength": text_chars}
    evidence = {"type": "object", "additionalProperties": False,
                "properties": {"trial": {"type": "integer"}, "metric": {"type": "string"},
                               "value": {"type": "number"}, "note": text},
                "required": ["trial", "metric", "value", "note"]}
    diagnosis = {"type": "object", "additionalProperties": False,
                 "properties": {"state": {"enum": list(STATES)}, "summary": text,
                                "evidence": {"type": "array", "items": evidence, "maxItems": 3}},
                 "required": ["state", "summary", "evidence"]}
    params = {"type": "object", "additionalProperties": False, "properties": props,
              "required": list(props)}
    alternative = {"type": "object", "additionalProperties": False,
                   "properties": {"params": params, "note": text}, "required": ["params", "note"]}
    proposal = {"type": "object", "additionalProperties": False,
                "properties": {"params": params, "rationale": text, "expected_effect": text,
                               "risk": text, "confidence": {"type": "number"},
                               "alternatives": {"type": "array", "items": alternative,
                                                "maxItems": 1}},
                "required": ["params", "rationale", "expected_effect", "risk", "confidence",
                             "alternatives"]}
    return {"type": "object", "additionalProperties": False,
            "properties": {"summary": text,
                           "diagnosis": {"type": "array", "items": diagnosis, "minItems": 1,
                                         "maxItems": 2},
                           "proposals": {"type": "array", "items": proposal, "minItems": 1,
                                         "maxItems": max_proposals}},
            "required": ["summary", "diagnosis", "proposals"]}
