"""TensorBoard event files per trial, exported from the curves stored on the trials.

A report-time export (``hpo report NAME --tensorboard``): it needs no change to training, works
on any finished or running study, and on studies run before TensorBoard was installed. Writes
``runs/tensorboard/<study>/trial-<N>`` with every stored curve (``train_loss``, ``val_loss``,
``val_accuracy``, ``val_macro_f1``, ``lr``, ``epoch_seconds``; ``val_mae``, ``val_within_k``,
``val_total_loss`` and ``ema_val_*`` where trained) per epoch, and the trial's
params, state and value as text. Needs the optional extra: ``pip install -e '.[tensorboard]'``.

    $ hpo report mobilenet --tensorboard && tensorboard --logdir runs/tensorboard/mobilenet
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from hpo.errors import ConfigError
from hpo.record import CURVE_ATTR
from hpo.report.data import load

TENSORBOARD_DIR = Path("runs/tensorboard")


def export_tensorboard(study: optuna.Study | str, storage_url: str | None = None,
                       out_root: Path = TENSORBOARD_DIR) -> Path:
    """Write one event-file folder per trial; returns ``out_root/<study>``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard", "tensorboard", "not installed",
                          "pip install -e '.[tensorboard]'") from None
    data = load(study, storage_url)
    root = Path(out_root) / _safe(data.name)
    for t in data.trials:
        curve = t.user_attrs.get(CURVE_ATTR)
        if not isinstance(curve, dict):
            curve = {data.metric: [v for _, v in sorted(t.intermediate_values.items())]}
        folder = root / f"trial-{t.number}"
        for old in folder.glob("events.out.tfevents.*"):  # re-export replaces, never duplicates
            old.unlink()
        with SummaryWriter(log_dir=str(folder)) as w:
            for key, values in curve.items():
                if not isinstance(values, list):
                    continue
                for epoch, v in enumerate(values, 1):
                    if isinstance(v, (int, float)):
                        w.add_scalar(key, float(v), epoch)
            w.add_text("trial", json.dumps({"number": t.number, "state": t.state.name,
                                            "value": t.value, "params": t.params},
                                           default=str), 0)
    return root


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "study"
