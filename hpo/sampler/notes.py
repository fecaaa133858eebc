"""Analyses as optuna-dashboard notes: one study note listing them, one note per proposed trial.

Notes are Markdown stored by :func:`optuna_dashboard.save_note` in the same storage, so the
dashboard shows them next to the trials. The study note's part under
:data:`~hpo.record.SAMPLER_NOTE_HEADING` is rewritten after every analysis; a user's own text
above it is kept (and a section that ``hpo dashboard`` published for analyses this note did
not show yet is dropped: the new note shows them all).

Every text that comes from an analyst (summary, evidence, rationale, parameter names and
values it made up, an endpoint's error message) is escaped with :func:`md`: the dashboard
renders Markdown with raw HTML and GFM autolinks, so a reply must not turn into a link, an
image, a heading or a tag there::

    >>> print(md("see [this](http://x.io) <img src=x>"))
    see \\[this\\]\\(http\\://x\\.io\\) &lt;img src=x&gt;
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import optuna
from optuna_dashboard import get_note, save_note

from hpo.optuna_private import note_target
from hpo.record import DASHBOARD_NOTE_HEADING, SAMPLER_NOTE_HEADING

# backslash-escaped: inline markup, links/images, headings and list markers, table cells,
# strikethrough, and what GFM autolinks need (scheme ':', 'www.', '@'); < > & become entities
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~:@])")


def md(value: Any) -> str:
    """``value`` as Markdown that renders as exactly its text, on one line."""
    text = " ".join(str(value).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def plain(value: Any) -> str:
    """``value`` on one line, unescaped (for the terminal)."""
    return " ".join(str(value).split())


def _code(value: Any) -> str:
    """An identifier of ours (analysis id, a search-space name) as inline code."""
    return "`" + plain(value).replace("`", "'") + "`"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def analysis_markdown(a: dict[str, Any], outcomes: dict[int, str] | None = None,
                      esc: Callable[[Any], str] = md) -> str:
    """One analysis as Markdown; ``esc`` escapes every analyst-written text (``plain`` for the
    terminal: what ``hpo analyze`` prints, minus the markup)."""
    who = ", ".join(esc(x) for x in (a.get("analyst"), a.get("model"), a.get("trigger")) if x)
    lines = [f"### Analysis {_code(a['id'])} ({who}, {esc(a.get('n_trials_seen'))} trials seen)",
             ""]
    if a.get("fallback_reason"):
        lines += [f"*LLM unavailable ({esc(a['fallback_reason'])}); rule-based analysis.*", ""]
    if a.get("summary"):
        lines += [esc(a["summary"]), ""]
    for d in a.get("diagnosis", []):
        lines.append(f"- **{esc(d.get('state'))}**: {esc(d.get('summary', ''))}")
        for e in d.get("evidence", []):
            trial = f"trial {esc(e['trial'])} " if e.get("trial") is not None else ""
            value = f" = {esc(_fmt(e['value']))}" if e.get("value") is not None else ""
            lines.append(f"  - {trial}{esc(e.get('metric', ''))}{value} "
                         f"{esc(e.get('note', ''))}".rstrip())
    lines.append("")
    for i, p in enumerate(a.get("proposals", [])):
        where = (f"trial {p['trial_number']}" if p.get("trial_number") is not None
                 else esc(p.get("status")))
        outcome = esc((outcomes or {}).get(p.get("trial_number"), ""))
        if p.get("status") == "dropped":  # its run ended first: finished unrun
            outcome = esc("[dropped: not run, its run ended]")
        lines.append(f"**Proposal {i + 1}** -> {where} {outcome} "
                     f"(confidence {esc(_fmt(p.get('confidence', 0)))}): "
                     f"{esc(p.get('rationale', ''))}")
        for c in p.get("diff", []):
            lines.append(f"  - {_code(c['param'])}: {esc(_fmt(c['old']))} -> "
                         f"{esc(_fmt(c['new']))} ({esc(c['change'])})")
        for c in p.get("corrections", []):
            lines.append(f"  - corrected: {esc(c)}")
    return "\n".join(lines)


def write_study_note(study: optuna.Study, analyses: list[dict[str, Any]]) -> None:
    """The study note: every analysis, newest first, with how its proposals did."""
    outcomes = {t.number: (f"[{t.state.name.lower()}"
                           + (f" {_fmt(t.value)}]" if t.value is not None else "]"))
                for t in study.get_trials(deepcopy=False)}
    body = [SAMPLER_NOTE_HEADING, ""]
    body += [analysis_markdown(a, outcomes) + "\n" for a in reversed(analyses)]
    note = get_note(study) or ""
    user = note.split(SAMPLER_NOTE_HEADING)[0].split(DASHBOARD_NOTE_HEADING)[0].rstrip()
    # (a user's own text stays on top; a section hpo dashboard added is replaced by this one)
    save_note(study, (user + "\n\n" if user else "") + "\n".join(body))


def write_trial_note(study: optuna.Study, trial_number: int, a: dict[str, Any],
                     p: dict[str, Any]) -> None:
    """A proposed trial's note: where it came from, why, what is expected, the diff."""
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == trial_number)
    lines = [f"## Proposed by analysis {_code(a['id'])} ({md(a.get('analyst'))})", "",
             f"**Rationale**: {md(p.get('rationale', ''))}", "",
             f"**Expected effect**: {md(p.get('expected_effect', ''))}", "",
             f"**Risk**: {md(p.get('risk', ''))}", "",
             f"**Confidence**: {md(_fmt(p.get('confidence', 0)))}", "",
             "| param | best trial | this trial | change |", "|---|---|---|---|"]
    lines += [f"| {md(c['param'])} | {md(_fmt(c['old']))} | {md(_fmt(c['new']))} "
              f"| {md(c['change'])} |" for c in p.get("diff", [])]
    for alt in p.get("alternatives", []):
        lines.append(f"\n*Alternative*: {md(alt.get('params') or '')} {md(alt.get('note', ''))}")
    if p.get("corrections"):
        lines += ["", "**Corrections**:"] + [f"- {md(c)}" for c in p["corrections"]]
    # save_note wants a Trial; a waiting trial has none yet, so pass what it reads from one.
    save_note(note_target(study, trial), "\n".join(lines))


def format_analysis(a: dict[str, Any]) -> str:
    """An analysis as plain text for the terminal (``hpo analyze``)."""
    text = analysis_markdown(a, esc=plain).replace("**", "").replace("`", "").replace("### ", "")
    text = text.replace("*LLM unavailable", "LLM unavailable").replace("analysis.*", "analysis.")
    best = a.get("best_trial")
    head = (f"best trial {best}: value {_fmt(a.get('best_value'))} "
            f"{a.get('best_params')}" if best is not None else "no completed trial yet")
    return f"{text}\n\n{head}"
