"""The artifact store is recorded in the study: a worker given none uses it, and refuses when
it cannot reach a recorded folder (a retried trial would silently start again from epoch 1)."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml

STUDY = {"model": {"name": "mobilenetv3_small_050", "image_size": 16},
         "search_space": "smoke", "train": {"batch_size": 128},
         "budget": {"n_trials": 3, "max_epochs": 1}, "pruner": {"type": "none"},
         "checkpoint": {"keep_best_k": 3}}


def _checkpoint_files(folder: Path) -> set[str]:
    return {p.name for p in folder.rglob("*") if p.is_file()}


def test_a_worker_given_no_artifacts_uses_the_recorded_store_or_refuses(tmp_path: Path,
                                                                       hpo_cli) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "ar.yaml").write_text(yaml.safe_dump(STUDY))
    url = f"sqlite:///{tmp_path / 'db' / 'hpo.db'}"
    shared = tmp_path / "shared-ckpt"
    env = {"HPO_CACHE_DIR": str(tmp_path / "cache"), "HPO_ARTIFACTS": ""}
    first = hpo_cli("study", str(project / "ar.yaml"), "--storage", url, "--artifacts",
                    str(shared), "--n-trials", "1", "--no-progress", cwd=project, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"checkpoints: {shared} (from --artifacts)" in first.stdout
    study = optuna.load_study(study_name="ar", storage=url)
    assert study.user_attrs["hpo_artifacts"] == str(shared.resolve())
    before = _checkpoint_files(shared)
    assert before  # trial 0's checkpoint

    elsewhere = tmp_path / "elsewhere"  # a worker with no study file and no --artifacts
    elsewhere.mkdir()
    second = hpo_cli("worker", "ar", "--storage", url, "--n-trials", "2", "--no-progress",
                     cwd=elsewhere, env=env)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"checkpoints: {shared.resolve()} (from the study record)" in second.stdout
    assert _checkpoint_files(shared) > before  # trial 1 checkpointed into the same store
    assert not (elsewhere / "runs").exists() and not (tmp_path / "db" / "artifacts").exists()

    shared.rename(tmp_path / "unmounted")  # the store is not reachable from this machine
    refused = hpo_cli("worker", "ar", "--storage", url, "--no-progress", cwd=elsewhere, env=env)
    assert refused.returncode == 2, refused.stderr
    assert str(shared.resolve()) in refused.stderr and "--artifacts" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not shared.exists()  # not silently created empty

    other = tmp_path / "other-store"  # told otherwise: it runs, with the store it was given
    told = hpo_cli("worker", "ar", "--storage", url, "--artifacts", str(other), "--no-progress",
                   cwd=elsewhere, env=env)
    assert told.returncode == 0, told.stderr[-2000:]
    assert _checkpoint_files(other)
    states = [t.state for t in optuna.load_study(study_name="ar", storage=url).trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 3
