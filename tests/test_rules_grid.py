"""The rules analyst on grid spaces (categorical numeric levels) and against repeats.

On the replayed digits-noisy table (issue 13; every parameter a categorical level) the rules
proposed 180 configurations over 3 seeds and 173 were duplicates of tried ones: a remedy
could not move a categorical ``label_smoothing`` or ``lr``, and perturbations flipped few
choices. These tests pin what changed: remedies step along numeric levels, a remedy already
tried gives way to its alternative, and perturbations land on untried neighbours.
"""

from __future__ import annotations

import optuna
import pytest

from hpo.sampler.history import History, TrialRecord
from hpo.sampler.llm_tpe import LLMTPESampler
from hpo.sampler.rules import (
    RATIONALES,
    RulesAnalyst,
    Situation,
    divergence,
    near_chance,
    overfitting,
    rule_of,
    underfitting,
)
from hpo.sampler.settings import LLMTPEOptions
from hpo.space import SearchSpace

GRID = {"lr": {"type": "categorical", "choices": [0.0003, 0.001, 0.003, 0.01, 0.03]},
        "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
        "batch_size": {"type": "categorical", "choices": [32, 128]},
        "label_smoothing": {"type": "categorical", "choices": [0.0, 0.2]}}
BEST = {"lr": 0.01, "optimizer": "adamw", "batch_size": 32, "label_smoothing": 0.0}
GAP = {"val_accuracy": [0.6, 0.8, 0.85, 0.84, 0.83, 0.82],
       "val_loss": [1.0, 0.6, 0.5, 0.6, 0.7, 0.8],
       "train_loss": [1.1, 0.6, 0.4, 0.2, 0.1, 0.05]}
RISING = {"val_accuracy": [0.5, 0.6, 0.7, 0.8]}


def trial(n: int, value: float | None, curve: dict | None = None, state: str = "COMPLETE",
          reason: str | None = None, **params: object) -> TrialRecord:
    return TrialRecord(number=n, state=state, value=value, params={**BEST, **params},
                       curve=curve or {}, reason=reason)


def grid_history(trials: list[TrialRecord], **context: object) -> History:
    return History(direction="maximize", metric="val_accuracy", space=GRID, trials=trials,
                   context=context)


def fire(rule, h: History):
    return rule(h, Situation.of(h))


def test_overfitting_steps_a_grid_label_smoothing_one_level_up_and_offers_a_lower_lr() -> None:
    (p,) = fire(overfitting, grid_history([trial(0, 0.9, GAP)])).proposals
    assert p.params == {**BEST, "label_smoothing": 0.2}
    assert p.alternatives[0].params == {**BEST, "lr": 0.003}  # x0.7: the next level down


def test_underfitting_divergence_and_near_chance_move_a_grid_lr_along_its_levels() -> None:
    (p,) = fire(underfitting, grid_history([trial(0, 0.8, RISING)])).proposals
    assert p.params["lr"] == 0.03  # x1.5 of 0.01: the next level up
    h = grid_history([trial(0, 0.8), trial(1, 0.1, state="PRUNED", lr=0.03,
                                           reason="diverged: NaN")])
    p = fire(divergence, h).proposals[0]
    assert p.params["lr"] == 0.003 and p.alternatives[0].params["lr"] == 0.001
    stuck = {"val_accuracy": [0.1, 0.11, 0.1, 0.12]}
    h = grid_history([trial(0, 0.9, {"val_accuracy": [0.5, 0.9]}, lr=0.003),
                      trial(1, 0.12, stuck, lr=0.03)], n_classes=10)
    p = fire(near_chance, h).proposals[0]
    assert p.params["lr"] == 0.003  # min(best lr, 0.03 / 10) on the grid
    assert p.alternatives[0].params["lr"] in GRID["lr"]["choices"]


def test_a_remedy_already_tried_gives_way_to_its_alternative() -> None:
    h = grid_history([trial(0, 0.9, GAP), trial(1, 0.85, label_smoothing=0.2)])
    reply = RulesAnalyst(seed=0).analyse(h)
    p = next(p for p in reply.proposals if rule_of(p.rationale) == "overfitting")
    assert p.params == {**BEST, "lr": 0.003}
    assert "Tried already; instead: a lower lr" in p.rationale


