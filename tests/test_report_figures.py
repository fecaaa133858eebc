"""The report's figures as objects: small at thousands of trials, one title, whole-epoch ticks,
the top trials one by one and a band for the rest, an lr axis that shows an lr of 0."""

from __future__ import annotations

import math
from collections.abc import Callable

import optuna
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from optuna.trial import TrialState
from synthetic_study import big_study

from hpo.report import figures
from hpo.report.data import StudyData, load

N_BIG = 3000  # 750 complete, 2,250 pruned: past every cap, in about a second


@pytest.fixture(scope="module")
def big() -> StudyData:
    return load(big_study(N_BIG))


def _all_figures(data: StudyData) -> dict[str, tuple[go.Figure | None, str]]:
    params = ["lr", "weight_decay", "label_smoothing"]
    builders: dict[str, Callable[[], tuple[go.Figure | None, str]]] = {
        "history": lambda: figures.optimization_history(data),
        "curves": lambda: figures.learning_curves(data),
        "loss": lambda: figures.loss_curves(data),
        "importances": lambda: figures.importances(data)[:2],
        "parallel": lambda: figures.parallel_coordinates(data, params),
        "slices": lambda: figures.slices(data, params),
        "contour": lambda: figures.contour(data, params),
        "lr": lambda: figures.lr_schedule(data),
        "timeline": lambda: figures.timeline(data),
        "edf": lambda: figures.edf(data),
    }
    return {name: build() for name, build in builders.items()}


@pytest.fixture(scope="module")
def big_figures(big: StudyData) -> dict[str, tuple[go.Figure | None, str]]:
    return _all_figures(big)


def _size(fig: go.Figure) -> int:
    return len(pio.to_json(fig, validate=False))


def test_every_figure_of_thousands_of_trials_stays_small(big_figures) -> None:
    sizes = {name: _size(fig) for name, (fig, _) in big_figures.items()}
    assert all(fig is not None for fig, _ in big_figures.values()), big_figures
    # before: the contour alone was ~7 MB at 3,000 trials (a grid of every complete trial's
    # values squared) and 77 MB at 10,000; the learning curves one trace per trial
    assert max(sizes.values()) < 300_000, sizes
    assert sum(sizes.values()) < 1_000_000, sizes


def test_sampled_figures_say_what_they_draw(big_figures, big: StudyData) -> None:
    n_done = len(big.completed)
    for name, cap in (("parallel", figures.SAMPLE_CAP), ("slices", figures.SAMPLE_CAP),
                      ("contour", figures.CONTOUR_CAP)):
        assert f"drawn from {cap} of the {n_done:,} complete trials" in big_figures[name][1]
    timeline, note = big_figures["timeline"]
    assert note == f"the {figures.TIMELINE_CAP:,} most recent of {N_BIG:,} trials"
    drawn = sorted(y for tr in timeline.data for y in tr.y)
    assert drawn == list(range(N_BIG - figures.TIMELINE_CAP, N_BIG))


def test_learning_curves_draw_the_top_trials_and_a_band_for_the_rest(big_figures,
                                                                      big: StudyData) -> None:
    fig, note = big_figures["curves"]
    one_by_one = [tr for tr in fig.data if tr.name and tr.name.startswith("trial ")]
    top = [t.number for t in big.ranked[:figures.TOP_N]]
    assert [int(tr.name.split()[1]) for tr in one_by_one] == top  # best first
    assert one_by_one[0].name == f"trial {top[0]} (best)" and one_by_one[0].line.width == 4
    band = [tr for tr in fig.data if tr.legendgroup == "band"]
    assert len(fig.data) == figures.TOP_N + len(band) and len(band) == 3
    rest = N_BIG - figures.TOP_N
    assert [tr.name for tr in band if tr.showlegend is not False] == [
        f"other {rest:,} trials: middle half per epoch", f"other {rest:,} trials: median"]
    assert all(tr.mode == "lines" for tr in band)
    assert band[1].fill == "tonexty"  # the middle half filled between its quartiles
    assert band[2].customdata[0] == rest  # every trial reached epoch 1
    assert f"the other {rest:,} trials as their median" in note


def test_band_is_the_median_and_quartiles_per_epoch(big_figures, big: StudyData) -> None:
    import numpy as np

    fig, _ = big_figures["curves"]
    q1, q3, med = (tr for tr in fig.data if tr.legendgroup == "band")
    top = {t.number for t in big.ranked[:figures.TOP_N]}
    at_epoch_2 = [t.user_attrs["curve"]["val_accuracy"][1] for t in big.trials
                  if t.number not in top and t.user_attrs["epochs"] >= 2]
    assert med.y[1] == pytest.approx(float(np.median(at_epoch_2)))
    assert q1.y[1] == pytest.approx(float(np.percentile(at_epoch_2, 25)))
    assert q3.y[1] == pytest.approx(float(np.percentile(at_epoch_2, 75)))


def test_no_figure_repeats_the_page_heading_as_its_own_title(big_figures) -> None:
    for name, (fig, _) in big_figures.items():
        assert not fig.layout.title.text, name


