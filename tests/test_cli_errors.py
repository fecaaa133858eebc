"""Mistakes a user makes on the command line: the real ``hpo`` process exits 2 with a one-line
``hpo: error: ...`` that names what to fix, and writes nothing (no storage, no folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_hpo

SMOKE = yaml.safe_load((REPO / "studies" / "smoke.yaml").read_text(encoding="utf-8"))


def write_study(folder: Path, name: str, **changes: dict) -> Path:
    """studies/smoke.yaml with sections updated, as ``folder/NAME.yaml``."""
    data = {**SMOKE, "search_space": "smoke"}
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("hpo")]
    assert lines, proc.stderr
    return lines[-1]


# -- item 7: an unknown timm model -----------------------------------------------------------
@pytest.mark.timeout(300)
def test_unknown_model_names_the_file_and_close_names_before_the_data(tmp_path) -> None:
    """The data set is a folder whose only class is empty: decoding it would be a DataError.
    The model name is checked first, so the error is the model's, and no storage is made."""
    (tmp_path / "images" / "cats").mkdir(parents=True)
    study = write_study(tmp_path, "typo", model={"name": "mobilenetv9_tiny"},
                        dataset={"name": "folder", "root": str(tmp_path / "images")})
    db = tmp_path / "db" / "hpo.db"
    proc = run_hpo("study", str(study), "--storage", f"sqlite:///{db}", "--no-progress")
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc)
    assert line.startswith(f"hpo: error: {study}: model.name = 'mobilenetv9_tiny' is invalid"), line
    assert "mobilenetv4_" in line and "mobilenetv3_" in line, line
    assert "Traceback" not in proc.stderr
    assert not db.exists() and not db.parent.exists()


# -- item 8: trial counts and timeouts below 1 -----------------------------------------------
@pytest.mark.parametrize("args", [
    ("study", "smoke", "--n-trials", "0"),
    ("study", "smoke", "--n-trials", "-3"),
    ("study", "smoke", "--timeout", "0"),
    ("study", "smoke", "--timeout", "-1.5"),
    ("worker", "smoke", "--n-trials", "0"),
    ("worker", "smoke", "--timeout", "-5"),
])
def test_trial_counts_and_timeouts_below_one_are_refused(tmp_path, args) -> None:
    db = tmp_path / "db" / "hpo.db"
    proc = run_hpo(*args, "--storage", f"sqlite:///{db}", timeout=120)
    assert proc.returncode == 2, proc.stderr
    option, value = args[2], args[3]
    assert f"argument {option}: {value} is invalid; allowed: " in proc.stderr, proc.stderr
    assert not db.exists() and not db.parent.exists()


# -- item 8b: read-only commands never create a storage --------------------------------------
READ_ONLY = {  # each with --storage added, and --out OUT where it writes files
    "report": ("report", "smoke", "--out", "OUT"),
    "compare": ("compare", "a", "b", "--out", "OUT"),
    "analyze --dry-run": ("analyze", "smoke", "--analyst", "rules", "--dry-run"),
    "dashboard": ("dashboard", "--port", "0", "--artifacts", "OUT"),
}


@pytest.mark.parametrize("command", sorted(READ_ONLY))
def test_a_mistyped_sqlite_path_creates_nothing(tmp_path, command) -> None:
    db, out = tmp_path / "tpyo" / "hpo.db", tmp_path / "out"
    args = [str(out) if a == "OUT" else a for a in READ_ONLY[command]]
    proc = run_hpo(*args, "--storage", f"sqlite:///{db}", timeout=180)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = error_line(proc)
    assert line.startswith(f"hpo: error: no SQLite file {db} "), line
    assert "never creates one" in line
    assert list(tmp_path.iterdir()) == []  # no folder, no database, no report, no artifacts


def test_hpo_storage_env_with_a_mistyped_path_creates_nothing(tmp_path) -> None:
    db = tmp_path / "tpyo" / "hpo.db"
    proc = run_hpo("report", "smoke", "--out", str(tmp_path / "out"),
                   env={"HPO_STORAGE": f"sqlite:///{db}"}, timeout=180)
    assert proc.returncode == 2, proc.stderr
    assert str(db) in error_line(proc)
    assert not db.parent.exists()


def test_migrate_from_a_mistyped_path_creates_nothing(tmp_path) -> None:
    src, dst = tmp_path / "tpyo" / "hpo.db", tmp_path / "dst" / "hpo.db"
    proc = run_hpo("migrate", "smoke", "--from", f"sqlite:///{src}", "--to", f"sqlite:///{dst}",
                   timeout=180)
    assert proc.returncode == 2, proc.stderr
    assert error_line(proc).startswith(f"hpo: error: no SQLite file {src} ")
    assert not src.parent.exists()


# -- item 9: help for users ------------------------------------------------------------------
def test_help_is_for_users() -> None:
    proc = run_hpo("--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "hpo searches hyperparameters of PyTorch/timm image classifiers with Optuna" in text
    for command in ("study", "analyze", "worker", "migrate", "report", "compare", "dashboard"):
        assert f"\n    {command}" in text, command
    assert "exit codes:" in text and "  2    bad configuration" in text
    assert "hpo study mobilenet" in text and "README.md" in text
    assert "Thin: parse" not in text and "map errors to exit codes" not in text


# -- item 11: pretrained weights with no network ---------------------------------------------
@pytest.mark.timeout(300)
def test_pretrained_weights_offline_fail_at_once_with_a_clear_message(tmp_path) -> None:
    study = write_study(tmp_path, "offline", model={"pretrained": True})
    db = tmp_path / "hpo.db"
    proc = run_hpo("study", str(study), "--storage", f"sqlite:///{db}", "--no-progress",
                   env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")},
                   timeout=240)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = error_line(proc)
    assert line.startswith("hpo: error: pretrained weights for 'mobilenetv3_small_050' could "
                           "not be loaded (offline: HF_HUB_OFFLINE is set; not in the local "
                           "Hugging Face cache)"), line
    assert "set model.pretrained: false" in line
    assert not db.exists()


@pytest.mark.timeout(300)
def test_cached_pretrained_weights_load_with_the_hub_unreachable(tmp_path, monkeypatch) -> None:
    """Weights already in the Hugging Face cache load although the hub (HF_ENDPOINT, here a
    closed local port) cannot be reached; the same model not cached is the clear error."""
    import timm
    import torch
    from huggingface_hub import constants
    from safetensors.torch import save_file

    from hpo.config import ModelConfig
    from hpo.errors import ModelError
    from hpo.models import build_model

    reference = {k: v.contiguous()
                 for k, v in timm.create_model("test_efficientnet").state_dict().items()}
    repo = tmp_path / "hub" / "models--timm--test_efficientnet.r160_in1k"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(reference, str(repo / "snapshots" / commit / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # tests/conftest.py sets it
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # as read at import time

    model = build_model(ModelConfig(name="test_efficientnet", pretrained=True), num_classes=3)
    loaded = dict(model.named_parameters())
    assert torch.equal(loaded["conv_stem.weight"].detach(), reference["conv_stem.weight"])
    assert constants.HF_HUB_OFFLINE is False  # offline mode was for the load only

    with pytest.raises(ModelError, match=r"offline: 127\.0\.0\.1:9 unreachable"):
        build_model(ModelConfig(name="mobilenetv3_small_050", pretrained=True), num_classes=3)
