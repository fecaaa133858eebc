"""User image folders: non-ASCII classes, corrupt files, mixed modes, config errors, the cache;
and the generated defects set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hpo.config import DatasetConfig
from hpo.data import build_dataset
from hpo.data.defects import generate_defects
from hpo.data.folders import load_folder_splits
from hpo.errors import ConfigError

CLASSES = ["划痕", "污点", "缺失", "变形", "异物"]


def save(path: Path, mode: str, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}.get(mode, 3)
    array = rng.integers(0, 255, (20, 24, channels), dtype=np.uint8).squeeze()
    img = Image.fromarray(array, "RGB" if mode == "P" else mode)
    (img.convert("P") if mode == "P" else img).save(path)


def make_folder(root: Path, per_class: int = 3) -> Path:
    modes = ["RGB", "L", "RGBA", "P"]
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            save(root / name / f"{i}.png", modes[(c + i) % 4], seed=c * 10 + i)
    return root


def test_non_ascii_classes_mixed_modes_and_a_corrupt_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "parts")
    (root / "污点" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "污点" / "notes.txt").write_text("ignored, not an image")
    with pytest.warns(UserWarning, match="broken.png"):
        data = load_folder_splits(root, image_size=16, val_fraction=0.4, seed=1)
    assert sorted(data.class_names) == sorted(CLASSES) and data.info["skipped_files"] == 1
    assert len(data.train_y) + len(data.val_y) == 15
    assert data.train_x.shape[1:] == (3, 16, 16) and 0 <= float(data.train_x.min())
    assert set(data.val_y.tolist()) == set(range(5))  # stratified: every class in validation


def test_train_and_val_dirs(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "cache"))
    make_folder(tmp_path / "train", 2)
    make_folder(tmp_path / "val", 1)
    cfg = DatasetConfig(name="folder", train_dir=str(tmp_path / "train"),
                        val_dir=str(tmp_path / "val"))
    data = build_dataset(cfg, image_size=8, in_chans=1)
    assert len(data.train_y) == 10 and len(data.val_y) == 5 and data.train_x.shape[1] == 1


def test_missing_folder_empty_class_and_no_images_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="dataset.root"):
        load_folder_splits(tmp_path / "nowhere", image_size=8)
    (tmp_path / "flat").mkdir()
    save(tmp_path / "flat" / "a.png", "RGB", 0)  # images but no class folders
    with pytest.raises(ConfigError, match="one sub-folder"):
        load_folder_splits(tmp_path / "flat", image_size=8)
    root = make_folder(tmp_path / "parts", 2)
    (root / "空类").mkdir()
    with pytest.raises(ConfigError, match="空类"):
        load_folder_splits(root, image_size=8, cache=tmp_path / "cache")


def test_decoded_folders_are_cached_by_content(tmp_path) -> None:
    root, cache = make_folder(tmp_path / "parts", 2), tmp_path / "cache"
    a = load_folder_splits(root, image_size=8, val_fraction=0.5, cache=cache)
    b = load_folder_splits(root, image_size=8, val_fraction=0.5, cache=cache)
    assert len(list(cache.glob("*.pt"))) == 1 and torch.equal(a.train_x, b.train_x)
    load_folder_splits(root, image_size=12, val_fraction=0.5, cache=cache)  # other size
    save(root / "异物" / "0.png", "RGB", seed=99)  # changed content
    load_folder_splits(root, image_size=8, val_fraction=0.5, cache=cache)
    assert len(list(cache.glob("*.pt"))) == 3


def test_defects_are_reproducible_from_the_seed_and_balanced() -> None:
    x1, y1, s1 = generate_defects(n_per_class=3, image_size=16, seed=7)
    x2, _y2, s2 = generate_defects(n_per_class=3, image_size=16, seed=7)
    x3, _, _ = generate_defects(n_per_class=3, image_size=16, seed=8)
    assert torch.equal(x1, x2) and torch.equal(s1, s2) and not torch.equal(x1, x3)
    assert torch.bincount(y1).tolist() == [3] * 5
