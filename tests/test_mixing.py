"""MixUp/CutMix on real one-epoch Trainer runs: every combination (none, MixUp only, CutMix only,
both) trains, and the loss really gets mixed (soft) targets, or hard labels without mixing; plus
a CutMix-only study through the real CLI."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

import hpo.training.trainer as trainer_module
from hpo.config import DatasetConfig
from hpo.data import DataSplits, build_dataset
from hpo.training import TrainConfig, Trainer, seed_everything

SMOKE_SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return build_dataset(DatasetConfig(name="digits"), image_size=8)


def tiny_cnn(num_classes: int = 10) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(),
                               torch.nn.Linear(32, num_classes))


class Calls:
    """Wraps a callable and counts its calls."""

    def __init__(self, fn) -> None:
        self.fn, self.n = fn, 0

    def __call__(self, *args):
        self.n += 1
        return self.fn(*args)


def one_epoch(data: DataSplits, monkeypatch, **recipe) -> tuple[Trainer, list[torch.Tensor]]:
    """Train one epoch (batches of 64: 23 batches) recording every target the loss receives;
    CutMix and MixUp calls are counted on ``trainer.mixing.cutmix.n`` / ``.mixup.n``."""
    targets: list[torch.Tensor] = []

    def recording_loss(logits, target, cfg, weight):
        targets.append(target.detach().clone())
        return real_loss(logits, target, cfg, weight)

    real_loss = trainer_module.classification_loss
    monkeypatch.setattr(trainer_module, "classification_loss", recording_loss)
    seed_everything(0)
    trainer = Trainer(TrainConfig(epochs=1, lr=0.01, batch_size=64, **recipe), tiny_cnn(), data,
                      device=torch.device("cpu"))
    if trainer.mixing is not None:
        trainer.mixing.cutmix = Calls(trainer.mixing.cutmix)
        if trainer.mixing.mixup is not None:
            trainer.mixing.mixup = Calls(trainer.mixing.mixup)
    trainer.fit()
    assert len(trainer.history) == 1 and torch.isfinite(torch.tensor(trainer.history[0].train_loss))
    assert len(targets) == 23  # ceil(1437 / 64): every batch reached the loss
    return trainer, targets


def soft_rows(targets: list[torch.Tensor]) -> list[bool]:
    """Per batch: whether some row is not one-hot (the batch was mixed); checks the targets
    are probabilities over the 10 classes."""
    mixed = []
    for t in targets:
        assert t.dtype == torch.float32 and t.shape[1] == 10
        assert torch.allclose(t.sum(1), torch.ones(len(t)), atol=1e-5) and bool((t >= 0).all())
        mixed.append(bool((t.max(1).values < 1 - 1e-6).any()))
    return mixed


def test_no_mixing_gives_the_loss_hard_labels(digits, monkeypatch) -> None:
    trainer, targets = one_epoch(digits, monkeypatch)
    assert trainer.mixing is None
    assert all(t.dtype == torch.int64 and t.ndim == 1 for t in targets)


def test_mixup_only_mixes_every_batch(digits, monkeypatch) -> None:
    trainer, targets = one_epoch(digits, monkeypatch, mixup_alpha=0.4)
    assert trainer.mixing.mixup.n == 23 and trainer.mixing.cutmix.n == 0
    assert all(soft_rows(targets))


@pytest.mark.parametrize("cutmix_prob", [0.5, 1.0])
def test_cutmix_only_trains_and_one_hots_the_batches_it_leaves(digits, monkeypatch,
                                                              cutmix_prob) -> None:
    # the bug: mixup_alpha 0 wrapped a two-argument lambda in v2.Lambda, which calls it with one
    # argument, so every batch that CutMix skipped raised TypeError
    trainer, targets = one_epoch(digits, monkeypatch, cutmix_prob=cutmix_prob, mixup_alpha=0)
    assert trainer.mixing.mixup is None
    mixed, cutmix = soft_rows(targets), trainer.mixing.cutmix.n
    # (a CutMix box can round to nothing on 8x8 images: that batch stays one-hot)
    assert 0.8 * cutmix <= sum(mixed) <= cutmix
    if cutmix_prob == 1.0:
        assert cutmix == 23
    else:  # the others are one-hot, unmixed: both kinds happen in one epoch
        assert 0 < cutmix < 23 and not all(mixed)


def test_mixup_and_cutmix_both_mix_batches(digits, monkeypatch) -> None:
    trainer, targets = one_epoch(digits, monkeypatch, mixup_alpha=0.4, cutmix_prob=0.5)
    cutmix, mixup = trainer.mixing.cutmix.n, trainer.mixing.mixup.n
    assert cutmix > 0 and mixup > 0 and cutmix + mixup == 23
    assert sum(soft_rows(targets)) >= mixup + 0.8 * cutmix


def test_cutmix_only_study_through_the_cli(tmp_path: Path, hpo_cli) -> None:
    study = tmp_path / "cutmix.yaml"
    study.write_text(yaml.safe_dump({
        "dataset": {"name": "digits"},
        "model": {"name": "mobilenetv3_small_050", "image_size": 16},
        "search_space": str(SMOKE_SPACE),
        "train": {"cutmix_prob": 1.0, "mixup_alpha": 0, "batch_size": 256},
        "budget": {"n_trials": 1, "max_epochs": 1},
        "sampler": {"type": "random"},
    }))
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = hpo_cli("study", str(study), "--storage", url, "--no-progress", cwd=tmp_path,
                     env={"HPO_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    (trial,) = optuna.load_study(study_name="cutmix", storage=url).trials
    assert trial.state == TrialState.COMPLETE
