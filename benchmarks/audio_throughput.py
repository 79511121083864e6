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
share of selfsup's step time spent building batches (crop, collate, mask; the median batch
after the warm-up ones, which carry the epoch's length bucketing and first-call costs).

`--objective wav2vec2` compares selfsup's wav2vec 2.0 objective (arXiv:2006.11477) with
transformers' Wav2Vec2ForPreTraining of the same size instead:

    python benchmarks/audio_throughput.py --objective wav2vec2 --sizes tiny mini --profile

- the size: the preset's shape as `selfsup pretrain --objective wav2vec2 --preset SIZE` builds
  it (the conv front end as wide as the model, at most 512 channels), the objective's defaults
  (G = 2 x V = 320 codes, K = 100 distractors, 256-wide projections);
- the batches, the same for both: the clips above as 16 kHz waveforms, normalised per
  utterance, crops of at most --max-samples (2 s by default: FSDD's digits are about 0.5 s,
  TIMIT's sentences 2-4 s), length-bucketed by selfsup's AudioBatches, with selfsup's mask and
  distractors (passed to transformers as mask_time_indices / sampled_negative_indices, with the
  attention mask);
- each side's loss is its contrastive + diversity loss per masked frame (selfsup's also has its
  feature penalty, which transformers lacks); transformers draws its Gumbel noise from the
  global RNG, selfsup from the batch's seeds.
`--profile` times each part alone, forward + backward on one batch (the conv front end, the
quantizer, the Transformer; the rest of the step is the projections, masking, noise and loss).
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
from selfsup.interop.hf_wav2vec2 import wav2vec2_to_hf_config  # noqa: E402
from selfsup.keys import (  # noqa: E402
    FEATURES,
    FRAME_MASK,
    NEGATIVES,
    NOISE_SEED,
    PADDING_MASK,
    TARGETS,
    TIME_MASK,
)
from selfsup.objectives.base import batch_loss  # noqa: E402
from selfsup.objectives.mockingjay import Mockingjay, MockingjayConfig  # noqa: E402
from selfsup.objectives.wav2vec2 import Wav2Vec2, utterance_gumbel_noise  # noqa: E402
from selfsup.presets.audio import MODELS, audio_preset  # noqa: E402
from selfsup.train import param_groups  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MAX_FRAMES, STACK = 500, 3
SAMPLE_RATE = 16000
SECONDS_PER_FRAME = 160 / SAMPLE_RATE


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


def built_batches(batches, n: int, warmup: int) -> tuple[list[dict], float]:
    """Batches 0..n-1 and the median seconds one took to build after the `warmup` first ones
    (which carry one-off costs: the epoch's length buckets, the first call of each op)."""
    out, seconds = [], []
    for k in range(n):
        t = time.perf_counter()
        out.append(batches[k])
        seconds.append(time.perf_counter() - t)
    return out, statistics.median(seconds[warmup:])


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


