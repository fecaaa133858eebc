"""``hpo dashboard`` / ``make dashboard``: optuna-dashboard on the same storage and artifacts.

Before the server starts, every analysis the LLM-informed sampler stored is published as a
dashboard note: the study's note lists the analyses (those the sampler's own note already shows,
as its record of them says, are not repeated), and each trial that ran a proposal gets a note with that proposal's
rationale. The server is optuna-dashboard's WSGI app (:func:`optuna_dashboard.wsgi`) in a child
process (``python -m hpo.dashboard``), bound to 127.0.0.1, with the artifact store (checkpoints
and plots show on trials) and ``dashboard.toml`` (plus an ``[llm.openai]`` section when an
endpoint is configured). The storage URL reaches the child on its stdin, never on its command
line, so its password is not visible in ``ps``. The child reads through
:class:`DashboardStorage` (trial cache, only what the dashboard shows); ``--read-only`` wraps
the app in :func:`read_only_app`.

    $ hpo dashboard --storage sqlite:///runs/hpo.db --port 8080
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Container, Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.util import setup_testing_defaults

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.artifacts import choose_artifacts
from hpo.errors import ConfigError, HpoError
from hpo.markdown import analysis_markdown
from hpo.optuna_private import (
    CachedStorage,
    FrozenStudy,
    dashboard_notes,
    speed_up_dashboard,
    storage_of,
    study_id_of,
    study_system_attrs,
)
from hpo.proxy import ProxyStorage, open_proxy
from hpo.rdb_reader import FastReadRDBStorage
from hpo.record import (
    ARTIFACT_PREFIX,
    ARTIFACTS_ATTR,
    CHECKPOINT_REMOVED_PREFIX,
    CONFIG_ATTR,
    DASHBOARD_NOTE_HEADING,
    SAMPLER_NOTE_HEADING,
    TEST_NOTE_HEADING,
    Analysis,
    TestResult,
    link_proposal_trials,
    name_objective,
    read_analyses,
    read_test_results,
)
from hpo.redaction import redact
from hpo.storage import open_existing_storage, sqlite_path

BASE_CONFIG = Path("dashboard.toml")
RUNTIME_CONFIG = Path("runs/dashboard/dashboard.toml")
# how every study system attr hpo writes begins (hpo.record): the dashboard does not show them
HPO_KEY_PREFIX = "hpo:"


# -- notes -----------------------------------------------------------------------------------
def _sections(note: str) -> tuple[str, dict[str, str]]:
    """Split a study note into the user's text (above any heading hpo writes) and the sections
    under :data:`DASHBOARD_NOTE_HEADING`, :data:`TEST_NOTE_HEADING` and the sampler's
    :data:`SAMPLER_NOTE_HEADING`, in whatever order."""
    starts = sorted((i, h) for h in (DASHBOARD_NOTE_HEADING, SAMPLER_NOTE_HEADING,
                                     TEST_NOTE_HEADING) if (i := note.find(h)) >= 0)
    if not starts:
        return note.rstrip(), {}
    sections = {}
    for k, (i, heading) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(note)
        sections[heading] = note[i:end].rstrip()
    return note[:starts[0][0]].rstrip(), sections


def publish_notes(study: optuna.Study) -> int:
    """Write the study's analyses as its dashboard note (and proposal notes on their trials).

    The LLM-informed sampler writes its own study note section (:data:`SAMPLER_NOTE_HEADING`,
    :mod:`hpo.sampler.notes`) as analyses happen; it is kept as it is, and only analyses it does
    not show get a section under :data:`DASHBOARD_NOTE_HEADING`, so no analysis appears twice.
    Text above both headings (a user's own) is kept. The held-out test results (``hpo
    evaluate``) get a short section of their own (:data:`TEST_NOTE_HEADING`). Returns the number
    of analyses stored; idempotent: an unchanged note is not rewritten.

    Fast at 10,000 trials: the notes come from one read of the study's system attrs (not one
    ``get_note`` per proposal, each reading them all), trial notes are looked at only for the
    analyses the sampler's note does not show (it wrote their trial notes itself), and the
    trials are read only for a proposal stored without its trial number.
    """
    attrs = study_system_attrs(study)
    analyses = read_analyses(attrs)
    if any(p.trial_number is None and p.status == "enqueued" for a in analyses
           for p in a.proposals):  # stored before the sampler recorded trial numbers
        link_proposal_trials(analyses, study.get_trials(deepcopy=False))
    sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
    tests = sorted(read_test_results(attrs).values(), key=lambda r: (
        r.val_value is None, sign * (r.val_value or 0.0), r.trial))  # best validation first
    if not analyses and not tests:
        return 0
    notes = dashboard_notes(attrs)
    for a in _publish_study_note(study, analyses, notes.get(None, ""), tests):
        for i, p in enumerate(a.proposals):
            if p.trial_number is not None:
                _publish_trial_note(study, notes, p.trial_number, _proposal_note(a, i))
    return len(analyses)


def _publish_study_note(study: optuna.Study, analyses: list[Analysis], current: str,
                        tests: list[TestResult] | None = None) -> list[Analysis]:
    """Save the study note with a section for the analyses the sampler's section lacks and
    one for the held-out test results; returns those analyses."""
    from optuna_dashboard import save_note

    from hpo.sampler.notes import note_md as md
    from hpo.sampler.notes import recorded_ids

    user, sections = _sections(current)
    shown = recorded_ids(sections.get(SAMPLER_NOTE_HEADING, ""))  # the note's own record
    missing = [a for a in analyses if a.id not in shown]
    parts = [p for p in (user, sections.get(SAMPLER_NOTE_HEADING, "")) if p]
    if missing:
        parts.append(DASHBOARD_NOTE_HEADING + "\n\n"
                     + "\n\n".join(analysis_markdown(a, esc=md, details=True)
                                     for a in missing))
    if tests:
        parts.append(_test_note(tests))
    body = "\n\n".join(parts)
    if body != current.rstrip():
        save_note(study, body)
    return missing


def _proposal_note(a: Analysis, i: int) -> str:
    """The note of the trial that ran proposal ``i`` of analysis ``a``."""
    from hpo.sampler.notes import note_md as md

    p = a.proposals[i]
    return (f"Proposed by analysis **{md(a.id)}** (proposal {i + 1}, "
            f"{md(a.analyst or 'analyst')}).\n\n- why: {md(p.rationale)}\n"
            f"- expected: {md(p.expected_effect)}\n- risk: {md(p.risk)}")


def _publish_trial_note(study: optuna.Study, notes: dict[int | None, str], number: int,
                        note: str) -> None:
    """Save ``note`` on trial ``number`` unless it has it, or a note the sampler or a user
    wrote (kept)."""
    from optuna_dashboard import save_note

    try:
        trial_id = storage_of(study).get_trial_id_from_study_id_trial_number(
            study_id_of(study), number)
    except KeyError:  # a proposal naming a trial that is not there (deleted, other copy)
        return
    existing = notes.get(trial_id, "")
    if existing != note and (not existing or existing.startswith("Proposed by analysis")):
        save_note(optuna.Trial(study, trial_id), note)


def _test_note(tests: list[TestResult]) -> str:
    """The held-out test results (best validation first) in a few lines: one per evaluated
    trial, and the per-class F1 of the first.

        >>> from hpo.record import ClassScore
        >>> r = TestResult(trial=3, sizes={"test": 20}, classes=["a", "b"], accuracy=0.9,
        ...                accuracy_ci=(0.8, 1.0), macro_f1=0.9, macro_f1_ci=(0.8, 1.0),
        ...                per_class=[ClassScore(name="a", precision=1, recall=0.8, f1=0.89,
        ...                                      support=10)],
        ...                checkpoint="x", checkpoint_epoch=2, evaluated_at="2026-01-01")
        >>> print(_test_note([r]).splitlines()[-1])
        - per-class F1 of trial 3: a 0.89
    """
    from hpo.sampler.notes import note_md as md

    lines = [TEST_NOTE_HEADING, ""]
    lines += [f"- trial {r.trial}: {md(r.line())}, checkpoint epoch {r.checkpoint_epoch}"
              + (", EMA weights" if r.ema_used else "") for r in tests]
    first = tests[0]
    lines.append(f"- per-class F1 of trial {first.trial}: "
                 + ", ".join(f"{md(c.name)} {c.f1:.2f}" for c in first.per_class))
    return "\n".join(lines)


def _configured_metric(study: optuna.Study) -> str | None:
    """The objective metric of the hpo config stored in the study (None: not an hpo study)."""
    cfg = study.user_attrs.get(CONFIG_ATTR)
    objective = cfg.get("objective") if isinstance(cfg, dict) else None
    metric = objective.get("metric") if isinstance(objective, dict) else None
    return metric if isinstance(metric, str) and metric else None


def prepare_studies(storage: Any, echo=print) -> None:
    """Before the server starts: publish every study's analyses as notes, and name the objective
    of an hpo study created before hpo named it (the only writes ``hpo dashboard`` makes;
    ``--read-only`` skips them). No study's trials are read (a study may have 10,000)."""
    for name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        metric = _configured_metric(study)
        if metric and name_objective(study, metric):
            echo(f"study {name!r}: objective named {metric!r}")
        n = publish_notes(study)
        if n:
            echo(f"study {name!r}: {n} analyses in its notes")


