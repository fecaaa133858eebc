"""Four workers on one study, started together on a fresh storage, reach exactly n_trials.

SQLite (one machine, BEGIN IMMEDIATE + busy timeout), PostgreSQL and MySQL. Also: a worker whose
local study file differs from the stored config refuses, naming what differs.
"""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState
from resume_support import (
    PASSWORD,
    finish,
    load,
    make_project,
    spawn,
    storage_url,  # noqa: F401 - fixture
)

from hpo.config import load_study
from hpo.runner import open_study
from hpo.storage import is_lost_race, open_storage
from hpo.worker import _one_trial, config_diff

N_TRIALS = 6


def assert_exact_budget(trials, n_trials: int) -> None:
    """Exactly ``n_trials`` finished, nothing left queued or running, and no work done twice.

    A trial's *origin* is the trial it retries (``failed_trial``, kept along a retry chain) or
    itself: two finished trials of one origin mean a trial was run to the end twice. Two
    finished trials with the same params (a continuous lr) mean a sample was repeated (e.g.
    workers sharing one sampler seed). A FAIL is allowed only for a trial that lost the race
    for the last slot and was never run (no params, no reported value).
    """
    states = [t.state for t in trials]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n_trials, states
    assert TrialState.WAITING not in states and TrialState.RUNNING not in states, states
    for t in trials:
        if t.state == TrialState.FAIL:
            assert is_lost_race(t), (t.number, t.user_attrs, t.system_attrs)
            assert not t.params and not t.intermediate_values, t.number
            assert "not run" in t.user_attrs["fail_reason"]
    origins = [t.system_attrs.get("failed_trial", t.number) for t in finished]
    assert len(set(origins)) == len(origins), origins
    params = [json.dumps(t.params, sort_keys=True) for t in finished]
    assert len(set(params)) == len(params), f"workers repeated a sample: {sorted(params)}"


@pytest.mark.timeout(240)
def test_four_workers_reach_exactly_n_trials(storage_url, tmp_path):  # noqa: F811
    url = storage_url
    artifacts = tmp_path / "shared" / "artifacts"
    procs, logs = [], []
    for i in range(4):  # four "machines", same study file, all started at once on an empty
        # storage: they race to create the tables and the study, then share the trials
        folder = make_project(tmp_path / f"w{i}", n_trials=N_TRIALS, max_epochs=1, keep=2)
        logs.append(tmp_path / f"w{i}.log")
        procs.append(spawn(["study", "rt", "--storage", url, "--artifacts", str(artifacts),
                            "--no-progress"], folder, logs[-1]))
    codes = [finish(p, 200) for p in procs]
    texts = [log.read_text() for log in logs]
    for code, text in zip(codes, texts):
        assert code == 0, text[-3000:]
        assert "database is locked" not in text and "Traceback" not in text, text[-3000:]
        assert PASSWORD not in text

    trials = load(url).get_trials(deepcopy=False)
    assert_exact_budget(trials, N_TRIALS)
    # every worker reported the same final count
    for text in texts:
        assert f"complete {N_TRIALS}" in text
    # keep_best_k = 2: only the two best finished trials keep their checkpoint
    assert len(list(artifacts.iterdir())) == 2


@pytest.mark.timeout(120)
def test_worker_with_a_different_local_study_file_refuses(tmp_path):
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    a = make_project(tmp_path / "a", n_trials=1, max_epochs=1)
    open_study(load_study(str(a / "studies" / "rt.yaml")), url)  # created, config stored
    b = make_project(tmp_path / "b", n_trials=1, max_epochs=3)  # differs: budget.max_epochs
    code = finish(spawn(["worker", "rt", "--storage", url], b, tmp_path / "b.log"), 100)
    text = (tmp_path / "b.log").read_text()
    assert code == 2, text
    assert "budget.max_epochs: local 3 != stored 1" in text
    assert len(load(url).trials) == 0  # nothing was run


