"""The Trainer: one training run of a model on in-memory tensors. It knows nothing of Optuna.

Read top to bottom: ``fit`` runs epochs; each epoch trains (``_train_epoch``: batches of a stage's
size, accumulated into optimizer steps), evaluates the raw weights and, with ``ema_decay``, the EMA
weights beside them (``evaluate``), steps the plateau schedule and the early stopping, and hands an
:class:`EpochResult` to the reporter callback. A reporter may raise to stop the run (the objective
raises ``optuna.TrialPruned`` there). Data with regression values trains both heads of a
multi-task model (``hpo.models.MultiTaskModel``).

``val_loss`` is the plain validation cross-entropy for every study (no label smoothing, no class
weights, no regression term), so it compares across trials whatever recipe they searched;
multi-task data adds ``val_total_loss``, the ``cls_weight * CE + reg_weight * reg`` it trains on
(the plateau schedule steps on it).

    >>> import torch
    >>> from hpo.data import build_dataset
    >>> from hpo.config import DatasetConfig
    >>> data = build_dataset(DatasetConfig(), image_size=8)
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    >>> history = Trainer(TrainConfig(epochs=2, lr=0.01), model, data).fit()
    >>> history[-1].val_accuracy > 0.5
    True
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from timm.utils import ModelEmaV3

from hpo.data.splits import DataSplits
from hpo.errors import ConfigError
from hpo.training.augment import BatchAugment, build_mixing
from hpo.training.config import TrainConfig
from hpo.training.early_stop import EarlyStopping
from hpo.training.losses import (
    class_weight_tensor,
    classification_loss,
    multitask_loss,
    regression_loss,
)
from hpo.training.metrics import accuracy, macro_f1, mae, within_k
from hpo.training.optim import build_optimizer
from hpo.training.schedule import LrSchedule


@dataclass
class EpochResult:
    """What the reporter receives after each epoch (1-based ``epoch``). ``val_loss`` is plain
    cross-entropy; the regression metrics and ``val_total_loss`` (the weighted multi-task loss)
    are ``None`` for classification-only data; ``ema_*`` are ``None`` without ``ema_decay``."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    val_macro_f1: float
    lr: float
    epoch_seconds: float
    images_per_second: float
    batch_size: int = 0
    effective_batch_size: int = 0
    val_mae: float | None = None
    val_within_k: float | None = None
    val_total_loss: float | None = None
    ema_val_loss: float | None = None
    ema_val_accuracy: float | None = None
    ema_val_macro_f1: float | None = None
    ema_val_mae: float | None = None
    ema_val_within_k: float | None = None
    stopped_early: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class DivergedError(RuntimeError):
    """The loss became NaN or infinite; ``reason`` says where."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


Reporter = Callable[[EpochResult], None]
MONITOR_MODE = {"val_loss": "min", "val_mae": "min", "val_accuracy": "max", "val_macro_f1": "max"}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Trainer:
    """Trains ``model`` on ``data`` with the recipe in ``cfg``.

    :meth:`fit` runs the epochs and returns one :class:`EpochResult` per epoch; a ``reporter``
    sees each as it ends and may raise to stop the run. :meth:`state_dict` /
    :meth:`load_state_dict` checkpoint and resume it (model, optimizer, schedule, EMA, RNG).

    Example:

        >>> import torch
        >>> from hpo.config import DatasetConfig
        >>> from hpo.data import build_dataset
        >>> data = build_dataset(DatasetConfig(name="digits"), image_size=8)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
        >>> seen = []
        >>> trainer = Trainer(TrainConfig(epochs=1, lr=0.03, ema_decay=0.9), model, data)
        >>> history = trainer.fit(reporter=lambda r: seen.append(r.epoch))
        >>> seen, history[-1].val_accuracy > 0.3, history[-1].ema_val_accuracy is not None
        ([1], True, True)

    Args:
        cfg:
            The training recipe (:class:`~hpo.training.config.TrainConfig`).
        model:
            Any ``torch.nn.Module`` mapping a batch of images to class logits (a
            ``hpo.models.MultiTaskModel`` for data with regression values).
        data:
            Train and validation tensors in ``[0, 1]`` with labels and class names
            (:func:`hpo.data.build_dataset`); normalised with ``data.mean``/``data.std``.
        device:
            Where to train (default: CUDA when available, else the CPU).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: torch.nn.Module,
        data: DataSplits,
        device: torch.device | None = None,
    ) -> None:
        self.cfg, self.data = cfg, data
        self.device = device or default_device()
        self.multitask = data.multitask
        check_against_data(cfg, data)
        use_cl = cfg.channels_last if cfg.channels_last is not None else self.device.type == "cuda"
        self.memory_format = torch.channels_last if use_cl else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)

        # data lives on the device once; values are standardised for the regression head
        self.train_x, self.train_y = data.train_x.to(self.device), data.train_y.to(self.device)
        self.mean = data.mean.view(1, -1, 1, 1).to(self.device)
        self.std = data.std.view(1, -1, 1, 1).to(self.device)
        if self.multitask:
            self.value_mean, self.value_std = float(data.train_v.mean()), float(
                data.train_v.std().clamp_min(1e-6))
            self.train_v = ((data.train_v - self.value_mean) / self.value_std).to(self.device)
        weight = class_weight_tensor(cfg, data.train_y, data.class_names)
        self.class_weight = weight.to(self.device) if weight is not None else None
        self.augment = BatchAugment(cfg)
        self.mixing = build_mixing(cfg, data.num_classes)

        self.optimizer = build_optimizer(cfg, self.model)
        total_steps = sum(cfg.optimizer_steps(e, len(data.train_y)) for e in range(cfg.epochs))
        self.schedule = LrSchedule(cfg, self.optimizer, total_steps, total_steps / cfg.epochs)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay) if cfg.ema_decay else None
        self.early_stopping = EarlyStopping(cfg.early_stop_patience, cfg.early_stop_min_delta,
                                            MONITOR_MODE[cfg.early_stop_metric])
        self.stage, self.epoch, self.stopped = 0, 0, False
        self.history: list[EpochResult] = []

    def fit(self, reporter: Reporter | None = None) -> list[EpochResult]:
        """Train the remaining epochs (all of them, unless resumed or stopped early)."""
        while self.epoch < self.cfg.epochs and not self.stopped:
            start = time.perf_counter()
            train_loss, seen = self._train_epoch(self.epoch)
            train_seconds = time.perf_counter() - start
            val = self.evaluate(self.model)
            ema = self.evaluate(self.ema.module) if self.ema is not None else {}
            # plateau follows the loss being trained: CE, or the weighted multi-task loss
            self.schedule.end_epoch(val.get("total_loss", val["loss"]))
            self.epoch += 1
            self.stopped = self.early_stopping.update(val[self.cfg.early_stop_metric[4:]])
            batch_size = self.cfg.stage_batch_size(self.stage)
            result = EpochResult(
                epoch=self.epoch,
                train_loss=train_loss,
                val_loss=val["loss"],
                val_accuracy=val["accuracy"],
                val_macro_f1=val["macro_f1"],
                lr=self.optimizer.param_groups[0]["lr"],
                epoch_seconds=time.perf_counter() - start,
                images_per_second=seen / max(train_seconds, 1e-9),
                batch_size=batch_size,
                effective_batch_size=batch_size * self.cfg.accum_steps,
                val_mae=val.get("mae"),
                val_within_k=val.get("within_k"),
                val_total_loss=val.get("total_loss"),
                ema_val_loss=ema.get("loss"),
                ema_val_accuracy=ema.get("accuracy"),
                ema_val_macro_f1=ema.get("macro_f1"),
                ema_val_mae=ema.get("mae"),
                ema_val_within_k=ema.get("within_k"),
                stopped_early=self.stopped,
            )
            self.history.append(result)
            if reporter is not None:
                reporter(result)
        return self.history

    def _train_epoch(self, epoch: int) -> tuple[float, int]:
        """One pass over the train split in shuffled micro-batches; returns (mean loss, images)."""
        cfg = self.cfg
        if cfg.stage_of(epoch) != self.stage:
            self.stage = cfg.stage_of(epoch)
            self.schedule.set_scale(cfg.stage_lr_scale(self.stage))
        generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + 1)
        order = torch.randperm(len(self.train_y), generator=generator).to(self.device)
        micro = order.split(cfg.micro_batch_sizes(epoch, len(order)))
        self.model.train()
        total_loss, seen = torch.zeros((), device=self.device), 0
        for first in range(0, len(micro), cfg.accum_steps):
            group = micro[first:first + cfg.accum_steps]
            group_size = sum(len(idx) for idx in group)
            for idx in group:  # gradients of the group's mean loss: the large batch's update
                loss = self._loss(idx)
                if not torch.isfinite(loss):
                    raise DivergedError(
                        f"non-finite train loss ({loss.item()}) at epoch {epoch + 1}, step "
                        f"{self.schedule.step_num + 1}, lr {self.optimizer.param_groups[0]['lr']:.3g}")
                self.scaler.scale(loss * (len(idx) / group_size)).backward()
                total_loss += loss.detach() * len(idx)
            seen += group_size
            if cfg.grad_clip_norm is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.schedule.step()
            if self.ema is not None:
                self.ema.update(self.model)
        return float(total_loss) / max(seen, 1), seen

    def _loss(self, idx: torch.Tensor) -> torch.Tensor:
        """Augment, standardise, mix and forward one micro-batch; the training loss."""
        x, target = self.train_x[idx], self.train_y[idx]
        if self.augment.enabled:
            x = self.augment(x)
        x = self._standardise(x)
        if self.mixing is not None:
            x, target = self.mixing(x, target)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            out = self.model(x)
        if not self.multitask:
            return classification_loss(out, target, self.cfg, self.class_weight)
        logits, value = out
        return multitask_loss(classification_loss(logits, target, self.cfg, self.class_weight),
                              regression_loss(value, self.train_v[idx], self.cfg), self.cfg)

    def _standardise(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Validation loss and metrics of ``model``: no augmentation, no label smoothing and no
        class weights, so ``loss`` (``val_loss``: plain cross-entropy, also on multi-task data)
        compares across trials whatever recipe they searched. Multi-task data adds ``mae``,
        ``within_k`` and ``total_loss`` (``cls_weight * CE + reg_weight * reg``, as trained)."""
        model.eval()
        logits_all, values_all = [], []
        for x in self.data.val_x.split(self.cfg.eval_batch_size):
            x = self._standardise(x.to(self.device))
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
                out = model(x)
            logits, value = out if self.multitask else (out, None)
            logits_all.append(logits.float().cpu())
            if value is not None:
                values_all.append(value.float().view(-1).cpu())
        logits, target = torch.cat(logits_all), self.data.val_y
        ce = float(torch.nn.functional.cross_entropy(logits, target))  # unweighted: comparable
        pred = logits.argmax(1)
        metrics = {"accuracy": accuracy(pred, target),
                   "macro_f1": macro_f1(pred, target, self.data.num_classes)}
        metrics["loss"] = ce if math.isfinite(ce) else float("nan")
        if self.multitask:
            value = torch.cat(values_all) * self.value_std + self.value_mean
            standardised = (self.data.val_v - self.value_mean) / self.value_std
            reg = float(regression_loss(torch.cat(values_all), standardised, self.cfg))
            total = multitask_loss(ce, reg, self.cfg)
            metrics["total_loss"] = total if math.isfinite(total) else float("nan")
            metrics["mae"] = mae(value, self.data.val_v)
            metrics["within_k"] = within_k(value, self.data.val_v, self.cfg.within_k)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly where it stands (for checkpoints)."""
        return {
            "epoch": self.epoch,
            "stage": self.stage,
            "stopped": self.stopped,
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "early_stopping": self.early_stopping.state_dict(),
            "history": [r.as_dict() for r in self.history],
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the next ``fit`` trains only the remaining epochs."""
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.epoch, self.stage, self.stopped = state["epoch"], state["stage"], state["stopped"]
        self.history = [EpochResult(**r) for r in state["history"]]
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])


def check_against_data(cfg: TrainConfig, data: DataSplits) -> None:
    """Recipe choices that the data rules out are config errors, not surprises mid-run."""
    if data.multitask and (cfg.mixup_alpha > 0 or cfg.cutmix_prob > 0):
        raise ConfigError("train", "mixup_alpha/cutmix_prob", [cfg.mixup_alpha, cfg.cutmix_prob],
                          "0 for multi-task data (the regression target cannot be mixed)")
    if not data.multitask and cfg.early_stop_metric == "val_mae":
        raise ConfigError("train", "early_stop_metric", cfg.early_stop_metric,
                          "val_loss, val_accuracy or val_macro_f1 for classification data")
