"""Four workers on one study, started together on a fresh storage, reach exactly n_trials.

SQLite (one machine, BEGIN IMMEDIATE + busy timeout), PostgreSQL and MySQL. Also: a worker whose
local study file differs from the stored config refuses, naming what differs.
"""

from __future__ import annotations

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

N_TRIALS = 6


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
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == N_TRIALS, states
    assert TrialState.FAIL not in states and TrialState.RUNNING not in states
    assert sorted(t.number for t in trials if t.state == TrialState.COMPLETE) == \
        sorted({t.number for t in trials if t.state == TrialState.COMPLETE})
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
