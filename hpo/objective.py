"""The only place where Optuna meets training.

For each trial: suggest parameters from the search space, build the model, train, report the
objective every epoch, prune when the pruner says so (never after the epoch that ends the
trial: its last, or an early-stopped one), and store the per-epoch curve on the trial (user attr
``curve``, compact JSON-able lists of every metric the trainer computed: :func:`curve_values`)
for reports and analysts.

    >>> import optuna
    >>> from hpo.config import load_study
    >>> study = optuna.create_study(direction="maximize")
    >>> study.optimize(Objective(load_study("smoke")), n_trials=1)   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import optuna
import torch
from pydantic import ValidationError

from hpo.checkpoint import Checkpoints
from hpo.config import StudyConfig
from hpo.data import DataSplits, build_dataset
from hpo.errors import ConfigError
from hpo.models import build_model, check_model_name
from hpo.record import (
    CURVE_ATTR,
    DURATION_ATTR,
    EFFECTIVE_BATCH_SIZE_ATTR,
    EPOCHS_ATTR,
    LATENCY_ATTR,
    N_TRAIN_ATTR,
    OPTIMIZER_STEPS_ATTR,
    PARAMS_M_ATTR,
    PRUNE_REASON_ATTR,
    RESUMED_ATTR,
    SKIPPED_FILES_ATTR,
)
from hpo.signals import critical, raise_if_received
from hpo.training import DivergedError, EpochResult, Trainer, seed_everything
from hpo.training.losses import class_weight_tensor
from hpo.training.trainer import check_against_data

# always in a trial's curve; the metrics some studies add (val_mae, val_within_k, val_total_loss,
# ema_val_*) follow, by the same rule: every numeric EpochResult field that is not None
CURVE_KEYS = ("train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "epoch_seconds")
# EpochResult fields that describe the epoch rather than measure the model: not in the curve
NOT_CURVE = frozenset({"epoch", "batch_size", "effective_batch_size", "images_per_second",
                       "stopped_early"})


def curve_values(result: EpochResult) -> dict[str, float]:
    """The curve entries of one epoch: every metric the trainer computed (``None``: not computed
    for this study, e.g. ``val_mae`` on classification data), rounded to 6 digits.

        >>> r = EpochResult(epoch=1, train_loss=1.0, val_loss=0.9, val_accuracy=0.5,
        ...                 val_macro_f1=0.4, lr=0.01, epoch_seconds=2.0, images_per_second=9.0,
        ...                 val_mae=0.41234567, val_within_k=0.8)
        >>> curve_values(r)
        {'train_loss': 1.0, 'val_loss': 0.9, 'val_accuracy': 0.5, 'val_macro_f1': 0.4, \
'lr': 0.01, 'epoch_seconds': 2.0, 'val_mae': 0.412346, 'val_within_k': 0.8}
    """
    return {k: round(float(v), 6) for k, v in result.as_dict().items()
            if k not in NOT_CURVE and v is not None}


class Objective:
    """Callable objective for ``study.optimize``; the dataset is built once per process."""

    def __init__(self, cfg: StudyConfig, data: DataSplits | None = None,
                 checkpoints: Checkpoints | None = None) -> None:
        self.cfg = cfg
        self.checkpoints = checkpoints
        check_model_name(cfg)  # a mistyped model.name fails before the data set is decoded
        full = data or build_dataset(cfg.dataset, cfg.model.image_size, cfg.model.in_chans)
        self.facts = full.facts(cfg.dataset.name)  # the study's data record (hpo.record)
        # training, pruning, the sampler and the analysts see train and validation only; the
        # held-out test split waits for hpo.export.evaluate
        self.data = full.without_test()
        self.test_data = full if full.has_test else None
        # fail fast on a bad model name/weights, or a recipe the data rules out
        build_model(cfg.model, self.data.num_classes, multitask=self.data.multitask)
        check_recipe_fits_data(cfg, self.data)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        params = self.cfg.space.suggest(trial)
        try:
            train_cfg = self.cfg.train_config(params)
        except ValidationError as exc:  # e.g. a searched min_lr above a searched lr
            reason = f"invalid combination: {exc.errors()[0]['msg']}"
            trial.set_user_attr(PRUNE_REASON_ATTR, reason)
            raise optuna.TrialPruned(reason) from None
        seed_everything(train_cfg.seed)
        model = build_model(self.cfg.model_config_for(params), self.data.num_classes,
                            multitask=self.data.multitask)
        trainer = Trainer(train_cfg, model, self.data)
        started = time.perf_counter()
        curve: dict[str, list[float]] = {k: [] for k in CURVE_KEYS}
        trial.set_user_attr(EFFECTIVE_BATCH_SIZE_ATTR, train_cfg.effective_batch_size)
        # the report draws the planned lr curve from these
        trial.set_user_attr(OPTIMIZER_STEPS_ATTR, trainer.schedule.total_steps)
        trial.set_user_attr(N_TRAIN_ATTR, len(self.data.train_y))
        if self.data.info.get("skipped_files"):  # unreadable images, each said in one line
            trial.set_user_attr(SKIPPED_FILES_ATTR, self.data.info["skipped_files"])
        reported: dict[int, float] = {}  # epoch -> objective value given to trial.report
        unsaved: list[dict[str, Any]] = []  # the last epoch-end state not uploaded yet
        if self.checkpoints is not None:
            started -= self._resume(trial, trainer, curve, reported)

        def store_curve(epoch: int) -> None:
            trial.set_user_attr(CURVE_ATTR, curve)
            trial.set_user_attr(EPOCHS_ATTR, epoch)
            trial.set_user_attr(DURATION_ATTR, round(time.perf_counter() - started, 3))

        def report(result: EpochResult) -> None:
            raise_if_received()  # a signal whose raise was lost stops the trial here
            for key, value in curve_values(result).items():
                curve.setdefault(key, []).append(value)
            value = self.cfg.objective.value(result)
            if not math.isfinite(value):
                store_curve(result.epoch)
                raise DivergedError(f"non-finite {self.cfg.objective.metric} at epoch {result.epoch}")
            reported[result.epoch] = value
            # the epoch that ends the trial completes it: pruning there would drop a real result
            final = result.epoch >= train_cfg.epochs or result.stopped_early
            if self.checkpoints is not None:  # first: an epoch reported is an epoch saved
                with critical():  # a signal waits, so `unsaved` is never between two epochs
                    state = self._state(trainer, trial, curve, reported)
                    unsaved.clear()
                    if final or self.checkpoints.due(result.epoch, train_cfg.epochs):
                        self.checkpoints.save(trial, state)
                    else:
                        unsaved.append(copy.deepcopy(state))
            store_curve(result.epoch)
            if self.cfg.is_multi_objective:  # Optuna: no report/prune with several objectives
                return
            trial.report(value, result.epoch)
            if not final and trial.should_prune():
                trial.set_user_attr(PRUNE_REASON_ATTR, f"pruner stopped it at epoch {result.epoch}")
                raise optuna.TrialPruned(f"pruned at epoch {result.epoch}")

        try:
            history = trainer.fit(report)
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM: keep the last finished epoch for the retry
            if unsaved and self.checkpoints is not None:
                self.checkpoints.save(trial, unsaved[0])
            raise
        except DivergedError as exc:
            trial.set_user_attr(PRUNE_REASON_ATTR, f"diverged: {exc.reason}")
            trial.set_user_attr(DURATION_ATTR, round(time.perf_counter() - started, 3))
            raise optuna.TrialPruned(exc.reason) from None
        values = [self.cfg.objective.value(r) for r in history]
        best = max(values) if self.cfg.objective.direction == "maximize" else min(values)
        if not self.cfg.is_multi_objective:
            return best
        return (best, *self._costs(trial, trainer.model))

    def _costs(self, trial: optuna.Trial, model: torch.nn.Module) -> list[float]:
        """The trained model's cost objectives (:mod:`hpo.latency`), in the config's order,
        also stored on the trial as user attrs."""
        from hpo.latency import latency_ms, params_m

        values = []
        for cost in self.cfg.objective.costs:
            if cost.metric == "latency_ms":
                key = LATENCY_ATTR
                value = round(latency_ms(model, self.facts.channels, self.facts.image_size), 4)
            else:
                key, value = PARAMS_M_ATTR, round(params_m(model), 6)
            trial.set_user_attr(key, value)
            values.append(value)
        return values

    def _state(self, trainer: Trainer, trial: optuna.Trial, curve: dict[str, list[float]],
               reported: dict[int, float]) -> dict[str, Any]:
        """The checkpoint: the Trainer's state, the trial's params and values, and what an
        image needs to be classified by it (class names, preprocessing)."""
        state = trainer.state_dict()
        facts = self.facts
        state.update(params=dict(trial.params), trial=trial.number,
                     curve={k: list(v) for k, v in curve.items()},
                     intermediate_values=dict(reported), classes=list(facts.classes),
                     preprocessing={"image_size": facts.image_size, "channels": facts.channels,
                                    "mean": facts.mean, "std": facts.std,
                                    "value_mean": facts.value_mean,
                                    "value_std": facts.value_std})
        return state

    def _resume(self, trial: optuna.Trial, trainer: Trainer, curve: dict[str, list[float]],
                reported: dict[int, float]) -> float:
        """Continue a retried trial from the newest checkpoint of the trial it retries.

        Loads the state, re-reports the earlier intermediate values (pruning and curves stay
        continuous) and returns the seconds those earlier epochs took; ``fit`` then trains only
        the remaining epochs. Nothing found: the trial starts from scratch.
        """
        assert self.checkpoints is not None
        resumed = self.checkpoints.load(trial)
        if resumed is None:
            return 0.0
        state = resumed.state
        trainer.load_state_dict(state)
        for key, values in state["curve"].items():  # every stored key, not only CURVE_KEYS
            curve[key] = list(values)[: resumed.epoch]
        for step, value in sorted((int(k), v) for k, v in state["intermediate_values"].items()):
            if step <= resumed.epoch:
                if not self.cfg.is_multi_objective:
                    trial.report(value, step)
                reported[step] = value
        trial.set_user_attr(CURVE_ATTR, curve)
        trial.set_user_attr(EPOCHS_ATTR, resumed.epoch)
        trial.set_user_attr(RESUMED_ATTR, {"from_trial": resumed.from_trial, "epoch": resumed.epoch,
                                           "at": time.time()})
        return float(sum(curve.get("epoch_seconds", [])))


def check_recipe_fits_data(cfg: StudyConfig, data: DataSplits) -> None:
    """Raise a ConfigError (exit 2) when the fixed recipe, or any value the space may pick, is
    one the data rules out (mixup on multi-task data, an unknown class in ``class_weights``...),
    so it is reported before the study starts instead of failing every trial.

        >>> from hpo.config import load_study
        >>> from hpo.data import build_dataset
        >>> cfg = load_study("smoke")
        >>> check_recipe_fits_data(cfg, build_dataset(cfg.dataset, 16, 3))   # no error
    """

    def check(params: dict[str, Any], file: str, key: str | None) -> None:
        try:
            train = cfg.train_config(params)
        except ValidationError:
            return  # a combination of searched values: such a trial is pruned, not fatal
        try:
            check_against_data(train, data)
            class_weight_tensor(train, data.train_y, data.class_names)
        except ConfigError as exc:
            value = params[key.removeprefix("params.")] if key else exc.value
            raise ConfigError(file, key or f"train.{exc.key}", value, exc.allowed) from None

    check({}, cfg.source, None)
    for name, param in (cfg.space.params.items() if cfg.space else ()):
        values = getattr(param, "choices", None) or [param.low, param.high]
        for value in values:
            check({name: value}, cfg.space_file or cfg.search_space, f"params.{name}")
