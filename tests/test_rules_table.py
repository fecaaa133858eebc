"""The rules analyst as a table of rules.

Two parts:

* a characterisation test: :class:`RulesAnalyst` over realistic histories (one per rule, a few
  where several rules fire at once, other seeds, salts and quotas) gives exactly the analysis
  captured in tests/data/rules_analyses.json (captured from the analyst before its rules became a table;
  the cases with a plateau recaptured when the plateau rule stepped aside for TPE), and
  each analysis has the diagnoses a practitioner would expect for that history;
* one test per rule of :data:`hpo.sampler.rules.RULES`, calling the rule on its own.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hpo.sampler.analysis import Reply
from hpo.sampler.history import History, TrialRecord
from hpo.sampler.rules import (
    RULES,
    RulesAnalyst,
    Situation,
    divergence,
    near_chance,
    no_failure_pattern,
    overfitting,
    plateau,
    range_edges,
    underfitting,
)

SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
         "weight_decay": {"type": "float", "low": 1e-6, "high": 0.1, "log": True},
         "warmup_epochs": {"type": "int", "low": 0, "high": 3},
         "head_dropout": {"type": "float", "low": 0.0, "high": 0.5}}
BASE = {"lr": 0.01, "weight_decay": 1e-4, "warmup_epochs": 0, "head_dropout": 0.1}

# the shipped mobilenet space, as the sampler hands it to analysts (a switch + conditional length)
MOBILENET = {
    "batch_size": {"choices": [32, 64, 128], "type": "categorical"},
    "head_dropout": {"high": 0.5, "low": 0.0, "type": "float"},
    "label_smoothing": {"high": 0.2, "low": 0.0, "type": "float"},
    "lr": {"high": 0.03, "log": True, "low": 0.0001, "type": "float"},
    "momentum": {"condition": {"optimizer": "sgd"}, "high": 0.99, "low": 0.8, "type": "float"},
    "optimizer": {"choices": ["adamw", "sgd"], "type": "categorical"},
    "warmup": {"choices": ["none", "linear"], "type": "categorical"},
    "warmup_epochs": {"condition": {"warmup": "linear"}, "high": 2.0, "low": 0.25,
                      "type": "float"},
    "weight_decay": {"high": 0.1, "log": True, "low": 1e-06, "type": "float"}}
MOBILENET_BEST = {"batch_size": 64, "head_dropout": 0.2, "label_smoothing": 0.1, "lr": 0.002,
                  "optimizer": "sgd", "momentum": 0.9, "warmup": "none",
                  "weight_decay": 1e-4}

# aliases everywhere: learning_rate, wd, dropout_rate, smoothing, drop_path_rate
ALIASED = {"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
           "min_lr": {"type": "float", "low": 1e-7, "high": 1e-5, "log": True},
           "wd": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
           "dropout_rate": {"type": "float", "low": 0.0, "high": 0.5},
           "smoothing": {"type": "float", "low": 0.0, "high": 0.2},
           "drop_path_rate": {"type": "float", "low": 0.0, "high": 0.3},
           "batch_size": {"type": "int", "low": 16, "high": 256, "log": True},
           "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]}}
ALIASED_BASE = {"learning_rate": 1e-3, "min_lr": 1e-6, "wd": 1e-4, "dropout_rate": 0.1,
                "smoothing": 0.05, "drop_path_rate": 0.1, "batch_size": 64, "optimizer": "adamw"}

# curves
RISING = {"val_accuracy": [0.5, 0.6, 0.7, 0.8]}
SETTLED = {"val_accuracy": [0.5, 0.8, 0.85, 0.85, 0.85]}
STUCK = {"val_accuracy": [0.1, 0.11, 0.1, 0.12]}
GAP = {"val_accuracy": [0.6, 0.8, 0.85, 0.84, 0.83, 0.82],
       "val_loss": [1.0, 0.6, 0.5, 0.6, 0.7, 0.8],
       "train_loss": [1.1, 0.6, 0.4, 0.2, 0.1, 0.05]}
NAN_LOSS = {"train_loss": [2.3, 1.9, float("nan")]}


def trial(n: int, value: float | None, curve: dict[str, list[float]] | None = None,
          state: str = "COMPLETE", reason: str | None = None, base: dict[str, Any] = BASE,
          **params: Any) -> TrialRecord:
    return TrialRecord(number=n, state=state, value=value, params={**base, **params},
                       curve=curve or {}, reason=reason)


def history(trials: list[TrialRecord], space: dict[str, dict[str, Any]] = SPACE,
            direction: str = "maximize", metric: str = "val_accuracy",
            **context: Any) -> History:
    return History(direction=direction, metric=metric, space=space, trials=trials,
                   context=context)


def spread(n: int, seed: int, lo: float = 0.2, hi: float = 0.8) -> list[dict[str, Any]]:
    """``n`` configurations of :data:`SPACE` away from its bounds (positions in [lo, hi])."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        u = [rng.uniform(lo, hi) for _ in range(4)]
        out.append({"lr": 1e-4 * (0.3 / 1e-4) ** u[0], "weight_decay": 1e-6 * 1e5 ** u[1],
                    "warmup_epochs": round(3 * u[2]), "head_dropout": 0.5 * u[3]})
    return out


