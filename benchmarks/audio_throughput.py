"""Speech pretraining throughput: selfsup's Mockingjay step against a plain PyTorch
implementation of the same model, in one run, on the same clips.

    python benchmarks/audio_throughput.py                      # mini, fp32, real speech
    python benchmarks/audio_throughput.py --sizes tiny mini --repeats 3 --write

Clips: the speech that audio pretraining uses here (FSDD's pretraining files, timit-sample's,
yesno's; ../shared/data), log-mel features computed once (cached, as `selfsup pretrain` does),
each example a crop of at most 500 frames, 3-frame stacking, Mockingjay's masking
(selfsup.corrupt.frames.mask_time) on both sides.

- selfsup: `AudioBatches` (batches of clips of similar length, so little padding) and the
  Mockingjay objective (selfsup's encoder, oneDNN linears, L1 on the masked values only).
- plain PyTorch: the same shapes as torch.nn.TransformerEncoder (post-LN, GELU) with a key
  padding mask, the input projection, sinusoidal positions and the head written out, batches
  drawn in random order and padded to the batch's longest clip, as a first implementation
  would. The ratio therefore measures what length-bucketing saves (padding) as much as the
  model code; `--same-batches` gives both sides selfsup's batches, which isolates the model.

Both sides do a full step: forward, backward, clip to 1.0, AdamW; no dropout. Reported: real
audio seconds per second of step time (median of repeats, sides interleaved), the ratio, and the
share of selfsup's step time spent building batches (crop, collate, mask).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_name, versions, write_section  # noqa: E402

from selfsup.corrupt.frames import mask_time  # noqa: E402
from selfsup.data.audio import AudioItem, collate_frames, crop  # noqa: E402
from selfsup.data.audio_batches import AudioBatches  # noqa: E402
from selfsup.data.features import FeatureConfig, cached_features  # noqa: E402
from selfsup.encoders.audio import sinusoidal_positions, stack_frames  # noqa: E402
from selfsup.keys import FEATURES, FRAME_MASK, PADDING_MASK, TARGETS  # noqa: E402
from selfsup.objectives.base import batch_loss  # noqa: E402
from selfsup.objectives.mockingjay import Mockingjay, MockingjayConfig  # noqa: E402
from selfsup.presets.audio import MODELS  # noqa: E402
from selfsup.train import param_groups  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MAX_FRAMES, STACK = 500, 3
SECONDS_PER_FRAME = 160 / 16000


def speech_items() -> list[AudioItem]:
    splits = ROOT / "selfsup" / "eval" / "splits"
    items = []
    for name, folder in (("fsdd", "fsdd"), ("timit_sample", "timit-sample"), ("yesno", "yesno")):
        d = json.loads((splits / f"{name}.json").read_text())
        items += [AudioItem(str(DATA / folder / p)) for p in d["pretrain"]]
    return items


class PlainMockingjay(nn.Module):
    """Mockingjay written directly on torch.nn: stacked frames -> linear -> + sinusoidal
    positions -> LayerNorm -> nn.TransformerEncoder -> dense/GELU/LayerNorm/linear -> L1."""

    def __init__(self, feature_dim: int, dim: int, n_layers: int, n_heads: int, ffn_dim: int):
        super().__init__()
        self.dim = dim
        self.input = nn.Linear(STACK * feature_dim, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        layer = nn.TransformerEncoderLayer(dim, n_heads, ffn_dim, dropout=0.0, activation="gelu",
                                           batch_first=True, layer_norm_eps=1e-12)  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim, eps=1e-12),
                                  nn.Linear(dim, STACK * feature_dim))  # fmt: skip

    def forward(self, batch: dict) -> torch.Tensor:
        x, pad = stack_frames(batch[FEATURES], batch[PADDING_MASK], STACK)
        h = self.norm(self.input(x) + sinusoidal_positions(x.shape[1], self.dim))
        h = self.encoder(h, src_key_padding_mask=pad)
        B, T, F = batch[TARGETS].shape
        pred = self.head(h).reshape(B, -1, F)[:, :T]
        mask = batch[FRAME_MASK]
        return (pred[mask] - batch[TARGETS][mask]).abs().mean()


def mockingjay_batch(frames: list[np.ndarray], g: torch.Generator) -> dict:
    b = collate_frames(frames)
    x, pad = b[FEATURES], b[PADDING_MASK]
    corrupted, chosen = mask_time(x, pad, g, 0.15, 7, STACK)
    return {**b, FEATURES: corrupted, TARGETS: x, FRAME_MASK: chosen[..., None].expand_as(x)}


def plain_batches(frames, batch_size: int, n: int, seed: int) -> list[dict]:
    """Random clips (no grouping by length), cropped as selfsup crops, padded to the longest."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        idx = rng.choice(len(frames), batch_size, replace=False)
        crops = [crop(frames[i], MAX_FRAMES, rng) for i in idx]
        out.append(mockingjay_batch(crops, torch.Generator().manual_seed(seed + k)))
    return out


