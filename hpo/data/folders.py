"""User image folders in the ImageFolder layout ``root/<class>/<image>``.

Either one folder split stratified with a seed, or separate ``train_dir`` and ``val_dir``; a
held-out test split is ``test_fraction`` of ``root`` (carved out first) or a ``test_dir``. Class
names may be any Unicode (``划痕``, ``污点``...). Grayscale, RGBA (composited on white) and palette
images are converted. A file that cannot be decoded, or a file in a class folder that is not an
image (``notes.txt``), is skipped with one line on stderr (``hpo: skipped PATH: reason``) and listed
in ``DataSplits.info["skipped"]`` (``(path, reason)``; the study's data facts keep them); a missing
folder, a folder with no class folders or an empty class is a ConfigError, and so is a (train)
folder with a single class: classification needs at least 2. A split folder puts every class in
every split (``split_indices`` in :mod:`hpo.data.splits`), so each class needs at least 2 images
(3 with ``test_fraction``). Decoded images are cached (:mod:`hpo.data.cache`).

    >>> import tempfile
    >>> from hpo.data.defects import write_defects_folder
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = write_defects_folder(Path(d) / "parts", n_per_class=4, image_size=16)
    ...     data = load_folder_splits(Path(d) / "parts", image_size=16, cache=Path(d) / "cache")
    >>> data.num_classes, len(data.train_y) + len(data.val_y)
    (5, 20)
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from PIL import Image

from hpo.data.cache import cached, folder_key
from hpo.data.multitask import read_labels_csv
from hpo.data.splits import DataSplits, split_indices
from hpo.errors import ConfigError
from hpo.images import decode_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
LAYOUT = "a folder with one sub-folder of images per class (root/<class>/<image>)"

log = logging.getLogger("hpo.data")


def scan(root: Path, key: str) -> tuple[dict[str, list[Path]], list[tuple[str, str]]]:
    """Image files per class name, sorted, and the other files in the class folders as
    ``(path, reason)`` (hidden files aside); ConfigError for a missing, class-less or empty
    folder."""
    if not root.is_dir():
        raise ConfigError(root, key, str(root), f"an existing folder: {LAYOUT}")
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ConfigError(root, key, str(root), LAYOUT)
    found = {d.name: sorted(f for f in d.rglob("*") if f.is_file()) for d in classes}
    files = {name: [f for f in fs if f.suffix.lower() in IMAGE_SUFFIXES]
             for name, fs in found.items()}
    stray = [(str(f), (f"not an image file ({f.suffix or 'no suffix'}; images are "
                      f"{', '.join(sorted(IMAGE_SUFFIXES))})"))
             for fs in found.values() for f in fs
             if f.suffix.lower() not in IMAGE_SUFFIXES and not f.name.startswith(".")]
    empty = [name for name, fs in files.items() if not fs]
    if empty:
        raise ConfigError(root, key, f"{empty[0]}/ (no images)", "at least one image per class")
    return files, stray


def decode(path: Path, image_size: int, in_chans: int) -> torch.Tensor:
    """``(C, S, S)`` uint8 image, resized (squashed) to ``image_size``; raises when unreadable
    (:func:`hpo.images.decode_image`, which ``hpo predict`` decodes with too)."""
    return torch.from_numpy(decode_image(path, image_size, in_chans))


def _decode_all(root: Path, files: dict[str, list[Path]], classes: list[str], image_size: int,
                in_chans: int) -> dict:
    images, labels, paths, skipped = [], [], [], []
    for label, name in enumerate(classes):
        for f in files.get(name, []):
            try:
                x = decode(f, image_size, in_chans)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                message = str(exc).replace(f"'{f}'", "").replace(str(f), "").strip()
                skipped.append((str(f.relative_to(root)), (f"unreadable image "
                                f"({type(exc).__name__}{': ' + message if message else ''})")))
                continue
            images.append(x)
            labels.append(label)
            paths.append(str(f.relative_to(root)))
    return {"x": torch.stack(images) if images else torch.empty(0, in_chans, image_size,
                                                                  image_size, dtype=torch.uint8),
            "y": torch.tensor(labels, dtype=torch.int64), "paths": paths, "skipped": skipped}


def load_folder(root: Path, key: str, image_size: int, in_chans: int = 3,
                classes: list[str] | None = None, cache: Path | None = None) -> dict:
    """Decode (or fetch from the cache) one folder: ``x`` uint8, ``y``, ``paths``, ``skipped``
    (``(path, reason)``, each said in one line on stderr), ``classes`` and ``digest`` (a hash
    of its files' content)."""
    files, stray = scan(root, key)
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
    skipped = stray + [(str(root / rel), reason) for rel, reason in out["skipped"]]
    for path, reason in skipped:
        log.warning("hpo: skipped %s: %s", path, reason)
    counts = torch.bincount(out["y"], minlength=len(classes))
    if len(files) == len(classes) and int(counts.min()) == 0:
        empty = classes[int(counts.argmin())]
        raise ConfigError(root, key, f"{empty}/ (no readable images)", "at least one per class")
    return {**out, "skipped": skipped, "classes": classes, "digest": digest}


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
                       cache: Path | None = None, test_fraction: float | None = None,
                       test_dir: Path | None = None) -> DataSplits:
    """Train/val (and test) splits from ``root`` (split stratified) or from ``train_dir`` +
    ``val_dir``; the test split is ``test_fraction`` of ``root`` or ``test_dir``."""
    labels = read_labels_csv(csv) if csv is not None else None
    if root is not None:
        part = load_folder(Path(root), "dataset.root", image_size, in_chans, cache=cache)
        need, key = (3, "dataset.test_fraction") if test_fraction else (2, "dataset.root")
        small = [(c, n) for c, n in zip(part["classes"], torch.bincount(part["y"]).tolist())
                 if n < need]
        if small:  # one image cannot be in both train and validation (and test)
            raise ConfigError(root, key, f"{small[0][0]}/ ({small[0][1]} image{'s' * (small[0][1] > 1)})",
                              f"at least {need} images per class, so that every class is in "
                              f"every split (or give train_dir and val_dir{', test_dir' * (need == 3)})")
        train_idx, val_idx, test_idx = split_indices(part["y"], val_fraction, seed, test_fraction)
        splits = [(part, Path(root), train_idx), (part, Path(root), val_idx)]
        if test_idx is not None:
            splits.append((part, Path(root), test_idx))
    else:
        train = load_folder(Path(train_dir), "dataset.train_dir", image_size, in_chans, cache=cache)
        val = load_folder(Path(val_dir), "dataset.val_dir", image_size, in_chans,
                          classes=train["classes"], cache=cache)
        splits = [(train, Path(train_dir), torch.arange(len(train["y"]))),
                  (val, Path(val_dir), torch.arange(len(val["y"])))]
    if test_dir is not None:
        test = load_folder(Path(test_dir), "dataset.test_dir", image_size, in_chans,
                           classes=splits[0][0]["classes"], cache=cache)
        splits.append((test, Path(test_dir), torch.arange(len(test["y"]))))
    tensors = []
    for part, folder, idx in splits:
        values = _values(part, folder, labels, csv)[idx] if labels is not None else None
        tensors.append((part["x"][idx].float() / 255, part["y"][idx], values))
    (train_x, train_y, train_v), (val_x, val_y, val_v) = tensors[:2]
    test_x, test_y, test_v = tensors[2] if len(tensors) > 2 else (None, None, None)
    folders = list({id(part): part for part, _, _ in splits}.values())
    skipped = [s for part in folders for s in part["skipped"]]
    digest = hashlib.blake2b("|".join(p["digest"] for p in folders).encode(), digest_size=16)
    if csv is not None:
        digest.update(Path(csv).read_bytes())
    return DataSplits(
        train_x, train_y, val_x, val_y, splits[0][0]["classes"],
        info={"skipped_files": len(skipped), "skipped": skipped,
              "fingerprint": digest.hexdigest()},
        train_v=train_v, val_v=val_v, test_x=test_x, test_y=test_y, test_v=test_v,
    )
