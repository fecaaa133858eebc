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

from dataclasses import dataclass, field

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
    """Train and validation indices of a stratified split that is the same for the same seed."""
    idx = torch.arange(len(y)).numpy()
    train_idx, val_idx = train_test_split(
        idx, test_size=val_fraction, random_state=seed, stratify=y.numpy()
    )
    return torch.from_numpy(train_idx), torch.from_numpy(val_idx)


def stratified_split(
    x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A stratified train/val split of images and labels."""
    train_idx, val_idx = stratified_indices(y, val_fraction, seed)
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]