def test_a_trial_that_lost_the_race_is_never_run_nor_left_waiting(tmp_path):
    """Two workers passed the budget check together; the later trial gives up, unrun."""
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'r.db'}"))
    study.enqueue_trial({"x": 0.5})  # an analyst's proposal, queued before the race
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # trial 0 finished
    study.ask()  # trial 1: another worker's, running; with trial 0 the budget of 2 is full
    ran = []

    def objective(trial):
        ran.append(trial.number)
        return trial.suggest_float("x", 0, 1)

    assert _one_trial(study, objective, target=2, interval=0) is None
    study.enqueue_trial({"x": 0.25})  # trial 3: queued; taken after the race it goes back
    assert _one_trial(study, objective, target=2, interval=0) is None
    assert ran == []
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.RUNNING,
                                         TrialState.FAIL, TrialState.WAITING]
    assert is_lost_race(trials[2]) and not trials[2].params
    assert not is_lost_race(trials[3]) and trials[3].system_attrs["fixed_params"] == {"x": 0.25}

    # the report leaves the never-run trial out of the counts and the figures
    from hpo.report.data import load as load_report

    assert load_report(study).summary()["trials"] == {"COMPLETE": 1, "RUNNING": 1, "WAITING": 1}


def test_machine_keys_and_passwords_may_differ_from_the_stored_config(tmp_path):
    project = make_project(tmp_path / "p", n_trials=4)
    local = load_study(str(project / "studies" / "rt.yaml"))
    stored = local.model_dump(mode="json")
    # a user extended the study (n_trials), another machine keeps its data elsewhere
    local.budget.n_trials = 40
    local.dataset = local.dataset.model_copy(update={"name": "folder", "root": "/data/here"})
    stored["dataset"].update(name="folder", root="/mnt/elsewhere")
    local.sampler.warm_start_from = [f"postgresql://u:{PASSWORD}@db/hpo#old"]
    stored["sampler"]["warm_start_from"] = ["postgresql://u:***@db/hpo#old"]  # stored redacted
    assert config_diff(local, stored) == []
    local.budget.max_epochs = 9
    local.sampler.warm_start_from = [f"postgresql://u:{PASSWORD}@db/other#old"]
    assert config_diff(local, stored) == [
        "budget.max_epochs: local 9 != stored 4",
        ("sampler.warm_start_from: local ['postgresql://u:***@db/other#old'] != stored "
         "['postgresql://u:***@db/hpo#old']")]


def test_a_config_with_passwords_is_stored_redacted_and_restored_for_a_worker(tmp_path):
    """What hpo/runner.py stores (redact_secrets of the config) has no password; config_diff
    accepts the real file against it; a worker with no file gets the password back from its
    own storage URL (same user, host and port)."""
    from hpo.redaction import redact_secrets, restore_password
    from hpo.worker import stored_config

    project = make_project(tmp_path / "p")
    local = load_study(str(project / "studies" / "rt.yaml"))
    local.sampler.warm_start_from = [f"postgresql://ml:{PASSWORD}@db:5432/old#pilot", "same-db"]
    local.description = f"see mysql+pymysql://ml:{PASSWORD}@db/x for the pilot"
    dumped = local.model_dump(mode="json")
    stored = redact_secrets(dumped)
    assert PASSWORD not in json.dumps(stored)
    assert stored["sampler"]["warm_start_from"] == ["postgresql://ml:***@db:5432/old#pilot",
                                                    "same-db"]
    assert stored["description"] == "see mysql+pymysql://ml:***@db/x for the pilot"
    stored["description"] = dumped["description"]
    stored["sampler"]["warm_start_from"] = dumped["sampler"]["warm_start_from"]
    assert stored == dumped  # nothing else changed
    assert config_diff(local, redact_secrets(dumped)) == []

    study = optuna.create_study(study_name="rt", storage=f"sqlite:///{tmp_path / 'a.db'}")
    study.set_user_attr("hpo_config", redact_secrets(dumped))
    study.set_user_attr("search_space", local.space.model_dump(mode="json"))
    cfg = stored_config(study)
    own = f"postgresql+psycopg2://ml:{PASSWORD}@db:5432/hpo"
    restored = [restore_password(src, own) for src in cfg.sampler.warm_start_from]
    assert restored == [f"postgresql://ml:{PASSWORD}@db:5432/old#pilot", "same-db"]
    other_user = "postgresql://someone:pw@db:5432/hpo"
    assert restore_password(cfg.sampler.warm_start_from[0], other_user) == \
        "postgresql://ml:***@db:5432/old#pilot"
