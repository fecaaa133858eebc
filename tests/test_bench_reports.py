"""The big-study generator (benchmarks/gen_big_study.py) writes a study hpo reads as its own.

A small one (200 trials: four analysis rounds) through the real ``hpo report`` CLI; the
benchmark that times the 10,000-trial ones is ``python -m benchmarks.bench_reports``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from benchmarks.gen_big_study import generate
from hpo.optuna_private import note_target
from hpo.record import ANALYSIS_ATTR, FIXED_PARAMS_ATTR, PROPOSAL_ATTR, SOURCE_ATTR
from hpo.sampler.ledger import read_entries
from hpo.sampler.store import load_analyses

TRIALS = 200


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    url = f"sqlite:///{tmp_path_factory.mktemp('big')}/big.db"
    info = generate(url, "big", trials=TRIALS, seed=0)
    generate(url, "big2", trials=60, seed=1)  # a second study in the same file
    return url, info


def test_states_curves_and_params_are_hpo_s(big: tuple[str, dict]) -> None:
    url, info = big
    study = optuna.load_study(study_name="big", storage=url)
    trials = study.get_trials()
    assert len(trials) == TRIALS == info["trials"]
    states = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE,
                                                             TrialState.PRUNED)}
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == TRIALS
    assert 0.1 * TRIALS < states[TrialState.COMPLETE] < 0.6 * TRIALS, states
    space = study.user_attrs["search_space"]["params"]
    assert study.user_attrs["hpo_config"]["sampler"]["type"] == "llm-tpe"
    for t in trials:
        assert set(t.params) <= set(space) and {"lr", "optimizer"} <= set(t.params)
        curve = t.user_attrs["curve"]
        assert set(curve) == {"train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr",
                              "epoch_seconds"}
        assert len(curve["val_accuracy"]) == t.user_attrs["epochs"] == len(t.intermediate_values)
        assert ("prune_reason" in t.user_attrs) == (t.state == TrialState.PRUNED)
        assert t.datetime_start < t.datetime_complete
    pruned_at = {t.user_attrs["epochs"] for t in trials if t.state == TrialState.PRUNED}
    assert min(pruned_at) > 2  # the pruner's warm-up: never before epoch 3


def test_analyses_proposals_ledger_and_notes(big: tuple[str, dict]) -> None:
    from optuna_dashboard import get_note

    url, info = big
    study = optuna.load_study(study_name="big", storage=url)
    analyses = load_analyses(study)
    assert [a["id"] for a in analyses] == ["every_n-0050", "every_n-0100", "every_n-0150"]
    assert all(a["analyst"] == "rules" and a["proposals"] for a in analyses)
    by_number = {t.number: t for t in study.get_trials()}
    for a in analyses:
        for i, p in enumerate(a["proposals"]):
            t = by_number[p["trial_number"]]
            assert t.user_attrs[SOURCE_ATTR] == "rules"
            assert (t.user_attrs[ANALYSIS_ATTR], t.user_attrs[PROPOSAL_ATTR]) == (a["id"], i)
            assert t.params == p["params"] == t.system_attrs[FIXED_PARAMS_ATTR]
            assert "Proposed by analysis" in get_note(note_target(study, t))
    assert info["proposal_trials"] == sum(len(a["proposals"]) for a in analyses)
    assert len(read_entries(study)) == 6  # the first rounds' LLM timeouts
    assert analyses[0]["fallback_reason"] and analyses[0]["ledger"]
    assert all(a["id"] in get_note(study) for a in analyses)  # the sampler's study note


def test_the_same_seed_writes_the_same_study(big: tuple[str, dict], tmp_path: Path) -> None:
    url, _ = big
    again = f"sqlite:///{tmp_path}/again.db"
    generate(again, "big2", trials=60, seed=1)
    a, b = (optuna.load_study(study_name="big2", storage=u).get_trials() for u in (url, again))
    assert [(t.params, t.values, t.user_attrs, t.datetime_start) for t in a] == \
           [(t.params, t.values, t.user_attrs, t.datetime_start) for t in b]


def test_hpo_report_reads_it(big: tuple[str, dict], tmp_path: Path) -> None:
    url, _ = big
    hpo = Path(sys.executable).parent / "hpo"
    proc = subprocess.run([str(hpo), "report", "big", "--storage", url, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    html = (tmp_path / "big.html").read_text()
    assert "every_n-0050" in html and html.count("Plotly.newPlot(") >= 3
