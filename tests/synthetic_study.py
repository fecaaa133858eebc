"""A large study shaped like hpo's, built in memory in about a second (helper, not a test module).

About a quarter of the trials complete, the rest are pruned after a few epochs, as a median
pruner does; each stores the user attrs ``hpo/objective.py`` stores (``curve`` with the
objective, train and validation loss and the lr ending at 0 as a cosine to ``min_lr: 0`` does,
``epochs``, ``duration_s``) and real start and finish times. Trials are added with
``Study.add_trials``, so no sampler runs.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState
from report_studies import MAX_EPOCHS, study_config

from hpo.record import CONFIG_ATTR

DISTRIBUTIONS = {
    "lr": FloatDistribution(1e-4, 3e-2, log=True),
    "weight_decay": FloatDistribution(1e-6, 1e-1, log=True),
    "batch_size": CategoricalDistribution([32, 64, 128]),
    "label_smoothing": FloatDistribution(0.0, 0.2),
}


def big_study(n_trials: int = 2000, seed: int = 0, name: str = "big") -> optuna.Study:
    """An in-memory study of ``n_trials`` finished trials (maximize ``val_accuracy``)."""
    rng = random.Random(seed)
    study = optuna.create_study(study_name=name, direction="maximize")
    study.set_user_attr(CONFIG_ATTR, study_config(name).model_dump(mode="json"))
    t0 = datetime(2025, 1, 1, 12, 0, 0)
    study.add_trials([_trial(i, rng, t0) for i in range(n_trials)])
    return study


def _trial(number: int, rng: random.Random, t0: datetime) -> FrozenTrial:
    """One trial: complete one time in four, else pruned after 1-3 epochs."""
    params = {"lr": 10 ** rng.uniform(-4, math.log10(3e-2)),
              "weight_decay": 10 ** rng.uniform(-6, -1),
              "batch_size": rng.choice([32, 64, 128]),
              "label_smoothing": rng.uniform(0.0, 0.2)}
    quality = max(0.05, 1.0 - 0.15 * abs(math.log10(params["lr"]) + 2.5)) * rng.uniform(0.9, 1)
    complete = number % 4 == 0
    n = MAX_EPOCHS if complete else rng.randint(1, 3)
    acc = [round(quality * (1 - math.exp(-e / 2)), 6) for e in range(1, n + 1)]
    curve = {"val_accuracy": acc,
             "train_loss": [round(2.3 * (1 - a) + 0.01, 6) for a in acc],
             "val_loss": [round(2.3 * (1 - a) + 0.05, 6) for a in acc],
             "lr": [round(params["lr"] * 0.5 * (1 + math.cos(math.pi * e / MAX_EPOCHS)), 10)
                    for e in range(1, n + 1)]}
    start = t0 + timedelta(seconds=30 * number)
    return FrozenTrial(
        number=number, trial_id=number, state=TrialState.COMPLETE if complete else TrialState.PRUNED,
        value=max(acc) if complete else None, params=params, distributions=DISTRIBUTIONS,
        intermediate_values=dict(enumerate(acc, 1)), system_attrs={},
        user_attrs={"curve": curve, "epochs": n, "duration_s": 10.0 * n},
        datetime_start=start, datetime_complete=start + timedelta(seconds=10 * n))