# -- the histories ------------------------------------------------------------------------------
def diverged_history() -> History:
    return history([trial(0, 0.8, SETTLED, lr=0.01),
                    trial(1, 0.1, NAN_LOSS, state="PRUNED", lr=0.2,
                          reason="diverged: non-finite train_loss at epoch 3")])


def near_chance_history() -> History:
    return history([trial(0, 0.9, {"val_accuracy": [0.5, 0.8, 0.9]}, lr=0.003),
                    trial(1, 0.12, STUCK, lr=0.2), trial(2, 0.11, STUCK, lr=0.25)], n_classes=10)


def overfitting_history() -> History:
    return history([trial(0, 0.85, GAP), trial(1, 0.7, GAP, lr=0.001, warmup_epochs=1),
                    trial(2, 0.6, SETTLED, lr=0.0005, weight_decay=1e-3, warmup_epochs=2)])


def underfitting_history() -> History:
    return history([trial(0, 0.7, {"val_accuracy": [0.5, 0.6, 0.7, 0.7]}, lr=0.001),
                    trial(1, 0.8, RISING, lr=0.003, head_dropout=0.3)])


def range_edge_history() -> History:
    trials = [trial(i, 0.9 - i / 100, SETTLED, lr=0.28 - i / 1000) for i in range(4)]
    return history(trials + [trial(10 + i, 0.5, lr=0.001) for i in range(4)])


def plateau_history() -> History:
    trials = [trial(0, 0.9, SETTLED)]
    trials += [trial(i + 1, 0.8 - i / 100, **p) for i, p in enumerate(spread(9, seed=1))]
    return history(trials)


def exploring_history() -> History:
    return history([trial(i, 0.6 + i / 20, **p) for i, p in enumerate(spread(5, seed=2))])


def converging_history() -> History:
    return history([trial(i, 0.5 + i / 50, **p) for i, p in enumerate(spread(24, seed=3))])


def empty_history() -> History:
    return history([])


def only_failures_history() -> History:
    return history([trial(0, None, NAN_LOSS, state="FAIL", lr=0.2, reason="NaN loss"),
                    trial(1, None, NAN_LOSS, state="FAIL", lr=0.1,
                          reason="RuntimeError: loss is inf")])


def minimize_aliases_overfitting_history() -> History:
    gap = {"val_loss": GAP["val_loss"], "train_loss": GAP["train_loss"]}
    return history([trial(0, 0.5, gap, base=ALIASED_BASE),
                    trial(1, 0.55, gap, base=ALIASED_BASE, learning_rate=3e-3, optimizer="sgd"),
                    trial(2, 0.7, base=ALIASED_BASE, wd=1e-6, dropout_rate=0.0)],
                   space=ALIASED, direction="minimize", metric="val_loss")


def minimize_underfitting_history() -> History:
    falling = {"val_loss": [1.2, 0.9, 0.7, 0.55]}
    return history([trial(0, 0.55, falling, base=ALIASED_BASE, batch_size=32),
                    trial(1, 0.6, {"val_loss": [1.0, 0.6, 0.6, 0.6]}, base=ALIASED_BASE)],
                   space=ALIASED, direction="minimize", metric="val_loss")


def mobilenet_diverged_history() -> History:
    return history([trial(0, 0.8, SETTLED, base=MOBILENET_BEST),
                    trial(1, 0.7, SETTLED, base=MOBILENET_BEST, optimizer="adamw", lr=0.001),
                    trial(2, 0.1, NAN_LOSS, state="PRUNED", base=MOBILENET_BEST, lr=0.02,
                          reason="diverged: non-finite train loss at epoch 2")],
                   space=MOBILENET)


