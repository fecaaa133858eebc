"""optuna-dashboard's real server in a subprocess, driven by headless Chromium: it shows the
study, its trials, and the LLM sampler's analysis as a note (escaped, never executed)."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from browser import SCREENSHOTS, chromium_driver, console_errors
from report_studies import make_study

from hpo.dashboard import WRITE_ICONS, free_port, publish_notes, start, wait_until_up, write_config


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
        # "Proposal 2" is a paragraph of its own, not run into the last bullet of Proposal 1
        assert driver.find_elements("xpath", "//p[starts-with(normalize-space(.), "
                                             "'Proposal 2')]")
        assert not driver.find_elements("xpath", "//li[contains(., 'Proposal 2')]")
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


def test_server_gets_no_password_on_its_command_line(tmp_path) -> None:
    """The storage URL reaches the server on its stdin: `ps` (world-readable /proc/PID/cmdline)
    and the process environment never show the password; the server does serve the study."""
    import json
    import urllib.request

    from resume_support import PASSWORD, drop_storage, make_storage

    from hpo.storage import resolve_storage_url

    # postgresql+psycopg2://postgres:PASSWORD@... (trust auth ignores the password)
    url = resolve_storage_url(make_storage("postgresql", tmp_path))
    assert PASSWORD in url
    try:
        make_study(url, "pw-study", n_trials=3)
        port, lines = free_port(), []
        proc = start(url, port=port, artifacts=str(tmp_path / "artifacts"), echo=lines.append)
        try:
            wait_until_up(port, proc=proc)
            proc_dir = Path(f"/proc/{proc.pid}")
            cmdline = proc_dir.joinpath("cmdline").read_bytes().decode()
            environ = proc_dir.joinpath("environ").read_bytes().decode(errors="replace")
            assert "hpo.dashboard" in cmdline and "127.0.0.1" in cmdline
            assert PASSWORD not in cmdline and PASSWORD not in environ
            assert "postgresql" not in cmdline  # no URL at all
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as r:
                names = [s["study_name"] for s in json.load(r)["study_summaries"]]
            assert names == ["pw-study"]
            assert PASSWORD not in "\n".join(lines) and "postgres:***@" in "\n".join(lines)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    finally:
        drop_storage(url)


def test_artifact_dir_follows_the_studys_artifacts_path(tmp_path, monkeypatch) -> None:
    """`artifacts.path` of the stored config is where the checkpoints are: the dashboard serves
    a checkpoint uploaded there; --artifacts and $HPO_ARTIFACTS still win."""
    import urllib.request

    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    from hpo.dashboard import resolve_artifact_dir
    from hpo.record import ARTIFACTS_ATTR, CONFIG_ATTR
    from hpo.storage import open_storage

    monkeypatch.delenv("HPO_ARTIFACTS", raising=False)
    (tmp_path / "db").mkdir()
    url = f"sqlite:///{tmp_path}/db/hpo.db"
    study = make_study(url, "with-path", n_trials=2)
    store_dir = tmp_path / "shared-ckpt"
    cfg = study.user_attrs[CONFIG_ATTR]
    study.set_user_attr(CONFIG_ATTR, {**cfg, "artifacts": {"path": str(store_dir)}})
    storage = open_storage(url)
    assert resolve_artifact_dir(url, storage=storage) == str(store_dir)
    assert resolve_artifact_dir(url, "cli-dir", storage=storage) == "cli-dir"
    monkeypatch.setenv("HPO_ARTIFACTS", "env-dir")
    assert resolve_artifact_dir(url, storage=storage) == "env-dir"
    monkeypatch.delenv("HPO_ARTIFACTS")
    assert resolve_artifact_dir(f"sqlite:///{tmp_path}/x.db") == str(tmp_path / "artifacts")
    # a study whose config names no folder: the one its first run recorded, as workers use
    other = make_study(url, "recorded-only", n_trials=1)
    other.set_user_attr(ARTIFACTS_ATTR, str(tmp_path / "recorded"))
    assert resolve_artifact_dir(url, storage=storage) == str(store_dir)  # the older study's
    study.set_user_attr(CONFIG_ATTR, cfg)  # the first study names none any more
    assert resolve_artifact_dir(url, storage=storage) == str(tmp_path / "recorded")
    study.set_user_attr(CONFIG_ATTR, {**cfg, "artifacts": {"path": str(store_dir)}})

    store_dir.mkdir()
    ckpt = tmp_path / "checkpoint-0.pt"
    ckpt.write_bytes(b"weights")
    trial = study.ask()  # a trial uploads its checkpoint as hpo.checkpoint does
    artifact_id = upload_artifact(artifact_store=FileSystemArtifactStore(store_dir),
                                  file_path=str(ckpt), study_or_trial=trial)
    study.tell(trial, 0.5)
    port = free_port()
    proc = start(url, port=port, echo=lambda _: None)  # no --artifacts: from the stored config
    try:
        wait_until_up(port, proc=proc)
        link = f"http://127.0.0.1:{port}/artifacts/{study._study_id}/{trial._trial_id}/{artifact_id}"
        with urllib.request.urlopen(link, timeout=10) as r:
            assert r.read() == b"weights"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_publish_does_not_repeat_the_samplers_own_note(tmp_path) -> None:
    """The LLM sampler writes its study note as it analyses; publish adds only what it lacks."""
    from optuna_dashboard import get_note, save_note

    from hpo.record import DASHBOARD_NOTE_HEADING as NOTE_HEADING
    from hpo.record import SAMPLER_NOTE_HEADING as HEADING
    from hpo.sampler.notes import write_study_note
    from hpo.sampler.store import load_analyses

    url = f"sqlite:///{tmp_path}/hpo.db"
    study = make_study(url, "noted", n_trials=10, analysis_after=5)
    analyses = load_analyses(study)
    assert [a["id"] for a in analyses] == ["every_n-0005"]
    save_note(study, "my remarks")
    write_study_note(study, analyses)  # what the sampler does after each analysis
    written = get_note(study)
    assert publish_notes(study) == 1
    assert get_note(study) == written  # nothing added: the analysis is there once
    assert NOTE_HEADING not in written and written.count("every_n-0005") >= 1

    # a sampler note that escapes the id (its Markdown escaping) still counts as showing it
    save_note(study, written.replace("every_n-0005", "every\\_n\\-0005"))
    escaped = get_note(study)
    publish_notes(study)
    assert get_note(study) == escaped

    # an analysis the sampler's note lacks (written before it) is added, once, under our heading
    save_note(study, f"my remarks\n\n{HEADING}\n\n(no analysis yet)")
    publish_notes(study)
    note = get_note(study)
    assert note.startswith("my remarks") and note.count(NOTE_HEADING) == 1
    assert note.index(HEADING) < note.index(NOTE_HEADING)
    publish_notes(study)
    assert get_note(study) == note  # idempotent
    # ...and when the sampler's next note then shows it, our copy goes away
    write_study_note(study, analyses)
    publish_notes(study)
    final = get_note(study)
    assert NOTE_HEADING not in final and final.startswith("my remarks")


def test_make_dashboard_passes_storage_and_artifacts(repo) -> None:
    import shutil
    import subprocess

    if not shutil.which("make"):
        pytest.skip("no make")
    out = subprocess.run(["make", "-n", "dashboard", "STORAGE=sqlite:///s.db", "ARTIFACTS=/x/ck",
                          "PORT=9999"], cwd=repo, capture_output=True, text=True, check=True)
    # the storage URL travels in the environment (tests/test_storage_secrets.py), never in argv
    assert "hpo dashboard --artifacts /x/ck --port 9999" in out.stdout
    assert "--storage" not in out.stdout and "s.db" not in out.stdout


def _visible_icons(driver) -> set[str]:
    """The MUI icons (``data-testid``) of the page's buttons and menu items a user can see."""
    return set(driver.execute_script(
        "return [...document.querySelectorAll('svg[data-testid]')]"
        ".filter(s => { const c = s.closest('button, li'); return c && c.offsetParent; })"
        ".map(s => s.getAttribute('data-testid'))"))


