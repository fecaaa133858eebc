"""`hpo compare` on small real studies: final bests, groups and curves match the storage."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from report_studies import make_study

from hpo.cli import main
from hpo.markdown import duration
from hpo.report.compare import AXES, _figure, band, build_compare, curve
from hpo.report.data import load
from hpo.report.render import fmt


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('compare')}/hpo.db"
    for seed in (0, 1, 2):
        make_study(url, f"tpe-s{seed}", n_trials=10, seed=seed)
        make_study(url, f"rnd-s{seed}", n_trials=10, seed=seed, sampler="random")
    return url


def test_final_bests_and_groups_match_the_storage(storage: str, tmp_path: Path) -> None:
    rep = build_compare(["tpe-s0", "rnd-s0"], storage, groups=["tpe=tpe-s*", "random=rnd-s*"],
                        out_dir=tmp_path, out_name="bench")
    rows = {r["study"]: r for r in rep.summary["studies"]}
    assert set(rows) == {f"{k}-s{i}" for k in ("tpe", "rnd") for i in range(3)}
    for name, row in rows.items():
        study = optuna.load_study(study_name=name, storage=storage)
        finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert row["best_value"] == study.best_value
        assert row["best_trial"] == study.best_trial.number
        assert row["finished"] == len(finished)
        assert row["epochs_trained"] == sum(t.user_attrs["epochs"] for t in finished)
    groups = {g["group"]: g for g in rep.summary["groups"]}
    for label, prefix in (("tpe", "tpe-s"), ("random", "rnd-s")):
        bests = [rows[f"{prefix}{i}"]["best_value"] for i in range(3)]
        assert groups[label]["studies"] == 3
        assert groups[label]["median_best"] == pytest.approx(float(np.median(bests)))
        assert (groups[label]["min_best"], groups[label]["max_best"]) == (min(bests), max(bests))

    md = rep.markdown.read_text()
    for name, row in rows.items():
        assert re.search(rf"^\| {re.escape(name.replace('-', '-'))} \| .* \| {row['finished']} \| "
                         rf"{re.escape(fmt(row['best_value']))} \| {row['best_trial']} \|", md, re.MULTILINE)
    html = rep.html.read_text()
    assert html.count("Plotly.newPlot(") == 3  # against trials, epochs, wall time
    assert "median of 3, band min-max" in html


def test_best_so_far_curve_and_band(storage: str) -> None:
    data = load("tpe-s1", storage)
    c = curve(data)
    done = sorted((t for t in data.study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)),
                  key=lambda t: t.datetime_complete)
    assert c.trials == [float(i) for i in range(1, len(done) + 1)]
    assert c.epochs[-1] == sum(t.user_attrs["epochs"] for t in done)
    assert c.best[-1] == data.study.best_value
    assert all(a <= b for a, b in zip(c.best[1:], c.best[1:][1:]) if not np.isnan(a))  # monotone
    curves = [curve(load(f"tpe-s{i}", storage)) for i in range(3)]
    _grid, med, lo, hi = band(curves, "trials")
    assert med[-1] == pytest.approx(np.median([cv.best[-1] for cv in curves]))
    assert np.all(lo[~np.isnan(lo)] <= hi[~np.isnan(hi)])


def test_cli_compare_and_errors(storage: str, tmp_path: Path, capsys) -> None:
    assert main(["compare", "tpe-s0", "tpe-s1", "--storage", storage, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "compare-tpe-s0-tpe-s1.html").exists()
    assert main(["compare", "tpe-s0", "missing", "--storage", storage, "--out", str(tmp_path)]) == 2
    assert "missing" in capsys.readouterr().err


def test_groups_and_studies_are_drawn_as_steps_without_stray_dots(storage: str) -> None:
    singles = [curve(load("tpe-s0", storage))]
    groups = {"random": [curve(load(f"rnd-s{i}", storage)) for i in range(3)]}
    fig = _figure("trials", "finished trials", singles, groups, "val_accuracy")
    band_lo, band_hi, median, single = fig.data
    assert [tr.mode for tr in (band_lo, band_hi, median)] == ["lines"] * 3  # no corner dots
    assert band_hi.fill == "tonexty" and band_lo.line.width == band_hi.line.width == 0
    assert all(tr.line.shape == "hv" for tr in fig.data)  # medians step like single studies
    assert not fig.layout.title.text  # the page's heading names the figure, once
    _grid, med, lo, hi = band(groups["random"], "trials")
    assert (median.y[-1], band_lo.y[-1], band_hi.y[-1]) == (med[-1], lo[-1], hi[-1])
    assert single.y[-1] == singles[0].best[-1] and single.x[-1] == singles[0].trials[-1]


def test_step_curves_keep_only_their_changes_at_thousands_of_trials() -> None:
    """Best so far of two studies of 2,000 trials: a few points each, not one per trial."""
    import plotly.io as pio
    from synthetic_study import big_study

    curves = [curve(load(big_study(2000, seed=s, name=f"big-{s}"))) for s in (0, 1)]
    for axis, label in AXES:
        fig = _figure(axis, label, curves[:1], {"both": curves}, "val_accuracy")
        assert len(pio.to_json(fig, validate=False)) < 20_000, axis  # 147 KB before
        single = fig.data[-1]
        improved = sorted({b for b in curves[0].best if not math.isnan(b)})
        assert list(single.y) == improved + [improved[-1]]  # each new best, then the last point
    # 2,000 trials 30 s apart: wall time in hours, not 60000 s
    assert fig.layout.xaxis.title.text == "wall time since the study started (hours)"
    assert single.x[-1] == pytest.approx(curves[0].seconds[-1] / 3600)


def test_final_bests_have_human_headers_and_the_x_axes_can_be_log(storage: str,
                                                                       tmp_path: Path) -> None:
    rep = build_compare(["tpe-s0", "rnd-s0"], storage, out_dir=tmp_path, out_name="log",
                        log_x=True)
    md = rep.markdown.read_text()
    assert ("| study | sampler | finished trials | best value | best trial | trials to the best "
            "| epochs to the best | epochs trained | wall time |") in md
    assert "best_value" not in md
    wall = next(r["wall_time_s"] for r in rep.summary["studies"] if r["study"] == "tpe-s0")
    assert re.search(rf"^\| tpe-s0 \| .* \| {re.escape(duration(wall))} \|$", md, re.MULTILINE)
    html = rep.html.read_text()
    assert html.count('"type":"log"') == 3  # trials, epochs and wall time
    assert "finished trials (log scale)" in html
    assert main(["compare", "tpe-s0", "tpe-s1", "--storage", storage, "--out", str(tmp_path),
                 "--name", "cli-log", "--log-x"]) == 0
    assert '"type":"log"' in (tmp_path / "cli-log.html").read_text()
