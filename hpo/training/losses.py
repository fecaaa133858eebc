"""Losses: cross-entropy with class weights and label smoothing (hard or mixed targets), and the
multi-task loss ``cls_weight * CE + reg_weight * (L1 or MSE)`` (trained on, and reported as
``val_total_loss``; ``val_loss`` stays the plain cross-entropy).

    >>> import torch
    >>> from hpo.training.config import TrainConfig
    >>> class_weight_tensor(TrainConfig(class_weights="balanced"), torch.tensor([0, 0, 0, 1]),
    ...                     ["ok", "scratch"]).tolist()
    [0.6666666865348816, 2.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from hpo.errors import ConfigError
from hpo.training.config import TrainConfig


def class_weight_tensor(cfg: TrainConfig, train_y: torch.Tensor,
                        class_names: list[str]) -> torch.Tensor | None:
    """Per-class loss weights: ``balanced`` is ``n / (classes * count)`` (scikit-learn's rule);
    a map gives weights by class name (classes not named keep 1.0); ``none`` gives ``None``."""
    if cfg.class_weights == "none":
        return None
    if cfg.class_weights == "balanced":
        classes = np.arange(len(class_names))
        present = np.unique(train_y.numpy())
        weights = np.ones(len(class_names))
        weights[present] = compute_class_weight("balanced", classes=present, y=train_y.numpy())
        return torch.tensor(weights[classes], dtype=torch.float32)
    unknown = sorted(set(cfg.class_weights) - set(class_names))
    if unknown:
        raise ConfigError("train", "class_weights", unknown[0], f"class names {class_names}")
    return torch.tensor([float(cfg.class_weights.get(c, 1.0)) for c in class_names])


def classification_loss(logits: torch.Tensor, target: torch.Tensor, cfg: TrainConfig,
                        weight: torch.Tensor | None) -> torch.Tensor:
    """Mean cross-entropy; ``target`` is class indices or (after MixUp/CutMix) probabilities."""
    return F.cross_entropy(logits.float(), target, weight=weight,
                           label_smoothing=cfg.label_smoothing)


def regression_loss(pred: torch.Tensor, value: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """L1 or MSE between the regression head and the (standardised) target value."""
    fn = F.l1_loss if cfg.reg_loss == "l1" else F.mse_loss
    return fn(pred.float().view(-1), value.float().view(-1))


def multitask_loss(ce: Any, reg: Any, cfg: TrainConfig) -> Any:
    """``cls_weight * ce + reg_weight * reg`` (tensors or floats): what a multi-task model is
    trained on, and its ``val_total_loss``.

        >>> multitask_loss(2.0, 0.5, TrainConfig(cls_weight=1.0, reg_weight=2.0))
        3.0
    """
    return cfg.cls_weight * ce + cfg.reg_weight * reg
