"""The study loop: create or load the study, pick sampler and pruner, run trials, summarise.

Re-running continues the same study up to ``budget.n_trials`` finished (complete + pruned)
trials; it never starts over and never runs ``n_trials`` more. :func:`join_study` is
``hpo worker``: the same loop on a study that exists, with the config stored in it.

    >>> from hpo.config import load_study
    >>> study = run_study(load_study("smoke"), "sqlite:///runs/doc.db")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, Self

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.checkpoint import Checkpoints
from hpo.config import PrunerConfig, StudyConfig, load_study, study_path
from hpo.errors import ConfigError, HpoError
from hpo.migrate import refuse_if_moved
from hpo.objective import Objective
from hpo.record import (
    CONFIG_ATTR,
    CURVE_ATTR,
    DURATION_ATTR,
    EPOCHS_ATTR,
    FAIL_REASON_ATTR,
    FINISHED,
    PRUNE_REASON_ATTR,
    SPACE_ATTR,
    DataFacts,
    main_value,
    name_objective,
    name_objectives,
    read_data_facts,
    write_data_facts,
)
from hpo.redaction import redact, redact_secrets, restore_password
from hpo.sampler.seeding import PerTrialSeed
from hpo.storage import is_lost_race, open_storage, resolve_storage_url
from hpo.threads import ThreadBudget
from hpo.threads import setting as threads_setting
from hpo.worker import check_same_config, run_trials, stored_config

MULTI_OBJECTIVE_PRUNING = "pruning is off: Optuna does not prune multi-objective studies"
MULTI_OBJECTIVE_ANALYSTS = ("sampler llm-tpe: the analysts step aside (they judge one objective); "
                            "plain TPE samples this multi-objective study")


def multi_objective_notes(cfg: StudyConfig) -> list[str]:
    """The lines a multi-objective study prints at start: what Optuna or the analysts do not do
    with several objectives (never dropped silently).

        >>> from hpo.config import load_study
        >>> multi_objective_notes(load_study("smoke"))
        []
        >>> multi_objective_notes(load_study("defects-pareto"))
        ['pruning is off: Optuna does not prune multi-objective studies']
    """
    if not cfg.is_multi_objective:
        return []
    notes = [] if cfg.pruner.type == "none" else [MULTI_OBJECTIVE_PRUNING]
    return notes + ([MULTI_OBJECTIVE_ANALYSTS] if cfg.sampler.type == "llm-tpe" else [])


def build_sampler(cfg: StudyConfig) -> optuna.samplers.BaseSampler:
    """TPE, random, NSGA-II or llm-tpe; each trial is seeded from ``(seed, trial number)``, so a
    resumed run does not repeat itself and workers on one study draw different points. TPE and
    NSGA-II take several objectives; llm-tpe's analysts do not (plain TPE then)."""
    if cfg.sampler.type == "random":
        return PerTrialSeed(lambda s: optuna.samplers.RandomSampler(seed=s), cfg.seed)
    if cfg.sampler.type == "nsga2":  # the first generation (n_startup_trials) is random
        return PerTrialSeed(lambda s: optuna.samplers.NSGAIISampler(
            seed=s, population_size=max(2, cfg.sampler.n_startup_trials)), cfg.seed)
    if cfg.sampler.type == "llm-tpe" and not cfg.is_multi_objective:
        # TPE + analysts whose proposals are enqueued trials
        from hpo.sampler import LLMTPESampler

        return LLMTPESampler(cfg.space, cfg.sampler, seed=cfg.seed, description=cfg.description,
                             n_startup_trials=cfg.sampler.n_startup_trials)
    return PerTrialSeed(lambda s: optuna.samplers.TPESampler(
        seed=s, n_startup_trials=cfg.sampler.n_startup_trials), cfg.seed)


