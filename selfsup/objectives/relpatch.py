"""Relative patch position (Doersch et al., arXiv:1505.05192): cut an image into a 3 x 3 grid,
take the centre patch and one of its 8 neighbours, and classify where the neighbour lies. The
patches are smaller than their cells, with gaps between them and random jitter of their
positions, so that the task cannot be solved from low-level cues (continuing edges, textures);
see selfsup.corrupt.patches.relative_patch_pairs.

Both patches go through the same backbone; their pooled features, concatenated, go through a
small MLP to the 8-way classifier (the paper's late fusion, figure 3). The loss is the
cross-entropy summed over the pairs, over a count of them. The patches (7 px at 32 px) are resized
to `input_size` for the backbone (a ViT needs a multiple of its patch). The backbone is probed
on whole images, as the paper uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.corrupt.patches import relative_patch_pairs
from selfsup.data.image import ImageNeeds
from selfsup.errors import ConfigError
from selfsup.keys import IMAGES, LABELS, PATCHES, POSITION_LABELS
from selfsup.objectives.image_base import ImageObjective, ImageObjectiveConfig

POSITIONS = 8


@dataclass
class RelPatchConfig(ImageObjectiveConfig):
    """The grid of arXiv:1505.05192 (3 x 3); patch, gap and jitter in pixels (-1: the
    defaults of selfsup.corrupt.patches for the image size; jitter 0 is no jitter)."""

    name: str = "relpatch"
    grid: int = 3
    patch: int = -1
    gap: int = -1
    jitter: int = -1
    hidden: int = 512
    input_size: int = 16  # patches resized to this side for the backbone (7 px at 32 px)

    def validate(self) -> None:
        super().validate()
        if self.grid < 3 or self.grid % 2 == 0:
            raise ConfigError(f"objective.grid must be odd and >= 3, got {self.grid}")
        if self.input_size < 4:
            raise ConfigError(f"objective.input_size must be >= 4, got {self.input_size}")
        if min(self.patch, self.gap) == 0 or min(self.patch, self.gap, self.jitter) < -1:
            raise ConfigError("objective.patch and gap must be positive (or -1: the default), "
                              "jitter >= 0 (or -1)")  # fmt: skip
        if self.hidden < 1:
            raise ConfigError(f"objective.hidden must be positive, got {self.hidden}")


def relpatch_corrupt(grid: int, patch, gap, jitter, batch: dict, generator) -> dict:
    """{IMAGES} -> {PATCHES (B, 2, C, P, P), POSITION_LABELS (B,)}, keeping the images (the
    online probe sees whole images) and class LABELS."""
    auto = lambda v: None if v < 0 else v  # noqa: E731  (-1: the default for the image size)
    pairs = relative_patch_pairs(batch[IMAGES], generator, grid=grid, patch=auto(patch),
                                 gap=auto(gap), jitter=auto(jitter))  # fmt: skip
    return {**batch, PATCHES: pairs[PATCHES], POSITION_LABELS: pairs[LABELS]}


class RelPatch(ImageObjective):
    Config = RelPatchConfig
    own_terms = {"position_loss": "pairs", "position_acc": "pairs"}
    own_loss_terms = ("position_loss",)

    def __init__(self, encoder, cfg: RelPatchConfig):
        super().__init__(encoder, cfg)
        D = encoder.dim
        self.head = nn.Sequential(nn.Linear(2 * D, cfg.hidden), nn.ReLU(),
                                  nn.Linear(cfg.hidden, POSITIONS))  # fmt: skip

    def image_needs(self) -> ImageNeeds:
        c = self.cfg
        return ImageNeeds(corrupt=partial(relpatch_corrupt, c.grid, c.patch, c.gap, c.jitter))

    def own_counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"pairs": batch[PATCHES].shape[0]}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        patches = batch[PATCHES]
        B, S = patches.shape[0], self.cfg.input_size
        x = F.interpolate(patches.flatten(0, 1), size=(S, S), mode="bilinear", antialias=True)
        h = self.encoder(x)["pooled"].reshape(B, -1)  # (B, 2D)
        logits = self.head(h).float()  # (B, 8)
        target = batch[POSITION_LABELS]
        loss = F.cross_entropy(logits, target, reduction="sum")
        acc = (logits.argmax(-1) == target).sum().float()
        out = {"position_loss": loss, "position_acc": acc}
        if self.probe is not None or not self.training:  # whole images: the probe, monitors
            with torch.no_grad():  # (their BatchNorm statistics join the patches' in training)
                full = self.encoder(batch[IMAGES])["pooled"]
            out.update(self.probe_terms(full, batch))
            out.update(self.monitors(None, full))
        else:
            out.update(self.monitors(None, h.view(2 * B, -1)))
        return out
