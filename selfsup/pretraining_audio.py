"""The audio pretraining recipe: files -> cached features -> cropped, corrupted batches ->
objective; the shared part of `selfsup pretrain` (selfsup/pretraining.py) does the rest.

Under torchrun rank 0 alone computes the feature cache (the others wait, then read it).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from selfsup import distributed
from selfsup.checkpoint import RUN_FORMAT, atomic_write_text
from selfsup.data.audio_batches import load_frames, prepare_audio_data
from selfsup.objectives import build_objective
from selfsup.prepared import Prepared, eval_summary
from selfsup.seeds import HELDOUT_OFFSET

FEATURE_STATS = "feature_stats.json"  # global CMVN statistics of a run's training clips


def prepare_audio(cfg, out: Path, resume: bool, encoding: str, log) -> Prepared:
    with distributed.main_first():  # no two ranks compute the feature cache
        items, frames = load_frames(cfg.data, log)
    cfg.model.feature_dim = int(frames[0].shape[1])
    targets = cfg.data.frame_targets(items, frames, cfg)  # per-clip labels (HuBERT's), if any
    if targets is not None and targets.note:
        log(targets.note)
    cfg.model.validate()
    record = {"format": RUN_FORMAT, **cfg.to_dict()}
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
    model = build_objective(cfg.objective, cfg.model)
    seed = cfg.train.seed
    data = prepare_audio_data(cfg.data, frames, cfg.train.batch_size, seed, model.audio_needs(),
                              seed + HELDOUT_OFFSET, targets)  # fmt: skip

    def save(folder: Path) -> None:
        if data.feature_stats is not None:  # JSON, so that no one unpickles a run's file
            mean, std = data.feature_stats
            stats = {"mean": np.asarray(mean).tolist(), "std": np.asarray(std).tolist()}
            atomic_write_text(folder / FEATURE_STATS, json.dumps(stats))

    def summarise(final: dict, minutes: float, folder: Path) -> dict:
        summary = eval_summary(cfg.train.steps, final, minutes, data.stats)
        loss = final.get("eval_loss")
        if loss is not None and math.isfinite(loss):
            log(f"held-out loss {loss:.4f}; {minutes:.1f} min; run in {folder}")
        return summary

    s = data.stats
    chunks = ""
    if s["chunked_clips"]:
        chunks = (
            f"; {s['chunked_clips']:,} long training clips cut into {s['chunks']:,} chunks, "
            f"{s['train_examples']:,} examples an epoch"
        )
    unit = "samples" if cfg.data.features.kind == "wave" else "frames"
    values = "" if unit == "samples" else f" of {s['feature_dim']} values"
    log(
        f"data: {s['clips']:,} clips, {s['hours'] * 60:.1f} minutes of audio, {s['frames']:,} "
        f"{unit}{values}; {s['train_clips']:,} training / {s['heldout_clips']:,} held-out "
        f"clips, crops of up to {cfg.data.max_frames} {unit}{chunks}"
    )
    return Prepared(model, data.batches, data.eval_batches, s, record, save, summarise)
