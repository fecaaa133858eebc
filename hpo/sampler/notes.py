"""Analyses as optuna-dashboard notes: one study note listing them, one note per proposed trial.

Notes are Markdown stored by :func:`optuna_dashboard.save_note` in the same storage, so the
dashboard shows them next to the trials. The study note's part under
:data:`~hpo.record.SAMPLER_NOTE_HEADING` is rewritten after every analysis; a user's own text
above it is kept (and a section that ``hpo dashboard`` published for analyses this note did
not show yet is dropped: the new note shows them all).

Every text that comes from an analyst (summary, evidence, rationale, parameter names and
values it made up, an endpoint's error message) is escaped with :func:`hpo.markdown.md`, the
one escaper hpo has, writing ``<``, ``>`` and ``&`` as entities (:func:`note_md`): the dashboard
renders Markdown with raw HTML and GFM autolinks, so a reply must not turn into a link, an
image, a heading or a tag there::

    >>> print(note_md("see [this](http://x.io) <img src=x>"))
    see \\[this\\](http\\://x.io) &lt;img src=x&gt;

An analysis is rendered by :func:`hpo.markdown.analysis_markdown` (the report and ``hpo
dashboard`` use it too). The study note ends with a record of the analyses it shows
(:data:`NOTE_RECORD`, a Markdown link reference definition, which renders as nothing), so
``hpo dashboard`` knows them from the note itself.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import optuna
from optuna_dashboard import get_note, save_note

from hpo.markdown import analysis_markdown, fmt, md
from hpo.optuna_private import note_target
from hpo.record import DASHBOARD_NOTE_HEADING, SAMPLER_NOTE_HEADING, Analysis

# the last line of the sampler's section: ``[hpo-analyses]: # (id id ...)``
NOTE_RECORD = "[hpo-analyses]: #"
_RECORD = re.compile(r"^\[hpo-analyses\]: # \((.*)\)[ \t]*$", re.MULTILINE)
# an alternative stored as Python text: ``params={'lr': 0.03} the rest of the note``
_LEGACY_ALTERNATIVE = re.compile(r"^params=(\{[^{}]*\})\s*(.*)$", re.DOTALL)


def note_md(value: Any) -> str:
    """``value`` as note Markdown (:func:`hpo.markdown.md`, with ``<``, ``>``, ``&`` as entities)."""
    return md(value, entities=True)


def plain(value: Any) -> str:
    """``value`` on one line, unescaped (for the terminal)."""
    return " ".join(fmt(value).split())


def _code(value: Any) -> str:
    """An identifier of ours (analysis id, a search-space name) as inline code."""
    return "`" + plain(value).replace("`", "'") + "`"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def as_analysis(raw: dict[str, Any]) -> Analysis:
    """A stored analysis (the sampler's dict) as its :class:`hpo.record.Analysis`."""
    return Analysis.model_validate({**raw, "id": str(raw.get("id", ""))})


def _diffs(raw: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [list(p.get("diff") or []) if isinstance(p, dict) else []
            for p in raw.get("proposals") or []]


def note_record(ids: list[str]) -> str:
    """The line that records which analyses a note shows (renders as nothing)."""
    return f"{NOTE_RECORD} ({' '.join(plain(i).replace(' ', '_') for i in ids)})"


def recorded_ids(section: str) -> set[str]:
    """The analysis ids a note section's :func:`note_record` lists (none without one). A title
    is Markdown, so its backslash escapes are read as the characters they escape."""
    return {re.sub(r"\\(.)", r"\1", i) for m in _RECORD.finditer(section)
            for i in m.group(1).split()}


def write_study_note(study: optuna.Study, analyses: list[dict[str, Any]]) -> None:
    """The study note: every analysis, newest first, with how its proposals did."""
    outcomes = {t.number: (f"[{t.state.name.lower()}"
                           + (f" {_fmt(t.value)}]" if t.value is not None else "]"))
                for t in study.get_trials(deepcopy=False)}
    body = [SAMPLER_NOTE_HEADING, ""]
    body += [analysis_markdown(as_analysis(a), esc=note_md, outcomes=outcomes, diffs=_diffs(a))
             + "\n" for a in reversed(analyses)]
    body.append(note_record([str(a.get("id", "")) for a in analyses]))
    note = get_note(study) or ""
    user = note.split(SAMPLER_NOTE_HEADING)[0].split(DASHBOARD_NOTE_HEADING)[0].rstrip()
    # (a user's own text stays on top; a section hpo dashboard added is replaced by this one)
    save_note(study, (user + "\n\n" if user else "") + "\n".join(body))


def alternative_md(alt: dict[str, Any]) -> str:
    """An analyst's alternative as a note bullet: its values (``name`` = value), then its note.
    One stored as text (``{"params": {}, "note": "params={'lr': 0.03} faster"}``, as older
    studies have them) shows the values it names::

        >>> print(alternative_md({"params": {}, "note": "params={'lr': 0.03} faster"}))
        - `lr` = 0.03: faster
    """
    params, note = alt.get("params") or {}, str(alt.get("note") or "")
    legacy = _LEGACY_ALTERNATIVE.match(note)
    if not params and legacy:
        try:
            params, note = ast.literal_eval(legacy.group(1)), legacy.group(2)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass  # not a literal after all: shown as the text it is
    values = (", ".join(f"{_code(k)} = {note_md(_fmt(v))}" for k, v in params.items())
              if isinstance(params, dict) else note_md(params))
    return "- " + ": ".join(x for x in (values, note_md(note)) if x)


def write_trial_note(study: optuna.Study, trial_number: int, a: dict[str, Any],
                     p: dict[str, Any]) -> None:
    """A proposed trial's note: where it came from, why, what is expected, the diff."""
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == trial_number)
    lines = [f"## Proposed by analysis {_code(a['id'])} ({note_md(a.get('analyst'))})", "",
             f"**Rationale**: {note_md(p.get('rationale', ''))}", "",
             f"**Expected effect**: {note_md(p.get('expected_effect', ''))}", "",
             f"**Risk**: {note_md(p.get('risk', ''))}", "",
             f"**Confidence**: {note_md(_fmt(p.get('confidence', 0)))}", "",
             "| param | best trial | this trial | change |", "|---|---|---|---|"]
    lines += [f"| {note_md(c['param'])} | {note_md(_fmt(c['old']))} | {note_md(_fmt(c['new']))} "
              f"| {note_md(c['change'])} |" for c in p.get("diff", [])]
    alternatives = [alternative_md(alt) for alt in p.get("alternatives", [])
                    if isinstance(alt, dict)]
    if alternatives:
        lines += ["", "**Alternatives**:"] + alternatives
    if p.get("corrections"):
        lines += ["", "**Corrections**:"] + [f"- {note_md(c)}" for c in p["corrections"]]
    # save_note wants a Trial; a waiting trial has none yet, so pass what it reads from one.
    save_note(note_target(study, trial), "\n".join(lines))


def format_analysis(a: dict[str, Any]) -> str:
    """An analysis as plain text for the terminal (``hpo analyze``)."""
    text = analysis_markdown(as_analysis(a), esc=plain, diffs=_diffs(a))
    text = text.replace("**", "").replace("`", "").replace("### ", "")
    text = text.replace("*LLM unavailable", "LLM unavailable").replace("analysis.*", "analysis.")
    best = a.get("best_trial")
    head = (f"best trial {best}: value {_fmt(a.get('best_value'))} "
            f"{a.get('best_params')}" if best is not None else "no completed trial yet")
    return f"{text}\n\n{head}"
