"""BERT input embeddings: token + learned position + segment, then LayerNorm and dropout."""

from __future__ import annotations

import torch
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
    ) -> torch.Tensor:
        T = input_ids.shape[1]
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device)[None]  # (1, T)
        x = self.tokens(input_ids) + self.positions(position_ids)  # (B, T, D)
        if token_type_ids is not None:
            x = x + self.segments(token_type_ids)
        else:
            x = x + self.segments.weight[0]
        return self.drop(self.norm(x))
