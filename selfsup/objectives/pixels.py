"""Pixel-sequence prediction (iGPT, Chen et al. 2020, "Generative Pretraining from Pixels"):
the image as a sequence of colour-palette ids (selfsup.encoders.pixels), with one of iGPT's two
objectives (`mode`):

- "masked": BERT on pixels — 15% of the positions are replaced by a mask token and predicted
  from all the others (the lecture's "masking" for images);
- "next": autoregressive — every pixel predicted from the pixels before it in raster order
  (the lecture's "predicting the future"), a causal Transformer.

The loss is the cross-entropy over the palette, summed over the predicted pixels, over a count
of them. The palette (k-means colours, k = `palette` rather than iGPT's 512, for CPU budgets)
is fitted once from a seeded sample of the training pixels in `prepare`, and stored with the
weights. The encoder's shape comes from the model section's ViT fields (dim, n_layers,
n_heads, ffn_dim); `side` is the sequence's image side (iGPT downsamples too: 32 x 32 = 1,024
positions cost too much on a CPU; 16 x 16 = 256).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from selfsup.corrupt.pixels import choose_pixels, fit_palette, next_pixel_targets
from selfsup.data.image import ImageNeeds
from selfsup.encoders.pixels import PixelSequenceEncoder, downsample
from selfsup.errors import ConfigError
from selfsup.keys import IGNORE, IMAGES, PIXEL_MASK, PIXELS
from selfsup.losses import masked_ce
from selfsup.objectives.image_base import ImageObjective, ImageObjectiveConfig

MODES = ("masked", "next")


@dataclass
class PixelsConfig(ImageObjectiveConfig):
    """iGPT's objectives at CPU scale: a palette of 16 colours, 16 x 16 images, 15% masked."""

    name: str = "pixels"
    mode: str = "masked"
    palette: int = 16
    side: int = 16
    mask_prob: float = 0.15

    def validate(self) -> None:
        super().validate()
        if self.mode not in MODES:
            raise ConfigError(f"objective.mode {self.mode!r}: choose from {', '.join(MODES)}")
        if self.palette < 2 or self.side < 2:
            raise ConfigError("objective.palette and objective.side must be >= 2")
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"objective.mask_prob must be in (0, 1), got {self.mask_prob}")


def pixels_corrupt(side: int, mask_prob: float, batch: dict, generator: torch.Generator) -> dict:
    """{IMAGES} -> {PIXELS (B, 3, side, side), PIXEL_MASK (B, side * side)}: quantizing needs
    the palette (the model's), so the pipeline downsamples and draws which positions are masked
    (each with probability mask_prob, at least one per image); the objective quantizes."""
    out = {k: v for k, v in batch.items() if k != IMAGES}
    out[PIXELS] = downsample(batch[IMAGES], side)
    out[PIXEL_MASK] = choose_pixels((out[PIXELS].shape[0], side * side), generator, mask_prob)
    return out


class Pixels(ImageObjective):
    Config = PixelsConfig
    own_terms = {"pixel_loss": "predicted", "pixel_acc": "predicted"}
    own_loss_terms = ("pixel_loss",)
    data_buffers = ("encoder.palette",)  # fitted from the data, not trained (random:RUN keeps it)

    def __init__(self, encoder, cfg: PixelsConfig):
        super().__init__(encoder, cfg)
        self.head = nn.Linear(encoder.dim, cfg.palette)

    @classmethod
    def build(cls, cfg: PixelsConfig, model):
        cfg.validate()
        enc = PixelSequenceEncoder(cfg.palette, cfg.side, model.dim, model.n_layers,
                                   model.n_heads, model.ffn_dim, causal=cfg.mode == "next",
                                   dropout=model.dropout)  # fmt: skip
        return cls(enc, cfg)

    def image_needs(self) -> ImageNeeds:
        return ImageNeeds(corrupt=partial(pixels_corrupt, self.cfg.side, self.cfg.mask_prob))

    def prepare(self, images, generator: torch.Generator) -> None:
        sample = torch.from_numpy(np.array(images[:4096]))  # a copy: the cache is read-only
        small = downsample(sample.permute(0, 3, 1, 2).float() / 255, self.cfg.side)
        hwc = (small.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        self.encoder.palette.copy_(fit_palette(hwc, self.cfg.palette, generator))

    def inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.encoder.ids(batch[PIXELS])  # (B, T)
        if self.cfg.mode == "next":
            return next_pixel_targets(ids, self.encoder.start_id)
        mask = batch[PIXEL_MASK]  # every masked position becomes the mask token (iGPT's BERT)
        return ids.masked_fill(mask, self.encoder.mask_id), ids.masked_fill(~mask, IGNORE)

    def own_counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        if self.cfg.mode == "next":
            return {"predicted": batch[PIXELS].shape[0] * self.cfg.side**2}
        return {"predicted": int(batch[PIXEL_MASK].sum())}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        input_ids, targets = self.inputs(batch)
        out = self.encoder.forward_ids(input_ids)
        keep = targets != IGNORE
        logits = self.head(out["hidden"][keep]).float()  # (M, k): only the predicted pixels
        loss = masked_ce(logits, targets[keep], reduction="sum")
        acc = (logits.argmax(-1) == targets[keep]).sum().float()
        h = out["pooled"]
        return {"pixel_loss": loss, "pixel_acc": acc, **self.probe_terms(h, batch),
                **self.monitors(None, h)}  # fmt: skip