WARMUP_CLIP = {"lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
               "warmup": {"type": "categorical", "choices": ["none", "cosine"]},
               "warmup_steps": {"type": "int", "low": 0, "high": 400,
                                "condition": {"warmup": "cosine"}},
               "grad_clip_norm": {"type": "float", "low": 0.5, "high": 10.0},
               "x": {"type": "float", "low": -5.0, "high": 5.0}}


def warmup_on_numeric_clip_history() -> History:
    best = {"lr": 0.01, "warmup": "cosine", "warmup_steps": 100, "grad_clip_norm": 5.0, "x": 1.0}
    return history([trial(0, 0.8, SETTLED, base=best),
                    trial(1, 0.2, {"val_accuracy": [0.1, float("inf")]}, state="PRUNED",
                          base=best, lr=0.1)], space=WARMUP_CLIP)


def no_learning_rate_history() -> History:
    space = {"x": {"type": "float", "low": -5.0, "high": 5.0},
             "y": {"type": "int", "low": 0, "high": 10}}
    return history([trial(0, 0.5, base={"x": 0.0, "y": 5}),
                    trial(1, 0.1, state="PRUNED", base={"x": 4.0, "y": 1},
                          reason="Diverged: loss exploded")], space=space)


def everything_history() -> History:
    """Divergence, near-chance trials, a growing gap, lr at its high bound and a plateau."""
    trials = [trial(i, 0.9 - i / 100, GAP, lr=0.28 - i / 1000, head_dropout=0.45)
              for i in range(4)]
    trials += [trial(4, 0.12, STUCK, lr=0.2), trial(5, 0.11, STUCK, lr=0.25)]
    trials += [trial(6 + i, 0.3, NAN_LOSS, state="PRUNED", lr=0.29, reason="diverged")
               for i in range(2)]
    trials += [trial(8 + i, 0.5, **p) for i, p in enumerate(spread(6, seed=4))]
    return history(trials, n_classes=10)


@dataclass(frozen=True)
class Case:
    make: Callable[[], History]
    states: list[str]  # the diagnoses a practitioner expects, in the analyst's order
    seed: int = 0
    max_proposals: int = 3
    salt: int = 0

    def run(self) -> Reply:
        return RulesAnalyst(seed=self.seed, max_proposals=self.max_proposals).analyse(
            self.make(), salt=self.salt)


CASES = {
    "diverged": Case(diverged_history, ["diverging"]),
    # the best trial still rises; every top trial has a high lr and warmup_epochs 0
    "near_chance": Case(near_chance_history, ["unstable", "underfitting", "range_edge", "range_edge"]),
    "overfitting": Case(overfitting_history, ["overfitting"]),
    "underfitting": Case(underfitting_history, ["underfitting"]),
    "range_edge": Case(range_edge_history, ["range_edge", "range_edge"]),  # lr high, warmup_epochs 0
    "plateau": Case(plateau_history, ["plateau"]),
    "exploring": Case(exploring_history, ["exploring"]),
    "exploring_seed3_salt2_quota5": Case(exploring_history, ["exploring"], seed=3, max_proposals=5,
                                         salt=2),
    "converging": Case(converging_history, ["converging"]),
    "empty": Case(empty_history, ["exploring"]),
    "only_failures": Case(only_failures_history, ["diverging"]),
    "minimize_aliases_overfitting": Case(minimize_aliases_overfitting_history, ["overfitting"]),
    "minimize_underfitting": Case(minimize_underfitting_history, ["underfitting"]),
    "mobilenet_diverged": Case(mobilenet_diverged_history, ["diverging"], max_proposals=4),
    "warmup_on_numeric_clip": Case(warmup_on_numeric_clip_history, ["diverging"]),
    "no_learning_rate": Case(no_learning_rate_history, ["diverging"]),
    "everything": Case(everything_history, ["diverging", "unstable", "overfitting", "range_edge",
                                    "range_edge", "plateau"], seed=7, max_proposals=10, salt=3),
    "everything_quota2": Case(everything_history, ["diverging", "unstable", "overfitting", "range_edge",
                                           "range_edge", "plateau"], max_proposals=2),
}


# the analyses captured from RulesAnalyst before its rules became a table
EXPECTED: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "data" / "rules_analyses.json").read_text())


def dump(reply: Reply) -> dict[str, Any]:
    """The whole analysis; fields left at their defaults are left out (same equality)."""
    return reply.model_dump(exclude_defaults=True)


