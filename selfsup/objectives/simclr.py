"""SimCLR (Chen et al., arXiv:2002.05709): two augmentations of one image are positives, the
other images' views of the batch negatives. Backbone -> projector (Linear-BN-ReLU-Linear, 2048
-> 128) -> NT-Xent at temperature 0.5 (the paper's CIFAR-10 setting, appendix B.9).

Positives are defined by index (solo-learn): row b's views are each other's positives, so any
number of views works. Under torchrun every rank scores its own anchors against the views of the
whole batch, gathered with their gradients, so W processes train as one (the count is the
anchors, B * V per rank). Batch-level: negatives and BatchNorm need the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfsup.distributed import whole_batch
from selfsup.errors import ConfigError
from selfsup.heads.projector import Projector
from selfsup.keys import VIEWS
from selfsup.losses import nt_xent
from selfsup.objectives.image_base import ImageObjective, ImageObjectiveConfig, first_row


@dataclass
class SimCLRConfig(ImageObjectiveConfig):
    """SimCLR's defaults (arXiv:2002.05709): temperature 0.5 for CIFAR-10, a 2-layer projector
    to 128 dimensions."""

    name: str = "simclr"
    views: str = "simclr"
    temperature: float = 0.5
    proj_hidden: int = 2048
    proj_dim: int = 128

    def validate(self) -> None:
        super().validate()
        if self.n_views < 2:
            raise ConfigError("simclr needs objective.n_views >= 2 (positives are other views)")
        if self.temperature <= 0:
            raise ConfigError(f"objective.temperature must be positive, got {self.temperature}")


class SimCLR(ImageObjective):
    Config = SimCLRConfig
    own_terms = {"nt_xent": "anchors", "contrastive_acc": "anchors"}
    own_loss_terms = ("nt_xent",)

    def __init__(self, encoder, cfg: SimCLRConfig):
        super().__init__(encoder, cfg)
        self.projector = Projector(encoder.dim, cfg.proj_hidden, cfg.proj_dim, n_layers=2)

    def own_counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        B, V = batch[VIEWS].shape[:2]
        return {"anchors": B * V}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.encode_views(batch[VIEWS])  # (B, V, D)
        B, V, D = h.shape
        z = self.projector(h.flatten(0, 1)).float().view(B, V, -1)  # (B, V, D')
        candidates = whole_batch(z, self.training)  # (B_all, V, D')
        first = first_row(B, self.training)
        loss = nt_xent(z, candidates, first=first, temperature=self.cfg.temperature)
        return {"nt_xent": loss, "contrastive_acc": positive_hits(z, candidates, first),
                **self.probe_terms(h[:, 0], batch),
                **self.monitors(z.flatten(0, 1), h.flatten(0, 1))}  # fmt: skip


@torch.no_grad()
def positive_hits(z: torch.Tensor, candidates: torch.Tensor, first: int) -> torch.Tensor:
    """How many anchors (B * V of z (B, V, D)) have one of their positives as their most
    similar other view among the candidates (B_all, V, D): the contrastive task's accuracy."""
    B, V, _ = z.shape
    a = F.normalize(z.flatten(0, 1), dim=-1)  # (B * V, D)
    c = F.normalize(candidates.flatten(0, 1), dim=-1)  # (B_all * V, D)
    sim = a @ c.T  # (B * V, B_all * V)
    own = torch.arange(B * V, device=z.device) + first * V
    sim[torch.arange(B * V), own] = float("-inf")  # an anchor is not its own positive
    best_row = sim.argmax(-1) // V
    return (best_row == own // V).sum().float()