def step_fn(model: nn.Module, loss_of):
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-4, fused=True)

    def step(batch: dict) -> None:
        loss = loss_of(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def audio_seconds(batch: dict) -> float:
    return float((~batch[PADDING_MASK]).sum()) * SECONDS_PER_FRAME


def measure(sides: dict, warmup: int, repeats: int) -> dict:
    """sides: name -> (step, batches). Audio s/s of each side, median over repeats."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(repeats + 1):  # the first pass warms up (oneDNN primitives, allocator)
        for name, (step, batches) in sides.items():
            for b in batches[:warmup]:
                step(b)
            t = time.perf_counter()
            for b in batches[warmup:]:
                step(b)
            if r:
                rates[name].append(sum(map(audio_seconds, batches[warmup:])) /
                                   (time.perf_counter() - t))  # fmt: skip
    return {name: statistics.median(v) for name, v in rates.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["mini"], choices=list(MODELS))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=8, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--same-batches", action="store_true",
                   help="also the plain model on selfsup's batches (the model alone)")  # fmt: skip
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--write", action="store_true", help="add the table to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    print(versions(), flush=True)
    items = speech_items()
    t = time.perf_counter()
    frames = cached_features(items, FeatureConfig(), args.cache_dir, log=print)
    print(f"features of {len(items)} clips ready in {time.perf_counter() - t:.1f}s", flush=True)
    n = args.warmup + args.steps
    rows = []
    for size in args.sizes:
        m = MODELS[size]
        torch.manual_seed(0)
        from dataclasses import replace

        cfg = replace(m, feature_dim=80, stack=STACK)
        ours = Mockingjay.build(MockingjayConfig(), cfg).train()
        batches = AudioBatches(frames, np.arange(len(frames)), args.batch_size, MAX_FRAMES, 0,
                               ours.audio_needs().corrupt)  # fmt: skip
        t = time.perf_counter()
        mine = [batches[k] for k in range(n)]
        build_s = (time.perf_counter() - t) / n
        plain = PlainMockingjay(80, m.dim, m.n_layers, m.n_heads, m.ffn_dim).train()
        sides = {
            "selfsup": (step_fn(ours, batch_loss), mine),
            "plain": (step_fn(plain, lambda mod, b: mod(b)), plain_batches(frames, args.batch_size,
                                                                           n, 0)),
        }  # fmt: skip
        if args.same_batches:
            plain2 = PlainMockingjay(80, m.dim, m.n_layers, m.n_heads, m.ffn_dim).train()
            sides["plain, selfsup's batches"] = (step_fn(plain2, lambda mod, b: mod(b)), mine)
        res = measure(sides, args.warmup, args.repeats)
        step_s = sum(map(audio_seconds, mine[args.warmup :])) / args.steps / res["selfsup"]
        pad = {name: 1 - sum(audio_seconds(b) for b in bs) / sum(
            b[PADDING_MASK].numel() * SECONDS_PER_FRAME for b in bs) for name, (_, bs) in
            sides.items()}  # fmt: skip
        for name in sides:
            if name == "selfsup":
                continue
            row = {"size": size, "reference": name,
                   "selfsup_audio_s_per_s": round(res["selfsup"], 1),
                   "reference_audio_s_per_s": round(res[name], 1),
                   "ratio": round(res["selfsup"] / res[name], 2),
                   "selfsup_padding": round(pad["selfsup"], 3),
                   "reference_padding": round(pad[name], 3),
                   "data_share": round(build_s / (build_s + step_s), 4)}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = [
        "| size | reference | selfsup audio s/s | reference audio s/s | ratio | padding "
        "(selfsup / reference) | batch building share |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(
            f"| {r['size']} | {r['reference']} | {r['selfsup_audio_s_per_s']} | "
            f"{r['reference_audio_s_per_s']} | {r['ratio']}x | {r['selfsup_padding']:.1%} / "
            f"{r['reference_padding']:.1%} | {r['data_share']:.2%} |"
        )
    text = "\n".join(table)
    print(text)
    assert all(math.isfinite(r["ratio"]) for r in rows)
    if args.write:
        head = f"## Speech pretraining throughput (CPU: {cpu_name()})"
        write_section(head, "audio_throughput.py", sys.argv[1:], versions(), text)


if __name__ == "__main__":
    main()
