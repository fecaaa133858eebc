"""The training recipe: every knob the Trainer reads, with its default and its allowed range.

A study file sets fixed values under ``train:``; a search space may search any of these fields by
name. Unknown names are rejected, so a typo never silently does nothing, and fields that only make
sense together are checked together::

    >>> cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, epochs=3)
    >>> cfg.optimizer, cfg.epochs, cfg.effective_batch_size
    ('sgd', 3, 64)
    >>> TrainConfig(warmup="linear", warmup_ratio=0)   # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ValidationError: warmup='linear' needs warmup_steps, warmup_epochs or warmup_ratio > 0
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Optimizer = Literal["adamw", "adam", "sgd", "rmsprop"]
Scheduler = Literal[
    "constant", "cosine", "cosine_restarts", "step", "exponential", "plateau", "onecycle", "cyclic"
]
MonitoredMetric = Literal["val_loss", "val_accuracy", "val_macro_f1", "val_mae"]


class TrainConfig(BaseModel):
    """Hyperparameters of one training run (no Optuna, no model architecture). Flat on purpose:
    the field names are the names search spaces use.

    Example:

        >>> cfg = TrainConfig(lr=0.05, epochs=20, scheduler="cosine", warmup_epochs=2,
        ...                   batch_size=32, accum_steps=4, ema_decay=0.999)
        >>> cfg.effective_batch_size, cfg.optimizer_steps(0, n_train=1000)
        (128, 8)

    Args:
        (every field, grouped as below; each field's default, range and ``description`` are
        in ``TrainConfig.model_fields``)
        run length and batches:
            ``epochs``, ``batch_size``, ``accum_steps``, ``eval_batch_size``, ``seed``.
        optimizer:
            ``optimizer`` (adamw, sgd, ...), ``lr``, ``weight_decay``, ``momentum``, ...
        schedule:
            ``scheduler``, ``warmup`` and its length, ``min_lr``, stepped per optimizer step.
        regularisation and augmentation:
            ``label_smoothing``, ``mixup_alpha``/CutMix, flips, crops, colour jitter (on
            tensors).
        stability and speed:
            ``grad_clip_norm``, ``amp``, ``ema_decay``, ``channels_last``,
            ``early_stop_patience``/``early_stop_metric``.
        progressive batches and multi-task:
            ``batch_stages``/``batch_growth``; the regression head's weights.
    """

    model_config = ConfigDict(extra="forbid")

    # run length, batches, reproducibility
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1, description="micro-batch (and first stage) size")
    accum_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    eval_batch_size: int = Field(256, ge=1)
    seed: int = 0

    # optimizer
    optimizer: Optimizer = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0, description="not applied to biases and norm weights")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd and rmsprop")
    nesterov: bool = Field(False, description="sgd only; needs momentum > 0")
    beta1: float = Field(0.9, ge=0, lt=1, description="adam/adamw")
    beta2: float = Field(0.999, ge=0, lt=1, description="adam/adamw")
    rmsprop_alpha: float = Field(0.99, gt=0, lt=1, description="rmsprop smoothing constant")

    # learning-rate schedule, stepped per optimizer step (plateau: per epoch, after warmup);
    # onecycle always rises from lr/25 over the warmup length (linear when warmup is none)
    scheduler: Scheduler = "cosine"
    warmup: Literal["none", "linear", "cosine"] = "none"
    warmup_steps: int = Field(0, ge=0, description="0: take the length from warmup_epochs")
    warmup_epochs: float = Field(0.0, ge=0, description="0: take the length from warmup_ratio")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="share of the run's optimizer steps")
    min_lr: float = Field(0.0, ge=0, description="floor of every schedule")
    restart_epochs: float = Field(1.0, gt=0, description="cosine_restarts: T_0, in epochs")
    restart_mult: int = Field(1, ge=1, description="cosine_restarts: T_mult")
    step_size: float = Field(10, gt=0, description="step: epochs between decays")
    gamma: float = Field(0.1, gt=0, le=1, description="step and exponential: decay per period")
    plateau_factor: float = Field(0.1, gt=0, lt=1, description="plateau: lr *= factor")
    plateau_patience: int = Field(2, ge=0, description="plateau: epochs without val_loss gain")
    cycle_epochs: float = Field(2.0, gt=0, description="cyclic: epochs per min_lr->lr->min_lr")

    # regularisation (head_dropout and drop_path_rate live on the model)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: Literal["none", "balanced"] | dict[str, float] = Field(
        "none", description="'balanced' from train label counts, or {class name: weight}"
    )
    mixup_alpha: float = Field(0.0, ge=0, description="0 disables mixup")
    cutmix_prob: float = Field(0.0, ge=0, le=1, description="share of batches mixed by cutmix")

    # augmentation on tensors, training only
    aug_crop_scale: float = Field(1.0, gt=0, le=1, description="random resized crop: min area")
    aug_hflip: float = Field(0.0, ge=0, le=1, description="probability of a horizontal flip")
    aug_vflip: float = Field(0.0, ge=0, le=1, description="probability of a vertical flip")
    aug_rotation: float = Field(0.0, ge=0, le=180, description="max rotation, degrees")
    aug_color_jitter: float = Field(0.0, ge=0, lt=1, description="brightness/contrast/saturation")
    aug_blur_prob: float = Field(0.0, ge=0, le=1, description="probability of a Gaussian blur")
    aug_blur_sigma: float = Field(1.0, gt=0, description="max sigma of the blur, pixels")

    # stability and speed
    grad_clip_norm: float | None = Field(None, gt=0)
    amp: bool = Field(True, description="fp16 autocast + grad scaler on CUDA; no effect on CPU")
    channels_last: bool | None = Field(None, description="None: on for CUDA, off on CPU")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="evaluated beside raw weights")
    early_stop_patience: int | None = Field(None, ge=1, description="epochs without improvement")
    early_stop_min_delta: float = Field(0.0, ge=0)
    early_stop_metric: MonitoredMetric = "val_loss"

    # progressive batch size: stage k trains with batch_size * batch_growth**k
    batch_stages: int = Field(1, ge=1, description="1 = constant batch size")
    batch_growth: int = Field(2, ge=2)
    stage_lr_scaling: Literal["linear", "sqrt", "none"] = "linear"

    # multi-task (classification + regression head); ignored for classification-only data
    cls_weight: float = Field(1.0, ge=0, description="w_cls in w_cls * CE + w_reg * reg")
    reg_weight: float = Field(1.0, ge=0, description="w_reg")
    reg_loss: Literal["l1", "mse"] = "l1"
    within_k: float = Field(1.0, gt=0, description="'within +-k' rate of the regression")

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.warmup != "none" and not (self.warmup_steps or self.warmup_epochs
                                          or self.warmup_ratio):
            raise ValueError(
                f"warmup={self.warmup!r} needs warmup_steps, warmup_epochs or warmup_ratio > 0"
            )
        if self.min_lr >= self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must be below lr ({self.lr})")
        if self.nesterov and self.optimizer == "sgd" and self.momentum == 0:
            raise ValueError("nesterov=true needs momentum > 0")
        if self.batch_stages > self.epochs:
            raise ValueError(f"batch_stages ({self.batch_stages}) must be <= epochs ({self.epochs})")
        if self.cls_weight == 0 and self.reg_weight == 0:
            raise ValueError("cls_weight and reg_weight cannot both be 0")
        return self

    @property
    def effective_batch_size(self) -> int:
        """Images per optimizer step in the first stage (``batch_size * accum_steps``)."""
        return self.batch_size * self.accum_steps

    def stage_of(self, epoch: int) -> int:
        """The progressive-batch stage (0-based) of a 0-based epoch: stages split epochs evenly."""
        return epoch * self.batch_stages // self.epochs

    def stage_batch_size(self, stage: int) -> int:
        return self.batch_size * self.batch_growth**stage

    def micro_batch_sizes(self, epoch: int, n_train: int) -> list[int]:
        """Sizes of a 0-based epoch's micro-batches over ``n_train`` images: its stage's batch
        size, the last batch short. A last batch of one image joins the one before it: BatchNorm
        cannot train on a single image (timm's loaders drop it; here every image is still seen).

            >>> TrainConfig(batch_size=32).micro_batch_sizes(0, n_train=97)
            [32, 32, 33]
            >>> TrainConfig(batch_size=32).micro_batch_sizes(0, n_train=70)
            [32, 32, 6]
        """
        size = self.stage_batch_size(self.stage_of(epoch))
        sizes = [size] * (n_train // size) + ([n_train % size] if n_train % size else [])
        if len(sizes) > 1 and sizes[-1] == 1:
            sizes[-2:] = [sizes[-2] + 1]
        return sizes

    def optimizer_steps(self, epoch: int, n_train: int) -> int:
        """Optimizer steps of a 0-based epoch over ``n_train`` images: its micro-batches
        (:meth:`micro_batch_sizes`), ``accum_steps`` of them per step (the last group may be short).

            >>> TrainConfig(batch_size=32, accum_steps=2).optimizer_steps(0, n_train=100)
            2
        """
        return math.ceil(len(self.micro_batch_sizes(epoch, n_train)) / self.accum_steps)

    def stage_lr_scale(self, stage: int) -> float:
        """Learning-rate multiplier of a stage: the batch grew by ``batch_growth**stage``."""
        growth = self.batch_growth**stage
        return {"linear": growth, "sqrt": growth**0.5, "none": 1.0}[self.stage_lr_scaling]
