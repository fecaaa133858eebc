"""``hpo predict``: run an exported bundle on image files with onnxruntime, never importing torch.

Images are decoded with Pillow and preprocessed as the study's folder data was for training
(:func:`hpo.images.decode_image`): palette and alpha images composited on white, converted to RGB
or grayscale, resized (bilinear, squashed) to the bundle's image size, scaled to ``[0, 1]``; the
ONNX model normalises. The CSV has one row per file: ``path, class, p_<class>... , error``
(``value`` too for a multi-task bundle); a file that cannot be read is a row with its reason in
``error`` and empty predictions, never a crash.

    >>> import numpy as np
    >>> softmax(np.array([[0.0, 0.0], [0.0, 100.0]])).round(3).tolist()
    [[0.5, 0.5], [0.0, 1.0]]
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from hpo.errors import HpoError
from hpo.images import decode_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
BATCH = 64


class BundleError(HpoError):
    """The bundle or an image argument is unusable (bad input: exit 2)."""

    exit_code = 2


@dataclass
class Prediction:
    """One file's result: the class and its probabilities, or the reason it has none."""

    path: str
    label: str = ""
    probabilities: list[float] = field(default_factory=list)
    value: float | None = None
    error: str = ""


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def load_bundle(location: str | Path) -> tuple[Path, dict[str, Any]]:
    """The ONNX file and metadata of a bundle folder (or of its ``model.onnx``)."""
    path = Path(location)
    folder = path if path.is_dir() else path.parent
    onnx_file, meta_file = folder / "model.onnx", folder / "metadata.json"
    for needed in (onnx_file, meta_file):
        if not needed.is_file():
            raise BundleError(f"{location}: not an hpo bundle ({needed.name} missing); make one "
                              "with `hpo export NAME --out DIR`")
    return onnx_file, json.loads(meta_file.read_text(encoding="utf-8"))


def image_files(arguments: Iterable[str]) -> Iterator[Path]:
    """Files as given (whatever their name: a file that is no image gets its row and reason),
    and the images under folders (recursive, sorted by path)."""
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            yield from sorted(f for f in path.rglob("*")
                              if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path  # a missing one too: decoding it says so in its row


def decode(path: Path, image_size: int, channels: int) -> np.ndarray:
    """``(channels, size, size)`` float32 in ``[0, 1]``, as training decoded folder images
    (:func:`hpo.images.decode_image`)."""
    return decode_image(path, image_size, channels).astype(np.float32) / 255


def predict(bundle: str | Path, images: Sequence[str]) -> tuple[list[str], list[Prediction]]:
    """The bundle's classes and one :class:`Prediction` per image file."""
    import onnxruntime

    onnx_file, meta = load_bundle(bundle)
    pre = meta["preprocessing"]
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    classes = list(meta["classes"])
    results: list[Prediction] = []
    pending: list[tuple[Prediction, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        batch = np.stack([x for _, x in pending])
        outputs = session.run(None, {"image": batch})
        probs = softmax(outputs[0].astype(np.float64))
        for i, (row, _) in enumerate(pending):
            row.probabilities = probs[i].tolist()
            row.label = classes[int(probs[i].argmax())]
            row.value = float(outputs[1][i]) if len(outputs) > 1 else None
        pending.clear()

    for path in image_files(images):
        row = Prediction(str(path))
        results.append(row)
        try:
            pending.append((row, decode(path, pre["image_size"], pre["channels"])))
        except FileNotFoundError:
            row.error = "no such file"
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a row, not a crash
            row.error = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
        if len(pending) >= BATCH:
            flush()
    flush()
    return classes, results


def write_csv(classes: list[str], rows: list[Prediction], out: TextIO,
              multitask: bool = False) -> None:
    """``path, class, p_<class>..., [value,] error`` rows."""
    writer = csv.writer(out)
    writer.writerow(["path", "class", *(f"p_{c}" for c in classes),
                     *(["value"] if multitask else []), "error"])
    for row in rows:
        probs = [f"{p:.6f}" for p in row.probabilities] or [""] * len(classes)
        value = ([f"{row.value:.6f}" if row.value is not None else ""] if multitask else [])
        writer.writerow([row.path, row.label, *probs, *value, row.error])


def run(bundle: str, images: Sequence[str], out: str | None = None) -> tuple[int, int]:
    """``hpo predict``: predict and write the CSV to ``out`` (default: stdout). Returns
    (images predicted, files that could not be read)."""
    classes, rows = predict(bundle, images)
    multitask = load_bundle(bundle)[1]["model"]["task"] == "multitask"
    if out is None:
        write_csv(classes, rows, sys.stdout, multitask)
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="", encoding="utf-8") as handle:
            write_csv(classes, rows, handle, multitask)
    failed = sum(1 for r in rows if r.error)
    return len(rows) - failed, failed
