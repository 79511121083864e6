"""Extractive QA head: a start vector and an end vector, each dotted with every token output."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.layers.linear import Linear


class SpanHead(nn.Module):
    """BERT's SQuAD head (arXiv:1810.04805, 4.2): logits_start = h . S, logits_end = h . E, with a
    softmax over positions taken by the loss. One Linear(dim, 2) holds S and E (and biases)."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = Linear(dim, 2)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.proj(h).unbind(-1)  # (B, T) each
        return start, end
