"""Classes and the train/val split of user folders: at least 2 classes, every class in both
splits (small folders included), at least 2 images per class to split; the split of digits and
defects is unchanged (scikit-learn's), and the errors reach the CLI as exit 2 with no storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from hpo.config import DatasetConfig
from hpo.data import build_dataset
from hpo.data.folders import load_folder_splits
from hpo.data.splits import stratified_indices
from hpo.errors import ConfigError

SMOKE_SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"


def write_folder(root: Path, counts: dict[str, int]) -> Path:
    """``root/<class>/<i>.png``: ``counts[class]`` small random RGB images per class."""
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            array = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(array).save(root / name / f"{i}.png")
    return root


def labels(counts: list[int]) -> torch.Tensor:
    return torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])


def check_split(y: torch.Tensor, train: torch.Tensor, val: torch.Tensor) -> None:
    """Disjoint, covering every index once, and every class in both splits."""
    assert sorted(torch.cat([train, val]).tolist()) == list(range(len(y)))
    assert set(y[train].tolist()) == set(y.tolist()) == set(y[val].tolist())


@pytest.mark.parametrize(("counts", "fraction", "n_val"), [
    ([4] * 5, 0.2, 5),  # 4 validation images for 5 classes: scikit-learn raised ValueError
    ([2] * 3, 0.2, 3),  # the smallest splittable folder: 1 + 1 per class
    ([2] * 3, 0.9, 3),  # 1 train image per class stays
    ([19] * 9 + [2], 0.1, 19),  # scikit-learn left the small class out of validation
    ([10, 2, 2, 2, 2, 2], 0.25, 3 + 5),  # per class round(n * fraction) (2.5 -> 3), at least 1
])
def test_small_classes_are_in_both_splits(counts, fraction, n_val) -> None:
    y = labels(counts)
    train, val = stratified_indices(y, fraction, seed=0)
    check_split(y, train, val)
    assert len(val) == n_val
    again = stratified_indices(y, fraction, seed=0)
    assert torch.equal(train, again[0]) and torch.equal(val, again[1])  # same seed, same split


def test_the_per_class_split_follows_the_seed() -> None:
    y = labels([4] * 5)
    splits = {tuple(sorted(stratified_indices(y, 0.2, seed)[1].tolist())) for seed in range(6)}
    assert len(splits) > 1


def test_digits_keep_scikit_learns_split(tmp_path, monkeypatch) -> None:
    """Where scikit-learn's split already has every class on both sides (digits, defects,
    large folders) it is used as before: existing studies keep their validation set."""
    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "cache"))
    y = torch.tensor(load_digits().target)
    train, val = stratified_indices(y, 0.2, seed=3)
    sk_train, sk_val = train_test_split(np.arange(len(y)), test_size=0.2, random_state=3,
                                        stratify=y.numpy())
    assert train.tolist() == sk_train.tolist() and val.tolist() == sk_val.tolist()
    # the smallest defects set (4 per class, 4 validation images for 5 classes) used to raise
    data = build_dataset(DatasetConfig(name="defects", n_per_class=4), image_size=8)
    assert len(data.val_y) == 5 and set(data.val_y.tolist()) == set(range(5))


def test_a_class_with_one_image_cannot_be_split(tmp_path) -> None:
    with pytest.raises(ValueError, match="class 1 has a single image.*at least 2 images"):
        stratified_indices(labels([3, 1, 3]), 0.2, seed=0)
    root = write_folder(tmp_path / "parts", {"ok": 3, "scratch": 1})
    with pytest.raises(ConfigError, match=r"dataset.root = 'scratch/ \(1 image\)'.*at least 2 "
                                          "images per class"):
        load_folder_splits(root, image_size=8, cache=tmp_path / "cache")


def test_a_single_class_is_a_config_error(tmp_path) -> None:
    root = write_folder(tmp_path / "parts", {"ok": 4})
    with pytest.raises(ConfigError, match="dataset.root.*ok/.*at least 2 class folders") as err:
        load_folder_splits(root, image_size=8, cache=tmp_path / "cache")
    assert err.value.file == str(root)
    write_folder(tmp_path / "train", {"ok": 2})
    write_folder(tmp_path / "val", {"ok": 2})
    with pytest.raises(ConfigError, match="dataset.train_dir.*at least 2 class folders"):
        load_folder_splits(train_dir=tmp_path / "train", val_dir=tmp_path / "val", image_size=8,
                           cache=tmp_path / "cache")
    # a validation folder may hold only some of the train classes
    write_folder(tmp_path / "train", {"scratch": 2})
    data = load_folder_splits(train_dir=tmp_path / "train", val_dir=tmp_path / "val",
                              image_size=8, cache=tmp_path / "cache")
    assert data.class_names == ["ok", "scratch"] and data.val_y.tolist() == [0, 0]


def run_folder_study(tmp_path: Path, hpo_cli, root: Path):
    study = tmp_path / "parts.yaml"
    study.write_text(yaml.safe_dump({
        "dataset": {"name": "folder", "root": str(root)},
        "model": {"name": "mobilenetv3_small_050", "image_size": 16},
        "search_space": str(SMOKE_SPACE),
        "budget": {"n_trials": 1, "max_epochs": 1},
        "sampler": {"type": "random"},
    }))
    db = tmp_path / "x.db"
    result = hpo_cli("study", str(study), "--storage", f"sqlite:///{db}", "--no-progress",
                     cwd=tmp_path, env={"HPO_CACHE_DIR": str(tmp_path / "cache")})
    return result, db


def test_cli_trains_a_folder_smaller_than_its_class_count(tmp_path, hpo_cli) -> None:
    # 3 classes x 2 images: validation got ceil(6 * 0.2) = 2 < 3 images and sklearn raised
    root = write_folder(tmp_path / "parts", {"ok": 2, "scratch": 2, "stain": 2})
    result, db = run_folder_study(tmp_path, hpo_cli, root)
    assert result.returncode == 0, result.stderr
    (trial,) = optuna.load_study(study_name="parts", storage=f"sqlite:///{db}").trials
    assert trial.state == TrialState.COMPLETE


@pytest.mark.parametrize(("counts", "value", "allowed"), [
    ({"ok": 3}, "1 class folder (ok/)", "at least 2 class folders"),
    ({"ok": 3, "scratch": 1}, "scratch/ (1 image)", "at least 2 images per class"),
])
def test_cli_rejects_unsplittable_folders_before_any_storage(tmp_path, hpo_cli, counts, value,
                                                            allowed) -> None:
    root = write_folder(tmp_path / "parts", counts)
    result, db = run_folder_study(tmp_path, hpo_cli, root)
    assert result.returncode == 2, result.stderr
    assert (f"hpo: error: {root}: dataset.root = '{value}' is invalid; allowed: {allowed}"
            in result.stderr)
    assert "Traceback" not in result.stderr
    assert not db.exists()
