"""``hpo export``: one trial of a study as a bundle a user's inference code loads.

The bundle is a folder:

- ``model.safetensors``: the trained weights (the EMA weights where the trial kept EMA), keyed as
  ``timm.create_model(name, num_classes=...)`` names them, so ``model.pretrained: PATH`` of a
  new study fine-tunes from it;
- ``model.onnx``: the model with its normalisation baked in. Input ``image``: float32
  ``(batch, channels, size, size)`` pixels in ``[0, 1]`` (the batch axis is dynamic); output
  ``logits`` ``(batch, classes)`` (and ``value`` ``(batch,)`` for multi-task data). Its outputs
  are checked against PyTorch's with onnxruntime on real images of the study's data before the
  bundle is written (:data:`ONNX_TOLERANCE`);
- ``metadata.json``: classes in index order, preprocessing, metrics (the held-out test results
  where the study stored them), params, study, trial and library versions;
- ``MODEL_CARD.md``: the same for people.

``refit``: the chosen params are trained again on train + validation for the trial's epoch
count (no early stopping: nothing is held out to stop on) and that model is exported.

    >>> ONNX_FILE, WEIGHTS_FILE, METADATA_FILE
    ('model.onnx', 'model.safetensors', 'metadata.json')
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from hpo.checkpoint import Checkpoints
from hpo.config import StudyConfig
from hpo.data import DataSplits, build_dataset
from hpo.errors import HpoError
from hpo.export.evaluate import evaluate_trial, use_ema
from hpo.models import build_model
from hpo.optuna_private import study_system_attrs
from hpo.record import (
    EPOCHS_ATTR,
    LATENCY_ATTR,
    DataFacts,
    TestResult,
    main_value,
    read_data_facts,
    read_test_results,
)
from hpo.storage import open_existing_storage
from hpo.worker import stored_config

ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"
CARD_FILE = "MODEL_CARD.md"
BUNDLE_FORMAT = "hpo-bundle/1"
ONNX_TOLERANCE = 1e-3  # max abs difference of the outputs, ONNX Runtime against PyTorch
NORMALISATION = ("mean", "std", "value_mean", "value_std")  # checkpoint > stored facts > data
CHECK_IMAGES = 64  # validation images the ONNX check runs


class ExportError(HpoError):
    """A bundle cannot be made: no such study or trial, no checkpoint, ONNX disagrees. Exit 2
    for bad input (see ``exit_code``), 1 when the exported model is wrong."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Bundle:
    """What :func:`export_bundle` wrote."""

    folder: Path
    trial: int
    max_abs_diff: float
    checked_images: int
    refit: bool


class Normalised(torch.nn.Module):
    """``model((x - mean) / std)``: the exported graph takes ``[0, 1]`` pixels; a multi-task
    model's value comes back in the data's units (``value * value_std + value_mean``)."""

    def __init__(self, model: torch.nn.Module, facts: DataFacts) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(facts.mean).float().view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(facts.std).float().view(1, -1, 1, 1))
        self.value_mean = float(facts.value_mean or 0.0)
        self.value_std = float(facts.value_std or 1.0)

    def forward(self, x: torch.Tensor) -> Any:
        out = self.model((x - self.mean) / self.std)
        if isinstance(out, tuple):
            logits, value = out
            return logits, value * self.value_std + self.value_mean
        return out


