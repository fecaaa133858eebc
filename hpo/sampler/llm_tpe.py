"""The LLM-informed sampler: Optuna's TPE, plus analyses whose proposals become WAITING trials.

:class:`LLMTPESampler` samples every trial with a plain :class:`optuna.samplers.TPESampler`
(default settings, seedable). In ``after_trial`` it checks whether an analysis is due (every
``every_n_trials`` finished trials; when the best has been stale for ``patience`` trials; once at
study start when ``warm_start_from`` names earlier studies), takes a snapshot of the history as
plain data and hands it to a background thread, so a trial never waits for the analyst. The
thread runs the analyst (LLM, falling back to rules), checks and enqueues the proposals
(``study.enqueue_trial``: any worker on any machine runs them next), stores the analysis and
writes dashboard notes. With several workers on one storage, a claim in the storage makes one
of them run each round.

A round's prompt is built from the history as of its trigger: the first N finished trials in
completion order (N: the count in its id, ``every_n-0010``) and the analyses stored before it,
so a round redone after a crash (a run that starts redoes a lost round at once) builds the same
prompt, and the LLM's reply cached by the first attempt is replayed instead of paid again.
Proposals never take more trials than the run's budget has left. When a run ends
(:meth:`LLMTPESampler.finish_run`) it waits up to ``wait_for_analysis_s`` for analyses still
running (saying so on the terminal), abandons them after that (their LLM requests are marked
``abandoned`` in the ledger and their rounds released for the next run), and finishes the
proposals it enqueued but did not run as FAIL marked never-run
(:data:`~hpo.record.UNRUN_PROPOSAL_ATTR`, left out of counts, reports and analyses like a lost
budget race), unless ``keep_waiting_proposals`` keeps them WAITING for the next run. Nothing
here imports PyTorch::

    >>> import optuna
    >>> from hpo.space import SearchSpace
    >>> space = SearchSpace.model_validate({"params": {"x": {"type": "float", "low": -5, "high": 5}}})
    >>> sampler = LLMTPESampler(space, LLMTPEOptions(every_n_trials=4, background=False), seed=0)
    >>> study = optuna.create_study(sampler=sampler)
    >>> study.optimize(lambda t: (space.suggest(t)["x"] - 1) ** 2, n_trials=8)
    >>> sorted({t.user_attrs.get("hpo_source", "tpe") for t in study.trials})
    ['rules', 'tpe']
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from hpo.optuna_private import storage_of, trial_id_of
from hpo.record import (
    ANALYSIS_ATTR,
    FAIL_REASON_ATTR,
    LOST_RACE_ATTR,
    PROPOSAL_ATTR,
    UNRUN_PROPOSAL_ATTR,
)
from hpo.redaction import redact_secrets
from hpo.sampler import notes, store
from hpo.sampler.analysis import Analysis, Reply
from hpo.sampler.history import History, from_study
from hpo.sampler.ledger import Ledger
from hpo.sampler.proposals import enqueue_proposals
from hpo.sampler.rules import RulesAnalyst
from hpo.sampler.seeding import PerTrialSeed
from hpo.sampler.settings import LLMTPEOptions
from hpo.space import SearchSpace
from hpo.storage import open_storage, resolve_storage_url

log = logging.getLogger("hpo.sampler")
UNRUN_REASON = "not run: proposal left when the run ended"
_TRIGGER_COUNT = re.compile(r"^(?:every_n|patience)-(\d+)$")


def trigger_count(analysis_id: str) -> int | None:
    """The finished-trial count that triggered round ``analysis_id`` (None: no such count).

    >>> trigger_count("every_n-0010"), trigger_count("warm_start-0000"), trigger_count("manual-0004")
    (10, None, None)
    """
    m = _TRIGGER_COUNT.match(analysis_id)
    return int(m.group(1)) if m else None


class LLMTPESampler(BaseSampler):
    """TPE for every trial it samples; analysts add proposals as enqueued trials.

    Every ``options.every_n_trials`` finished trials (and on the other triggers of
    :class:`~hpo.sampler.settings.LLMTPEOptions`) an analyst reads the history and its
    proposals are checked against ``space`` and enqueued, so the next trials of any worker run
    them; TPE samples the rest. The analysis is stored in the study
    (:func:`hpo.record.read_analyses`) and the trials it proposed carry ``hpo_source``.

    Example:

        >>> import optuna
        >>> from hpo.sampler.settings import LLMTPEOptions
        >>> from hpo.space import SearchSpace
        >>> space = SearchSpace.model_validate(
        ...     {"params": {"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True}}})
        >>> sampler = LLMTPESampler(space, LLMTPEOptions(every_n_trials=5, background=False,
        ...                                              analyst="rules"), seed=1)
        >>> study = optuna.create_study(sampler=sampler)
        >>> study.optimize(lambda t: abs(space.suggest(t)["lr"] - 0.01), n_trials=10)
        >>> proposed = [t for t in study.trials if t.user_attrs.get("hpo_source") == "rules"]
        >>> 0 < len(proposed) <= 10 // 3 + 1
        True

    Args:
        space:
            The search space: proposals are checked against it (unknown names dropped, values
            clipped and snapped) and TPE samples within it.
        options:
            When to analyse, which analyst (``rules``, ``llm``, ``auto``), the LLM endpoint and
            its budget, caps on proposals (:class:`~hpo.sampler.settings.LLMTPEOptions`).
        seed:
            Seed of TPE (each trial draws from ``(seed, trial number)``, so workers on one study
            draw different points) and of the rules analyst.
        n_startup_trials:
            Random trials before TPE models the history, as in
            :class:`optuna.samplers.TPESampler`.
        context:
            Hints for the analysts, e.g. ``{"n_classes": 10}``.
        description:
            The study's description, given to the LLM analyst.
    """

    def __init__(self, space: SearchSpace, options: LLMTPEOptions | None = None, *,
                 seed: int | None = None, n_startup_trials: int = 10,
                 context: dict[str, Any] | None = None, description: str = "") -> None:
        self.space, self.options = space, options or LLMTPEOptions()
        self.seed = seed or 0
        self.context = dict(context or {})  # {"n_classes": 10, "n_trials": 30}: hints
        # this run's trial target (`hpo study --n-trials`), which proposals must fit in; kept
        # out of the prompt, so a round redone by a run with another target replays its reply
        self.run_target: int | None = None
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
        self._active: list[str] = []  # rounds queued or running in the background thread
        self._store_lock = threading.Lock()  # enqueue + store vs. the end of the run
        self.closed = False  # the run ended: nothing more is enqueued or stored
        self.enqueued: set[int] = set()  # numbers of the trials this sampler enqueued
        self.in_flight: Any = None  # hpo.sampler.llm.InFlight: this process's LLM requests
        if self.options.resolved_analyst() == "llm":  # (made here: the run's end may read it
            from hpo.sampler.llm import InFlight  # while the analyst thread starts a call)

            self.in_flight = InFlight()
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
            self._guard(self._maybe_analyse, _root(study))  # redo a round a crash lost

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

    def _maybe_analyse(self, study: optuna.Study, trial: FrozenTrial | None = None,
                       state: TrialState | None = None,
                       values: Sequence[float] | None = None) -> None:
        override = {} if trial is None else {
            "override": trial, "state": state, "values": list(values) if values else None}
        history = self.history(study, **override)
        for aid, trigger in self.due(study, history):
            if store.claim(study, aid, self.claim_timeout):
                self._submit(study, as_of_round(study, history, aid), aid, trigger)

    def _warm_start(self, study: optuna.Study) -> None:
        sources = self.options.warm_start_from
        if not sources or not store.claim(study, "warm_start-0000", self.claim_timeout):
            return
        trials, analyses = [], []
        for src in sources:
            url, _, name = src.rpartition("#")
            storage = open_storage(resolve_storage_url(url)) if url else storage_of(study)
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
        if self.closed:
            return
        if not self.options.background:
            self._guard(self.run_analysis, study, history, aid, trigger)
            return
        with self._cv:
            self._pending += 1
            self._active.append(aid)
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
                if aid in self._active:
                    self._active.remove(aid)
                self._cv.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for queued analyses to finish (e.g. at the end of a run); False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: self._pending == 0, timeout=timeout)

    def pending(self) -> list[str]:
        """Ids of the rounds queued or running in the background now."""
        with self._cv:
            return list(self._active)

    # -- the end of a run ---------------------------------------------------------------------
    def finish_run(self, study: optuna.Study, echo: Callable[[str], None] = print) -> None:
        """End of a run (:func:`hpo.runner.run_study`): wait up to ``wait_for_analysis_s`` for
        the analyses still running, saying so; abandon them after that or on Ctrl-C (their LLM
        requests marked ``abandoned`` in the ledger, counted against ``max_calls``; their rounds
        released so the next run redoes them); then drop the proposals this run enqueued and did
        not run, or keep them waiting (``keep_waiting_proposals``). Says what it did."""
        study = _root(study)
        limit = self.options.wait_for_analysis_s
        rounds = self.pending()
        if rounds:
            names = ", ".join(rounds)
            if limit > 0:
                echo(f"waiting up to {limit:g} s for the analysis of round {names} "
                     "(Ctrl-C to stop waiting)")
            try:
                done = self.wait(timeout=limit)
                why = f"no analysis within {limit:g} s (sampler.wait_for_analysis_s)"
            except KeyboardInterrupt:
                done, why = False, "Ctrl-C"
            if not done:
                self._abandon(study, why, echo)
        with self._store_lock:
            self.closed = True
        self._end_proposals(study, echo)

    def _abandon(self, study: optuna.Study, why: str, echo: Callable[[str], None]) -> None:
        with self._store_lock:
            self.closed = True  # a reply that still lands is neither enqueued nor stored
        rounds = self.pending()
        calls = self.in_flight.abandon(f"the run stopped waiting ({why})") \
            if self.in_flight is not None else []
        for aid in rounds:
            store.release(study, aid, f"the run stopped waiting ({why})")
        echo(f"stopped waiting for the analysis of round {', '.join(rounds)} ({why}); "
             + (f"{len(calls)} LLM request(s) recorded as abandoned in the ledger, counted "
                "against sampler.llm.max_calls; " if calls else "")
             + "the next run redoes the round")

    def _end_proposals(self, study: optuna.Study, echo: Callable[[str], None]) -> None:
        """Drop (or keep) the proposal trials this sampler enqueued that are still WAITING."""
        waiting = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                   if t.number in self.enqueued]
        if not waiting:
            return
        if self.options.keep_waiting_proposals:
            echo(f"{len(waiting)} unrun proposals kept waiting "
                 "(sampler.keep_waiting_proposals: true): the next run starts with them")
            return
        dropped = [t for t in waiting if drop_unrun(study, t)]
        if dropped:
            _mark_dropped(study, dropped)
        echo(f"{len(dropped)} unrun proposals dropped (sampler.keep_waiting_proposals: false)")

    def analyse(self, study: optuna.Study, history: History, aid: str, trigger: str,
                dry_run: bool = False) -> Analysis:
        """Write one analysis (LLM, or rules when it fails or none is configured); no enqueue.
        ``dry_run``: the LLM's ledger entries and reply stay in memory, nothing is stored."""
        analyst = self.options.resolved_analyst()
        best = history.best()
        head: dict[str, Any] = {
            "id": aid, "trigger": trigger, "n_trials_seen": len(history.finished()),
            "best_trial": best.number if best else None,
            "best_value": best.value if best else None,
            "best_params": dict(best.params) if best else {}}
        fallback, ledger_ids = None, []
        if analyst == "llm":
            from hpo.sampler.llm import DryRunLedger, InFlight, LLMAnalyst, LLMFailure

            if self.in_flight is None:
                self.in_flight = InFlight()
            ledger = DryRunLedger(study) if dry_run else Ledger(study)
            llm = LLMAnalyst(self.options.llm, ledger, self.options.max_proposals,
                             in_flight=self.in_flight)
            try:
                with llm:  # its one client is closed when the round ends
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
                     enqueue: bool = True, dry_run: bool = False) -> Analysis | None:
        """Analyse, check and enqueue the proposals, store the analysis, write the notes.

        ``enqueue=False``: store the analysis, enqueue nothing. ``dry_run``: write nothing at
        all (no analysis, ledger entry, cached reply, note or trial). None when the run ended
        meanwhile (:meth:`finish_run`): nothing is stored, the round is left to the next run.
        """
        if self.closed and not dry_run:
            return None
        n = trigger_count(aid)
        if n is not None:  # the analyses stored before this round (as a redo sees them too)
            history.analyses = _analyses_before(store.load_analyses(study), aid, n)
        analysis = self.analyse(study, history, aid, trigger, dry_run=dry_run)
        with self._store_lock:
            if self.closed and not dry_run:
                log.info("analysis %s: the run ended first; nothing enqueued or stored", aid)
                return None
            analysis = enqueue_proposals(study, analysis, self.space,
                                         self.options.max_proposal_share,
                                         dry_run=dry_run or not enqueue,
                                         budget=self.run_target or self.context.get("n_trials"))
            if dry_run:
                return analysis
            self.enqueued.update(p.trial_number for p in analysis.proposals
                                 if p.status == "enqueued" and p.trial_number is not None)
            stored = analysis.model_dump(mode="json")
            store.save_analysis(study, stored)
            for p in stored["proposals"]:
                if p.get("trial_number") is not None:
                    notes.write_trial_note(study, p["trial_number"], stored, p)
            notes.write_study_note(study, store.load_analyses(study))
        log.info("analysis %s: %d proposals enqueued", aid,
                 sum(p.status == "enqueued" for p in analysis.proposals))
        return analysis

    def analyse_now(self, study: optuna.Study, enqueue: bool = True,
                    dry_run: bool = False) -> Analysis:
        """One analysis on demand (``hpo analyze``), synchronously; ``dry_run`` writes
        nothing."""
        history = self.history(study)
        n = len(history.finished())
        taken = {a["id"] for a in history.analyses}
        aid = next(f"manual-{n:04d}" + (f".{i}" if i else "") for i in range(1000)
                   if f"manual-{n:04d}" + (f".{i}" if i else "") not in taken)
        analysis = self.run_analysis(study, history, aid, "manual", enqueue=enqueue,
                                     dry_run=dry_run)
        assert analysis is not None  # (analyze_study gives a closed sampler's study a new one)
        return analysis


def _root(study: optuna.Study) -> optuna.Study:
    """The real study behind Hyperband's per-bracket view."""
    return getattr(study, "_study", study) if hasattr(study, "_bracket_id") else study


def analyze_study(study: optuna.Study, space: SearchSpace, options: LLMTPEOptions | None = None,
                  seed: int = 0, enqueue: bool = True, description: str = "",
                  dry_run: bool = False) -> Analysis:
    """One analysis of ``study`` now (``hpo analyze``): with its own sampler's settings when
    the study runs llm-tpe in this process, else with ``options``. ``dry_run``: the analysis
    is returned and nothing is written to the storage (an LLM request is still made, or a
    cached reply replayed; it is not recorded in the ledger)."""
    own = study.sampler if isinstance(study.sampler, LLMTPESampler) else None
    sampler = own if own is not None and not own.closed else LLMTPESampler(
        space, options, seed=seed, description=description)
    return sampler.analyse_now(study, enqueue=enqueue, dry_run=dry_run)


def as_of_round(study: optuna.Study, history: History, aid: str) -> History:
    """``history`` as round ``aid`` saw it at its trigger: the first N finished trials in
    completion order (N from the id; a trial being told now counts as the last finished),
    the trials not finished yet (they are not in the prompt), no later analysis. A round
    redone after a crash gets the same prompt as its first attempt (and its cached reply)."""
    n = trigger_count(aid)
    if n is None:
        return history
    history = dataclasses.replace(history)  # the caller's history is left as it was
    done_at = {t.number: t.datetime_complete for t in study.get_trials(deepcopy=False)}

    def order(number: int) -> tuple[bool, float, int]:
        at = done_at.get(number)
        return (at is None, at.timestamp() if at is not None else 0.0, number)

    first = {t.number for t in sorted(history.finished(), key=lambda t: order(t.number))[:n]}
    history.trials = [t for t in history.trials if not t.finished or t.number in first]
    history.analyses = _analyses_before(history.analyses, aid, n)
    return history


def _analyses_before(analyses: list[dict[str, Any]], aid: str, n: int) -> list[dict[str, Any]]:
    """The analyses a round triggered at ``n`` finished trials could see: those made with fewer
    trials seen, and warm starts (they come first)."""
    return [a for a in analyses if a.get("id") != aid and (
        a.get("trigger") == "warm_start" or (a.get("n_trials_seen") or 0) < n)]


def drop_unrun(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Finish a WAITING proposal trial unrun: FAIL, marked :data:`UNRUN_PROPOSAL_ATTR` and
    ``hpo:lost_race`` (counts, reports and analysts leave it out), ``fail_reason`` saying why.
    False when another worker took it first (it runs there)."""
    storage = storage_of(study)
    if not storage.set_trial_state_values(trial_id_of(trial), state=TrialState.RUNNING):
        return False  # taking it off the queue is atomic: only a WAITING trial can be taken
    storage.set_trial_system_attr(trial_id_of(trial), LOST_RACE_ATTR, True)
    storage.set_trial_system_attr(trial_id_of(trial), UNRUN_PROPOSAL_ATTR, True)
    storage.set_trial_user_attr(trial_id_of(trial), FAIL_REASON_ATTR, UNRUN_REASON)
    storage.set_trial_state_values(trial_id_of(trial), state=TrialState.FAIL)
    return True


def _mark_dropped(study: optuna.Study, trials: list[FrozenTrial]) -> None:
    """Proposals whose trial was dropped unrun: status ``dropped`` in their stored analysis."""
    by_id = {a["id"]: a for a in store.load_analyses(study)}
    changed = set()
    for t in trials:
        a = by_id.get(t.user_attrs.get(ANALYSIS_ATTR))
        i = t.user_attrs.get(PROPOSAL_ATTR)
        if a is not None and isinstance(i, int) and 0 <= i < len(a.get("proposals", [])):
            a["proposals"][i]["status"] = "dropped"
            changed.add(a["id"])
    for aid in changed:
        store.save_analysis(study, by_id[aid])
    if changed:
        notes.write_study_note(study, store.load_analyses(study))
