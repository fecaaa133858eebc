"""Per-trial seeds: many workers on one study never draw the same parameters.

A seeded Optuna sampler in each of N worker processes that open a study together draws the same
random numbers in each of them, so their first trials are copies. :class:`PerTrialSeed` builds a
fresh inner sampler for every trial, seeded from ``(seed, trial.number)``: trial numbers are
unique in the storage, so workers differ, and one worker's run stays reproducible.

    >>> import optuna
    >>> make = lambda s: optuna.samplers.RandomSampler(seed=s)
    >>> def first_x(sampler):
    ...     study = optuna.create_study(sampler=sampler)
    ...     return study.ask().suggest_float("x", 0, 1)
    >>> first_x(PerTrialSeed(make, seed=0)) == first_x(PerTrialSeed(make, seed=0))
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState


def trial_seed(seed: int, number: int) -> int:
    """A 32-bit seed mixed from the study seed and the trial number."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class PerTrialSeed(BaseSampler):
    """Delegates to ``make(trial_seed(seed, trial.number))``, built anew before each trial."""

    def __init__(self, make: Callable[[int], BaseSampler], seed: int) -> None:
        self._make, self._seed = make, seed
        self._inner = make(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._inner = self._make(trial_seed(self._seed, trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()
