"""Token classification head: one label per token position."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.layers.linear import Linear


class TagHead(nn.Module):
    """Dropout -> Linear on every token's hidden state (BERT's NER/POS setup, arXiv:1810.04805)."""

    def __init__(self, dim: int, n_tags: int, dropout: float = 0.1):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.proj = Linear(dim, n_tags)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(self.drop(h))  # (..., n_tags)