def export_bundle(name: str, storage_url: str, out: Path, trial: int | None = None,
                  artifacts: str | None = None, refit: bool = False,
                  echo: Callable[[str], None] = print, pick: str | None = None) -> Bundle:
    """Write the bundle of study ``name``'s trial ``trial`` (default: the best; several
    objectives: the Pareto trial the ``pick`` rule chooses) into ``out``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=open_existing_storage(storage_url))
    except KeyError:
        raise ExportError(f"no study {name!r} in the storage; run `hpo study {name}` first"
                          ) from None
    cfg = stored_config(study)
    frozen = pick_trial(study, trial, pick, echo)
    data = build_dataset(cfg.dataset, cfg.model.image_size, cfg.model.in_chans)
    facts = read_data_facts(study) or data.facts(cfg.dataset.name)
    if refit:
        epochs = int(frozen.user_attrs.get(EPOCHS_ATTR) or cfg.budget.max_epochs)
        echo(f"refit: training trial {frozen.number}'s params on train + validation "
             f"({len(data.train_y) + len(data.val_y)} images) for {epochs} epochs")
        model, merged = refit_model(cfg, frozen.params, epochs, data.without_test())
        facts = facts.model_copy(update=normalisation(merged))
        weights = "refit"
        test = refit_test_result(cfg, frozen, model, merged, data, facts, epochs)
        echo(f"refit model: {test.line()}" if test else "refit model: the study has no "
             "held-out test split to score it on")
    else:
        model, weights, state = trained_model(study, storage_url, cfg, frozen, data, artifacts)
        trained = {k: v for k, v in (state.get("preprocessing") or {}).items()
                   if k in NORMALISATION and v is not None}
        stored = {k: v for k, v in facts.model_dump(include=set(NORMALISATION)).items()
                  if v is not None}
        facts = facts.model_copy(update={**normalisation(data), **stored, **trained})
        test = read_test_results(study_system_attrs(study)).get(frozen.number)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(model, out / WEIGHTS_FILE, cfg, frozen)
    wrapped = Normalised(model, facts).eval()
    images = data.val_x[:CHECK_IMAGES].float()
    export_onnx(wrapped, out / ONNX_FILE, facts, data.multitask)
    diff = onnx_max_abs_diff(wrapped, out / ONNX_FILE, images)
    echo(f"ONNX check: max abs difference of the outputs, onnxruntime vs PyTorch, on "
         f"{len(images)} validation images: {diff:.3g} (tolerance {ONNX_TOLERANCE:g})")
    if not diff <= ONNX_TOLERANCE:
        raise ExportError(f"{out / ONNX_FILE}: ONNX Runtime's outputs differ from PyTorch's by "
                          f"{diff:.3g} (> {ONNX_TOLERANCE:g}); the bundle is not usable",
                          exit_code=1)
    check = {"images": len(images), "max_abs_diff": diff, "tolerance": ONNX_TOLERANCE}
    if "latency_ms" in cfg.objective.names:  # the exported path, beside the study's eager figure
        from hpo.latency import onnx_latency_ms

        check["latency_ms"] = round(onnx_latency_ms(str(out / ONNX_FILE), facts.channels,
                                                    facts.image_size), 4)
        echo(f"latency: {check['latency_ms']:.3g} ms with ONNX Runtime (batch 1, one thread, "
             f"median); the study measured {frozen.user_attrs.get(LATENCY_ATTR, '?')} ms in "
             "eager PyTorch")
    meta = metadata(study, cfg, frozen, facts, weights, data.multitask, check, refit, test)
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
    (out / CARD_FILE).write_text(model_card(meta), encoding="utf-8")
    echo(f"wrote {out}/: {WEIGHTS_FILE}, {ONNX_FILE}, {METADATA_FILE}, {CARD_FILE}")
    return Bundle(out, frozen.number, diff, len(images), refit)


def pick_trial(study: optuna.Study, number: int | None, pick: str | None = None,
               echo: Callable[[str], None] = print) -> FrozenTrial:
    """Trial ``number`` (it must be COMPLETE), or the best trial; in a multi-objective study,
    the Pareto trial the ``pick`` rule chooses (:mod:`hpo.export.pick`, said in one line)."""
    from hpo.export.pick import DEFAULT_RULE, pick_from_front

    complete = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    if not complete:
        raise ExportError(f"study {study.study_name!r} has no complete trial to export")
    if pick is not None and (number is not None or len(study.directions) == 1):
        raise ExportError(f"--pick {pick}: chooses from the Pareto front of a multi-objective "
                          "study without --trial; " + ("give one of them" if number is not None
                          else f"study {study.study_name!r} has one objective (its best trial "
                          "is exported)"))
    if number is None and len(study.directions) > 1:
        trial, why = pick_from_front(study, pick or DEFAULT_RULE)
        echo(why)
        return trial
    if number is None:
        return study.best_trial
    if number not in complete:
        raise ExportError(f"--trial {number}: not a complete trial of study {study.study_name!r};"
                          f" complete: {', '.join(map(str, sorted(complete)))}")
    return complete[number]


def normalisation(data: DataSplits) -> dict[str, Any]:
    """The Trainer's standardisation of ``data``: per-channel ``mean``/``std`` of the train
    images, and ``value_mean``/``value_std`` of the train values of multi-task data."""
    out: dict[str, Any] = {"mean": data.mean.tolist(), "std": data.std.tolist()}
    if data.train_v is not None:
        out.update(value_mean=float(data.train_v.mean()),
                   value_std=float(data.train_v.std().clamp_min(1e-6)))
    return out


def _model_for(cfg: StudyConfig, params: dict[str, Any], data: DataSplits) -> torch.nn.Module:
    """The trial's architecture, randomly initialised (its weights are loaded next)."""
    model_cfg = cfg.model_config_for(params).model_copy(update={"pretrained": False})
    return build_model(model_cfg, data.num_classes, multitask=data.multitask)


