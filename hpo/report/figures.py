"""Plotly figures of a study. Optuna's own ``optuna.visualization`` where it has the plot.

Each function returns ``(figure, note)``; the figure is None when the study cannot show it yet
(e.g. importances need two completed trials), and the note says why.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import optuna
import optuna.visualization as ov
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from hpo.record import (
    CURVE_ATTR,
    EFFECTIVE_BATCH_SIZE_ATTR,
    N_TRAIN_ATTR,
    OPTIMIZER_STEPS_ATTR,
    TRAIN_SIZE_ATTR,
)
from hpo.report.data import StudyData, curve_of

log = logging.getLogger(__name__)
Fig = tuple[go.Figure | None, str]
_LAYOUT = {"template": "plotly_white", "height": 440, "margin": {"l": 60, "r": 20, "t": 50, "b": 50}}


def _styled(fig: go.Figure, title: str) -> go.Figure:
    fig.update_layout(title=title, **_LAYOUT)
    return fig


def _guard(build, title: str) -> Fig:
    try:
        return _styled(build(), title), ""
    except Exception as exc:  # Optuna raises on too few trials / params; show why, never crash  # noqa: BLE001
        log.warning("figure %r not drawn: %s: %s", title, type(exc).__name__, exc)
        return None, f"{type(exc).__name__}: {exc}"


def optimization_history(data: StudyData) -> Fig:
    if not data.completed:
        return None, "no completed trial yet"
    return _guard(lambda: ov.plot_optimization_history(data.study, target_name=data.metric),
                  "Optimization history")


# how each state's curve is drawn: pruned trials faded, failed and running ones marked apart
_CURVE_STYLE = {
    TrialState.COMPLETE: {"opacity": 0.9, "dash": "solid", "symbol": "circle", "label": ""},
    TrialState.PRUNED: {"opacity": 0.25, "dash": "dot", "symbol": "circle", "label": "pruned"},
    TrialState.FAIL: {"opacity": 0.7, "dash": "dashdot", "symbol": "x", "label": "failed"},
    TrialState.RUNNING: {"opacity": 0.7, "dash": "dash", "symbol": "triangle-right",
                         "label": "running"},
}


def learning_curves(data: StudyData, key: str | None = None) -> Fig:
    """The objective (or the stored curve ``key``, e.g. ``val_mae``) per epoch of every trial:
    complete solid, pruned faded and dotted, failed dash-dot with crosses, running dashed; the
    best trial bold. WAITING trials (a queued retry carries its dead trial's curve) are not
    drawn: their curve is the one they retry."""
    fig = go.Figure()
    best = data.best.number if data.best else None
    metric = key or data.metric
    for t in sorted(data.trials, key=lambda t: t.number):
        style = _CURVE_STYLE.get(t.state)
        ys = curve_of(t, data.metric) if style and key is None else []
        if style and key is not None:  # a curve some trials lack is not the objective's
            curve = t.user_attrs.get(CURVE_ATTR)
            stored = curve.get(key) if isinstance(curve, dict) else None
            ys = [float(v) for v in stored] if isinstance(stored, list) else []
        if not ys:
            continue
        label = f" ({style['label']})" if style["label"] else ""
        fig.add_trace(go.Scatter(
            x=list(range(1, len(ys) + 1)), y=ys, mode="lines+markers",
            name=f"trial {t.number}" + (" (best)" if t.number == best else label),
            opacity=style["opacity"],
            line={"width": 4 if t.number == best else 1.5, "dash": style["dash"]},
            marker={"size": 7 if t.state == TrialState.FAIL else 4, "symbol": style["symbol"]},
            legendgroup=t.state.name,
            hovertemplate=f"trial {t.number} ({t.state.name.lower()})<br>epoch %{{x}}<br>"
                          f"{metric} %{{y:.4f}}<extra></extra>",
        ))
    if not fig.data:
        return None, "no trial reported a curve yet"
    fig.update_xaxes(title="epoch")
    fig.update_yaxes(title=metric)
    return _styled(fig, "Learning curves (pruned faded and dotted, failed dash-dot, running "
                        "dashed, best bold)"), ""


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
    note = ""
    try:
        planned = planned_schedule(data, best)
    except Exception as exc:  # noqa: BLE001 - e.g. a config an older hpo stored: say so
        log.warning("planned lr schedule of trial %d of %s: %s", best.number, data.name, exc)
        planned, note = None, f"planned schedule not drawn ({type(exc).__name__}: {exc})"
    if planned is not None:
        fig.add_trace(go.Scatter(x=planned.xs, y=planned.ys, mode="lines",
                                 name=f"planned schedule (per step; {planned.basis})",
                                 line={"dash": "dash", "width": 1.5}))
    if not fig.data:
        return None, note or "the best trial stored no learning-rate curve"
    fig.update_xaxes(title="epoch")
    fig.update_yaxes(title="learning rate", type="log" if _spans_decades(fig) else "linear")
    title = f"Learning-rate schedule of the best trial ({best.number})"
    if planned is not None and planned.approximate:
        title += ", planned schedule approximate"
        note = (f"the planned schedule is approximate: the trial stored neither its optimizer "
                f"steps nor the dataset size, so {APPROX_STEPS_PER_EPOCH} steps per epoch are "
                "assumed (warmup and step-based shapes may be off; the stored per-epoch lr is "
                "exact)")
    return _styled(fig, title), note


# steps per epoch assumed when a trial stored neither its step count nor the dataset size
APPROX_STEPS_PER_EPOCH = 20


@dataclass
class Planned:
    """The per-step learning rate a trial was given, and what its step count rests on."""

    xs: list[float]
    ys: list[float]
    basis: str  # e.g. "1,437 train images, batch 64: 23 steps/epoch"
    approximate: bool


def epoch_steps(train: Any, n_train: int) -> list[int]:
    """Optimizer steps of each epoch, as the Trainer counts them (batch stages, accumulation)."""
    return [math.ceil(math.ceil(n_train / train.stage_batch_size(train.stage_of(e)))
                      / train.accum_steps) for e in range(train.epochs)]


def _stored_int(t: FrozenTrial, data: StudyData, *keys: str) -> int | None:
    for attrs in (t.user_attrs, data.study.user_attrs):
        for key in keys:
            value = attrs.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def planned_schedule(data: StudyData, trial: FrozenTrial) -> Planned | None:
    """The training recipe's own schedule (:func:`hpo.training.schedule.lr_factor`) for
    ``trial``'s config, per optimizer step. The step count comes from what the trial stored:
    ``optimizer_steps`` (the run's total), else ``n_train`` (train images; with the stored
    config's batch size, stages and accumulation); else it is approximate
    (:data:`APPROX_STEPS_PER_EPOCH`). None when the study stored no config. Raises when the
    stored config cannot be rebuilt (the caller says so on the figure)."""
    if not data.config:
        return None
    from hpo.config import StudyConfig
    from hpo.training.schedule import lr_factor

    train = StudyConfig.model_validate(data.config).train_config(trial.params)
    total_stored = _stored_int(trial, data, OPTIMIZER_STEPS_ATTR)
    n_train = _stored_int(trial, data, N_TRAIN_ATTR, TRAIN_SIZE_ATTR)
    batch = trial.user_attrs.get(EFFECTIVE_BATCH_SIZE_ATTR, train.effective_batch_size)
    if n_train is not None:
        per_epoch = epoch_steps(train, n_train)
        basis = f"{n_train} train images, batch {batch}: {sum(per_epoch) / train.epochs:.3g} steps/epoch"
    elif total_stored is not None:
        per_epoch = [total_stored // train.epochs + (e < total_stored % train.epochs)
                     for e in range(train.epochs)]
        basis = f"{total_stored} stored optimizer steps"
    else:
        per_epoch = [APPROX_STEPS_PER_EPOCH] * train.epochs
        basis = (f"approximate: dataset size not stored, {APPROX_STEPS_PER_EPOCH} steps/epoch "
                 "assumed")
    total = total_stored or sum(per_epoch)
    mean = total / train.epochs
    xs, ys, step = [], [], 0
    for epoch, n in enumerate(per_epoch):
        scale = train.stage_lr_scale(train.stage_of(epoch))
        for i in range(n):
            xs.append(epoch + (i + 1) / n)
            ys.append(train.lr * scale * lr_factor(train, step, total_steps=total,
                                                   steps_per_epoch=mean))
            step += 1
    return Planned(xs, ys, basis, approximate=n_train is None and total_stored is None)


def _spans_decades(fig: go.Figure) -> bool:
    ys = [y for tr in fig.data for y in (tr.y or []) if y and y > 0]
    return bool(ys) and max(ys) / min(ys) > 50 and all(math.isfinite(y) for y in ys)
