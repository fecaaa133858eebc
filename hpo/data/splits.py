"""The tensors a Trainer consumes: a train split and a validation split, held in memory.

Images are float ``(N, C, H, W)`` in ``[0, 1]``; the Trainer augments them and then standardises
with ``mean``/``std`` (per channel, from the train split). Multi-task data also carries one
regression value per image (``train_v``/``val_v``).

    >>> import torch
    >>> s = DataSplits(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]),
    ...                torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), ["a", "b"])
    >>> s.num_classes, s.multitask, tuple(s.mean.shape)
    (2, False, (3,))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split


@dataclass
class DataSplits:
    """Train/val images in ``[0, 1]``, int64 labels, optional float values, class names."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    class_names: list[str]
    info: dict = field(default_factory=dict)
    train_v: torch.Tensor | None = None
    val_v: torch.Tensor | None = None
    mean: torch.Tensor = field(init=False)
    std: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.mean = self.train_x.mean(dim=(0, 2, 3))
        self.std = self.train_x.std(dim=(0, 2, 3)).clamp_min(1e-6)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def multitask(self) -> bool:
        """Whether every image also has a regression value."""
        return self.train_v is not None


def to_model_input(images: torch.Tensor, image_size: int, in_chans: int) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` images in [0, 1] to ``image_size`` and ``in_chans`` channels."""
    x = images
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=True).clamp(0, 1)
    if x.shape[1] == 1 and in_chans > 1:
        x = x.expand(-1, in_chans, -1, -1)
    elif x.shape[1] != in_chans:
        x = x.mean(dim=1, keepdim=True).expand(-1, in_chans, -1, -1)
    return x.contiguous()


def stratified_indices(y: torch.Tensor, val_fraction: float,
                       seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and validation indices of a stratified split that is the same for the same seed.

    Every class is in both splits: scikit-learn's stratified split where it gives that, else
    (few images per class, many classes, e.g. 5 classes of 4 images at 0.2) a per-class split
    that sends ``round(n * val_fraction)`` of a class's ``n`` images to validation, at least 1
    and at most ``n - 1``. A class with a single image cannot be in both: ``ValueError``.

        >>> y = torch.tensor([0] * 4 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4)
        >>> train, val = stratified_indices(y, 0.2, seed=0)
        >>> sorted(y[val].tolist()), len(train)
        ([0, 1, 2, 3, 4], 15)
    """
    counts = torch.bincount(y).tolist() if len(y) else []
    single = [c for c, n in enumerate(counts) if n == 1]
    if single:
        raise ValueError(f"class {single[0]} has a single image; a stratified split needs at "
                         "least 2 images per class (one for train, one for validation)")
    classes = {c for c, n in enumerate(counts) if n}
    n_val = math.ceil(val_fraction * len(y))  # scikit-learn's rounding
    if min(n_val, len(y) - n_val) >= len(classes):
        train_idx, val_idx = train_test_split(
            np.arange(len(y)), test_size=val_fraction, random_state=seed, stratify=y.numpy()
        )
        if set(y[val_idx].tolist()) == classes == set(y[train_idx].tolist()):
            return torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    return _per_class_indices(y, sorted(classes), val_fraction, seed)


def _per_class_indices(y: torch.Tensor, classes: list[int], val_fraction: float,
                       seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``round(n * val_fraction)`` of each class's ``n`` images, clamped to ``[1, n - 1]``, to
    validation (chosen with ``seed``); the rest to train."""
    rng = np.random.default_rng(seed)
    labels = y.numpy()
    train, val = [], []
    for c in classes:
        members = rng.permutation(np.flatnonzero(labels == c))
        k = min(max(math.floor(len(members) * val_fraction + 0.5), 1), len(members) - 1)
        val.append(members[:k])
        train.append(members[k:])
    return (torch.from_numpy(rng.permutation(np.concatenate(train))),
            torch.from_numpy(rng.permutation(np.concatenate(val))))


def stratified_split(
    x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A stratified train/val split of images and labels."""
    train_idx, val_idx = stratified_indices(y, val_fraction, seed)
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]
