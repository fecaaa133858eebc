"""A study read back from storage once, as the numbers reports need (no plotting here).

    >>> import optuna
    >>> s = optuna.create_study(study_name="doc")
    >>> s.optimize(lambda t: t.suggest_float("x", 0, 1) ** 2, n_trials=3)
    >>> load(s).summary()["trials"]["COMPLETE"]
    3
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.optuna_private import cached_backend, storage_of, study_system_attrs, trial_id_of
from hpo.record import (
    ANALYSIS_ATTR,
    ARTIFACTS_ATTR,
    CHECKPOINT_ATTR,
    CHECKPOINT_REMOVED_PREFIX,
    CONFIG_ATTR,
    CURVE_ATTR,
    DURATION_ATTR,
    EPOCHS_ATTR,
    FAILED_TRIAL_ATTR,
    FINISHED,
    PROPOSAL_ATTR,
    RESUMED_ATTR,
    RETRY_HISTORY_ATTR,
    RUN_BY_ATTR,
    SOURCE_ATTR,
    SPACE_ATTR,
    Analysis,
    link_proposal_trials,
    proposal_trial_numbers,
    read_analyses,
)
from hpo.sampler.ledger import LedgerTotals as Ledger
from hpo.sampler.ledger import read_totals

log = logging.getLogger(__name__)


@dataclass
class StudyData:
    """Everything about one study that a report shows, computed from its stored trials."""

    study: optuna.Study
    storage: str  # redacted URL
    trials: list[FrozenTrial] = field(default_factory=list)
    # a multi-objective study: every value of each complete trial (``trials`` hold the first,
    # the validation metric, so every single-value section reads them as before); else empty
    values_of: dict[int, list[float]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def maximize(self) -> bool:
        return self.study.directions[0] == optuna.study.StudyDirection.MAXIMIZE

    @property
    def is_multi_objective(self) -> bool:
        return len(self.study.directions) > 1

    @property
    def objective_names(self) -> list[str]:
        """The study's metric names, in the values' order (``objective 1``... unnamed)."""
        names = self.study.metric_names
        return list(names) if names else [f"objective {i}" for i in range(
            len(self.study.directions))]

    @cached_property
    def pareto(self) -> list[FrozenTrial]:
        """A multi-objective study's Pareto-optimal complete trials (as stored, every value),
        by number; empty for a single objective."""
        if not self.is_multi_objective:
            return []
        return sorted(self.study.best_trials, key=lambda t: t.number)

    @cached_property
    def single_study(self) -> optuna.Study:
        """The study for Optuna's single-objective plots and importances: the study itself, or
        for several objectives an in-memory one of the complete trials' first values."""
        if not self.is_multi_objective:
            return self.study
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.create_study(direction=self.study.directions[0])
        finally:
            optuna.logging.set_verbosity(verbosity)
        study.add_trials(self.completed)
        return study

    @cached_property
    def config(self) -> dict[str, Any]:
        cfg = self.study.user_attrs.get(CONFIG_ATTR)
        return cfg if isinstance(cfg, dict) else {}

    @property
    def metric(self) -> str:
        return self.config.get("objective", {}).get("metric") or "objective"

    @property
    def description(self) -> str:
        """The study file's ``description`` (stored with the config), "" when it has none."""
        text = self.config.get("description")
        return " ".join(text.split()) if isinstance(text, str) else ""

    @cached_property
    def stored_curves(self) -> set[str]:
        """The per-epoch curves (``curve`` keys) some trial stored."""
        return {k for t in self.trials if isinstance(t.user_attrs.get(CURVE_ATTR), dict)
                for k in t.user_attrs[CURVE_ATTR]}

    @property
    def metric_columns(self) -> list[tuple[str, str]]:
        """``(curve key, label)`` of the per-epoch metrics some trial stored, for tables:
        accuracy and macro-F1, and MAE and within-±k on multi-task studies."""
        return [(k, label) for k, label in METRIC_COLUMNS if k in self.stored_curves]

    @property
    def loss_columns(self) -> list[tuple[str, str]]:
        """``(curve key, label)`` of the train and validation losses some trial stored (not
        the objective's own curve), shown beside the value."""
        return [(k, label) for k, label in LOSS_COLUMNS
                if k in self.stored_curves and k != self.metric]

    @cached_property
    def completed(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE and t.value is not None]

    @cached_property
    def finished(self) -> list[FrozenTrial]:
        """Complete and pruned trials, in the order they finished."""
        done = [t for t in self.trials if t.state in FINISHED]
        return sorted(done, key=lambda t: (t.datetime_complete or datetime.max, t.number))

    @cached_property
    def ranked(self) -> list[FrozenTrial]:
        """Completed trials, best first."""
        return sorted(self.completed, key=lambda t: (-t.value if self.maximize else t.value, t.number))

    @property
    def best(self) -> FrozenTrial | None:
        return self.ranked[0] if self.ranked else None

    @cached_property
    def max_epochs(self) -> int:
        budget = self.config.get("budget", {}).get("max_epochs")
        if isinstance(budget, int):
            return budget
        return max((epochs(t) for t in self.completed), default=0)

    @cached_property
    def analyses(self) -> list[Analysis]:
        try:
            found = read_analyses(self.system_attrs)
            link_proposal_trials(found, self.trials)
            return found
        except Exception as exc:  # a malformed analysis must not break the report  # noqa: BLE001
            log.warning("could not read analyses of %s: %s", self.name, exc)
            return []

    @cached_property
    def ledger(self) -> Ledger:
        try:
            return read_totals(self.study, self.system_attrs)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not read the LLM ledger of %s: %s", self.name, exc)
            return Ledger()

    @cached_property
    def proposal_trials(self) -> set[int]:
        linked = {p.trial_number for a in self.analyses for p in a.proposals
                  if p.trial_number is not None}
        return linked | proposal_trial_numbers(self.trials)

    @cached_property
    def by_number(self) -> dict[int, FrozenTrial]:
        return {t.number: t for t in self.trials}

    @cached_property
    def _ranks(self) -> dict[int, int]:
        return {t.number: i for i, t in enumerate(self.ranked, 1)}

    def rank_of(self, number: int) -> int | None:
        """1-based rank of a completed trial among all completed trials."""
        return self._ranks.get(number)

    @cached_property
    def _proposals(self) -> dict[int, tuple[str, str, int]]:
        """Trial number -> (analyst, analysis id, 0-based proposal index) of proposal trials."""
        out = {p.trial_number: (a.analyst, a.id, i) for a in self.analyses
               for i, p in enumerate(a.proposals) if p.trial_number is not None}
        for t in self.trials:
            index, analysis = t.user_attrs.get(PROPOSAL_ATTR), t.user_attrs.get(ANALYSIS_ATTR)
            if t.number not in out and isinstance(index, int) and analysis:
                out[t.number] = (str(t.user_attrs.get(SOURCE_ATTR) or ""), str(analysis), index)
        return out

    def source_of(self, t: FrozenTrial) -> str:
        """Where a trial's params came from: ``sampler``, or the analyst's proposal it ran
        (``llm proposal 1 of every_n-0050``; numbered from 1, as in the study note)."""
        if t.number not in self.proposal_trials:
            return "sampler"
        who, analysis, index = self._proposals.get(t.number, ("", "", -1))
        who = str(t.user_attrs.get(SOURCE_ATTR) or who or "analyst")
        return f"{who} proposal {index + 1} of {analysis}" if analysis else f"{who} proposal"

    def checkpoint_of(self, t: FrozenTrial) -> str:
        """Where a trial's newest checkpoint file is (the study's artifact location and the
        artifact id), "removed" when retention deleted it, "none" when it stored none."""
        pointer = t.user_attrs.get(CHECKPOINT_ATTR)
        if not isinstance(pointer, dict) or not pointer.get("artifact_id"):
            return "none"
        artifact = str(pointer["artifact_id"])
        epoch = f" (epoch {pointer['epoch']})" if pointer.get("epoch") is not None else ""
        if CHECKPOINT_REMOVED_PREFIX + artifact in self.system_attrs:
            return f"removed by checkpoint retention{epoch}"
        where = self.study.user_attrs.get(ARTIFACTS_ATTR)
        return (f"{str(where).rstrip('/')}/{artifact}" if where else f"artifact {artifact}") + epoch

    @cached_property
    def system_attrs(self) -> dict[str, Any]:
        return study_system_attrs(self.study)

    def setup(self) -> list[tuple[str, str]]:
        """What the study trained on: model, data and image size, from its stored config."""
        model, dataset = self.config.get("model") or {}, self.config.get("dataset") or {}
        if not model and not dataset:
            return []
        name = str(model.get("name", "?")) + (" (pretrained)" if model.get("pretrained") else "")
        where = [f"{k}={dataset[k]}" for k in ("root", "train_dir", "val_dir", "csv")
                 if dataset.get(k)]
        data = " ".join([str(dataset.get("name", "?"))] + where
                        + (["multi-task"] if dataset.get("multitask") else []))
        size = model.get("image_size")
        return [("model", name), ("data", data),
                ("image size", f"{size} x {size}" if size else "?")]

    def defaults(self) -> dict[str, Any]:
        """The value each searched parameter takes with no search (``StudyConfig.defaults()``)."""
        space = self.study.user_attrs.get(SPACE_ATTR)
        if not self.config or not isinstance(space, dict):
            return {}
        try:
            from hpo.config import StudyConfig
            from hpo.space import SearchSpace

            cfg = StudyConfig.model_validate(self.config)
            cfg.space = SearchSpace.model_validate(space)
            return cfg.defaults()
        except Exception as exc:  # a config stored by another version: diff without defaults  # noqa: BLE001
            log.warning("could not rebuild the config of %s: %s", self.name, exc)
            return {}

    def best_so_far(self) -> list[tuple[FrozenTrial, float | None]]:
        """For each finished trial in finishing order, the best completed value up to it."""
        best: float | None = None
        out = []
        for t in self.finished:
            if t.state == TrialState.COMPLETE and t.value is not None and (
                    best is None or (t.value > best if self.maximize else t.value < best)):
                best = t.value
            out.append((t, best))
        return out

    def summary(self) -> dict[str, Any]:
        """The key numbers of the study (what tests compare against the storage)."""
        counts = {s.name: sum(t.state == s for t in self.trials) for s in TrialState}
        starts = [t.datetime_start for t in self.trials if t.datetime_start]
        ends = [t.datetime_complete for t in self.trials if t.datetime_complete]
        wall = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
        trained = sum(epochs(t) for t in self.finished)
        full = self.max_epochs * len(self.finished)
        # epochs a trial did not train: cut by the pruner (PRUNED, incl. diverged) or by the
        # training recipe's early stopping (a COMPLETE trial that ended before max_epochs)
        by_pruning = sum(max(0, self.max_epochs - epochs(t)) for t in self.finished
                         if t.state == TrialState.PRUNED)
        by_early_stop = sum(max(0, self.max_epochs - epochs(t)) for t in self.finished
                            if t.state == TrialState.COMPLETE)
        best = self.best
        return {
            "study": self.name,
            "storage": self.storage,
            "direction": "maximize" if self.maximize else "minimize",
            "metric": self.metric,
            "sampler": _sampler(self.config.get("sampler")) or type(self.study.sampler).__name__,
            "pruner": _pruner(self.config.get("pruner")) or "unknown",
            "budget": _section(self.config.get("budget")) or "unknown",
            "trials": {k: v for k, v in counts.items() if v},
            "n_trials": len(self.trials),
            "wall_time_s": round(wall, 3),
            "trial_time_s": round(sum(float(t.user_attrs.get(DURATION_ATTR) or 0)
                                      for t in self.trials), 3),
            "epochs_trained": trained,
            "epochs_without_pruning": full,
            "epochs_saved_by_pruning": by_pruning,
            "epochs_saved_by_early_stopping": by_early_stop,
            "pruning_saving": by_pruning / full if full else 0.0,
            "early_stopping_saving": by_early_stop / full if full else 0.0,
            "best_trial": best.number if best else None,
            "best_value": best.value if best else None,
        }


