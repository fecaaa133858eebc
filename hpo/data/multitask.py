"""Regression labels for multi-task folders: a CSV ``file,class,value`` beside the images.

``file`` is relative to the CSV's own folder, so one CSV next to ``train/`` and ``val/`` (or next to
the class folders) covers every image. ``class`` must match the image's class folder.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = (Path(d) / "labels.csv").write_text("file,class,value\\n划痕/1.png,划痕,2.5\\n",
    ...                                           encoding="utf-8")
    ...     labels = read_labels_csv(Path(d) / "labels.csv")
    >>> [(p.name, c, v) for p, (c, v) in labels.items()]
    [('1.png', '划痕', 2.5)]
"""

from __future__ import annotations

import csv
from pathlib import Path

from hpo.errors import ConfigError

COLUMNS = ("file", "class", "value")


def read_labels_csv(path: Path) -> dict[Path, tuple[str, float]]:
    """Map each image's resolved path to ``(class, value)``; a ConfigError names a bad row."""
    if not path.is_file():
        raise ConfigError(path, "dataset.csv", str(path), "an existing CSV file (file,class,value)")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(path, "dataset.csv", reader.fieldnames, f"columns {list(COLUMNS)}")
        labels = {}
        for line, row in enumerate(reader, start=2):
            try:
                value = float(row["value"])
            except ValueError:
                raise ConfigError(path, f"line {line}.value", row["value"], "a number") from None
            labels[(path.parent / row["file"]).resolve()] = (row["class"], value)
    return labels
