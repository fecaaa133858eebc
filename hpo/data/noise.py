"""Gaussian pixel noise added once to every image of a dataset: a harder version of a task.

The noise is drawn once, from the dataset's ``seed``, for the train, validation and test images
in that order, and clipped to ``[0, 1]``; every trial of a study sees the same noisy images.

    >>> import torch
    >>> from hpo.data.splits import DataSplits
    >>> clean = DataSplits(torch.full((4, 1, 2, 2), 0.5), torch.arange(4), torch.zeros(2, 1, 2, 2),
    ...                    torch.arange(2), ["a", "b", "c", "d"], info={"fingerprint": "ab"})
    >>> noisy = add_pixel_noise(clean, sigma=0.3, seed=0)
    >>> bool(noisy.train_x.std() > 0), float(noisy.val_x.min()) >= 0, noisy.info["fingerprint"]
    (True, True, 'ab+pixel_noise=0.3@0')
    >>> torch.equal(noisy.train_x, add_pixel_noise(clean, sigma=0.3, seed=0).train_x)
    True
"""

from __future__ import annotations

import dataclasses

import torch

from hpo.data.splits import DataSplits


def add_pixel_noise(data: DataSplits, sigma: float, seed: int) -> DataSplits:
    """``data`` with ``N(0, sigma)`` noise on every pixel of every split (same ``seed``, same
    noise); labels, values and class names unchanged. The fingerprint names the noise."""
    g = torch.Generator().manual_seed(seed)

    def noisy(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None:
            return None
        return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)

    info = dict(data.info)
    info["fingerprint"] = f"{info.get('fingerprint', '')}+pixel_noise={sigma:g}@{seed}"
    return dataclasses.replace(data, train_x=noisy(data.train_x), val_x=noisy(data.val_x),
                               test_x=noisy(data.test_x), info=info)
