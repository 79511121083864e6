"""Image pretraining throughput (issue 13): images per second of a SimCLR step on the ResNet
and the ViT presets, the share of a step spent building its batch (reading the uint8 cache and
augmenting), the backbone's model FLOP utilisation against a matmul and a conv peak measured in
the same run, and selfsup's batched augmentation against a per-image PIL pipeline of the same
transforms (benchmarks/image_augment_pil.py).

    python benchmarks/image_throughput.py --models mini vit-mini --batch-size 256 --threads 2
    python benchmarks/image_throughput.py --models mini --write     # into benchmarks/RESULTS.md

Images: the CIFAR-10 subset's training images (../shared/data/cifar10), decoded once into
selfsup's cache (the same path pretraining takes); random uint8 images when it is absent. A
step is forward + backward + AdamW on 2 views of --batch-size images (medians of --steps after
--warmup steps). FLOPs of one step are counted by torch.utils.flop_counter on the first step
(backbone and projector, forward and backward; selfsup's oneDNN linears counted as F.linear,
which the counter sees); MFU is those FLOPs per second over the peak
of a large fp32 matmul (and of a 3x3 conv of the backbone's widest stage) timed here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from functools import partial  # noqa: E402

from image_augment_pil import pil_side, selfsup_side  # noqa: E402
from machine import cpu_name, versions, write_section  # noqa: E402

from selfsup.config import TrainConfig  # noqa: E402
from selfsup.corrupt.views import view_recipes  # noqa: E402
from selfsup.data.image import ImageBatches, ImageNeeds, read_images  # noqa: E402
from selfsup.layers import linear as linear_layers  # noqa: E402
from selfsup.objectives.base import batch_loss  # noqa: E402
from selfsup.objectives.image_base import views_corrupt  # noqa: E402
from selfsup.objectives.simclr import SimCLR, SimCLRConfig  # noqa: E402
from selfsup.presets.image import MODELS  # noqa: E402
from selfsup.train import build_optimizer  # noqa: E402

CIFAR = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "cifar10-jpeg-subset.zip"
)


def images(n: int) -> tuple[np.ndarray, str]:
    if CIFAR.exists():
        data = read_images(CIFAR, "train", 32, log=lambda _: None).images[:n]
        return np.array(data), "CIFAR-10 subset"  # a copy: the cache is read-only
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), "random uint8"


def peak_matmul(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times)


def peak_conv(channels: int, side: int = 16, batch: int = 64, repeats: int = 5) -> float:
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    x = torch.randn(batch, channels, side, side).to(memory_format=torch.channels_last)
    conv = conv.to(memory_format=torch.channels_last)
    with torch.no_grad():
        conv(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - t)
    return 2 * batch * side * side * channels * channels * 9 / min(times)


def step_flops(model, batch) -> float:
    """The step's FLOPs as torch's counter sees aten ops: selfsup's oneDNN linears (layers/
    linear.py) are opaque to it, so they run as F.linear while counting."""
    real = linear_layers._onednn
    linear_layers._onednn = lambda *_: False
    try:
        with FlopCounterMode(display=False) as counter:
            batch_loss(model, batch).backward()
    finally:
        linear_layers._onednn = real
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def measure(name: str, data: np.ndarray, batch_size: int, steps: int, warmup: int) -> dict:
    torch.manual_seed(0)
    cfg = SimCLRConfig(proj_hidden=512, proj_dim=128)
    model = SimCLR.build(cfg, MODELS[name])
    recipes = view_recipes("simclr", 2)
    needs = ImageNeeds(corrupt=partial(views_corrupt, recipes))
    batches = ImageBatches(data, np.arange(len(data)), batch_size, seed=0, corrupt=needs.corrupt)
    opt = build_optimizer(model, TrainConfig(lr=1e-3))
    model.train()
    flops = step_flops(model, batches[0])
    build, step = [], []
    for k in range(warmup + steps):
        t0 = time.perf_counter()
        batch = batches[k]
        t1 = time.perf_counter()
        batch_loss(model, batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        if k >= warmup:
            build.append(t1 - t0)
            step.append(t2 - t1)
    b, s = statistics.median(build), statistics.median(step)
    shape = MODELS[name]
    widest = max(shape.widths) if shape.arch == "resnet" else None
    return {"model": name, "params": sum(p.numel() for p in model.encoder.parameters()),
            "images_per_s": batch_size / (b + s), "step_s": s, "build_s": b,
            "build_share": b / (b + s), "flops": flops,
            "widest": widest}  # fmt: skip


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mini", "vit-mini"], choices=list(MODELS))
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="write the table into RESULTS.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data, source = images(max(2048, args.batch_size * (args.steps + args.warmup)))
    mm = peak_matmul()
    rows = []
    for name in args.models:
        r = measure(name, data, args.batch_size, args.steps, args.warmup)
        conv = peak_conv(r["widest"]) if MODELS[name].arch == "resnet" else None
        r["mfu_matmul"] = r["flops"] / r["step_s"] / mm
        r["mfu_conv"] = None if conv is None else r["flops"] / r["step_s"] / conv
        rows.append(r)
        print(r, flush=True)
    # batched augmentation against per-image PIL, on the same 512 images
    recipes = view_recipes("simclr", 2)
    sample = data[:512]
    t = time.perf_counter()
    selfsup_side(sample, recipes, torch.Generator().manual_seed(0), 256)
    ours = len(sample) / (time.perf_counter() - t)
    t = time.perf_counter()
    pil_side(sample, recipes, np.random.default_rng(0))
    pil = len(sample) / (time.perf_counter() - t)
    lines = [
        f"{cpu_name()}, {args.threads} threads, fp32, SimCLR (2 views), batch {args.batch_size}, "
        f"{source}; matmul peak {mm / 1e9:.0f} GFLOP/s",
        "",
        "| backbone | params | images/s | step s | batch building | GFLOP/step | MFU (matmul) "
        "| MFU (conv) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        conv = "-" if r["mfu_conv"] is None else f"{100 * r['mfu_conv']:.0f}%"
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['images_per_s']:.0f} | "
            f"{r['step_s']:.2f} | {100 * r['build_share']:.1f}% | {r['flops'] / 1e9:.0f} | "
            f"{100 * r['mfu_matmul']:.0f}% | {conv} |"
        )
    lines += ["", f"augmentation, 512 images x 2 simclr views: selfsup {ours:.0f} images/s, "
              f"per-image PIL {pil:.0f} images/s, ratio {ours / pil:.2f}x"]  # fmt: skip
    table = "\n".join(lines)
    print(table)
    if args.write:
        head = f"## Image pretraining throughput (CPU: {cpu_name()})"
        write_section(head, "image_throughput.py", sys.argv[1:], versions(), table)


if __name__ == "__main__":
    main()