def trained_model(study: optuna.Study, storage_url: str, cfg: StudyConfig, trial: FrozenTrial,
                  data: DataSplits, artifacts: str | None
                  ) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """The trial's model with the weights of its final checkpoint that ``hpo evaluate`` scores
    (:func:`hpo.export.evaluate.use_ema`: EMA when the objective reads them or they validated at
    least as well). Returns the model, ``"ema"`` or ``"raw"``, and the checkpoint's state."""
    store = Checkpoints.for_study(storage_url, cfg.artifacts, cfg.checkpoint, artifacts, study)
    state = store.final_state(trial)
    if state is None:
        raise ExportError(
            f"trial {trial.number} of study {study.study_name!r} has no checkpoint in "
            f"{store.location} (only the best checkpoint.keep_best_k trials keep theirs; "
            "--artifacts names another store); use --refit to train it again")
    model = _model_for(cfg, trial.params, data)
    weights = "ema" if use_ema(state, cfg.objective.metric) else "raw"  # as `hpo evaluate`
    model.load_state_dict(state["ema"] if weights == "ema" else state["model"])
    return model.eval(), weights, state


def refit_model(cfg: StudyConfig, params: dict[str, Any], epochs: int, data: DataSplits
                ) -> tuple[torch.nn.Module, DataSplits]:
    """Train ``params`` on train + validation for ``epochs`` epochs, without early stopping.
    The Trainer's per-epoch evaluation runs on the validation images (now trained on, so its
    numbers mean nothing); the held-out test split is never touched."""
    from hpo.training import Trainer, seed_everything

    def both(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
        return None if a is None or b is None else torch.cat([a, b])

    merged = DataSplits(torch.cat([data.train_x, data.val_x]), torch.cat([data.train_y, data.val_y]),
                        data.val_x, data.val_y, list(data.class_names),
                        train_v=both(data.train_v, data.val_v), val_v=data.val_v)
    train_cfg = cfg.train_config(params).model_copy(update={"epochs": epochs,
                                                            "early_stop_patience": None})
    seed_everything(train_cfg.seed)
    model = _model_for(cfg, params, merged)
    trainer = Trainer(train_cfg, model, merged, device=torch.device("cpu"))
    trainer.fit()
    final = trainer.ema.module if trainer.ema is not None else trainer.model
    return final.cpu().eval(), merged


def refit_test_result(cfg: StudyConfig, trial: FrozenTrial, model: torch.nn.Module,
                      merged: DataSplits, data: DataSplits, facts: DataFacts, epochs: int
                      ) -> TestResult | None:
    """The refit model scored on the held-out test split (as ``hpo evaluate`` scores a trial),
    None without one. Not stored in the study: the trial's own result stays there."""
    if not data.has_test:
        return None
    state = {"model": model.state_dict(), "ema": None, "epoch": epochs,
             "preprocessing": facts.model_dump(include=set(NORMALISATION))}
    scored = replace(merged, test_x=data.test_x, test_y=data.test_y, test_v=data.test_v)
    result = evaluate_trial(trial, state, cfg, scored, facts)
    return result.model_copy(update={"checkpoint": "refit"})


def save_weights(model: torch.nn.Module, path: Path, cfg: StudyConfig, trial: FrozenTrial) -> None:
    """``model``'s state dict as safetensors, with the timm name in the file's metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"timm_model": cfg.model_config_for(trial.params).name,
                                          "study": cfg.name,
                                          "trial": str(trial.number)})


def export_onnx(model: torch.nn.Module, path: Path, facts: DataFacts, multitask: bool) -> None:
    """``model`` (taking ``[0, 1]`` pixels) as ONNX with a dynamic batch axis (torch.export)."""
    example = torch.rand(2, facts.channels, facts.image_size, facts.image_size)
    outputs = ["logits", "value"] if multitask else ["logits"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        torch.onnx.export(model, (example,), str(path), input_names=["image"],
                          output_names=outputs, dynamo=True, verbose=False,
                          dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}},
                          external_data=False)


def onnx_max_abs_diff(model: torch.nn.Module, path: Path, images: torch.Tensor) -> float:
    """The largest absolute difference between PyTorch's and ONNX Runtime's outputs (all of
    them: logits, and the value of a multi-task model) on ``images`` (one batch)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(images)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = session.run(None, {"image": images.numpy().astype(np.float32)})
    return max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))


