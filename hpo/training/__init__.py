"""Training: a config, a model, tensors and a reporter callback in; a history out. No Optuna.

The trainer's names load on first use (:mod:`hpo.lazy`), so
``from hpo.training.config import TrainConfig`` (which :mod:`hpo.config` does) does not import
torch, and commands that train nothing (``hpo report``, ``--help``...) start fast.

    >>> import hpo.training
    >>> hpo.training.TrainConfig(lr=0.1).lr
    0.1
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpo.lazy import lazy_exports
from hpo.training.config import TrainConfig

if TYPE_CHECKING:
    from hpo.training.trainer import DivergedError, EpochResult, Trainer, seed_everything

__all__ = ["DivergedError", "EpochResult", "TrainConfig", "Trainer", "seed_everything"]

_LAZY = {name: "hpo.training.trainer"
         for name in ("DivergedError", "EpochResult", "Trainer", "seed_everything")}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
