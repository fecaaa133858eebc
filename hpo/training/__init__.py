"""Training: a config, a model, tensors and a reporter callback in; a history out. No Optuna."""

from hpo.training.config import TrainConfig
from hpo.training.trainer import DivergedError, EpochResult, Trainer, seed_everything

__all__ = ["DivergedError", "EpochResult", "TrainConfig", "Trainer", "seed_everything"]