def _versions() -> dict[str, str]:
    out = {}
    for package in ("hpo", "timm", "torch", "onnx", "onnxruntime", "optuna"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return out


def metadata(study: optuna.Study, cfg: StudyConfig, trial: FrozenTrial, facts: DataFacts,
             weights: str, multitask: bool, onnx_check: dict[str, Any], refit: bool,
             test: TestResult | None) -> dict[str, Any]:
    """Everything ``metadata.json`` holds (see the module docstring)."""
    curve = trial.user_attrs.get("curve") or {}
    last_epoch = {k: v[-1] for k, v in curve.items() if v}
    color = "L (grayscale)" if facts.channels == 1 else "RGB"
    return {
        "format": BUNDLE_FORMAT,
        "study": study.study_name,
        "trial": trial.number,
        "refit": refit,
        "weights": weights,
        "model": {"timm_name": cfg.model_config_for(trial.params).name,
                  "task": "multitask" if multitask else "classification",
                  "num_classes": len(facts.classes)},
        "classes": facts.classes,
        "preprocessing": {
            "image_size": facts.image_size, "channels": facts.channels, "color": color,
            "decode": "Pillow; palette and alpha images composited on white, then converted "
                      f"to {color}",
            "resize": f"Pillow bilinear to {facts.image_size}x{facts.image_size} (squashed, "
                      "no crop)",
            "scale": "uint8 / 255 -> [0, 1], NCHW float32",
            "mean": facts.mean, "std": facts.std,
            **({"value": "output `value` is in the data's units (the graph undoes the training "
                         f"standardisation: mean {facts.value_mean:g}, std {facts.value_std:g})"}
               if multitask else {}),
            "normalisation": "inside model.onnx: feed [0, 1] pixels; the safetensors weights "
                             "expect (x - mean) / std",
        },
        "onnx": {"input": "image", "outputs": ["logits", "value"] if multitask else ["logits"],
                 "dynamic_axes": {"image": ["batch"]}, "check": onnx_check},
        "metrics": {
            "objective": {"metric": cfg.objective.metric, "direction": cfg.objective.direction,
                          "value": main_value(trial),
                          **({"costs": dict(zip(cfg.objective.names[1:], trial.values[1:]))}
                             if cfg.is_multi_objective else {})},
            "final_epoch": last_epoch,
            "test": None if test is None else test.model_dump(mode="json"),
        },
        "params": trial.params,
        "epochs": trial.user_attrs.get(EPOCHS_ATTR),
        "data": {"source": facts.source, "fingerprint": facts.fingerprint,
                 "counts": facts.counts},
        "versions": _versions(),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def model_card(meta: dict[str, Any]) -> str:
    """A short Markdown model card from :func:`metadata`'s dict."""
    pre = meta["preprocessing"]
    objective = meta["metrics"]["objective"]
    test = meta["metrics"]["test"]
    lines = [
        f"# {meta['model']['timm_name']} — study {meta['study']}, trial {meta['trial']}",
        "",
        f"A {meta['model']['task']} model over {len(meta['classes'])} classes, found by hpo "
        f"(Optuna) and exported {meta['exported_at']}"
        + (" after a refit on train + validation." if meta["refit"] else "."),
        "",
        "## Classes (index order)",
        "",
        ", ".join(f"{i}: {c}" for i, c in enumerate(meta["classes"])),
        "",
        "## Scores",
        "",
        f"- selected on validation {objective['metric']} = {objective['value']:.4g}"
        + (" (of the original trial)" if meta["refit"] else
           " (the score it was selected on: optimistic)"),
    ]
    if test:
        result = TestResult.model_validate(test)
        whose = " of the refit model" if meta["refit"] else ""
        lines += [f"- held-out {result.line()}{whose} (95 % bootstrap intervals)", "",
                  "| class | precision | recall | F1 | test images |", "|---|---|---|---|---|"]
        lines += [f"| {c.name} | {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} | {c.support} |"
                  for c in result.per_class]
    else:
        lines.append("- held-out test: none stored for this trial (`hpo evaluate` on a study "
                     "with a test split stores one)")
    lines += [
        "",
        "## Input",
        "",
        (f"{pre['color']} images resized (Pillow bilinear, squashed) to {pre['image_size']}x"
        f"{pre['image_size']}, scaled to [0, 1]; `model.onnx` normalises inside (mean "
        f"{[round(m, 4) for m in pre['mean']]}, std {[round(s, 4) for s in pre['std']]})."),
        "",
        "## Use",
        "",
        "```",
        "hpo predict BUNDLE_DIR images/ --out predictions.csv",
        "```",
        "",
        "## Training",
        "",
        (f"Params: `{json.dumps(meta['params'])}`; epochs: {meta['epochs']}; weights: "
        f"{meta['weights']}. ONNX check: max abs difference "
        f"{meta['onnx']['check']['max_abs_diff']:.3g} on {meta['onnx']['check']['images']} "
        "images."),
        "",
        "## Limits",
        "",
        ("Trained on the study's data only: images unlike them (other cameras, lighting, "
        "classes) get confident but meaningless answers."),
        "",
    ]
    return "\n".join(lines)
