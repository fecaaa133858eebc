"""Training-time augmentation of whole batches on tensors (no PIL in the loop), on any device.

``torchvision.transforms.v2`` draws *one* set of random parameters per call, so a batch would share
one crop and one rotation. Here each image gets its own: random resized crop, flips and rotation
are one affine matrix per image and a single ``grid_sample``; colour jitter is a per-image
broadcast; the blur is torchvision's ``gaussian_blur`` on a random subset. MixUp and CutMix are
torchvision's (they mix labels too). Nothing here runs at validation.

    >>> import torch
    >>> from hpo.training.config import TrainConfig
    >>> aug = BatchAugment(TrainConfig(aug_crop_scale=0.5, aug_hflip=0.5, aug_rotation=15))
    >>> x = torch.rand(8, 3, 16, 16)
    >>> y = aug(x)
    >>> y.shape == x.shape and bool((y >= 0).all() and (y <= 1).all()) and not torch.equal(x, y)
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from hpo.training.config import TrainConfig

Mixing = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class BatchAugment:
    """Per-image random augmentation of a batch ``(N, C, H, W)`` of images in ``[0, 1]``."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.geometric = (cfg.aug_crop_scale < 1 or cfg.aug_hflip > 0 or cfg.aug_vflip > 0
                          or cfg.aug_rotation > 0)
        self.enabled = self.geometric or cfg.aug_color_jitter > 0 or cfg.aug_blur_prob > 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.geometric:
            x = self._affine(x)
        if self.cfg.aug_color_jitter > 0:
            x = self._jitter(x)
        if self.cfg.aug_blur_prob > 0:
            x = self._blur(x)
        return x

    def _uniform(self, n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
        return torch.empty(n, device=device).uniform_(low, high)

    def _affine(self, x: torch.Tensor) -> torch.Tensor:
        n, dev, cfg = x.shape[0], x.device, self.cfg
        area = self._uniform(n, cfg.aug_crop_scale, 1.0, dev)
        log_ratio = self._uniform(n, math.log(3 / 4), math.log(4 / 3), dev)
        ratio = log_ratio.exp() if cfg.aug_crop_scale < 1 else torch.ones(n, device=dev)
        sx = (area * ratio).sqrt().clamp(max=1.0)
        sy = (area / ratio).sqrt().clamp(max=1.0)
        tx = (1 - sx) * self._uniform(n, -1.0, 1.0, dev)
        ty = (1 - sy) * self._uniform(n, -1.0, 1.0, dev)
        angle = self._uniform(n, -cfg.aug_rotation, cfg.aug_rotation, dev).deg2rad()
        sx = torch.where(torch.rand(n, device=dev) < cfg.aug_hflip, -sx, sx)
        sy = torch.where(torch.rand(n, device=dev) < cfg.aug_vflip, -sy, sy)
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack([torch.stack([sx * cos, -sy * sin, tx], 1),
                             torch.stack([sx * sin, sy * cos, ty], 1)], 1).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                             align_corners=False)

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        n, j, dev = x.shape[0], self.cfg.aug_color_jitter, x.device
        brightness, contrast, saturation = (self._uniform(n, 1 - j, 1 + j, dev).view(n, 1, 1, 1)
                                            for _ in range(3))
        x = x * brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast + mean
        if x.shape[1] == 3:
            gray = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            x = (x - gray) * saturation + gray
        return x.clamp(0, 1)

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        chosen = torch.rand(x.shape[0], device=x.device) < self.cfg.aug_blur_prob
        if not chosen.any():
            return x
        sigma = float(torch.empty(()).uniform_(0.1, self.cfg.aug_blur_sigma))
        kernel = min(2 * math.ceil(3 * sigma) + 1, (min(x.shape[-2:]) - 1) // 2 * 2 + 1)
        x = x.clone()
        x[chosen] = v2.functional.gaussian_blur(x[chosen], [kernel, kernel], [sigma, sigma])
        return x


class BatchMixing:
    """MixUp/CutMix of a standardised batch ``(x, y)``: CutMix on a ``cutmix_prob`` share of
    batches, MixUp (``mixup_alpha > 0``) on the others, else the labels only become one-hot, so
    every batch has ``(N, num_classes)`` probability targets. Draws use torch's global RNG
    (seeded by ``seed_everything``); the mixing itself is torchvision's ``v2.CutMix``/``v2.MixUp``.
    """

    def __init__(self, cfg: TrainConfig, num_classes: int) -> None:
        self.num_classes = num_classes
        self.cutmix_prob = cfg.cutmix_prob
        self.cutmix = v2.CutMix(alpha=1.0, num_classes=num_classes)
        self.mixup = (v2.MixUp(alpha=cfg.mixup_alpha, num_classes=num_classes)
                      if cfg.mixup_alpha > 0 else None)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cutmix_prob > 0 and float(torch.rand(())) < self.cutmix_prob:
            return self.cutmix(x, y)
        if self.mixup is not None:
            return self.mixup(x, y)
        return x, F.one_hot(y, self.num_classes).float()


def build_mixing(cfg: TrainConfig, num_classes: int) -> Mixing | None:
    """The batch mixing of ``cfg`` (a :class:`BatchMixing`), or ``None`` when MixUp and CutMix
    are both off. Targets become class probabilities, whichever of the two (or neither) a batch
    gets; CutMix alone (``mixup_alpha: 0``) one-hots the batches it leaves unmixed.

        >>> import torch
        >>> x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
        >>> for cfg in (TrainConfig(mixup_alpha=0.4), TrainConfig(cutmix_prob=0.5),
        ...             TrainConfig(mixup_alpha=0.4, cutmix_prob=0.5)):
        ...     mix = build_mixing(cfg, num_classes=3)
        ...     for _ in range(8):  # batches drawn for CutMix and for the other branch
        ...         mx, my = mix(x, y)
        ...         assert mx.shape == x.shape and my.shape == (4, 3)
        ...         assert torch.allclose(my.sum(1), torch.ones(4))
        >>> build_mixing(TrainConfig(), num_classes=3) is None
        True
    """
    if cfg.mixup_alpha <= 0 and cfg.cutmix_prob <= 0:
        return None
    return BatchMixing(cfg, num_classes)
