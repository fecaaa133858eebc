"""Trainer throughput against a bare PyTorch loop: same model, data, batch size, one process.

Runs are interleaved (trainer, bare, trainer, bare...) so machine load hits both alike; the median
images/s of each is compared as a ratio (target >= 0.95). Also measures, on the bare loop, bf16
autocast and channels_last against fp32 on this machine's device, which is how the Trainer's
defaults were chosen (bf16 autocast is not used on CPU; channels_last is on for CUDA only).

    .venv/bin/python benchmarks/bench_trainer.py --quick      # a few seconds
    .venv/bin/python benchmarks/bench_trainer.py               # writes benchmarks/results/trainer.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hpo.config import DatasetConfig, ModelConfig
from hpo.data import DataSplits, build_dataset
from hpo.models import build_model
from hpo.training import TrainConfig, Trainer, seed_everything
from hpo.training.trainer import default_device

RESULTS = Path(__file__).parent / "results" / "trainer.json"


def bare_loop(data: DataSplits, model_cfg: ModelConfig, batch_size: int, device: torch.device,
              dtype: torch.dtype | None = None, channels_last: bool = False) -> float:
    """One epoch of the plainest loop that does the same work; returns images/s."""
    seed_everything(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(model_cfg, data.num_classes).to(device, memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x_all, y_all = data.train_x.to(device), data.train_y.to(device)
    mean, std = data.mean.view(1, -1, 1, 1).to(device), data.std.view(1, -1, 1, 1).to(device)
    order = torch.randperm(len(y_all)).to(device)
    start = time.perf_counter()
    for idx in order.split(batch_size):
        x = ((x_all[idx] - mean) / std).contiguous(memory_format=fmt)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(model(x).float(), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(y_all) / (time.perf_counter() - start)


def trainer_run(data: DataSplits, model_cfg: ModelConfig, batch_size: int,
                device: torch.device) -> float:
    """One epoch of the Trainer with its default recipe (train part only); returns images/s."""
    seed_everything(0)
    model = build_model(model_cfg, data.num_classes)
    cfg = TrainConfig(epochs=1, batch_size=batch_size, lr=1e-3, warmup="linear")
    return Trainer(cfg, model, data, device=device).fit()[-1].images_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run of a few seconds")
    parser.add_argument("--model", default="mobilenetv3_small_050")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n_per_class, repeats = (8, 1) if args.quick else (120, args.repeats)
    device = default_device()
    data = build_dataset(DatasetConfig(name="defects", n_per_class=n_per_class), args.image_size)
    model_cfg = ModelConfig(name=args.model, image_size=args.image_size)
    bare_loop(data, model_cfg, args.batch_size, device)  # warm-up (allocator, kernels)
    runs: dict[str, list[float]] = {"trainer": [], "bare": [], "bare_bf16": [],
                                    "bare_channels_last": []}
    for _ in range(repeats):
        runs["trainer"].append(trainer_run(data, model_cfg, args.batch_size, device))
        runs["bare"].append(bare_loop(data, model_cfg, args.batch_size, device))
        runs["bare_bf16"].append(bare_loop(data, model_cfg, args.batch_size, device,
                                           dtype=torch.bfloat16))
        runs["bare_channels_last"].append(bare_loop(data, model_cfg, args.batch_size, device,
                                                    channels_last=True))
    median = {k: statistics.median(v) for k, v in runs.items()}
    ratio = median["trainer"] / median["bare"]
    print(f"{'run':<22}{'images/s (median)':>20}{'vs bare fp32':>14}")
    for name, value in median.items():
        print(f"{name:<22}{value:>20.1f}{value / median['bare']:>14.3f}")
    print(f"trainer / bare = {ratio:.3f} (target >= 0.95) on {device.type}, "
          f"{args.model} {args.image_size}px, batch {args.batch_size}, {len(data.train_y)} images")
    result = {
        "quick": args.quick, "device": device.type, "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(), "model": args.model,
        "image_size": args.image_size, "batch_size": args.batch_size,
        "train_images": len(data.train_y), "repeats": repeats, "images_per_second": runs,
        "median": median, "ratio_trainer_vs_bare": ratio,
        "bf16_vs_fp32": median["bare_bf16"] / median["bare"],
        "channels_last_vs_contiguous": median["bare_channels_last"] / median["bare"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
