"""Every metric a trial computes is stored, printed and reported; ``val_loss`` is plain CE; the
last epoch is never pruned; an objective the data cannot give names ``objective.metric``.

Real runs through the CLI (``python -m hpo.cli``) and ``run_study``, tiny budgets (16x16 images,
1-3 epochs, 2 trials).
"""

from __future__ import annotations

import copy
import html
import re
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState
from report_studies import make_study

from hpo.config import load_study
from hpo.data import build_dataset
from hpo.data.defects import write_defects_folder
from hpo.models import build_model
from hpo.report.data import best_epoch
from hpo.report.render import fmt
from hpo.runner import run_study
from hpo.training import TrainConfig, Trainer, seed_everything

# markup in the description: escaped in HTML, backslash-escaped in Markdown
DESCRIPTION = "Severity <b>and</b> class | two heads & *one* backbone"
MT_KEYS = ("val_mae", "val_within_k", "val_total_loss")


def _project(root: Path, study: dict, space: dict, name: str = "s") -> Path:
    (root / "studies").mkdir(parents=True, exist_ok=True)
    (root / "search_spaces").mkdir(parents=True, exist_ok=True)
    (root / "search_spaces" / f"{name}.yaml").write_text(yaml.safe_dump(space))
    path = root / "studies" / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"search_space": name, **study}))
    return path


@pytest.fixture(scope="module")
def multitask(tmp_path_factory: pytest.TempPathFactory):
    """A real multi-task study (defects + severity, weighted objective) run by the CLI."""
    from conftest import run_hpo

    root = tmp_path_factory.mktemp("mt")
    path = _project(root, {
        "description": DESCRIPTION,
        "dataset": {"name": "defects", "multitask": True, "n_per_class": 6},
        "model": {"name": "mobilenetv3_small_050", "image_size": 16},
        "train": {"batch_size": 16, "within_k": 2.0},
        "objective": {"metric": "weighted", "weights": {"val_accuracy": 1.0, "val_mae": -0.05},
                      "direction": "maximize"},
        "budget": {"n_trials": 2, "max_epochs": 2},
        "sampler": {"type": "random"},
        "pruner": {"type": "none"},
    }, {"params": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
                   "reg_weight": {"type": "float", "low": 0.1, "high": 3.0, "log": True}}},
        name="mt")
    url = f"sqlite:///{root / 'hpo.db'}"
    result = run_hpo("study", str(path), "--storage", url, "--no-progress",
                     env={"HPO_CACHE_DIR": str(root / "cache")})
    assert result.returncode == 0, result.stderr
    return root, url, result


def test_multitask_trials_store_and_print_every_metric(multitask) -> None:
    _, url, result = multitask
    trials = optuna.load_study(study_name="mt", storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for t in trials:
        curve, n = t.user_attrs["curve"], t.user_attrs["epochs"]
        assert n == 2
        for key in ("train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr",
                    "epoch_seconds", *MT_KEYS):
            assert len(curve[key]) == n, key  # every epoch of every metric computed
        assert not any(k.startswith("ema_") for k in curve)  # no ema_decay: no EMA metrics
        assert all(0 <= v <= 1 for v in curve["val_within_k"]) and min(curve["val_mae"]) > 0
        # the weighted objective is rebuilt from the stored curve, epoch by epoch
        for epoch, value in t.intermediate_values.items():
            acc, mae = curve["val_accuracy"][epoch - 1], curve["val_mae"][epoch - 1]
            assert value == pytest.approx(acc - 0.05 * mae, abs=1e-5)
        # the terminal line shows MAE and within-k of the epoch the value comes from
        e = best_epoch(t)
        line = next(li for li in result.stdout.splitlines() if li.startswith(f"trial {t.number:4d}"))
        assert f"epoch {e}: acc={curve['val_accuracy'][e - 1]:.3f}" in line
        assert f"mae={curve['val_mae'][e - 1]:.3g}" in line
        assert f"within_k={curve['val_within_k'][e - 1]:.3f}" in line


def test_report_shows_description_mae_and_within_k(multitask, hpo_cli) -> None:
    root, url, _ = multitask
    out = root / "reports"
    result = hpo_cli("report", "mt", "--storage", url, "--out", str(out))
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name="mt", storage=url).get_trials()
    md = (out / "mt.md").read_text()
    page = (out / "mt.html").read_text()
    # the description, escaped: no markup of its own gets through
    assert html.escape(DESCRIPTION) in page and "<b>and</b>" not in page
    assert r"Severity \<b\>and\</b\> class \| two heads \& \*one\* backbone" in md
    # top trials table: MAE and within-k of each trial's best epoch, as stored
    assert re.search(r"^\| rank \| trial \| value \| (.* \| )?accuracy \| macro F1 \| "
                     r"MAE \| within ±k \| epochs \| duration \|", md, re.MULTILINE)
    for t in trials:
        e, curve = best_epoch(t), t.user_attrs["curve"]
        cells = " | ".join(fmt(curve[k][e - 1]) for k in
                           ("val_accuracy", "val_macro_f1", "val_mae", "val_within_k"))
        assert re.search(rf"^\| \d \| {t.number} \| {re.escape(fmt(t.value))} \| .* \| "
                         rf"{re.escape(cells)} \|", md, re.MULTILINE)
    assert "Learning curves: validation MAE" in md and "validation within-±k rate" in page


