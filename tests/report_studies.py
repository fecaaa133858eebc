"""Small real studies for the report, compare and dashboard tests (helper, not a test module).

Each trial is suggested from a real search space and stores the same user attrs as
``hpo/objective.py`` (curve, epochs, duration_s, prune_reason); the "training" is a cheap
deterministic function of the params, so a study of 12 trials takes well under a second.
"""

from __future__ import annotations

import math

import optuna

from hpo.config import BudgetConfig, PrunerConfig, SamplerConfig, StudyConfig
from hpo.record import CONFIG_ATTR
from hpo.runner import build_pruner
from hpo.space import SearchSpace

CURVE_KEYS = ("train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "epoch_seconds")


SPACE = {"params": {
    "lr": {"type": "float", "low": 1.0e-4, "high": 3.0e-2, "log": True},
    "weight_decay": {"type": "float", "low": 1.0e-6, "high": 1.0e-1, "log": True},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
    "momentum": {"type": "float", "low": 0.8, "high": 0.99, "condition": {"optimizer": "sgd"}},
    "label_smoothing": {"type": "float", "low": 0.0, "high": 0.2},
}}
DEFAULTS = {"lr": 0.001, "weight_decay": 0.0001, "batch_size": 64, "optimizer": "adamw",
            "momentum": 0.9, "label_smoothing": 0.0}
MAX_EPOCHS = 8


def study_config(name: str, seed: int = 0, sampler: str = "tpe") -> StudyConfig:
    """A study config like studies/*.yaml, with the space inline (independent of repo files)."""
    cfg = StudyConfig(name=name, seed=seed, search_space="report-test", train=dict(DEFAULTS),
                      budget=BudgetConfig(n_trials=30, max_epochs=MAX_EPOCHS),
                      pruner=PrunerConfig(type="median", n_startup_trials=3, n_warmup_steps=1),
                      sampler=SamplerConfig(type=sampler, n_startup_trials=4))
    cfg.space = SearchSpace.model_validate(SPACE)
    return cfg


XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


def make_study(storage: str, name: str, n_trials: int = 12, seed: int = 0,
               sampler: str = "tpe",
               analysis_after: int | None = None) -> optuna.Study:
    """A study named ``name`` in ``storage`` with ``n_trials`` finished trials (some pruned).

    With ``analysis_after=N``, after N trials an analysis in the LLM sampler's stored format is
    saved with two proposals, both enqueued as the sampler does, plus three LLM ledger entries
    (two answered, one timeout). Its texts carry a script-injection payload (``XSS``).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = study_config(name, seed, sampler)
    smp = (optuna.samplers.RandomSampler(seed=seed) if sampler == "random"
           else optuna.samplers.TPESampler(seed=seed, n_startup_trials=4))
    # Built in memory, then copied to ``storage`` in one go: per-epoch SQLite writes on a busy
    # machine would cost seconds per study; the stored result is the same.
    study = optuna.create_study(study_name=name, direction="maximize",
                                sampler=smp,
                                pruner=build_pruner(cfg.pruner, cfg.budget.max_epochs))
    study.set_user_attr(CONFIG_ATTR, cfg.model_dump(mode="json"))
    study.set_user_attr("search_space", cfg.space.model_dump(mode="json"))
    max_epochs = cfg.budget.max_epochs

    def objective(trial: optuna.Trial) -> float:
        params = cfg.space.suggest(trial)
        quality = 1.0 - 0.15 * abs(math.log10(params["lr"]) + 2.5)  # best near lr=3e-3
        curve = {k: [] for k in CURVE_KEYS}
        best = 0.0
        for epoch in range(1, max_epochs + 1):
            acc = round(max(0.05, quality) * (1 - math.exp(-epoch / 2)), 6)
            best = max(best, acc)
            curve["val_accuracy"].append(acc)
            curve["val_macro_f1"].append(round(acc * 0.98, 6))
            curve["train_loss"].append(round(2.3 * (1 - acc) + 0.01, 6))
            curve["val_loss"].append(round(2.3 * (1 - acc) + 0.05, 6))
            curve["lr"].append(round(params["lr"] * 0.5 * (1 + math.cos(math.pi * epoch / max_epochs)), 8))
            curve["epoch_seconds"].append(0.01)
            trial.set_user_attr("curve", curve)
            trial.set_user_attr("epochs", epoch)
            trial.set_user_attr("duration_s", round(0.01 * epoch, 3))
            trial.report(acc, epoch)
            if trial.should_prune():
                trial.set_user_attr("prune_reason", f"pruner stopped it at epoch {epoch}")
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")
        return best

    if analysis_after is None:
        study.optimize(objective, n_trials=n_trials)
    else:
        study.optimize(objective, n_trials=analysis_after)
        _add_analysis(study, analysis_after)
        study.optimize(objective, n_trials=n_trials - analysis_after)
    optuna.copy_study(from_study_name=name, from_storage=study._storage, to_storage=storage)
    return optuna.load_study(study_name=name, storage=storage)


def _add_analysis(study: optuna.Study, seen: int) -> None:
    """Store an analysis and ledger entries exactly as hpo/sampler documents them (format v1:
    system attrs ``hpo:analysis:<id>`` and ``hpo:ledger:<key>``; trial user attrs
    ``hpo_source``, ``hpo_analysis``, ``hpo_proposal``)."""
    storage, sid = study._storage, study._study_id
    best = study.best_trial
    aid = f"every_n-{seen:04d}"
    good = {**best.params, "lr": 0.003}
    bad = {**best.params, "lr": 0.03}
    entries = [{"outcome": "ok", "prompt_tokens": 800, "completion_tokens": 200, "cost": 0.0012},
               {"outcome": "timeout", "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0,
                    "error": "read timeout"},
               {"outcome": "ok", "prompt_tokens": 900, "completion_tokens": 300, "cost": 0.0015}]
    calls = []
    for i, e in enumerate(entries):
        key = f"20250101T120000.00000{i}-abc{i}"
        storage.set_study_system_attr(sid, f"hpo:ledger:{key}", {
            "time": "2025-01-01T12:00:00+00:00", "model": "test-model", "latency_s": 1.0,
            "attempt": 1, "prompt_hash": "0" * 16, "analysis": aid, **e})
        calls.append(key)
    proposals = []
    for i, params in enumerate((good, bad)):
        study.enqueue_trial(params, user_attrs={"hpo_source": "llm", "hpo_analysis": aid,
                                                "hpo_proposal": i})
        proposals.append({"params": params, "rationale": f"lr towards 3e-3 {XSS}",
                          "expected_effect": "+1% val_accuracy", "risk": "slower convergence",
                          "confidence": 0.7 - 0.4 * i, "status": "enqueued",
                          "trial_number": seen + i if i == 0 else None})
    storage.set_study_system_attr(sid, f"hpo:analysis:{aid}", {
        "version": 1, "id": aid, "trigger": "every_n", "analyst": "llm", "model": "test-model",
        "created_at": "2025-01-01T12:00:00+00:00", "n_trials_seen": seen,
        "best_trial": best.number, "best_value": best.value, "best_params": best.params,
        "summary": f"learning rate is the lever {XSS}",
        "diagnosis": [{"state": "underfitting", "summary": f"accuracy still rising {XSS}",
                       "evidence": [{"trial": best.number, "metric": "val_accuracy",
                                     "value": best.value, "note": f"best so far {XSS}"}]}],
        "proposals": proposals, "ledger": calls})