# -- configuration ---------------------------------------------------------------------------
def resolve_artifact_dir(storage_url: str, cli_value: str | None = None,
                         storage: Any = None, echo=print) -> str:
    """The folder the checkpoints are in, chosen as the workers choose it
    (:func:`hpo.artifacts.choose_artifacts`), so the dashboard shows them: ``--artifacts`` >
    ``$HPO_ARTIFACTS`` > the studies' stored location (``artifacts.path`` of their configs) >
    ``artifacts/`` beside the SQLite file > runs/artifacts. The dashboard has one artifact
    folder, so when the studies name several the first is taken and the others are named in a
    warning."""
    recorded = None
    if storage is not None and not cli_value and not os.environ.get("HPO_ARTIFACTS"):
        paths = _study_artifact_paths(storage)
        folders = [p for p in paths if not p.startswith("s3://")]
        recorded = folders[0] if folders else None
        for other in paths:
            if other != recorded:
                echo(f"warning: artifacts.path {other!r} of a study is not shown (the dashboard "
                     f"shows one artifact folder{': ' + recorded if recorded else ''}; s3:// "
                     "needs [artifact_store.boto3] in dashboard.toml)")
    location, source = choose_artifacts(storage_url, cli_value=cli_value, recorded=recorded)
    if location.startswith("s3://"):
        raise ConfigError("artifacts", source, location,
                          "a folder (for s3:// use optuna-dashboard --from-config with "
                          "[artifact_store.boto3])")
    return location


