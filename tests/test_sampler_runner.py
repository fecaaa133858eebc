"""llm-tpe end to end through the real study runner: real (tiny) PyTorch trials on the digits,
the rules analyst in its background thread, proposals enqueued and run by the same loop."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml
from optuna.trial import TrialState
from optuna_dashboard import get_note

from hpo.config import load_study
from hpo.runner import run_study
from hpo.sampler import load_analyses
from hpo.sampler.proposals import proposal_counts

SPACE = {"params": {
    "lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
    "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
    "momentum": {"type": "float", "low": 0.8, "high": 0.95, "condition": {"optimizer": "sgd"}},
    "warmup": {"type": "categorical", "choices": ["none", "linear"]},
    "warmup_ratio": {"type": "float", "low": 0.02, "high": 0.2,
                     "condition": {"warmup": "linear"}},
}}
STUDY = {
    "description": "llm-tpe with the rules analyst through the runner (test_vit, 16 px)",
    "seed": 0,
    "dataset": {"name": "digits"},
    "model": {"name": "test_vit", "image_size": 16},
    "search_space": "e2e",
    "train": {"batch_size": 128},
    "objective": {"metric": "val_accuracy"},
    "budget": {"n_trials": 6, "max_epochs": 1},
    "sampler": {"type": "llm-tpe", "analyst": "rules", "every_n_trials": 2,
                "n_startup_trials": 2},
    "pruner": {"type": "none"},
}


def test_llm_tpe_with_rules_through_run_study(tmp_path):
    (tmp_path / "studies").mkdir()
    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "e2e.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    path = tmp_path / "studies" / "e2e.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    cfg = load_study(str(path))
    lines: list[str] = []
    study = run_study(cfg, f"sqlite:///{tmp_path / 'hpo.db'}", show_progress=False,
                      echo=lines.append)

    trials = study.get_trials()
    finished = [t for t in trials if t.state.is_finished()]
    assert len(finished) == 6 and all(t.state == TrialState.COMPLETE for t in finished), lines
    analyses = load_analyses(study)
    ids = [a["id"] for a in analyses]
    assert ids[0] == "every_n-0002" and set(ids) <= {"every_n-0002", "every_n-0004",
                                                     "every_n-0006"}
    assert all(a["analyst"] == "rules" and a["diagnosis"] for a in analyses)
    assert study.sampler.errors == []

    # proposals were enqueued, and the runner ran them with their source and checked params
    by_id = {a["id"]: a for a in analyses}
    ran = [t for t in finished if t.user_attrs.get("hpo_source") == "rules"]
    assert ran, [(t.number, t.user_attrs.get("hpo_source")) for t in trials]
    for t in ran:
        p = by_id[t.user_attrs["hpo_analysis"]]["proposals"][t.user_attrs["hpo_proposal"]]
        assert p["status"] == "enqueued" and p["trial_number"] == t.number
        assert t.params.keys() == p["params"].keys()
        assert all(t.params[k] == pytest.approx(v) for k, v in p["params"].items())
        assert len(t.user_attrs["curve"]["val_accuracy"]) == 1  # a real training run
        note = get_note(SimpleNamespace(storage=study._storage, study=study,
                                        _trial_id=t._trial_id))
        assert "Rationale" in note
    assert "every_n-0002" in get_note(study)

    # the share cap held (waiting proposal trials included), and TPE sampled the rest
    n_prop, n_all = proposal_counts(study)
    assert 1 <= n_prop <= n_all * cfg.sampler.max_proposal_share + 1e-9
    assert sum(t.user_attrs.get("hpo_source") is None for t in finished) >= 4
