"""llm-tpe proposals respect the run's budget, and a run leaves no WAITING proposal behind.

In process (no training): an analysis enqueues at most budget - (complete + pruned + running +
waiting) trials, and one that lands after the last slot enqueues none. Through the real
``hpo study`` (tiny real trials): a run that stops with proposals still waiting finishes them as
never run (FAIL, marked, left out of the counts) and says so on its summary, or keeps them
waiting when ``sampler.keep_waiting_proposals`` asks for it.
"""

from __future__ import annotations

import optuna
import yaml
from optuna.trial import TrialState
from optuna_dashboard import get_note
from test_sampler_helpers import make_study, quadratic

from hpo.record import UNRUN_PROPOSAL_ATTR
from hpo.sampler import load_analyses
from hpo.sampler.history import from_study
from hpo.sampler.llm_tpe import UNRUN_REASON
from hpo.storage import is_lost_race

optuna.logging.set_verbosity(optuna.logging.WARNING)
USED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def test_proposals_never_exceed_the_budget_left(tmp_path):
    study = make_study(f"sqlite:///{tmp_path / 'b.db'}", every_n_trials=2, max_proposals=3,
                       max_proposal_share=1.0, context={"n_trials": 3})
    study.optimize(quadratic, n_trials=3)
    (a,) = load_analyses(study)  # after trial 1: trials 0 and 1 use 2 of the 3 slots
    statuses = [p["status"] for p in a["proposals"]]
    assert statuses.count("enqueued") == 1, statuses
    assert "over_budget" in statuses, statuses
    assert len(study.trials) == 3 and not study.get_trials(states=(TrialState.WAITING,))

    # an analysis that lands when the budget is spent enqueues nothing
    late = study.sampler.run_analysis(study, study.sampler.history(study), "manual-late",
                                      "manual")
    assert {p.status for p in late.proposals} <= {"over_budget", "duplicate"}
    assert "over_budget" in {p.status for p in late.proposals}
    assert sum(t.state in USED for t in study.get_trials()) == 3


SPACE = {"params": {
    "lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
    "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
    "momentum": {"type": "float", "low": 0.8, "high": 0.95, "condition": {"optimizer": "sgd"}},
}}


def write_study(tmp_path, keep: bool) -> str:
    (tmp_path / "studies").mkdir(exist_ok=True)
    (tmp_path / "search_spaces").mkdir(exist_ok=True)
    (tmp_path / "search_spaces" / "b.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    path = tmp_path / "studies" / "b.yaml"
    path.write_text(yaml.safe_dump({
        "seed": 0, "dataset": {"name": "digits"}, "model": {"name": "test_vit", "image_size": 16},
        "search_space": "b", "train": {"batch_size": 128}, "objective": {"metric": "val_accuracy"},
        "budget": {"n_trials": 4, "max_epochs": 1}, "pruner": {"type": "none"},
        "sampler": {"type": "llm-tpe", "analyst": "rules", "every_n_trials": 1,
                    "n_startup_trials": 1, "max_proposals": 3, "max_proposal_share": 1.0,
                    "keep_waiting_proposals": keep}}))
    return str(path)


def run_one_trial(tmp_path, hpo_cli, keep: bool):
    """One real trial (the run's --timeout ends it after the first), whose analysis enqueues
    proposals the run does not get to."""
    url = f"sqlite:///{tmp_path / 'b.db'}"
    out = hpo_cli("study", write_study(tmp_path, keep), "--storage", url, "--no-progress",
                  "--timeout", "0.01")
    assert out.returncode == 0, out.stdout + out.stderr
    study = optuna.load_study(study_name="b", storage=url)
    (a,) = load_analyses(study)
    assert a["id"] == "every_n-0001"
    mine = [t for t in study.get_trials() if t.user_attrs.get("hpo_analysis") == a["id"]]
    assert mine, a["proposals"]  # the analysis enqueued at least one trial
    return out, study, a, mine


def test_run_that_ends_drops_its_unrun_proposals(tmp_path, hpo_cli):
    out, study, a, mine = run_one_trial(tmp_path, hpo_cli, keep=False)
    assert not study.get_trials(states=(TrialState.WAITING,))
    for t in mine:  # finished unrun: FAIL, marked, with the reason; nothing ran in it
        assert t.state == TrialState.FAIL and is_lost_race(t) and not t.params
        assert t.system_attrs[UNRUN_PROPOSAL_ATTR] is True
        assert t.user_attrs["fail_reason"] == UNRUN_REASON
    dropped = [p for p in a["proposals"] if p["status"] == "dropped"]
    assert sorted(p["trial_number"] for p in dropped) == sorted(t.number for t in mine)
    assert "dropped" in get_note(study)  # the dashboard's study note says so too
    # the summary says so, and its counts leave them out (as a lost budget race)
    assert f"{len(mine)} unrun proposals dropped (sampler.keep_waiting_proposals: false)" \
        in out.stdout
    assert "trials: complete 1\n" in out.stdout and "fail" not in out.stdout.split("trials:")[-1]
    # an analyst never sees them: the history has the one trial that ran
    assert [t.number for t in from_study(study, {}).trials] == [0]


def test_keep_waiting_proposals_keeps_them_for_the_next_run(tmp_path, hpo_cli):
    out, study, a, mine = run_one_trial(tmp_path, hpo_cli, keep=True)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(t.number for t in waiting) == sorted(t.number for t in mine)
    assert all(p["status"] in ("enqueued", "duplicate", "over_budget", "capped")
               for p in a["proposals"])
    assert (f"{len(mine)} unrun proposals kept waiting (sampler.keep_waiting_proposals: "
            "true): the next run starts with them") in out.stdout
    assert f"waiting {len(mine)}" in out.stdout.split("trials:")[-1]
