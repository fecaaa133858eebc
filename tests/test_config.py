"""Config validation: every bad file gets one clear error naming file, key, value and allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hpo.config import load_study
from hpo.errors import ConfigError

GOOD_SPACE = {"params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}}}
GOOD_STUDY = {
    "description": "t",
    "model": {"name": "mobilenetv3_small_050", "image_size": 16},
    "search_space": "s",
    "budget": {"n_trials": 2, "max_epochs": 1},
}


def write_study(tmp_path: Path, study: dict, space: dict | None = None) -> Path:
    (tmp_path / "studies").mkdir(exist_ok=True)
    (tmp_path / "search_spaces").mkdir(exist_ok=True)
    (tmp_path / "search_spaces" / "s.yaml").write_text(yaml.safe_dump(space or GOOD_SPACE))
    path = tmp_path / "studies" / "t.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_shipped_studies_load(repo: Path) -> None:
    for path in sorted((repo / "studies").glob("*.yaml")):
        cfg = load_study(str(path))
        assert cfg.name == path.stem
        assert cfg.space is not None and cfg.space.names()


def test_good_study_resolves_defaults(tmp_path: Path) -> None:
    cfg = load_study(str(write_study(tmp_path, GOOD_STUDY)))
    assert cfg.objective.direction == "maximize"  # implied by val_accuracy
    assert cfg.train_config({"lr": 0.05}).lr == 0.05
    assert cfg.train_config().epochs == 1
    assert cfg.defaults() == {"lr": 1e-3}


@pytest.mark.parametrize(
    ("change", "key", "allowed_part"),
    [
        ({"budget": {"n_trials": 0}}, "budget.n_trials", "greater than or equal to 1"),
        ({"pruner": {"type": "asha"}}, "pruner.type", "'hyperband'"),
        ({"sampler": {"type": "grid"}}, "sampler.type", "'tpe'"),
        ({"objective": {"metric": "top5"}}, "objective", "val_accuracy"),
        ({"trian": {}}, "trian", "not recognised"),
        ({"train": {"optimizer": "lion"}}, "train.optimizer", "'adamw'"),
        ({"train": {"batchsize": 3}}, "train.batchsize", "not recognised"),
        ({"dataset": {"pixel_noise": 1.5}}, "dataset.pixel_noise", "less than or equal to 1"),
    ],
)
def test_bad_study_names_key_and_allowed(tmp_path, change, key, allowed_part) -> None:
    path = write_study(tmp_path, {**GOOD_STUDY, **change})
    with pytest.raises(ConfigError) as info:
        load_study(str(path))
    assert info.value.file == str(path)
    assert info.value.key == key
    assert allowed_part in info.value.allowed
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("params", "key", "allowed_part"),
    [
        ({"learning_rate": {"type": "float", "low": 0.1, "high": 1}}, "params.learning_rate", "'lr'"),
        ({"lr": {"type": "float", "low": 1, "high": 0.1}}, "params.lr", "must be <= high"),
        ({"lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "params.lr", "low > 0"),
        ({"lr": {"type": "gaussian"}}, "params.lr", "'float'"),
        ({"optimizer": {"type": "categorical", "choices": ["adamw", "lion"]}},
         "params.optimizer", "'sgd'"),
        ({"momentum": {"type": "float", "low": 0.8, "high": 0.9, "condition": {"optimizer": "sgd"}},
          "optimizer": {"type": "categorical", "choices": ["sgd"]}}, "params", "declared above"),
    ],
)
def test_bad_space_names_key_and_allowed(tmp_path, params, key, allowed_part) -> None:
    path = write_study(tmp_path, GOOD_STUDY, {"params": params})
    with pytest.raises(ConfigError) as info:
        load_study(str(path))
    assert info.value.file.endswith("s.yaml")
    assert info.value.key == key
    assert allowed_part in info.value.allowed


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="an existing YAML file"):
        load_study(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("budget: [unclosed\n")
    with pytest.raises(ConfigError, match="valid YAML"):
        load_study(str(bad))
    missing_space = write_study(tmp_path, {**GOOD_STUDY, "search_space": "absent"})
    with pytest.raises(ConfigError, match="absent.yaml"):
        load_study(str(missing_space))
