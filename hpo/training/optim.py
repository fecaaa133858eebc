"""The optimizer a config names: AdamW, Adam, SGD (momentum, Nesterov) or RMSprop.

Biases and normalisation weights (1-d parameters) get no weight decay.

    >>> import torch
    >>> from hpo.training.config import TrainConfig
    >>> opt = build_optimizer(TrainConfig(optimizer="sgd", lr=0.1, nesterov=True),
    ...                       torch.nn.Linear(4, 2))
    >>> type(opt).__name__, opt.param_groups[0]["nesterov"]
    ('SGD', True)
"""

from __future__ import annotations

import torch

from hpo.training.config import TrainConfig


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """A torch optimizer over ``model``'s trainable parameters, in two weight-decay groups."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.rmsprop_alpha,
                                   momentum=cfg.momentum)
    betas = (cfg.beta1, cfg.beta2)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=betas)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas)
