"""Multi-task: metrics on known inputs, the weighted objective, CSV labels, a real two-head run."""

from __future__ import annotations

import pytest
import torch

from hpo.config import DatasetConfig, ModelConfig, ObjectiveConfig
from hpo.data import build_dataset
from hpo.data.defects import write_defects_folder
from hpo.errors import ConfigError
from hpo.models import build_model
from hpo.training import TrainConfig, Trainer, seed_everything
from hpo.training.metrics import accuracy, macro_f1, mae, within_k


def test_metrics_on_known_inputs() -> None:
    pred, target = torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2])
    assert accuracy(pred, target) == 0.75
    assert macro_f1(pred, target, 3) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    values, truth = torch.tensor([1.0, 2.0, 4.0, 9.0]), torch.tensor([1.5, 2.0, 2.0, 8.0])
    assert mae(values, truth) == pytest.approx(0.875)
    assert within_k(values, truth, k=1.0) == 0.75  # |err| = .5, 0, 2, 1 (boundary counts)


def test_weighted_objective_combines_metrics() -> None:
    obj = ObjectiveConfig(metric="weighted", weights={"val_accuracy": 1.0, "val_mae": -0.1},
                          direction="maximize")

    class Result:
        val_accuracy, val_mae = 0.8, 2.0

    assert obj.value(Result()) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="direction"):
        ObjectiveConfig(metric="weighted", weights={"val_accuracy": 1.0})


def test_csv_labels_and_a_two_head_run(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "cache"))
    csv = write_defects_folder(tmp_path / "parts", n_per_class=6, image_size=16)
    cfg = DatasetConfig(name="folder", root=str(tmp_path / "parts"), csv=str(csv))
    data = build_dataset(cfg, image_size=16)
    assert data.multitask and len(data.train_v) == len(data.train_y)
    assert bool(((data.train_v >= 1) & (data.train_v <= 10)).all())
    seed_everything(0)
    model = build_model(ModelConfig(name="test_efficientnet"), data.num_classes, multitask=True)
    trainer = Trainer(TrainConfig(epochs=1, batch_size=8, lr=3e-3, reg_loss="mse",
                                  reg_weight=0.5, within_k=2.0), model, data,
                      device=torch.device("cpu"))
    last = trainer.fit()[-1]
    assert last.val_mae is not None and 0 < last.val_mae < 10
    assert 0 <= last.val_within_k <= 1 and 0 <= last.val_accuracy <= 1
    with pytest.raises(ConfigError, match="mixup"):
        Trainer(TrainConfig(mixup_alpha=0.2), model, data)


def test_csv_with_a_missing_row_or_wrong_class_is_a_config_error(tmp_path) -> None:
    csv = write_defects_folder(tmp_path / "parts", n_per_class=2, image_size=8)
    lines = csv.read_text(encoding="utf-8").splitlines()
    csv.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    cfg = DatasetConfig(name="folder", root=str(tmp_path / "parts"), csv=str(csv))
    with pytest.raises(ConfigError, match="a row for every image"):
        build_dataset(cfg, image_size=8)
