"""Model factory: timm's ``create_model`` by name, with the dataset's class count; for multi-task
data a classification head and a regression head share one timm backbone.

    >>> from hpo.config import ModelConfig
    >>> model = build_model(ModelConfig(name="mobilenetv3_small_050"), num_classes=10)
    >>> model.num_classes
    10
    >>> import torch
    >>> mt = build_model(ModelConfig(name="test_efficientnet"), num_classes=5, multitask=True)
    >>> logits, value = mt(torch.rand(2, 3, 32, 32))
    >>> tuple(logits.shape), tuple(value.shape)
    ((2, 5), (2,))
"""

from __future__ import annotations

import timm
import torch

from hpo.config import ModelConfig
from hpo.errors import ModelError


class MultiTaskModel(torch.nn.Module):
    """A timm backbone (pooled features) with a classification head and a regression head."""

    def __init__(self, backbone: torch.nn.Module, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.dropout = torch.nn.Dropout(dropout)
        width = getattr(backbone, "head_hidden_size", None) or backbone.num_features  # pooled
        self.cls_head = torch.nn.Linear(width, num_classes)
        self.reg_head = torch.nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (N, classes), value (N,))``."""
        features = self.dropout(self.backbone(x))
        return self.cls_head(features), self.reg_head(features).squeeze(1)


def build_model(cfg: ModelConfig, num_classes: int, multitask: bool = False) -> torch.nn.Module:
    """Create ``cfg.name`` from timm's registry; a clear ModelError when it cannot be had.

    ``head_dropout`` is the dropout before the head(s); ``drop_path_rate`` (stochastic depth) is
    passed only when non-zero, and a model that does not support it is a ModelError."""
    if not timm.is_model(cfg.name):
        close = timm.list_models(f"*{cfg.name.split('_')[0]}*")[:8]
        raise ModelError(f"model.name = {cfg.name!r} is not a timm model; similar: {close}")
    extra = {"drop_path_rate": cfg.drop_path_rate} if cfg.drop_path_rate > 0 else {}
    try:
        model = timm.create_model(
            cfg.name,
            pretrained=cfg.pretrained,
            num_classes=0 if multitask else num_classes,
            in_chans=cfg.in_chans,
            drop_rate=0.0 if multitask else cfg.head_dropout,
            **extra,
        )
    except TypeError as exc:
        if "drop_path_rate" not in str(exc):
            raise
        raise ModelError(f"model {cfg.name!r} does not support drop_path_rate (stochastic depth);"
                         " set model.drop_path_rate: 0") from None
    except (OSError, RuntimeError, ValueError) as exc:
        if not cfg.pretrained:
            raise
        raise ModelError(
            f"pretrained weights for {cfg.name!r} could not be loaded ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}). With no network, set model.pretrained: false or "
            "put the weights in the Hugging Face cache (HF_HOME) first."
        ) from None
    return MultiTaskModel(model, num_classes, cfg.head_dropout) if multitask else model
