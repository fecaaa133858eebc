"""`hpo study` end to end through the real CLI process, into a temporary SQLite file."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from hpo.record import DATA_ATTR


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


def _project(root: Path, study: dict, space: dict) -> Path:
    (root / "studies").mkdir(parents=True)
    (root / "search_spaces").mkdir()
    (root / "search_spaces" / "s.yaml").write_text(yaml.safe_dump(space))
    path = root / "studies" / "s.yaml"
    path.write_text(yaml.safe_dump({"search_space": "s", **study}))
    return path


LR = {"params": {"lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True}}}


def test_unknown_model_is_a_config_error_before_any_storage_write(tmp_path: Path,
                                                                   hpo_cli) -> None:
    path = _project(tmp_path, {"model": {"name": "mobilenetv3_tiny_typo"}}, LR)
    db = tmp_path / "never.db"
    result = hpo_cli("study", str(path), "--storage", f"sqlite:///{db}")
    assert result.returncode == 2, result.stderr
    assert "mobilenetv3_tiny_typo" in result.stderr and "Traceback" not in result.stderr
    assert not db.exists()


def test_recipe_the_data_rules_out_is_a_config_error_naming_the_space(tmp_path: Path,
                                                                       hpo_cli) -> None:
    space = {"params": {"mixup_alpha": {"type": "float", "low": 0.0, "high": 0.4}}}
    path = _project(tmp_path, {"dataset": {"name": "defects", "n_per_class": 8,
                                           "multitask": True},
                               "model": {"image_size": 16},
                               "objective": {"metric": "val_mae"}}, space)
    db = tmp_path / "never.db"
    result = hpo_cli("study", str(path), "--storage", f"sqlite:///{db}")
    assert result.returncode == 2, result.stderr
    assert "s.yaml: params.mixup_alpha = 0.4 is invalid; allowed: 0 for multi-task data" \
        in result.stderr
    assert not db.exists()


def test_ema_objective_needs_ema_weights_in_every_trial(tmp_path: Path, hpo_cli) -> None:
    path = _project(tmp_path, {"objective": {"metric": "ema_val_accuracy"}}, LR)
    result = hpo_cli("study", str(path), "--storage", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 2
    assert "train.ema_decay = None is invalid; allowed: a decay in (0, 1)" in result.stderr
    space = {"params": {"ema_decay": {"type": "categorical", "choices": [None, 0.99]}}}
    other = _project(tmp_path / "b", {"objective": {"metric": "ema_val_accuracy"}}, space)
    result = hpo_cli("study", str(other), "--storage", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 2
    assert "params.ema_decay.choices = None is invalid" in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_an_invalid_combination_of_searched_values_is_pruned_with_its_reason(
        tmp_path: Path) -> None:
    from hpo.config import load_study
    from hpo.runner import run_study

    space = {"params": {"lr": {"type": "float", "low": 1.0e-4, "high": 2.0e-4},
                        "min_lr": {"type": "float", "low": 5.0e-4, "high": 9.0e-4}}}
    path = _project(tmp_path, {"model": {"image_size": 16}, "sampler": {"type": "random"},
                               "budget": {"n_trials": 1, "max_epochs": 1}}, space)
    lines: list[str] = []
    study = run_study(load_study(str(path)), f"sqlite:///{tmp_path / 'c.db'}",
                      show_progress=False, echo=lines.append)
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["prune_reason"].startswith("invalid combination: ")
    assert "min_lr" in trial.user_attrs["prune_reason"]


def test_progress_bar_counts_finished_trials_on_stderr(tmp_path: Path, capsys) -> None:
    from hpo.config import load_study
    from hpo.runner import run_study

    path = _project(tmp_path, {"model": {"image_size": 16}, "sampler": {"type": "random"},
                               "train": {"batch_size": 256},
                               "budget": {"n_trials": 2, "max_epochs": 1}}, LR)
    run_study(load_study(str(path)), f"sqlite:///{tmp_path / 'p.db'}", show_progress=True)
    out, err = capsys.readouterr()
    assert "2/2" in err and "trials:" in err  # tqdm's bar: finished of target
    assert out.count("COMPLETE") == 2 and "best trial" in out


def test_a_warm_start_password_is_never_stored_in_the_study(tmp_path: Path) -> None:
    from hpo.config import load_study
    from hpo.runner import open_study

    path = _project(tmp_path, {"sampler": {
        "type": "llm-tpe", "warm_start_from": ["postgresql://ml:hunter2@127.0.0.1:1/old#base"]}},
        LR)
    cfg = load_study(str(path))
    url = f"sqlite:///{tmp_path / 'w.db'}"
    study = open_study(cfg, url)
    stored = study.user_attrs["hpo_config"]["sampler"]["warm_start_from"]
    assert stored == ["postgresql://ml:***@127.0.0.1:1/old#base"]
    assert "hunter2" not in (tmp_path / "w.db").read_bytes().decode("latin-1")
    open_study(cfg, url)  # the same local file still joins its own study (redacted alike)


def test_last_train_batch_of_one_image_trains(tmp_path: Path, hpo_cli) -> None:
    """BatchNorm cannot train on one image: a train split of ``4 * 359 + 1`` images (digits'
    1,437) with ``batch_size: 359`` used to crash every trial on its last batch. The lone image
    now joins the batch before it: four optimizer steps an epoch, every image seen."""
    study_file = tmp_path / "one.yaml"
    study_file.write_text(yaml.safe_dump({
        "dataset": {"name": "digits", "val_fraction": 0.2},
        "model": {"name": "mobilenetv3_small_050", "image_size": 16},
        "search_space": str(Path(__file__).parents[1] / "search_spaces" / "smoke.yaml"),
        "train": {"batch_size": 359},
        "budget": {"n_trials": 1, "max_epochs": 1},
    }))
    url = f"sqlite:///{tmp_path / 'one.db'}"
    result = hpo_cli("study", str(study_file), "--storage", url, "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    study = optuna.load_study(study_name="one", storage=url)
    assert sum(study.user_attrs[DATA_ATTR]["counts"]["train"].values()) == 4 * 359 + 1
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE, trial.user_attrs
    assert trial.user_attrs["optimizer_steps"] == 4
