"""The shipped studies: one epoch of each recipe study (tiny data) through the real Objective and
Optuna, and the mobilenet study's held-out test split through the real CLI."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
import yaml

from hpo.config import load_study
from hpo.objective import Objective
from hpo.record import read_data_facts
from hpo.runner import open_study


@pytest.mark.parametrize("name", ["efficientnet", "multitask", "defects-pareto"])
def test_one_epoch_of_the_shipped_study(name, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "cache"))
    cfg = load_study(name)
    cfg = cfg.model_copy(update={
        "dataset": cfg.dataset.model_copy(update={"n_per_class": 6}),
        "model": cfg.model.model_copy(update={"image_size": 32}),
        "budget": cfg.budget.model_copy(update={"max_epochs": 1}),
    })
    objectives = [cfg.objective.direction] + [c.direction for c in cfg.objective.costs]
    study = optuna.create_study(directions=objectives,
                                sampler=optuna.samplers.RandomSampler(seed=3))
    if "batch_stages" in cfg.space.names():  # one epoch holds one batch stage
        study.enqueue_trial({"batch_stages": 1})
    study.optimize(Objective(cfg), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs
    assert len(trial.values) == len(objectives) and all(map(math.isfinite, trial.values))
    assert trial.user_attrs["epochs"] == 1
    assert set(trial.params) <= set(cfg.space.names())
    if cfg.is_multi_objective:  # defects-pareto: accuracy, then batch-1 latency in ms
        assert 0 <= trial.values[0] <= 1 and trial.values[1] > 0


def test_mobilenet_holds_out_a_test_split_and_scores_its_best_trial(tmp_path, hpo_cli,
                                                                     repo) -> None:
    cfg = load_study(str(repo / "studies" / "mobilenet.yaml"))
    assert cfg.dataset.test_fraction == 0.2 and cfg.checkpoint.keep_best_k >= 1
    raw = yaml.safe_load((repo / "studies" / "mobilenet.yaml").read_text())
    raw["model"]["image_size"] = 16  # the shipped file, at a smoke budget
    raw["budget"] = {"n_trials": 1, "max_epochs": 1}
    (tmp_path / "studies").mkdir()
    study_file = tmp_path / "studies" / "mobilenet.yaml"
    study_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    run = hpo_cli("study", str(study_file), "--storage", url, "--no-progress",
                  env={"HPO_CACHE_DIR": str(tmp_path / "cache")})
    assert run.returncode == 0, run.stderr
    assert "trial 0 (rank 1, validation" in run.stdout and "test accuracy" in run.stdout
    assert "(360 images)" in run.stdout  # a fifth of each of digits' ten classes


def test_an_old_mobilenet_study_refuses_the_new_file_in_one_line(tmp_path, hpo_cli,
                                                                  repo) -> None:
    """A storage that holds 'mobilenet' from the file before the test split: `hpo study mobilenet`
    stops at once (exit 2) in one line naming the file, the difference and what to do."""
    cfg = load_study(str(repo / "studies" / "mobilenet.yaml"))
    old = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"test_fraction": None})})
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    open_study(old, url)
    run = hpo_cli("study", "mobilenet", "--storage", url, "--no-progress")
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("hpo: error: studies/mobilenet.yaml differs from the config "
                                 "stored in study 'mobilenet': "), run.stderr
    assert "dataset.test_fraction: local 0.2 != stored None" in run.stderr
    assert "new study name" in run.stderr and "--storage" in run.stderr
    assert not run.stdout.strip()


def test_headroom_trains_for_real_on_noisy_digits(tmp_path, hpo_cli, repo) -> None:
    """studies/headroom.yaml through the real CLI at a smoke budget: its pixel noise reaches the
    images (stored fingerprint, and the pixels differ from clean digits by about the sigma)."""
    from hpo.data import build_dataset

    raw = yaml.safe_load((repo / "studies" / "headroom.yaml").read_text())
    raw["budget"] = {"n_trials": 1, "max_epochs": 1}
    raw["search_space"] = str(repo / "search_spaces" / "headroom.yaml")
    study_file = tmp_path / "headroom.yaml"
    study_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    run = hpo_cli("study", str(study_file), "--storage", url, "--no-progress")
    assert run.returncode == 0, run.stderr
    study = optuna.load_study(study_name="headroom", storage=url)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert read_data_facts(study).fingerprint.endswith("+pixel_noise=0.35@0")

    cfg = load_study(str(study_file))
    noisy = build_dataset(cfg.dataset, image_size=16)
    clean = build_dataset(cfg.dataset.model_copy(update={"pixel_noise": 0.0}), image_size=16)
    assert torch.equal(noisy.train_y, clean.train_y) and torch.equal(noisy.val_y, clean.val_y)
    assert 0 <= float(noisy.val_x.min()) and float(noisy.val_x.max()) <= 1
    assert 0.2 < float((noisy.train_x - clean.train_x).std()) < 0.35  # clipping shrinks it
    again = build_dataset(cfg.dataset, image_size=16)
    assert torch.equal(again.val_x, noisy.val_x)  # drawn once from the dataset seed
