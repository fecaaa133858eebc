"""hpo's Core reader of trials gives exactly Optuna's FrozenTrials, on SQLite, PostgreSQL, MySQL.

Every kind of row a study holds: each trial state, several objectives, inf/-inf/nan, params of
each distribution type (categorical None/bool/str, log and stepped numbers), user and system
attrs, intermediate values with nan and inf; the incremental reads Optuna's trial cache makes
(new trials after the last finished one, plus the running ones) and the state filter.
"""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from resume_support import storage_url  # noqa: F401 - the fixture: sqlite, postgresql, mysql

from hpo.rdb_reader import MAX_IN_IDS, FastReadRDBStorage
from hpo.storage import open_storage, resolve_storage_url


def _objective(trial: optuna.Trial) -> tuple[float, float]:
    x = trial.suggest_float("x", 1e-4, 1.0, log=True)
    trial.suggest_int("layers", 1, 9, step=2)
    trial.suggest_float("dropout", 0.0, 0.5, step=0.1)
    choice = trial.suggest_categorical("act", [None, True, "gelu", 3])
    trial.set_user_attr("curve", {"val": [0.1, 0.2], "nested": {"ok": True}})
    trial.storage.set_trial_system_attr(trial._trial_id, "hpo:mark", [1, "two"])
    for step, v in enumerate([x, math.nan, math.inf, -math.inf]):  # (report: one objective)
        trial.storage.set_trial_intermediate_value(trial._trial_id, step, v)
    if trial.number == 2:
        raise optuna.TrialPruned
    if trial.number == 3:
        raise RuntimeError("a failed trial")
    return (math.inf if choice == 3 else x), (-math.inf if choice is None else 1.0)


def _fill(study: optuna.Study) -> None:
    study.optimize(_objective, n_trials=8, catch=(RuntimeError,))
    running = study.ask()           # RUNNING, with a param and an attr
    running.suggest_float("x", 1e-4, 1.0, log=True)
    running.set_user_attr("epoch", 3)
    study.enqueue_trial({"x": 0.5})  # WAITING


def _same(got: list[FrozenTrial], expected: list[FrozenTrial]) -> bool:
    """Equal trial for trial (nan != nan, so intermediate values compare as text)."""
    def canon(trial: FrozenTrial) -> dict:
        return {**vars(trial), "intermediate_values": {
            step: repr(v) for step, v in trial.intermediate_values.items()}}
    return [canon(t) for t in got] == [canon(t) for t in expected]


def test_reads_what_optuna_reads(storage_url) -> None:  # noqa: F811
    url = resolve_storage_url(storage_url)  # with the driver hpo installs
    storage = open_storage(url)
    study = optuna.create_study(study_name="fast", storage=storage,
                                directions=["minimize", "maximize"])
    _fill(study)
    optuna.create_study(study_name="other", storage=storage).optimize(
        lambda t: t.suggest_float("y", 0, 1), n_trials=2)
    sid = study._study_id
    plain, fast = optuna.storages.RDBStorage(url), FastReadRDBStorage(url)

    expected = plain.get_all_trials(sid)
    assert {t.state for t in expected} == set(TrialState)
    assert _same(fast.get_all_trials(sid), expected)
    assert [t.number for t in fast.get_all_trials(sid)] == list(range(10))
    for states in ((TrialState.COMPLETE,), (TrialState.RUNNING, TrialState.WAITING)):
        assert _same(fast.get_all_trials(sid, states=states),
                     plain.get_all_trials(sid, states=states))

    ids = [t._trial_id for t in expected]
    for included, after in (({ids[8], ids[9]}, ids[5]), (set(), ids[7]), ({ids[1]}, -1)):
        assert _same(fast._get_trials(sid, None, included, after),
                     plain._get_trials(sid, None, included, after)), (included, after)

    with pytest.raises(KeyError) as fast_error:
        fast.get_all_trials(sid + 100)
    with pytest.raises(KeyError) as optuna_error:
        plain.get_all_trials(sid + 100)
    assert str(fast_error.value) == str(optuna_error.value)


def test_many_running_trials_are_filtered_here(tmp_path) -> None:
    """Past MAX_IN_IDS running trials the id filter runs in Python (SQLite limits bound
    variables); same trials as Optuna's."""
    url = f"sqlite:///{tmp_path / 'many.db'}"
    study = optuna.create_study(storage=url)
    for _ in range(MAX_IN_IDS + 5):
        study.ask()
    study.tell(study.ask(), 1.0)
    ids = [t._trial_id for t in study.trials]
    running = set(ids[:-1])
    plain, fast = optuna.storages.RDBStorage(url), FastReadRDBStorage(url)
    assert len(running) > MAX_IN_IDS
    got = fast._get_trials(study._study_id, None, running, ids[-2])
    assert got == plain._get_trials(study._study_id, None, running, ids[-2])
    assert len(got) == len(ids)
