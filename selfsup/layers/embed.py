"""BERT input embeddings: token + learned position + segment, then LayerNorm and dropout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TextEmbedding(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        dim: int,
        max_len: int,
        type_vocab_size: int = 2,
        dropout: float = 0.1,
        norm_eps: float = 1e-12,
        pad_id: int = 0,
    ):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.positions = nn.Embedding(max_len, dim)
        self.segments = nn.Embedding(type_vocab_size, dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        sparse_grad: bool = False,
    ) -> torch.Tensor:
        """sparse_grad: the token lookup's gradient holds only the batch's rows. Right only where
        something else adds a dense gradient to the same weight (the tied MLM decoder), which
        then absorbs it; the optimizers and gradient clipping expect a dense gradient."""
        T = input_ids.shape[1]
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device)[None]  # (1, T)
        tok = F.embedding(input_ids, self.tokens.weight, self.tokens.padding_idx,
                          sparse=sparse_grad)  # fmt: skip
        x = tok + self.positions(position_ids)  # (B, T, D)
        if token_type_ids is not None:
            x = x + self.segments(token_type_ids)
        else:
            x = x + self.segments.weight[0]
        return self.drop(self.norm(x))
