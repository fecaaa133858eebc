"""The LLM analyst through the real ``hpo study`` process against a local fake
OpenAI-compatible endpoint (:class:`test_sampler_helpers.FakeLLM`, a real HTTP server in this
process), with tiny real trials.

- A round lost in a crash after its reply was cached is redone by the next run from the history
  as of its trigger: the same prompt, so the ledger shows a cache hit and the endpoint gets no
  second request.
- An endpoint slower than ``sampler.wait_for_analysis_s``: the run says it waits and for how
  long, stops waiting, exits 0; the request is in the ledger as ``abandoned`` and counts against
  ``max_calls``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys

import optuna
import pytest
import yaml
from conftest import REPO
from optuna.trial import TrialState
from test_sampler_helpers import FakeLLM
from waiting import wait_for

from hpo.record import CLAIM_PREFIX
from hpo.sampler import load_analyses
from hpo.sampler.history import from_study
from hpo.sampler.ledger import Ledger, prompt_hash
from hpo.sampler.llm import LLMAnalyst, LLMFailure
from hpo.sampler.settings import LLMConfig
from hpo.sampler.store import system_attrs
from hpo.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {"params": {
    "lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
    "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
}}
REPLY = json.dumps({
    "summary": "adamw with a mid learning rate looks best",
    "diagnosis": [{"state": "exploring", "summary": "two trials so far", "evidence": []}],
    "proposals": [{"params": {"lr": 0.004, "optimizer": "adamw"}, "rationale": "centre",
                   "expected_effect": "better", "risk": "low", "confidence": 0.6}]})


def write_study(tmp_path, base_url: str, n_trials: int, **sampler) -> str:
    (tmp_path / "studies").mkdir(exist_ok=True)
    (tmp_path / "search_spaces").mkdir(exist_ok=True)
    (tmp_path / "search_spaces" / "r.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    path = tmp_path / "studies" / "r.yaml"
    path.write_text(yaml.safe_dump({
        "seed": 0, "dataset": {"name": "digits"}, "model": {"name": "test_vit", "image_size": 16},
        "search_space": "r", "train": {"batch_size": 128}, "objective": {"metric": "val_accuracy"},
        "budget": {"n_trials": n_trials, "max_epochs": 1}, "pruner": {"type": "none"},
        "workers": {"heartbeat_interval": 1, "grace_period": 2},  # a killed trial is retried soon
        "sampler": {"type": "llm-tpe", "analyst": "llm", "every_n_trials": 2,
                    "n_startup_trials": 2, **sampler,
                    "llm": {"base_url": base_url, "model": "fake-model", "max_retries": 0,
                            "response_format": "json_schema", "timeout": 60}}}))
    return str(path)


def hpo_study(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpo.cli", "study", *args, "--no-progress"]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "HPO_STORAGE"} | {"PYTHONUNBUFFERED": "1"}


def running(db) -> list[int]:
    with sqlite3.connect(db, timeout=60) as con:
        return [n for (n,) in con.execute("SELECT number FROM trials WHERE state = 'RUNNING'")]


def cached_replies(db) -> list[str]:
    with sqlite3.connect(db, timeout=60) as con:
        return [k for (k,) in con.execute("SELECT key FROM study_system_attributes "
                                          "WHERE key LIKE 'hpo:llm_cache:%'")]


@pytest.mark.timeout(600)
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_round_lost_after_its_reply_was_cached_replays_it(tmp_path):
    fake = FakeLLM([("ok", REPLY)])
    db = tmp_path / "r.db"
    url = f"sqlite:///{db}"
    path = write_study(tmp_path, fake.url, n_trials=4)
    # The storage refuses to store the round's analysis (an injected fault: a SQLite trigger),
    # so the kill below always lands after the reply was cached and before the analysis was
    # stored, whatever the machine's speed.
    optuna.storages.RDBStorage(url)  # the schema, so the trigger can be made before the run
    with sqlite3.connect(db) as con:
        con.execute("CREATE TRIGGER hold_round BEFORE INSERT ON study_system_attributes "
                    "WHEN NEW.key LIKE 'hpo:analysis:%' BEGIN "
                    "SELECT RAISE(ABORT, 'test: the storage refuses the analysis'); END")
    try:
        log = tmp_path / "first.log"
        with log.open("w") as out:
            first = subprocess.Popen(hpo_study(path, "--storage", url), cwd=REPO, env=env(),
                                     stdout=out, stderr=subprocess.STDOUT)
        try:
            # the reply of round every_n-0002 is cached and trial 2 is training
            wait_for(lambda: (cached_replies(db) and running(db)) or first.poll() is not None,
                     what="the round's reply cached in the storage, trial 2 running", every=0.05)
            assert first.poll() is None, log.read_text()
            first.send_signal(signal.SIGKILL)  # a crash: no cleanup of any kind
            first.wait(timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
        assert first.returncode == -signal.SIGKILL
        study = optuna.load_study(study_name="r", storage=url)
        assert not load_analyses(study)  # lost: claimed, reply paid and cached, not stored
        assert any(k.startswith(CLAIM_PREFIX) for k in system_attrs(study))
        (paid,) = Ledger(study).entries()
        assert paid["outcome"] == "ok" and paid["analysis"] == "every_n-0002"
        assert len(fake.requests) == 1
        with sqlite3.connect(db) as con:
            con.execute("DROP TRIGGER hold_round")
        # the killed trial is found dead (its heartbeat stopped), failed and queued for retry,
        # as the next run would: the study now has 3 finished trials, the round saw 2
        beating = optuna.load_study(study_name="r", storage=open_storage(
            url, heartbeat_interval=1, grace_period=2, max_retries=3))
        wait_for(lambda: optuna.storages.fail_stale_trials(beating) or beating.get_trials(
            states=(TrialState.FAIL,)), what="the killed trial failed as stale")
        assert [t.number for t in from_study(beating, {}).finished()] == [0, 1, 2]

        # the next run redoes the round as of its trigger (trials 0 and 1): a cache hit
        second = subprocess.run(hpo_study(path, "--storage", url), cwd=REPO, env=env(),
                                capture_output=True, text=True, timeout=500, check=False)
        assert second.returncode == 0, second.stdout + second.stderr
    finally:
        fake.close()
    study = optuna.load_study(study_name="r", storage=url)
    entries = [e for e in Ledger(study).entries() if e["analysis"] == "every_n-0002"]
    assert [e["outcome"] for e in entries] == ["ok", "cache_hit"], entries
    assert entries[1]["prompt_hash"] == paid["prompt_hash"]
    # the endpoint got that prompt once: no second request for the round, nothing paid twice
    # (a later round, e.g. every_n-0004 once the killed trial failed and was retried, is new)
    sent = [prompt_hash(r["body"]["model"], r["body"]["messages"],
                        r["body"]["response_format"]["json_schema"]["schema"])[:16]
            for r in fake.requests]
    assert sent.count(paid["prompt_hash"]) == 1, sent
    assert len(sent) == sum(e["outcome"] == "ok" for e in Ledger(study).entries())
    a = {a["id"]: a for a in load_analyses(study)}["every_n-0002"]
    assert a["analyst"] == "llm" and a["n_trials_seen"] == 2
    assert a["ledger"] == [entries[1]["id"]] and a["summary"].startswith("adamw")


@pytest.mark.timeout(600)
def test_slow_endpoint_is_abandoned_recorded_and_counted(tmp_path):
    fake = FakeLLM([("slow", 30.0)])  # longer than the run waits (2 s), shorter than timeout
    url = f"sqlite:///{tmp_path / 'r.db'}"
    path = write_study(tmp_path, fake.url, n_trials=2, wait_for_analysis_s=2)
    try:
        out = subprocess.run(hpo_study(path, "--storage", url), cwd=REPO, env=env(),
                             capture_output=True, text=True, timeout=500, check=False)
        requests = len(fake.requests)
    finally:
        fake.close()
    assert out.returncode == 0, out.stdout + out.stderr
    assert ("waiting up to 2 s for the analysis of round every_n-0002 (Ctrl-C to stop waiting)"
            in out.stdout), out.stdout
    assert ("stopped waiting for the analysis of round every_n-0002 (no analysis within 2 s "
            "(sampler.wait_for_analysis_s)); 1 LLM request(s) recorded as abandoned in the "
            "ledger") in out.stdout, out.stdout
    assert requests == 1
    study = optuna.load_study(study_name="r", storage=url)
    (entry,) = Ledger(study).entries()  # recorded when sent, its outcome when the run gave up
    assert entry["outcome"] == "abandoned" and entry["analysis"] == "every_n-0002"
    assert "stopped waiting" in entry["error"]
    assert Ledger(study).usage()["calls"] == 1  # counted against max_calls
    assert not load_analyses(study)  # no analysis; the round is released for the next run
    claim = system_attrs(study)[CLAIM_PREFIX + "every_n-0002"]
    assert "stopped waiting" in claim["abandoned"]

    # with max_calls 1 the abandoned request used the budget: the next call is refused unsent
    cfg = LLMConfig(base_url=fake.url, model="fake-model", max_calls=1)
    history = from_study(study, {n: dict(p) for n, p in SPACE["params"].items()})
    with pytest.raises(LLMFailure, match="budget"):
        LLMAnalyst(cfg, Ledger(study)).analyse(history, "every_n-0002")
    assert [e["outcome"] for e in Ledger(study).entries()] == ["abandoned", "budget"]