def _stored_configs(storage: Any) -> list[Any]:
    """The hpo configs stored in the storage's studies, oldest study first (from the
    studies' attrs: no trial is read, unlike ``optuna.get_all_study_summaries``)."""
    return [s.user_attrs.get(CONFIG_ATTR) for s in sorted(storage.get_all_studies())]


def _study_artifact_paths(storage: Any) -> list[str]:
    """The distinct artifact locations of the storage's studies, oldest study first: each
    study's ``artifacts.path`` (its stored config), else the location its first run recorded
    (:data:`~hpo.record.ARTIFACTS_ATTR`), as :func:`hpo.artifacts.choose_artifacts` orders them."""
    paths: list[str] = []
    for study in sorted(storage.get_all_studies()):
        cfg = study.user_attrs.get(CONFIG_ATTR)
        art = cfg.get("artifacts") if isinstance(cfg, dict) else None
        path = (art.get("path") if isinstance(art, dict) else None) \
            or study.user_attrs.get(ARTIFACTS_ATTR)
        if isinstance(path, str) and path and path not in paths:
            paths.append(path)
    return paths


def llm_endpoint(storage: Any) -> dict[str, Any] | None:
    """The OpenAI-compatible endpoint the LLM sampler uses: env first, then any study's config."""
    if os.environ.get("HPO_LLM_BASE_URL") and os.environ.get("HPO_LLM_MODEL"):
        return {"base_url": os.environ["HPO_LLM_BASE_URL"], "model": os.environ["HPO_LLM_MODEL"],
                "api_key_env": os.environ.get("HPO_LLM_API_KEY_ENV", "OPENAI_API_KEY")}
    for cfg in _stored_configs(storage):
        llm = (cfg or {}).get("sampler", {}).get("llm") if isinstance(cfg, dict) else None
        if isinstance(llm, dict) and llm.get("base_url") and llm.get("model"):
            return llm
    return None


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_config(endpoint: dict[str, Any] | None, base: Path = BASE_CONFIG,
                 out: Path = RUNTIME_CONFIG) -> Path:
    """``dashboard.toml``, plus an ``[llm.openai]`` section for ``endpoint`` (no key inside)."""
    text = base.read_text(encoding="utf-8") if base.is_file() else "[optuna_dashboard]\n"
    if endpoint:
        key_env = endpoint.get("api_key_env")
        text += ("\n# added by hpo dashboard: the LLM sampler's endpoint\n[llm.openai]\n"
                 f"model = {_toml_str(endpoint['model'])}\nuse_chat_completions_api = true\n"
                 f"[llm.openai.client]\nbase_url = {_toml_str(endpoint['base_url'])}\n")
        if not (key_env and os.environ.get(key_env)):
            text += 'api_key = "unused"   # a local endpoint with no key\n'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


