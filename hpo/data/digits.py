"""scikit-learn's bundled handwritten digits (1797 8x8 images, 10 classes): no download."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from hpo.data.splits import DataSplits, stratified_split, to_model_input


def load_digits_splits(
    image_size: int, in_chans: int = 3, val_fraction: float = 0.2, seed: int = 0
) -> DataSplits:
    """Digits resized to ``image_size``, split stratified with ``seed``."""
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    x = to_model_input(images, image_size, in_chans)
    train_x, train_y, val_x, val_y = stratified_split(x, labels, val_fraction, seed)
    return DataSplits(train_x, train_y, val_x, val_y, [str(c) for c in bunch.target_names])
