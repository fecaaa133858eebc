"""Search space -> Optuna distributions, and conditional parameters."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hpo.space import SearchSpace

SPACE = SearchSpace.model_validate({"params": {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "label_smoothing": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.05},
    "warmup_epochs": {"type": "int", "low": 0, "high": 4, "step": 2},
    "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
    "momentum": {"type": "float", "low": 0.8, "high": 0.99, "condition": {"optimizer": "sgd"}},
    "nesterov": {"type": "categorical", "choices": [True, False],
                 "condition": {"optimizer": ["sgd"]}},
}})


def test_distributions_match_the_file() -> None:
    d = SPACE.distributions()
    assert d["lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert d["label_smoothing"] == FloatDistribution(0.0, 0.2, step=0.05)
    assert d["warmup_epochs"] == IntDistribution(0, 4, step=2)
    assert d["optimizer"] == CategoricalDistribution(["adamw", "sgd"])


def test_conditions_decide_which_params_are_suggested() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen_optimizers = set()
    for _ in range(30):
        trial = study.ask()
        params = SPACE.suggest(trial)
        study.tell(trial, 0.0)
        seen_optimizers.add(params["optimizer"])
        is_sgd = params["optimizer"] == "sgd"
        assert ("momentum" in params) is is_sgd
        assert ("nesterov" in params) is is_sgd
        assert 1e-4 <= params["lr"] <= 1e-1
        assert params["warmup_epochs"] in (0, 2, 4)
        assert round(params["label_smoothing"] / 0.05, 6).is_integer()
        assert trial.params == params  # exactly the active ones were stored on the trial
    assert seen_optimizers == {"adamw", "sgd"}


def test_fixed_trial_replays_params() -> None:
    params = {"lr": 0.01, "label_smoothing": 0.1, "warmup_epochs": 2, "optimizer": "adamw"}
    assert SPACE.suggest(optuna.trial.FixedTrial(params)) == params
