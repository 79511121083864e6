"""Masked-LM head: dense -> GELU -> LayerNorm -> tied decoder, applied to masked positions only."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.layers.linear import Linear, linear


class MLMHead(nn.Module):
    """BERT's prediction head (arXiv:1810.04805). The decoder weight is the input embedding matrix
    (tied), passed in at call time; only the output bias belongs to the head."""

    def __init__(self, dim: int, vocab_size: int, norm_eps: float = 1e-12):
        super().__init__()
        self.dense = Linear(dim, dim)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def transform(self, h: torch.Tensor) -> torch.Tensor:
        """dense -> GELU -> LayerNorm: (M, D) -> (M, D), what the decoder projects."""
        return self.norm(self.act(self.dense(h)))

    def forward(self, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """h: (M, D) hidden states at the masked positions; embedding: (V, D). Returns (M, V).
        Training does not call this: the MLM objective feeds `transform(h)`, the embedding and
        `bias` to losses.linear_ce, which never holds the (M, V) logits whole."""
        return linear(self.transform(h), embedding, self.bias)
