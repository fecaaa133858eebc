"""The trial history as plain data, and its compact form for prompts.

Analysts never see Optuna objects: :func:`from_study` turns a study into a :class:`History` of
:class:`TrialRecord` (dicts of params, values, per-epoch curves, prune/fail reasons, where the
trial came from), and :func:`compact` shrinks it to a bounded summary (top trials, recent
trials, statistics, curve shapes, earlier analyses and how their proposals did) whose size does
not grow with the number of trials::

    >>> h = History(direction="minimize", trials=[
    ...     TrialRecord(number=0, state="COMPLETE", value=2.0, params={"x": 1.0}),
    ...     TrialRecord(number=1, state="COMPLETE", value=0.5, params={"x": 0.2})])
    >>> h.best().number
    1
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.record import (
    ANALYSIS_ATTR,
    CONFIG_ATTR,
    CURVE_ATTR,
    ENDED_NAMES,
    FAIL_REASON_ATTR,
    FIXED_PARAMS_ATTR,
    OPTUNA_FAIL_REASON_ATTR,
    PRUNE_REASON_ATTR,
    SOURCE_ATTR,
)
from hpo.storage import is_lost_race


@dataclass
class TrialRecord:
    """One trial as plain data."""

    number: int
    state: str
    value: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    curve: dict[str, list[float]] = field(default_factory=dict)
    reason: str | None = None
    source: str = "tpe"
    analysis: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in ENDED_NAMES


@dataclass
class History:
    """A study's trials and earlier analyses, as seen by an analyst."""

    direction: str = "maximize"
    metric: str = "value"
    trials: list[TrialRecord] = field(default_factory=list)
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    analyses: list[dict[str, Any]] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    study: str = ""

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    def finished(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.finished]

    def scored(self) -> list[TrialRecord]:
        """Complete trials and pruned ones with a last value, best first."""
        out = [t for t in self.trials if t.state in ("COMPLETE", "PRUNED") and _finite(t.value)]
        return sorted(out, key=lambda t: (t.state != "COMPLETE", -self.sign * t.value, t.number))

    @property
    def sign(self) -> float:
        return 1.0 if self.maximize else -1.0

    def best(self) -> TrialRecord | None:
        done = [t for t in self.trials if t.state == "COMPLETE" and _finite(t.value)]
        return min(done, key=lambda t: (-self.sign * t.value, t.number)) if done else None

    def better(self, a: float, b: float) -> bool:
        return a > b if self.maximize else a < b

    def stale(self) -> int:
        """Finished trials since the best value last improved."""
        best_value, best_at = None, 0
        done = sorted(self.finished(), key=lambda t: t.number)
        for i, t in enumerate(done):
            if t.state == "COMPLETE" and _finite(t.value) and (
                    best_value is None or self.better(t.value, best_value)):
                best_value, best_at = t.value, i
        return len(done) - 1 - best_at if done else 0


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def trial_params(t: FrozenTrial) -> dict[str, Any]:
    """The values a trial runs with. For an enqueued trial that waits or runs, its fixed params
    (``study.enqueue_trial``): its ``params`` hold only what it has suggested so far."""
    fixed = t.system_attrs.get(FIXED_PARAMS_ATTR)
    if t.state in (TrialState.WAITING, TrialState.RUNNING) and fixed:
        return dict(fixed)
    return dict(t.params or fixed or {})


