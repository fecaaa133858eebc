"""From an analyst's proposals to WAITING trials: check, deduplicate, cap, enqueue.

Each proposal is made valid for the search space (:meth:`hpo.space.SearchSpace.check`: unknown
names dropped, values clipped or snapped, conditions respected, missing values taken from the
best trial), compared with every existing and waiting trial (a duplicate is skipped), held to the
cap on the share of proposal trials, held to the study's remaining budget (``budget`` minus
the complete, pruned, running and already waiting trials: a proposal past it is
``over_budget``), and enqueued with ``study.enqueue_trial`` and user attrs
``hpo_source``/``hpo_analysis``/``hpo_proposal``. Every correction and decision is written
back on the proposal (``corrections``, ``diff``, ``status``, ``trial_number``).

Trials that never ran (:func:`hpo.storage.is_lost_race`: a lost budget race, or a proposal
dropped unrun when its run ended) count for nothing here: not as trials, not as duplicates.
A round redone after a crash finds the trials its first attempt enqueued (same analysis id and
index, same values) and takes them as its own instead of enqueuing them twice.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.record import ANALYSIS_ATTR, PROPOSAL_ATTR, SOURCE_ATTR
from hpo.sampler.analysis import Analysis, check_alternatives, diff_params
from hpo.sampler.history import same_params, trial_params
from hpo.space import SearchSpace
from hpo.storage import is_lost_race

PROPOSAL_SOURCES = ("llm", "rules")
# what uses up the budget (a study runs until its complete + pruned trials reach n_trials)
BUDGET_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def proposal_counts(study: optuna.Study) -> tuple[int, int]:
    """(trials from proposals, all trials), waiting ones included, never-run ones not."""
    trials = [t for t in study.get_trials(deepcopy=False) if not is_lost_race(t)]
    return sum(t.user_attrs.get(SOURCE_ATTR) in PROPOSAL_SOURCES for t in trials), len(trials)


def enqueue_proposals(study: optuna.Study, analysis: Analysis, space: SearchSpace,
                      max_share: float, dry_run: bool = False, budget: int | None = None
                      ) -> Analysis:
    """Check every proposal of ``analysis`` and enqueue those that pass; returns it updated.

    The cap holds at every enqueue: proposal trials <= ``max_share`` x all trials (waiting
    included). A warm start, before any trial exists, is held to ``max_share`` x ``budget``
    (the study's n_trials) instead, when it is known. With ``budget``, no more trials are
    enqueued than ``budget`` - (complete + pruned + running + waiting trials): the others are
    ``over_budget``, so an analysis that lands after the last trial slot enqueues nothing.
    """
    trials = [t for t in study.get_trials(deepcopy=False) if not is_lost_race(t)]
    seen = [trial_params(t) for t in trials]  # a waiting/running one: all its fixed params
    n_prop, n_all = proposal_counts(study)
    left = None if budget is None else budget - sum(t.state in BUDGET_STATES for t in trials)
    for i, p in enumerate(analysis.proposals):
        clean, corrections = space.check(p.params, fill=analysis.best_params)
        p.params, p.corrections = clean, [*p.corrections, *corrections]
        check_alternatives(p, space)  # alternatives are data, checked like the proposal
        p.diff = diff_params(analysis.best_params, clean)
        earlier = _enqueued_before(trials, analysis.id, i, clean)
        if earlier is not None:  # this round's first attempt enqueued it, then was lost
            p.status, p.trial_number = "enqueued", earlier
            continue
        if any(same_params(clean, s) for s in seen):
            p.status = "duplicate"
            continue
        if left is not None and left <= 0:
            p.status = "over_budget"
            continue
        room = n_all + 1
        if analysis.trigger == "warm_start" and budget:
            room = max(room, budget)
        if (n_prop + 1) > max_share * room + 1e-9:
            p.status = "capped"
            continue
        seen.append(clean)
        left = None if left is None else left - 1
        if dry_run:
            p.status = "dry_run"
            continue
        attrs = {SOURCE_ATTR: analysis.analyst, ANALYSIS_ATTR: analysis.id, PROPOSAL_ATTR: i}
        study.enqueue_trial(clean, user_attrs=attrs)
        n_prop, n_all = n_prop + 1, n_all + 1
        p.status, p.trial_number = "enqueued", _find_enqueued(study, analysis.id, i)
    return analysis


def _enqueued_before(trials: list, analysis_id: str, index: int,
                     params: dict[str, Any]) -> int | None:
    """The trial an earlier attempt of this round enqueued for proposal ``index``, if any."""
    for t in trials:
        if (t.user_attrs.get(ANALYSIS_ATTR) == analysis_id
                and t.user_attrs.get(PROPOSAL_ATTR) == index
                and same_params(params, trial_params(t))):
            return t.number
    return None


def _find_enqueued(study: optuna.Study, analysis_id: str, index: int) -> int | None:
    for t in reversed(study.get_trials(deepcopy=False, states=(TrialState.WAITING,
                                                               TrialState.RUNNING))):
        if t.user_attrs.get(ANALYSIS_ATTR) == analysis_id and t.user_attrs.get(PROPOSAL_ATTR) == index:
            return t.number
    return None