# -- server ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(storage_url: str, port: int = 8080, host: str = "127.0.0.1",
          artifacts: str | None = None, publish: bool = True, quiet: bool = True,
          read_only: bool = False, echo=print) -> subprocess.Popen:
    """Publish analyses as notes (:func:`prepare_studies`), then start optuna-dashboard in a
    child process (not waited on). The storage URL goes to the child on its stdin: no password
    on any command line. ``read_only``: nothing is written before, and the server refuses
    every request that would change a study (:func:`read_only_app`)."""
    storage = open_existing_storage(storage_url)  # a mistyped SQLite path creates nothing
    if publish and not read_only:
        prepare_studies(storage, echo=echo)
    artifact_dir = resolve_artifact_dir(storage_url, artifacts, storage=storage, echo=echo)
    Path(artifact_dir).mkdir(parents=True, exist_ok=True)
    endpoint = llm_endpoint(storage)
    if hasattr(storage, "engine"):  # the child opens its own connections (a proxy: none held)
        storage.engine.dispose()
    config = write_config(endpoint)
    env = dict(os.environ)
    env.pop("HPO_STORAGE", None)  # the child reads the URL from stdin only
    if endpoint and endpoint.get("api_key_env") and os.environ.get(endpoint["api_key_env"]):
        env["OPENAI_API_KEY"] = os.environ[endpoint["api_key_env"]]
    cmd = [sys.executable, "-m", "hpo.dashboard", "--host", host, "--port", str(port),
           "--artifact-dir", artifact_dir, "--from-config", str(config)]
    if quiet:
        cmd.append("--quiet")
    if read_only:
        cmd.append("--read-only")
    echo(f"optuna-dashboard on http://{host}:{port}/dashboard/  storage {redact(storage_url)}  "
         f"artifacts {artifact_dir}" + (f"  LLM {endpoint['base_url']}" if endpoint else "")
         + ("  read-only" if read_only else ""))
    sink = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=sink, stderr=sink,
                            text=True)
    assert proc.stdin is not None
    proc.stdin.write(storage_url + "\n")
    proc.stdin.close()
    return proc


