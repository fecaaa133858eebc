"""Trainer throughput against a bare PyTorch loop: same model, data, batch, precision, one process.

For MobileNetV3 (``mobilenetv3_small_050``) and EfficientNet-B0 (``efficientnet_b0``) on the
generated defects set, each variant below trains one epoch per round; rounds are interleaved and
the variants' order rotates every round, so machine load and warm-up hit them alike. The first
``--warmup`` rounds are discarded. Each round gives a paired ratio trainer / bare (same
precision, same memory format); the figure is the median of those ratios with its IQR, beside
the median images/s of each variant (target: ratio >= 0.95).

- CPU: the Trainer's default recipe (fp32, contiguous) against a bare fp32 loop.
- CUDA: like for like twice: Trainer with AMP (fp16 autocast + GradScaler, channels_last: its
  defaults on CUDA) against a bare loop doing the same, and both in fp32 contiguous; plus the
  AMP vs fp32 speed-up of each.

CPU runs use one torch thread by default (``--threads``), like the study benchmarks' processes.
Images/s count the training part only (the Trainer's own ``images_per_second``: its epoch's
train loop including the per-step schedule, finite-loss check and loss bookkeeping; its
evaluation is left out, as is the bare loop's lack of one).

    python -m benchmarks.bench_trainer --quick             # seconds
    python -m benchmarks.bench_trainer                     # results/trainer.json
    python -m benchmarks.bench_trainer --name trainer_cuda # on a GPU machine: a separate file
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script (python benchmarks/bench_trainer.py)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch.nn.functional as F

from benchmarks.common import check, fmt_spread, median_spread, set_threads, table, write_result
from hpo.config import DatasetConfig, ModelConfig
from hpo.data import DataSplits, build_dataset
from hpo.models import build_model
from hpo.training import TrainConfig, Trainer, seed_everything

MODELS = {"MobileNetV3": "mobilenetv3_small_050", "EfficientNet-B0": "efficientnet_b0"}
TARGET = 0.95


class _Pause(Exception):
    """Raised by the reporter after each epoch: ``Trainer.fit`` stops, a later call goes on."""


def _pause(_result) -> None:
    raise _Pause


@dataclass
class Variant:
    name: str
    kind: str  # "trainer" or "bare"
    amp: bool  # fp16 autocast + GradScaler (CUDA only)
    channels_last: bool
    bf16: bool = False  # CPU extra: bf16 autocast on the bare loop


class TrainerRun:
    """The Trainer with its recipe for this precision, one epoch per :meth:`epoch` call."""

    def __init__(self, v: Variant, data: DataSplits, model_cfg: ModelConfig, batch_size: int,
                 epochs: int, device: torch.device) -> None:
        seed_everything(0)
        model = build_model(model_cfg, data.num_classes)
        cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=1e-3, amp=v.amp,
                          channels_last=v.channels_last)
        self.trainer = Trainer(cfg, model, data, device=device)

    def epoch(self) -> float:
        try:
            self.trainer.fit(reporter=_pause)
        except _Pause:
            pass
        return self.trainer.history[-1].images_per_second


class BareRun:
    """The plainest loop doing the same work: AdamW, cross-entropy, same batches and format."""

    def __init__(self, v: Variant, data: DataSplits, model_cfg: ModelConfig, batch_size: int,
                 epochs: int, device: torch.device) -> None:
        seed_everything(0)
        self.v, self.device, self.batch_size = v, device, batch_size
        self.fmt = torch.channels_last if v.channels_last else torch.contiguous_format
        self.model = build_model(model_cfg, data.num_classes).to(device, memory_format=self.fmt)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.scaler = torch.amp.GradScaler("cuda", enabled=v.amp)
        self.x, self.y = data.train_x.to(device), data.train_y.to(device)
        self.mean = data.mean.view(1, -1, 1, 1).to(device)
        self.std = data.std.view(1, -1, 1, 1).to(device)
        self.n = 0

    def epoch(self) -> float:
        self.model.train()
        dtype = torch.bfloat16 if self.v.bf16 else torch.float16
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        order = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(self.n))
        self.n += 1
        for idx in order.to(self.device).split(self.batch_size):
            x = ((self.x[idx] - self.mean) / self.std).contiguous(memory_format=self.fmt)
            with torch.autocast(self.device.type, dtype=dtype, enabled=self.v.amp or self.v.bf16):
                loss = F.cross_entropy(self.model(x).float(), self.y[idx])
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            self.opt.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return len(self.y) / (time.perf_counter() - start)


def variants(device: torch.device, extras: bool) -> list[Variant]:
    if device.type == "cuda":
        return [Variant("trainer_amp", "trainer", True, True),
                Variant("bare_amp", "bare", True, True),
                Variant("trainer_fp32", "trainer", False, False),
                Variant("bare_fp32", "bare", False, False)]
    out = [Variant("trainer_fp32", "trainer", False, False),
           Variant("bare_fp32", "bare", False, False)]
    if extras:  # how the CPU defaults were chosen: bf16 autocast and channels_last, bare loop
        out += [Variant("bare_bf16", "bare", False, False, bf16=True),
                Variant("bare_channels_last", "bare", False, True)]
    return out


def measure(label: str, model_name: str, data: DataSplits, image_size: int, batch_size: int,
            warmup: int, repeats: int, device: torch.device, extras: bool) -> dict:
    model_cfg = ModelConfig(name=model_name, image_size=image_size)
    vs = variants(device, extras)
    rounds = warmup + repeats
    runs = {v.name: (TrainerRun if v.kind == "trainer" else BareRun)(
        v, data, model_cfg, batch_size, rounds, device) for v in vs}
    ips: dict[str, list[float]] = {v.name: [] for v in vs}
    for r in range(rounds):
        order = vs[r % len(vs):] + vs[: r % len(vs)]  # rotate who goes first
        for v in order:
            value = runs[v.name].epoch()
            runs[v.name].last = value
            if r >= warmup:
                ips[v.name].append(value)
        done = "" if r >= warmup else " (warm-up)"
        print(f"  {label} round {r + 1}/{rounds}{done}: "
              + ", ".join(f"{k} {runs[k].last:.1f}" for k in ips) + " img/s", flush=True)
    stats = {k: median_spread(v) for k, v in ips.items()}
    precisions = ["amp", "fp32"] if device.type == "cuda" else ["fp32"]
    ratios = {}
    for p in precisions:
        paired = [t / b for t, b in zip(ips[f"trainer_{p}"], ips[f"bare_{p}"], strict=True)]
        ratios[f"trainer_vs_bare_{p}"] = median_spread(paired)
    speedups = {}
    if device.type == "cuda":
        for kind in ("trainer", "bare"):
            paired = [a / f for a, f in zip(ips[f"{kind}_amp"], ips[f"{kind}_fp32"], strict=True)]
            speedups[f"{kind}_amp_vs_fp32"] = median_spread(paired)
    else:
        for extra in ("bare_bf16", "bare_channels_last"):
            if extra in ips:
                paired = [a / f for a, f in zip(ips[extra], ips["bare_fp32"], strict=True)]
                speedups[f"{extra}_vs_bare_fp32"] = median_spread(paired)
    return {"model": label, "timm_name": model_name, "images_per_second": ips,
            "images_per_second_stats": stats, "ratios": ratios, "speedups": speedups}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run of a few seconds")
    parser.add_argument("--name", default="trainer", help="JSON name under results/")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--image-size", type=int, help="default 32 on CPU, 64 on CUDA")
    parser.add_argument("--batch-size", type=int, help="default 32 on CPU, 128 on CUDA")
    parser.add_argument("--n-per-class", type=int, help="defects images per class (5 classes, "
                        "80%% train); default 200 on CPU, 400 on CUDA")
    parser.add_argument("--warmup", type=int, default=2, help="rounds discarded")
    parser.add_argument("--repeats", type=int, help="measured rounds (default 10; 8 for "
                        "EfficientNet-B0 on CPU)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on CPU (default 1: with 2 OpenMP threads on a "
                             "shared 2-core machine any other process stalls every op; 0: "
                             "torch's own choice)")
    parser.add_argument("--extras", action="store_true",
                        help="CPU: also bf16 autocast and channels_last on the bare loop")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        set_threads(args.threads)
    cuda = device.type == "cuda"
    size = args.image_size or (64 if cuda else 32)
    batch = args.batch_size or (128 if cuda else 32)
    npc = args.n_per_class or (400 if cuda else 200)
    warmup = args.warmup
    if args.quick:
        npc, batch, warmup = min(npc, 8), min(batch, 16), 1
    if cuda:
        torch.backends.cudnn.benchmark = True
    data = build_dataset(DatasetConfig(name="defects", n_per_class=npc), size)
    results = []
    for label in args.models:
        repeats = args.repeats or (3 if args.quick else 8 if label == "EfficientNet-B0" and not cuda
                                   else 10)
        started = time.perf_counter()
        results.append(measure(label, MODELS[label], data, size, batch, warmup, repeats, device,
                               args.extras))
        results[-1]["seconds"] = round(time.perf_counter() - started, 1)
        results[-1]["repeats"] = repeats

    rows, checks = [], []
    for r in results:
        st = r["images_per_second_stats"]
        for key, ratio in r["ratios"].items():
            p = key.rsplit("_", 1)[1]
            ok = ratio["median"] >= TARGET
            rows.append([r["model"], p, fmt_spread(st[f"trainer_{p}"], "{:.1f}", "iqr"),
                         fmt_spread(st[f"bare_{p}"], "{:.1f}", "iqr"),
                         fmt_spread(ratio, "{:.3f}", "iqr"), f">= {TARGET}",
                         "pass" if ok else "MISS"])
            checks.append(check(f"{r['model']} trainer/bare ({p})", round(ratio["median"], 4),
                                f">= {TARGET}", ok))
    md = table(["model", "precision", "trainer img/s (median, IQR)", "bare img/s (median, IQR)",
                "trainer / bare (median of paired rounds, IQR)", "target", "result"], rows)
    extra_rows = [[r["model"], k.replace("_", " "), fmt_spread(s, "{:.2f}x", "iqr")]
                  for r in results for k, s in r["speedups"].items()]
    if extra_rows:
        md += "\n\n" + table(["model", "speed-up (paired rounds)", "median (IQR)"], extra_rows)
    print(md)
    result = {
        "title": f"Trainer throughput vs a bare PyTorch loop ({device.type})",
        "target": f"trainer / bare images/s >= {TARGET} (like for like: same precision and "
                  "memory format)",
        "table_md": md, "device": device.type,
        "settings": {"dataset": "defects", "n_per_class": npc, "train_images": len(data.train_y),
                     "image_size": size, "batch_size": batch, "warmup_rounds": warmup,
                     "threads": torch.get_num_threads(), "extras": args.extras},
        "models": results, "checks": checks,
        "passed": all(c["passed"] for c in checks),
    }
    print("wrote", write_result(args.name, result, args.quick))


if __name__ == "__main__":
    main()
