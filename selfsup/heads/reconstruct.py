"""Frame reconstruction head: hidden states back to (stacked) feature frames."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.layers.linear import Linear


class ReconstructHead(nn.Module):
    """Mockingjay's prediction head (arXiv:1910.12638, section 3.3): dense -> GELU -> LayerNorm
    -> linear to `out_dim` values (stack * F: every stacked frame restored). (..., D) ->
    (..., out_dim)."""

    def __init__(self, dim: int, out_dim: int, norm_eps: float = 1e-12):
        super().__init__()
        self.dense = Linear(dim, dim)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.out = Linear(dim, out_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.act(self.dense(h))))
