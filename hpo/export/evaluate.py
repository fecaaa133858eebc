"""The held-out test: a study's best trials evaluated once, on images no trial, pruner, sampler or
analyst ever saw (``dataset.test_fraction`` or ``dataset.test_dir``).

Each trial is evaluated from its final checkpoint, with the weights its validation preferred:
the EMA weights when the objective reads them (``ema_*``), or when the trial kept EMA weights
that scored at least as well on the objective at its last epoch; the raw weights otherwise.
Scores: accuracy and macro-F1 with 95 % percentile bootstrap intervals (:data:`RESAMPLES`
resamples of the test images, seed :data:`SEED`), precision/recall/F1 per class, the confusion
matrix with class names; MAE (with its interval) and the within-±k rate on multi-task data.
Results are stored in the study (:class:`hpo.record.TestResult` under ``hpo:test:<trial>``),
where ``hpo report``, ``hpo compare`` and the dashboard note read them.

    $ hpo evaluate mobilenet --top 3

    >>> import numpy as np
    >>> s = scores(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), ["a", "b", "c"], resamples=200)
    >>> s["accuracy"], [c.name for c in s["per_class"]], s["confusion"][2]
    (0.75, ['a', 'b', 'c'], [0, 1, 1])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from hpo.checkpoint import Checkpoints
from hpo.config import METRICS, StudyConfig
from hpo.data.splits import DataSplits
from hpo.errors import ConfigError, DataError, HpoError
from hpo.models import build_model
from hpo.optuna_private import study_system_attrs
from hpo.record import (
    CHECKPOINT_ATTR,
    ClassScore,
    DataFacts,
    TestResult,
    main_value,
    read_data_facts,
    read_test_results,
    write_test_result,
)
from hpo.training.trainer import default_device

RESAMPLES = 1000  # bootstrap resamples of the test images
SEED = 0  # the bootstrap's seed: the same test predictions give the same intervals
BATCH = 256


class NoTestSplit(HpoError):
    """The study holds out no test split (bad input: exit 2)."""

    exit_code = 2


# -- scores (numpy only) ---------------------------------------------------------------------

def _confusion(pred: np.ndarray, target: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(target * n + pred, minlength=n * n).reshape(n, n)


def _macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes present in the targets or the predictions (as in training)."""
    tp, predicted, actual = np.diag(cm), cm.sum(0), cm.sum(1)
    present = (predicted + actual) > 0
    f1 = 2 * tp / np.maximum(predicted + actual, 1e-12)
    return float(f1[present].mean()) if present.any() else 0.0


