"""Read the LLM sampler's analyses and LLM ledger back from a study, as plain data for reports.

This is the one place that knows how ``hpo/sampler`` stores them (format version 1, see
:mod:`hpo.sampler.analysis`): one JSON object per analysis in the study's system attrs under
``hpo:analysis:<id>``, one ledger entry per LLM request under ``hpo:ledger:<key>``, and on each
trial that ran a proposal the user attrs ``hpo_source``, ``hpo_analysis`` and ``hpo_proposal``.
Reading is lenient: a study with no analyses (plain TPE) gives ``[]`` and a zero ledger, and a
malformed entry is skipped, never fatal.

    >>> import optuna
    >>> study = optuna.create_study()
    >>> read_analyses(study), read_ledger(study).calls
    ([], 0)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial

ANALYSIS_PREFIX = "hpo:analysis:"  # = hpo.sampler.store.ANALYSIS_PREFIX
LEDGER_PREFIX = "hpo:ledger:"  # = hpo.sampler.ledger.LEDGER_PREFIX
SOURCE_ATTR, ANALYSIS_ATTR, PROPOSAL_ATTR = "hpo_source", "hpo_analysis", "hpo_proposal"
OK_OUTCOMES = ("ok",)
NOT_REQUESTS = ("cache_hit", "budget")  # no request reached the endpoint


@dataclass
class Diagnosis:
    state: str
    summary: str
    evidence: list[str] = field(default_factory=list)


@dataclass
class Proposal:
    """One proposed configuration, and the trial that ran it (when it has run)."""

    params: dict[str, Any]
    rationale: str = ""
    expected_effect: str = ""
    risk: str = ""
    confidence: float | None = None
    status: str = ""
    trial_number: int | None = None
    corrections: list[str] = field(default_factory=list)


@dataclass
class Analysis:
    """One analyst report: what it saw, why, and what it proposed."""

    id: str
    summary: str = ""
    diagnoses: list[Diagnosis] = field(default_factory=list)
    proposals: list[Proposal] = field(default_factory=list)
    analyst: str = ""
    model: str = ""
    trigger: str = ""
    fallback_reason: str = ""
    n_trials_seen: int | None = None
    created_at: str = ""


@dataclass
class Ledger:
    """Totals over every LLM request the study made (all workers, all runs)."""

    calls: int = 0
    tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: int = 0
    cache_hits: int = 0
    refused: int = 0
    cost: float = 0.0


def _system_attrs(study: optuna.Study) -> dict[str, Any]:
    return study._storage.get_study_system_attrs(study._study_id)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _evidence(e: Any) -> str:
    if not isinstance(e, dict):
        return _text(e)
    where = f"trial {e['trial']}" if e.get("trial") is not None else ""
    what = " = ".join(_text(x) for x in (e.get("metric"), e.get("value")) if x not in (None, ""))
    head = ", ".join(x for x in (where, what) if x)
    note = _text(e.get("note"))
    return f"{head}: {note}" if head and note else head or note


def _diagnosis(d: Any) -> Diagnosis:
    if not isinstance(d, dict):
        return Diagnosis("unknown", _text(d))
    ev = d.get("evidence") or []
    return Diagnosis(_text(d.get("state") or "unknown"), _text(d.get("summary")),
                     [_evidence(e) for e in (ev if isinstance(ev, list) else [ev])])


def _proposal(p: Any) -> Proposal:
    if not isinstance(p, dict):
        return Proposal(params={}, rationale=_text(p))
    params = p.get("params")
    number = p.get("trial_number")
    return Proposal(
        params=dict(params) if isinstance(params, dict) else {},
        rationale=_text(p.get("rationale")), expected_effect=_text(p.get("expected_effect")),
        risk=_text(p.get("risk")), confidence=_float(p.get("confidence")),
        status=_text(p.get("status")),
        trial_number=number if isinstance(number, int) and not isinstance(number, bool) else None,
        corrections=[_text(c) for c in p.get("corrections") or [] if c],
    )


def _analysis(raw: dict[str, Any], key: str) -> Analysis:
    diag = raw.get("diagnosis") or []
    seen = raw.get("n_trials_seen")
    return Analysis(
        id=_text(raw.get("id") or key), summary=_text(raw.get("summary")),
        diagnoses=[_diagnosis(d) for d in (diag if isinstance(diag, list) else [diag])],
        proposals=[_proposal(p) for p in raw.get("proposals") or []],
        analyst=_text(raw.get("analyst")), model=_text(raw.get("model")),
        trigger=_text(raw.get("trigger")), fallback_reason=_text(raw.get("fallback_reason")),
        n_trials_seen=seen if isinstance(seen, int) else None,
        created_at=_text(raw.get("created_at")),
    )


def read_analyses(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> list[Analysis]:
    """Every stored analysis, oldest first, each proposal linked to the trial that ran it."""
    found = []
    for key, raw in _system_attrs(study).items():
        if key.startswith(ANALYSIS_PREFIX) and isinstance(raw, dict):
            found.append(_analysis(raw, key[len(ANALYSIS_PREFIX):]))
    found.sort(key=lambda a: (a.created_at, a.id))
    if found:
        _link_trials(found, trials if trials is not None else study.get_trials(deepcopy=False))
    return found


def proposal_trial_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Trials that ran an analyst's proposal (the rest were sampled by TPE or random)."""
    return {t.number for t in trials
            if t.user_attrs.get(SOURCE_ATTR) in ("llm", "rules") or ANALYSIS_ATTR in t.user_attrs}


def _link_trials(analyses: list[Analysis], trials: list[FrozenTrial]) -> None:
    """Fill ``trial_number`` for proposals stored without it, from the trials' user attrs."""
    by_key = {(t.user_attrs.get(ANALYSIS_ATTR), t.user_attrs.get(PROPOSAL_ATTR)): t.number
              for t in trials if ANALYSIS_ATTR in t.user_attrs}
    for a in analyses:
        for i, p in enumerate(a.proposals):
            if p.trial_number is None:
                p.trial_number = by_key.get((a.id, i))


def read_ledger(study: optuna.Study) -> Ledger:
    """Totals of the LLM call ledger; zeros when the study made no LLM call."""
    led = Ledger()
    for key, e in _system_attrs(study).items():
        if not key.startswith(LEDGER_PREFIX) or not isinstance(e, dict):
            continue
        outcome = e.get("outcome")
        if outcome == "cache_hit":
            led.cache_hits += 1
            continue
        if outcome in NOT_REQUESTS:
            led.refused += 1
            continue
        led.calls += 1
        led.failures += int(outcome not in OK_OUTCOMES)
        pt, ct = int(e.get("prompt_tokens") or 0), int(e.get("completion_tokens") or 0)
        led.prompt_tokens += pt
        led.completion_tokens += ct
        led.tokens += pt + ct
        led.cost += _float(e.get("cost")) or 0.0
    led.cost = round(led.cost, 6)
    return led
