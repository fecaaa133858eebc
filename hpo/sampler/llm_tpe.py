"""The LLM-informed sampler: Optuna's TPE, plus analyses whose proposals become WAITING trials.

:class:`LLMTPESampler` samples every trial with a plain :class:`optuna.samplers.TPESampler`
(default settings, seedable). In ``after_trial`` it checks whether an analysis is due (every
``every_n_trials`` finished trials; when the best has been stale for ``patience`` trials; once at
study start when ``warm_start_from`` names earlier studies), takes a snapshot of the history as
plain data and hands it to a background thread, so a trial never waits for the analyst. The
thread runs the analyst (LLM, falling back to rules), checks and enqueues the proposals
(``study.enqueue_trial``: any worker on any machine runs them next), stores the analysis and
writes dashboard notes. With several workers on one storage, a claim in the storage makes one
of them run each round. Nothing here imports PyTorch::

    >>> import optuna
    >>> from hpo.space import SearchSpace
from hpo.storage import open_storage, redact_secrets, resolve_storage_url
    >>> space = SearchSpace.model_validate({"params": {"x": {"type": "float", "low": -5, "high": 5}}})
    >>> sampler = LLMTPESampler(space, LLMTPEOptions(every_n_trials=4, background=False), seed=0)
    >>> study = optuna.create_study(sampler=sampler)
    >>> study.optimize(lambda t: (space.suggest(t)["x"] - 1) ** 2, n_trials=8)
    >>> sorted({t.user_attrs.get("hpo_source", "tpe") for t in study.trials})
    ['rules', 'tpe']
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from hpo.sampler import notes, store
from hpo.sampler.analysis import Analysis, Reply
from hpo.sampler.history import History, from_study
from hpo.sampler.ledger import Ledger
from hpo.sampler.proposals import enqueue_proposals
from hpo.sampler.rules import RulesAnalyst
from hpo.sampler.seeding import PerTrialSeed
from hpo.sampler.settings import LLMTPEOptions
from hpo.space import SearchSpace
from hpo.storage import open_storage, redact_secrets, resolve_storage_url

log = logging.getLogger("hpo.sampler")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class LLMTPESampler(BaseSampler):
    """TPE for every trial it samples; analysts add proposals as enqueued trials."""

    def __init__(self, space: SearchSpace, options: LLMTPEOptions | None = None, *,
                 seed: int | None = None, n_startup_trials: int = 10,
                 context: dict[str, Any] | None = None, description: str = "") -> None:
        self.space, self.options = space, options or LLMTPEOptions()
        self.seed = seed or 0
        self.context = dict(context or {})  # {"n_classes": 10, "n_trials": 30}: hints
        self.description = description
        self._tpe = PerTrialSeed(  # workers on one study draw different points
            lambda s: TPESampler(seed=s, n_startup_trials=n_startup_trials), self.seed)
        self._space_dict = {n: p.model_dump(exclude_defaults=True) | {"type": p.type}
                            for n, p in space.params.items()}
        self._jobs: queue.Queue = queue.Queue()
        self._pending = 0
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._started = False
        self.errors: list[str] = []
        # a round claimed but not stored after this long was lost (a crash): any worker redoes it
        llm = self.options.llm
        worst = 0.0 if llm is None else 3 * (llm.max_retries + 1) * llm.timeout + sum(
            min(llm.backoff * 2 ** i, 30.0) for i in range(llm.max_retries))
        self.claim_timeout = max(store.CLAIM_TIMEOUT, 2 * worst)

    # -- sampling: all TPE ---------------------------------------------------------------
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._tpe.before_trial(study, trial)
        if not self._started:
            self._started = True
            self._guard(self._warm_start, _root(study))

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._tpe.after_trial(study, trial, state, values)
        self._guard(self._maybe_analyse, _root(study), trial, state, values)

    # -- when to analyse -------------------------------------------------------------------
    def _guard(self, fn: Any, *args: Any) -> None:
        """The analyst must never break a study: log and record any error instead."""
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - deliberate: the study goes on
            self.errors.append(f"{type(exc).__name__}: {exc}")
            log.warning("analysis skipped: %s: %s", type(exc).__name__, exc)

    def due(self, study: optuna.Study, history: History) -> list[tuple[str, str]]:
        """``(analysis id, trigger)`` of every analysis due now and not yet claimed/stored."""
        n = len(history.finished())
        stored = store.taken(study, self.claim_timeout)
        due = []
        every = self.options.every_n_trials
        if n >= every:
            aid = f"every_n-{n // every * every:04d}"
            if aid not in stored:
                due.append((aid, "every_n"))
        if self.options.patience:
            stale = history.stale()
            if stale >= self.options.patience:
                aid = f"patience-{n - stale + self.options.patience:04d}"
                if aid not in stored and not due:
                    due.append((aid, "patience"))
        return due

    def _maybe_analyse(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                       values: Sequence[float] | None) -> None:
        history = self.history(study, override=trial, state=state,
                               values=list(values) if values else None)
        for aid, trigger in self.due(study, history):
            if store.claim(study, aid, self.claim_timeout):
                self._submit(study, history, aid, trigger)

    def _warm_start(self, study: optuna.Study) -> None:
        sources = self.options.warm_start_from
        if not sources or not store.claim(study, "warm_start-0000", self.claim_timeout):
            return
        trials, analyses = [], []
        for src in sources:
            url, _, name = src.rpartition("#")
            storage = open_storage(resolve_storage_url(url)) if url else study._storage
            other = optuna.load_study(study_name=name, storage=storage)
            h = self.history(other)
            trials += h.trials
            analyses += h.analyses
        history = self.history(study)
        history.trials = [t for t in trials if t.finished]
        history.analyses = analyses
        # the prompt may go to a hosted endpoint: never a password
        history.study = f"{study.study_name} (warm start from {redact_secrets(', '.join(sources))})"
        self._submit(study, history, "warm_start-0000", "warm_start")

    # -- running analyses ---------------------------------------------------------------------
    def history(self, study: optuna.Study, **override: Any) -> History:
        return from_study(study, self._space_dict, analyses=store.load_analyses(study),
                          context=self.context, **override)

    def _submit(self, study: optuna.Study, history: History, aid: str, trigger: str) -> None:
        if not self.options.background:
            self._guard(self.run_analysis, study, history, aid, trigger)
            return
        with self._cv:
            self._pending += 1
        self._jobs.put((study, history, aid, trigger))
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._worker, name="hpo-analyst", daemon=True)
            self._thread.start()

    def _worker(self) -> None:
        while True:
            study, history, aid, trigger = self._jobs.get()
            self._guard(self.run_analysis, study, history, aid, trigger)
            with self._cv:
                self._pending -= 1
                self._cv.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for queued analyses to finish (e.g. at the end of a run); False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: self._pending == 0, timeout=timeout)

    def analyse(self, study: optuna.Study, history: History, aid: str, trigger: str
                ) -> Analysis:
        """Write one analysis (LLM, or rules when it fails or none is configured); no enqueue."""
        analyst = self.options.resolved_analyst()
        best = history.best()
        head: dict[str, Any] = {
            "id": aid, "trigger": trigger, "n_trials_seen": len(history.finished()),
            "best_trial": best.number if best else None,
            "best_value": best.value if best else None,
            "best_params": dict(best.params) if best else {}}
        fallback, ledger_ids = None, []
        if analyst == "llm":
            from hpo.sampler.llm import LLMAnalyst, LLMFailure

            llm = LLMAnalyst(self.options.llm, Ledger(study), self.options.max_proposals)
            try:
                reply, ledger_ids = llm.analyse(history, aid, self.description)
                return Analysis(**reply.model_dump(), **head, analyst="llm",
                                model=self.options.llm.model, ledger=ledger_ids)
            except LLMFailure as exc:
                fallback, ledger_ids = str(exc)[:300], exc.ledger_ids
        rules = RulesAnalyst(seed=self.seed, max_proposals=self.options.max_proposals)
        reply: Reply = rules.analyse(history, salt=sum(map(ord, aid)))
        return Analysis(**reply.model_dump(), **head, analyst="rules",
                        fallback_reason=fallback, ledger=ledger_ids)

    def run_analysis(self, study: optuna.Study, history: History, aid: str, trigger: str,
                     enqueue: bool = True) -> Analysis:
        """Analyse, check and enqueue the proposals, store the analysis, write the notes."""
        analysis = self.analyse(study, history, aid, trigger)
        analysis = enqueue_proposals(study, analysis, self.space,
                                     self.options.max_proposal_share, dry_run=not enqueue,
                                     budget=self.context.get("n_trials"))
        stored = analysis.model_dump(mode="json")
        store.save_analysis(study, stored)
        for p in stored["proposals"]:
            if p.get("trial_number") is not None:
                notes.write_trial_note(study, p["trial_number"], stored, p)
        notes.write_study_note(study, store.load_analyses(study))
        log.info("analysis %s: %d proposals enqueued", aid,
                 sum(p.status == "enqueued" for p in analysis.proposals))
        return analysis

    def analyse_now(self, study: optuna.Study, enqueue: bool = True) -> Analysis:
        """One analysis on demand (``hpo analyze``), synchronously."""
        history = self.history(study)
        n = len(history.finished())
        taken = {a["id"] for a in history.analyses}
        aid = next(f"manual-{n:04d}" + (f".{i}" if i else "") for i in range(1000)
                   if f"manual-{n:04d}" + (f".{i}" if i else "") not in taken)
        return self.run_analysis(study, history, aid, "manual", enqueue=enqueue)


def _root(study: optuna.Study) -> optuna.Study:
    """The real study behind Hyperband's per-bracket view."""
    return getattr(study, "_study", study) if hasattr(study, "_bracket_id") else study


def analyze_study(study: optuna.Study, space: SearchSpace, options: LLMTPEOptions | None = None,
                  seed: int = 0, enqueue: bool = True, description: str = "") -> Analysis:
    """One analysis of ``study`` now (``hpo analyze``): with its own sampler's settings when
    the study runs llm-tpe in this process, else with ``options``."""
    sampler = study.sampler if isinstance(study.sampler, LLMTPESampler) else LLMTPESampler(
        space, options, seed=seed, description=description)
    return sampler.analyse_now(study, enqueue=enqueue)
