"""The replay objective (benchmarks/replay.py): a trial answered from a learning-curve table
reports the recorded curve epoch by epoch, a real pruner stops it, and samplers run through
``run_study`` unchanged. Uses the committed tiny table (4 configurations x 2 seeds x 6 epochs)."""

from __future__ import annotations

import optuna
import pytest

from benchmarks.replay import REPLAY_ATTR, TINY, ReplayObjective, Table, replay_study
from hpo.config import load_study
from hpo.record import (
    CURVE_ATTR,
    DURATION_ATTR,
    EPOCHS_ATTR,
    PRUNE_REASON_ATTR,
    UNRUN_PROPOSAL_ATTR,
)


@pytest.fixture(scope="module")
def table() -> Table:
    return Table.load(TINY)


def study_cfg(sampler: dict, pruner: dict | None = None, seed: int = 0):
    cfg = load_study("headroom")
    return cfg.model_copy(update={
        "seed": seed, "sampler": type(cfg.sampler).model_validate(sampler),
        "pruner": type(cfg.pruner).model_validate(pruner or {"type": "none"})})


def test_trials_report_the_recorded_curve(tmp_path, table) -> None:
    study = replay_study(study_cfg({"type": "random"}), f"sqlite:///{tmp_path / 'r.db'}",
                         table=table, n_trials=6, show_progress=False, echo=lambda _: None)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)
    for t in trials:
        used = t.user_attrs[REPLAY_ATTR]
        assert table.configs[used["config"]] == table.configs[table.nearest(t.params)]
        run = next(r for r in table.runs[used["config"]] if r["seed"] == used["seed"])
        acc = run["curve"]["val_accuracy"]
        assert [t.intermediate_values[e] for e in sorted(t.intermediate_values)] == acc
        assert t.value == max(acc)
        assert t.user_attrs[CURVE_ATTR] == run["curve"]
        assert t.user_attrs[EPOCHS_ATTR] == len(acc)
        assert t.user_attrs[DURATION_ATTR] == round(sum(run["curve"]["epoch_seconds"]), 3)


def test_a_pruner_stops_the_replay(table) -> None:
    cfg = study_cfg({"type": "random"})
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.ThresholdPruner(lower=1.01))
    study.optimize(ReplayObjective(cfg, table), n_trials=2)
    for t in study.trials:
        assert t.state.name == "PRUNED" and list(t.intermediate_values) == [1]
        assert t.user_attrs[EPOCHS_ATTR] == 1
        assert t.user_attrs[PRUNE_REASON_ATTR] == "pruner stopped it at epoch 1"


def test_tables_nearest_configuration(table) -> None:
    first = table.configs[0]
    assert table.nearest(first) == 0
    moved = {**first, "lr": next(v for v in table.grid["lr"] if v != first["lr"])}
    assert table.nearest(moved) in table.runs  # always a recorded configuration


@pytest.mark.parametrize("sampler", [
    {"type": "tpe", "n_startup_trials": 3},
    {"type": "llm-tpe", "analyst": "rules", "n_startup_trials": 3, "every_n_trials": 3},
])
def test_samplers_run_ten_trials_through_run_study(tmp_path, table, sampler) -> None:
    study = replay_study(study_cfg(sampler, {"type": "median", "n_startup_trials": 2,
                                             "n_warmup_steps": 1}),
                         f"sqlite:///{tmp_path / 's.db'}", table=table, n_trials=10,
                         show_progress=False, echo=lambda _: None)
    trials = study.get_trials(deepcopy=False)
    ran = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(ran) == 10
    assert all(t.user_attrs[EPOCHS_ATTR] >= 1 for t in ran)
    # a proposal still waiting when the budget was reached is closed, not run (FAIL, marked)
    assert all(t.system_attrs.get(UNRUN_PROPOSAL_ATTR) for t in trials if t not in ran)
    if sampler["type"] == "llm-tpe":
        from hpo.sampler import load_analyses

        assert load_analyses(study), "the rules analyst ran on replayed trials"
