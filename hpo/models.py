"""Model factory: timm's ``create_model`` by name, with the dataset's class count; for multi-task
data a classification head and a regression head share one timm backbone.

With ``model.pretrained: true`` and no network (``HF_HUB_OFFLINE`` set, or the hub not reachable
within a second: :func:`hub_offline_reason`) the weights come from the local Hugging Face cache
only, so missing ones are a clear :class:`ModelError` at once instead of after the hub's retries.
With ``model.pretrained: PATH`` the weights come from that local file (``.safetensors``, ``.pth``,
a timm checkpoint) through timm's own pretrained path, which resets the classifier when the class
count differs; a file whose other weights do not fit the model is a ModelError.

    >>> from hpo.config import ModelConfig
    >>> model = build_model(ModelConfig(name="mobilenetv3_small_050"), num_classes=10)
    >>> model.num_classes
    10
    >>> import torch
    >>> mt = build_model(ModelConfig(name="test_efficientnet"), num_classes=5, multitask=True)
    >>> logits, value = mt(torch.rand(2, 3, 32, 32))
    >>> tuple(logits.shape), tuple(value.shape)
    ((2, 5), (2,))
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import socket
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import timm
import torch

from hpo.config import ModelConfig
from hpo.errors import ConfigError, ModelError

HUB_CONNECT_TIMEOUT = 1.0  # seconds to reach the Hugging Face Hub before calling it offline


class MultiTaskModel(torch.nn.Module):
    """A timm backbone (pooled features) with a classification head and a regression head."""

    def __init__(self, backbone: torch.nn.Module, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.dropout = torch.nn.Dropout(dropout)
        width = getattr(backbone, "head_hidden_size", None) or backbone.num_features  # pooled
        self.cls_head = torch.nn.Linear(width, num_classes)
        self.reg_head = torch.nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (N, classes), value (N,))``."""
        features = self.dropout(self.backbone(x))
        return self.cls_head(features), self.reg_head(features).squeeze(1)


