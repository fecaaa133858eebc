"""The Trainer on real digits: learns above chance, reports every epoch, resumes, detects NaN."""

from __future__ import annotations

import pytest
import torch

from hpo.config import DatasetConfig, ModelConfig
from hpo.data import build_dataset
from hpo.errors import ModelError
from hpo.models import build_model
from hpo.training import DivergedError, EpochResult, TrainConfig, Trainer, seed_everything


@pytest.fixture(scope="module")
def digits():
    return build_dataset(DatasetConfig(), image_size=32)


def make_trainer(data, **overrides) -> Trainer:
    seed_everything(0)
    model = build_model(ModelConfig(name="mobilenetv3_small_050", image_size=32), data.num_classes)
    cfg = TrainConfig(**{"epochs": 2, "lr": 3e-3, "batch_size": 64, **overrides})
    return Trainer(cfg, model, data)


def test_digits_dataset_is_stratified_and_in_memory(digits) -> None:
    assert digits.train_x.shape[1:] == (3, 32, 32)
    assert len(digits.train_y) + len(digits.val_y) == 1797
    val_share = torch.bincount(digits.val_y, minlength=10) / len(digits.val_y)
    assert float(val_share.min()) > 0.08 and float(val_share.max()) < 0.12


def test_learns_digits_above_chance_in_two_epochs(digits) -> None:
    seen: list[EpochResult] = []
    history = make_trainer(digits).fit(seen.append)
    assert [r.epoch for r in seen] == [1, 2] and seen == history
    last = history[-1]
    assert last.val_accuracy > 0.5, last  # chance is 0.1
    assert 0 < last.val_macro_f1 <= 1 and last.images_per_second > 0
    assert history[0].lr > last.lr >= 0  # cosine decays to min_lr (0) at the last step
    assert history[-1].train_loss < history[0].train_loss


def test_same_seed_same_result(digits) -> None:
    a = make_trainer(digits, epochs=1).fit()[-1]
    b = make_trainer(digits, epochs=1).fit()[-1]
    assert a.train_loss == b.train_loss and a.val_accuracy == b.val_accuracy


def test_resume_from_state_dict_trains_only_remaining_epochs(digits) -> None:
    class StopAfterFirstEpoch(Exception):
        pass

    def stop(result: EpochResult) -> None:
        raise StopAfterFirstEpoch

    interrupted = make_trainer(digits, epochs=2)
    with pytest.raises(StopAfterFirstEpoch):
        interrupted.fit(stop)
    state = interrupted.state_dict()
    assert state["epoch"] == 1
    resumed = make_trainer(digits, epochs=2)
    resumed.load_state_dict(state)
    seen: list[int] = []
    resumed.fit(lambda r: seen.append(r.epoch))
    assert seen == [2] and len(resumed.history) == 2
    straight = make_trainer(digits, epochs=2).fit()
    assert resumed.history[-1].val_accuracy == pytest.approx(straight[-1].val_accuracy, abs=0.02)


def test_huge_learning_rate_diverges_with_a_reason(digits) -> None:
    trainer = make_trainer(digits, optimizer="sgd", lr=1e6, momentum=0.9, warmup="none")
    with pytest.raises(DivergedError, match="non-finite train loss"):
        trainer.fit()


def test_unknown_model_and_unavailable_weights_are_clear_errors() -> None:
    with pytest.raises(ModelError, match="not a timm model"):
        build_model(ModelConfig(name="mobilenetv9_tiny"), 10)
    with pytest.raises(ModelError, match="pretrained weights"):
        build_model(ModelConfig(name="mobilenetv3_small_050", pretrained=True), 10)
