"""The figures as headless Chromium draws them: one title each, whole-epoch ticks, an lr of 0
drawn, pruned curves visible, a small legend past ten trials, comparison bands without dots and
medians as steps. Screenshots are saved under runs/screenshots/."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from browser import SCREENSHOTS, chromium_driver, console_errors
from synthetic_study import big_study

from hpo.report import build_report, figures
from hpo.report.compare import build_compare

N_TRIALS = 200

N_COMPARED = 30  # trials of each compared study (copied into SQLite, trial by trial)

# ``gd``: the plot (Plotly's graph div) under the page heading given as the script's argument
_PLOT = """
const h = [...document.querySelectorAll('h3')].find(e => e.textContent === arguments[0]);
const gd = h.nextElementSibling;
"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("figures-browser")
    url = f"sqlite:///{tmp}/hpo.db"
    for seed in range(3):
        study = big_study(N_COMPARED, seed=seed, name=f"s{seed}")
        optuna.copy_study(from_study_name=f"s{seed}", from_storage=study._storage,
                          to_storage=url)
    return {"report": build_report(big_study(N_TRIALS), out_dir=tmp).html,
            "small": build_report(big_study(8, name="small"), out_dir=tmp).html,
            "compare": build_compare(["s0"], url, groups=["seeds=s*"], out_dir=tmp).html}


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    d = chromium_driver(height=1400)
    try:
        yield d
    finally:
        d.quit()


def _open(driver: Any, page: Path, shot: str, timeout: float = 30.0) -> None:
    """Load ``page``, wait until Plotly drew every figure, save a screenshot (full page)."""
    driver.get(page.as_uri())
    expected = page.read_text().count("Plotly.newPlot(")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script(
                "return document.querySelectorAll('div.plot.js-plotly-plot .main-svg').length"
                " >= arguments[0]", expected):
            break
        time.sleep(0.3)
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1280, min(height, 16000))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{shot}.png"))
    assert console_errors(driver) == []


def test_report_figures_have_one_title_whole_epoch_ticks_and_a_small_legend(driver,
                                                                           pages) -> None:
    _open(driver, pages["report"], "figures-report")
    titles = driver.execute_script(
        "return [...document.querySelectorAll('.js-plotly-plot .gtitle')]"
        ".map(e => e.textContent).filter(t => t)")
    assert titles == []  # the page's h3 is each figure's one title
    for heading in ("Learning curves", "Train and validation loss of the top trials",
                    "Learning-rate schedule of the best trial"):
        ticks = driver.execute_script(
            _PLOT + "return [...gd.querySelectorAll('.xtick text')].map(e => e.textContent);",
            heading)
        assert ticks and all(t.isdigit() for t in ticks), (heading, ticks)
    legend = driver.execute_script(
        _PLOT + "return [...gd.querySelectorAll('.legend .traces')].map(e => e.textContent);",
        "Learning curves")
    rest = N_TRIALS - figures.TOP_N
    assert len(legend) == figures.TOP_N + 2  # the top ten, the band and its median
    assert legend[0].endswith("(best)")  # best first, the band last
    assert legend[-2:] == [f"other {rest} trials: median",
                           f"other {rest} trials: middle half per epoch"]


def test_report_draws_an_lr_of_zero(driver, pages) -> None:
    _open(driver, pages["report"], "figures-report")
    # the stored lr of the best trial ends at 0 (a cosine to min_lr 0): every epoch is drawn
    drawn, stored = driver.execute_script(
        _PLOT + "const tr = gd.querySelectorAll('.scatterlayer .trace')[0];"
        "return [tr.querySelectorAll('.point').length, gd.data[0].y];",
        "Learning-rate schedule of the best trial")
    assert stored[-1] == 0 and drawn == len(stored)


def test_compare_bands_have_no_dots_and_medians_step(driver, pages) -> None:
    _open(driver, pages["compare"], "figures-compare")
    for axis in ("finished trials", "cumulative epochs trained"):
        heading = f"Best so far against {axis}"
        traces = driver.execute_script(
            _PLOT + "return [...gd.querySelectorAll('.scatterlayer .trace')].map((tr, i) => ("
            "{name: gd.data[i].name || '', points: tr.querySelectorAll('.point').length,"
            " line: (tr.querySelector('.js-line') || {getAttribute: () => ''})"
            ".getAttribute('d') || ''}));", heading)
        band_lo, band_hi, median, single = traces
        assert band_lo["points"] == band_hi["points"] == median["points"] == 0  # no corner dots
        assert single["points"] > 0  # a single study marks each new best
        for tr in (median, single):  # steps: horizontal and vertical segments only
            assert tr["line"].startswith("M") and "L" not in tr["line"], tr
            assert "H" in tr["line"] and "V" in tr["line"], tr


def test_pruned_curves_visible_and_trial_ticks_whole_in_a_small_report(driver, pages) -> None:
    _open(driver, pages["small"], "figures-small-report")
    opacity = dict(driver.execute_script(
        _PLOT + "return [...gd.querySelectorAll('.scatterlayer .trace')].map((tr, i) => "
        "[gd.data[i].name, parseFloat(getComputedStyle(tr).opacity)]);", "Learning curves"))
    pruned = [v for name, v in opacity.items() if name.endswith("(pruned)")]
    complete = [v for name, v in opacity.items() if "pruned" not in name]
    assert len(opacity) == 8 and pruned and complete  # fewer than TOP_N: each trial drawn
    assert 0.5 <= max(pruned) < min(complete)  # secondary, not near-invisible (was 0.25)
    ticks = driver.execute_script(
        _PLOT + "return [...gd.querySelectorAll('.xtick text')].map(e => e.textContent);",
        "Optimization history")
    assert ticks and all(t.isdigit() for t in ticks), ticks  # trials 0 and 4: no 0.5 steps
