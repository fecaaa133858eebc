"""A generated defect-inspection dataset for demos and tests: no download, no user data.

Each image is a textured metal part (brushed grating, random pose, tint and lighting, sensor noise)
with one defect of five classes: ``scratch`` (a thin line), ``stain`` (a soft discoloured blob),
``missing_part`` (a notch cut out of the outline), ``deformation`` (a bulge that bends outline and
texture) and ``foreign_object`` (a small, compact, differently coloured particle). Every defect has
a ``severity`` in [1, 10] (its size), the regression target of the multi-task study. Contrasts are
low and sizes vary, so a careless recipe does visibly worse. Same seed, same images; generated
sets are cached like decoded folders (:mod:`hpo.data.cache`).

    >>> x, y, severity = generate_defects(n_per_class=2, image_size=32, seed=0)
    >>> tuple(x.shape), y.tolist(), bool(((severity >= 1) & (severity <= 10)).all())
    ((10, 3, 32, 32), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4], True)
"""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hpo.data.cache import cached
from hpo.data.splits import DataSplits, make_splits, to_model_input

CLASSES = ["scratch", "stain", "missing_part", "deformation", "foreign_object"]
CANVAS = 64  # images are drawn at this size, then resized
FORMAT = 1  # bump when the drawing changes (invalidates cached sets)