def build_pruner(cfg: PrunerConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    """The Optuna pruner the study names (epochs are the pruning steps)."""
    if cfg.type == "none":
        return optuna.pruners.NopPruner()
    if cfg.type == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps
        )
    if cfg.type == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=cfg.min_resource, max_resource=max_epochs,
            reduction_factor=cfg.reduction_factor,
        )
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=cfg.min_resource, reduction_factor=cfg.reduction_factor
    )


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def open_study(cfg: StudyConfig, storage_url: str, force: bool = False) -> optuna.Study:
    """Create the study, or load it when it exists (checking its direction is the same).

    A study that ``hpo migrate`` moved elsewhere is refused (exit 2) unless ``force``
    (``--force``: continue this copy anyway)."""
    storage = open_storage(storage_url, heartbeat_interval=cfg.workers.heartbeat_interval,
                           grace_period=cfg.workers.grace_period,
                           max_retries=cfg.workers.max_retries,
                           outage_limit_s=cfg.workers.outage_limit_s)
    if cfg.name in optuna.get_all_study_names(storage):  # not every study's summary: 10k trials
        study_id = storage.get_study_id_from_name(cfg.name)
        stored = [d.name.lower() for d in storage.get_study_directions(study_id)]
        if stored != cfg.objective.directions:
            key = "objective.direction" if len(stored) == 1 == len(cfg.objectives) else "objective"
            value = cfg.objective.direction if key == "objective.direction" else cfg.objectives
            allowed = (f"{stored[0]} (the stored study's direction)" if len(stored) == 1 else
                       f"{len(stored)} objectives with directions {stored} (the stored study's)")
            raise ConfigError(cfg.source, key, value, allowed)
    pruner = build_pruner(cfg.pruner, cfg.budget.max_epochs)
    study = optuna.create_study(
        study_name=cfg.name,
        storage=storage,
        directions=cfg.objective.directions,
        sampler=build_sampler(cfg),
        pruner=optuna.pruners.NopPruner() if cfg.is_multi_objective else pruner,
        load_if_exists=True,
    )
    refuse_if_moved(study, force)
    if CONFIG_ATTR not in study.user_attrs:
        # passwords (e.g. in sampler.warm_start_from URLs) never reach the storage
        study.set_user_attr(CONFIG_ATTR, redact_secrets(cfg.model_dump(mode="json")))
        study.set_user_attr(SPACE_ATTR, cfg.space.model_dump(mode="json"))
        name_objective(study, cfg.objective.metric)  # optuna-dashboard: not "Objective 0"
        name_objectives(study, cfg.objective.names)  # (several: latency_ms, params_m too)
    else:  # joining a study: the local file must say the same as the stored config
        check_same_config(cfg, study, cfg.source)
    return study


def format_trial(t: FrozenTrial) -> str:
    """One terminal line per finished trial: number, state, value, epochs, seconds, the metrics
    of the epoch its value comes from (a pruned or failed trial: its last epoch), params.

        >>> from optuna.distributions import FloatDistribution
        >>> t = optuna.trial.create_trial(
        ...     value=0.9, params={"lr": 0.01}, distributions={"lr": FloatDistribution(1e-3, 0.1)},
        ...     intermediate_values={1: 0.8, 2: 0.9, 3: 0.85},
        ...     user_attrs={"epochs": 3, "duration_s": 3.0, "curve": {
        ...         "val_accuracy": [0.8, 0.9, 0.85], "val_macro_f1": [0.7, 0.88, 0.8],
        ...         "val_mae": [0.6, 0.41, 0.5], "val_within_k": [0.7, 0.83, 0.8]}})
        >>> format_trial(t).split("s  ", 1)[1]
        'epoch 2: acc=0.900 f1=0.880 mae=0.41 within_k=0.830  lr=0.01'
    """
    value = "-" if not t.values else "/".join(f"{v:.4g}" if i else f"{v:.4f}"
                                              for i, v in enumerate(t.values))
    params = " ".join(f"{k}={_short(v)}" for k, v in t.params.items())
    reason = t.user_attrs.get(PRUNE_REASON_ATTR) or t.user_attrs.get(FAIL_REASON_ATTR)
    curve = t.user_attrs.get(CURVE_ATTR) if isinstance(t.user_attrs.get(CURVE_ATTR), dict) else {}
    n = max((len(v) for v in curve.values() if isinstance(v, list)), default=0)
    epoch = n  # the best epoch: the first whose reported value is the trial's value
    if t.state == TrialState.COMPLETE and t.values:
        epoch = next((e for e, v in sorted(t.intermediate_values.items())
                      if v == main_value(t) and 1 <= e <= n), n)
    shown = []  # (curve key, label, format): rates with 3 decimals, errors with 3 digits
    for key, label, spec in (("val_accuracy", "acc", ".3f"), ("val_macro_f1", "f1", ".3f"),
                             ("val_mae", "mae", ".3g"), ("val_within_k", "within_k", ".3f"),
                             ("ema_val_accuracy", "ema_acc", ".3f"), ("ema_val_mae", "ema_mae", ".3g")):
        values = curve.get(key)
        if epoch and isinstance(values, list) and len(values) >= epoch and isinstance(
                values[epoch - 1], (int, float)):
            shown.append(f"{label}={values[epoch - 1]:{spec}}")
    metrics = f"epoch {epoch}: {' '.join(shown)}  " if shown else ""
    line = (f"trial {t.number:4d}  {t.state.name:<8} value={value:<8} "
            f"epochs={t.user_attrs.get(EPOCHS_ATTR, 0):<3} "
            f"{t.user_attrs.get(DURATION_ATTR, 0):7.1f}s  "
            f"{metrics}{params}")
    return line + (f"  [{reason}]" if reason and t.state != TrialState.COMPLETE else "")


