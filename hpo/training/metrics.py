"""Metrics on tensors (no scikit-learn in the loop): accuracy, macro-F1, MAE, within-±k rate.

    >>> import torch
    >>> macro_f1(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), num_classes=2)
    0.6666666865348816
    >>> within_k(torch.tensor([1.0, 2.0, 5.0]), torch.tensor([1.5, 2.0, 3.0]), k=0.5)
    0.6666666865348816
"""

from __future__ import annotations

import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``cm[t, p]`` counts samples of true class ``t`` predicted as ``p``."""
    flat = target.to(torch.int64) * num_classes + pred.to(torch.int64)
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float((pred == target).float().mean())


def macro_f1(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``target`` or ``pred``."""
    cm = confusion_matrix(pred, target, num_classes).to(torch.float32)
    tp = cm.diag()
    precision_den, recall_den = cm.sum(0), cm.sum(1)
    f1 = 2 * tp / (precision_den + recall_den).clamp_min(1e-12)
    present = (precision_den + recall_den) > 0
    return float(f1[present].mean()) if present.any() else 0.0


def mae(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error."""
    return float((pred.float() - target.float()).abs().mean())


def within_k(pred: torch.Tensor, target: torch.Tensor, k: float) -> float:
    """Share of predictions within ``±k`` of the target (boundary included)."""
    return float(((pred.float() - target.float()).abs() <= k + 1e-9).float().mean())