def wait_until_up(port: int, host: str = "127.0.0.1", timeout: float = 30.0,
                  proc: subprocess.Popen | None = None) -> None:
    """Block until the server answers HTTP (raises if it exits or times out)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"optuna-dashboard exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/api/meta", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"optuna-dashboard did not answer on {host}:{port} in {timeout:.0f}s")


def serve(storage_url: str, port: int = 8080, host: str = "127.0.0.1",
          artifacts: str | None = None, read_only: bool = False, echo=print) -> int:
    """Run the dashboard in the foreground until Ctrl-C or SIGTERM (which stop the server child
    too: it is never left behind); returns its exit code, 0 when stopped."""
    proc = start(storage_url, port=port, host=host, artifacts=artifacts, quiet=False,
                 read_only=read_only, echo=echo)

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the child process: `python -m hpo.dashboard` (started by :func:`start`) ------------------
class _ThreadedWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class DashboardView:
    """The storage as the dashboard reads it (a mixin over Optuna's trial cache of an RDB
    storage, :class:`DashboardStorage`, or over the gRPC proxy client,
    :class:`ProxyDashboardStorage`):

    * without hpo's own study system attrs (analyses, ledger, claims, checkpoint records):
      optuna-dashboard scans every study system attr once per trial for its note and artifacts,
      and hpo's are not for it;
    * without the artifact entries of checkpoints that retention removed
      (:meth:`hpo.checkpoint.Checkpoints.prune` records them in the study): a trial page lists
      only checkpoints that are there to download. (Optuna cannot edit a finished trial's
      attrs, so the entry stays in storage.)
    """

    def get_all_studies(self) -> list[FrozenStudy]:
        """The studies, their system attrs without hpo's."""
        studies = super().get_all_studies()
        for s in studies:
            s.system_attrs = {k: v for k, v in s.system_attrs.items()
                              if not k.startswith(HPO_KEY_PREFIX)}
        return studies

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        """The trials, without the artifact entries of removed checkpoints."""
        return self._without_removed(study_id, super().get_all_trials(study_id, deepcopy,
                                                                      states))

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        """The best trial, without the artifact entries of removed checkpoints."""
        return self._without_removed(study_id, [super().get_best_trial(study_id)])[0]

    def _without_removed(self, study_id: int, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        """``trials``, a copy of each that lists a removed checkpoint made without it (the
        cached trials stay as stored)."""
        removed = {ARTIFACT_PREFIX + k[len(CHECKPOINT_REMOVED_PREFIX):]
                   for k in self.get_study_system_attrs(study_id)
                   if k.startswith(CHECKPOINT_REMOVED_PREFIX)}
        if not removed:
            return trials
        shown = []
        for t in trials:
            if not removed.isdisjoint(t.system_attrs):
                t = copy.copy(t)
                t.system_attrs = {k: v for k, v in t.system_attrs.items() if k not in removed}
            shown.append(t)
        return shown


class DashboardStorage(DashboardView, CachedStorage):
    """An RDB storage as the dashboard reads it (:class:`DashboardView`), behind Optuna's trial
    cache: a finished trial is read once, so a poll of a 10,000-trial study reads only new and
    running trials (optuna-dashboard alone re-reads them all every 10 s)."""


class ProxyDashboardStorage(DashboardView, ProxyStorage):
    """A study behind ``hpo storage-proxy`` as the dashboard reads it (:class:`DashboardView`);
    the proxy client keeps finished trials itself."""


def warm_up(app: Callable[..., Any], storage: DashboardView) -> None:
    """View every study once through ``app`` (optuna-dashboard's WSGI app), in the order its
    study list shows them; the server does it in the background as it starts. The first view
    of a 10,000-trial study reads its trials (Optuna's trial cache keeps them), walks its search
    space and serializes every trial (:func:`~hpo.optuna_private.speed_up_dashboard` keeps
    those); a request meanwhile waits for that work instead of doing it again, and later views
    redo only what changed."""
    ids = sorted(storage.get_study_id_from_name(s.study_name) for s in storage.get_all_studies())
    for study_id in ids:
        environ: dict[str, Any] = {}
        setup_testing_defaults(environ)
        environ.update(PATH_INFO=f"/api/studies/{study_id}", QUERY_STRING="after=0")
        for _ in app(environ, lambda *_args: None):
            pass


# what a read-only dashboard still answers besides GET/HEAD: the LLM queries (they read the
# study and ask the configured endpoint; nothing is written)
READ_ONLY_POSTS = ("/api/llm/",)


# the icons of optuna-dashboard's buttons and menu items that change a study (MUI icons carry
# data-testid="<Name>Icon"): delete, rename, create, edit a note, upload an artifact
WRITE_ICONS = ("Delete", "DriveFileRenameOutline", "AddBox", "Add", "Edit", "ModeEdit",
               "UploadFile", "Save")
_HIDDEN = ", ".join(f'{tag}:has(svg[data-testid="{icon}Icon"])'
                    for icon in WRITE_ICONS for tag in ("button", "li[role=menuitem]"))
# added to every HTML page of a read-only dashboard: the write controls hidden, and a banner
# (plain HTML and CSS: optuna-dashboard's Content-Security-Policy forbids inline scripts)
READ_ONLY_STYLE = (
    f"<style>{_HIDDEN} {{display: none !important}} #hpo-read-only {{position: fixed; "
    "bottom: 8px; right: 8px; z-index: 9999; padding: 4px 10px; border-radius: 4px; "
    "background: #555; color: #fff; font: 13px sans-serif; opacity: 0.85}}</style>")
READ_ONLY_BANNER = '<div id="hpo-read-only">read-only (hpo dashboard --read-only)</div>'


def _with_read_only_head(app: Callable[..., Any], environ: dict[str, Any],
                         start_response: Callable[..., Any]) -> Any:
    """``app``'s answer, with :data:`READ_ONLY_STYLE` and :data:`READ_ONLY_BANNER` in an HTML
    page."""
    seen: dict[str, Any] = {}

    def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen.update(status=status, headers=headers, exc_info=exc_info)
        return lambda _data: None  # the legacy write() callable; optuna-dashboard returns bodies

    chunks = app(environ, capture)
    headers = seen["headers"]
    if not any(k.lower() == "content-type" and v.startswith("text/html") for k, v in headers):
        start_response(seen["status"], headers, seen["exc_info"])
        return chunks  # streamed as it is (artifacts, JSON, the script bundle)
    try:
        body = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    body = body.replace(b"</head>", READ_ONLY_STYLE.encode() + b"</head>", 1)
    body = body.replace(b"<body>", b"<body>" + READ_ONLY_BANNER.encode(), 1)
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
    start_response(seen["status"], [*headers, ("Content-Length", str(len(body)))],
                   seen["exc_info"])
    return [body]


def read_only_app(app: Callable[..., Any]) -> Callable[..., Any]:
    """``app`` (optuna-dashboard's WSGI app) refusing, with HTTP 403, every request that could
    change a study: any method but GET and HEAD (delete, rename, create, notes, tell, user
    attrs, artifacts upload and delete, preferences, schema migration), except the LLM queries
    (:data:`READ_ONLY_POSTS`). optuna-dashboard has no read-only mode and no authentication;
    its views change nothing on GET. Its pages hide the buttons that would be refused
    (:data:`WRITE_ICONS`) and say "read-only" in a corner.

        >>> def page(environ, start_response):
        ...     start_response("200 OK", [("Content-Type", "text/html")])
        ...     return [b"<html><head></head><body></body></html>"]
        >>> answer = read_only_app(page)({"REQUEST_METHOD": "GET"}, lambda *a: None)
        >>> b"hpo-read-only" in answer[0]
        True
    """

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "")
        if method == "GET":
            return _with_read_only_head(app, environ, start_response)
        if method == "HEAD" or (method == "POST" and path.startswith(READ_ONLY_POSTS)):
            return app(environ, start_response)
        body = json.dumps({"reason": "read-only dashboard (hpo dashboard --read-only)"}).encode()
        start_response("403 Forbidden", [("Content-Type", "application/json"),
                                         ("Content-Length", str(len(body)))])
        return [body]

    return guarded


