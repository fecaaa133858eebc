"""Decoding one image file the way training does, with Pillow and NumPy only (no torch), so
that ``hpo predict`` preprocesses exactly as the folder data set did (:mod:`hpo.data.folders`).

Palette and alpha images are composited on white, converted to grey (1 channel) or RGB, and
resized (squashed, bilinear) to a square; a grey image asked for 3 channels is repeated.

    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> path = Path(tempfile.mkdtemp()) / "dot.png"
    >>> Image.new("LA", (40, 20), (0, 0)).save(path)    # fully transparent: white
    >>> x = decode_image(path, image_size=8, channels=3)
    >>> x.shape, x.dtype, int(x.min())
    ((3, 8, 8), dtype('uint8'), 255)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def decode_image(path: Path, image_size: int, channels: int) -> np.ndarray:
    """``(channels, image_size, image_size)`` uint8 pixels of the image at ``path``; raises
    (``OSError``, PIL's errors) when it cannot be read."""
    with Image.open(path) as img:
        img.load()
        if img.mode == "P":
            img = img.convert("RGBA")
        if img.mode in ("RGBA", "LA", "PA"):
            white = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, img.convert("RGBA"))
        img = img.convert("L" if channels == 1 else "RGB")
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
        array = np.asarray(img, dtype=np.uint8).reshape(image_size, image_size, -1)
    x = array.transpose(2, 0, 1)
    if x.shape[0] != channels:
        x = np.broadcast_to(x, (channels, image_size, image_size))
    return np.ascontiguousarray(x)
