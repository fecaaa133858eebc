"""From an analyst's proposals to WAITING trials: check, deduplicate, cap, enqueue.

Each proposal is made valid for the search space (:meth:`hpo.space.SearchSpace.check`: unknown
names dropped, values clipped or snapped, conditions respected, missing values taken from the
best trial), compared with every existing and waiting trial (a duplicate is skipped), held to the
cap on the share of proposal trials, and enqueued with ``study.enqueue_trial`` and user attrs
``hpo_source``/``hpo_analysis``/``hpo_proposal``. Every correction and decision is written
back on the proposal (``corrections``, ``diff``, ``status``, ``trial_number``).
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.sampler.analysis import Analysis, diff_params
from hpo.sampler.history import ANALYSIS_ATTR, PROPOSAL_ATTR, SOURCE_ATTR, trial_params
from hpo.space import SearchSpace

PROPOSAL_SOURCES = ("llm", "rules")


def same_params(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for k, x in a.items():
        y = b[k]
        if isinstance(x, float) or isinstance(y, float):
            try:
                if not math.isclose(float(x), float(y), rel_tol=1e-6, abs_tol=1e-12):
                    return False
            except (TypeError, ValueError):
                return False
        elif x != y:
            return False
    return True


def proposal_counts(study: optuna.Study) -> tuple[int, int]:
    """(trials from proposals, all trials), waiting ones included."""
    trials = study.get_trials(deepcopy=False)
    return sum(t.user_attrs.get(SOURCE_ATTR) in PROPOSAL_SOURCES for t in trials), len(trials)


def enqueue_proposals(study: optuna.Study, analysis: Analysis, space: SearchSpace,
                      max_share: float, dry_run: bool = False, budget: int | None = None
                      ) -> Analysis:
    """Check every proposal of ``analysis`` and enqueue those that pass; returns it updated.

    The cap holds at every enqueue: proposal trials <= ``max_share`` x all trials (waiting
    included). A warm start, before any trial exists, is held to ``max_share`` x ``budget``
    (the study's n_trials) instead, when it is known.
    """
    trials = study.get_trials(deepcopy=False)
    seen = [trial_params(t) for t in trials]  # a waiting/running one: all its fixed params
    n_prop, n_all = proposal_counts(study)
    for i, p in enumerate(analysis.proposals):
        clean, corrections = space.check(p.params, fill=analysis.best_params)
        p.params, p.corrections = clean, [*p.corrections, *corrections]
        p.diff = diff_params(analysis.best_params, clean)
        if any(same_params(clean, s) for s in seen):
            p.status = "duplicate"
            continue
        room = n_all + 1
        if analysis.trigger == "warm_start" and budget:
            room = max(room, budget)
        if (n_prop + 1) > max_share * room + 1e-9:
            p.status = "capped"
            continue
        seen.append(clean)
        if dry_run:
            p.status = "dry_run"
            continue
        attrs = {SOURCE_ATTR: analysis.analyst, ANALYSIS_ATTR: analysis.id, PROPOSAL_ATTR: i}
        study.enqueue_trial(clean, user_attrs=attrs)
        n_prop, n_all = n_prop + 1, n_all + 1
        p.status, p.trial_number = "enqueued", _find_enqueued(study, analysis.id, i)
    return analysis


def _find_enqueued(study: optuna.Study, analysis_id: str, index: int) -> int | None:
    for t in reversed(study.get_trials(deepcopy=False, states=(TrialState.WAITING,
                                                               TrialState.RUNNING))):
        if t.user_attrs.get(ANALYSIS_ATTR) == analysis_id and t.user_attrs.get(PROPOSAL_ATTR) == index:
            return t.number
    return None
