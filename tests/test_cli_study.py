"""`hpo study` end to end through the real CLI process, into a temporary SQLite file."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState


def test_smoke_study_runs_then_resumes_without_duplicates(tmp_path: Path, hpo_cli) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    first = hpo_cli("study", "smoke", "--storage", url, "--no-progress")
    assert first.returncode == 0, first.stderr
    assert "0 of 3 trials finished" in first.stdout
    assert first.stdout.count("COMPLETE") + first.stdout.count("PRUNED") >= 3
    assert "best trial" in first.stdout and "best params" in first.stdout

    study = optuna.load_study(study_name="smoke", storage=url)
    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(trials) == 3
    for t in trials:
        assert len(t.user_attrs["curve"]["val_accuracy"]) == t.user_attrs["epochs"]
        assert t.user_attrs["duration_s"] > 0
        assert set(t.intermediate_values) == set(range(1, t.user_attrs["epochs"] + 1))
    assert study.user_attrs["hpo_config"]["name"] == "smoke"

    again = hpo_cli("study", "smoke", "--storage", url, "--no-progress")
    assert again.returncode == 0, again.stderr
    assert "3 of 3 trials finished" in again.stdout
    assert len(optuna.load_study(study_name="smoke", storage=url).trials) == 3

    more = hpo_cli("study", "smoke", "--storage", url, "--no-progress", "--n-trials", "4")
    assert more.returncode == 0, more.stderr
    numbers = [t.number for t in optuna.load_study(study_name="smoke", storage=url).trials]
    assert numbers == [0, 1, 2, 3]


def test_diverging_trial_is_pruned_with_its_reason(tmp_path: Path, hpo_cli) -> None:
    (tmp_path / "studies").mkdir()
    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "nan.yaml").write_text(yaml.safe_dump(
        {"params": {"optimizer": {"type": "categorical", "choices": ["sgd"]}}}))
    (tmp_path / "studies" / "nan.yaml").write_text(yaml.safe_dump({
        "model": {"name": "mobilenetv3_small_050", "image_size": 16},
        "search_space": "nan",
        "train": {"lr": 1.0e6, "momentum": 0.9, "batch_size": 256},
        "budget": {"n_trials": 1, "max_epochs": 1},
    }))
    url = f"sqlite:///{tmp_path / 'nan.db'}"
    result = hpo_cli("study", str(tmp_path / "studies" / "nan.yaml"), "--storage", url,
                     "--no-progress")
    assert result.returncode == 0, result.stderr
    (trial,) = optuna.load_study(study_name="nan", storage=url).trials
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["prune_reason"].startswith("diverged: non-finite train loss")
    assert "diverged" in result.stdout


def test_bad_config_exits_2_and_writes_nothing(tmp_path: Path, hpo_cli) -> None:
    (tmp_path / "studies").mkdir()
    bad = tmp_path / "studies" / "bad.yaml"
    bad.write_text(yaml.safe_dump({"search_space": "smoke", "pruner": {"type": "asha"}}))
    db = tmp_path / "never.db"
    result = hpo_cli("study", str(bad), "--storage", f"sqlite:///{db}")
    assert result.returncode == 2
    assert f"{bad}: pruner.type = 'asha' is invalid; allowed: one of" in result.stderr
    assert "Traceback" not in result.stderr
    assert not db.exists()


def test_bad_storage_url_exits_2_without_leaking_password(tmp_path: Path, hpo_cli) -> None:
    result = hpo_cli("study", "smoke", "--storage", "oracle://me:hunter2@db/x")
    assert result.returncode == 2
    assert "hunter2" not in result.stderr and "***" in result.stderr
    assert "sqlite:///PATH" in result.stderr
