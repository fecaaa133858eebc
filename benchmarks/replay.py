"""Replay: answer a trial from a learning-curve table instead of training (issue 13).

A table (``benchmarks/bench_table.py``) holds, per configuration and seed, the full per-epoch
curves a real run recorded. :class:`ReplayObjective` stands in for :class:`hpo.objective.Objective`
in :func:`hpo.runner.run_study` (its ``objective`` argument), so the real samplers (TPE, random,
llm-tpe with its analysts), pruners and storage run unchanged:

- the study's search space is the table's grid (``search_spaces/headroom.yaml``: categorical
  levels); a suggested configuration is answered by the recorded run with exactly those params.
  A table cut short may lack some: then the nearest recorded configuration answers, by the sum
  over params of the level-index distance divided by (levels - 1) (unordered strings: 0 or 1),
  ties to the first in table order; the trial's ``replay`` user attr names the one used.
- which recorded seed answers is fixed by ``(study seed, trial number)``, so a repeated
  configuration gets seed-to-seed noise as in a real study, and the same study replays the same;
- every epoch is reported (``trial.report``, then ``trial.should_prune``); when the trial ends
  (complete, pruned or diverged) the curve (every metric recorded, up to that epoch), the
  epochs and ``duration_s`` (the recorded ``epoch_seconds`` summed: simulated seconds) go to
  its user attrs (:mod:`hpo.record`) as the Objective leaves them; the trial's value is the
  best reported value, as the Objective returns it.

The analysts read the study's trials only, never the table.

    >>> from hpo.config import load_study
    >>> table = Table.load(TINY)
    >>> objective = ReplayObjective(load_study("headroom"), table)
    >>> objective.facts.source, objective.data.num_classes
    ('replay', 10)
"""

from __future__ import annotations

import gzip
import json
import math
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna

from hpo.config import StudyConfig
from hpo.record import CURVE_ATTR, DURATION_ATTR, EPOCHS_ATTR, PRUNE_REASON_ATTR, DataFacts

HERE = Path(__file__).resolve().parent
TABLE = HERE / "tables" / "digits-noisy.json.gz"
TINY = HERE / "tables" / "tiny.json.gz"  # 4 configurations x 2 seeds x 6 epochs: tests
REPLAY_ATTR = "replay"  # benchmark-only: {"config": i, "seed": s} of the run that answered


class Table:
    """A learning-curve table: its recipe, configurations and runs (see bench_table)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.recipe, self.configs = doc["recipe"], doc["configs"]
        self.runs: dict[int, list[dict[str, Any]]] = {}
        for run in doc["runs"]:
            self.runs.setdefault(run["config"], []).append(run)
        for runs in self.runs.values():
            runs.sort(key=lambda r: r["seed"])
        self.grid: dict[str, list[Any]] = self.recipe["grid"]

    @classmethod
    def load(cls, path: Path | str) -> Table:
        with gzip.open(path, "rt") as fh:
            return cls(json.load(fh))

    def nearest(self, params: dict[str, Any]) -> int:
        """The index of the recorded configuration equal (or nearest) to ``params``."""
        def distance(config: dict[str, Any]) -> float:
            d = 0.0
            for name, levels in self.grid.items():
                a, b = params.get(name), config.get(name)
                if a == b:
                    continue
                if a in levels and b in levels and not isinstance(a, str):
                    d += abs(levels.index(a) - levels.index(b)) / max(len(levels) - 1, 1)
                else:
                    d += 1.0
            return d

        recorded = [i for i in range(len(self.configs)) if i in self.runs]
        return min(recorded, key=lambda i: distance(self.configs[i]))

    def run(self, config: int, pick: int) -> dict[str, Any]:
        runs = self.runs[config]
        return runs[pick % len(runs)]


class ReplayObjective:
    """A stand-in for :class:`hpo.objective.Objective` that answers trials from a table."""

    def __init__(self, cfg: StudyConfig, table: Table) -> None:
        self.cfg, self.table = cfg, table
        task = table.recipe["task"]
        self.checkpoints = None  # run_study sets it; nothing is trained, nothing is saved
        self.test_data = None
        n_classes = task.get("n_classes", 10)
        self.data = SimpleNamespace(num_classes=n_classes)  # run_study tells llm-tpe chance
        self.facts = DataFacts(classes=[str(c) for c in range(n_classes)],
                               image_size=task["image_size"], channels=3, mean=[0.0] * 3,
                               std=[1.0] * 3, source="replay",
                               fingerprint=f"replay {task['name']} {table.recipe['code_version']}")

    def __call__(self, trial: optuna.Trial) -> float:
        params = self.cfg.space.suggest(trial)
        config = self.table.nearest(params)
        pick = random.Random(f"{self.cfg.seed}:{trial.number}").randrange(1 << 30)
        run = self.table.run(config, pick)
        trial.set_user_attr(REPLAY_ATTR, {"config": config, "seed": run["seed"]})
        recorded = run["curve"]
        metric = self.cfg.objective.metric
        n = min(len(recorded.get(metric, [])), self.cfg.budget.max_epochs)
        curve: dict[str, list[float]] = {}
        reported: list[float] = []
        for epoch in range(1, n + 1):
            for k, values in recorded.items():
                if len(values) >= epoch:
                    curve.setdefault(k, []).append(values[epoch - 1])
            value = recorded[metric][epoch - 1]
            if value is None or not math.isfinite(value):
                _stop(trial, curve, epoch, f"diverged: non-finite {metric} at epoch {epoch}")
            reported.append(value)
            trial.report(value, epoch)
            if epoch < n and trial.should_prune():
                _stop(trial, curve, epoch, f"pruner stopped it at epoch {epoch}")
        if run.get("diverged") or not reported:
            _stop(trial, curve, n, f"diverged: {run.get('diverged')}")
        _store(trial, curve, n)
        return max(reported) if self.cfg.objective.direction == "maximize" else min(reported)


def _store(trial: optuna.Trial, curve: dict[str, list[float]], epoch: int) -> None:
    """The curve, epochs and simulated seconds, as the Objective stores them (here once per
    trial, not per epoch: a replayed epoch costs storage writes only)."""
    trial.set_user_attr(CURVE_ATTR, curve)
    trial.set_user_attr(EPOCHS_ATTR, epoch)
    trial.set_user_attr(DURATION_ATTR, round(sum(curve.get("epoch_seconds", [])), 3))


def _stop(trial: optuna.Trial, curve: dict[str, list[float]], epoch: int, reason: str) -> None:
    _store(trial, curve, epoch)
    trial.set_user_attr(PRUNE_REASON_ATTR, reason)
    raise optuna.TrialPruned(reason)


def replay_study(cfg: StudyConfig, storage_url: str, table: Table | None = None,
                 **kwargs: Any) -> optuna.Study:
    """:func:`hpo.runner.run_study` with trials answered from ``table`` (default: TABLE)."""
    from hpo.runner import run_study

    table = table or Table.load(TABLE)
    return run_study(cfg, storage_url, objective=lambda c: ReplayObjective(c, table), **kwargs)