def _short(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def summary(study: optuna.Study, storage_url: str) -> str:
    """Best trial, its params and the trial counts by state."""
    trials = [t for t in study.get_trials(deepcopy=False) if not is_lost_race(t)]
    counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    lines = [f"study {study.study_name!r} in {redact(storage_url)}",
             "trials: " + ", ".join(f"{n.lower()} {c}" for n, c in counts.items() if c)]
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    if not completed:
        return "\n".join(lines + ["no completed trial yet"])
    if len(study.directions) > 1:
        front = sorted(study.best_trials, key=lambda t: t.number)
        names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
        lines.append(f"Pareto front ({', '.join(names)}): {len(front)} trial(s)")
        lines += [f"  trial {t.number}: " + ", ".join(f"{n}={v:.4g}" for n, v in zip(names, t.values))
                  + "  " + json.dumps(t.params, sort_keys=True) for t in front]
        return "\n".join(lines)
    best = study.best_trial
    lines += [(f"best trial {best.number}: {study.direction.name.lower()} value "
               f"{best.value:.4f} after {best.user_attrs.get(EPOCHS_ATTR, '?')} epochs"),
              "best params: " + json.dumps(best.params, sort_keys=True)]
    return "\n".join(lines)


def run_study(
    cfg: StudyConfig,
    storage_url: str,
    n_trials: int | None = None,
    timeout: float | None = None,
    show_progress: bool = True,
    echo: Callable[[str], None] = print,
    artifacts: str | None = None,
    threads: int | None = None,
    force: bool = False,
    objective: Callable[[StudyConfig], Objective] = Objective,
) -> optuna.Study:
    """Run (or continue) the study until it has ``n_trials`` finished trials or time runs out.

    Any number of processes may run this on one study (see :mod:`hpo.worker`); ``artifacts``
    (a folder or ``s3://BUCKET``) is where trial checkpoints go (see :mod:`hpo.checkpoint`);
    ``threads`` (``--threads``) fixes torch's CPU threads, else :mod:`hpo.threads` decides;
    ``force`` (``--force``) runs a study that ``hpo migrate`` moved elsewhere; ``objective``
    makes the trial objective from the config (``benchmarks/replay.py`` answers trials from a
    recorded learning-curve table instead of training).

    Example:

        >>> import tempfile
        >>> from hpo.config import load_study
        >>> cfg = load_study("smoke")
        >>> cfg = cfg.model_copy(update={"budget": cfg.budget.model_copy(
        ...     update={"n_trials": 1, "max_epochs": 1})})
        >>> folder = tempfile.mkdtemp()
        >>> study = run_study(cfg, f"sqlite:///{folder}/hpo.db", show_progress=False,
        ...                   echo=lambda line: None, threads=1)
        >>> [t.state.name for t in study.trials], study.trials[0].user_attrs["epochs"]
        (['COMPLETE'], 1)

    Args:
        cfg: The study (:func:`hpo.config.load_study`).
        storage_url: Where the study lives (created if new; ``grpc://`` through a proxy).
        n_trials: Finished trials to reach (default ``budget.n_trials``), never "n more".
        timeout: Seconds for this run; the running trial finishes or is left for retry.
        show_progress: A progress bar on the terminal.
        echo: Where the run's lines go (default: print).
        artifacts: The checkpoint store, a folder or ``s3://BUCKET`` (:mod:`hpo.artifacts`).
        threads: torch CPU threads (default: this process's share of the cores).
        force: Run a study that ``hpo migrate`` moved elsewhere.
        objective: Makes the trial objective from ``cfg`` (default: real training).
    """
    budget = ThreadBudget(threads_setting(threads, cfg.workers.threads))
    with budget:  # registered before the data loads, so workers started together see each other
        budget.apply()
        return _run_study(cfg, storage_url, n_trials, timeout, show_progress, echo, artifacts,
                          budget, force=force, make_objective=objective)


def _run_study(cfg: StudyConfig, storage_url: str, n_trials: int | None, timeout: float | None,
               show_progress: bool, echo: Callable[[str], None], artifacts: str | None,
               budget: ThreadBudget, force: bool = False,
               make_objective: Callable[[StudyConfig], Objective] = Objective) -> optuna.Study:
    target = n_trials if n_trials is not None else cfg.budget.n_trials
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # data and model first: a bad dataset or model name is a config error before any storage write
    objective = make_objective(cfg)
    study = open_study(cfg, storage_url, force=force)
    record_data(study, objective.facts, echo)
    for note in multi_objective_notes(cfg):
        echo(note)
    finished = count_finished(study)
    echo(f"study {cfg.name!r}: {finished} of {target} trials finished, "
         f"storage {redact(storage_url)}, {budget.said}")
    checkpoints = None
    if finished < target:
        checkpoints = Checkpoints.for_study(storage_url, cfg.artifacts, cfg.checkpoint, artifacts,
                                            study=study)
        echo(f"checkpoints: {redact_secrets(checkpoints.location)} (from {checkpoints.source})")
        objective.checkpoints = checkpoints
        if hasattr(study.sampler, "context"):  # llm-tpe analysts judge "near chance" with it
            study.sampler.context.update(n_classes=objective.data.num_classes,
                                         n_trials=cfg.budget.n_trials)  # the study's budget
            study.sampler.run_target = target  # this run's, maybe from --n-trials
        started = time.perf_counter()
        with _progress(show_progress and echo is print, finished, target) as bar:

            def print_trial(study: optuna.Study, trial: FrozenTrial) -> None:
                _write(format_trial(trial), echo, bar)
                bar.n = count_finished(study)  # other workers finish trials too
                bar.refresh()

            def prune_checkpoints(study: optuna.Study, trial: FrozenTrial) -> None:
                checkpoints.prune(study)

            def train(trial: optuna.Trial) -> float | tuple[float, ...]:
                changed = budget.apply()  # this process's share of the cores, trial by trial
                if changed:
                    _write(changed, echo, bar)
                return objective(trial)

            run_trials(
                study,
                train,
                target,
                timeout=timeout or cfg.budget.timeout,
                callbacks=[print_trial, prune_checkpoints],
                echo=echo,
            )
        if hasattr(study.sampler, "finish_run"):  # llm-tpe: wait (saying so) for a running
            # analysis up to sampler.wait_for_analysis_s, then drop/keep the unrun proposals
            study.sampler.finish_run(study, echo)
        echo(f"wall time {time.perf_counter() - started:.1f}s")
    echo(summary(study, storage_url))
    if objective.test_data is not None and count_finished(study) >= cfg.budget.n_trials:
        from hpo.export.evaluate import evaluate_best  # the budget is spent: the held-out test

        checkpoints = checkpoints or Checkpoints.for_study(
            storage_url, cfg.artifacts, cfg.checkpoint, artifacts, study=study)
        evaluate_best(study, cfg, objective.test_data, checkpoints, top=1, echo=echo, again=False)
    return study


def record_data(study: optuna.Study, facts: DataFacts, echo: Callable[[str], None]) -> None:
    """Store the data set's facts in a new study (:data:`hpo.record.DATA_ATTR`); a study that
    has them and another fingerprint gets one warning line (its data changed since it started)."""
    stored = read_data_facts(study)
    if stored is None:
        write_data_facts(study, facts)
    elif stored.fingerprint != facts.fingerprint:
        echo(f"hpo: warning: the data differs from the data study {study.study_name!r} started "
             f"with (fingerprint {facts.fingerprint} != {stored.fingerprint})")


class _NoBar:
    """Stands in for the progress bar when there is none (``--no-progress``, or not a terminal
    print)."""

    n = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def refresh(self) -> None:
        return None


def _progress(show: bool, finished: int, target: int) -> Any:
    """A tqdm bar of finished trials out of ``target`` (on stderr), or a stand-in."""
    if not show:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=target, initial=finished, unit="trial", desc="trials", dynamic_ncols=True)


