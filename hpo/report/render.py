"""One page model, two renderings: self-contained HTML (plotly.js embedded once) and Markdown.

Every piece of text that may come from a trial or an LLM passes through :func:`esc` (HTML) or
:func:`md` (Markdown: the one escaper, :mod:`hpo.markdown`); figures are serialised as JSON with
``<``, ``>`` and ``&`` escaped, and the page's Content-Security-Policy only lets the page's own
scripts run (by their hashes), so no markup or script from the data gets through. Tables sit in
a horizontally scrolling box (a wide one never widens the page) and sort on a header click (one
inline script, :data:`SORT_SCRIPT`, its hash in the policy like every other script).

    >>> page = Page("demo")
    >>> page.table(["name"], [["<b>x</b>"]])
    >>> "<b>x</b>" in page.html(), "&lt;b&gt;x&lt;/b&gt;" in page.html()
    (False, True)
"""

from __future__ import annotations

import base64
import hashlib
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from hpo.markdown import fmt, md

__all__ = ["Page", "esc", "fmt", "md"]


def esc(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(fmt(value), quote=True)


@dataclass
class _Block:
    kind: str
    data: Any


@dataclass
class Page:
    """An ordered list of headings, paragraphs, key-value lists, tables and figures."""

    title: str
    blocks: list[_Block] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(_Block("heading", (level, text)))

    def text(self, text: str) -> None:
        self.blocks.append(_Block("text", text))

    def items(self, pairs: list[tuple[str, Any]]) -> None:
        self.blocks.append(_Block("items", pairs))

    def bullets(self, lines: list[Any]) -> None:
        self.blocks.append(_Block("bullets", lines))

    def table(self, headers: list[str], rows: list[list[Any]], nowrap: tuple[str, ...] = ()
              ) -> None:
        """A data table; the columns named in ``nowrap`` keep each cell on one line (numbers
        always do)."""
        self.blocks.append(_Block("table", (headers, rows, nowrap)))

    def link(self, before: str, label: str, href: str, html: bool = True) -> None:
        """A paragraph ``before`` followed by a link to a file next to the page (``href``);
        ``html=False``: in the Markdown only (a link to the HTML page itself)."""
        self.blocks.append(_Block("link" if html else "md_link", (before, label, href)))

    def section(self, inner: Page, markdown: str) -> None:
        """A part with its own Markdown rendering (an analysis: :func:`hpo.markdown.
        analysis_markdown`); the HTML shows ``inner``'s blocks (no figures)."""
        self.blocks.append(_Block("section", (inner, markdown)))

    def figure(self, title: str, fig: go.Figure | None, note: str = "") -> None:
        self.blocks.append(_Block("figure", (title, fig, note)))

    # -- HTML ------------------------------------------------------------------------------
    def html(self) -> str:
        scripts: list[str] = [get_plotlyjs(), SORT_SCRIPT]
        body: list[str] = [f"<h1>{esc(self.title)}</h1>"]
        n_fig = 0
        blocks = [x for b in self.blocks
                  for x in (b.data[0].blocks if b.kind == "section" else [b])]
        for b in blocks:
            if b.kind == "heading":
                level, text = b.data
                body.append(f"<h{level}>{esc(text)}</h{level}>")
            elif b.kind == "text":
                body.append(f"<p>{esc(b.data)}</p>")
            elif b.kind == "items":
                rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in b.data)
                body.append(f'<div class="scroll"><table class="kv">{rows}</table></div>')
            elif b.kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{esc(x)}</li>" for x in b.data) + "</ul>")
            elif b.kind == "link":
                before, label, href = b.data
                body.append(f'<p>{esc(before)} <a href="{esc(quote(href))}">{esc(label)}</a></p>')
            elif b.kind == "table":
                body.append(_table_html(*b.data))
            elif b.kind == "figure":
                title, fig, note = b.data
                body.append(f"<h3>{esc(title)}</h3>")
                if fig is None:
                    body.append(f'<p class="note">not shown: {esc(note)}</p>')
                    continue
                n_fig += 1
                div_id = f"fig{n_fig}"
                body.append(f'<div id="{div_id}" class="plot"></div>')
                if note:
                    body.append(f'<p class="note">{esc(note)}</p>')
                scripts.append(_plot_script(div_id, fig))
        hashes = " ".join(f"'sha256-{_sha256(s)}'" for s in scripts)
        csp = (f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
               "img-src data: blob:; font-src data:; connect-src 'none'")
        script_tags = "\n".join(f'<script type="text/javascript">{s}</script>' for s in scripts)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            f"<title>{esc(self.title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n" + script_tags + "\n</body></html>\n"
        )

    # -- Markdown --------------------------------------------------------------------------
    def markdown(self) -> str:
        out: list[str] = [f"# {md(self.title)}", ""]
        for b in self.blocks:
            if b.kind == "heading":
                level, text = b.data
                out += ["#" * level + " " + md(text), ""]
            elif b.kind == "text":
                out += [md(b.data), ""]
            elif b.kind == "section":
                out += [b.data[1], ""]
            elif b.kind == "items":
                out += [f"- **{md(k)}**: {md(v)}" for k, v in b.data] + [""]
            elif b.kind == "bullets":
                out += [f"- {md(x)}" for x in b.data] + [""]
            elif b.kind in ("link", "md_link"):
                before, label, href = b.data
                out += [f"{md(before)} [{md(label)}]({quote(href)})", ""]
            elif b.kind == "table":
                headers, rows, _ = b.data
                out.append("| " + " | ".join(md(h) for h in headers) + " |")
                out.append("|" + "---|" * len(headers))
                out += ["| " + " | ".join(md(c) for c in r) + " |" for r in rows]
                out.append("")
            elif b.kind == "figure":
                title, fig, note = b.data
                shown = "see the HTML report" if fig is not None else f"not shown: {note}"
                out += [f"*Figure: {md(title)} ({md(shown)})*", ""]
                if fig is not None and note:  # what the HTML prints under the figure
                    out += [md(note), ""]
        return "\n".join(out)

    def write(self, out_dir: Path, stem: str) -> tuple[Path, Path]:
        """Write ``stem.html`` and ``stem.md`` under ``out_dir``; return both paths."""
        out_dir.mkdir(parents=True, exist_ok=True)
        html_path, md_path = out_dir / f"{stem}.html", out_dir / f"{stem}.md"
        html_path.write_text(self.html(), encoding="utf-8")
        md_path.write_text(self.markdown(), encoding="utf-8")
        return html_path, md_path


