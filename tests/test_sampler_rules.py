"""The rules analyst on hand-made histories: each rule fires on the curves it is meant for."""

from __future__ import annotations

import pytest
from conftest import REPO

from hpo.config import load_study
from hpo.sampler.history import History, TrialRecord
from hpo.sampler.rules import RulesAnalyst

SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
         "weight_decay": {"type": "float", "low": 1e-6, "high": 0.1, "log": True},
         "warmup_epochs": {"type": "int", "low": 0, "high": 3},
         "head_dropout": {"type": "float", "low": 0.0, "high": 0.5}}
BASE = {"lr": 0.01, "weight_decay": 1e-4, "warmup_epochs": 0, "head_dropout": 0.1}


def trial(n, value, curve=None, state="COMPLETE", reason=None, **params):
    return TrialRecord(number=n, state=state, value=value, params={**BASE, **params},
                       curve=curve or {}, reason=reason)


def history(trials, **context):
    return History(direction="maximize", metric="val_accuracy", space=SPACE, trials=trials,
                   context=context)


def states(reply):
    return [d.state for d in reply.diagnosis]


def test_nan_lowers_lr_and_adds_warmup():
    h = history([trial(0, 0.8, lr=0.01), trial(1, 0.1, state="PRUNED", lr=0.2,
                                                 reason="diverged: non-finite train_loss")])
    reply = RulesAnalyst().analyse(h)
    assert states(reply)[0] == "diverging"
    p = reply.proposals[0].params
    assert p["lr"] < 0.01 and p["warmup_epochs"] == 1


def test_near_chance_with_high_lr():
    stuck = {"val_accuracy": [0.1, 0.11, 0.1, 0.12]}
    h = history([trial(0, 0.9, {"val_accuracy": [0.5, 0.8, 0.9]}, lr=0.003),
                 trial(1, 0.12, stuck, lr=0.2), trial(2, 0.11, stuck, lr=0.25)], n_classes=10)
    reply = RulesAnalyst().analyse(h)
    assert "unstable" in states(reply)
    p = next(p for p in reply.proposals if "chance" in p.rationale)
    assert p.params["lr"] <= 0.003 and p.params["warmup_epochs"] == 1


def test_growing_gap_adds_regularisation():
    curve = {"val_accuracy": [0.6, 0.8, 0.85, 0.84, 0.83, 0.82],
             "val_loss": [1.0, 0.6, 0.5, 0.6, 0.7, 0.8],
             "train_loss": [1.1, 0.6, 0.4, 0.2, 0.1, 0.05]}
    h = history([trial(0, 0.85, curve), trial(1, 0.7, curve, lr=0.001)])
    reply = RulesAnalyst().analyse(h)
    assert "overfitting" in states(reply)
    p = next(p for p in reply.proposals if "regularisation" in p.rationale).params
    assert p["weight_decay"] > BASE["weight_decay"] and p["head_dropout"] > BASE["head_dropout"]


def test_range_edge_probes_toward_it():
    trials = [trial(i, 0.9 - i / 100, lr=0.28 - i / 1000) for i in range(4)]
    trials += [trial(10 + i, 0.5, lr=0.001) for i in range(4)]
    reply = RulesAnalyst().analyse(history(trials))
    assert "range_edge" in states(reply)
    edge = next(d for d in reply.diagnosis if d.state == "range_edge")
    assert "lr" in edge.summary and "widening" in edge.summary


def test_deterministic_and_seeded():
    trials = [trial(i, 0.5 + i / 50, lr=0.001 * (i + 1)) for i in range(6)]
    a = RulesAnalyst(seed=1).analyse(history(trials))
    b = RulesAnalyst(seed=1).analyse(history(trials))
    c = RulesAnalyst(seed=2).analyse(history(trials))
    assert a == b and a != c


# -- the shipped spaces: the divergence remedy must survive SearchSpace.check -----------------
def shipped(name):
    """The search space of the shipped study ``name``, as the sampler hands it to analysts."""
    space = load_study(str(REPO / "studies" / f"{name}.yaml")).space
    return space, {n: p.model_dump(exclude_defaults=True) | {"type": p.type}
                   for n, p in space.params.items()}


def diverged_history(space_dict, best_params):
    """Trial 0 trained fine with warmup off; trial 1 (10x the lr) went NaN."""
    return History(direction="maximize", metric="val_accuracy", space=space_dict, trials=[
        TrialRecord(number=0, state="COMPLETE", value=0.8, params=best_params,
                    curve={"val_accuracy": [0.5, 0.7, 0.8]}),
        TrialRecord(number=1, state="PRUNED", value=0.1,
                    params={**best_params, "lr": best_params["lr"] * 10},
                    curve={"train_loss": [2.3, float("nan")]},
                    reason="diverged: non-finite train loss at epoch 2")])


def calm_best(space):
    """A valid point of ``space`` with warmup and clipping off (what the test starts from)."""
    raw = {}
    for name, p in space.params.items():
        if p.type == "categorical":
            off = [c for c in p.choices if c in (None, "none", False)]
            raw[name] = off[0] if off and ("warmup" in name or "clip" in name) else p.choices[0]
        else:
            raw[name] = (p.low * p.high) ** 0.5 if p.log else (p.low + p.high) / 2
    best, _ = space.check(raw)
    assert space.check(best)[1] == []
    return best