def _dashboard_storage(url: str) -> DashboardView:
    """The storage as optuna-dashboard's own CLI opens it (no schema check or table creation:
    :func:`start` opened it with hpo's checks already), seen through :class:`DashboardStorage`;
    a ``grpc://`` URL through :class:`ProxyDashboardStorage`."""
    if url.startswith("grpc://"):
        return open_proxy(url, kind=ProxyDashboardStorage)
    engine_kwargs: dict[str, Any] = (
        {"connect_args": {"timeout": 60}} if sqlite_path(url) is not None
        else {"pool_pre_ping": True})
    try:
        return DashboardStorage(FastReadRDBStorage(url, engine_kwargs=engine_kwargs,
                                                   skip_compatibility_check=True,
                                                   skip_table_creation=True))
    except Exception as exc:  # noqa: BLE001 - driver errors differ per database
        raise ConfigError("storage", "storage", redact(url),
                          f"a reachable database ({type(exc).__name__})") from None


def _llm_provider(config: dict[str, Any]) -> Any:
    """optuna-dashboard's OpenAI provider from the ``[llm.openai]`` section, else None."""
    section = config.get("llm", {}).get("openai")
    if not section:
        return None
    try:
        import openai
        import optuna_dashboard.llm.openai as dashboard_openai
    except ImportError as exc:
        print(f"hpo dashboard: LLM features off ({exc}; pip install openai)", file=sys.stderr)
        return None
    return dashboard_openai.OpenAI(openai.OpenAI(**section.get("client", {})),
                                   model=section["model"],
                                   use_chat_completions_api=section.get(
                                       "use_chat_completions_api", False))


