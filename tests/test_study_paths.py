"""Where a study file's relative paths point: its own folder first, then the shipped spaces.

Each test drives the real ``hpo study`` command from a folder that is not the study's, the way a
user runs a study file kept in their own project.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import yaml
from PIL import Image

TINY = {"model": {"name": "mobilenetv3_small_050", "image_size": 16},
        "train": {"batch_size": 32},
        "budget": {"n_trials": 1, "max_epochs": 1},
        "pruner": {"type": "none"}}


def _write_images(root: Path, classes: int = 2, per_class: int = 5) -> None:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(root / f"class{c}" / f"{i}.png")


def _stored_config(db: Path, name: str) -> dict:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]
    return study.user_attrs["hpo_config"]


def test_study_outside_the_checkout_names_a_shipped_space(tmp_path: Path, hpo_cli) -> None:
    study = tmp_path / "elsewhere" / "mine.yaml"
    study.parent.mkdir()
    study.write_text(yaml.safe_dump({**TINY, "search_space": "smoke"}))
    db = tmp_path / "runs" / "hpo.db"
    result = hpo_cli("study", str(study), "--storage", f"sqlite:///{db}", "--no-progress",
                     cwd=tmp_path, env={"HPO_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert _stored_config(db, "mine")["search_space"] == "smoke"


def test_space_and_data_beside_the_study_file_from_another_folder(tmp_path: Path,
                                                                   hpo_cli) -> None:
    project = tmp_path / "project"
    _write_images(project / "images")
    (project / "space.yaml").write_text(yaml.safe_dump(
        {"params": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}}))
    study = project / "parts.yaml"
    study.write_text(yaml.safe_dump({**TINY, "search_space": "space.yaml",
                                     "dataset": {"name": "folder", "root": "images",
                                                 "val_fraction": 0.4}}))
    (tmp_path / "somewhere").mkdir()
    db = tmp_path / "hpo.db"
    result = hpo_cli("study", str(study), "--storage", f"sqlite:///{db}", "--no-progress",
                     cwd=tmp_path / "somewhere", env={"HPO_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-2000:]
    stored = _stored_config(db, "parts")
    assert stored["dataset"]["root"] == str((project / "images").resolve())


def test_bare_space_name_is_found_in_a_studies_and_search_spaces_layout(tmp_path: Path,
                                                                       hpo_cli) -> None:
    (tmp_path / "studies").mkdir()
    (tmp_path / "search_spaces").mkdir()
    # the same name as a shipped space: the project's own file wins
    (tmp_path / "search_spaces" / "smoke.yaml").write_text(yaml.safe_dump(
        {"params": {"weight_decay": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}}}))
    (tmp_path / "studies" / "own.yaml").write_text(yaml.safe_dump(
        {**TINY, "search_space": "smoke"}))
    db = tmp_path / "hpo.db"
    result = hpo_cli("study", "own", "--storage", f"sqlite:///{db}", "--no-progress",
                     cwd=tmp_path, env={"HPO_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-2000:]
    study = optuna.load_study(study_name="own", storage=f"sqlite:///{db}")
    assert set(study.trials[0].params) == {"weight_decay"}


def test_missing_space_names_the_given_study_file_and_where_it_looked(tmp_path: Path,
                                                                      hpo_cli) -> None:
    study = tmp_path / "cfg" / "typo.yaml"
    study.parent.mkdir()
    study.write_text(yaml.safe_dump({**TINY, "search_space": "mobilenett"}))
    db = tmp_path / "never.db"
    result = hpo_cli("study", str(study), "--storage", f"sqlite:///{db}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"{study}: search_space = 'mobilenett'" in result.stderr
    assert str(tmp_path / "cfg" / "search_spaces" / "mobilenett.yaml") in result.stderr
    assert "Traceback" not in result.stderr and not db.exists()


def test_a_recipe_error_names_the_study_file_given_not_studies_name(tmp_path: Path,
                                                                   hpo_cli) -> None:
    study = tmp_path / "mine.yaml"
    study.write_text(yaml.safe_dump({**TINY, "search_space": "smoke",
                                     "train": {"class_weights": {"no_such_class": 2.0}}}))
    db = tmp_path / "never.db"
    result = hpo_cli("study", str(study), "--storage", f"sqlite:///{db}", cwd=tmp_path,
                     env={"HPO_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"hpo: error: {study}: train.class_weights"), result.stderr
    assert "studies/mine.yaml" not in result.stderr and not db.exists()
