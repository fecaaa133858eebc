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


def test_non_ascii_classes_mixed_modes_and_a_corrupt_file(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "parts")
    (root / "污点" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "污点" / "notes.txt").write_text("ignored, not an image")
    data = load_folder_splits(root, image_size=16, val_fraction=0.4, seed=1)
    said = [r.getMessage() for r in caplog.records if r.name == "hpo.data"]
    assert [m.split(": ", 2)[1] for m in said] == [f"skipped {root / '污点' / x}"
                                                    for x in ("notes.txt", "broken.png")]
    assert sorted(data.class_names) == sorted(CLASSES) and data.info["skipped_files"] == 2
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


def test_a_skipped_file_is_counted_on_the_trial(tmp_path, monkeypatch) -> None:
    import optuna

    from hpo.config import load_study
    from hpo.runner import run_study

    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "parts")
    (root / "缺失" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (tmp_path / "studies").mkdir()
    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "f.yaml").write_text(
        "params:\n  lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    (tmp_path / "studies" / "f.yaml").write_text(
        f"dataset: {{name: folder, root: '{root}', val_fraction: 0.4}}\n"
        "model: {name: mobilenetv3_small_050, image_size: 16}\nsearch_space: f\n"
        "sampler: {type: random}\nbudget: {n_trials: 1, max_epochs: 1}\n")
    study = run_study(load_study(str(tmp_path / "studies" / "f.yaml")),
                      f"sqlite:///{tmp_path / 'f.db'}", show_progress=False, echo=lambda _: None)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.user_attrs["data_skipped_files"] == 1


def test_the_cache_key_follows_the_train_class_list(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "cache"))
    for name, seed in (("b", 1), ("c", 2)):
        for i in range(2):
            save(tmp_path / "train" / name / f"{i}.png", "RGB", seed * 10 + i)
    save(tmp_path / "val" / "c" / "0.png", "RGB", 99)
    dirs = {"train_dir": tmp_path / "train", "val_dir": tmp_path / "val", "image_size": 8}
    assert load_folder_splits(**dirs).val_y.tolist() == [1]  # c is the second train class
    (tmp_path / "train" / "b").rename(tmp_path / "train" / "d")  # val files unchanged
    data = load_folder_splits(**dirs)
    assert data.class_names == ["c", "d"] and data.val_y.tolist() == [0]
