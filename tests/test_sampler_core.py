"""The llm-tpe sampler with the rules analyst on a quadratic (no PyTorch), real SQLite."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from optuna_dashboard import get_note
from test_sampler_helpers import SPACE, make_study, quadratic

from hpo.sampler import load_analyses, store
from hpo.sampler.analysis import reply_schema
from hpo.sampler.history import History, TrialRecord, compact, from_study
from hpo.sampler.ledger import prompt_hash
from hpo.sampler.prompt import build_messages
from hpo.sampler.proposals import proposal_counts

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'hpo.db'}"


def test_space_check_clips_snaps_drops_and_records():
    clean, notes = SPACE.check({"lr": 5.0, "x": "2.5", "n": 4, "opt": "SGD", "bogus": 1},
                               fill={"momentum": 0.9})
    assert clean == {"lr": 1.0, "x": 2.5, "n": 5, "opt": "sgd", "momentum": 0.9}
    assert any("bogus" in n for n in notes) and any("clipped" in n for n in notes)
    assert any("snapped" in n for n in notes) and any("momentum: missing" in n for n in notes)
    clean, notes = SPACE.check({"lr": 0.01, "x": 0.0, "n": 3, "opt": "adamw", "momentum": 0.9})
    assert "momentum" not in clean and any("condition" in n for n in notes)


def test_llm_tpe_rules_on_quadratic(url):
    study = make_study(url, every_n_trials=5)
    study.optimize(quadratic, n_trials=24)
    analyses = load_analyses(study)
    assert [a["id"] for a in analyses][:2] == ["every_n-0005", "every_n-0010"]
    trials = study.get_trials()
    sources = [t.user_attrs.get("hpo_source", "tpe") for t in trials]
    assert "rules" in sources and sources.count("tpe") >= 2 * len(trials) // 3 - 1
    n_prop, n_all = proposal_counts(study)
    assert n_prop <= n_all / 3 + 1e-9
    enqueued = [p for a in analyses for p in a["proposals"] if p["status"] == "enqueued"]
    assert enqueued
    for p in enqueued:  # the enqueued trial ran the checked params, with its source and notes
        t = trials[p["trial_number"]]
        assert t.user_attrs["hpo_analysis"] in {a["id"] for a in analyses}
        assert all(t.params[k] == pytest.approx(v) for k, v in p["params"].items())
        handle = SimpleNamespace(storage=study._storage, study=study, _trial_id=t._trial_id)
        assert "Rationale" in get_note(handle)
        assert isinstance(p["diff"], list) and 0 <= p["confidence"] <= 1
    note = get_note(study)
    assert "every_n-0005" in note and "Proposal 1" in note
    a = analyses[0]
    assert a["diagnosis"] and a["best_trial"] is not None and a["analyst"] == "rules"
    # all finished: no proposal duplicates an earlier trial
    keys = [tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE]
    assert len(keys) == len(set(keys))


def test_rules_are_deterministic_given_seed(tmp_path):
    def run(i):
        study = make_study(f"sqlite:///{tmp_path / f'd{i}.db'}", seed=3, every_n_trials=4)
        study.optimize(quadratic, n_trials=12)
        return [(t.params, t.user_attrs.get("hpo_source")) for t in study.trials]

    assert run(0) == run(1)


def test_share_cap_and_dedup(url):
    study = make_study(url, every_n_trials=1, max_proposal_share=0.2, max_proposals=5)
    study.optimize(quadratic, n_trials=15)
    n_prop, n_all = proposal_counts(study)
    assert 0 < n_prop <= 0.2 * n_all + 1e-9
    statuses = {p["status"] for a in load_analyses(study) for p in a["proposals"]}
    assert "capped" in statuses


def test_duplicates_are_skipped(url):
    study = make_study(url, every_n_trials=100)
    study.optimize(quadratic, n_trials=6)
    sampler = study.sampler
    history = sampler.history(study)
    a1 = sampler.run_analysis(study, history, "manual-a", "manual")
    a2 = sampler.run_analysis(study, history, "manual-b", "manual")  # same history, same seed
    assert any(p.status == "enqueued" for p in a1.proposals)
    assert all(p.status in ("duplicate", "capped") for p in a2.proposals)


def test_patience_trigger_and_background_thread(url):
    study = make_study(url, every_n_trials=50, patience=3, background=True)
    study.optimize(quadratic, n_trials=20)
    assert study.sampler.wait(timeout=60)
    ids = [a["id"] for a in load_analyses(study)]
    assert ids and all(i.startswith("patience-") for i in ids)


def test_warm_start_from_another_storage(tmp_path):
    old_url = f"sqlite:///{tmp_path / 'old.db'}"
    old = make_study(old_url, name="old", every_n_trials=100)
    old.optimize(quadratic, n_trials=8)
    new = make_study(f"sqlite:///{tmp_path / 'new.db'}", name="new",
                     warm_start_from=[f"{old_url}#old"], context={"n_trials": 12})
    new.optimize(quadratic, n_trials=3)
    analyses = load_analyses(new)
    assert analyses[0]["id"] == "warm_start-0000" and analyses[0]["n_trials_seen"] == 8
    assert new.trials[1].user_attrs.get("hpo_analysis") == "warm_start-0000"


def test_history_and_prompt_stay_bounded():
    space = {"x": {"type": "float", "low": 0, "high": 1}, "y": {"type": "float", "low": 0,
                                                                   "high": 1}}
    sizes = []
    for n in (20, 400):
        trials = [TrialRecord(number=i, state="COMPLETE", value=float(i % 17), params={
            "x": (i % 13) / 13, "y": (i % 7) / 7}, curve={"value": [0.1 * j for j in range(30)]})
            for i in range(n)]
        h = History(trials=trials, space=space, analyses=[{"id": f"a{i}", "proposals": [
            {"trial_number": i, "status": "enqueued", "diff": []}]} for i in range(50)])
        sizes.append(len(build_messages(h, 3)[1]["content"]))
        assert len(compact(h)["top"]) == 5
    assert sizes[1] < 1.3 * sizes[0] and sizes[1] < 12_000


def test_history_is_plain_data(url):
    study = make_study(url, every_n_trials=100)
    study.optimize(quadratic, n_trials=3)
    h = from_study(study, {})
    assert h.direction == "minimize" and h.trials[0].curve["value"]
    assert all(isinstance(t, TrialRecord) for t in h.trials)


def test_two_workers_share_rounds(url):
    """Two samplers (two workers) on one storage: each round is analysed once, by either."""
    a, b = make_study(url, every_n_trials=4), make_study(url, every_n_trials=4, seed=1)
    for _ in range(3):
        a.optimize(quadratic, n_trials=2)
        b.optimize(quadratic, n_trials=2)
    ids = [x["id"] for x in load_analyses(a)]
    assert ids == ["every_n-0004", "every_n-0008", "every_n-0012"]


def _claim(study, aid, worker, age_s=0.0):
    at = (datetime.now(UTC) - timedelta(seconds=age_s)).isoformat()
    store.set_system_attr(study, store.CLAIM_PREFIX + aid, {"worker": worker, "at": at})
    return {"worker": worker, "at": at}


def test_a_round_lost_in_a_crash_is_redone(url):
    """A worker claimed round 4 two hours ago and died before storing its analysis."""
    study = make_study(url, every_n_trials=4)
    lost = _claim(study, "every_n-0004", "gone-host:4242", age_s=7200)
    study.optimize(quadratic, n_trials=4)
    assert [a["id"] for a in load_analyses(study)] == ["every_n-0004"]
    held = store.system_attrs(study)[store.CLAIM_PREFIX + "every_n-0004"]
    assert held["worker"] == store.worker_id() and held["retaken_from"] == lost
    assert any(t.user_attrs.get("hpo_analysis") == "every_n-0004" for t in study.trials)


def test_live_claims_hold_and_gone_workers_claims_do_not(url):
    study = make_study(url, every_n_trials=4)
    # another machine's worker took round 4 a minute ago: it is still its round
    _claim(study, "every_n-0004", "other-host:4242", age_s=60)
    study.optimize(quadratic, n_trials=4)
    assert load_analyses(study) == []
    # a worker on this machine whose process has exited: its round is redone at once
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _claim(study, "every_n-0008", f"{socket.gethostname()}:{gone.pid}", age_s=60)
    study.optimize(quadratic, n_trials=4)
    # an earlier process with this very host:pid (a restarted container): redone too
    _claim(study, "every_n-0012", store.worker_id(), age_s=60)
    study.optimize(quadratic, n_trials=4)
    assert [a["id"] for a in load_analyses(study)] == ["every_n-0008", "every_n-0012"]


def test_prompt_hash_ignores_running_and_waiting_trials(url):
    """Another worker running or queueing trials must not change a round's prompt: the
    reply cached for it is replayed on any machine."""
    study = make_study(url, every_n_trials=100)
    study.optimize(quadratic, n_trials=6)
    sampler = study.sampler
    analysis = sampler.run_analysis(study, sampler.history(study), "manual-0006", "manual")
    assert any(p.status == "enqueued" for p in analysis.proposals)  # a WAITING proposal trial
    before = sampler.history(study)
    running = study.ask()  # a worker starts the waiting proposal trial ...
    SPACE.suggest(running)
    study.ask()  # ... another starts the next one ...
    study.enqueue_trial({"lr": 0.01, "x": 0.0, "n": 3, "opt": "adamw"})  # ... and one more waits
    after = sampler.history(study)
    states = [[t.state for t in h.trials] for h in (before, after)]
    assert states[0].count("RUNNING") == 0 and states[1].count("RUNNING") == 2
    assert len(states[1]) == len(states[0]) + 1
    schema = reply_schema(before.space)
    m1, m2 = build_messages(before, 3), build_messages(after, 3)
    assert m1 == m2
    assert prompt_hash("m", m1, schema) == prompt_hash("m", m2, schema)
    study.tell(running, 0.5)  # a finished trial is a new round: a new prompt
    assert build_messages(sampler.history(study), 3) != m1


def test_study_note_keeps_the_users_text_and_replaces_a_published_section(url):
    from optuna_dashboard import save_note

    from hpo.record import DASHBOARD_NOTE_HEADING as DASHBOARD_HEADING
    from hpo.record import SAMPLER_NOTE_HEADING as HEADING

    study = make_study(url, every_n_trials=100)
    study.optimize(quadratic, n_trials=5)
    # hpo dashboard published the analyses before the sampler's own section existed
    save_note(study, f"my remarks\n\n{DASHBOARD_HEADING}\n\n### manual-0000 (rules)")
    study.sampler.analyse_now(study)
    note = get_note(study)
    assert note.startswith("my remarks\n\n" + HEADING) and DASHBOARD_HEADING not in note
    assert "`manual-0005`" in note  # ids stay verbatim: hpo dashboard looks for them


def test_a_running_enqueued_trial_counts_with_all_its_fixed_params(url):
    """A worker has started an enqueued trial and suggested only some of its values so far:
    the same proposal again is still a duplicate of it."""
    from optuna.distributions import FloatDistribution

    from hpo.sampler.analysis import Analysis, Proposal
    from hpo.sampler.proposals import enqueue_proposals

    study = make_study(url, every_n_trials=100)
    study.optimize(quadratic, n_trials=3)
    point = {"lr": 0.02, "x": 1.25, "n": 5, "opt": "sgd", "momentum": 0.9}
    study.enqueue_trial(point, user_attrs={"hpo_source": "rules"})
    running = study.ask()
    running.suggest_float("lr", 1e-4, 1.0, log=True)  # partway through SPACE.suggest
    frozen = next(t for t in study.get_trials() if t.number == running.number)
    assert frozen.state == TrialState.RUNNING and set(frozen.params) == {"lr"}
    assert isinstance(frozen.distributions["lr"], FloatDistribution)

    def propose(params):
        a = Analysis(id="manual-x", trigger="manual", analyst="rules", best_params=point,
                     proposals=[Proposal(params=params)])
        return enqueue_proposals(study, a, SPACE, max_share=1.0).proposals[0]

    assert propose(dict(point)).status == "duplicate"
    assert propose({**point, "x": -1.0}).status == "enqueued"
    # the history shows the running trial with the values it runs
    assert from_study(study, {}).trials[running.number].params == point
