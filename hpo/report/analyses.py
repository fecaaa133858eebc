"""Read the LLM sampler's analyses and LLM ledger back from a study, as plain data for reports.

Analyses are stored by ``hpo/sampler`` (format version 1, see :mod:`hpo.sampler.analysis`):
one JSON object per analysis in the study's system attrs under ``hpo:analysis:<id>``, and on
each trial that ran a proposal the user attrs ``hpo_source``, ``hpo_analysis`` and
``hpo_proposal``. The LLM ledger (``hpo:ledger:<key>``) is read and counted by the sampler's
own reader, :func:`hpo.sampler.ledger.read_totals`, so the report and the sampler's budget
agree on what a paid call and a failure are. Reading is lenient: a study with no analyses
(plain TPE) gives ``[]`` and a zero ledger, and a malformed entry is skipped, never fatal.

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

from hpo.markdown import fmt
from hpo.optuna_private import study_system_attrs
from hpo.record import ANALYSIS_ATTR, ANALYSIS_PREFIX, PROPOSAL_ATTR, SOURCE_ATTR
from hpo.sampler.ledger import LedgerTotals as Ledger
from hpo.sampler.ledger import read_totals

__all__ = ["Analysis", "Diagnosis", "Ledger", "Proposal", "proposal_trial_numbers",
           "read_analyses", "read_ledger"]


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
    dropped: list[str] = field(default_factory=list)  # malformed parts of the reply left out


def _system_attrs(study: optuna.Study) -> dict[str, Any]:
    return study_system_attrs(study)


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
    value = e.get("value")  # a number to 4 significant digits, as everywhere in reports
    value = fmt(value) if isinstance(value, float) else value
    what = " = ".join(_text(x) for x in (e.get("metric"), value) if x not in (None, ""))
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
        dropped=[_text(d) for d in raw.get("dropped") or [] if d]
        if isinstance(raw.get("dropped"), list) else [],
    )


def read_analyses(study: optuna.Study, trials: list[FrozenTrial] | None = None,
                  attrs: dict[str, Any] | None = None) -> list[Analysis]:
    """Every stored analysis, oldest first, each proposal linked to the trial that ran it
    (``trials``, ``attrs``: the study's trials and system attrs, when already read)."""
    found = []
    for key, raw in (_system_attrs(study) if attrs is None else attrs).items():
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


def read_ledger(study: optuna.Study, attrs: dict[str, Any] | None = None) -> Ledger:
    """Totals of the LLM call ledger (:func:`hpo.sampler.ledger.read_totals`); zeros when the
    study made no LLM call."""
    return read_totals(study, attrs)
