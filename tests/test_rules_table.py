"""The rules analyst as a table of rules.

Two parts:

* a characterisation test: :class:`RulesAnalyst` over realistic histories (one per rule, a few
  where several rules fire at once, other seeds, salts and quotas) gives exactly the analysis
  captured in :data:`EXPECTED` (captured from the analyst before its rules became a table), and
  each analysis has the diagnoses a practitioner would expect for that history;
* one test per rule of :data:`hpo.sampler.rules.RULES`, calling the rule on its own.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
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


def test_plateau_explores_around_the_runners_up_with_the_analysis_generator() -> None:
    h = plateau_history()
    a, b = Situation.of(h, random.Random(5)), Situation.of(h, random.Random(5))
    found = plateau(h, a)
    assert found.diagnoses[0].summary == "no improvement in the last 9 finished trials"
    assert [p.expected_effect for p in found.proposals] == [
        "a val_accuracy close to or better than trial 1",
        "a val_accuracy close to or better than trial 2"]
    assert found == plateau(h, b) and a.rng.random() == b.rng.random()
    assert a.rng.random() != random.Random(5).random()  # the proposals drew from it
    assert fire(plateau, exploring_history()) is None


def test_no_failure_pattern_says_exploring_then_converging() -> None:
    found = fire(no_failure_pattern, converging_history())
    (d,) = found.diagnoses
    assert d.state == "converging" and found.proposals == []
    assert d.evidence[0].trial == 23 and d.evidence[0].note == "best of 24 scored trials"
    (d,) = fire(no_failure_pattern, empty_history()).diagnoses
    assert d.state == "exploring" and d.evidence == []


# -- the analyses captured from RulesAnalyst before its rules became a table ----------------
EXPECTED: dict[str, dict[str, Any]] = {}

EXPECTED['diverged'] = \
{'summary': 'Rule-based analysis of 2 finished trials: diverging.',
 'diagnosis': [{'state': 'diverging',
                'summary': '1 of the last 2 trials diverged (NaN/inf) at lr 0.2..0.2',
                'evidence': [{'trial': 1,
                              'metric': 'reason',
                              'note': 'diverged: non-finite train_loss at epoch 3'}]}],
 'proposals': [{'params': {'lr': 0.005,
                           'weight_decay': 0.0001,
                           'warmup_epochs': 1,
                           'head_dropout': 0.1},
                'rationale': 'Diverging runs (NaN/inf): a calmer start: lr 0.01 -> 0.005; warmup '
                             '(warmup_epochs 1).',
                'expected_effect': 'no NaN; stable loss from the first epochs',
                'risk': 'slower convergence if lr ends up too low',
                'confidence': 0.7,
                'alternatives': [{'params': {'lr': 0.001,
                                             'weight_decay': 0.0001,
                                             'warmup_epochs': 0,
                                             'head_dropout': 0.1},
                                  'note': 'a 10x lower lr, more conservative'}]},
               {'params': {'lr': 0.02489089650525684,
                           'weight_decay': 0.0006053831846922494,
                           'warmup_epochs': 0,
                           'head_dropout': 0.05973552075312496},
                'rationale': 'Local refinement around trial 0.',
                'expected_effect': 'a val_accuracy close to or better than trial 0',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'lr': 0.2551127482394885,
                           'weight_decay': 0.00020624973160040855,
                           'warmup_epochs': 0,
                           'head_dropout': 0.11199643393562571},
                'rationale': 'Local refinement around trial 1.',
                'expected_effect': 'a val_accuracy close to or better than trial 1',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3}]}

EXPECTED['near_chance'] = \
{'summary': 'Rule-based analysis of 3 finished trials: unstable, underfitting, range_edge, '
            'range_edge.',
 'diagnosis': [{'state': 'unstable',
                'summary': '2 recent trials stayed near chance (0.1) with a high lr',
                'evidence': [{'trial': 1,
                              'metric': 'val_accuracy',
                              'value': 0.12,
                              'note': 'lr 0.2'},
                             {'trial': 2,
                              'metric': 'val_accuracy',
                              'value': 0.11,
                              'note': 'lr 0.25'},
                             {'trial': 1,
                              'metric': 'val_accuracy',
                              'value': 0.12,
                              'note': 'best after 4 epochs'}]},
               {'state': 'underfitting',
                'summary': 'the best trial was still improving at its last epoch',
                'evidence': [{'trial': 0,
                              'metric': 'val_accuracy',
                              'value': 0.9,
                              'note': 'best at the last epoch (3)'}]},
               {'state': 'range_edge',
                'summary': '2 of the top 3 trials have lr near its high bound 0.3: consider '
                           'widening the range',
                'evidence': [{'trial': 0, 'metric': 'lr', 'value': 0.003},
                             {'trial': 1, 'metric': 'lr', 'value': 0.2},
                             {'trial': 2, 'metric': 'lr', 'value': 0.25}]},
               {'state': 'range_edge',
                'summary': '3 of the top 3 trials have warmup_epochs near its low bound 0: '
                           'consider widening the range',
                'evidence': [{'trial': 0, 'metric': 'warmup_epochs', 'value': 0.0},
                             {'trial': 1, 'metric': 'warmup_epochs', 'value': 0.0},
                             {'trial': 2, 'metric': 'warmup_epochs', 'value': 0.0}]}],
 'proposals': [{'params': {'lr': 0.003,
                           'weight_decay': 0.0001,
                           'warmup_epochs': 1,
                           'head_dropout': 0.1},
                'rationale': 'Accuracy near chance after several epochs at a high lr means the '
                             'optimiser overshoots; lower lr to 0.003 and warm up (warmup_epochs '
                             '1).',
                'expected_effect': 'val_accuracy leaves chance level within the first epochs',
                'risk': 'too low an lr underfits within the epoch budget',
                'confidence': 0.6,
                'alternatives': [{'params': {'lr': 0.009000000000000001},
                                  'note': 'a milder reduction'}]},
               {'params': {'lr': 0.0045000000000000005,
                           'weight_decay': 5e-05,
                           'warmup_epochs': 0,
                           'head_dropout': 0.1},
                'rationale': 'Still improving at the end of the budget: learn faster.',
                'expected_effect': 'better val_accuracy within the same epochs',
                'risk': 'instability if lr is already near its limit',
                'confidence': 0.4,
                'alternatives': [{'note': 'more epochs (outside the search space)'}]},
               {'params': {'lr': 0.07535659294528738,
                           'weight_decay': 0.0001,
                           'warmup_epochs': 0,
                           'head_dropout': 0.1},
                'rationale': 'The best values of lr press against its high bound; probe closer to '
                             'it.',
                'expected_effect': 'find whether lr beyond the bound would help',
                'risk': 'the optimum may already be inside the range',
                'confidence': 0.45,
                'alternatives': [{'params': {'lr': 0.3}, 'note': 'exactly at the bound'}]}]}

EXPECTED['overfitting'] = \
{'summary': 'Rule-based analysis of 3 finished trials: overfitting.',
 'diagnosis': [{'state': 'overfitting',
                'summary': 'validation loss turns up while training loss keeps falling',
                'evidence': [{'trial': 0,
                              'metric': 'val_loss',
                              'value': 0.8,
                              'note': 'min 0.5 at epoch 3 of 6'}]}],
 'proposals': [{'params': {'lr': 0.01,
                           'weight_decay': 0.00030000000000000003,
                           'warmup_epochs': 0,
                           'head_dropout': 0.2},
                'rationale': 'A growing train/val gap in the best trials: add regularisation.',
                'expected_effect': 'lower final val loss, smaller gap',
                'risk': 'too much regularisation underfits',
                'alternatives': [{'params': {'lr': 0.006999999999999999,
                                             'weight_decay': 0.0001,
                                             'warmup_epochs': 0,
                                             'head_dropout': 0.1},
                                  'note': 'a lower lr instead of more regularisation'}]},
               {'params': {'lr': 0.007224694899551697,
                           'weight_decay': 0.00011296573196632212,
                           'warmup_epochs': 0,
                           'head_dropout': 0.027716760336641347},
                'rationale': 'Local refinement around trial 0.',
                'expected_effect': 'a val_accuracy close to or better than trial 0',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'lr': 0.001769425576203761,
                           'weight_decay': 0.000700966888428458,
                           'warmup_epochs': 1,
                           'head_dropout': 0.10698939905176642},
                'rationale': 'Local refinement around trial 1.',
                'expected_effect': 'a val_accuracy close to or better than trial 1',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3}]}

EXPECTED['underfitting'] = \
{'summary': 'Rule-based analysis of 2 finished trials: underfitting.',
 'diagnosis': [{'state': 'underfitting',
                'summary': 'the best trial was still improving at its last epoch',
                'evidence': [{'trial': 1,
                              'metric': 'val_accuracy',
                              'value': 0.8,
                              'note': 'best at the last epoch (4)'}]}],
 'proposals': [{'params': {'lr': 0.0045000000000000005,
                           'weight_decay': 5e-05,
                           'warmup_epochs': 0,
                           'head_dropout': 0.3},
                'rationale': 'Still improving at the end of the budget: learn faster.',
                'expected_effect': 'better val_accuracy within the same epochs',
                'risk': 'instability if lr is already near its limit',
                'confidence': 0.4,
                'alternatives': [{'note': 'more epochs (outside the search space)'}]},
               {'params': {'lr': 0.0074672689515770455,
                           'weight_decay': 0.0006053831846922494,
                           'warmup_epochs': 0,
                           'head_dropout': 0.25973552075312495},
                'rationale': 'Local refinement around trial 1.',
                'expected_effect': 'a val_accuracy close to or better than trial 1',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'lr': 0.001275563741197443,
                           'weight_decay': 0.00020624973160040855,
                           'warmup_epochs': 0,
                           'head_dropout': 0.11199643393562571},
                'rationale': 'Local refinement around trial 0.',
                'expected_effect': 'a val_accuracy close to or better than trial 0',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3}]}

EXPECTED['range_edge'] = \
{'summary': 'Rule-based analysis of 8 finished trials: range_edge, range_edge.',
 'diagnosis': [{'state': 'range_edge',
                'summary': '3 of the top 3 trials have lr near its high bound 0.3: consider '
                           'widening the range',
                'evidence': [{'trial': 0, 'metric': 'lr', 'value': 0.28},
                             {'trial': 1, 'metric': 'lr', 'value': 0.279},
                             {'trial': 2, 'metric': 'lr', 'value': 0.278}]},
               {'state': 'range_edge',
                'summary': '3 of the top 3 trials have warmup_epochs near its low bound 0: '
                           'consider widening the range',
                'evidence': [{'trial': 0, 'metric': 'warmup_epochs', 'value': 0.0},
                             {'trial': 1, 'metric': 'warmup_epochs', 'value': 0.0},
                             {'trial': 2, 'metric': 'warmup_epochs', 'value': 0.0}]}],
 'proposals': [{'params': {'lr': 0.29385446072136256,
                           'weight_decay': 0.0001,
                           'warmup_epochs': 0,
                           'head_dropout': 0.1},
                'rationale': 'The best values of lr press against its high bound; probe closer to '
                             'it.',
                'expected_effect': 'find whether lr beyond the bound would help',
                'risk': 'the optimum may already be inside the range',
                'confidence': 0.45,
                'alternatives': [{'params': {'lr': 0.3}, 'note': 'exactly at the bound'}]},
               {'params': {'lr': 0.28,
                           'weight_decay': 0.0001,
                           'warmup_epochs': 0,
                           'head_dropout': 0.1},
                'rationale': 'The best values of warmup_epochs press against its low bound; probe '
                             'closer to it.',
                'expected_effect': 'find whether warmup_epochs beyond the bound would help',
                'risk': 'the optimum may already be inside the range',
                'confidence': 0.45,
                'alternatives': [{'params': {'warmup_epochs': 0}, 'note': 'exactly at the bound'}]},
               {'params': {'lr': 0.2334808944266828,
                           'weight_decay': 2.9189245901038428e-05,
                           'warmup_epochs': 0,
                           'head_dropout': 0.07763102078233726},
                'rationale': 'Local refinement around trial 0.',
                'expected_effect': 'a val_accuracy close to or better than trial 0',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3}]}

EXPECTED['plateau'] = \
{'summary': 'Rule-based analysis of 10 finished trials: plateau.',
 'diagnosis': [{'state': 'plateau',
                'summary': 'no improvement in the last 9 finished trials',
                'evidence': [{'trial': 0,
                              'metric': 'val_accuracy',
                              'value': 0.9,
                              'note': 'best so far, 9 trials ago'}]}],
 'proposals': [{'params': {'lr': 0.008338381473703473,
                           'weight_decay': 0.0019256172751739595,
                           'warmup_epochs': 2,
                           'head_dropout': 0.22613576208985764},
                'rationale': 'Plateau: explore around a runner-up.',
                'expected_effect': 'a val_accuracy close to or better than trial 1',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'lr': 0.001776922182762001,
                           'weight_decay': 3.633104985733582e-05,
                           'warmup_epochs': 2,
                           'head_dropout': 0.354451576382085},
                'rationale': 'Plateau: explore around a runner-up.',
                'expected_effect': 'a val_accuracy close to or better than trial 2',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'lr': 0.014624832007292081,
                           'weight_decay': 5.1090454427272606e-05,
                           'warmup_epochs': 0,
                           'head_dropout': 0.023902381400503464},
                'rationale': 'Local refinement around trial 0.',
                'expected_effect': 'a val_accuracy close to or better than trial 0',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3}]}

EXPECTED['exploring'] = \
{'summary': 'Rule-based analysis of 5 finished trials: exploring.',
 'diagnosis': [{'state': 'exploring',
                'summary': 'no failure pattern; refine around the best trials',
                'evidence': [{'trial': 4,
                              'metric': 'val_accuracy',
                              'value': 0.8,
                              'note': 'best of 5 scored trials'}]}],
 'proposals': [{'params': {'lr': 0.014509013863799507,
                           'weight_decay': 0.00016793054344243577,
                           'warmup_epochs': 1,
                           'head_dropout': 0.23104131963064523},
                'rationale': 'Local refinement around trial 4.',
                'expected_effect': 'a val_accuracy close to or better than trial 4',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'lr': 0.0018695796914642215,
                           'weight_decay': 8.135527751346424e-05,
                           'warmup_epochs': 2,
                           'head_dropout': 0.38615666435303186},
                'rationale': 'Local refinement around trial 3.',
                'expected_effect': 'a val_accuracy close to or better than trial 3',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'lr': 0.004182764563529978,
                           'weight_decay': 0.0018955080630297006,
                           'warmup_epochs': 2,
                           'head_dropout': 0.1645198815200813},
                'rationale': 'Local refinement around trial 2.',
                'expected_effect': 'a val_accuracy close to or better than trial 2',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3}]}

EXPECTED['exploring_seed3_salt2_quota5'] = \
{'summary': 'Rule-based analysis of 5 finished trials: exploring.',
 'diagnosis': [{'state': 'exploring',
                'summary': 'no failure pattern; refine around the best trials',
                'evidence': [{'trial': 4,
                              'metric': 'val_accuracy',
                              'value': 0.8,
                              'note': 'best of 5 scored trials'}]}],
 'proposals': [{'params': {'lr': 0.03063308401635824,
                           'weight_decay': 0.0004281636498862114,
                           'warmup_epochs': 1,
                           'head_dropout': 0.227210999427287},
                'rationale': 'Local refinement around trial 4.',
                'expected_effect': 'a val_accuracy close to or better than trial 4',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'lr': 0.0014377722466678668,
                           'weight_decay': 0.00010690912587675162,
                           'warmup_epochs': 2,
                           'head_dropout': 0.45021433711888886},
                'rationale': 'Local refinement around trial 3.',
                'expected_effect': 'a val_accuracy close to or better than trial 3',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'lr': 0.012629689725096614,
                           'weight_decay': 0.00028174375644021373,
                           'warmup_epochs': 2,
                           'head_dropout': 0.17922828662785625},
                'rationale': 'Local refinement around trial 2.',
                'expected_effect': 'a val_accuracy close to or better than trial 2',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'lr': 0.010701521226878053,
                           'weight_decay': 0.008776804301979567,
                           'warmup_epochs': 0,
                           'head_dropout': 0.17835586416815372},
                'rationale': 'Local refinement around trial 4.',
                'expected_effect': 'a val_accuracy close to or better than trial 4',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'lr': 0.0023979156827046368,
                           'weight_decay': 0.0016602533531943804,
                           'warmup_epochs': 1,
                           'head_dropout': 0.307577898926695},
                'rationale': 'Local refinement around trial 3.',
                'expected_effect': 'a val_accuracy close to or better than trial 3',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3}]}

EXPECTED['converging'] = \
{'summary': 'Rule-based analysis of 24 finished trials: converging.',
 'diagnosis': [{'state': 'converging',
                'summary': 'no failure pattern; refine around the best trials',
                'evidence': [{'trial': 23,
                              'metric': 'val_accuracy',
                              'value': 0.96,
                              'note': 'best of 24 scored trials'}]}],
 'proposals': [{'params': {'lr': 0.0006222218268325728,
                           'weight_decay': 0.005032223176085431,
                           'warmup_epochs': 1,
                           'head_dropout': 0.4445092032857588},
                'rationale': 'Local refinement around trial 23.',
                'expected_effect': 'a val_accuracy close to or better than trial 23',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'lr': 0.0012756370134853977,
                           'weight_decay': 0.00017541001579940313,
                           'warmup_epochs': 2,
                           'head_dropout': 0.14545288808307183},
                'rationale': 'Local refinement around trial 22.',
                'expected_effect': 'a val_accuracy close to or better than trial 22',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'lr': 0.003946030681090762,
                           'weight_decay': 2.1356656018800558e-05,
                           'warmup_epochs': 2,
                           'head_dropout': 0.18571292051822724},
                'rationale': 'Local refinement around trial 21.',
                'expected_effect': 'a val_accuracy close to or better than trial 21',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3}]}

EXPECTED['empty'] = \
{'summary': 'Rule-based analysis of 0 finished trials: exploring.',
 'diagnosis': [{'state': 'exploring',
                'summary': 'no failure pattern; refine around the best trials'}],
 'proposals': [{'params': {'lr': 0.005477225575051664,
                           'weight_decay': 0.0003162277660168384,
                           'warmup_epochs': 2,
                           'head_dropout': 0.25},
                'rationale': 'No scored trial yet: try the middle of the space.',
                'confidence': 0.1}]}

EXPECTED['only_failures'] = \
{'summary': 'Rule-based analysis of 2 finished trials: diverging.',
 'diagnosis': [{'state': 'diverging',
                'summary': '2 of the last 2 trials diverged (NaN/inf) at lr 0.1..0.2',
                'evidence': [{'trial': 0, 'metric': 'reason', 'note': 'NaN loss'},
                             {'trial': 1,
                              'metric': 'reason',
                              'note': 'RuntimeError: loss is inf'}]}],
 'proposals': [{'params': {'lr': 0.03333333333333333,
                           'weight_decay': 0.0001,
                           'warmup_epochs': 1,
                           'head_dropout': 0.1},
                'rationale': 'Diverging runs (NaN/inf): a calmer start: lr 0.2 -> 0.0333; warmup '
                             '(warmup_epochs 1).',
                'expected_effect': 'no NaN; stable loss from the first epochs',
                'risk': 'slower convergence if lr ends up too low',
                'confidence': 0.7,
                'alternatives': [{'params': {'lr': 0.020000000000000004,
                                             'weight_decay': 0.0001,
                                             'warmup_epochs': 0,
                                             'head_dropout': 0.1},
                                  'note': 'a 10x lower lr, more conservative'}]}]}

EXPECTED['minimize_aliases_overfitting'] = \
{'summary': 'Rule-based analysis of 3 finished trials: overfitting.',
 'diagnosis': [{'state': 'overfitting',
                'summary': 'validation loss turns up while training loss keeps falling',
                'evidence': [{'trial': 0,
                              'metric': 'val_loss',
                              'value': 0.8,
                              'note': 'min 0.5 at epoch 3 of 6'}]}],
 'proposals': [{'params': {'learning_rate': 0.001,
                           'min_lr': 1e-06,
                           'wd': 0.00030000000000000003,
                           'dropout_rate': 0.2,
                           'smoothing': 0.1,
                           'drop_path_rate': 0.15000000000000002,
                           'batch_size': 64,
                           'optimizer': 'adamw'},
                'rationale': 'A growing train/val gap in the best trials: add regularisation.',
                'expected_effect': 'lower final val loss, smaller gap',
                'risk': 'too much regularisation underfits',
                'alternatives': [{'params': {'learning_rate': 0.0007,
                                             'min_lr': 1e-06,
                                             'wd': 0.0001,
                                             'dropout_rate': 0.1,
                                             'smoothing': 0.05,
                                             'drop_path_rate': 0.1,
                                             'batch_size': 64,
                                             'optimizer': 'adamw'},
                                  'note': 'a lower lr instead of more regularisation'}]},
               {'params': {'learning_rate': 0.0007554259850003246,
                           'min_lr': 1.049974346450377e-06,
                           'wd': 5.131110062237326e-05,
                           'dropout_rate': 0.027716760336641347,
                           'smoothing': 0.0642550277856579,
                           'drop_path_rate': 0.15074185022101458,
                           'batch_size': 69,
                           'optimizer': 'adamw'},
                'rationale': 'Local refinement around trial 0.',
                'expected_effect': 'a val_loss close to or better than trial 0',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'learning_rate': 0.003304133977943469,
                           'min_lr': 9.920417298996524e-07,
                           'wd': 2.619007987129701e-05,
                           'dropout_rate': 0.0434416408392572,
                           'smoothing': 0.07797891979340943,
                           'drop_path_rate': 0.1315197709856071,
                           'batch_size': 74,
                           'optimizer': 'sgd'},
                'rationale': 'Local refinement around trial 1.',
                'expected_effect': 'a val_loss close to or better than trial 1',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3}]}

EXPECTED['minimize_underfitting'] = \
{'summary': 'Rule-based analysis of 2 finished trials: underfitting.',
 'diagnosis': [{'state': 'underfitting',
                'summary': 'the best trial was still improving at its last epoch',
                'evidence': [{'trial': 0,
                              'metric': 'val_loss',
                              'value': 0.55,
                              'note': 'best at the last epoch (4)'}]}],
 'proposals': [{'params': {'learning_rate': 0.0015,
                           'min_lr': 1e-06,
                           'wd': 5e-05,
                           'dropout_rate': 0.1,
                           'smoothing': 0.05,
                           'drop_path_rate': 0.1,
                           'batch_size': 32,
                           'optimizer': 'adamw'},
                'rationale': 'Still improving at the end of the budget: learn faster.',
                'expected_effect': 'better val_loss within the same epochs',
                'risk': 'instability if lr is already near its limit',
                'confidence': 0.4,
                'alternatives': [{'note': 'more epochs (outside the search space)'}]},
               {'params': {'learning_rate': 0.0021963265840857322,
                           'min_lr': 2.0550014917744975e-06,
                           'wd': 4.7876592331565734e-05,
                           'dropout_rate': 0.05973552075312496,
                           'smoothing': 0.05607986652606581,
                           'drop_path_rate': 0.11886360352363415,
                           'batch_size': 26,
                           'optimizer': 'adamw'},
                'rationale': 'Local refinement around trial 0.',
                'expected_effect': 'a val_loss close to or better than trial 0',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'learning_rate': 0.0011802624862273935,
                           'min_lr': 7.792072915233798e-07,
                           'wd': 0.0014629407653176604,
                           'dropout_rate': 0.08703957625865422,
                           'smoothing': 0.06989866829045238,
                           'drop_path_rate': 0.09077716873956371,
                           'batch_size': 61,
                           'optimizer': 'adamw'},
                'rationale': 'Local refinement around trial 1.',
                'expected_effect': 'a val_loss close to or better than trial 1',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3}]}

EXPECTED['mobilenet_diverged'] = \
{'summary': 'Rule-based analysis of 3 finished trials: diverging.',
 'diagnosis': [{'state': 'diverging',
                'summary': '1 of the last 3 trials diverged (NaN/inf) at lr 0.02..0.02',
                'evidence': [{'trial': 2,
                              'metric': 'reason',
                              'note': 'diverged: non-finite train loss at epoch 2'}]}],
 'proposals': [{'params': {'batch_size': 64,
                           'head_dropout': 0.2,
                           'label_smoothing': 0.1,
                           'lr': 0.001,
                           'optimizer': 'sgd',
                           'momentum': 0.9,
                           'warmup': 'linear',
                           'weight_decay': 0.0001,
                           'warmup_epochs': 1.125},
                'rationale': 'Diverging runs (NaN/inf): a calmer start: lr 0.002 -> 0.001; warmup '
                             '(warmup linear, warmup_epochs 1.12).',
                'expected_effect': 'no NaN; stable loss from the first epochs',
                'risk': 'slower convergence if lr ends up too low',
                'confidence': 0.7,
                'alternatives': [{'params': {'batch_size': 64,
                                             'head_dropout': 0.2,
                                             'label_smoothing': 0.1,
                                             'lr': 0.0002,
                                             'optimizer': 'sgd',
                                             'momentum': 0.9,
                                             'warmup': 'none',
                                             'weight_decay': 0.0001},
                                  'note': 'a 10x lower lr, more conservative'}]},
               {'params': {'batch_size': 64,
                           'head_dropout': 0.2422823503938446,
                           'label_smoothing': 0.11767681696037985,
                           'lr': 0.0023751417372004204,
                           'optimizer': 'sgd',
                           'warmup': 'none',
                           'weight_decay': 6.191414823371498e-05},
                'rationale': 'Local refinement around trial 0.',
                'expected_effect': 'a val_accuracy close to or better than trial 0',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'batch_size': 128,
                           'head_dropout': 0.2057287090908052,
                           'label_smoothing': 0.08566654908686021,
                           'lr': 0.0009209307646975401,
                           'optimizer': 'adamw',
                           'warmup': 'none',
                           'weight_decay': 5.3943866194465874e-05},
                'rationale': 'Local refinement around trial 1.',
                'expected_effect': 'a val_accuracy close to or better than trial 1',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'batch_size': 64,
                           'head_dropout': 0.2167027314926254,
                           'label_smoothing': 0.1278457054884292,
                           'lr': 0.02715955722620373,
                           'optimizer': 'sgd',
                           'warmup': 'none',
                           'weight_decay': 1.6209179033238894e-05},
                'rationale': 'Local refinement around trial 2.',
                'expected_effect': 'a val_accuracy close to or better than trial 2',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3}]}

EXPECTED['warmup_on_numeric_clip'] = \
{'summary': 'Rule-based analysis of 2 finished trials: diverging.',
 'diagnosis': [{'state': 'diverging',
                'summary': '1 of the last 2 trials diverged (NaN/inf) at lr 0.1..0.1',
                'evidence': [{'trial': 1,
                              'metric': 'reason',
                              'note': 'non-finite value in curve'}]}],
 'proposals': [{'params': {'lr': 0.005,
                           'warmup': 'cosine',
                           'warmup_steps': 200,
                           'grad_clip_norm': 2.5,
                           'x': 1.0},
                'rationale': 'Diverging runs (NaN/inf): a calmer start: lr 0.01 -> 0.005; warmup '
                             '(warmup_steps 200); clip gradients (grad_clip_norm 2.5).',
                'expected_effect': 'no NaN; stable loss from the first epochs',
                'risk': 'slower convergence if lr ends up too low',
                'confidence': 0.7,
                'alternatives': [{'params': {'lr': 0.001,
                                             'warmup': 'cosine',
                                             'warmup_steps': 100,
                                             'grad_clip_norm': 5.0,
                                             'x': 1.0},
                                  'note': 'a 10x lower lr, more conservative'}]},
               {'params': {'lr': 0.02489089650525684,
                           'warmup': 'cosine',
                           'warmup_steps': 163,
                           'grad_clip_norm': 4.559775714108577,
                           'x': 0.8084903480722101},
                'rationale': 'Local refinement around trial 0.',
                'expected_effect': 'a val_accuracy close to or better than trial 0',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'lr': 0.07507674068871507,
                           'warmup': 'cosine',
                           'warmup_steps': 132,
                           'grad_clip_norm': 6.16927806599316,
                           'x': 1.912544519160985},
                'rationale': 'Local refinement around trial 1.',
                'expected_effect': 'a val_accuracy close to or better than trial 1',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3}]}

EXPECTED['no_learning_rate'] = \
{'summary': 'Rule-based analysis of 2 finished trials: diverging.',
 'diagnosis': [{'state': 'diverging',
                'summary': '1 of the last 2 trials diverged (NaN/inf)',
                'evidence': [{'trial': 1, 'metric': 'reason', 'note': 'Diverged: loss exploded'}]}],
 'proposals': [{'params': {'x': 0.0, 'y': 5},
                'rationale': 'Diverging runs (NaN/inf): a calmer start: no change possible in this '
                             'space.',
                'expected_effect': 'no NaN; stable loss from the first epochs',
                'risk': 'slower convergence if lr ends up too low',
                'confidence': 0.7,
                'alternatives': [{'params': {'x': 0.0, 'y': 5},
                                  'note': 'a 10x lower lr, more conservative'}]},
               {'params': {'x': 1.1389897275187835, 'y': 7},
                'rationale': 'Local refinement around trial 0.',
                'expected_effect': 'a val_accuracy close to or better than trial 0',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'x': 3.3602464629063498, 'y': 0},
                'rationale': 'Local refinement around trial 1.',
                'expected_effect': 'a val_accuracy close to or better than trial 1',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3}]}

EXPECTED['everything'] = \
{'summary': 'Rule-based analysis of 14 finished trials: diverging, unstable, overfitting, '
            'range_edge, range_edge, plateau.',
 'diagnosis': [{'state': 'diverging',
                'summary': '2 of the last 12 trials diverged (NaN/inf) at lr 0.29..0.29',
                'evidence': [{'trial': 6, 'metric': 'reason', 'note': 'diverged'},
                             {'trial': 7, 'metric': 'reason', 'note': 'diverged'}]},
               {'state': 'unstable',
                'summary': '2 recent trials stayed near chance (0.1) with a high lr',
                'evidence': [{'trial': 4,
                              'metric': 'val_accuracy',
                              'value': 0.12,
                              'note': 'lr 0.2'},
                             {'trial': 5,
                              'metric': 'val_accuracy',
                              'value': 0.11,
                              'note': 'lr 0.25'},
                             {'trial': 4,
                              'metric': 'val_accuracy',
                              'value': 0.12,
                              'note': 'best after 4 epochs'}]},
               {'state': 'overfitting',
                'summary': 'validation loss turns up while training loss keeps falling',
                'evidence': [{'trial': 0,
                              'metric': 'val_loss',
                              'value': 0.8,
                              'note': 'min 0.5 at epoch 3 of 6'}]},
               {'state': 'range_edge',
                'summary': '3 of the top 3 trials have lr near its high bound 0.3: consider '
                           'widening the range',
                'evidence': [{'trial': 0, 'metric': 'lr', 'value': 0.28},
                             {'trial': 1, 'metric': 'lr', 'value': 0.279},
                             {'trial': 2, 'metric': 'lr', 'value': 0.278}]},
               {'state': 'range_edge',
                'summary': '3 of the top 3 trials have warmup_epochs near its low bound 0: '
                           'consider widening the range',
                'evidence': [{'trial': 0, 'metric': 'warmup_epochs', 'value': 0.0},
                             {'trial': 1, 'metric': 'warmup_epochs', 'value': 0.0},
                             {'trial': 2, 'metric': 'warmup_epochs', 'value': 0.0}]},
               {'state': 'plateau',
                'summary': 'no improvement in the last 13 finished trials',
                'evidence': [{'trial': 0,
                              'metric': 'val_accuracy',
                              'value': 0.9,
                              'note': 'best so far, 13 trials ago'}]}],
 'proposals': [{'params': {'lr': 0.09666666666666666,
                           'weight_decay': 0.0001,
                           'warmup_epochs': 1,
                           'head_dropout': 0.45},
                'rationale': 'Diverging runs (NaN/inf): a calmer start: lr 0.28 -> 0.0967; warmup '
                             '(warmup_epochs 1).',
                'expected_effect': 'no NaN; stable loss from the first epochs',
                'risk': 'slower convergence if lr ends up too low',
                'confidence': 0.7,
                'alternatives': [{'params': {'lr': 0.028000000000000004,
                                             'weight_decay': 0.0001,
                                             'warmup_epochs': 0,
                                             'head_dropout': 0.45},
                                  'note': 'a 10x lower lr, more conservative'}]},
               {'params': {'lr': 0.02,
                           'weight_decay': 0.0001,
                           'warmup_epochs': 1,
                           'head_dropout': 0.45},
                'rationale': 'Accuracy near chance after several epochs at a high lr means the '
                             'optimiser overshoots; lower lr to 0.02 and warm up (warmup_epochs '
                             '1).',
                'expected_effect': 'val_accuracy leaves chance level within the first epochs',
                'risk': 'too low an lr underfits within the epoch budget',
                'confidence': 0.6,
                'alternatives': [{'params': {'lr': 0.06}, 'note': 'a milder reduction'}]},
               {'params': {'lr': 0.28,
                           'weight_decay': 0.00030000000000000003,
                           'warmup_epochs': 0,
                           'head_dropout': 0.5},
                'rationale': 'A growing train/val gap in the best trials: add regularisation.',
                'expected_effect': 'lower final val loss, smaller gap',
                'risk': 'too much regularisation underfits',
                'alternatives': [{'params': {'lr': 0.196,
                                             'weight_decay': 0.0001,
                                             'warmup_epochs': 0,
                                             'head_dropout': 0.45},
                                  'note': 'a lower lr instead of more regularisation'}]},
               {'params': {'lr': 0.29385446072136256,
                           'weight_decay': 0.0001,
                           'warmup_epochs': 0,
                           'head_dropout': 0.45},
                'rationale': 'The best values of lr press against its high bound; probe closer to '
                             'it.',
                'expected_effect': 'find whether lr beyond the bound would help',
                'risk': 'the optimum may already be inside the range',
                'confidence': 0.45,
                'alternatives': [{'params': {'lr': 0.3}, 'note': 'exactly at the bound'}]},
               {'params': {'lr': 0.28,
                           'weight_decay': 0.0001,
                           'warmup_epochs': 0,
                           'head_dropout': 0.45},
                'rationale': 'The best values of warmup_epochs press against its low bound; probe '
                             'closer to it.',
                'expected_effect': 'find whether warmup_epochs beyond the bound would help',
                'risk': 'the optimum may already be inside the range',
                'confidence': 0.45,
                'alternatives': [{'params': {'warmup_epochs': 0}, 'note': 'exactly at the bound'}]},
               {'params': {'lr': 0.30000000000000004,
                           'weight_decay': 5.945817490475454e-05,
                           'warmup_epochs': 0,
                           'head_dropout': 0.4321873695736913},
                'rationale': 'Plateau: explore around a runner-up.',
                'expected_effect': 'a val_accuracy close to or better than trial 1',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'lr': 0.05124732330747986,
                           'weight_decay': 5.055583494840963e-05,
                           'warmup_epochs': 0,
                           'head_dropout': 0.32455796151408345},
                'rationale': 'Plateau: explore around a runner-up.',
                'expected_effect': 'a val_accuracy close to or better than trial 2',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'lr': 0.2206009994853107,
                           'weight_decay': 0.000300364863858218,
                           'warmup_epochs': 0,
                           'head_dropout': 0.46543302712746165},
                'rationale': 'Local refinement around trial 0.',
                'expected_effect': 'a val_accuracy close to or better than trial 0',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'lr': 0.16702968510563235,
                           'weight_decay': 6.0645229707646404e-05,
                           'warmup_epochs': 0,
                           'head_dropout': 0.46687089872898985},
                'rationale': 'Local refinement around trial 1.',
                'expected_effect': 'a val_accuracy close to or better than trial 1',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3},
               {'params': {'lr': 0.30000000000000004,
                           'weight_decay': 0.00021895928906825703,
                           'warmup_epochs': 0,
                           'head_dropout': 0.36785304041384514},
                'rationale': 'Local refinement around trial 2.',
                'expected_effect': 'a val_accuracy close to or better than trial 2',
                'risk': 'small: a nearby configuration',
                'confidence': 0.3}]}

EXPECTED['everything_quota2'] = \
{'summary': 'Rule-based analysis of 14 finished trials: diverging, unstable, overfitting, '
            'range_edge, range_edge, plateau.',
 'diagnosis': [{'state': 'diverging',
                'summary': '2 of the last 12 trials diverged (NaN/inf) at lr 0.29..0.29',
                'evidence': [{'trial': 6, 'metric': 'reason', 'note': 'diverged'},
                             {'trial': 7, 'metric': 'reason', 'note': 'diverged'}]},
               {'state': 'unstable',
                'summary': '2 recent trials stayed near chance (0.1) with a high lr',
                'evidence': [{'trial': 4,
                              'metric': 'val_accuracy',
                              'value': 0.12,
                              'note': 'lr 0.2'},
                             {'trial': 5,
                              'metric': 'val_accuracy',
                              'value': 0.11,
                              'note': 'lr 0.25'},
                             {'trial': 4,
                              'metric': 'val_accuracy',
                              'value': 0.12,
                              'note': 'best after 4 epochs'}]},
               {'state': 'overfitting',
                'summary': 'validation loss turns up while training loss keeps falling',
                'evidence': [{'trial': 0,
                              'metric': 'val_loss',
                              'value': 0.8,
                              'note': 'min 0.5 at epoch 3 of 6'}]},
               {'state': 'range_edge',
                'summary': '3 of the top 3 trials have lr near its high bound 0.3: consider '
                           'widening the range',
                'evidence': [{'trial': 0, 'metric': 'lr', 'value': 0.28},
                             {'trial': 1, 'metric': 'lr', 'value': 0.279},
                             {'trial': 2, 'metric': 'lr', 'value': 0.278}]},
               {'state': 'range_edge',
                'summary': '3 of the top 3 trials have warmup_epochs near its low bound 0: '
                           'consider widening the range',
                'evidence': [{'trial': 0, 'metric': 'warmup_epochs', 'value': 0.0},
                             {'trial': 1, 'metric': 'warmup_epochs', 'value': 0.0},
                             {'trial': 2, 'metric': 'warmup_epochs', 'value': 0.0}]},
               {'state': 'plateau',
                'summary': 'no improvement in the last 13 finished trials',
                'evidence': [{'trial': 0,
                              'metric': 'val_accuracy',
                              'value': 0.9,
                              'note': 'best so far, 13 trials ago'}]}],
 'proposals': [{'params': {'lr': 0.09666666666666666,
                           'weight_decay': 0.0001,
                           'warmup_epochs': 1,
                           'head_dropout': 0.45},
                'rationale': 'Diverging runs (NaN/inf): a calmer start: lr 0.28 -> 0.0967; warmup '
                             '(warmup_epochs 1).',
                'expected_effect': 'no NaN; stable loss from the first epochs',
                'risk': 'slower convergence if lr ends up too low',
                'confidence': 0.7,
                'alternatives': [{'params': {'lr': 0.028000000000000004,
                                             'weight_decay': 0.0001,
                                             'warmup_epochs': 0,
                                             'head_dropout': 0.45},
                                  'note': 'a 10x lower lr, more conservative'}]},
               {'params': {'lr': 0.02,
                           'weight_decay': 0.0001,
                           'warmup_epochs': 1,
                           'head_dropout': 0.45},
                'rationale': 'Accuracy near chance after several epochs at a high lr means the '
                             'optimiser overshoots; lower lr to 0.02 and warm up (warmup_epochs '
                             '1).',
                'expected_effect': 'val_accuracy leaves chance level within the first epochs',
                'risk': 'too low an lr underfits within the epoch budget',
                'confidence': 0.6,
                'alternatives': [{'params': {'lr': 0.06}, 'note': 'a milder reduction'}]}]}
