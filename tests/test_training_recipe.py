"""The recipe on real (tiny) training runs: accumulation, class weights, EMA, early stopping,
augmentation, mixing, optimizers and a complete state_dict."""

from __future__ import annotations

import pytest
import torch

from hpo.config import DatasetConfig
from hpo.data import DataSplits, build_dataset
from hpo.errors import ConfigError
from hpo.training import TrainConfig, Trainer, seed_everything
from hpo.training.augment import BatchAugment
from hpo.training.losses import class_weight_tensor


@pytest.fixture(scope="module")
def defects() -> DataSplits:
    return build_dataset(DatasetConfig(name="defects", n_per_class=8), image_size=16)


def tiny_cnn(num_classes: int = 5, bn: bool = True) -> torch.nn.Module:
    seed_everything(0)
    norm = torch.nn.BatchNorm2d(8) if bn else torch.nn.Identity()
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), norm, torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(),
                               torch.nn.Dropout(0.0), torch.nn.Linear(32, num_classes))


def train(data: DataSplits, model: torch.nn.Module | None = None, **kw) -> Trainer:
    trainer = Trainer(TrainConfig(**{"epochs": 1, "lr": 0.01, "batch_size": 8, **kw}),
                      model or tiny_cnn(), data, device=torch.device("cpu"))
    trainer.fit()
    return trainer


def test_accumulation_gives_the_same_update_as_the_large_batch(defects) -> None:
    small = DataSplits(defects.train_x[:12], defects.train_y[:12], defects.val_x, defects.val_y,
                       defects.class_names)
    kw = {"optimizer": "sgd", "momentum": 0.0, "scheduler": "constant"}
    big = train(small, tiny_cnn(bn=False), batch_size=12, **kw)
    acc = train(small, tiny_cnn(bn=False), batch_size=4, accum_steps=3, **kw)
    uneven = train(small, tiny_cnn(bn=False), batch_size=5, accum_steps=3, **kw)  # 5 + 5 + 2
    for a, b, c in zip(big.model.parameters(), acc.model.parameters(),
                       uneven.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, c, atol=1e-6)
    assert acc.history[0].effective_batch_size == 12 and acc.schedule.step_num == 1


def test_class_weights_balanced_explicit_and_unknown_name() -> None:
    y = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    names = ["划痕", "污点", "缺失"]
    balanced = class_weight_tensor(TrainConfig(class_weights="balanced"), y, names)
    assert balanced.tolist() == pytest.approx([8 / (3 * 4), 8 / (3 * 2), 8 / (3 * 2)])
    explicit = class_weight_tensor(TrainConfig(class_weights={"污点": 3.0}), y, names)
    assert explicit.tolist() == [1.0, 3.0, 1.0]
    with pytest.raises(ConfigError, match="class_weights"):
        class_weight_tensor(TrainConfig(class_weights={"dent": 2.0}), y, names)


def test_class_weights_change_the_training_loss(defects) -> None:
    plain = train(defects, class_weights="none").history[0].train_loss
    weighted = train(defects, class_weights={"scratch": 5.0}).history[0].train_loss
    assert weighted != pytest.approx(plain)


def test_ema_is_evaluated_beside_the_raw_weights_and_differs(defects) -> None:
    trainer = train(defects, ema_decay=0.9, epochs=2)
    last = trainer.history[-1]
    assert last.ema_val_loss is not None and last.ema_val_accuracy is not None
    assert last.ema_val_loss != pytest.approx(last.val_loss)
    raw, ema = trainer.model.state_dict(), trainer.ema.module.state_dict()
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)


def test_early_stopping_ends_the_run_and_says_so(defects) -> None:
    trainer = train(defects, epochs=6, lr=1e-9, early_stop_patience=1, early_stop_min_delta=1.0)
    assert len(trainer.history) == 2 and trainer.history[-1].stopped_early


