"""User image folders in the ImageFolder layout ``root/<class>/<image>``.

Either one folder split stratified with a seed, or separate ``train_dir`` and ``val_dir``. Class
names may be any Unicode (``划痕``, ``污点``...). Grayscale, RGBA (composited on white) and palette
images are converted. A file that cannot be decoded is skipped with a warning and counted in
``DataSplits.info["skipped_files"]``; a missing folder, a folder with no class folders or an empty
class is a ConfigError, and so is a (train) folder with a single class: classification needs at
least 2. A split folder puts every class in both splits (``stratified_indices`` in
:mod:`hpo.data.splits`), so each class needs at least 2 images. Decoded images are cached
(:mod:`hpo.data.cache`).

    >>> import tempfile
    >>> from hpo.data.defects import write_defects_folder
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = write_defects_folder(Path(d) / "parts", n_per_class=4, image_size=16)
    ...     data = load_folder_splits(Path(d) / "parts", image_size=16, cache=Path(d) / "cache")
    >>> data.num_classes, len(data.train_y) + len(data.val_y)
    (5, 20)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hpo.data.cache import cached, folder_key
from hpo.data.multitask import read_labels_csv
from hpo.data.splits import DataSplits, stratified_indices
from hpo.errors import ConfigError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
LAYOUT = "a folder with one sub-folder of images per class (root/<class>/<image>)"


def scan(root: Path, key: str) -> dict[str, list[Path]]:
    """Image files per class name, sorted; ConfigError for a missing, class-less or empty folder."""
    if not root.is_dir():
        raise ConfigError(root, key, str(root), f"an existing folder: {LAYOUT}")
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ConfigError(root, key, str(root), LAYOUT)
    files = {d.name: sorted(f for f in d.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
             for d in classes}
    empty = [name for name, fs in files.items() if not fs]
    if empty:
        raise ConfigError(root, key, f"{empty[0]}/ (no images)", "at least one image per class")
    return files


def decode(path: Path, image_size: int, in_chans: int) -> torch.Tensor:
    """``(C, S, S)`` uint8 image, resized (squashed) to ``image_size``; raises when unreadable."""
    with Image.open(path) as img:
        img.load()
        if img.mode == "P":
            img = img.convert("RGBA")
        if img.mode in ("RGBA", "LA", "PA"):
            white = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, img.convert("RGBA"))
        img = img.convert("L" if in_chans == 1 else "RGB")
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
        array = np.asarray(img, dtype=np.uint8).reshape(image_size, image_size, -1)
    x = torch.from_numpy(array.copy()).permute(2, 0, 1)
    return x.expand(in_chans, -1, -1).clone() if x.shape[0] != in_chans else x


def _decode_all(root: Path, files: dict[str, list[Path]], classes: list[str], image_size: int,
                in_chans: int) -> dict:
    images, labels, paths, skipped = [], [], [], []
    for label, name in enumerate(classes):
        for f in files.get(name, []):
            try:
                x = decode(f, image_size, in_chans)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                skipped.append(f"{f.relative_to(root)} ({type(exc).__name__}: {exc})")
                continue
            images.append(x)
            labels.append(label)
            paths.append(str(f.relative_to(root)))
    return {"x": torch.stack(images) if images else torch.empty(0, in_chans, image_size,
                                                                  image_size, dtype=torch.uint8),
            "y": torch.tensor(labels, dtype=torch.int64), "paths": paths, "skipped": skipped}


def load_folder(root: Path, key: str, image_size: int, in_chans: int = 3,
                classes: list[str] | None = None, cache: Path | None = None) -> dict:
    """Decode (or fetch from the cache) one folder: ``x`` uint8, ``y``, ``paths``, ``skipped``."""
    files = scan(root, key)
    if classes is None and len(files) < 2:  # this folder defines the classes
        raise ConfigError(root, key, f"1 class folder ({next(iter(files))}/)",
                          "at least 2 class folders (root/<class>/<image>): classification "
                          "needs 2 or more classes")
    classes = classes or sorted(files)
    extra = sorted(set(files) - set(classes))
    if extra:
        raise ConfigError(root, key, f"{extra[0]}/", f"a class of the train folder {classes}")
    all_files = [f for name in classes for f in files.get(name, [])]
    # labels are positions in ``classes`` (the train folder's): they are part of the key
    digest = folder_key(root, all_files, image_size, in_chans, classes)
    out = cached(digest, lambda: _decode_all(root, files, classes, image_size, in_chans), cache)
    for reason in out["skipped"]:
        warnings.warn(f"skipped unreadable image in {root}: {reason}", stacklevel=2)
    counts = torch.bincount(out["y"], minlength=len(classes))
    if len(files) == len(classes) and int(counts.min()) == 0:
        empty = classes[int(counts.argmin())]
        raise ConfigError(root, key, f"{empty}/ (no readable images)", "at least one per class")
    return {**out, "classes": classes}


def _values(part: dict, root: Path, labels: dict[Path, tuple[str, float]], csv: Path
            ) -> torch.Tensor:
    values = []
    for rel, y in zip(part["paths"], part["y"].tolist()):
        path = (root / rel).resolve()
        if path not in labels:
            raise ConfigError(csv, "dataset.csv", rel, f"a row for every image under {root}")
        cls, value = labels[path]
        if cls != part["classes"][y]:
            raise ConfigError(csv, "dataset.csv", f"{rel}: {cls}", f"class {part['classes'][y]}")
        values.append(value)
    return torch.tensor(values, dtype=torch.float32)


def load_folder_splits(root: Path | None = None, image_size: int = 32, in_chans: int = 3,
                       val_fraction: float = 0.2, seed: int = 0, train_dir: Path | None = None,
                       val_dir: Path | None = None, csv: Path | None = None,
                       cache: Path | None = None) -> DataSplits:
    """Train/val splits from ``root`` (split stratified) or from ``train_dir`` + ``val_dir``."""
    labels = read_labels_csv(csv) if csv is not None else None
    if root is not None:
        part = load_folder(Path(root), "dataset.root", image_size, in_chans, cache=cache)
        small = [c for c, n in zip(part["classes"], torch.bincount(part["y"]).tolist()) if n < 2]
        if small:  # one image cannot be in both train and validation
            raise ConfigError(root, "dataset.root", f"{small[0]}/ (1 image)",
                              "at least 2 images per class, so that every class is in both "
                              "train and validation (or give train_dir and val_dir)")
        v = _values(part, Path(root), labels, csv) if labels is not None else None
        train_idx, val_idx = stratified_indices(part["y"], val_fraction, seed)
        train, val = part, part
        train_v = v[train_idx] if v is not None else None
        val_v = v[val_idx] if v is not None else None
    else:
        train = load_folder(Path(train_dir), "dataset.train_dir", image_size, in_chans, cache=cache)
        val = load_folder(Path(val_dir), "dataset.val_dir", image_size, in_chans,
                          classes=train["classes"], cache=cache)
        train_idx, val_idx = torch.arange(len(train["y"])), torch.arange(len(val["y"]))
        train_v = _values(train, Path(train_dir), labels, csv) if labels is not None else None
        val_v = _values(val, Path(val_dir), labels, csv) if labels is not None else None
    skipped = len(train["skipped"]) + (len(val["skipped"]) if val is not train else 0)
    return DataSplits(
        train["x"][train_idx].float() / 255, train["y"][train_idx],
        val["x"][val_idx].float() / 255, val["y"][val_idx], train["classes"],
        info={"skipped_files": skipped}, train_v=train_v, val_v=val_v,
    )
