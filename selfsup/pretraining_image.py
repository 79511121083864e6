"""The image pretraining recipe: files -> decoded uint8 images (cached) -> augmented batches ->
objective; the shared part of `selfsup pretrain` (selfsup/pretraining.py) does the rest.

Under torchrun rank 0 alone decodes the images into the cache (the others wait, then read it),
and every BatchNorm becomes selfsup.layers.batchnorm's rank version, whose statistics cover the
whole batch of every rank (torch's SyncBatchNorm refuses CPU tensors), so W processes train as
one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from selfsup import distributed
from selfsup.checkpoint import RUN_FORMAT, atomic_write_text
from selfsup.data.image import prepare_image_data, read_image_sources
from selfsup.layers.batchnorm import convert_batchnorm
from selfsup.objectives import build_objective
from selfsup.prepared import Prepared, eval_summary
from selfsup.seeds import HELDOUT_OFFSET, Stream, seed_for

CLASSES = "classes.json"  # the class names of a run's labelled training images


def prepare_image(cfg, out: Path, resume: bool, encoding: str, log) -> Prepared:
    with distributed.main_first():  # no two ranks decode into the cache
        images = read_image_sources(cfg.data, log)
    cfg.objective.probe_classes = len(images.classes)  # the online probe's, 0 when unlabelled
    cfg.model.validate()
    cfg.data.validate(cfg.model)
    record = {"format": RUN_FORMAT, **cfg.to_dict()}
    seed = cfg.train.seed
    torch.manual_seed(seed)  # the same initial weights on every rank
    model = build_objective(cfg.objective, cfg.model)
    model.prepare(images.images, torch.Generator().manual_seed(seed_for(seed, Stream.EXAMPLE, 0)))
    model.set_total_steps(cfg.train.steps)
    if distributed.world_size() > 1:
        convert_batchnorm(model)
    data = prepare_image_data(cfg.data, images, cfg.train.batch_size, seed, model.image_needs(),
                              seed + HELDOUT_OFFSET)  # fmt: skip

    def save(folder: Path) -> None:
        atomic_write_text(folder / CLASSES, json.dumps(images.classes))

    def summarise(final: dict, minutes: float, folder: Path) -> dict:
        summary = eval_summary(cfg.train.steps, final, minutes, data.stats)
        loss = final.get("eval_loss")
        if loss is not None and math.isfinite(loss):
            probe = final.get("eval_probe_acc")
            said = "" if probe is None else f", online probe accuracy {probe:.4f}"
            log(f"held-out loss {loss:.4f}{said}; {minutes:.1f} min; run in {folder}")
        return summary

    s = data.stats
    labelled = f"{len(images.classes)} classes" if images.classes else "unlabelled"
    log(
        f"data: {s['images']:,} images of {cfg.data.image_size} px ({labelled}); "
        f"{s['train_images']:,} training / {s['heldout_images']:,} held-out"
    )
    return Prepared(model, data.batches, data.eval_batches, s, record, save, summarise)