def grid_trials(configs: list[dict]) -> list[TrialRecord]:
    return [trial(i, 0.9 - i / 100, **c) for i, c in enumerate(configs)]


def test_refinements_and_plateau_probes_are_untried_and_distinct() -> None:
    configs = [{}, {"lr": 0.003}, {"optimizer": "sgd"}, {"batch_size": 128},
               {"lr": 0.03}, {"lr": 0.03, "optimizer": "sgd"}, {"lr": 0.001},
               {"lr": 0.0003}, {"lr": 0.003, "optimizer": "sgd"}]
    h = grid_history(grid_trials(configs))
    tried = [t.params for t in h.trials]
    for seed in range(5):
        reply = RulesAnalyst(seed=seed, max_proposals=6).analyse(h)
        params = [p.params for p in reply.proposals]
        assert "plateau" in [d.state for d in reply.diagnosis]
        assert all(p not in tried for p in params), params
        assert len({tuple(sorted(p.items())) for p in params}) == len(params)


def test_when_every_neighbour_was_tried_the_analysis_still_proposes() -> None:
    small = {"lr": {"type": "categorical", "choices": [0.001, 0.01]},
             "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]}}
    trials = [TrialRecord(i, "COMPLETE", 0.9 - i / 10, {"lr": lr, "optimizer": o})
              for i, (lr, o) in enumerate([(0.01, "adamw"), (0.001, "adamw"), (0.01, "sgd"),
                                           (0.001, "sgd")])]
    reply = RulesAnalyst().analyse(History(space=small, trials=trials))
    assert len(reply.proposals) == 3  # repeats: the sampler marks them duplicate


def test_rule_of_names_the_rule_of_every_proposal() -> None:
    h = grid_history([trial(0, 0.9, GAP), trial(1, 0.8, lr=0.003)])
    reply = RulesAnalyst(max_proposals=4).analyse(h)
    assert [rule_of(p.rationale) for p in reply.proposals] == [
        "overfitting", "refinement", "refinement", "refinement"]
    assert set(RATIONALES) == {"divergence", "near_chance", "overfitting", "underfitting",
                               "range_edges", "plateau", "refinement"}


def test_on_a_grid_study_few_proposals_are_duplicates() -> None:
    """Through the sampler (Optuna in memory, analyses in the foreground): a 40-point grid,
    30 trials; every proposal the analyst wrote while untried neighbours were left runs."""
    space = SearchSpace.model_validate({"params": GRID})
    sampler = LLMTPESampler(space, LLMTPEOptions(every_n_trials=5, background=False,
                                                 analyst="rules"), seed=3)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(t: optuna.Trial) -> float:
        p = space.suggest(t)
        return (1 - abs(GRID["lr"]["choices"].index(p["lr"]) - 3) / 4
                + (p["optimizer"] == "adamw") / 10 + (p["label_smoothing"] > 0) / 20
                - (p["batch_size"] == 128) / 10)

    study.optimize(objective, n_trials=30)
    from hpo.optuna_private import study_system_attrs
    from hpo.record import read_analyses

    statuses = [p.status for a in read_analyses(study_system_attrs(study)) for p in a.proposals]
    assert statuses.count("enqueued") >= 6
    assert statuses.count("duplicate") <= len(statuses) // 3, statuses


@pytest.mark.parametrize("rule", [overfitting, underfitting, divergence, near_chance])
def test_a_grid_remedy_never_leaves_the_grid(rule) -> None:
    h = grid_history([trial(0, 0.9, GAP), trial(1, 0.8, RISING, lr=0.03),
                      trial(2, 0.1, {"val_accuracy": [0.1, 0.1]}, state="PRUNED", lr=0.03,
                            reason="diverged")], n_classes=10)
    found = fire(rule, h)
    for p in found.proposals if found else []:
        for name, value in p.params.items():
            assert value in GRID[name]["choices"], (rule.__name__, name, value)
