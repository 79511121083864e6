"""SimSiam (Chen and He, arXiv:2011.10566): BYOL without the moving average. One network
(backbone, projector, predictor) predicts its own projection of the other view, and the
stop-gradient on that projection is what keeps it from collapsing (eq. 1-2):
L = sum over ordered view pairs of -cos(p_i, stopgrad(z_j)), over a count of those pairs.
The projector is 3 layers of 2048 with BN on its output; the predictor a 2-layer bottleneck
(2048 -> 512 -> 2048), as the paper's section 4. Batch-level: BatchNorm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfsup.errors import ConfigError
from selfsup.heads.projector import Projector
from selfsup.keys import VIEWS
from selfsup.losses import simsiam
from selfsup.objectives.byol import pair_count, pair_loss
from selfsup.objectives.image_base import ImageObjective, ImageObjectiveConfig


@dataclass
class SimSiamConfig(ImageObjectiveConfig):
    """SimSiam's defaults (arXiv:2011.10566, section 4): projector 3 x 2048 with BN on the
    output, predictor 2048 -> 512 -> 2048, BYOL-style views."""

    name: str = "simsiam"
    views: str = "byol_cifar"  # BYOL's asymmetric views without blur at 32 px (solo-learn)
    proj_hidden: int = 2048
    proj_dim: int = 2048
    pred_hidden: int = 512

    def validate(self) -> None:
        super().validate()
        if self.n_views < 2:
            raise ConfigError("simsiam needs objective.n_views >= 2")


class SimSiam(ImageObjective):
    Config = SimSiamConfig
    own_terms = {"simsiam_loss": "pairs"}
    own_loss_terms = ("simsiam_loss",)

    def __init__(self, encoder, cfg: SimSiamConfig):
        super().__init__(encoder, cfg)
        self.projector = Projector(encoder.dim, cfg.proj_hidden, cfg.proj_dim, n_layers=3,
                                   last_norm=True)  # fmt: skip
        self.predictor = Projector(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim, n_layers=2)

    def own_counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        return pair_count(batch)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.encode_views(batch[VIEWS])  # (B, V, D)
        B, V, D = h.shape
        z = self.projector(h.flatten(0, 1))  # (B * V, D')
        p = self.predictor(z).float().view(B, V, -1)
        loss = pair_loss(simsiam, p, z.float().view(B, V, -1))  # simsiam stops z's gradient
        return {"simsiam_loss": loss, **self.probe_terms(h[:, 0], batch),
                **self.monitors(z, h.flatten(0, 1))}  # fmt: skip