def same_params(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two parameter sets are the same configuration: the same names, floats equal to
    a relative 1e-6 (what a storage round trip keeps), other values equal.

        >>> same_params({"lr": 0.1, "opt": "sgd"}, {"opt": "sgd", "lr": 0.1 + 1e-9})
        True
        >>> same_params({"lr": 0.1}, {"lr": 0.2}), same_params({"lr": 0.1}, {"wd": 0.1})
        (False, False)
    """
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


def record(t: FrozenTrial, state: TrialState | None = None, values: list[float] | None = None) -> TrialRecord:
    """A FrozenTrial as a TrialRecord (``state``/``values`` override a trial not yet stored)."""
    state = state or t.state
    value = values[0] if values else t.value
    if value is None and state == TrialState.PRUNED and t.intermediate_values:
        value = t.intermediate_values[max(t.intermediate_values)]
    curve = t.user_attrs.get(CURVE_ATTR)
    if not isinstance(curve, dict):
        curve = {"value": [t.intermediate_values[k] for k in sorted(t.intermediate_values)]}
    params = (t.params or t.system_attrs.get(FIXED_PARAMS_ATTR, {})) if state.is_finished() \
        else trial_params(t)
    reason = t.user_attrs.get(PRUNE_REASON_ATTR) or t.user_attrs.get(FAIL_REASON_ATTR)
    if reason is None and state == TrialState.FAIL:
        reason = t.system_attrs.get(OPTUNA_FAIL_REASON_ATTR)
    return TrialRecord(number=t.number, state=state.name, value=value, params=dict(params),
                       curve={k: list(v) for k, v in curve.items() if isinstance(v, list)},
                       reason=reason, source=t.user_attrs.get(SOURCE_ATTR, "tpe"),
                       analysis=t.user_attrs.get(ANALYSIS_ATTR))


def from_study(study: optuna.Study, space: dict[str, dict[str, Any]], *,
               override: FrozenTrial | None = None, state: TrialState | None = None,
               values: list[float] | None = None, analyses: list[dict[str, Any]] | None = None,
               context: dict[str, Any] | None = None) -> History:
    """The study's history; ``override`` (with ``state``/``values``) is a trial being told."""
    trials = []
    for t in study.get_trials(deepcopy=False):
        if is_lost_race(t):  # never ran: nothing to learn from
            continue
        if override is not None and t.number == override.number:
            trials.append(record(override, state, values))
        else:
            trials.append(record(t))
    config = study.user_attrs.get(CONFIG_ATTR) or {}
    metric = (config.get("objective") or {}).get("metric", "value")
    return History(direction=study.direction.name.lower(), metric=metric, trials=trials,
                   space=space, analyses=analyses or [], context=dict(context or {}),
                   study=study.study_name)


def _r(x: Any) -> Any:
    """Round floats to 4 significant digits (keeps prompts short and stable)."""
    if isinstance(x, float):
        return float(f"{x:.4g}") if math.isfinite(x) else str(x)
    if isinstance(x, dict):
        return {k: _r(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_r(v) for v in x]
    return x


def curve_shape(values: list[float], maximize: bool = True) -> dict[str, Any]:
    """A curve in a few numbers: length, first, best (and its epoch), last, trend, NaN."""
    finite = [v for v in values if _finite(v)]
    if not values:
        return {}
    shape: dict[str, Any] = {"n": len(values), "first": values[0], "last": values[-1]}
    if len(finite) < len(values):
        shape["nan_at"] = next(i + 1 for i, v in enumerate(values) if not _finite(v))
    if finite:
        best = max(finite) if maximize else min(finite)
        shape.update(best=best, best_epoch=values.index(best) + 1)
        if len(finite) >= 3:
            tail = finite[-3:]
            span = (max(finite) - min(finite)) or 1.0
            slope = (tail[-1] - tail[0]) / span
            shape["trend"] = ("rising" if slope > 0.05 else "falling" if slope < -0.05
                              else "flat")
    return _r(shape)


def shapes(t: TrialRecord, metric: str, maximize: bool) -> dict[str, Any]:
    """Curve shapes of the objective and, when present, both losses."""
    out = {}
    for key in (metric, "value", "train_loss", "val_loss"):
        if key in t.curve and key not in out and t.curve[key]:
            lower_better = key.endswith("loss") or (key in (metric, "value") and not maximize)
            out[key] = curve_shape(t.curve[key], maximize=not lower_better)
    return out


def summary_of(t: TrialRecord, h: History, with_curves: bool = True) -> dict[str, Any]:
    row: dict[str, Any] = {"trial": t.number, "state": t.state, "value": _r(t.value),
                           "params": _r(t.params), "source": t.source}
    if t.reason:
        row["reason"] = t.reason[:120]
    if with_curves:
        row["curves"] = shapes(t, h.metric, h.maximize)
    return row


def compact(h: History, top_k: int = 5, recent_k: int = 6, analyses_k: int = 3) -> dict[str, Any]:
    """A bounded summary of the history (its size does not grow with the number of trials).

    Only finished trials count: how many trials other workers are running or have waiting at
    the moment is left out, so the same round gives the same prompt (and prompt hash) on any
    machine, and a cached reply is replayed there.
    """
    counts: dict[str, int] = {}
    for t in h.finished():
        counts[t.state] = counts.get(t.state, 0) + 1
    scored = h.scored()
    top = scored[:top_k]
    top_numbers = {t.number for t in top}
    recent = [t for t in sorted(h.finished(), key=lambda t: -t.number)
              if t.number not in top_numbers][:recent_k]
    values = [t.value for t in scored if t.state == "COMPLETE"]
    stats: dict[str, Any] = {}
    if values:
        q = sorted(values)
        stats["values"] = _r({"min": q[0], "median": statistics.median(q), "max": q[-1],
                              "n": len(q)})
    stats["params"] = _param_stats(h, scored)
    by_source: dict[str, list[float]] = {}
    for t in h.trials:
        if t.state == "COMPLETE" and _finite(t.value):
            by_source.setdefault(t.source, []).append(t.value)
    stats["by_source"] = {s: _r({"n": len(v), "best": max(v) if h.maximize else min(v),
                                 "median": statistics.median(v)}) for s, v in by_source.items()}
    best = h.best()
    return {
        "study": h.study, "direction": h.direction, "metric": h.metric, "counts": counts,
        "best": summary_of(best, h) if best else None,
        "top": [summary_of(t, h) for t in top],
        "recent": [summary_of(t, h, with_curves=len(recent) <= recent_k) for t in recent],
        "stats": stats,
        "earlier_analyses": [_analysis_outcome(a, h) for a in h.analyses[-analyses_k:]],
        **({"context": h.context} if h.context else {}),
    }


def _param_stats(h: History, scored: list[TrialRecord]) -> dict[str, Any]:
    """Per parameter: the range (or choice counts) explored, and among the top quarter."""
    quarter = scored[: max(1, len(scored) // 4)]
    out: dict[str, Any] = {}
    for name, spec in h.space.items():
        seen = [t.params[name] for t in scored if name in t.params]
        good = [t.params[name] for t in quarter if name in t.params]
        if not seen:
            continue
        if spec.get("type") == "categorical":
            out[name] = {"top_counts": {str(c): good.count(c) for c in spec.get("choices", [])}}
        else:
            out[name] = _r({"explored": [min(seen), max(seen)], "top": [min(good), max(good)]
                            if good else None, "bounds": [spec.get("low"), spec.get("high")]})
    return out


def _analysis_outcome(a: dict[str, Any], h: History) -> dict[str, Any]:
    """An earlier analysis in a few words, and how each of its proposals did (rank among all)."""
    by_number = {t.number: t for t in h.trials}
    ranked = [t.number for t in h.scored()]
    outcomes = []
    for p in a.get("proposals", []):
        n = p.get("trial_number")
        t = by_number.get(n) if n is not None else None
        done = t is not None and t.finished  # running or waiting: the same "not yet" to all
        outcomes.append({"trial": n, "status": p.get("status"),
                         "state": t.state if done else None, "value": _r(t.value) if done else None,
                         "rank": (ranked.index(n) + 1) if n in ranked else None,
                         "changes": [f"{c['param']} {c.get('change')}" for c in p.get("diff", [])][:4]})
    return {"id": a.get("id"), "analyst": a.get("analyst"),
            "states": [d.get("state") for d in a.get("diagnosis", [])],
            "proposals": outcomes, "of_ranked": len(ranked)}