# -- characterisation -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", CASES)
def test_analysis_is_exactly_the_captured_one(name: str) -> None:
    assert dump(CASES[name].run()) == EXPECTED[name]


@pytest.mark.parametrize("name", CASES)
def test_analysis_diagnoses_what_the_history_shows(name: str) -> None:
    case, h = CASES[name], CASES[name].make()
    reply = case.run()
    assert [d.state for d in reply.diagnosis] == case.states
    assert reply.summary == (f"Rule-based analysis of {len(h.finished())} finished trials: "
                             f"{', '.join(case.states)}.")
    assert 1 <= len(reply.proposals) <= case.max_proposals
    assert all(d.summary for d in reply.diagnosis)
    for p in reply.proposals:
        assert p.rationale and 0 < p.confidence <= 1
        for key, value in p.params.items():
            spec = h.space[key]
            if spec["type"] == "categorical":
                assert value in spec["choices"]
            else:  # a log-scale bound can come back off by a rounding error (0.30000000000000004)
                assert spec["low"] <= value <= spec["high"] or any(
                    math.isclose(value, spec[b], rel_tol=1e-12) for b in ("low", "high")), (
                    key, value)
    assert dump(case.run()) == dump(reply)  # deterministic


def test_captured_cases_cover_every_state_the_rules_write() -> None:
    written = {s for case in CASES.values() for s in case.states}
    assert written == {"diverging", "unstable", "overfitting", "underfitting", "range_edge",
                       "plateau", "exploring", "converging"}




# -- the rules one by one -------------------------------------------------------------------------
def fire(rule: Any, h: History) -> Any:
    return rule(h, Situation.of(h))


def test_the_table_lists_the_rules_in_the_order_of_the_analysis() -> None:
    assert RULES == (divergence, near_chance, overfitting, underfitting, range_edges, plateau)
    assert all(rule.__doc__ and ">>>" in rule.__doc__ for rule in (*RULES, no_failure_pattern))


@pytest.mark.parametrize("name", CASES)
def test_analyse_puts_the_findings_of_the_rules_together_in_table_order(name: str) -> None:
    case = CASES[name]
    h = case.make()
    s = Situation.of(h, random.Random(case.seed * 1_000_003 + len(h.finished()) * 7919
                                      + case.salt))
    findings = [f for rule in RULES if (f := rule(h, s)) is not None] \
        or [no_failure_pattern(h, s)]
    reply = case.run()
    assert reply.diagnosis == [d for f in findings for d in f.diagnoses]
    proposals = [p for f in findings for p in f.proposals][: case.max_proposals]
    assert reply.proposals[: len(proposals)] == proposals
    assert all(p.rationale.startswith(("Local refinement", "No scored trial"))
               for p in reply.proposals[len(proposals):])


def test_divergence_lowers_lr_warms_up_and_offers_a_10x_lower_lr() -> None:
    found = fire(divergence, diverged_history())
    (d,) = found.diagnoses
    assert d.state == "diverging" and "at lr 0.2..0.2" in d.summary
    assert d.evidence[0].note == "diverged: non-finite train_loss at epoch 3"
    (p,) = found.proposals
    assert p.params == {**BASE, "lr": 0.005, "warmup_epochs": 1}  # 0.2 / 3 > 0.01: halved
    assert p.rationale == ("Diverging runs (NaN/inf): a calmer start: lr 0.01 -> 0.005; "
                           "warmup (warmup_epochs 1).")
    assert p.alternatives[0].params == {**BASE, "lr": pytest.approx(0.001)}
    assert fire(divergence, exploring_history()) is None


def test_divergence_tightens_a_numeric_clip_and_starts_from_a_failure_when_none_completed() -> None:
    p = fire(divergence, warmup_on_numeric_clip_history()).proposals[0]
    assert p.params["grad_clip_norm"] == 2.5 and p.params["warmup_steps"] == 200
    assert "clip gradients (grad_clip_norm 2.5)" in p.rationale
    p = fire(divergence, only_failures_history()).proposals[0]
    assert p.params["lr"] == pytest.approx(0.1 / 3)  # from the first failure: a third of 0.1
    assert fire(divergence, no_learning_rate_history()).proposals[0].rationale == (
        "Diverging runs (NaN/inf): a calmer start: no change possible in this space.")


