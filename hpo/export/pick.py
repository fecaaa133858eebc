"""Which trial of a multi-objective study ``hpo export`` takes: one of its Pareto front, by a rule.

Rules (``hpo export NAME --pick RULE``):

- ``fastest-within:X`` (the default): the lowest ``latency_ms`` among the front's trials whose
  validation metric is within ``X`` points of the front's best (a point: 0.01 of a rate such
  as accuracy, macro-F1 or within-k, i.e. a percentage point; one unit of a loss or MAE);
- ``smallest-within:X``: the same with the fewest parameters (``params_m``);
- ``best``: the best validation metric on the front (ties: the faster/smaller, then the
  lower trial number).

    >>> import optuna
    >>> study = optuna.create_study(directions=["maximize", "minimize"])
    >>> study.set_metric_names(["val_accuracy", "latency_ms"])
    >>> for acc, ms in [(0.95, 9.0), (0.945, 3.0), (0.90, 1.0), (0.80, 5.0)]:
    ...     _ = study.tell(study.ask(), [acc, ms])
    >>> trial, why = pick_from_front(study, DEFAULT_RULE)
    >>> trial.number
    1
    >>> print(why)
    --pick fastest-within:1: trial 1, the lowest latency_ms (3) of the 2 Pareto trial(s) with val_accuracy within 1 point (0.01) of the front's best 0.95 (trial 0)
    >>> pick_from_front(study, "best")[0].number
    0
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial

from hpo.errors import ConfigError

DEFAULT_RULE = "fastest-within:1"
RULES = ("fastest-within:X", "smallest-within:X", "best")
RATES = ("accuracy", "f1", "within_k")  # metrics in [0, 1]: a point is 0.01
COST_OF = {"fastest": "latency_ms", "smallest": "params_m"}


def point(metric: str) -> float:
    """One point of ``metric``: 0.01 of a rate (a percentage point), else one unit."""
    return 0.01 if metric.endswith(RATES) else 1.0


def pick_from_front(study: optuna.Study, rule: str) -> tuple[FrozenTrial, str]:
    """The Pareto trial ``rule`` chooses, and one line saying which and why. A ConfigError
    (exit 2) for a rule that is not one of :data:`RULES`, or that names a cost the study does
    not measure."""
    names = list(study.metric_names or [])
    front = sorted(study.best_trials, key=lambda t: t.number)
    if not front:
        raise ConfigError("--pick", "study", study.study_name, "a study with a complete trial")
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
    metric = names[0] if names else "objective 0"
    top = max(front, key=lambda t: (sign * t.values[0], -t.number))
    kind, _, amount = rule.partition("-within:")
    if rule == "best":
        # the cost objectives break ties (each minimised or maximised as the study says)
        costs = [(-1 if d == optuna.study.StudyDirection.MAXIMIZE else 1)
                 for d in study.directions[1:]]
        chosen = min((t for t in front if t.values[0] == top.values[0]),
                     key=lambda t: ([c * v for c, v in zip(costs, t.values[1:])], t.number))
        return chosen, (f"--pick best: trial {chosen.number}, the best {metric} on the Pareto "
                        f"front ({chosen.values[0]:.4g})")
    try:
        within = float(amount)
    except ValueError:
        within = math.nan
    if kind not in COST_OF or not within >= 0:
        raise ConfigError("--pick", "rule", rule, f"one of {', '.join(RULES)} (X: points of "
                          f"{metric}, >= 0)")
    cost = COST_OF[kind]
    if cost not in names:
        raise ConfigError("--pick", "rule", rule, f"a cost study {study.study_name!r} measures; "
                          f"its objectives: {', '.join(names) or 'unnamed'}")
    index = names.index(cost)
    margin = within * point(metric)
    near = [t for t in front if sign * (top.values[0] - t.values[0]) <= margin + 1e-12]
    chosen = min(near, key=lambda t: (t.values[index], -sign * t.values[0], t.number))
    return chosen, (f"--pick {rule}: trial {chosen.number}, the lowest {cost} "
                    f"({chosen.values[index]:.4g}) of the {len(near)} Pareto trial(s) with "
                    f"{metric} within {amount} point{'s' if within != 1 else ''} "
                    f"({margin:g}) of the front's best {top.values[0]:.4g} (trial {top.number})")