@pytest.mark.parametrize("name", ["mobilenet", "efficientnet"])
def test_divergence_remedy_on_shipped_spaces_turns_warmup_on(name):
    space, space_dict = shipped(name)
    best = calm_best(space)
    reply = RulesAnalyst().analyse(diverged_history(space_dict, best))
    assert states(reply)[0] == "diverging"
    proposal = reply.proposals[0]
    clean, corrections = space.check(proposal.params, fill=best)
    assert corrections == [], corrections  # nothing the remedy set is dropped again
    assert clean["lr"] < best["lr"]
    switches = [n for n, p in space.params.items() if "warmup" in n and p.type == "categorical"]
    lengths = [n for n, p in space.params.items() if "warmup" in n and p.type != "categorical"]
    assert switches and lengths  # the shape the remedy is for: a switch + a conditional length
    for n in switches:
        assert clean[n] not in (None, "none", False)
        assert clean[n] == "linear" or "linear" not in space.params[n].choices
    for n in lengths:
        if space.params[n].active(clean):
            p = space.params[n]
            assert p.low < clean[n] <= p.high and clean[n] >= (best.get(n) or p.low)
    assert any(n in clean for n in lengths)
    clips = [n for n in space.params if "clip" in n]
    for n in clips:
        assert clean[n] not in (None, 0) and clean[n] != best[n]
    assert "warmup" in proposal.rationale
    assert ("clip" in proposal.rationale) == bool(clips)


def test_divergence_remedy_lengthens_warmup_and_clips_when_the_space_has_them():
    space_dict = {"lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
                  "warmup": {"type": "categorical", "choices": ["none", "cosine"]},
                  "warmup_steps": {"type": "int", "low": 0, "high": 400,
                                   "condition": {"warmup": "cosine"}},
                  "grad_clip_norm": {"type": "categorical", "choices": [None, 1.0, 5.0]}}
    best = {"lr": 0.01, "warmup": "cosine", "warmup_steps": 100, "grad_clip_norm": 5.0}
    p = RulesAnalyst().analyse(diverged_history(space_dict, best)).proposals[0].params
    assert p["warmup"] == "cosine" and p["warmup_steps"] == 200 and p["grad_clip_norm"] == 1.0
    off = {**best, "warmup": "none", "grad_clip_norm": None}
    del off["warmup_steps"]
    p = RulesAnalyst().analyse(diverged_history(space_dict, off)).proposals[0].params
    assert p["warmup"] == "cosine" and p["warmup_steps"] == 200 and p["grad_clip_norm"] == 1.0


# -- parameters are found by exact name (issue 11, item 6) -------------------------------------
def test_min_lr_declared_before_lr_is_not_taken_for_the_learning_rate(tmp_path):
    """A real SQLite study with the sampler's rules analyst: the trials with a high ``lr``
    diverge; the remedy lowers ``lr`` and leaves ``min_lr`` as the best trial had it. (With
    substring matching, ``min_lr`` came first and was taken for the learning rate.) The
    remedy's alternative is stored as data: a complete, checked set of values."""
    import math

    import optuna

    from hpo.sampler import LLMTPEOptions, LLMTPESampler, load_analyses
    from hpo.space import SearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.model_validate({"params": {
        "min_lr": {"type": "float", "low": 1e-7, "high": 1e-4, "log": True},
        "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        "x": {"type": "float", "low": -5.0, "high": 5.0}}})

    def objective(t):
        p = space.suggest(t)
        if p["lr"] > 0.1:  # as hpo.objective reports a NaN loss
            t.set_user_attr("prune_reason", "diverged: non-finite train loss at epoch 2")
            raise optuna.TrialPruned()
        return (math.log10(p["lr"]) + 2.5) ** 2 + (p["x"] - 1) ** 2

    opts = LLMTPEOptions(background=False, analyst="rules", every_n_trials=3)
    study = optuna.create_study(study_name="minlr", storage=f"sqlite:///{tmp_path / 'r.db'}",
                                sampler=LLMTPESampler(space, opts, seed=0, n_startup_trials=3))
    for lr in (0.5, 0.003, 0.3):
        study.enqueue_trial({"min_lr": 1e-6, "lr": lr, "x": 1.0})
    study.optimize(objective, n_trials=3)
    (a,) = load_analyses(study)
    assert a["analyst"] == "rules" and a["diagnosis"][0]["state"] == "diverging"
    assert a["best_params"]["lr"] == 0.003
    p = a["proposals"][0]
    changes = {c["param"]: c["change"] for c in p["diff"]}
    assert changes.get("lr") == "decrease" and "min_lr" not in changes, p["diff"]
    assert p["params"]["min_lr"] == pytest.approx(1e-6) and p["params"]["lr"] < 0.003
    (alt,) = p["alternatives"]
    assert alt["note"] == "a 10x lower lr, more conservative"
    assert set(alt["params"]) == {"min_lr", "lr", "x"}  # data, complete: not Python text
    assert alt["params"]["lr"] == pytest.approx(0.0003) and alt["corrections"] == []


def test_rules_find_roles_by_exact_name_or_documented_alias():
    from hpo.sampler.rules import ALIASES, _find

    space = {"min_lr": {"type": "float"}, "lr_decay": {"type": "float"},
             "dropout_schedule": {"type": "categorical"}, "head_dropout": {"type": "float"},
             "learning_rate": {"type": "float"}}
    assert _find(space, "lr") == "learning_rate"  # an alias, never min_lr or lr_decay
    assert _find(space, "dropout") == "head_dropout"
    assert _find(space, "weight_decay") is None and _find(space, "drop_path") is None
    assert all(role in names for role, names in ALIASES.items())
