"""Per-trial seeds: workers opening one study together draw different points, reproducibly."""

from __future__ import annotations

import optuna

from hpo.sampler.seeding import PerTrialSeed, trial_seed


def _tpe(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=3)


def _draws(url: str, name: str, workers: int, rounds: int) -> list[float]:
    """``workers`` processes' worth of samplers, each with the same study seed, taking turns."""
    studies = [optuna.load_study(study_name=name, storage=url,
                                 sampler=PerTrialSeed(_tpe, seed=0)) for _ in range(workers)]
    values = []
    for _ in range(rounds):
        for study in studies:
            trial = study.ask()
            x = trial.suggest_float("x", -1, 1)
            study.tell(trial, x * x)
            values.append(x)
    return values


def test_workers_with_one_seed_draw_different_points_and_a_rerun_repeats(tmp_path) -> None:
    runs = []
    for run in range(2):
        url = f"sqlite:///{tmp_path / f'{run}.db'}"
        optuna.create_study(study_name="s", storage=url)
        runs.append(_draws(url, "s", workers=4, rounds=3))
    assert len(set(runs[0])) == 12  # no two workers repeat each other, in startup or in TPE
    assert runs[0] == runs[1]  # the same seed and order: the same study
    assert trial_seed(0, 1) != trial_seed(0, 2) and trial_seed(0, 1) == trial_seed(0, 1)
