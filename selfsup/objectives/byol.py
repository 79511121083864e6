"""BYOL (Grill et al., arXiv:2006.07733): an online network (backbone, projector, predictor)
predicts a target network's projection of another view of the same image; the target is an
exponential moving average of the online backbone and projector and receives no gradient. No
negatives: the predictor and the slowly moving target keep the embeddings from collapsing
(`predictor_layers=0` removes the predictor, the lecture's experiment).

The loss (eq. 2) is 2 - 2 cos(q, z') summed over every ordered pair of different views of each
image (the paper's symmetric loss for two views), over a count of those pairs. The target's rate
follows the paper's cosine schedule from `ema` to 1 over the run:
tau_k = 1 - (1 - ema) * (cos(pi k / K) + 1) / 2, updated in `after_step` (never by the loop);
its step count is a buffer, so a resumed run continues the schedule exactly. Batch-level:
BatchNorm in the backbone, projector and predictor.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from selfsup.errors import ConfigError
from selfsup.heads.projector import Projector
from selfsup.keys import VIEWS
from selfsup.losses import byol
from selfsup.objectives.image_base import ImageObjective, ImageObjectiveConfig


@dataclass
class BYOLConfig(ImageObjectiveConfig):
    """BYOL's defaults (arXiv:2006.07733, section 3.3 and appendix): projector and predictor
    Linear-BN-ReLU-Linear of 4096 -> 256, target rate 0.996 rising to 1 (0.99 suits short runs:
    solo-learn's CIFAR setting), the asymmetric views of table 6."""

    name: str = "byol"
    views: str = "byol_cifar"  # BYOL's asymmetric views without blur at 32 px (solo-learn)
    ema: float = 0.99
    proj_hidden: int = 4096
    proj_dim: int = 256
    predictor_layers: int = 2  # 0: no predictor (the lecture's collapse experiment)

    def validate(self) -> None:
        super().validate()
        if self.n_views < 2:
            raise ConfigError(f"{self.name} needs objective.n_views >= 2")
        if not 0.0 <= self.ema <= 1.0:
            raise ConfigError(f"objective.ema must be in [0, 1], got {self.ema}")
        if self.predictor_layers < 0:
            raise ConfigError("objective.predictor_layers must be >= 0")


def pair_loss(loss_fn, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """sum over images b and ordered view pairs i != j of loss_fn(p[b, i], z[b, j]), for
    p, z (B, V, D): each view's prediction against every other view's target."""
    V = p.shape[1]
    return sum(loss_fn(p[:, i], z[:, j]) for i in range(V) for j in range(V) if i != j)


def pair_count(batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """{"pairs": B * V * (V - 1)}: the ordered view pairs pair_loss sums over."""
    B, V = batch[VIEWS].shape[:2]
    return {"pairs": B * V * (V - 1)}


class BYOL(ImageObjective):
    Config = BYOLConfig
    own_terms = {"byol_loss": "pairs"}
    own_loss_terms = ("byol_loss",)

    def __init__(self, encoder, cfg: BYOLConfig):
        super().__init__(encoder, cfg)
        self.projector = Projector(encoder.dim, cfg.proj_hidden, cfg.proj_dim, n_layers=2)
        self.predictor = (
            Projector(cfg.proj_dim, cfg.proj_hidden, cfg.proj_dim, n_layers=cfg.predictor_layers)
            if cfg.predictor_layers else nn.Identity()
        )  # fmt: skip
        self.target_encoder = _frozen_copy(encoder)
        self.target_projector = _frozen_copy(self.projector)
        self.register_buffer("ema_step", torch.zeros((), dtype=torch.long))
        self.register_buffer("ema_total", torch.zeros((), dtype=torch.long))

    def own_counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        return pair_count(batch)

    def set_total_steps(self, steps: int) -> None:
        self.ema_total.fill_(steps)

    def rate(self) -> float:
        """The target's rate tau at the current step (the module docstring's schedule)."""
        K = max(1, int(self.ema_total))
        k = min(int(self.ema_step), K)
        return 1 - (1 - self.cfg.ema) * (math.cos(math.pi * k / K) + 1) / 2

    @torch.no_grad()
    def after_step(self) -> None:
        """target <- tau * target + (1 - tau) * online, for the backbone and the projector."""
        tau = self.rate()
        for online, target in ((self.encoder, self.target_encoder),
                               (self.projector, self.target_projector)):  # fmt: skip
            for p, q in zip(online.parameters(), target.parameters(), strict=True):
                q.mul_(tau).add_(p.detach(), alpha=1 - tau)
            for b, c in zip(online.buffers(), target.buffers(), strict=True):
                c.copy_(b)  # BatchNorm's running statistics (and counters) follow the online
        self.ema_step += 1

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        views = batch[VIEWS]
        h = self.encode_views(views)  # (B, V, D)
        B, V, D = h.shape
        p = self.predictor(self.projector(h.flatten(0, 1))).float()  # (B * V, D')
        with torch.no_grad():
            self.target_encoder.train(self.training)
            self.target_projector.train(self.training)
            t = self.target_encoder(views.flatten(0, 1))["pooled"]
            z = self.target_projector(t).float().view(B, V, -1)  # (B, V, D')
        loss = pair_loss(byol, p.view(B, V, -1), z)
        return {"byol_loss": loss, **self.probe_terms(h[:, 0], batch),
                **self.monitors(p, h.flatten(0, 1))}  # fmt: skip


def _frozen_copy(module: nn.Module) -> nn.Module:
    target = copy.deepcopy(module)
    for q in target.parameters():
        q.requires_grad_(False)
    return target