def _child(argv: Sequence[str] | None = None) -> int:
    """Serve optuna-dashboard's WSGI app; the storage URL is read from stdin (one line)."""
    import argparse
    import tomllib
    from wsgiref.simple_server import make_server

    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import wsgi

    parser = argparse.ArgumentParser(prog="python -m hpo.dashboard",
                                     description="the server of `hpo dashboard` (storage URL "
                                                 "on stdin)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--artifact-dir", required=True)
    parser.add_argument("--from-config")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--read-only", action="store_true")
    args = parser.parse_args(argv)
    url = sys.stdin.readline().strip()
    try:
        if not url:
            raise ConfigError("stdin", "storage", "", "a storage URL on the first line")
        config = tomllib.loads(Path(args.from_config).read_text(encoding="utf-8")) \
            if args.from_config else {}
        storage = _dashboard_storage(url)
        speed_up_dashboard()
        dashboard = wsgi(storage,
                         artifact_store=FileSystemArtifactStore(args.artifact_dir),
                         llm_provider=_llm_provider(config))
        app = read_only_app(dashboard) if args.read_only else dashboard
        httpd = make_server(args.host, args.port, app, server_class=_ThreadedWSGIServer,
                            handler_class=_QuietHandler if args.quiet else WSGIRequestHandler)
    except HpoError as exc:
        print(f"hpo dashboard: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if not args.quiet:
        print(f"Listening on http://{args.host}:{args.port}/", file=sys.stderr)
    threading.Thread(target=warm_up, args=(dashboard, storage), daemon=True).start()
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(_child())