def test_epoch_axes_tick_whole_epochs(big_figures) -> None:
    for name in ("curves", "loss", "lr"):
        axis = big_figures[name][0].layout.xaxis
        assert axis.title.text == "epoch"
        assert (axis.tickmode, axis.tick0) == ("linear", 0), name
        assert isinstance(axis.dtick, int) and axis.dtick >= 1, name


def test_trial_axis_ticks_whole_trials(big_figures) -> None:
    axis = big_figures["history"][0].layout.xaxis
    assert (axis.title.text, axis.tickmode, axis.dtick) == ("trial", "linear", 500)  # 0..2,999
    fig, _ = figures.optimization_history(load(big_study(8)))  # trials 0 and 4 complete
    assert fig.layout.xaxis.dtick == 1  # not 0.5 steps


def test_epoch_ticks_stay_few_on_long_runs() -> None:
    fig = go.Figure(go.Scatter(x=list(range(1, 101)), y=[0.0] * 100))
    figures._epoch_axis(fig, 100)
    assert fig.layout.xaxis.dtick == 10


def test_lr_ending_at_zero_stays_on_the_plot(big_figures, big: StudyData) -> None:
    """A cosine to ``min_lr: 0`` ends at lr 0: a log axis would drop that point (log 0)."""
    fig, _ = big_figures["lr"]
    stored = fig.data[0]
    assert stored.y[-1] == 0.0 and len(stored.y) == big.best.user_attrs["epochs"]
    assert fig.layout.yaxis.type == "linear"


def test_lr_spanning_decades_above_zero_gets_a_log_axis() -> None:
    study = optuna.create_study(direction="maximize")  # no stored config: no planned schedule
    study.add_trial(optuna.trial.create_trial(
        value=0.9, intermediate_values={1: 0.5, 2: 0.9},
        user_attrs={"curve": {"lr": [1e-2, 1e-3, 1e-4, 1e-5]}, "epochs": 4}))
    fig, _ = figures.lr_schedule(load(study))
    assert fig.layout.yaxis.type == "log" and len(fig.data) == 1
    assert min(fig.data[0].y) > 0


def test_pruned_curves_are_visible_but_secondary() -> None:
    study = big_study(8)  # under TOP_N: every trial drawn one by one
    fig, note = figures.learning_curves(load(study))
    pruned = [tr for tr in fig.data if tr.name.endswith("(pruned)")]
    complete = [tr for tr in fig.data if "(" not in tr.name]
    assert pruned and complete and len(fig.data) == 8
    assert all(0.5 <= tr.opacity < complete[0].opacity and tr.line.dash == "dot" for tr in pruned)
    assert "pruned dotted and lighter" in note


def test_loss_curves_show_train_and_validation_of_the_top_trials(big_figures,
                                                                 big: StudyData) -> None:
    fig, note = big_figures["loss"]
    top = big.ranked[:figures.LOSS_TOP_N]
    assert [tr.name for tr in fig.data] == [f"trial {t.number} {what} loss" for t in top
                                            for what in ("validation", "train")]
    assert list(fig.data[0].y) == top[0].user_attrs["curve"]["val_loss"]
    assert list(fig.data[1].y) == top[0].user_attrs["curve"]["train_loss"]
    assert fig.data[1].line.dash == "dash" and fig.data[0].line.color == fig.data[1].line.color
    assert "validation solid, train dashed" in note


def test_loss_curves_say_why_without_stored_losses() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5, intermediate_values={1: 0.5}))
    assert figures.loss_curves(load(study)) == (
        None, "no complete trial stored its train and validation loss")


def test_history_draws_complete_trials_and_the_best_as_steps(big_figures,
                                                             big: StudyData) -> None:
    fig, _ = big_figures["history"]
    points, best = fig.data
    assert list(points.x) == sorted(t.number for t in big.completed)
    assert best.line.shape == "hv" and best.mode == "lines"
    assert best.y[-1] == big.best.value and best.x[-1] == max(points.x)
    assert all(a < b for a, b in zip(best.y, best.y[1:-1]))  # a point only where it improved


def test_timeline_colours_trials_by_state() -> None:
    study = big_study(12)
    fig, note = figures.timeline(load(study))
    by_state = {tr.name: sorted(tr.y) for tr in fig.data}
    assert by_state == {s.name.lower(): [t.number for t in study.trials if t.state == s]
                        for s in (TrialState.COMPLETE, TrialState.PRUNED)}
    assert note == "" and fig.layout.xaxis.type == "date"
    first = study.trials[0]
    seconds = (first.datetime_complete - first.datetime_start).total_seconds()
    complete = next(tr for tr in fig.data if tr.name == "complete")
    assert complete.x[0] == math.floor(seconds * 1000)


def test_learning_curves_of_only_pruned_trials_are_a_band() -> None:
    study = optuna.create_study(direction="maximize")
    for i in range(figures.TOP_N + 2):
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.PRUNED, intermediate_values={1: 0.1 * i, 2: 0.1 * i + 0.05}))
    fig, note = figures.learning_curves(load(study))
    assert [tr.legendgroup for tr in fig.data] == ["band"] * 3
    assert note == f"all {figures.TOP_N + 2} trials as their median and middle half per epoch"
