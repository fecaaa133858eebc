"""optuna-dashboard's real server in a subprocess, driven by headless Chromium: it shows the
study, its trials, and the LLM sampler's analysis as a note (escaped, never executed)."""

from __future__ import annotations

import time

import optuna
import pytest
from browser import SCREENSHOTS, chromium_driver, console_errors
from report_studies import make_study

from hpo.dashboard import free_port, publish_notes, start, wait_until_up, write_config


def _wait_text(driver, needle: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = driver.find_element("tag name", "body").text
        if needle in text:
            return text
        time.sleep(0.5)
    raise AssertionError(f"{needle!r} not on the page after {timeout}s; page text: {text[:800]}")


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{tmp}/hpo.db"
    make_study(url, "with-llm", n_trials=10, analysis_after=5)
    port = free_port()
    proc = start(url, port=port, artifacts=str(tmp / "artifacts"), echo=lambda _: None)
    try:
        wait_until_up(port, proc=proc)
        yield url, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_dashboard_shows_study_trials_and_analysis_note(dashboard) -> None:
    url, port = dashboard
    study = optuna.load_study(study_name="with-llm", storage=url)
    driver = chromium_driver(1280, 1000)
    try:
        driver.get(f"http://127.0.0.1:{port}/dashboard/")
        _wait_text(driver, "with-llm")
        sid = study._study_id
        driver.get(f"http://127.0.0.1:{port}/dashboard/studies/{sid}/trials")
        text = _wait_text(driver, f"{len(study.trials)} Trials")
        for t in study.trials:
            assert f"Trial {t.number}" in text
        driver.get(f"http://127.0.0.1:{port}/dashboard/studies/{sid}/note")
        text = _wait_text(driver, "Analyses (written by hpo)")
        assert "underfitting: accuracy still rising <script>window.__xss=1</script>" in text
        assert driver.execute_script("return window.__xss === undefined")  # shown, not run
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOTS / "dashboard-note.png"))
        assert not console_errors(driver)
    finally:
        driver.quit()


def test_publish_is_idempotent_and_keeps_user_text(dashboard) -> None:
    from optuna_dashboard import get_note, save_note

    url, _ = dashboard
    study = optuna.load_study(study_name="with-llm", storage=url)
    save_note(study, "my own remarks\n\n" + get_note(study))
    assert publish_notes(study) == 1
    first = get_note(study)
    assert first.startswith("my own remarks") and first.count("## Analyses (written by hpo)") == 1
    publish_notes(study)
    assert get_note(study) == first


def test_llm_section_only_when_an_endpoint_is_configured(tmp_path, monkeypatch) -> None:
    import tomllib

    base = tmp_path / "base.toml"
    base.write_text('[optuna_dashboard]\nhost = "127.0.0.1"\n')
    plain = tomllib.loads(write_config(None, base, tmp_path / "a.toml").read_text())
    assert "llm" not in plain and plain["optuna_dashboard"]["host"] == "127.0.0.1"
    monkeypatch.setenv("MY_KEY", "sk-secret")
    ep = {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "MY_KEY"}
    text = write_config(ep, base, tmp_path / "b.toml").read_text()
    cfg = tomllib.loads(text)["llm"]["openai"]
    assert cfg["client"]["base_url"] == "http://127.0.0.1:9/v1" and cfg["model"] == "m"
    assert cfg["use_chat_completions_api"] is True and "sk-secret" not in text