def _table_html(headers: list[str], rows: list[list[Any]], nowrap: tuple[str, ...]) -> str:
    """A data table that sorts on a header click; a number's cell carries its value
    (``data-v``) so that it sorts as a number whatever its text (a :class:`Seconds` duration)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    keep = [h in nowrap for h in headers]
    trs = "".join("<tr>" + "".join(_cell(c, k) for c, k in zip(r, keep)) + "</tr>" for r in rows)
    return (f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{trs}</tbody></table></div>")


def _cell(value: Any, nowrap: bool) -> str:
    """A table cell; a number's carries its value to sort by (and stays on one line)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td data-v="{float(value)!r}">{esc(value)}</td>'
    return f'<td class="nw">{esc(value)}</td>' if nowrap else f"<td>{esc(value)}</td>"


# sorts a table.sortable by the clicked column: numbers by value, text naturally, "-" last
SORT_SCRIPT = """document.querySelectorAll("table.sortable").forEach(function (t) {
  t.querySelectorAll("thead th").forEach(function (th, i) {
    th.addEventListener("click", function () {
      var up = th.dataset.dir !== "asc", body = t.tBodies[0];
      t.querySelectorAll("thead th").forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = up ? "asc" : "desc";
      function key(r) {
        var c = r.cells[i];
        if (!c || c.textContent === "-") { return null; }
        return c.dataset.v !== undefined ? parseFloat(c.dataset.v) : c.textContent;
      }
      Array.from(body.rows).sort(function (x, y) {
        var a = key(x), b = key(y);
        if (a === null || b === null) { return (a === null) - (b === null); }
        var d = typeof a === "number" && typeof b === "number" ? a - b
          : String(a).localeCompare(String(b), undefined, {numeric: true});
        return up ? d : -d;
      }).forEach(function (r) { body.appendChild(r); });
    });
  });
});"""


def _plot_script(div_id: str, fig: go.Figure) -> str:
    """One figure's script: its JSON serialised once, by plotly (``<``, ``>``, ``&`` escaped)."""
    spec = _script_safe(pio.to_json(fig, validate=False))
    return (f'{{ const f = {spec};\nPlotly.newPlot("{div_id}", f.data || [], f.layout || {{}}, '
            '{"displaylogo": false, "responsive": true}); }')


def _script_safe(text: str) -> str:
    """JSON text with ``<``, ``>`` and ``&`` (only ever inside its strings) as escapes."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
.scroll{overflow-x:auto;max-width:100%;margin:.5em 0 1.2em}
table{border-collapse:collapse;font-size:.9em}
table.kv td{overflow-wrap:anywhere}
table.sortable thead th{cursor:pointer;white-space:nowrap} td[data-v],td.nw{white-space:nowrap}
th[data-dir=asc]::after{content:" \\25B2"} th[data-dir=desc]::after{content:" \\25BC"}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
thead th{background:#f3f3f3} table.kv th{background:#fafafa;font-weight:600}
.plot{width:100%;min-height:420px} .note{color:#666;font-size:.9em}
h2{border-bottom:1px solid #eee;padding-bottom:.2em;margin-top:1.6em}
"""
