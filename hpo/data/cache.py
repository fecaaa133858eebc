"""A disk cache of decoded, resized image folders, so trials (and re-runs) never decode again.

The key hashes every image file's relative path and bytes, the image size and the channel count:
changed content gives a new entry. Entries live in ``$HPO_CACHE_DIR`` (default ``runs/cache``,
git-ignored) and are written atomically, so two workers may race safely.

    >>> import tempfile, torch
    >>> with tempfile.TemporaryDirectory() as d:
    ...     calls = []
    ...     build = lambda: calls.append(1) or {"x": torch.zeros(2)}
    ...     first = cached("k", build, Path(d)); again = cached("k", build, Path(d))
    >>> len(calls), torch.equal(first["x"], again["x"])
    (1, True)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

FORMAT = 2  # bump when the decoding (or what it returns) changes, so old entries are not reused


def cache_dir() -> Path:
    return Path(os.environ.get("HPO_CACHE_DIR", "runs/cache"))


def folder_key(root: Path, files: list[Path], image_size: int, in_chans: int,
               classes: list[str]) -> str:
    """A content hash of ``files`` (paths relative to ``root``), the class list their labels
    index and the decoding settings."""
    h = hashlib.blake2b(f"{FORMAT}|{image_size}|{in_chans}".encode(), digest_size=16)
    h.update("\0".join(classes).encode())
    for f in files:
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def cached(key: str, build: Callable[[], dict[str, Any]], directory: Path | None = None
           ) -> dict[str, Any]:
    """``build()``'s result, from ``directory/<key>.pt`` when present, else built and stored."""
    path = (directory or cache_dir()) / f"{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=False)
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(value, tmp)
    tmp.replace(path)
    return value