def test_compare_shows_each_study_description(multitask, hpo_cli) -> None:
    root, url, _ = multitask
    make_study(url, "plain", n_trials=4)  # maximizes too; stores no description
    out = root / "compare"
    result = hpo_cli("compare", "mt", "plain", "--storage", url, "--out", str(out),
                     "--name", "cmp")
    assert result.returncode == 0, result.stderr
    md, page = (out / "cmp.md").read_text(), (out / "cmp.html").read_text()
    assert r"- **mt**: Severity \<b\>and\</b\> class" in md and "**plain**" not in md
    assert f"<th>mt</th><td>{html.escape(DESCRIPTION)}</td>" in page


def test_val_loss_is_plain_cross_entropy_whatever_the_reg_weight(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "cache"))
    csv = write_defects_folder(tmp_path / "parts", n_per_class=6, image_size=16)
    from hpo.config import DatasetConfig, ModelConfig

    data = build_dataset(DatasetConfig(name="folder", root=str(tmp_path / "parts"),
                                       csv=str(csv)), image_size=16)
    seed_everything(0)
    model = build_model(ModelConfig(name="mobilenetv3_small_050", image_size=16),
                        data.num_classes, multitask=True)
    cpu = torch.device("cpu")
    results = {}
    for reg_weight in (0.1, 3.0):  # identical weights, two multi-task loss mixes
        trainer = Trainer(TrainConfig(epochs=1, reg_weight=reg_weight, reg_loss="mse",
                                      label_smoothing=0.2, class_weights="balanced"),
                          copy.deepcopy(model), data, device=cpu)
        results[reg_weight] = trainer.evaluate(trainer.model)
    trainer.model.eval()
    with torch.no_grad():
        logits, value = trainer.model((data.val_x - trainer.mean) / trainer.std)
    ce = float(torch.nn.functional.cross_entropy(logits, data.val_y))
    reg = float(torch.nn.functional.mse_loss(
        value.view(-1), (data.val_v - trainer.value_mean) / trainer.value_std))
    for reg_weight, metrics in results.items():
        assert metrics["loss"] == pytest.approx(ce, rel=1e-5)  # plain CE, nothing else
        assert metrics["total_loss"] == pytest.approx(ce + reg_weight * reg, rel=1e-4)
    assert results[0.1]["loss"] == results[3.0]["loss"]
    assert results[0.1]["total_loss"] != pytest.approx(results[3.0]["total_loss"])
    # what a trial stores: the epoch's val_loss is the evaluation's plain CE
    seed_everything(0)
    trainer = Trainer(TrainConfig(epochs=1, batch_size=16, reg_weight=3.0), model, data,
                      device=cpu)
    (last,) = trainer.fit()
    again = trainer.evaluate(trainer.model)
    assert last.val_loss == pytest.approx(again["loss"]) and last.val_total_loss == pytest.approx(
        again["total_loss"]) and last.val_loss != pytest.approx(last.val_total_loss)


@pytest.mark.parametrize("ending", ["last_epoch", "early_stopped"])
def test_a_trial_that_trained_to_its_end_is_never_pruned(tmp_path: Path, ending: str,
                                                        monkeypatch) -> None:
    """The median pruner would prune the worse second trial at its final epoch (checked below);
    the trial completes there instead, its final checkpoint saved."""
    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "cache"))
    train = {"batch_size": 8, "optimizer": "adamw"}
    if ending == "early_stopped":  # no gain of 10 in val_loss: stops after epoch 2 of 3
        train.update(early_stop_patience=1, early_stop_min_delta=10.0)
    epochs, last = (2, 2) if ending == "last_epoch" else (3, 2)
    path = _project(tmp_path, {
        "dataset": {"name": "defects", "n_per_class": 8},
        "model": {"name": "mobilenetv3_small_050", "image_size": 16},
        "train": train,
        "objective": {"metric": "train_loss"},
        "budget": {"n_trials": 2, "max_epochs": epochs},
        "pruner": {"type": "median", "n_startup_trials": 1, "n_warmup_steps": last},
        # early-stopped: epoch 2 is not a "every 3 epochs" one, yet it ends the trial: saved
        "checkpoint": {"every_n_epochs": epochs},
    }, {"params": {"lr": {"type": "categorical", "choices": [0.01, 1.0e-7]}}})
    cfg = load_study(str(path))
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    study = optuna.create_study(study_name=cfg.name, storage=url, direction="minimize")
    study.enqueue_trial({"lr": 1.0e-7})  # barely moves: train loss stays near 2.5-3
    study.enqueue_trial({"lr": 0.01})  # far too high for batches of 8: train loss 20+
    lines: list[str] = []
    run_study(cfg, url, show_progress=False, echo=lines.append,
              artifacts=str(tmp_path / "artifacts"))
    study = optuna.load_study(study_name=cfg.name, storage=url)
    good, bad = study.get_trials()
    assert bad.params == {"lr": 0.01}
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=last)
    assert pruner.prune(study, bad)  # the situation under test: the pruner says prune
    for t in (good, bad):
        assert t.state == TrialState.COMPLETE, (t.number, t.user_attrs.get("prune_reason"))
        assert t.user_attrs["epochs"] == last and max(t.intermediate_values) == last
        assert "prune_reason" not in t.user_attrs
        pointer = t.user_attrs["checkpoint"]  # the final epoch's checkpoint, kept (keep_best_k 3)
        assert pointer["epoch"] == last and pointer["trial"] == t.number
        assert (tmp_path / "artifacts" / pointer["artifact_id"]).is_file()
    assert bad.value == min(bad.intermediate_values.values())
    assert sum("COMPLETE" in li for li in lines) == 2


