"""The one Markdown escaper for text hpo did not write (trial values, LLM replies, study files).

Used by the reports (:mod:`hpo.report.render`) and by the optuna-dashboard notes
(:mod:`hpo.sampler.notes`, :mod:`hpo.dashboard`). Analyst text is untrusted: after :func:`md`
it renders as exactly its text, on one line, and never as a link, an image, a tag or a heading.
Escaped: inline markup, link/image brackets, headings, table cells, strikethrough, ``<``, ``>``,
``&``, and what GFM autolinks need (``://``, ``x@y``, ``www.``); plain prose is left alone::

    >>> print(md("see [this](http://x.io) <img src=x> me@x.io"))
    see \\[this\\](http\\://x.io) \\<img src=x\\> me\\@x.io
    >>> md("diagnosis: underfitting, lr 0.003 (high)")
    'diagnosis: underfitting, lr 0.003 (high)'

``<``, ``>`` and ``&`` are backslash-escaped (CommonMark) by default; ``entities=True`` writes
them as HTML entities instead, for a renderer that passes raw HTML through and may not honour
``\\<`` (optuna-dashboard's notes). The same characters are escaped either way::

    >>> print(md("<b>a & b</b>", entities=True))
    &lt;b&gt;a &amp; b&lt;/b&gt;
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpo.record import Analysis

# markup characters, and the `://`, `x@y` and `www.` that GFM would turn into links
_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}|#<>!~&]|:(?=//)|(?<=\w)@(?=\w)|(?<=www)\.)")
_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}


class Seconds(float):
    """A duration in seconds: :func:`fmt` writes it as :func:`duration` text, and it sorts (in
    a report's tables) and compares as the number it is."""


def duration(seconds: float) -> str:
    """Seconds as a human duration, to the unit that matters.

        >>> duration(0.84), duration(252.4), duration(6700), duration(265874.7)
        ('0.84 s', '4 min 12 s', '1 h 51 min', '3 d 1 h 51 min')
    """
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h {minutes} min"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s"


def fmt(value: Any) -> str:
    """Short human text of a value: floats to 4 significant digits, :class:`Seconds` as a
    duration, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, Seconds):
        return duration(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def fmt_pair(old: Any, new: Any) -> tuple[str, str]:
    """:func:`fmt` of two values, with as many significant digits as it takes for two
    different numbers never to print equal.

        >>> fmt_pair(0.03, 0.029996), fmt_pair(0.001, 0.01)
        (('0.03', '0.029996'), ('0.001', '0.01'))
    """
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new))
    if numbers and old != new:
        for digits in range(4, 18):
            a, b = f"{old:.{digits}g}", f"{new:.{digits}g}"
            if a != b:
                return a, b
    return fmt(old), fmt(new)


def params_text(params: dict[str, Any]) -> str:
    """Parameters as readable ``name=value`` text, not JSON.

        >>> params_text({"lr": 0.003, "optimizer": "adamw"})
        'lr=0.003, optimizer=adamw'
    """
    return ", ".join(f"{k}={fmt(v)}" for k, v in params.items()) or "-"


def md(value: Any, *, entities: bool = False) -> str:
    """Markdown-safe text of any value: one line, every markup character escaped.

    CommonMark renders ``\\<`` as a literal ``<``, so no tag, entity, link or table cell
    boundary from the text survives, and no bare URL or address becomes a link (GFM autolinks).
    """
    text = " ".join(fmt(value).split())

    def sub(m: re.Match[str]) -> str:
        c = m.group(1)
        return _ENTITIES[c] if entities and c in _ENTITIES else "\\" + c

    return _MD_SPECIAL.sub(sub, text)


def _code(value: Any) -> str:
    """An identifier of ours (analysis id, a search-space name) as inline code."""
    return "`" + " ".join(str(value).split()).replace("`", "'") + "`"


PROPOSAL_COLUMNS = ("#", "params", "rationale", "expected effect", "risk", "confidence",
                    "status", "trial")


def analysis_markdown(a: Analysis, *, level: int = 3, esc: Callable[[Any], str] = md,
                      outcomes: dict[int, str] | None = None,
                      diffs: list[list[dict[str, Any]]] | None = None,
                      table: bool = False, details: bool = False) -> str:
    """One stored analysis (:class:`hpo.record.Analysis`) as Markdown: the one rendering that
    the report, the sampler's study note and ``hpo dashboard``'s note share.

    ``esc`` escapes every analyst-written text (``md``; ``md`` with entities for the dashboard;
    a plain one-liner for the terminal). ``level`` is the heading's; ``outcomes`` (trial number
    -> text) says how each proposal's trial went; ``diffs`` (one list per proposal, of
    ``{param, old, new, change}``) adds the changed parameters; ``table`` writes the proposals
    as one table with every column (the report) instead of a paragraph each (the notes);
    ``details`` adds each proposal's parameters, expected effect and risk to its paragraph.

        >>> from hpo.record import Analysis, Proposal
        >>> a = Analysis(id="every_n-0005", summary="lr <b>high</b>", analyst="rules",
        ...              trigger="", n_trials_seen=5,
        ...              proposals=[Proposal(params={"lr": 0.01}, rationale="x")])
        >>> print(analysis_markdown(a))
        ### Analysis `every_n-0005` (rules, 5 trials seen)
        <BLANKLINE>
        lr \\<b\\>high\\</b\\>
        <BLANKLINE>
        **Proposal 1** -> proposed (confidence 0.5): x
    """
    who = ", ".join(esc(x) for x in (a.analyst, a.model, a.trigger) if x)
    seen = f"{esc(a.n_trials_seen)} trials seen" if a.n_trials_seen is not None else ""
    about = ", ".join(x for x in (who, seen) if x)
    lines = ["#" * level + f" Analysis {_code(a.id)}" + (f" ({about})" if about else ""), ""]
    if a.fallback_reason:
        lines += [f"*LLM unavailable ({esc(a.fallback_reason)}); rule-based analysis.*", ""]
    if a.summary:
        lines += [esc(a.summary), ""]
    for d in a.diagnosis:
        lines.append(f"- {esc(d.state)}: {esc(d.summary)}")
        lines += [f"  - {esc(e.text())}" for e in d.evidence]
    if a.diagnosis:
        lines.append("")
    if table and a.proposals:
        lines.append("| " + " | ".join(PROPOSAL_COLUMNS) + " |")
        lines.append("|" + "---|" * len(PROPOSAL_COLUMNS))
        lines += ["| " + " | ".join(esc(c) for c in (
            i, params_text(p.params), p.rationale, p.expected_effect, p.risk, p.confidence,
            p.status, p.trial_number)) + " |" for i, p in enumerate(a.proposals, 1)]
        return "\n".join(lines)
    for i, p in enumerate(a.proposals):
        where = (f"trial {p.trial_number}" if p.trial_number is not None
                 else esc(p.status or "proposed"))
        outcome = esc((outcomes or {}).get(p.trial_number, "")) if p.trial_number is not None \
            else ""
        if p.status == "dropped":  # its run ended first: finished unrun
            outcome = esc("[dropped: not run, its run ended]")
        if lines[-1]:  # a blank line ends the bullets above: else this runs into the last one
            lines.append("")
        lines.append(f"**Proposal {i + 1}** -> {where}{' ' + outcome if outcome else ''} "
                     f"(confidence {esc(p.confidence)}): {esc(p.rationale)}")
        if details:
            lines.append(f"  - params: {esc(params_text(p.params))}")
            lines += [f"  - {label}: {esc(text)}" for label, text in
                      (("expected", p.expected_effect), ("risk", p.risk)) if text]
        for c in (diffs[i] if diffs and i < len(diffs) else []):
            old, new = fmt_pair(c["old"], c["new"])
            lines.append(f"  - {_code(c['param'])}: {esc(old)} -> {esc(new)} "
                         f"({esc(c['change'])})")
        lines += [f"  - corrected: {esc(c)}" for c in p.corrections]
    return "\n".join(lines).rstrip()