def _wait_icon(driver, icon: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while icon not in _visible_icons(driver):
        if time.monotonic() > deadline:
            raise AssertionError(f"{icon} not on the page after {timeout}s")
        time.sleep(0.5)


def test_read_only_dashboard_hides_the_buttons_it_would_refuse(dashboard, tmp_path) -> None:
    """``hpo dashboard --read-only``: no delete, rename, create, upload or note-edit control is
    shown (the server would answer 403), the study still shows, and a corner says read-only.
    The same pages of the writable dashboard (the module's server) do show those controls."""
    url, port = dashboard
    sid = optuna.load_study(study_name="with-llm", storage=url)._study_id
    ro_port = free_port()
    proc = start(url, port=ro_port, artifacts=str(tmp_path / "artifacts"), read_only=True,
                 echo=lambda _: None)
    driver = chromium_driver(1280, 900)
    try:
        wait_until_up(ro_port, proc=proc)
        pages = {"/dashboard/": "DeleteIcon", f"/dashboard/studies/{sid}": "UploadFileIcon",
                 f"/dashboard/studies/{sid}/note": "EditIcon"}
        for page, icon in pages.items():  # writable: each page shows its write control
            driver.get(f"http://127.0.0.1:{port}{page}")
            _wait_icon(driver, icon)
        for page, icon in pages.items():
            driver.get(f"http://127.0.0.1:{ro_port}{page}")
            _wait_icon(driver, "SettingsIcon")  # the page has drawn its controls
            _wait_text(driver, "read-only (hpo dashboard --read-only)")
            shown = _visible_icons(driver)
            hidden = {f"{name}Icon" for name in WRITE_ICONS}
            assert icon not in shown and not shown & hidden, (page, shown & hidden)
        _wait_text(driver, "Proposal 2")  # the note itself still shows
        assert not console_errors(driver)
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(timeout=10)
