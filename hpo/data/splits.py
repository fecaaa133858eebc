"""The tensors a Trainer consumes: a train split and a validation split, held in memory.

Images are float ``(N, C, H, W)`` in ``[0, 1]``; the Trainer augments them and then standardises
with ``mean``/``std`` (per channel, from the train split). Multi-task data also carries one
regression value per image (``train_v``/``val_v``). A held-out test split (``test_x``...) rides
along until :meth:`DataSplits.without_test` hands the Trainer train and validation only.

    >>> import torch
    >>> s = DataSplits(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]),
    ...                torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), ["a", "b"])
    >>> s.num_classes, s.multitask, tuple(s.mean.shape)
    (2, False, (3,))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from hpo.record import DataFacts, SkippedFile


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
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    test_v: torch.Tensor | None = None
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

    @property
    def has_test(self) -> bool:
        return self.test_y is not None

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class: ``{split: {class name: n}}``."""
        splits = {"train": self.train_y, "val": self.val_y, "test": self.test_y}
        return {name: dict(zip(self.class_names, torch.bincount(
                    y, minlength=self.num_classes).tolist()))
                for name, y in splits.items() if y is not None}

    def facts(self, source: str) -> DataFacts:
        """What training sees, for the study's record: class names in index order, image size,
        channels, the normalisation the Trainer applies (and, multi-task, the regression
        value's), counts per split and class, the loader's fingerprint and skipped files.

            >>> s = DataSplits(torch.ones(2, 1, 4, 4), torch.tensor([0, 1]),
            ...                torch.ones(2, 1, 4, 4), torch.tensor([1, 0]), ["ok", "bad"])
            >>> f = s.facts("folder")
            >>> f.classes, f.image_size, f.channels, f.counts["val"]
            (['ok', 'bad'], 4, 1, {'ok': 1, 'bad': 1})
        """
        value_mean = float(self.train_v.mean()) if self.multitask else None
        value_std = float(self.train_v.std().clamp_min(1e-6)) if self.multitask else None
        return DataFacts(
            classes=list(self.class_names), image_size=int(self.train_x.shape[-1]),
            channels=int(self.train_x.shape[1]), mean=self.mean.tolist(), std=self.std.tolist(),
            counts=self.counts(), fingerprint=str(self.info.get("fingerprint", "")),
            skipped=[SkippedFile(path=p, reason=r) for p, r in self.info.get("skipped", [])],
            source=source, value_mean=value_mean, value_std=value_std)

    def without_test(self) -> DataSplits:
        """The same train and validation splits, the test split dropped (what training sees)."""
        return replace(self, test_x=None, test_y=None, test_v=None)


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


def split_indices(y: torch.Tensor, val_fraction: float, seed: int,
                  test_fraction: float | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Train, validation and (with ``test_fraction``) test indices. The test split is carved
    out first (stratified, the same for the same ``seed``), then the rest is split into train
    and validation; without ``test_fraction`` the split is :func:`stratified_indices`'s. A class
    with fewer than 3 images cannot be in all three: ``ValueError``.

        >>> y = torch.tensor([0] * 10 + [1] * 10)
        >>> train, val, test = split_indices(y, 0.25, seed=0, test_fraction=0.2)
        >>> len(train), len(val), sorted(y[test].tolist())
        (12, 4, [0, 0, 1, 1])
    """
    if test_fraction is None:
        return (*stratified_indices(y, val_fraction, seed), None)
    counts = torch.bincount(y).tolist() if len(y) else []
    few = [(c, n) for c, n in enumerate(counts) if 0 < n < 3]
    if few:
        raise ValueError(f"class {few[0][0]} has {few[0][1]} image(s); a test split needs at "
                         "least 3 per class (one each for train, validation and test)")
    rest, test = stratified_indices(y, test_fraction, seed)
    train, val = stratified_indices(y[rest], val_fraction, seed)
    return rest[train], rest[val], test


def make_splits(x: torch.Tensor, y: torch.Tensor, class_names: list[str], val_fraction: float,
                seed: int, test_fraction: float | None = None,
                values: torch.Tensor | None = None, info: dict | None = None) -> DataSplits:
    """A :class:`DataSplits` of images ``x`` (labels ``y``, optional regression ``values``)
    split by :func:`split_indices`."""
    train, val, test = split_indices(y, val_fraction, seed, test_fraction)

    def part(t: torch.Tensor | None, idx: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None or idx is None else t[idx]

    return DataSplits(x[train], y[train], x[val], y[val], class_names, info=info or {},
                      train_v=part(values, train), val_v=part(values, val),
                      test_x=part(x, test), test_y=part(y, test), test_v=part(values, test))
