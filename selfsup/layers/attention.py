"""Multi-head self-attention with a fused QKV projection, through PyTorch's SDPA kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention (arXiv:1706.03762).

    `attn_mask` is boolean and broadcastable to (B, H, T, T): True where a query may attend to a
    key. (B, 1, 1, T) masks padding; (B, 1, T, T) masks blocks of packed sequences.
    """

    def __init__(self, dim: int, n_heads: int, attn_dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, D = x.shape
        H = self.n_heads
        qkv = self.qkv(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)  # (3, B, H, T, D/H)
        # unbind, not qkv[0], qkv[1], qkv[2]: its backward stacks the three gradients once,
        # where three selects would each zero-fill and add a gradient the size of all of qkv.
        q, k, v = qkv.unbind(0)  # (B, H, T, D/H) each
        p = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.out(y)