def _interval(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def scores(pred: np.ndarray, target: np.ndarray, classes: list[str], resamples: int = RESAMPLES,
           seed: int = SEED, value_pred: np.ndarray | None = None,
           value_true: np.ndarray | None = None, k: float | None = None) -> dict[str, Any]:
    """Accuracy and macro-F1 with bootstrap 95 % intervals, per-class scores and the confusion
    matrix of predicted class indices ``pred`` against ``target``; with ``value_pred`` and
    ``value_true`` also the MAE (and interval) and the share within ``±k``."""
    pred, target = pred.astype(np.int64), target.astype(np.int64)
    n, c = len(target), len(classes)
    cm = _confusion(pred, target, c)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    correct = (pred == target).astype(np.float64)
    f1s = np.array([_macro_f1(_confusion(pred[d], target[d], c)) for d in draws])
    tp, predicted, actual = np.diag(cm), cm.sum(0), cm.sum(1)
    per_class = []
    for i, name in enumerate(classes):
        precision = tp[i] / predicted[i] if predicted[i] else 0.0
        recall = tp[i] / actual[i] if actual[i] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append(ClassScore(name=name, precision=float(precision), recall=float(recall),
                                    f1=float(f1), support=int(actual[i])))
    out: dict[str, Any] = {
        "accuracy": float(correct.mean()), "accuracy_ci": _interval(correct[draws].mean(1)),
        "macro_f1": _macro_f1(cm), "macro_f1_ci": _interval(f1s),
        "per_class": per_class, "confusion": cm.tolist(),
    }
    if value_pred is not None and value_true is not None:
        error = np.abs(value_pred.astype(np.float64) - value_true.astype(np.float64))
        out.update(mae=float(error.mean()), mae_ci=_interval(error[draws].mean(1)))
        if k is not None:
            out.update(within_k=float((error <= k + 1e-9).mean()), k=float(k))
    return out


# -- one trial -------------------------------------------------------------------------------

def use_ema(state: dict[str, Any], metric: str) -> bool:
    """Whether to evaluate the checkpoint's EMA weights: the objective reads them, or they
    scored at least as well on the objective's metric at the last epoch.

        >>> use_ema({"ema": {}, "history": [{"val_accuracy": 0.8, "ema_val_accuracy": 0.9}]},
        ...         "val_accuracy")
        True
        >>> use_ema({"ema": None, "history": []}, "ema_val_accuracy")
        False
    """
    if state.get("ema") is None:
        return False
    if metric.startswith("ema_"):
        return True
    last = (state.get("history") or [{}])[-1]
    raw, ema = last.get(metric), last.get(f"ema_{metric}")
    if raw is None or ema is None or not (math.isfinite(raw) and math.isfinite(ema)):
        return False
    return ema >= raw if METRICS.get(metric) == "maximize" else ema <= raw


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, mean: list[float], std: list[float],
            multitask: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Predicted class indices (and standardised regression values) of images ``x`` in
    ``[0, 1]``, normalised as in training."""
    device = default_device()
    model = model.to(device).eval()
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    classes, values = [], []
    for batch in x.split(BATCH):
        out = model((batch.to(device) - m) / s)
        logits, value = out if multitask else (out, None)
        classes.append(logits.argmax(1).cpu())
        if value is not None:
            values.append(value.float().view(-1).cpu())
    return (torch.cat(classes).numpy(),
            torch.cat(values).numpy() if values else None)


def evaluate_trial(trial: FrozenTrial, state: dict[str, Any], cfg: StudyConfig,
                   data: DataSplits, facts: DataFacts) -> TestResult:
    """Score one trial's checkpoint ``state`` on ``data``'s test split."""
    ema = use_ema(state, cfg.objective.metric)
    model_cfg = cfg.model_config_for(trial.params).model_copy(update={"pretrained": False})
    model = build_model(model_cfg, data.num_classes, multitask=data.multitask)
    model.load_state_dict(state["ema"] if ema else state["model"])
    prep = state.get("preprocessing") or {}
    mean, std = prep.get("mean", facts.mean), prep.get("std", facts.std)
    pred, value = predict(model, data.test_x, mean, std, data.multitask)
    regression: dict[str, Any] = {}
    if data.multitask and value is not None:
        v_mean = prep.get("value_mean", facts.value_mean)
        v_std = prep.get("value_std", facts.value_std)
        regression = {"value_pred": value * v_std + v_mean, "value_true": data.test_v.numpy(),
                      "k": cfg.train_config(trial.params).within_k}
    found = scores(pred, data.test_y.numpy(), list(data.class_names), **regression)
    pointer = trial.user_attrs.get(CHECKPOINT_ATTR) or {}
    return TestResult(
        trial=trial.number, classes=list(data.class_names),
        sizes={"train": len(data.train_y), "val": len(data.val_y), "test": len(data.test_y)},
        checkpoint=str(pointer.get("artifact_id", "")), checkpoint_epoch=int(state["epoch"]),
        ema_used=ema, val_value=main_value(trial), bootstrap=RESAMPLES, seed=SEED,
        evaluated_at=datetime.now(UTC).isoformat(timespec="seconds"), **found)


# -- a study's best trials -------------------------------------------------------------------

def best_trials(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The ``top`` completed trials, best first (a multi-objective study: by its validation
    metric, the first objective)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values]
    sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
    return sorted(done, key=lambda t: (sign * t.values[0], t.number))[:top]


def evaluate_best(study: optuna.Study, cfg: StudyConfig, data: DataSplits,
                  checkpoints: Checkpoints, top: int = 1, echo: Callable[[str], None] = print,
                  again: bool = True) -> list[TestResult]:
    """Evaluate the ``top`` best trials on the test split of ``data`` and store each result;
    ``again=False`` keeps a result already stored for the same checkpoint (another worker's).
    A trial whose checkpoint is gone is said in one line and left out."""
    if not data.has_test:
        raise NoTestSplit(f"study {study.study_name!r} has no held-out test split; give "
                          "dataset.test_fraction or dataset.test_dir in a new study")
    facts = read_data_facts(study) or data.facts(cfg.dataset.name)
    stored = read_test_results(study_system_attrs(study))
    results = []
    best = best_trials(study, top)
    if not best:
        echo(f"study {study.study_name!r}: no completed trial to evaluate on the test split")
    for rank, trial in enumerate(best, 1):
        pointer = trial.user_attrs.get(CHECKPOINT_ATTR) or {}
        old = stored.get(trial.number)
        if not again and old is not None and old.checkpoint == pointer.get("artifact_id"):
            echo(f"trial {trial.number} (rank {rank}): {old.line()} (stored)")
            results.append(old)
            continue
        state = checkpoints.final_state(trial)
        if state is None:
            echo(f"trial {trial.number} (rank {rank}): no final checkpoint in "
                 f"{checkpoints.location} (checkpoint.keep_best_k={checkpoints.cfg.keep_best_k} "
                 "keeps the best trials'); not evaluated")
            continue
        result = evaluate_trial(trial, state, cfg, data, facts)
        write_test_result(study, result)
        echo(f"trial {trial.number} (rank {rank}, validation {main_value(trial):.4f}): "
             f"{result.line()}")
        results.append(result)
    return results


def evaluate_study(name: str, storage_url: str, top: int = 1, artifacts: str | None = None,
                   echo: Callable[[str], None] = print) -> list[TestResult]:
    """``hpo evaluate NAME``: rebuild the study's data from its stored config, check it is the
    data the study started with, and evaluate its ``top`` best trials."""
    from hpo.redaction import redact
    from hpo.storage import open_existing_storage
    from hpo.worker import stored_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_existing_storage(storage_url)
    if name not in optuna.get_all_study_names(storage):
        raise ConfigError("storage", "study", name, f"a study in {redact(storage_url)}")
    study = optuna.load_study(study_name=name, storage=storage)
    cfg = stored_config(study)
    if not cfg.dataset.has_test:
        raise NoTestSplit(f"study {name!r} has no held-out test split (dataset.test_fraction "
                          "or dataset.test_dir); nothing to evaluate")
    from hpo.data import build_dataset

    data = build_dataset(cfg.dataset, cfg.model.image_size, cfg.model.in_chans)
    facts = read_data_facts(study)
    if facts is not None and facts.fingerprint and facts.fingerprint != data.info.get(
            "fingerprint", facts.fingerprint):
        raise DataError(f"the data of study {name!r} changed since it started (fingerprint "
                          f"{data.info.get('fingerprint')} != {facts.fingerprint}): its test "
                          "split may hold images its trials trained on")
    checkpoints = Checkpoints.for_study(storage_url, cfg.artifacts, cfg.checkpoint, artifacts,
                                        study=study)
    return evaluate_best(study, cfg, data, checkpoints, top=top, echo=echo)
