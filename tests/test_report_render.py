"""Text from trials and LLMs in Markdown: no markup, and no bare URL becomes a link."""

from __future__ import annotations

from hpo.report.render import md


def test_md_escapes_markup_and_autolinks_but_keeps_plain_prose() -> None:
    out = md("**bold** <script>x</script> [a](http://e.vil) see https://e.vil me@e.vil www.e.vil")
    assert "\\*\\*bold\\*\\*" in out and "\\<script\\>" in out and "\\[a\\]" in out
    assert "https\\://e.vil" in out and "me\\@e.vil" in out and "www\\.e.vil" in out
    assert md("diagnosis: underfitting, lr 0.003 (high)") == \
        "diagnosis: underfitting, lr 0.003 (high)"