def retries(trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    """One row per retried trial: the attempt it retries, who ran each, the epoch it resumed
    from and the finished epochs the failed attempt had that were trained again.

        >>> failed = optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={
        ...     "epochs": 3, "hpo_run_by": {"host": "a", "pid": 7}})
        >>> retry = optuna.trial.create_trial(value=0.9, system_attrs={"failed_trial": 0},
        ...     user_attrs={"epochs": 5, "resumed": {"from_trial": 0, "epoch": 2},
        ...                 "hpo_run_by": {"host": "b", "pid": 9}})
        >>> failed.number, retry.number = 0, 1
        >>> retries([failed, retry])[0]["epochs_lost"], retries([failed, retry])[0]["ran_on"]
        (1, 'b:9')
    """
    by_number = {t.number: t for t in trials}
    rows = []
    for t in trials:
        history = (t.system_attrs.get(RETRY_HISTORY_ATTR)
                   or [t.system_attrs.get(FAILED_TRIAL_ATTR)])
        failed = by_number.get(history[-1])  # the attempt just before this one
        if failed is None:
            continue
        resumed = t.user_attrs.get(RESUMED_ATTR)
        start = resumed.get("epoch", 0) if isinstance(resumed, dict) else 0
        rows.append({"trial": t.number, "state": t.state.name, "retry_of": failed.number,
                     "failed_ran_on": _ran_on(failed), "ran_on": _ran_on(t),
                     "resumed_from_epoch": start,
                     "epochs_lost": max(0, epochs(failed) - start)})
    return rows


def _ran_on(t: FrozenTrial) -> str:
    run_by = t.user_attrs.get(RUN_BY_ATTR)
    if not isinstance(run_by, dict):
        return "?"
    return f"{run_by.get('host', '?')}:{run_by.get('pid', '?')}"


def epochs(t: FrozenTrial) -> int:
    """Epochs a trial trained: its ``epochs`` attr, else the number of reported steps."""
    n = t.user_attrs.get(EPOCHS_ATTR)
    if isinstance(n, int):
        return n
    curve = t.user_attrs.get(CURVE_ATTR)
    if isinstance(curve, dict):
        lengths = [len(v) for v in curve.values() if isinstance(v, list)]
        if lengths:
            return max(lengths)
    return len(t.intermediate_values)


def curve_of(t: FrozenTrial, key: str) -> list[float]:
    """A per-epoch curve of a trial: the stored ``curve[key]``, else its reported values."""
    curve = t.user_attrs.get(CURVE_ATTR)
    if isinstance(curve, dict) and isinstance(curve.get(key), list):
        return [float(v) for v in curve[key]]
    if key == "lr":
        return []
    return [v for _, v in sorted(t.intermediate_values.items())]


# per-epoch metrics that tables show beside a trial's value, where the trials stored them
METRIC_COLUMNS = (("val_accuracy", "accuracy"), ("val_macro_f1", "macro F1"), ("val_mae", "MAE"),
                  ("val_within_k", "within ±k"))
LOSS_COLUMNS = (("train_loss", "train loss"), ("val_loss", "val loss"))
# curves drawn beside the objective's learning curves, where the trials stored them
EXTRA_CURVES = (("val_mae", "validation MAE"), ("val_within_k", "validation within-±k rate"))


def best_epoch(t: FrozenTrial) -> int:
    """The epoch a trial's value comes from: the first whose reported value is the value; a
    trial without a value (pruned, failed, running): its last epoch. 0 when it trained none."""
    n = epochs(t)
    if t.value is not None:
        for step, value in sorted(t.intermediate_values.items()):
            if value == t.value and 1 <= step <= n:
                return step
    return n


def metric_at(t: FrozenTrial, key: str, epoch: int) -> float | None:
    """``curve[key]`` of a trial at a 1-based epoch, None when it was not stored."""
    curve = t.user_attrs.get(CURVE_ATTR)
    values = curve.get(key) if isinstance(curve, dict) else None
    if not isinstance(values, list) or not 1 <= epoch <= len(values):
        return None
    value = values[epoch - 1]
    return float(value) if isinstance(value, (int, float)) else None


def _sampler(value: Any) -> str:
    """The sampler's type and the options that matter for it (not every LLM knob)."""
    if not isinstance(value, dict):
        return ""
    keys = ["n_startup_trials"]
    if str(value.get("type", "")).startswith("llm"):
        keys += ["analyst", "every_n_trials", "max_proposal_share"]
        llm = value.get("llm")
        if isinstance(llm, dict) and llm.get("model"):
            value = {**value, "model": llm["model"]}
            keys.append("model")
    return ", ".join([str(value.get("type", "?"))] +
                     [f"{k}={fmt_short(value[k])}" for k in keys if value.get(k) is not None])


def fmt_short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


# the options each pruner type uses (PrunerConfig holds all of them, with defaults)
PRUNER_KEYS = {"none": (), "median": ("n_startup_trials", "n_warmup_steps"),
               "hyperband": ("min_resource", "reduction_factor"),
               "successive_halving": ("min_resource", "reduction_factor")}


def _pruner(value: Any) -> str:
    """The pruner's type and only the options that type uses.

        >>> _pruner({"type": "median", "n_startup_trials": 5, "n_warmup_steps": 1,
        ...          "min_resource": 1, "reduction_factor": 3})
        'median, n_startup_trials=5, n_warmup_steps=1'
    """
    if not isinstance(value, dict):
        return ""
    kind = str(value.get("type", "?"))
    keys = PRUNER_KEYS.get(kind, tuple(k for k in value if k != "type"))
    return ", ".join([kind] + [f"{k}={value[k]}" for k in keys if value.get(k) is not None])


def _section(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    return ", ".join(f"{k}={v}" for k, v in value.items() if v is not None)


def load(study_or_name: optuna.Study | str, storage_url: str | None = None) -> StudyData:
    """Read one study (by object, or by name from ``storage_url``) with all its trials.

    Trials a worker created but never ran (``hpo:lost_race``, see :mod:`hpo.worker`) are left out.
    """
    from hpo.redaction import redact
    from hpo.storage import is_lost_race

    if isinstance(study_or_name, optuna.Study):
        study = study_or_name
        url = storage_url or storage_label(storage_of(study))
    else:
        from hpo.errors import ConfigError
        from hpo.storage import open_existing_storage

        storage = open_existing_storage(storage_url)  # a mistyped SQLite path creates nothing
        names = optuna.get_all_study_names(storage)  # not the summaries: those read every trial
        if study_or_name not in names:
            raise ConfigError("storage", "study", study_or_name,
                              f"a study in {redact(storage_url)}: {', '.join(sorted(names)) or 'none'}")
        study = optuna.load_study(study_name=study_or_name, storage=storage)
        url = storage_url
    trials = [t for t in study.get_trials(deepcopy=False) if not is_lost_race(t)]
    values_of = {}
    if len(study.directions) > 1:
        values_of = {t.number: list(t.values) for t in trials if t.values}
        cfg = study.user_attrs.get(CONFIG_ATTR)
        metric = ((cfg.get("objective") or {}).get("metric") if isinstance(cfg, dict) else None)
        trials = [first_value_only(t, metric) for t in trials]
    return StudyData(study=study, storage=redact(url) if "://" in url else url, trials=trials,
                     values_of=values_of)


def first_value_only(t: FrozenTrial, metric: str | None) -> FrozenTrial:
    """A multi-objective study's trial as the single-objective sections read it: its first
    value (the validation metric), and the per-epoch ``curve[metric]`` as its intermediate
    values (a multi-objective trial reports none: Optuna does not prune such studies).

        >>> study = optuna.create_study(directions=["maximize", "minimize"])
        >>> trial = study.ask()
        >>> trial.set_user_attr("curve", {"val_accuracy": [0.5, 0.75]})
        >>> _ = study.tell(trial, [0.75, 3.0])
        >>> one = first_value_only(study.trials[0], "val_accuracy")
        >>> one.value, one.intermediate_values
        (0.75, {1: 0.5, 2: 0.75})
    """
    curve = t.user_attrs.get(CURVE_ATTR)
    steps = curve.get(metric) if isinstance(curve, dict) and metric else None
    return FrozenTrial(
        number=t.number, state=t.state, value=None, values=t.values[:1] if t.values else None,
        datetime_start=t.datetime_start, datetime_complete=t.datetime_complete, params=t.params,
        distributions=t.distributions, user_attrs=t.user_attrs, system_attrs=t.system_attrs,
        intermediate_values=({i: float(v) for i, v in enumerate(steps, 1)}
                             if isinstance(steps, list) else dict(t.intermediate_values)),
        trial_id=trial_id_of(t))


def storage_label(storage: Any) -> str:
    """Where a study lives, for the report: the RDB URL (also behind Optuna's cache wrapper,
    which ``optuna.load_study(storage=URL)`` puts around it), "in-memory", or the class name."""
    backend = cached_backend(storage)  # optuna's _CachedStorage wraps an RDB one
    url = getattr(backend, "url", None)
    if isinstance(url, str) and url:
        return url
    if isinstance(backend, optuna.storages.InMemoryStorage):
        return "in-memory"
    return type(backend).__name__
