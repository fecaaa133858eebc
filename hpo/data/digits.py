"""scikit-learn's bundled handwritten digits (1797 8x8 images, 10 classes): no download."""

from __future__ import annotations

import hashlib

import torch
from sklearn.datasets import load_digits

from hpo.data.splits import DataSplits, make_splits, to_model_input


def load_digits_splits(
    image_size: int, in_chans: int = 3, val_fraction: float = 0.2, seed: int = 0,
    test_fraction: float | None = None,
) -> DataSplits:
    """Digits resized to ``image_size``, split stratified with ``seed`` (test first, with
    ``test_fraction``). The fingerprint hashes the bundled images and labels."""
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    x = to_model_input(images, image_size, in_chans)
    digest = hashlib.blake2b(bunch.images.tobytes() + bunch.target.tobytes(), digest_size=16)
    return make_splits(x, labels, [str(c) for c in bunch.target_names], val_fraction, seed,
                       test_fraction, info={"fingerprint": digest.hexdigest()})
