"""One epoch of each shipped recipe study (tiny data), through the real Objective and Optuna."""

from __future__ import annotations

import math

import optuna
import pytest

from hpo.config import load_study
from hpo.objective import Objective


@pytest.mark.parametrize("name", ["efficientnet", "multitask"])
def test_one_epoch_of_the_shipped_study(name, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "cache"))
    cfg = load_study(name)
    cfg = cfg.model_copy(update={
        "dataset": cfg.dataset.model_copy(update={"n_per_class": 6}),
        "model": cfg.model.model_copy(update={"image_size": 32}),
        "budget": cfg.budget.model_copy(update={"max_epochs": 1}),
    })
    study = optuna.create_study(direction=cfg.objective.direction,
                                sampler=optuna.samplers.RandomSampler(seed=3))
    if "batch_stages" in cfg.space.names():  # one epoch holds one batch stage
        study.enqueue_trial({"batch_stages": 1})
    study.optimize(Objective(cfg), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs
    assert math.isfinite(trial.value) and trial.user_attrs["epochs"] == 1
    assert set(trial.params) <= set(cfg.space.names())