def test_near_chance_lowers_a_high_lr_tenfold_and_warms_up() -> None:
    found = fire(near_chance, near_chance_history())
    (d,) = found.diagnoses
    assert d.state == "unstable" and d.summary.startswith("2 recent trials stayed near chance")
    assert [e.trial for e in d.evidence] == [1, 2, 1]  # the stuck trials, then t0's best
    (p,) = found.proposals
    assert p.params == {**BASE, "lr": 0.003, "warmup_epochs": 1}  # min(best lr, 0.2 / 10)
    assert p.alternatives[0].params == {"lr": pytest.approx(0.009)}
    h = near_chance_history()
    h.context = {}  # chance unknown without n_classes
    assert fire(near_chance, h) is None
    assert fire(near_chance, everything_history()) is not None
    assert fire(near_chance, diverged_history()) is None


def test_overfitting_adds_regularisation_by_alias() -> None:
    (p,) = fire(overfitting, overfitting_history()).proposals
    assert p.params == {**BASE, "weight_decay": pytest.approx(3e-4), "head_dropout": 0.2}
    assert p.alternatives[0].params["lr"] == pytest.approx(0.007)
    found = fire(overfitting, minimize_aliases_overfitting_history())
    assert found.diagnoses[0].evidence[0].note == "min 0.5 at epoch 3 of 6"
    params = found.proposals[0].params
    assert params["wd"] == pytest.approx(3e-4) and params["dropout_rate"] == pytest.approx(0.2)
    assert params["smoothing"] == pytest.approx(0.1)
    assert params["drop_path_rate"] == pytest.approx(0.15)
    assert params["learning_rate"] == 1e-3 and params["min_lr"] == 1e-6  # untouched
    assert fire(overfitting, underfitting_history()) is None


def test_underfitting_learns_faster_unless_a_top_trial_overfits() -> None:
    found = fire(underfitting, underfitting_history())
    assert found.diagnoses[0].evidence[0].note == "best at the last epoch (4)"
    (p,) = found.proposals
    assert p.params == {**BASE, "lr": pytest.approx(0.0045), "weight_decay": 5e-5,
                        "head_dropout": 0.3}
    assert p.alternatives[0].params == {} and "more epochs" in p.alternatives[0].note
    minimised = fire(underfitting, minimize_underfitting_history()).proposals[0].params
    assert minimised["learning_rate"] == pytest.approx(1.5e-3)
    assert minimised["wd"] == pytest.approx(5e-5)
    assert fire(underfitting, overfitting_history()) is None
    assert fire(underfitting, exploring_history()) is None  # no curves


def test_range_edges_probe_toward_each_bound_pressed_on() -> None:
    found = fire(range_edges, range_edge_history())
    assert [d.summary for d in found.diagnoses] == [
        "3 of the top 3 trials have lr near its high bound 0.3: consider widening the range",
        ("3 of the top 3 trials have warmup_epochs near its low bound 0: consider widening "
         "the range")]
    lr, warmup = found.proposals
    assert 0.28 < lr.params["lr"] < 0.3 and lr.alternatives[0].params == {"lr": 0.3}
    assert warmup.params["warmup_epochs"] == 0 and warmup.alternatives[0].params == {
        "warmup_epochs": 0}
    assert fire(range_edges, diverged_history()) is None  # fewer than 3 scored trials
    assert fire(range_edges, converging_history()) is None


def test_plateau_steps_aside_for_tpe_and_refinements_fill_the_quota() -> None:
    """On the replayed table the plateau's perturbations of the runners-up beat 41% of the TPE
    trials around them (RESULTS.md, replay): the rule now proposes nothing and says so."""
    h = plateau_history()
    a = Situation.of(h, random.Random(5))
    found = plateau(h, a)
    assert found.diagnoses[0].summary == ("no improvement in the last 9 finished trials; "
                                          "plateau: left to TPE's own exploration")
    assert found.proposals == []
    assert a.rng.random() == random.Random(5).random()  # it drew nothing
    reply = RulesAnalyst(max_proposals=3).analyse(h)
    assert [d.state for d in reply.diagnosis] == ["plateau"]
    assert [p.rationale for p in reply.proposals] == [
        f"Local refinement around trial {n}." for n in (0, 1, 2)]
    assert fire(plateau, exploring_history()) is None


def test_no_failure_pattern_says_exploring_then_converging() -> None:
    found = fire(no_failure_pattern, converging_history())
    (d,) = found.diagnoses
    assert d.state == "converging" and found.proposals == []
    assert d.evidence[0].trial == 23 and d.evidence[0].note == "best of 24 scored trials"
    (d,) = fire(no_failure_pattern, empty_history()).diagnoses
    assert d.state == "exploring" and d.evidence == []
