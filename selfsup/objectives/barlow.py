"""Barlow Twins (Zbontar et al., arXiv:2103.03230): the cross-correlation matrix of two views'
embeddings, each dimension standardised over the batch, is pushed to the identity: its diagonal
to 1 (invariance), its off-diagonal to 0 (redundancy reduction), weighted 0.0051 (eq. 1; the
paper's lambda, as its code sets it). The projector is 3 layers of 8192 (BN and ReLU between).

The matrix needs the whole batch: under torchrun every rank gathers both views' embeddings with
their gradients and computes the whole-batch loss over a count of one per rank (so the ranks'
mean is the loss, and W processes train as one). Two views. Batch-level.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfsup.distributed import whole_batch
from selfsup.errors import ConfigError
from selfsup.heads.projector import Projector
from selfsup.keys import VIEWS
from selfsup.losses import barlow_twins
from selfsup.objectives.image_base import ImageObjective, ImageObjectiveConfig


@dataclass
class BarlowTwinsConfig(ImageObjectiveConfig):
    """Barlow Twins' defaults (arXiv:2103.03230, section 4 and appendix): off-diagonal weight
    0.0051, a projector of three 8192-wide layers (2048 for CPU budgets: proj_hidden/proj_dim),
    BYOL's views."""

    name: str = "barlow"
    views: str = "byol_cifar"  # BYOL's asymmetric views without blur at 32 px (solo-learn)
    offdiag_weight: float = 0.0051
    proj_hidden: int = 2048
    proj_dim: int = 2048

    def validate(self) -> None:
        super().validate()
        if self.n_views != 2:
            raise ConfigError(f"{self.name} compares two views: objective.n_views must be 2")


class BarlowTwins(ImageObjective):
    Config = BarlowTwinsConfig
    own_terms = {"barlow_loss": "batches"}
    own_loss_terms = ("barlow_loss",)

    def __init__(self, encoder, cfg: BarlowTwinsConfig):
        super().__init__(encoder, cfg)
        self.projector = Projector(encoder.dim, cfg.proj_hidden, cfg.proj_dim, n_layers=3,
                                   last_bias=False)  # fmt: skip

    def embed(self, batch: dict[str, torch.Tensor]):
        h = self.encode_views(batch[VIEWS])  # (B, 2, D)
        B, V, D = h.shape
        z = self.projector(h.flatten(0, 1)).float().view(B, V, -1)  # (B, 2, D')
        return h, whole_batch(z, self.training)  # (B_all, 2, D')

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h, z = self.embed(batch)
        loss = barlow_twins(z[:, 0], z[:, 1], offdiag_weight=self.cfg.offdiag_weight)
        return {"barlow_loss": loss, **self.probe_terms(h[:, 0], batch),
                **self.monitors(z.flatten(0, 1), h.flatten(0, 1))}  # fmt: skip