def measure(sides: dict, warmup: int, repeats: int, seconds=audio_seconds) -> dict:
    """sides: name -> (step, batches). Audio s/s of each side, median over repeats; `seconds`
    is the real audio of a batch."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(repeats + 1):  # the first pass warms up (oneDNN primitives, allocator)
        for name, (step, batches) in sides.items():
            for b in batches[:warmup]:
                step(b)
            t = time.perf_counter()
            for b in batches[warmup:]:
                step(b)
            if r:
                rates[name].append(sum(map(seconds, batches[warmup:])) /
                                   (time.perf_counter() - t))  # fmt: skip
    return {name: statistics.median(v) for name, v in rates.items()}


# --------------------------------------------------------------------------------------------
# wav2vec 2.0: selfsup's objective against transformers' Wav2Vec2ForPreTraining
# --------------------------------------------------------------------------------------------


def wave_seconds(batch: dict) -> float:
    return float((~batch[PADDING_MASK]).sum()) / SAMPLE_RATE


def wav2vec2_pair(size: str):
    """selfsup's wav2vec 2.0 objective at preset `size` (as `selfsup pretrain --objective
    wav2vec2 --preset SIZE` builds it) and transformers' Wav2Vec2ForPreTraining of the same
    shape and objective settings, both in train mode."""
    import transformers

    run = audio_preset(size)
    run.set_objective("wav2vec2")
    torch.manual_seed(0)
    ours = Wav2Vec2.build(run.objective, run.model).train()
    c = run.objective
    hf_cfg = transformers.Wav2Vec2Config.from_dict({
        **wav2vec2_to_hf_config(run.model), "num_codevector_groups": c.n_groups,
        "num_codevectors_per_group": c.n_entries, "codevector_dim": c.code_dim,
        "proj_codevector_dim": c.proj_dim, "num_negatives": c.n_negatives,
        "contrastive_logits_temperature": c.temperature,
        "diversity_loss_weight": c.diversity_weight, "feat_quantizer_dropout": 0.0,
    })  # fmt: skip
    torch.manual_seed(0)
    hf = transformers.Wav2Vec2ForPreTraining(hf_cfg).train()
    return ours, hf


def hf_args(batch: dict) -> dict:
    """transformers' inputs for one of selfsup's batches: the waves, the attention mask, the
    same mask and distractors (as flat indices into the batch's frames)."""
    mask = batch[TIME_MASK]
    B, T = mask.shape
    negatives = batch[NEGATIVES].long() + (torch.arange(B) * T)[:, None, None]
    return {"input_values": batch[FEATURES][..., 0],
            "attention_mask": (~batch[PADDING_MASK]).long(), "mask_time_indices": mask,
            "sampled_negative_indices": negatives}  # fmt: skip


def hf_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    return model(**hf_args(batch)).loss / batch[TIME_MASK].sum()  # per masked frame, as ours


def _seconds(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def wav2vec2_profile(ours: nn.Module, hf: nn.Module, batch: dict) -> dict:
    """{part: (selfsup s, transformers s)}: forward + backward of each part alone on `batch`
    (inputs detached, so each part's own cost), and of the whole loss."""
    wave, pad, mask = batch[FEATURES][..., 0], batch[PADDING_MASK], batch[TIME_MASK]
    enc = ours.encoder
    with torch.no_grad():
        out = enc(wave, pad, mask=mask)
        h = hf.wav2vec2(
            **{k: v for k, v in hf_args(batch).items() if k != "sampled_negative_indices"}
        )
    frame_keep = (~out["padding_mask"]).long()
    G, V = ours.cfg.n_groups, ours.cfg.n_entries
    noise = utterance_gumbel_noise(batch[NOISE_SEED], mask, G, V)
    z, hz = out["extract_features"][mask], h.extract_features  # ours: masked frames only

    def grad(x):
        return x.detach().requires_grad_()

    def back(y):  # a dense gradient: sum()'s is a stride-0 view, a slow path for oneDNN
        y.square().sum().backward()

    parts = {
        "conv front end": (lambda: back(enc.frontend(wave)),
                           lambda: back(hf.wav2vec2.feature_extractor(wave))),
        "quantizer": (lambda: back(ours.quantizer(grad(z), noise=noise)["quantized"]),
                      lambda: back(hf.quantizer(grad(hz), mask_time_indices=mask)[0])),
        "Transformer": (
            lambda: back(enc.contextualise(grad(out["projected"]), out["padding_mask"])[0]),
            # (* 1: transformers writes into its input)
            lambda: back(hf.wav2vec2.encoder(grad(out["projected"]) * 1,
                                             attention_mask=frame_keep)[0])),
        "whole loss": (lambda: batch_loss(ours, batch).backward(),
                       lambda: hf_loss(hf, batch).backward()),
    }  # fmt: skip
    return {name: (_seconds(a), _seconds(b)) for name, (a, b) in parts.items()}


def run_wav2vec2(args) -> list[dict]:
    items = speech_items()
    t = time.perf_counter()
    waves = cached_features(items, FeatureConfig(kind="wave", cmvn="utterance"), args.cache_dir,
                            log=print)  # fmt: skip
    lengths = np.array([len(w) for w in waves]) / SAMPLE_RATE
    print(f"waves of {len(items)} clips ready in {time.perf_counter() - t:.1f}s: "
          f"{lengths.mean():.2f} s on average (median {np.median(lengths):.2f}, max "
          f"{lengths.max():.2f}), crops of at most {args.max_samples / SAMPLE_RATE:g} s",
          flush=True)  # fmt: skip
    n, rows = args.warmup + args.steps, []
    for size in args.sizes:
        ours, hf = wav2vec2_pair(size)
        batches = AudioBatches(waves, np.arange(len(waves)), args.batch_size, args.max_samples,
                               0, ours.audio_needs().corrupt)  # fmt: skip
        mine, build_s = built_batches(batches, n, args.warmup)
        name = "transformers Wav2Vec2ForPreTraining"
        sides = {"selfsup": (step_fn(ours, batch_loss), mine), name: (step_fn(hf, hf_loss), mine)}
        res = measure(sides, args.warmup, args.repeats, wave_seconds)
        step_s = sum(map(wave_seconds, mine[args.warmup :])) / args.steps / res["selfsup"]
        padding = 1 - sum(map(wave_seconds, mine)) / sum(
            b[PADDING_MASK].numel() / SAMPLE_RATE for b in mine)  # fmt: skip
        row = {"size": size, "reference": name, "selfsup_audio_s_per_s": round(res["selfsup"], 1),
               "reference_audio_s_per_s": round(res[name], 1),
               "ratio": round(res["selfsup"] / res[name], 2), "selfsup_padding": round(padding, 3),
               "reference_padding": round(padding, 3),
               "data_share": round(build_s / (build_s + step_s), 4)}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.profile:
            print(f"{size}: seconds of forward + backward on one batch of "
                  f"{wave_seconds(mine[0]):.1f} s of audio, each part alone")  # fmt: skip
            for part, (a, b) in wav2vec2_profile(ours, hf, mine[0]).items():
                print(f"  {part:16s} selfsup {a:7.3f}  transformers {b:7.3f}  ({b / a:.2f}x)")
    return rows


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
    p.add_argument("--objective", default="mockingjay", choices=["mockingjay", "wav2vec2"],
                   help="wav2vec2: against transformers' Wav2Vec2ForPreTraining")  # fmt: skip
    p.add_argument("--max-samples", type=int, default=32000, help="wav2vec2: crop length")
    p.add_argument("--profile", action="store_true", help="wav2vec2: time each part alone")
    p.add_argument("--write", action="store_true", help="add the table to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    print(versions(), flush=True)
    if args.objective == "wav2vec2":
        if "--batch-size" not in (argv if argv is not None else sys.argv):
            args.batch_size = 8
        return report(run_wav2vec2(args), args, "wav2vec 2.0 pretraining throughput")
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
        mine, build_s = built_batches(batches, n, args.warmup)
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
    report(rows, args, "Speech pretraining throughput")


def report(rows: list[dict], args, title: str) -> None:
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
        head = f"## {title} (CPU: {cpu_name()})"
        write_section(head, "audio_throughput.py", sys.argv[1:], versions(), text)


if __name__ == "__main__":
    main()
