"""Plotly figures of a study. Optuna's own ``optuna.visualization`` where its plot stays small.

Each function returns ``(figure, note)``; the figure is None when the study cannot show it yet
(e.g. importances need two completed trials), and the note says why. Every figure is bounded
whatever the study's size (tens of KB to a few hundred at 10,000 trials): learning curves draw
the top trials and a band for the rest, plots of every complete trial draw a stated sample
(:data:`SAMPLE_CAP`, :data:`CONTOUR_CAP`), the timeline the most recent trials, and the note
says so. No figure has a title of its own: the page's heading above it names it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
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
_LAYOUT = {"template": "plotly_white", "height": 440, "margin": {"l": 60, "r": 20, "t": 30, "b": 50},
           "title_text": ""}
TOP_N = 10  # learning curves drawn one by one; the other trials are a band
LOSS_TOP_N = 5  # trials whose train and validation loss are drawn
SAMPLE_CAP = 200  # complete trials in parallel coordinates and slices
CONTOUR_CAP = 50  # complete trials in the contour (Optuna's grid is their square)
TIMELINE_CAP = 1000  # most recent trials in the timeline


def _styled(fig: go.Figure) -> go.Figure:
    """The report's look, and no title (the page's heading names the figure, once)."""
    fig.update_layout(**_LAYOUT)
    return fig


def _guard(build: Callable[[], go.Figure], what: str) -> Fig:
    """``build()`` styled, or None and why when Optuna cannot draw it."""
    try:
        return _styled(build()), ""
    except Exception as exc:  # Optuna raises on too few trials / params; show why, never crash  # noqa: BLE001
        log.warning("figure %r not drawn: %s: %s", what, type(exc).__name__, exc)
        return None, f"{type(exc).__name__}: {exc}"


def _epoch_axis(fig: go.Figure, n_epochs: int) -> None:
    """An x axis of whole epochs: ticks on integers only, about ten of them at most."""
    _count_axis(fig, n_epochs, "epoch")


def _count_axis(fig: go.Figure, n: int, title: str) -> None:
    """An x axis of a count up to ``n`` (epochs, trial numbers): ticks on whole numbers only,
    a step of 1, 2 or 5 times a power of ten, ten ticks at most.

        >>> [_tick_step(n) for n in (8, 10, 11, 100, 2461)]
        [1, 1, 2, 10, 500]
    """
    fig.update_xaxes(title=title, tickmode="linear", tick0=0, dtick=_tick_step(n))


def _tick_step(n: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that puts at most ten ticks on 0..n."""
    power = 1
    while True:
        for step in (power, 2 * power, 5 * power):
            if step * 10 >= n:
                return step
        power *= 10


def _joined(*notes: str) -> str:
    """The non-empty notes, one sentence."""
    return "; ".join(n for n in notes if n)


