"""Training: a config, a model, tensors and a reporter callback in; a history out. No Optuna.

The trainer's names load on first use (a module ``__getattr__``, as Optuna's ``_LazyImport``), so
``from hpo.training.config import TrainConfig`` (which :mod:`hpo.config` does) does not import
torch, and commands that train nothing (``hpo report``, ``--help``...) start fast.

    >>> import hpo.training
    >>> hpo.training.TrainConfig(lr=0.1).lr
    0.1
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hpo.training.config import TrainConfig

if TYPE_CHECKING:
    from hpo.training.trainer import DivergedError, EpochResult, Trainer, seed_everything

__all__ = ["DivergedError", "EpochResult", "TrainConfig", "Trainer", "seed_everything"]

_LAZY = {name: "hpo.training.trainer"
         for name in ("DivergedError", "EpochResult", "Trainer", "seed_everything")}


def __getattr__(name: str) -> Any:
    """Import the trainer (and torch) only when one of its names is used."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
