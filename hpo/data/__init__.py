"""Datasets as in-memory tensors: the training loop does no per-image Python work.

``digits`` (scikit-learn's), ``defects`` (generated, :mod:`hpo.data.defects`) and ``folder``
(user images, :mod:`hpo.data.folders`).

    >>> from hpo.config import DatasetConfig
    >>> data = build_dataset(DatasetConfig(name="digits"), image_size=16)
    >>> data.train_x.shape[1:], data.num_classes
    (torch.Size([3, 16, 16]), 10)
"""

from __future__ import annotations

from pathlib import Path

from hpo.data.defects import load_defects_splits
from hpo.data.digits import load_digits_splits
from hpo.data.folders import load_folder_splits
from hpo.data.noise import add_pixel_noise
from hpo.data.splits import DataSplits

__all__ = ["DataSplits", "build_dataset"]


def build_dataset(cfg, image_size: int, in_chans: int = 3) -> DataSplits:
    """Build the dataset a study names (a ``DatasetConfig``), resized to the model's image size,
    with its ``pixel_noise`` (:mod:`hpo.data.noise`) when that is above 0."""
    data = _load(cfg, image_size, in_chans)
    return add_pixel_noise(data, cfg.pixel_noise, cfg.seed) if cfg.pixel_noise > 0 else data


def _load(cfg, image_size: int, in_chans: int) -> DataSplits:
    if cfg.name == "digits":
        return load_digits_splits(image_size, in_chans, cfg.val_fraction, cfg.seed,
                                  cfg.test_fraction)
    if cfg.name == "defects":
        return load_defects_splits(image_size, in_chans, cfg.n_per_class, cfg.val_fraction,
                                   cfg.seed, cfg.multitask, cfg.test_fraction)

    def path(p: str | None) -> Path | None:
        return Path(p) if p is not None else None

    return load_folder_splits(path(cfg.root), image_size, in_chans, cfg.val_fraction, cfg.seed,
                              path(cfg.train_dir), path(cfg.val_dir), path(cfg.csv),
                              test_fraction=cfg.test_fraction, test_dir=path(cfg.test_dir))
