"""The shared Transformer stack: takes embeddings (B, T, D), not token ids, so text, audio, image
and DNA front ends all reuse it."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.layers.attention import SelfAttention
from selfsup.layers.mlp import MLP


class PostLNBlock(nn.Module):
    """The original BERT block: sublayer, dropout, residual, then LayerNorm (arXiv:1810.04805)."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        ffn_dim: int,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        norm_eps: float = 1e-12,
    ):
        super().__init__()
        self.attn = SelfAttention(dim, n_heads, attn_dropout)
        self.attn_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, ffn_dim, act=nn.GELU)
        self.mlp_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn_norm(x + self.drop(self.attn(x, attn_mask)))
        return self.mlp_norm(x + self.drop(self.mlp(x)))


class Transformer(nn.Module):
    def __init__(
        self,
        dim: int,
        n_layers: int,
        n_heads: int,
        ffn_dim: int,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        norm_eps: float = 1e-12,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            PostLNBlock(dim, n_heads, ffn_dim, dropout, attn_dropout, norm_eps)
            for _ in range(n_layers)
        )

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, return_all: bool = False
    ) -> torch.Tensor | list[torch.Tensor]:
        states = [x]
        for block in self.blocks:
            x = block(x, attn_mask)
            if return_all:
                states.append(x)
        return states if return_all else x


def padding_attn_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) 1/0 padding mask -> (B, 1, 1, T) boolean keys mask; None when nothing is padded."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


def block_attn_mask(seq_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) ids of packed examples -> (B, 1, T, T) boolean mask: a token attends only to the
    tokens of its own example. Padding (-1) attends to padding, which keeps every softmax row
    finite."""
    return (seq_ids[:, :, None] == seq_ids[:, None, :])[:, None]