def _bounded(data: StudyData, cap: int) -> tuple[optuna.Study, str]:
    """``data``'s study, or, past ``cap`` complete trials, an in-memory study of ``cap`` of them:
    the best half and the others evenly spread over the study. The note says which."""
    done = data.completed
    if len(done) <= cap:
        return data.single_study, ""
    best = data.ranked[: cap // 2]
    rest = sorted(data.ranked[cap // 2:], key=lambda t: t.number)
    step = len(rest) / (cap - len(best))
    picked = best + [rest[int(i * step)] for i in range(cap - len(best))]
    note = (f"drawn from {cap} of the {len(done):,} complete trials: the best {len(best)} and "
            f"{cap - len(best)} others evenly spread over the study")
    return _study_of(data, picked), note


def _study_of(data: StudyData, trials: list[FrozenTrial]) -> optuna.Study:
    """An in-memory study of ``trials`` with ``data``'s direction (Optuna's plots take a study)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        study = optuna.create_study(direction=data.single_study.direction)
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(trials)
    return study


def optimization_history(data: StudyData) -> Fig:
    """The objective of each complete trial against its number, and the best so far (a step
    line that moves only where a trial improved on it)."""
    if not data.completed:
        return None, "no completed trial yet"
    done = sorted(data.completed, key=lambda t: t.number)
    xs, best, prev = [], [], None
    for t in done:
        if prev is None or (t.value > prev if data.maximize else t.value < prev):
            prev = t.value
            xs.append(t.number)
            best.append(prev)
    xs.append(done[-1].number)
    best.append(prev)
    fig = go.Figure([
        go.Scatter(x=[t.number for t in done], y=[t.value for t in done], mode="markers",
                   name=f"{data.metric} of a complete trial", marker={"size": 5, "opacity": 0.6},
                   hovertemplate="trial %{x}<br>%{y:.4f}<extra></extra>"),
        go.Scatter(x=xs, y=best, mode="lines", line={"shape": "hv", "width": 2.5},
                   name="best so far", hovertemplate="trial %{x}<br>best %{y:.4f}<extra></extra>"),
    ])
    _count_axis(fig, done[-1].number, "trial")
    fig.update_yaxes(title=data.metric)
    return _styled(fig), ""


# how each state's curve is drawn: pruned trials lighter and dotted (secondary, still visible),
# failed and running ones marked apart
_CURVE_STYLE = {
    TrialState.COMPLETE: {"opacity": 0.9, "dash": "solid", "symbol": "circle", "label": ""},
    TrialState.PRUNED: {"opacity": 0.55, "dash": "dot", "symbol": "circle", "label": "pruned"},
    TrialState.FAIL: {"opacity": 0.7, "dash": "dashdot", "symbol": "x", "label": "failed"},
    TrialState.RUNNING: {"opacity": 0.7, "dash": "dash", "symbol": "triangle-right",
                         "label": "running"},
}
_BAND_COLOR = "rgba(120,120,120,{alpha})"
_BAND_RANK = 1000  # the band's legend entries come after the trials drawn one by one


def _curve(t: FrozenTrial, data: StudyData, key: str | None) -> list[float]:
    """The objective's per-epoch curve of ``t`` (``key`` None) or its stored ``curve[key]``;
    [] for a state that is not drawn (WAITING: its curve is the one it retries)."""
    if t.state not in _CURVE_STYLE:
        return []
    if key is None:
        return curve_of(t, data.metric)
    curve = t.user_attrs.get(CURVE_ATTR)  # a curve some trials lack is not the objective's
    stored = curve.get(key) if isinstance(curve, dict) else None
    return [float(v) for v in stored] if isinstance(stored, list) else []


def _split_top(data: StudyData, curves: dict[int, list[float]]) -> tuple[list[int], list[int]]:
    """Trial numbers drawn one by one (all of them up to :data:`TOP_N`; past that the best
    :data:`TOP_N` complete trials and up to :data:`TOP_N` running ones) and the rest."""
    if len(curves) <= TOP_N:
        return sorted(curves), []
    top = [t.number for t in data.ranked if t.number in curves][:TOP_N]
    running = [t.number for t in data.trials
               if t.state == TrialState.RUNNING and t.number in curves][:TOP_N]
    shown = top + running
    return shown, [n for n in sorted(curves) if n not in set(shown)]


def _add_band(fig: go.Figure, curves: list[list[float]], metric: str) -> None:
    """The median and interquartile range per epoch of ``curves`` (each trial counted at the
    epochs it reached), one legend entry each."""
    longest = max(len(c) for c in curves)
    columns = [np.array([c[e] for c in curves if len(c) > e]) for e in range(longest)]
    xs = list(range(1, longest + 1))
    q1, med, q3 = (np.array([np.percentile(col, q) for col in columns]) for q in (25, 50, 75))
    counts = [len(col) for col in columns]
    fig.add_trace(go.Scatter(x=xs, y=q1, mode="lines", line={"width": 0}, showlegend=False,
                             hoverinfo="skip", legendgroup="band"))
    fig.add_trace(go.Scatter(x=xs, y=q3, mode="lines", line={"width": 0}, fill="tonexty",
                             fillcolor=_BAND_COLOR.format(alpha=0.25), hoverinfo="skip",
                             legendgroup="band", legendrank=_BAND_RANK + 1,
                             name=f"other {len(curves):,} trials: middle half per epoch"))
    fig.add_trace(go.Scatter(
        x=xs, y=med, mode="lines", line={"color": _BAND_COLOR.format(alpha=0.9), "width": 2},
        name=f"other {len(curves):,} trials: median", legendgroup="band",
        legendrank=_BAND_RANK, customdata=counts,
        hovertemplate=f"epoch %{{x}}: median {metric} %{{y:.4f}} of %{{customdata}} trials"
                      "<extra></extra>"))


def learning_curves(data: StudyData, key: str | None = None) -> Fig:
    """The objective (or the stored curve ``key``, e.g. ``val_mae``) per epoch: up to
    :data:`TOP_N` trials one by one, complete solid, pruned lighter and dotted, failed dash-dot
    with crosses, running dashed, the best bold; past that the best :data:`TOP_N` (and running
    trials) one by one and the others as a band (median and middle half per epoch). WAITING
    trials (a queued retry carries its dead trial's curve) are not drawn."""
    metric = key or data.metric
    curves = {t.number: ys for t in data.trials if (ys := _curve(t, data, key))}
    if not curves:
        return None, "no trial reported a curve yet"
    shown, rest = _split_top(data, curves)
    fig = go.Figure()
    if rest:
        _add_band(fig, [curves[n] for n in rest], metric)
    by_number = {t.number: t for t in data.trials}
    best = data.best.number if data.best else None
    for rank, n in enumerate(shown, 1):  # the legend lists them in this order, band last
        _add_curve(fig, by_number[n], curves[n], metric, best=n == best, rank=rank)
    _epoch_axis(fig, max(len(c) for c in curves.values()))
    fig.update_yaxes(title=metric)
    fig.update_layout(legend={"traceorder": "normal"})  # a filled band would reverse it
    n_top = sum(by_number[n].state == TrialState.COMPLETE for n in shown)
    return _styled(fig), _curves_note(n_top, len(shown) - n_top, len(rest))


def _curves_note(n_top: int, n_running: int, n_rest: int) -> str:
    """What the learning curves show: every trial, or the top and running ones and a band.

        >>> _curves_note(10, 1, 90)
        'the best 10 complete trials one by one (best bold), 1 running dashed, the other 90 trials as their median and middle half per epoch'
    """
    if not n_rest:
        return "best bold, pruned dotted and lighter, failed dash-dot, running dashed"
    parts = [f"the best {n_top} complete trials one by one (best bold)" if n_top else "",
             f"{n_running} running dashed" if n_running else ""]
    rest = "the other" if n_top or n_running else "all"
    return ", ".join([p for p in parts if p]
                     + [f"{rest} {n_rest:,} trials as their median and middle half per epoch"])


def _add_curve(fig: go.Figure, t: FrozenTrial, ys: list[float], metric: str, best: bool,
               rank: int) -> None:
    """One trial's curve, styled by its state (:data:`_CURVE_STYLE`), ``rank``-th in the
    legend."""
    style = _CURVE_STYLE[t.state]
    label = f" ({style['label']})" if style["label"] else ""
    fig.add_trace(go.Scatter(
        x=list(range(1, len(ys) + 1)), y=ys, mode="lines+markers",
        name=f"trial {t.number}" + (" (best)" if best else label),
        opacity=style["opacity"],
        line={"width": 4 if best else 1.5, "dash": style["dash"]},
        marker={"size": 7 if t.state == TrialState.FAIL else 4, "symbol": style["symbol"]},
        legendgroup=t.state.name, legendrank=rank,
        hovertemplate=f"trial {t.number} ({t.state.name.lower()})<br>epoch %{{x}}<br>"
                      f"{metric} %{{y:.4f}}<extra></extra>",
    ))


def loss_curves(data: StudyData) -> Fig:
    """Train (dashed) and validation (solid) loss per epoch of the best :data:`LOSS_TOP_N`
    complete trials that stored both, one colour per trial."""
    drawn = [(t, curve_of(t, "train_loss"), curve_of(t, "val_loss")) for t in data.ranked
             if _stored(t, "train_loss") and _stored(t, "val_loss")][:LOSS_TOP_N]
    if not drawn:
        return None, "no complete trial stored its train and validation loss"
    fig = go.Figure()
    for i, (t, train, val) in enumerate(drawn):
        color = _COLORS[i % len(_COLORS)]
        for ys, what, dash in ((val, "validation", "solid"), (train, "train", "dash")):
            fig.add_trace(go.Scatter(
                x=list(range(1, len(ys) + 1)), y=ys, mode="lines+markers",
                name=f"trial {t.number} {what} loss", legendgroup=str(t.number),
                line={"color": color, "dash": dash, "width": 2.5 if i == 0 else 1.5},
                marker={"size": 4},
                hovertemplate=f"trial {t.number}<br>epoch %{{x}}<br>{what} loss %{{y:.4f}}"
                              "<extra></extra>"))
    _epoch_axis(fig, max(len(v) for _, tr, v in drawn for v in (tr, v)))
    fig.update_yaxes(title="loss")
    return _styled(fig), (f"the best {len(drawn)} complete trials by {data.metric}: "
                          "validation solid, train dashed")


_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def _stored(t: FrozenTrial, key: str) -> bool:
    """Whether ``t`` stored a non-empty per-epoch ``curve[key]``."""
    curve = t.user_attrs.get(CURVE_ATTR)
    return isinstance(curve, dict) and isinstance(curve.get(key), list) and bool(curve[key])


def importances(data: StudyData) -> tuple[go.Figure | None, str, dict[str, float]]:
    """Optuna's default importance evaluator; also returns the importances for tables."""
    if len(data.completed) < 2:
        return None, "needs at least 2 completed trials", {}
    try:
        values = optuna.importance.get_param_importances(data.single_study)
    except Exception as exc:  # noqa: BLE001
        return None, f"{type(exc).__name__}: {exc}", {}
    if not values:
        return None, "no parameter varied among completed trials", {}
    names = list(values)[::-1]
    fig = go.Figure(go.Bar(x=[values[n] for n in names], y=names, orientation="h",
                           text=[f"{values[n]:.2f}" for n in names], textposition="auto"))
    fig.update_xaxes(title="importance (Optuna's default evaluator, normalised)")
    return _styled(fig), "", dict(values)


def parallel_coordinates(data: StudyData, params: list[str] | None) -> Fig:
    """Optuna's parallel coordinates of the complete trials (at most :data:`SAMPLE_CAP`)."""
    if len(data.completed) < 2:
        return None, "needs at least 2 completed trials"
    study, note = _bounded(data, SAMPLE_CAP)
    fig, error = _guard(lambda: ov.plot_parallel_coordinate(study, params=params,
                                                            target_name=data.metric),
                        "parallel coordinates")
    return fig, _joined(error, note)


def slices(data: StudyData, params: list[str]) -> Fig:
    """Optuna's slice plot of the top parameters (at most :data:`SAMPLE_CAP` complete trials)."""
    if not data.completed or not params:
        return None, "no completed trial with parameters yet"
    study, note = _bounded(data, SAMPLE_CAP)
    fig, error = _guard(lambda: ov.plot_slice(study, params=params, target_name=data.metric),
                        "slices")
    if fig is not None:
        fig.update_layout(height=380)
    return fig, _joined(error, note)


def contour(data: StudyData, params: list[str]) -> Fig:
    """Optuna's contour of the two top parameters (at most :data:`CONTOUR_CAP` complete trials:
    its grid is one row and column per distinct value)."""
    if len(params) < 2:
        return None, "needs two numeric or categorical parameters"
    if len(data.completed) < 3:
        return None, "needs at least 3 completed trials"
    study, note = _bounded(data, CONTOUR_CAP)
    fig, error = _guard(lambda: ov.plot_contour(study, params=params[:2],
                                                target_name=data.metric), "contour")
    return fig, _joined(error, note)


def timeline(data: StudyData) -> Fig:
    """When each trial ran (at most the :data:`TIMELINE_CAP` most recent), coloured by state."""
    ran = sorted((t for t in data.trials if t.datetime_start), key=lambda t: t.number)
    if not ran:
        return None, "no trial started yet"
    shown = ran[-TIMELINE_CAP:]
    end = max((t.datetime_complete for t in shown if t.datetime_complete),
              default=shown[-1].datetime_start)
    fig = go.Figure()
    for state in TrialState:
        of_state = [t for t in shown if t.state == state]
        if not of_state:
            continue
        fig.add_trace(go.Bar(
            base=[t.datetime_start.isoformat(timespec="seconds") for t in of_state],
            x=[round(((t.datetime_complete or end) - t.datetime_start).total_seconds() * 1000)
               for t in of_state],
            y=[t.number for t in of_state], orientation="h", name=state.name.lower(),
            marker={"color": _STATE_COLORS.get(state, "#7f7f7f"), "line": {"width": 0}},
            hovertemplate="trial %{y}<br>start %{base}<extra>" + state.name.lower() + "</extra>"))
    fig.update_xaxes(type="date", title="time")
    fig.update_yaxes(title="trial")
    fig.update_layout(bargap=0.1)
    note = (f"the {len(shown):,} most recent of {len(ran):,} trials" if len(ran) > len(shown)
            else "")
    return _styled(fig), note


_STATE_COLORS = {TrialState.COMPLETE: "#1f77b4", TrialState.PRUNED: "#ff7f0e",
                 TrialState.FAIL: "#d62728", TrialState.RUNNING: "#2ca02c"}


def edf(data: StudyData) -> Fig:
    """Optuna's empirical distribution function of the objective over the complete trials."""
    if not data.completed:
        return None, "no completed trial yet"
    fig, error = _guard(lambda: ov.plot_edf(data.single_study, target_name=data.metric), "EDF")
    return fig, error or "the share of complete trials whose objective is at most each value"


def lr_schedule(data: StudyData) -> Fig:
    """The best trial's learning rate: per epoch as trained, and the schedule it was given; a
    log axis only where every value is positive (a cosine to ``min_lr: 0`` ends at 0, which a
    log axis cannot show) and they span decades."""
    best = data.best
    if best is None:
        return None, "no completed trial yet"
    fig = go.Figure()
    stored = curve_of(best, "lr")
    if stored:
        fig.add_trace(go.Scatter(x=list(range(1, len(stored) + 1)), y=stored,
                                 mode="lines+markers",
                                 name=f"trial {best.number}: lr at end of each epoch (stored)"))
    note = ""
    try:
        planned = planned_schedule(data, best)
    except Exception as exc:  # noqa: BLE001 - e.g. a config an older hpo stored: say so
        log.warning("planned lr schedule of trial %d of %s: %s", best.number, data.name, exc)
        planned, note = None, f"planned schedule not drawn ({type(exc).__name__}: {exc})"
    if planned is not None:
        fig.add_trace(go.Scatter(x=planned.xs, y=planned.ys, mode="lines",
                                 name=f"trial {best.number}: planned schedule (per step; "
                                      f"{planned.basis})",
                                 line={"dash": "dash", "width": 1.5}))
    if not fig.data:
        return None, note or "the best trial stored no learning-rate curve"
    _epoch_axis(fig, max(len(stored), math.ceil(max(planned.xs, default=0)) if planned else 0))
    fig.update_yaxes(title="learning rate", type="log" if _log_axis(fig) else "linear")
    if planned is not None and planned.approximate:
        note = (f"the planned schedule is approximate: the trial stored neither its optimizer "
                f"steps nor the dataset size, so {APPROX_STEPS_PER_EPOCH} steps per epoch are "
                "assumed (warmup and step-based shapes may be off; the stored per-epoch lr is "
                "exact)")
    return _styled(fig), note


# steps per epoch assumed when a trial stored neither its step count nor the dataset size
APPROX_STEPS_PER_EPOCH = 20


@dataclass
class Planned:
    """The per-step learning rate a trial was given, and what its step count rests on."""

    xs: list[float]
    ys: list[float]
    basis: str  # e.g. "1,437 train images, batch 64: 23 steps/epoch"
    approximate: bool



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
        per_epoch = [train.optimizer_steps(e, n_train) for e in range(train.epochs)]
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


def _log_axis(fig: go.Figure) -> bool:
    """Whether the figure's y values suit a log axis: all positive and spanning decades."""
    ys = [y for tr in fig.data for y in (tr.y or []) if y is not None and math.isfinite(y)]
    return bool(ys) and min(ys) > 0 and max(ys) / min(ys) > 50


def pareto_front(data: StudyData) -> Fig:
    """Optuna's Pareto-front plot of a multi-objective study (every complete trial, the front
    highlighted), axes named after the objectives."""
    if not data.pareto:
        return None, "no completed trial yet"
    fig, error = _guard(lambda: ov.plot_pareto_front(
        data.study, target_names=data.objective_names), "Pareto front")
    return fig, error or ("each complete trial's objectives; the Pareto-optimal trials (no "
                          "other trial is at least as good on every objective and better on "
                          "one) are highlighted")
