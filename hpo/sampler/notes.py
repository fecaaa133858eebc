"""Analyses as optuna-dashboard notes: one study note listing them, one note per proposed trial.

Notes are Markdown stored by :func:`optuna_dashboard.save_note` in the same storage, so the
dashboard shows them next to the trials. The study note's part under :data:`HEADING` is
rewritten after every analysis; a user's own text above it is kept.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import optuna
from optuna_dashboard import get_note, save_note

HEADING = "## LLM-informed sampler: analyses"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def analysis_markdown(a: dict[str, Any], outcomes: dict[int, str] | None = None) -> str:
    """One analysis as Markdown (also what ``hpo analyze`` prints, minus the markup)."""
    lines = [f"### Analysis `{a['id']}` ({a.get('analyst')}"
             + (f", {a['model']}" if a.get("model") else "") + f", {a.get('trigger')}, "
             f"{a.get('n_trials_seen')} trials seen)", ""]
    if a.get("fallback_reason"):
        lines += [f"*LLM unavailable ({a['fallback_reason']}); rule-based analysis.*", ""]
    if a.get("summary"):
        lines += [a["summary"], ""]
    for d in a.get("diagnosis", []):
        lines.append(f"- **{d.get('state')}**: {d.get('summary', '')}")
        for e in d.get("evidence", []):
            trial = f"trial {e['trial']} " if e.get("trial") is not None else ""
            value = f" = {_fmt(e['value'])}" if e.get("value") is not None else ""
            lines.append(f"  - {trial}{e.get('metric', '')}{value} {e.get('note', '')}".rstrip())
    lines.append("")
    for i, p in enumerate(a.get("proposals", [])):
        where = f"trial {p['trial_number']}" if p.get("trial_number") is not None else p.get("status")
        outcome = (outcomes or {}).get(p.get("trial_number"), "")
        lines.append(f"**Proposal {i + 1}** -> {where} {outcome} "
                     f"(confidence {_fmt(p.get('confidence', 0))}): {p.get('rationale', '')}")
        for c in p.get("diff", []):
            lines.append(f"  - `{c['param']}`: {_fmt(c['old'])} -> {_fmt(c['new'])} ({c['change']})")
        for c in p.get("corrections", []):
            lines.append(f"  - corrected: {c}")
    return "\n".join(lines)


def write_study_note(study: optuna.Study, analyses: list[dict[str, Any]]) -> None:
    """The study note: every analysis, newest first, with how its proposals did."""
    outcomes = {t.number: (f"[{t.state.name.lower()}"
                           + (f" {_fmt(t.value)}]" if t.value is not None else "]"))
                for t in study.get_trials(deepcopy=False)}
    body = [HEADING, ""]
    body += [analysis_markdown(a, outcomes) + "\n" for a in reversed(analyses)]
    user = (get_note(study) or "").split(HEADING)[0].rstrip()  # a user's own text stays on top
    save_note(study, (user + "\n\n" if user else "") + "\n".join(body))


def write_trial_note(study: optuna.Study, trial_number: int, a: dict[str, Any],
                     p: dict[str, Any]) -> None:
    """A proposed trial's note: where it came from, why, what is expected, the diff."""
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == trial_number)
    lines = [f"## Proposed by analysis `{a['id']}` ({a.get('analyst')})", "",
             f"**Rationale**: {p.get('rationale', '')}", "",
             f"**Expected effect**: {p.get('expected_effect', '')}", "",
             f"**Risk**: {p.get('risk', '')}", "",
             f"**Confidence**: {_fmt(p.get('confidence', 0))}", "",
             "| param | best trial | this trial | change |", "|---|---|---|---|"]
    lines += [f"| {c['param']} | {_fmt(c['old'])} | {_fmt(c['new'])} | {c['change']} |"
              for c in p.get("diff", [])]
    for alt in p.get("alternatives", []):
        lines.append(f"\n*Alternative*: {alt.get('params') or ''} {alt.get('note', '')}")
    if p.get("corrections"):
        lines += ["", "**Corrections**:"] + [f"- {c}" for c in p["corrections"]]
    # save_note wants a Trial; a waiting trial has none yet, so pass what it reads from one.
    save_note(SimpleNamespace(storage=study._storage, study=study, _trial_id=trial._trial_id),
              "\n".join(lines))


def format_analysis(a: dict[str, Any]) -> str:
    """An analysis as plain text for the terminal (``hpo analyze``)."""
    text = analysis_markdown(a).replace("**", "").replace("`", "").replace("### ", "")
    best = a.get("best_trial")
    head = (f"best trial {best}: value {_fmt(a.get('best_value'))} "
            f"{a.get('best_params')}" if best is not None else "no completed trial yet")
    return f"{text}\n\n{head}"
