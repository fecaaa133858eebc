"""What a trained model costs: batch-1 latency and parameter count, the cost objectives of a
multi-objective study (``objective: [{metric: val_accuracy}, {metric: latency_ms}]``).

Latency is measured on the model as trained, in eager PyTorch eval mode (not through ONNX:
exporting ONNX takes seconds per trial, longer than a small trial trains), at batch 1 on one
CPU thread (on the GPU when the model is there), after warm-up runs: the median of ``runs``
timed forward passes, taken in :data:`ROUNDS` rounds of which the lowest median counts (a
round where another process held the core is left out). One thread makes trials measured
while other workers share the cores comparable with each other.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    >>> round(params_m(model), 6)
    0.00193
    >>> latency_ms(model, channels=3, image_size=8, runs=5) > 0
    True
"""

from __future__ import annotations

import statistics
import time

import torch

WARMUP = 5  # untimed forward passes first (allocations, lazy initialisation)
RUNS = 30  # timed forward passes, split into ROUNDS rounds; the lowest round median counts
ROUNDS = 3


def params_m(model: torch.nn.Module) -> float:
    """The model's parameters, in millions."""
    return sum(p.numel() for p in model.parameters()) / 1e6


def latency_ms(model: torch.nn.Module, channels: int, image_size: int, runs: int = RUNS,
               warmup: int = WARMUP) -> float:
    """Median milliseconds of one batch-1 forward pass of ``model`` in eval mode (restored to
    its former mode afterwards), on one CPU thread or on the model's GPU."""
    device = next(model.parameters()).device
    x = torch.rand(1, channels, image_size, image_size, device=device)
    was_training, threads = model.training, torch.get_num_threads()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model.eval()
    torch.set_num_threads(1)
    times = []
    try:
        with torch.inference_mode():
            for i in range(warmup + runs):
                started = time.perf_counter()
                model(x)
                sync()
                if i >= warmup:
                    times.append((time.perf_counter() - started) * 1000)
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)
    return _lowest_median(times)


def _lowest_median(times: list[float]) -> float:
    """The lowest median of :data:`ROUNDS` consecutive rounds of ``times`` (all of them when
    there are fewer than 2 per round).

        >>> _lowest_median([1.0, 1.2, 1.1, 9.0, 9.5, 9.9, 2.0, 2.1, 2.2])
        1.1
    """
    size = len(times) // ROUNDS
    if size < 2:
        return statistics.median(times)
    return min(statistics.median(times[i * size:(i + 1) * size]) for i in range(ROUNDS))


def onnx_latency_ms(path: str, channels: int, image_size: int, runs: int = RUNS,
                    warmup: int = WARMUP) -> float:
    """Median milliseconds of one batch-1 run of the ONNX model at ``path`` (input ``image``)
    with ONNX Runtime on one CPU thread: the exported path ``hpo predict`` takes."""
    import numpy as np
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, channels, image_size, image_size), np.float32)
    times = []
    for i in range(warmup + runs):
        started = time.perf_counter()
        session.run(None, {"image": x})
        if i >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    return _lowest_median(times)
