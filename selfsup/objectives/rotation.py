"""Rotation prediction (Gidaris et al., arXiv:1803.07728): rotate every image by 0, 90, 180
and 270 degrees and classify which rotation it got, a 4-way task a network solves only by
recognising the objects' usual orientation. All four rotations of each image go into the same
batch (the paper's best setting, section 3.2), after a light crop and flip; the loss is the
cross-entropy over the 4B rotated copies, summed, over a count of them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.corrupt.views import horizontal_flip, random_resized_crop, rotate90
from selfsup.data.image import ImageNeeds
from selfsup.keys import IMAGES, VIEWS
from selfsup.objectives.image_base import ImageObjective, ImageObjectiveConfig

ROTATIONS = 4


@dataclass
class RotationConfig(ImageObjectiveConfig):
    """RotNet's task (arXiv:1803.07728): 4 rotations; crops of at least `crop_min` of the
    image's area and flips before rotating (standard augmentation, as the paper's CIFAR runs)."""

    name: str = "rotation"
    views: str = "simclr"  # unused: the rotations are the views
    n_views: int = ROTATIONS
    crop_min: float = 0.5


def rotation_corrupt(crop_min: float, batch: dict, generator: torch.Generator) -> dict:
    """{IMAGES (B, C, H, W)} -> {VIEWS (B, 4, C, H, W)}: view r rotated by r * 90 degrees."""
    x = batch[IMAGES]
    B, C, H, W = x.shape
    x = horizontal_flip(random_resized_crop(x, generator, H, scale=(crop_min, 1.0)), generator)
    out = {k: v for k, v in batch.items() if k != IMAGES}
    k = torch.arange(ROTATIONS).repeat(B)  # (4B,): image b's copies rotated 0, 1, 2, 3 times
    out[VIEWS] = rotate90(x.repeat_interleave(ROTATIONS, 0), k).view(B, ROTATIONS, C, H, W)
    return out


class Rotation(ImageObjective):
    Config = RotationConfig
    own_terms = {"rotation_loss": "predictions", "rotation_acc": "predictions"}
    own_loss_terms = ("rotation_loss",)

    def __init__(self, encoder, cfg: RotationConfig):
        super().__init__(encoder, replace(cfg, n_views=ROTATIONS))
        self.head = nn.Linear(encoder.dim, ROTATIONS)

    def image_needs(self) -> ImageNeeds:
        return ImageNeeds(corrupt=partial(rotation_corrupt, self.cfg.crop_min))

    def own_counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"predictions": batch[VIEWS].shape[0] * ROTATIONS}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.encode_views(batch[VIEWS])  # (B, 4, D)
        B = h.shape[0]
        logits = self.head(h.flatten(0, 1)).float()  # (4B, 4)
        target = torch.arange(ROTATIONS, device=h.device).repeat(B)
        loss = F.cross_entropy(logits, target, reduction="sum")
        acc = (logits.argmax(-1) == target).sum().float()
        # the probe and monitors on the unrotated view
        return {"rotation_loss": loss, "rotation_acc": acc, **self.probe_terms(h[:, 0], batch),
                **self.monitors(None, h[:, 0])}  # fmt: skip
