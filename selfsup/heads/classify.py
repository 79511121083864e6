"""Classification heads on a pooled vector."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.layers.linear import Linear


class ClassifyHead(nn.Module):
    """Dropout -> Linear on a pooled (B, D) vector; used for NSP/SOP (2 classes) and fine-tuning."""

    def __init__(self, dim: int, n_classes: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.proj = Linear(dim, n_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.proj(self.drop(pooled))
