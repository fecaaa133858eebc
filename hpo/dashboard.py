"""``hpo dashboard`` / ``make dashboard``: optuna-dashboard on the same storage and artifacts.

Before the server starts, every analysis the LLM-informed sampler stored is published as a
dashboard note: the study's note lists the analyses, and each trial that ran a proposal gets a
note with that proposal's rationale. The server is optuna-dashboard's own CLI, bound to
127.0.0.1, with ``--artifact-dir`` (checkpoints and plots show on trials) and ``--from-config``
(``dashboard.toml``, plus an ``[llm.openai]`` section when an endpoint is configured).

    $ hpo dashboard --storage sqlite:///runs/hpo.db --port 8080
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna

from hpo.errors import ConfigError
from hpo.report.analyses import Analysis, read_analyses
from hpo.report.render import fmt, md
from hpo.storage import open_storage, redact, sqlite_path

BASE_CONFIG = Path("dashboard.toml")
RUNTIME_CONFIG = Path("runs/dashboard/dashboard.toml")
NOTE_HEADING = "## Analyses (written by hpo)"


# -- notes -----------------------------------------------------------------------------------
def analysis_markdown(a: Analysis) -> str:
    """One analysis as dashboard-note Markdown (every stored text escaped)."""
    who = " / ".join(md(x) for x in (a.analyst, a.model) if x)
    lines = [f"### {md(a.id)}" + (f" ({who})" if who else "")]
    if a.n_trials_seen is not None:
        lines.append(f"after {a.n_trials_seen} finished trials")
    if a.summary:
        lines.append(f"\n{md(a.summary)}")
    if a.fallback_reason:
        lines.append(f"\nrules took over: {md(a.fallback_reason)}")
    for d in a.diagnoses:
        lines.append(f"\n**{md(d.state)}**: {md(d.summary)}")
        lines += [f"- {md(e)}" for e in d.evidence]
    for i, p in enumerate(a.proposals):
        trial = f"trial {p.trial_number}" if p.trial_number is not None else "not run"
        lines.append(f"\n**proposal {i}** ({md(p.status or 'proposed')}, {trial}, confidence "
                     f"{fmt(p.confidence)}): {md(json.dumps(p.params, sort_keys=True))}")
        for label, text in (("why", p.rationale), ("expected", p.expected_effect),
                            ("risk", p.risk)):
            if text:
                lines.append(f"- {label}: {md(text)}")
    return "\n".join(lines)


def publish_notes(study: optuna.Study) -> int:
    """Write the study's analyses as its dashboard note (and proposal notes on their trials).

    Text above the hpo heading in an existing note (a user's own) is kept; returns the number of
    analyses published. Idempotent: an unchanged note is not rewritten.
    """
    from optuna_dashboard import get_note, save_note

    trials = study.get_trials(deepcopy=False)
    analyses = read_analyses(study, trials)
    if not analyses:
        return 0
    ours = NOTE_HEADING + "\n\n" + "\n\n".join(analysis_markdown(a) for a in analyses)
    current = get_note(study) or ""
    user = current.split(NOTE_HEADING)[0].rstrip()
    body = f"{user}\n\n{ours}" if user else ours
    # the sampler may already have written these analyses as the note: then leave it as it is
    covered = all(a.id in user for a in analyses)
    if body != current and not covered:
        save_note(study, body)
    by_number = {t.number: t for t in trials}
    for a in analyses:
        for i, p in enumerate(a.proposals):
            t = by_number.get(p.trial_number) if p.trial_number is not None else None
            if t is None:
                continue
            trial = optuna.Trial(study, t._trial_id)
            note = (f"Proposed by analysis **{md(a.id)}** (proposal {i}, "
                    f"{md(a.analyst or 'analyst')}).\n\n- why: {md(p.rationale)}\n"
                    f"- expected: {md(p.expected_effect)}\n- risk: {md(p.risk)}")
            existing = get_note(trial) or ""
            if existing != note and (not existing or existing.startswith("Proposed by analysis")):
                save_note(trial, note)  # never over a note the sampler or a user wrote
    return len(analyses)


# -- configuration ---------------------------------------------------------------------------
def resolve_artifact_dir(storage_url: str, cli_value: str | None = None) -> str:
    """``--artifacts`` > ``$HPO_ARTIFACTS`` > ``artifacts/`` beside the SQLite file > runs/artifacts.

    The same order as the checkpoints use (:mod:`hpo.checkpoint`), so the dashboard shows them.
    """
    location = cli_value or os.environ.get("HPO_ARTIFACTS")
    if not location:
        db = sqlite_path(storage_url)
        location = str(db.parent / "artifacts") if db is not None else "runs/artifacts"
    if location.startswith("s3://"):
        raise ConfigError("artifacts", "--artifacts", location,
                          "a folder (for s3:// use optuna-dashboard --from-config with "
                          "[artifact_store.boto3])")
    return location


def llm_endpoint(storage: Any) -> dict[str, Any] | None:
    """The OpenAI-compatible endpoint the LLM sampler uses: env first, then any study's config."""
    if os.environ.get("HPO_LLM_BASE_URL") and os.environ.get("HPO_LLM_MODEL"):
        return {"base_url": os.environ["HPO_LLM_BASE_URL"], "model": os.environ["HPO_LLM_MODEL"],
                "api_key_env": os.environ.get("HPO_LLM_API_KEY_ENV", "OPENAI_API_KEY")}
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        cfg = summary.user_attrs.get("hpo_config")
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


def _executable() -> list[str]:
    exe = Path(sys.executable).with_name("optuna-dashboard")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("optuna-dashboard")
    if found:
        return [found]
    return [sys.executable, "-c", "from optuna_dashboard._cli import main; main()"]


def start(storage_url: str, port: int = 8080, host: str = "127.0.0.1",
          artifacts: str | None = None, publish: bool = True, quiet: bool = True,
          echo=print) -> subprocess.Popen:
    """Publish analyses as notes, then start optuna-dashboard in a subprocess (not waited on)."""
    storage = open_storage(storage_url)
    if publish:
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
            n = publish_notes(optuna.load_study(study_name=s.study_name, storage=storage))
            if n:
                echo(f"study {s.study_name!r}: {n} analyses published as notes")
    artifact_dir = resolve_artifact_dir(storage_url, artifacts)
    Path(artifact_dir).mkdir(parents=True, exist_ok=True)
    endpoint = llm_endpoint(storage)
    config = write_config(endpoint)
    env = dict(os.environ)
    if endpoint and endpoint.get("api_key_env") and os.environ.get(endpoint["api_key_env"]):
        env["OPENAI_API_KEY"] = os.environ[endpoint["api_key_env"]]
    cmd = [*_executable(), storage_url, "--host", host, "--port", str(port),
           "--artifact-dir", artifact_dir, "--from-config", str(config), "--server", "wsgiref"]
    if quiet:
        cmd.append("--quiet")
    echo(f"optuna-dashboard on http://{host}:{port}/dashboard/  storage {redact(storage_url)}  "
         f"artifacts {artifact_dir}" + (f"  LLM {endpoint['base_url']}" if endpoint else ""))
    sink = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(cmd, env=env, stdout=sink, stderr=sink)


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
          artifacts: str | None = None, echo=print) -> int:
    """Run the dashboard in the foreground until Ctrl-C; returns its exit code."""
    proc = start(storage_url, port=port, host=host, artifacts=artifacts, quiet=False, echo=echo)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=10)
        return 0
