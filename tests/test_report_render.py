"""Text from trials and LLMs in Markdown: no markup, and no bare URL becomes a link."""

from __future__ import annotations

from hpo.report.render import md


def test_md_escapes_markup_and_autolinks_but_keeps_plain_prose() -> None:
    out = md("**bold** <script>x</script> [a](http://e.vil) see https://e.vil me@e.vil www.e.vil")
    assert "\\*\\*bold\\*\\*" in out and "\\<script\\>" in out and "\\[a\\]" in out
    assert "https\\://e.vil" in out and "me\\@e.vil" in out and "www\\.e.vil" in out
    assert md("diagnosis: underfitting, lr 0.003 (high)") == \
        "diagnosis: underfitting, lr 0.003 (high)"


def test_one_escaper_for_reports_and_notes_same_characters() -> None:
    from hpo.report import render
    from hpo.sampler.notes import note_md

    assert render.md is md  # the report's md is hpo.markdown's
    text = "**b** <i>x</i> & [a](http://e.vil) me@e.vil www.e.vil # h | c ~~s~~ `c`"
    note = note_md(text)
    assert "<" not in note and "&lt;i&gt;" in note and "&amp;" in note
    # the same characters are escaped either way; only < > & are spelled differently
    assert note.replace("&lt;", "\\<").replace("&gt;", "\\>").replace("&amp;", "\\&") == md(text)


def test_one_analysis_renderer_with_parameters() -> None:
    from hpo.markdown import analysis_markdown
    from hpo.record import Analysis, Diagnosis, Evidence, Proposal
    from hpo.sampler.notes import note_md, note_record, recorded_ids

    a = Analysis(id="every_n-0005", summary="<b>hi</b>", analyst="llm", trigger="",
                 n_trials_seen=5,
                 diagnosis=[Diagnosis(state="underfitting", summary="still rising",
                                      evidence=[Evidence(trial=3, note="up")])],
                 proposals=[Proposal(params={"lr": 0.01}, rationale="r", expected_effect="e",
                                     risk="k", confidence=0.5, status="enqueued",
                                     trial_number=7)])
    note = analysis_markdown(a, esc=note_md, outcomes={7: "[complete 0.9]"},
                             diffs=[[{"param": "lr", "old": 0.1, "new": 0.01, "change": "x0.1"}]])
    assert note.startswith("### Analysis `every_n-0005` (llm, 5 trials seen)")
    assert "&lt;b&gt;hi&lt;/b&gt;" in note and "- underfitting: still rising" in note
    assert "  - trial 3: up" in note
    assert "**Proposal 1** -> trial 7 \\[complete 0.9\\] (confidence 0.5): r" in note
    assert "  - `lr`: 0.1 -> 0.01 (x0.1)" in note and "expected" not in note
    assert "  - expected: e" in analysis_markdown(a, details=True)
    table = analysis_markdown(a, level=4, table=True)
    # proposals numbered from 1 as in the note, params as name=value text (not JSON)
    assert table.startswith("#### Analysis") and "| 1 | lr=0.01 | r | e | k | 0.5 |" in table
    # the note's record of the analyses it shows, read back even once re-escaped
    record = note_record(["every_n-0005", "x-1"])
    assert recorded_ids("text\n" + record) == {"every_n-0005", "x-1"}
    assert recorded_ids(record.replace("every_n-0005", "every\\_n\\-0005")) >= {"every_n-0005"}
    assert recorded_ids("### Analysis `every_n-0005`") == set()  # text alone is no record


def test_markdown_keeps_the_note_under_a_figure() -> None:
    """The note the HTML prints under a figure (a caution, what the bands mean) is in the
    Markdown too; a figure not drawn says why instead."""
    import plotly.graph_objects as go

    from hpo.report.render import Page

    page = Page("notes")
    page.figure("Importances", go.Figure(), "caution: from only 3 complete trials")
    page.figure("Contour", None, "needs 2 numeric parameters")
    text = page.markdown()
    assert "*Figure: Importances (see the HTML report)*\n\ncaution: from only 3 complete trials" in text
    assert "*Figure: Contour (not shown: needs 2 numeric parameters)*" in text
