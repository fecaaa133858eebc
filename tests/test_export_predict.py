"""From a study to a shipped model (issue 14, items 3-5), through the real commands: a tiny study
on a folder of generated defect images -> ``hpo export`` -> ``hpo predict`` on a folder with a
corrupt file, its probabilities compared with PyTorch's; ``--refit``; a new study that starts
from the exported weights (``model.pretrained: PATH``).

One study and one export are shared by the module (ONNX export takes seconds)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from conftest import ok, run_hpo, write_study_file

from hpo.cli import main
from hpo.config import DatasetConfig, ModelConfig
from hpo.data import build_dataset
from hpo.data.defects import write_defects_folder
from hpo.data.folders import decode
from hpo.errors import ModelError
from hpo.export.bundle import ONNX_TOLERANCE
from hpo.models import build_model
from hpo.record import TestResult

IMAGE_SIZE = 24


BASE = {"seed": 0, "dataset": {"name": "folder", "root": "parts"},
        "model": {"name": "mobilenetv3_small_050", "image_size": IMAGE_SIZE},
        "search_space": "smoke", "train": {"batch_size": 32},
        "objective": {"metric": "val_accuracy"}, "budget": {"n_trials": 2, "max_epochs": 2},
        "sampler": {"type": "tpe", "n_startup_trials": 2}, "pruner": {"type": "none"}}


def write_study(folder: Path, name: str, **sections: dict) -> Path:
    return write_study_file(folder, name, BASE, **sections)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """A finished 2-trial study with a held-out test split (scored at its end), and its best
    trial exported as a bundle."""
    root = tmp_path_factory.mktemp("export")
    write_defects_folder(root / "parts", n_per_class=12, image_size=IMAGE_SIZE)
    study = write_study(root, "parts-export", dataset={"name": "folder", "root": "parts",
                                                       "test_fraction": 0.25})
    db = f"sqlite:///{root / 'hpo.db'}"
    ok(run_hpo("study", str(study), "--storage", db, "--no-progress", cwd=root))
    out = ok(run_hpo("export", "parts-export", "--storage", db, "--out", str(root / "bundle"),
                     cwd=root))
    return {"root": root, "db": db, "bundle": root / "bundle", "output": out}


def test_export_writes_a_checked_bundle(exported) -> None:
    bundle = exported["bundle"]
    assert sorted(p.name for p in bundle.iterdir()) == [
        "MODEL_CARD.md", "metadata.json", "model.onnx", "model.safetensors"]
    diff = float(re.search(r"max abs difference .*?: (\S+) \(tolerance", exported["output"])[1])
    print(f"ONNX max abs difference: {diff}")
    assert diff <= ONNX_TOLERANCE
    meta = json.loads((bundle / "metadata.json").read_text(encoding="utf-8"))
    assert meta["classes"] == sorted(p.name for p in (exported["root"] / "parts").iterdir()
                                     if p.is_dir())
    assert meta["preprocessing"]["image_size"] == IMAGE_SIZE
    assert meta["onnx"]["check"]["max_abs_diff"] == pytest.approx(diff, rel=1e-2)
    assert {"hpo", "timm", "torch"} <= set(meta["versions"])
    best = optuna.load_study(study_name="parts-export", storage=exported["db"]).best_trial
    assert (meta["study"], meta["trial"], meta["params"]) == ("parts-export", best.number,
                                                              best.params)
    assert meta["metrics"]["objective"]["value"] == best.value
    test = TestResult.model_validate(meta["metrics"]["test"])  # what the study stored
    assert (test.trial, test.sizes["test"]) == (best.number, 15)
    card = (bundle / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"- held-out {test.line()} (95 % bootstrap intervals)" in card
    assert "| deformation |" in card


def test_predict_matches_pytorch_without_torch_and_reports_a_corrupt_file(exported,
                                                                          tmp_path) -> None:
    images = tmp_path / "incoming"
    write_defects_folder(images, n_per_class=2, image_size=40, seed=7)  # unseen, other size
    (images / "scratch" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (images / "labels.csv").unlink()  # not an image: ignored in a folder
    out = tmp_path / "predictions.csv"
    proc = run_hpo("predict", str(exported["bundle"]), str(images), str(tmp_path / "gone.png"),
                   "--out", str(out))
    ok(proc)
    probe = subprocess.run(  # the same command in-process, then the modules it loaded
        [sys.executable, "-c",
         ("import sys; from hpo.cli import main; main(['predict', sys.argv[1], sys.argv[2]]); "
         "print('HEAVY=' + ','.join(m for m in ('torch', 'timm') if m in sys.modules), "
         "file=sys.stderr)"),
         str(exported["bundle"]), str(images / "stain")],
        capture_output=True, text=True, check=True)
    assert probe.stderr.splitlines()[-1] == "HEAVY=", probe.stderr

    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 12  # 5 classes x 2 images, the corrupt one, the missing one
    broken = [r for r in rows if r["path"].endswith("broken.png")]
    assert len(broken) == 1 and broken[0]["class"] == "" and "cannot identify" in broken[0]["error"]
    assert rows[-1]["path"].endswith("gone.png") and rows[-1]["error"] == "no such file"
    assert "predicted 10 image(s), 2 unreadable" in proc.stderr

    meta = json.loads((exported["bundle"] / "metadata.json").read_text(encoding="utf-8"))
    classes = meta["classes"]
    model = build_model(ModelConfig(name="mobilenetv3_small_050", image_size=IMAGE_SIZE),
                        len(classes)).eval()
    from safetensors.torch import load_file

    model.load_state_dict(load_file(exported["bundle"] / "model.safetensors"))
    good = [r for r in rows if not r["error"]]
    x = torch.stack([decode(Path(r["path"]), IMAGE_SIZE, 3) for r in good]).float() / 255
    mean = torch.tensor(meta["preprocessing"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["preprocessing"]["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = torch.softmax(model((x - mean) / std), dim=1).numpy()
    got = np.array([[float(r[f"p_{c}"]) for c in classes] for r in good])
    print(f"predict vs PyTorch probabilities: max abs difference {np.abs(got - expected).max()}")
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert [r["class"] for r in good] == [classes[i] for i in expected.argmax(1)]


def test_refit_trains_on_train_and_validation_and_exports(exported) -> None:
    out = exported["root"] / "refit"
    text = ok(run_hpo("export", "parts-export", "--storage", exported["db"], "--trial", "1",
                      "--refit", "--out", str(out), cwd=exported["root"]))
    assert "train + validation (45 images) for 2 epochs" in text
    meta = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
    assert (meta["trial"], meta["refit"], meta["weights"]) == (1, True, "refit")
    test = TestResult.model_validate(meta["metrics"]["test"])  # the refit model's, not stored
    assert f"refit model: {test.line()}" in text
    assert (test.checkpoint, test.sizes["train"], test.sizes["test"]) == ("refit", 45, 15)
    assert meta["onnx"]["check"]["max_abs_diff"] <= ONNX_TOLERANCE


def test_export_and_predict_name_what_is_not_there(exported, capsys) -> None:
    assert main(["export", "parts-export", "--storage", exported["db"], "--trial", "9",
                 "--out", str(exported["root"] / "nine")]) == 2
    assert "--trial 9: not a complete trial of study 'parts-export'; complete: 0, 1" in \
        capsys.readouterr().err
    assert main(["predict", str(exported["root"] / "nine"), str(exported["root"] / "parts")]) == 2
    assert "not an hpo bundle (model.onnx missing)" in capsys.readouterr().err
    assert not (exported["root"] / "nine").exists()


def test_a_study_starts_from_local_weights(exported, capsys) -> None:
    """The exported weights as ``model.pretrained`` of a new study on other data (digits: 10
    classes, so timm resets the classifier): the study runs, its backbone starts from them."""
    root = exported["root"]
    weights = Path("bundle") / "model.safetensors"  # relative to the study file
    study = write_study(root, "from-weights", dataset={"name": "digits"},
                        model={"name": "mobilenetv3_small_050", "image_size": 16,
                               "pretrained": str(weights)},
                        budget={"n_trials": 1, "max_epochs": 1})
    text = ok(run_hpo("study", str(study), "--storage", exported["db"], "--no-progress",
                      cwd=root / "parts"))  # another working folder: the path is the file's
    assert "trials: complete 1" in text
    stored = optuna.load_study(study_name="from-weights",
                               storage=exported["db"]).user_attrs["hpo_config"]
    assert stored["model"]["pretrained"] == str((root / weights).resolve())
    from safetensors.torch import load_file

    model = build_model(ModelConfig(name="mobilenetv3_small_050", pretrained=str(root / weights)),
                        num_classes=10)
    assert torch.equal(model.conv_stem.weight, load_file(root / weights)["conv_stem.weight"])
    assert model.classifier.weight.shape[0] == 10

    with pytest.raises(ModelError, match="cannot load it into 'test_efficientnet'.*size mismatch"):
        build_model(ModelConfig(name="test_efficientnet", pretrained=str(root / weights)), 10)
    absent = write_study(root, "absent-weights", model={"name": "mobilenetv3_small_050",
                                                        "pretrained": "nope.pth"})
    assert main(["study", str(absent), "--storage", exported["db"], "--no-progress"]) == 2
    assert "absent-weights.yaml: model.pretrained = 'nope.pth' is invalid" in \
        capsys.readouterr().err


def test_multitask_bundle_predicts_the_value_in_the_data_units(tmp_path) -> None:
    """A multi-task study (defects with severity): model.onnx's ``value`` is the trained head
    with the training standardisation undone, so predict's ``value`` column is in the data's
    units, equal to PyTorch's head output * value_std + value_mean."""
    study = write_study(tmp_path, "mt-export", dataset={"name": "defects", "n_per_class": 8,
                                                        "multitask": True},
                        model={"name": "mobilenetv3_small_050", "image_size": 16},
                        objective={"metric": "val_mae"}, budget={"n_trials": 1, "max_epochs": 1})
    db = f"sqlite:///{tmp_path / 'hpo.db'}"
    ok(run_hpo("study", str(study), "--storage", db, "--no-progress", cwd=tmp_path))
    ok(run_hpo("export", "mt-export", "--storage", db, "--out", str(tmp_path / "b"), cwd=tmp_path))
    write_defects_folder(tmp_path / "imgs", n_per_class=1, image_size=16, seed=3)
    out = tmp_path / "p.csv"
    ok(run_hpo("predict", str(tmp_path / "b"), str(tmp_path / "imgs"), "--out", str(out)))
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 5 and all(r["value"] and not r["error"] for r in rows)

    data = build_dataset(DatasetConfig(name="defects", n_per_class=8, multitask=True), 16)
    v_mean, v_std = float(data.train_v.mean()), float(data.train_v.std().clamp_min(1e-6))
    model = build_model(ModelConfig(name="mobilenetv3_small_050"), 5, multitask=True).eval()
    from safetensors.torch import load_file

    model.load_state_dict(load_file(tmp_path / "b" / "model.safetensors"))
    x = torch.stack([decode(Path(r["path"]), 16, 3) for r in rows]).float() / 255
    mean, std = data.mean.view(1, -1, 1, 1), data.std.view(1, -1, 1, 1)
    with torch.no_grad():
        _, value = model((x - mean) / std)
    np.testing.assert_allclose([float(r["value"]) for r in rows],
                               (value * v_std + v_mean).numpy(), atol=1e-4)
