"""The HTML report in real headless Chromium: every plot renders, no console error, nothing from
the data runs as script, and a screenshot is saved under runs/screenshots/."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from browser import SCREENSHOTS, chromium_driver, console_errors
from report_studies import make_study

from hpo.report import build_report
from hpo.report.compare import build_compare


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("report-browser")
    url = f"sqlite:///{tmp}/hpo.db"
    make_study(url, "with-llm", n_trials=14, analysis_after=6)
    make_study(url, "rnd", n_trials=8, sampler="random")
    return {"report": build_report("with-llm", url, out_dir=tmp).html,
            "compare": build_compare(["with-llm", "rnd"], url, out_dir=tmp).html}


def _rendered(driver, expected: int, timeout: float = 30.0) -> int:
    deadline, n = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        n = driver.execute_script(
            "return document.querySelectorAll('div.plot > .plot-container .main-svg').length"
            " && document.querySelectorAll('div.plot.js-plotly-plot').length")
        if n == expected:
            return n
        time.sleep(0.3)
    return n


@pytest.mark.parametrize("which", ["report", "compare"])
def test_html_renders_offline_without_console_errors(reports, which: str) -> None:
    html = reports[which].read_text()
    expected = html.count("Plotly.newPlot(")
    driver = chromium_driver()
    try:
        driver.get(reports[which].as_uri())
        assert _rendered(driver, expected) == expected  # every figure drawn by the embedded plotly.js
        assert driver.execute_script("return typeof Plotly") == "object"
        assert driver.execute_script("return window.__xss === undefined")  # escaped, never run
        if which == "report":
            body = driver.find_element("tag name", "body").text
            assert "<script>window.__xss=1</script>" in body  # shown as text
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / f"{which}.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        assert console_errors(driver) == []
    finally:
        driver.quit()