def build_model(cfg: ModelConfig, num_classes: int, multitask: bool = False) -> torch.nn.Module:
    """Create ``cfg.name`` from timm's registry; a clear ModelError when it cannot be had.

    ``head_dropout`` is the dropout before the head(s); ``drop_path_rate`` (stochastic depth) is
    passed only when non-zero, and a model that does not support it is a ModelError."""
    if not timm.is_model(cfg.name):
        raise ModelError(f"model.name = {cfg.name!r} is not a timm model; "
                         f"close names: {', '.join(close_model_names(cfg.name)) or 'none'}")
    extra = {"drop_path_rate": cfg.drop_path_rate} if cfg.drop_path_rate > 0 else {}
    if isinstance(cfg.pretrained, str):  # a local file, through timm's own pretrained path
        if not Path(cfg.pretrained).is_file():
            raise ModelError(f"model.pretrained = {cfg.pretrained!r}: no such weights file on "
                             "this machine")
        extra["pretrained_cfg_overlay"] = {"file": cfg.pretrained}
    offline = hub_offline_reason() if cfg.pretrained is True else None
    try:
        with _hub_offline(offline is not None), _missing_weights() as missing:
            model = timm.create_model(
                cfg.name,
                pretrained=bool(cfg.pretrained),
                num_classes=0 if multitask else num_classes,
                in_chans=cfg.in_chans,
                drop_rate=0.0 if multitask else cfg.head_dropout,
                **extra,
            )
    except TypeError as exc:
        if "drop_path_rate" not in str(exc):
            raise
        raise ModelError(f"model {cfg.name!r} does not support drop_path_rate (stochastic depth);"
                         " set model.drop_path_rate: 0") from None
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        if not cfg.pretrained:
            raise
        if isinstance(cfg.pretrained, str):
            detail = " ".join(line.strip() for line in str(exc).splitlines()[:2])[:300]
            raise ModelError(f"model.pretrained = {cfg.pretrained!r}: timm cannot load it into "
                             f"{cfg.name!r} ({type(exc).__name__}: {detail})") from None
        reason = (f"offline: {offline}; not in the local Hugging Face cache" if offline
                  else f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        raise ModelError(
            f"pretrained weights for {cfg.name!r} could not be loaded ({reason}). With no "
            "network, set model.pretrained: false or put the weights in the Hugging Face cache "
            "(HF_HOME) first."
        ) from None
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else heads
    unfit = [key for key in missing if not any(key.startswith(f"{h}.") for h in heads)]
    if unfit:  # timm loads without `strict` when it resets the classifier: check the rest
        raise ModelError(f"model.pretrained = {cfg.pretrained!r} does not fit {cfg.name!r}: "
                         f"{len(unfit)} weights missing or unexpected (e.g. {unfit[0]}); give "
                         f"weights of the same architecture (a timm checkpoint, or "
                         f"model.safetensors from `hpo export` of a {cfg.name} study)")
    return MultiTaskModel(model, num_classes, cfg.head_dropout) if multitask else model


@contextmanager
def _missing_weights() -> Iterator[list[str]]:
    """Collects the weights a pretrained file lacked or had in excess: timm loads non-strictly
    when it resets the classifier, and only logs them."""
    found: list[str] = []
    logger = logging.getLogger("timm.models._builder")

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if text.startswith(("Missing keys (", "Unexpected keys (")):
                found.extend(text[text.index("(") + 1:text.index(")")].split(", "))

    handler, level, propagate = Collect(logging.INFO), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # hpo reports what matters itself
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def check_model_name(cfg: Any) -> None:
    """A :class:`ConfigError` naming the study file and ``model.name`` when the study's model is
    not in timm's registry, with close names; cheap, so :class:`hpo.objective.Objective` calls it
    before the data set is decoded."""
    source = getattr(cfg, "study_file", None) or f"studies/{cfg.name}.yaml"
    space = getattr(cfg, "space", None)
    searched = space.params.get("model_name") if space is not None else None
    named = [(source, "model.name", cfg.model.name)] + [
        (getattr(cfg, "space_file", None) or cfg.search_space, "params.model_name.choices", n)
        for n in getattr(searched, "choices", None) or []]
    for file, key, name in named:
        if timm.is_model(name):
            continue
        close = close_model_names(name)
        raise ConfigError(file, key, name, "a timm model name" + (
            f"; close names: {', '.join(close)}" if close else
            " (python -c 'import timm; print(timm.list_models())')"))


def close_model_names(name: str, limit: int = 8) -> list[str]:
    """timm model names close to ``name`` (a typo, a version that does not exist): difflib's
    near-certain matches, then one name from each family that shares the first part of ``name``
    without its version number (the nearest version first), then difflib's other matches; at
    most two names per family (the part before the first ``_``).

        >>> close_model_names("resnet5O")[0]
        'resnet50'
        >>> [n.split("_")[0] for n in close_model_names("mobilenetv9_tiny")][:3]
        ['mobilenetv5', 'mobilenetv4', 'mobilenetv3']
    """
    names = timm.list_models()
    wanted = name.lower()

    def similarity(candidate: str) -> float:
        return difflib.SequenceMatcher(None, wanted, candidate).ratio()

    matches = difflib.get_close_matches(wanted, names, n=4 * limit, cutoff=0.6)
    head = wanted.split("_")[0]
    stem = re.sub(r"\d+$", "", head)
    version = int(head[len(stem):]) if head != stem else None

    def distance(candidate: str) -> float:  # how far the candidate's version is from ours
        digits = re.search(r"\d+$", candidate.split("_")[0])
        if version is None or digits is None:
            return float("inf")
        return abs(int(digits.group()) - version)

    same_stem = re.compile(re.escape(stem) + r"\d*")
    family = sorted((n for n in names if len(stem) >= 3 and same_stem.fullmatch(n.split("_")[0])),
                    key=lambda n: (distance(n), -similarity(n)))
    best_of_each = list({n.split("_")[0]: n for n in reversed(family)}.values())[::-1]
    ordered = ([m for m in matches if similarity(m) >= 0.85] + best_of_each + matches + family)
    picked: list[str] = []
    for candidate in ordered:
        group = candidate.split("_")[0]
        if candidate not in picked and sum(p.split("_")[0] == group for p in picked) < 2:
            picked.append(candidate)
    return picked[:limit]


def hub_offline_reason() -> str | None:
    """Why the Hugging Face Hub cannot be reached now, else None: ``HF_HUB_OFFLINE`` is set, or
    no TCP connection to ``HF_ENDPOINT``'s host (or the proxy for it) within
    :data:`HUB_CONNECT_TIMEOUT` seconds. About a second at worst, where the hub's own retries
    take most of a minute."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    proxy = urllib.request.getproxies().get(endpoint.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        parsed = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parsed.hostname or host, parsed.port or 8080
    outcome: list[str | None] = []

    def connect() -> None:  # in a thread: name resolution ignores the socket timeout
        try:
            socket.create_connection((host, port), timeout=HUB_CONNECT_TIMEOUT).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"{host}:{port} unreachable: {type(exc).__name__}")

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(HUB_CONNECT_TIMEOUT + 0.5)
    return outcome[0] if outcome else f"{host}:{port} did not answer in {HUB_CONNECT_TIMEOUT:g} s"


@contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Hugging Face Hub offline mode for the block (its constant is read once at import, so the
    environment variable alone would not do): cached weights load, missing ones fail at once."""
    if not offline:
        yield
        return
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous
