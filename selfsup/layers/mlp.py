"""Position-wise feed-forward network."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.layers.linear import Linear


class MLP(nn.Module):
    """Linear -> activation -> Linear (the Transformer FFN, arXiv:1706.03762)."""

    def __init__(self, dim: int, hidden_dim: int, act: type[nn.Module] = nn.GELU):
        super().__init__()
        self.up = Linear(dim, hidden_dim)
        self.act = act()
        self.down = Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))
