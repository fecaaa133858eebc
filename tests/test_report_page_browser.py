"""The report's tables in real headless Chromium: a wide table scrolls inside its box and never
widens the page, and a header click sorts the rows (numbers by value, "-" last) under the
page's Content-Security-Policy, with no console error."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import SCREENSHOTS, chromium_driver, console_errors
from report_studies import make_study

from hpo.report import build_report

TOP_TABLE = "//h3[starts-with(., 'Top ')]/following-sibling::div[@class='scroll'][1]//table"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report-page-browser")
    url = f"sqlite:///{tmp}/hpo.db"
    make_study(url, "wide", n_trials=14, analysis_after=6)
    return build_report("wide", url, out_dir=tmp).html


def _column(table, header: str) -> list[str]:
    """The cells of one column, top to bottom, as the page shows them."""
    headers = [th.text.rstrip(" ▲▼") for th in table.find_elements("css selector", "thead th")]
    i = headers.index(header) + 1
    return [td.text for td in table.find_elements("css selector", f"tbody td:nth-child({i})")]


def test_wide_tables_scroll_in_their_box_and_sort_on_a_header_click(report: Path) -> None:
    driver = chromium_driver(width=800, height=1200)  # narrower than the top-trials table
    try:
        driver.get(report.as_uri())
        table = driver.find_element("xpath", TOP_TABLE)
        box = table.find_element("xpath", "..")
        assert driver.execute_script("return arguments[0].scrollWidth", table) > \
            driver.execute_script("return arguments[0].clientWidth", box)  # it is wide...
        page_width = driver.execute_script("return document.documentElement.scrollWidth")
        assert page_width <= driver.execute_script("return window.innerWidth")  # ...the page not
        assert driver.execute_script(
            "return [...document.querySelectorAll('table')].every("
            "t => t.parentElement.classList.contains('scroll'))")

        values = [float(v) for v in _column(table, "value")]
        assert values == sorted(values, reverse=True)  # ranked best first
        table.find_element("xpath", ".//th[.='value']").click()
        assert [float(v) for v in _column(table, "value")] == sorted(values)
        table.find_element("xpath", ".//th[starts-with(., 'value')]").click()
        assert [float(v) for v in _column(table, "value")] == sorted(values, reverse=True)
        table.find_element("xpath", ".//th[.='momentum']").click()  # only sgd trials have one
        momentum = _column(table, "momentum")
        shown = [float(m) for m in momentum if m != "-"]
        assert shown == sorted(shown) and "-" not in momentum[:len(shown)]  # "-" comes last
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOTS / "report-narrow.png"))
        assert console_errors(driver) == []  # the sort script runs under the page's CSP
    finally:
        driver.quit()