@pytest.mark.parametrize("objective", [{"metric": "val_mae"}, {
    "metric": "weighted", "weights": {"val_accuracy": 1.0, "val_within_k": 0.5},
    "direction": "maximize"}])
def test_a_multitask_objective_on_classification_data_names_its_key(tmp_path: Path, hpo_cli,
                                                                    objective: dict) -> None:
    path = _project(tmp_path, {"model": {"image_size": 16}, "objective": objective},
                    {"params": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2}}})
    db = tmp_path / "never.db"
    result = hpo_cli("study", str(path), "--storage", f"sqlite:///{db}")
    assert result.returncode == 2, result.stderr
    key, value = (("objective.metric", "val_mae") if objective["metric"] == "val_mae"
                  else ("objective.weights", "val_within_k"))
    assert f"{path}: {key} = '{value}' is invalid; allowed: " in result.stderr
    assert "val_accuracy, val_macro_f1" in result.stderr and "multi-task data" in result.stderr
    assert "(top level)" not in result.stderr and "'dataset'" not in result.stderr
    assert "Traceback" not in result.stderr and not db.exists()


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_resumed_multitask_trial_keeps_every_curve_key(tmp_path: Path, monkeypatch) -> None:
    """A trial that dies after epoch 1 is retried (as Optuna's retry callbacks do: a WAITING
    copy with ``failed_trial``); the retry resumes from the epoch-1 checkpoint and its curve
    carries on every stored key, the multi-task and EMA ones included."""
    from hpo.checkpoint import Checkpoints, open_artifact_store
    from hpo.objective import Objective

    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "cache"))
    path = _project(tmp_path, {
        "dataset": {"name": "defects", "multitask": True, "n_per_class": 6},
        "model": {"name": "mobilenetv3_small_050", "image_size": 16},
        "train": {"batch_size": 16, "ema_decay": 0.9},
        "objective": {"metric": "val_mae"},
        "budget": {"n_trials": 1, "max_epochs": 2},
    }, {"params": {"reg_weight": {"type": "float", "low": 0.1, "high": 3.0, "log": True}}})
    cfg = load_study(str(path))
    store = str(tmp_path / "artifacts")
    objective = Objective(cfg, checkpoints=Checkpoints(open_artifact_store(store), store))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'hpo.db'}", direction="minimize")
    real_epoch = Trainer._train_epoch

    def dies_in_epoch_2(self, epoch):
        if epoch == 1:
            raise RuntimeError("machine lost")
        return real_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", dies_in_epoch_2)
    study.optimize(objective, n_trials=1, catch=(RuntimeError,))
    monkeypatch.setattr(Trainer, "_train_epoch", real_epoch)
    (dead,) = study.get_trials()
    assert dead.state == TrialState.FAIL and dead.user_attrs["checkpoint"]["epoch"] == 1
    first = dead.user_attrs["curve"]
    keys = {*MT_KEYS, "ema_val_loss", "ema_val_accuracy", "ema_val_macro_f1", "ema_val_mae",
            "ema_val_within_k"}
    assert keys <= set(first) and all(len(v) == 1 for v in first.values())
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=dead.params, distributions=dead.distributions,
        user_attrs=dead.user_attrs, system_attrs={"failed_trial": dead.number,
                                                  "retry_history": [dead.number]}))
    study.optimize(objective, n_trials=1)
    retry = study.get_trials()[-1]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed"]["epoch"] == 1
    curve = retry.user_attrs["curve"]
    assert set(curve) == set(first)  # nothing dropped on resume
    for key, values in curve.items():
        assert len(values) == 2 and values[0] == first[key][0], key
