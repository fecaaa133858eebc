"""Learning-rate schedules, stepped once per optimizer step, with warmup and a floor.

Every schedule is a pure function of the step (:func:`lr_factor`), so a curve can be checked
number by number and a resumed run needs only the step count. Epoch-denominated knobs
(``restart_epochs``, ``step_size``, ``gamma``, ``cycle_epochs``) are turned into steps with the
run's mean steps per epoch. ``plateau`` is the exception: torch's ``ReduceLROnPlateau`` owns the
learning rate after warmup and is stepped on the validation loss once per epoch.

Why not chain torch's schedulers: ``SequentialLR`` cannot hold ``ReduceLROnPlateau``, torch has no
cosine warmup and no floor for step/exponential. The curves still equal torch's where torch has the
same curve (``tests/test_training_schedule.py`` compares them).

    >>> from hpo.training.config import TrainConfig
    >>> cfg = TrainConfig(lr=0.1, scheduler="cosine", warmup="linear", warmup_steps=10, min_lr=0.001)
    >>> [round(cfg.lr * lr_factor(cfg, s, total_steps=100, steps_per_epoch=10), 4)
    ...  for s in (0, 9, 10, 99)]
    [0.01, 0.1, 0.1, 0.001]
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from hpo.training.config import TrainConfig

# torch only where a schedule drives an optimizer (LrSchedule): lr_factor, which `hpo report`
# draws planned curves with, must not import it
if TYPE_CHECKING:
    import torch

ONECYCLE_START = 1 / 25  # one-cycle starts at lr / 25, as torch's OneCycleLR (div_factor=25)


def warmup_length(cfg: TrainConfig, total_steps: int) -> int:
    """Warmup steps: ``warmup_steps``, else ``warmup_epochs`` of the run's mean steps per epoch,
    else ``warmup_ratio`` of the run (the first that is not 0). One-cycle always has this rise,
    even with ``warmup: none``."""
    if cfg.warmup == "none" and cfg.scheduler != "onecycle":
        return 0
    if cfg.warmup_steps:
        return cfg.warmup_steps
    if cfg.warmup_epochs:
        return max(1, round(cfg.warmup_epochs * total_steps / cfg.epochs))
    return max(1, round(cfg.warmup_ratio * total_steps))


def lr_factor(cfg: TrainConfig, step: int, total_steps: int, steps_per_epoch: float) -> float:
    """Multiplier of ``cfg.lr`` for the optimizer step ``step`` (0-based)."""
    warm = warmup_length(cfg, total_steps)
    if step < warm:
        p = (step + 1) / warm
        shape = 0.5 * (1 - math.cos(math.pi * p)) if cfg.warmup == "cosine" else p
        start = ONECYCLE_START if cfg.scheduler == "onecycle" else 0.0
        return start + (1 - start) * shape
    floor = cfg.min_lr / cfg.lr
    t, span = step - warm, max(1, total_steps - warm)

    def cosine(t_cur: float, t_len: float) -> float:
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t_cur / t_len)))

    if cfg.scheduler in ("cosine", "onecycle"):
        return cosine(t, max(1, span - 1))
    if cfg.scheduler == "cosine_restarts":
        t0, mult = max(1, round(cfg.restart_epochs * steps_per_epoch)), cfg.restart_mult
        if mult == 1:
            return cosine(t % t0, t0)
        start, length = 0, t0  # integer arithmetic: a float log misses restarts (T_mult=10)
        while t >= start + length:
            start, length = start + length, length * mult
        return cosine(t - start, length)
    if cfg.scheduler == "step":
        return max(floor, cfg.gamma ** (t // max(1, round(cfg.step_size * steps_per_epoch))))
    if cfg.scheduler == "exponential":
        return max(floor, cfg.gamma ** (t / steps_per_epoch))
    if cfg.scheduler == "cyclic":
        half = max(1, round(cfg.cycle_epochs * steps_per_epoch / 2))
        return floor + (1 - floor) * (1 - abs((t % (2 * half)) / half - 1))
    return 1.0  # constant, and plateau before ReduceLROnPlateau takes over


class LrSchedule:
    """Sets the optimizer's learning rate for every step; ``scale`` is the batch stage's factor.

        >>> import torch
        >>> from hpo.training.config import TrainConfig
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
        >>> sched = LrSchedule(TrainConfig(lr=1.0, scheduler="step", step_size=1, gamma=0.5),
        ...                    opt, total_steps=4, steps_per_epoch=2)
        >>> lrs = []
        >>> for _ in range(4):
        ...     lrs.append(opt.param_groups[0]["lr"]); sched.step()
        >>> lrs
        [1.0, 1.0, 0.5, 0.5]
    """

    def __init__(self, cfg: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int,
                 steps_per_epoch: float) -> None:
        self.cfg, self.optimizer = cfg, optimizer
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
        self.warmup = warmup_length(cfg, total_steps)
        self.step_num, self.scale = 0, 1.0
        self.plateau = None
        if cfg.scheduler == "plateau":
            import torch  # only here: see the TYPE_CHECKING import at the top

            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=cfg.plateau_factor, patience=cfg.plateau_patience,
                min_lr=cfg.min_lr)
        self._apply()

    def _apply(self) -> None:
        if self.plateau is not None and self.step_num > self.warmup:
            return  # ReduceLROnPlateau owns the learning rate now
        factor = lr_factor(self.cfg, self.step_num, self.total_steps, self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * self.scale * factor

    def step(self) -> None:
        """Call after every optimizer step."""
        self.step_num += 1
        self._apply()

    def end_epoch(self, val_loss: float) -> None:
        """Call after every evaluation: only the plateau schedule listens (after warmup)."""
        if self.plateau is not None and self.step_num >= self.warmup:
            self.plateau.step(val_loss)

    def set_scale(self, scale: float) -> None:
        """A new batch stage: multiply the learning rate by ``scale`` (relative to ``cfg.lr``)."""
        if self.plateau is not None and self.step_num > self.warmup:
            for group in self.optimizer.param_groups:
                group["lr"] *= scale / self.scale
            self.plateau.min_lrs = [self.cfg.min_lr * scale] * len(self.optimizer.param_groups)
        self.scale = scale
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_num, "scale": self.scale,
                "plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; load the optimizer first (it holds the learning rate plateau set)."""
        self.step_num, self.scale = state["step"], state["scale"]
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])
        self._apply()
