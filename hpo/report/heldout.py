"""The report's "Data" section (the study's data facts) and its "Held-out test" section (the
test results ``hpo study`` and ``hpo evaluate`` stored): a table of the evaluated trials, the
per-class scores and a confusion-matrix heatmap with class names of the best evaluated one.

    >>> from hpo.record import DataFacts
    >>> page = Page("demo")
    >>> data_section(page, DataFacts(classes=["ok", "bad"], image_size=16, channels=3,
    ...                              mean=[0.5] * 3, std=[0.25] * 3,
    ...                              counts={"train": {"ok": 8, "bad": 8}}))
    >>> [b.kind for b in page.blocks]
    ['heading', 'items', 'table']
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from hpo.record import DataFacts, TestResult
from hpo.report.render import Page

SHOWN = 20  # classes and skipped files listed in full; more are counted


def _interval(value: float, ci: tuple[float, float] | None, spec: str = ".3f") -> str:
    return f"{value:{spec}}" + (f" [{ci[0]:{spec}}, {ci[1]:{spec}}]" if ci else "")


def data_section(page: Page, facts: DataFacts | None) -> None:
    """What the study trained on: classes, preprocessing, images per split and class, the
    fingerprint and every skipped file (a study from before hpo stored them: nothing)."""
    if facts is None:
        return
    page.heading("Data")
    names = ", ".join(facts.classes[:SHOWN]) + (
        f" and {len(facts.classes) - SHOWN} more" if len(facts.classes) > SHOWN else "")
    splits = list(facts.counts)
    totals = ", ".join(f"{s} {sum(facts.counts[s].values())}" for s in splits)
    page.items([
        ("source", facts.source or "?"),
        ("classes", f"{len(facts.classes)} (index order): {names}"),
        ("input", f"{facts.image_size} x {facts.image_size}, {facts.channels} channel(s)"),
        ("normalisation", "mean " + ", ".join(f"{m:.4f}" for m in facts.mean) + "; std "
         + ", ".join(f"{s:.4f}" for s in facts.std) + " (of pixels in [0, 1], train split)"),
        ("images", totals or "?"),
        ("fingerprint", facts.fingerprint or "-"),
        ("skipped files", len(facts.skipped)),
    ])
    if splits:
        page.table(["class", *splits],
                   [[c, *[facts.counts[s].get(c, 0) for s in splits]]
                    for c in facts.classes[:SHOWN]])
        if len(facts.classes) > SHOWN:
            page.text(f"and {len(facts.classes) - SHOWN} more classes (in the study's data facts)")
    if facts.skipped:
        page.table(["skipped file", "reason"],
                   [[f.path, f.reason] for f in facts.skipped[:SHOWN]])
        if len(facts.skipped) > SHOWN:
            page.text(f"and {len(facts.skipped) - SHOWN} more skipped files (in the study's "
                      "data facts)")


def shown_result(results: dict[int, TestResult], ranked: list[int]) -> TestResult | None:
    """The result to show in full: the best-ranked evaluated trial's."""
    return next((results[n] for n in ranked if n in results), None) or next(
        iter(results.values()), None)


def held_out_section(page: Page, results: dict[int, TestResult], ranked: list[int]
                 ) -> dict[str, Any]:
    """The held-out test results (trials in rank order ``ranked``); returns them for the
    report's summary."""
    if not results:
        return {}
    page.heading("Held-out test")
    first = next(iter(results.values()))
    page.text(f"Scores on {first.sizes.get('test', 0)} test images that no training, pruning, "
              f"sampler or analyst saw, from each trial's final checkpoint; intervals are 95 % "
              f"bootstrap intervals ({first.bootstrap} resamples).")
    order = [n for n in ranked if n in results] + [n for n in results if n not in ranked]
    multitask = any(r.mae is not None for r in results.values())
    headers = ["trial", "validation", "test accuracy [95% CI]", "test macro-F1 [95% CI]",
               *(["test MAE [95% CI]", "within ±k"] if multitask else []),
               "checkpoint epoch", "weights", "evaluated"]
    rows = []
    for n in order:
        r = results[n]
        extra = [_interval(r.mae, r.mae_ci, ".3g") if r.mae is not None else None,
                 f"{r.within_k:.3f} (k={r.k:g})" if r.within_k is not None else None]
        rows.append([n, r.val_value, _interval(r.accuracy, r.accuracy_ci),
                     _interval(r.macro_f1, r.macro_f1_ci), *(extra if multitask else []),
                     r.checkpoint_epoch, "EMA" if r.ema_used else "raw", r.evaluated_at])
    page.table(headers, rows, nowrap=tuple(headers[2:4]))
    best = shown_result(results, ranked)
    page.heading(f"Per class: trial {best.trial}", 3)
    page.table(["class", "precision", "recall", "F1", "test images"],
               [[c.name, c.precision, c.recall, c.f1, c.support] for c in best.per_class])
    page.figure(f"Confusion matrix on the test split: trial {best.trial}",
                confusion_figure(best), "rows: true class, columns: predicted class; "
                "each cell counts test images")
    return {n: r.model_dump(mode="json") for n, r in results.items()}


def confusion_figure(result: TestResult) -> go.Figure:
    """A heatmap of ``result.confusion`` with class names (true down, predicted across)."""
    z = result.confusion
    fig = go.Figure(go.Heatmap(
        z=z, x=result.classes, y=result.classes, colorscale="Blues", text=z,
        texttemplate="%{text}", hovertemplate="true %{y}<br>predicted %{x}<br>%{z} images"
                                              "<extra></extra>"))
    size = max(360, min(900, 60 + 36 * len(result.classes)))
    fig.update_layout(template="plotly_white", height=size, margin={"l": 100, "r": 20, "t": 30,
                                                                    "b": 90},
                      xaxis_title="predicted class", yaxis_title="true class")
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return fig
