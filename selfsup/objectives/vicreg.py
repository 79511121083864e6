"""VICReg (Bardes et al., arXiv:2105.04906): variance, invariance, covariance. Two views'
embeddings are pulled together (invariance: mean squared distance), each dimension's standard
deviation over the batch is held above 1 (variance: a hinge), and the dimensions are
decorrelated (covariance: the squared off-diagonal covariances); weights 25 / 25 / 1 (eq. 6).
Setting a weight to 0 removes a term: the lecture's claim that the variance term alone (with
invariance) avoids collapse, and that invariance alone (positives only) collapses.

The projector is 3 layers of 8192 in the paper (2048 here by default for CPU budgets). The
variance and covariance need the whole batch: under torchrun both views' embeddings are
gathered with gradients and the whole-batch loss counts one per rank. Two views. Batch-level.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfsup.errors import ConfigError
from selfsup.losses import vicreg_terms
from selfsup.objectives.barlow import BarlowTwins, BarlowTwinsConfig


@dataclass
class VICRegConfig(BarlowTwinsConfig):
    """VICReg's defaults (arXiv:2105.04906, section 4.1): sim 25, var 25, cov 1."""

    name: str = "vicreg"
    sim_weight: float = 25.0
    var_weight: float = 25.0
    cov_weight: float = 1.0

    def validate(self) -> None:
        super().validate()
        if min(self.sim_weight, self.var_weight, self.cov_weight) < 0:
            raise ConfigError("objective.sim_weight, var_weight and cov_weight must be >= 0")


class VICReg(BarlowTwins):
    Config = VICRegConfig
    own_terms = {"vicreg_loss": "batches", "invariance": "batches", "variance": "batches",
                 "covariance": "batches"}  # fmt: skip
    own_loss_terms = ("vicreg_loss",)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h, z = self.embed(batch)
        t = vicreg_terms(z[:, 0], z[:, 1])
        # the branches' variance terms averaged, as the authors' code (and lightly) weighs them,
        # so that 25 / 25 / 1 trains as the published runs (eq. 6 adds them: twice the weight)
        t["variance"] = t["variance"] / 2
        c = self.cfg
        loss = (c.sim_weight * t["invariance"] + c.var_weight * t["variance"]
                + c.cov_weight * t["covariance"])  # fmt: skip
        return {"vicreg_loss": loss, **{k: v.detach() for k, v in t.items()},
                **self.probe_terms(h[:, 0], batch),
                **self.monitors(z.flatten(0, 1), h.flatten(0, 1))}  # fmt: skip