def _u(g: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def _render(kind: int, severity: float, g: torch.Generator) -> torch.Tensor:
    """One ``(3, CANVAS, CANVAS)`` image in [0, 1] with a defect of class ``kind``."""
    s = severity / 10  # 0.1 .. 1
    lin = torch.linspace(-1, 1, CANVAS)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    cx, cy, rot = _u(g, -0.1, 0.1), _u(g, -0.1, 0.1), _u(g, 0, math.pi)
    u = (xx - cx) * math.cos(rot) + (yy - cy) * math.sin(rot)
    v = -(xx - cx) * math.sin(rot) + (yy - cy) * math.cos(rot)
    # a point on the part near its edge, and one inside, where defects go
    edge_angle = _u(g, 0, 2 * math.pi)
    inside = (_u(g, -0.35, 0.35), _u(g, -0.35, 0.35))
    if kind == 3:  # deformation: a radial bulge displaces outline and texture
        ex, ey = 0.72 * math.cos(edge_angle), 0.72 * math.sin(edge_angle)
        bump = (0.06 + 0.16 * s) * torch.exp(-((u - ex) ** 2 + (v - ey) ** 2) / 0.08)
        u, v = u - bump * math.cos(edge_angle), v - bump * math.sin(edge_angle)
    radius = _u(g, 0.68, 0.76)
    part = ((u.abs() ** 4 + v.abs() ** 4) ** 0.25 < radius).float()
    freq, angle = _u(g, 18, 30), _u(g, 0, math.pi)
    texture = 0.06 * torch.sin(freq * (u * math.cos(angle) + v * math.sin(angle)) + _u(g, 0, 6))
    texture = texture + 0.04 * torch.randn(CANVAS, CANVAS, generator=g)
    base = _u(g, 0.45, 0.65)
    tint = torch.tensor([_u(g, -0.04, 0.04) for _ in range(3)]).view(3, 1, 1)
    metal = (base + texture).unsqueeze(0) + tint
    background = 0.15 + 0.05 * torch.randn(1, CANVAS, CANVAS, generator=g)
    if kind == 2:  # missing part: a notch of background cut into the outline
        ex, ey = radius * math.cos(edge_angle), radius * math.sin(edge_angle)
        notch = ((u - ex) ** 2 + (v - ey) ** 2).sqrt() < 0.08 + 0.22 * s
        part = part * (~notch).float()
    img = part * metal + (1 - part) * background.expand(3, -1, -1)
    px, py = inside
    d2 = (u - px) ** 2 + (v - py) ** 2
    contrast = _u(g, 0.12, 0.25) * (1 if _u(g) < 0.5 else -1)
    if kind == 0:  # scratch: a thin line through the inside point
        a, length = _u(g, 0, math.pi), 0.15 + 0.6 * s
        along = (u - px) * math.cos(a) + (v - py) * math.sin(a)
        across = -(u - px) * math.sin(a) + (v - py) * math.cos(a)
        line = torch.exp(-(across / 0.025) ** 2) * (along.abs() < length / 2).float()
        img = img + contrast * line * part
    elif kind == 1:  # stain: soft, low-contrast, brownish
        blob = torch.exp(-d2 / (0.02 + 0.1 * s) ** 2 / 2)
        img = img - blob * part * torch.tensor([0.12, 0.16, 0.22]).view(3, 1, 1) * (0.6 + s)
    elif kind == 4:  # foreign object: small, sharp, coloured
        colour = torch.tensor([_u(g, 0.5, 1), _u(g, 0.2, 0.8), _u(g, 0, 0.5)])[
            torch.randperm(3, generator=g)].view(3, 1, 1)
        particle = (d2.sqrt() < 0.04 + 0.1 * s).float()
        img = img * (1 - particle) + colour * particle
    light = 1 + _u(g, -0.2, 0.2) * xx + _u(g, -0.2, 0.2) * yy
    img = img * light + 0.03 * torch.randn(3, CANVAS, CANVAS, generator=g)
    return img.clamp(0, 1)


def generate_defects(n_per_class: int = 120, image_size: int = 32, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images ``(N, 3, S, S)`` in [0, 1], labels ``(N,)`` and severities ``(N,)`` in [1, 10]."""
    g = torch.Generator().manual_seed(seed)
    images, labels, severities = [], [], []
    for kind in range(len(CLASSES)):
        for _ in range(n_per_class):
            severity = round(_u(g, 1, 10), 2)
            images.append(_render(kind, severity, g))
            labels.append(kind)
            severities.append(severity)
    x = torch.stack(images)
    if image_size != CANVAS:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=True).clamp(0, 1)
    return x, torch.tensor(labels), torch.tensor(severities, dtype=torch.float32)


def load_defects_splits(image_size: int, in_chans: int = 3, n_per_class: int = 120,
                        val_fraction: float = 0.2, seed: int = 0, multitask: bool = False,
                        test_fraction: float | None = None) -> DataSplits:
    """The defects set split stratified (test first, with ``test_fraction``); with
    ``multitask`` the severity is the regression value. The fingerprint hashes the generator's
    settings."""
    key = f"defects-{FORMAT}-{n_per_class}-{image_size}-{seed}"
    made = cached(key, lambda: dict(zip("xys", generate_defects(n_per_class, image_size, seed))))
    x, y, severity = made["x"], made["y"], made["s"]
    x = to_model_input(x, image_size, in_chans)
    settings = f"defects format {FORMAT}, {n_per_class} per class, seed {seed}"
    return make_splits(x, y, list(CLASSES), val_fraction, seed, test_fraction,
                       values=severity if multitask else None,
                       info={"fingerprint": hashlib.blake2b(settings.encode(),
                                                            digest_size=16).hexdigest()})


def write_defects_folder(root: Path, n_per_class: int = 20, image_size: int = 64,
                         seed: int = 0) -> Path:
    """Write the set as ``root/<class>/<n>.png`` plus ``root/labels.csv`` (file,class,value),
    i.e. a user folder for the ``folder`` dataset; returns the CSV path."""
    x, y, severity = generate_defects(n_per_class, image_size, seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (img, label, value) in enumerate(zip(x, y.tolist(), severity.tolist())):
        name = CLASSES[label]
        (root / name).mkdir(exist_ok=True)
        array = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array).save(root / name / f"{i:05d}.png")
        rows.append((f"{name}/{i:05d}.png", name, value))
    csv_path = root / "labels.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "class", "value"])
        writer.writerows(rows)
    return csv_path