def _write(line: str, echo: Callable[[str], None], bar: Any) -> None:
    if isinstance(bar, _NoBar):
        echo(line)
    else:
        bar.write(line)


# -- `hpo worker` ----------------------------------------------------------------------------

def join_study(
    name: str,
    storage: str | None = None,
    artifacts: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    show_progress: bool = True,
    echo: Callable[[str], None] = print,
    threads: int | None = None,
    force: bool = False,
) -> optuna.Study:
    """Join the existing study ``name`` in ``storage`` with its stored config, and run trials
    (``hpo worker``): any number of workers on any machines share its budget exactly.

    A study that ``hpo migrate`` moved elsewhere is refused (exit 2) unless ``force``; a local
    ``studies/NAME.yaml`` that differs from the stored config is refused too.

    Example:

        >>> import tempfile
        >>> from hpo.config import load_study
        >>> cfg = load_study("smoke")
        >>> cfg = cfg.model_copy(update={"name": "demo", "budget": cfg.budget.model_copy(
        ...     update={"n_trials": 1, "max_epochs": 1})})
        >>> url = f"sqlite:///{tempfile.mkdtemp()}/hpo.db"
        >>> first = open_study(cfg, url)         # created by `hpo study` on one machine
        >>> study = join_study("demo", url, show_progress=False, echo=lambda line: None,
        ...                    threads=1)        # `hpo worker demo` on another
        >>> len(study.trials)
        1

    Args:
        name: The study in ``storage``.
        storage: Its URL (default ``$HPO_STORAGE``, else ``sqlite:///runs/hpo.db``).
        artifacts: The checkpoint store shared by the workers (default: what the study
            recorded, see :mod:`hpo.artifacts`).
        n_trials, timeout, show_progress, echo, threads, force: as for :func:`run_study`.
    """
    url = resolve_storage_url(storage)
    rdb = open_storage(url)
    try:
        rdb.get_study_id_from_name(name)
    except KeyError:
        raise ConfigError("--storage", "study", name,
                          f"a study that exists in {redact(url)}; create it first with "
                          f"`hpo study {name} --storage URL`") from None
    study = optuna.load_study(study_name=name, storage=rdb)
    if not force:  # before anything else: this copy of the study may be a stale one
        refuse_if_moved(study)
    cfg = stored_config(study)
    local = study_path(name)
    if local.is_file():  # the same study; this machine's dataset paths, budget and passwords
        cfg = load_study(name)
        check_same_config(cfg, study, str(local))
    else:  # the stored config has passwords as ***: take them from this worker's storage URLs
        try:  # $HPO_STORAGE may be @FILE or hold ${VAR}: the URL it stands for
            env_url = resolve_storage_url(None, default=None) if os.environ.get(
                "HPO_STORAGE") else None
        except HpoError:
            env_url = None
        cfg.sampler.warm_start_from = [
            restore_password(src, url, env_url) for src in cfg.sampler.warm_start_from]
    echo(f"worker joins study {name!r} in {redact(url)}"
         + (f" (checked against {local})" if local.is_file() else " (config from the storage)"))
    return run_study(cfg, url, n_trials=n_trials, timeout=timeout, show_progress=show_progress,
                     echo=echo, artifacts=artifacts, threads=threads, force=force)