def test_state_dict_resume_equals_straight_run(defects) -> None:
    kw = {"epochs": 3, "ema_decay": 0.9, "scheduler": "plateau", "early_stop_patience": 5,
              "batch_stages": 3, "aug_hflip": 0.5}
    straight = train(defects, **kw)
    first = Trainer(TrainConfig(lr=0.01, batch_size=8, **kw), tiny_cnn(), defects,
                    device=torch.device("cpu"))
    first.cfg = first.cfg.model_copy(update={"epochs": 2})  # train 2 of 3 epochs, then resume
    first.fit()
    state = first.state_dict()
    assert {"ema", "scheduler", "early_stopping", "stage"} <= set(state)
    resumed = Trainer(TrainConfig(lr=0.01, batch_size=8, **kw), tiny_cnn(), defects,
                      device=torch.device("cpu"))
    resumed.load_state_dict(state)
    resumed.fit()
    assert [r.batch_size for r in resumed.history] == [8, 16, 32]
    assert resumed.history[-1].val_loss == pytest.approx(straight.history[-1].val_loss, rel=1e-4)
    assert resumed.history[-1].ema_val_loss == pytest.approx(straight.history[-1].ema_val_loss,
                                                             rel=1e-4)


def test_augmentation_is_per_image_and_not_applied_at_validation(defects) -> None:
    x = defects.train_x[:1].expand(8, -1, -1, -1)
    out = BatchAugment(TrainConfig(aug_crop_scale=0.5, aug_rotation=30, aug_color_jitter=0.3,
                                   aug_blur_prob=0.5, aug_vflip=0.5))(x)
    assert len({round(float(img.sum()), 3) for img in out}) == 8  # every copy differs
    trainer = Trainer(TrainConfig(aug_hflip=1.0, aug_rotation=30, aug_crop_scale=0.5,
                                  label_smoothing=0.2, class_weights="balanced"),
                      tiny_cnn(), defects, device=torch.device("cpu"))
    model = trainer.model.eval()
    with torch.no_grad():  # the plain validation images, standardised, nothing else
        logits = model((defects.val_x - trainer.mean) / trainer.std)
    metrics = trainer.evaluate(model)
    # no augmentation, no label smoothing, no class weights: val_loss compares across trials
    assert metrics["loss"] == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, defects.val_y)), rel=1e-5)
    assert metrics["accuracy"] == pytest.approx(
        float((logits.argmax(1) == defects.val_y).float().mean()))


def test_progressive_batch_stages_scale_the_optimizer_lr(defects) -> None:
    trainer = train(defects, epochs=3, batch_stages=3, scheduler="constant", lr=0.01,
                    stage_lr_scaling="linear")
    assert [r.batch_size for r in trainer.history] == [8, 16, 32]
    assert [r.lr for r in trainer.history] == pytest.approx([0.01, 0.02, 0.04])
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.04)


def test_channels_last_trains_in_that_memory_format(defects) -> None:
    trainer = train(defects, channels_last=True)
    conv = trainer.model[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert torch.isfinite(torch.tensor(trainer.history[0].train_loss))


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd", "rmsprop"])
def test_every_optimizer_trains_with_mixup_and_cutmix(defects, optimizer) -> None:
    trainer = train(defects, optimizer=optimizer, lr=3e-3, mixup_alpha=0.2, cutmix_prob=0.5,
                    label_smoothing=0.1, grad_clip_norm=1.0)
    assert type(trainer.optimizer).__name__.lower() == optimizer
    assert torch.isfinite(torch.tensor(trainer.history[0].train_loss))


def test_bad_recipe_combinations_are_config_errors(defects) -> None:
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(lr=0.01, min_lr=0.1)
    with pytest.raises(ValueError, match="batch_stages"):
        TrainConfig(epochs=2, batch_stages=3)
    with pytest.raises(ConfigError, match="early_stop_metric"):
        Trainer(TrainConfig(early_stop_metric="val_mae"), tiny_cnn(), defects)
