"""Plotly figures of a study. Optuna's own ``optuna.visualization`` where it has the plot.

Each function returns ``(figure, note)``; the figure is None when the study cannot show it yet
(e.g. importances need two completed trials), and the note says why.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
import optuna.visualization as ov
import plotly.graph_objects as go
from optuna.trial import TrialState

from hpo.report.data import StudyData, curve_of

Fig = tuple[go.Figure | None, str]
_LAYOUT = {"template": "plotly_white", "height": 440, "margin": {"l": 60, "r": 20, "t": 50, "b": 50}}


def _styled(fig: go.Figure, title: str) -> go.Figure:
    fig.update_layout(title=title, **_LAYOUT)
    return fig


def _guard(build, title: str) -> Fig:
    try:
        return _styled(build(), title), ""
    except Exception as exc:  # Optuna raises on too few trials / params; show why, never crash  # noqa: BLE001
        return None, f"{type(exc).__name__}: {exc}"


def optimization_history(data: StudyData) -> Fig:
    if not data.completed:
        return None, "no completed trial yet"
    return _guard(lambda: ov.plot_optimization_history(data.study, target_name=data.metric),
                  "Optimization history")


def learning_curves(data: StudyData) -> Fig:
    """The objective per epoch of every trial; pruned trials faded, the best trial bold."""
    fig = go.Figure()
    best = data.best.number if data.best else None
    for t in sorted(data.trials, key=lambda t: t.number):
        ys = curve_of(t, data.metric)
        if not ys:
            continue
        pruned = t.state != TrialState.COMPLETE
        fig.add_trace(go.Scatter(
            x=list(range(1, len(ys) + 1)), y=ys, mode="lines+markers",
            name=f"trial {t.number}" + (" (best)" if t.number == best else ""),
            opacity=0.25 if pruned else 0.9,
            line={"width": 4 if t.number == best else 1.5, "dash": "dot" if pruned else "solid"},
            marker={"size": 4}, legendgroup=t.state.name,
            hovertemplate=f"trial {t.number} ({t.state.name.lower()})<br>epoch %{{x}}<br>"
                          f"{data.metric} %{{y:.4f}}<extra></extra>",
        ))
    if not fig.data:
        return None, "no trial reported a curve yet"
    fig.update_xaxes(title="epoch")
    fig.update_yaxes(title=data.metric)
    return _styled(fig, "Learning curves (pruned trials faded, best trial bold)"), ""


def importances(data: StudyData) -> tuple[go.Figure | None, str, dict[str, float]]:
    """Optuna's default importance evaluator; also returns the importances for tables."""
    if len(data.completed) < 2:
        return None, "needs at least 2 completed trials", {}
    try:
        values = optuna.importance.get_param_importances(data.study)
    except Exception as exc:  # noqa: BLE001
        return None, f"{type(exc).__name__}: {exc}", {}
    if not values:
        return None, "no parameter varied among completed trials", {}
    names = list(values)[::-1]
    fig = go.Figure(go.Bar(x=[values[n] for n in names], y=names, orientation="h",
                           text=[f"{values[n]:.2f}" for n in names], textposition="auto"))
    fig.update_xaxes(title="importance (Optuna's default evaluator, normalised)")
    return _styled(fig, "Hyperparameter importances"), "", dict(values)


def parallel_coordinates(data: StudyData, params: list[str] | None) -> Fig:
    if len(data.completed) < 2:
        return None, "needs at least 2 completed trials"
    return _guard(lambda: ov.plot_parallel_coordinate(data.study, params=params,
                                                      target_name=data.metric),
                  "Parallel coordinates")


def slices(data: StudyData, params: list[str]) -> Fig:
    if not data.completed or not params:
        return None, "no completed trial with parameters yet"
    fig, note = _guard(lambda: ov.plot_slice(data.study, params=params, target_name=data.metric),
                       "Slice of the top parameters")
    if fig is not None:
        fig.update_layout(height=380)
    return fig, note


def contour(data: StudyData, params: list[str]) -> Fig:
    if len(params) < 2:
        return None, "needs two numeric or categorical parameters"
    if len(data.completed) < 3:
        return None, "needs at least 3 completed trials"
    return _guard(lambda: ov.plot_contour(data.study, params=params[:2], target_name=data.metric),
                  f"Contour of {params[0]} and {params[1]}")


def lr_schedule(data: StudyData) -> Fig:
    """The best trial's learning rate: per epoch as trained, and the schedule it was given."""
    best = data.best
    if best is None:
        return None, "no completed trial yet"
    fig = go.Figure()
    stored = curve_of(best, "lr")
    if stored:
        fig.add_trace(go.Scatter(x=list(range(1, len(stored) + 1)), y=stored,
                                 mode="lines+markers", name="lr at end of each epoch (stored)"))
    planned = _planned_schedule(data, best.params)
    if planned:
        xs, ys = planned
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="planned schedule (per step)",
                                 line={"dash": "dash", "width": 1.5}))
    if not fig.data:
        return None, "the best trial stored no learning-rate curve"
    fig.update_xaxes(title="epoch")
    fig.update_yaxes(title="learning rate", type="log" if _spans_decades(fig) else "linear")
    return _styled(fig, f"Learning-rate schedule of the best trial ({best.number})"), ""


def _planned_schedule(data: StudyData, params: dict[str, Any],
                      steps_per_epoch: int = 20) -> tuple[list[float], list[float]] | None:
    if not data.config:
        return None
    try:  # the training recipe's own schedule function, so the plot is what training did
        import inspect

        from hpo.config import StudyConfig
        from hpo.training.schedule import lr_factor

        train = StudyConfig.model_validate(data.config).train_config(params)
        total = train.epochs * steps_per_epoch
        named = inspect.signature(lr_factor).parameters
        extra = {"total_steps": total} if "total_steps" in named else {}
        xs = [(s + 1) / steps_per_epoch for s in range(total)]
        ys = [train.lr * lr_factor(train, s, steps_per_epoch=steps_per_epoch, **extra)
              for s in range(total)]
        return xs, ys
    except Exception:  # a recipe this version cannot rebuild: the stored per-epoch lr remains  # noqa: BLE001
        return None


def _spans_decades(fig: go.Figure) -> bool:
    ys = [y for tr in fig.data for y in (tr.y or []) if y and y > 0]
    return bool(ys) and max(ys) / min(ys) > 50 and all(math.isfinite(y) for y in ys)
