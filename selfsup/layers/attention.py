"""Multi-head self-attention with a fused QKV projection.

Legend: B batch, H heads, T tokens, D model width, D/H head width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# On CPU, rows up to this many tokens use two matmuls and a softmax (attend_math); longer rows
# and GPUs use PyTorch's SDPA kernels. Measured here (2 cores, fp32, forward + backward of
# packed 128-token rows, 4 heads of 64): about 6.5-8.5 ms a layer against 8-11 ms for SDPA's
# CPU flash kernel. The price is the (B, H, T, T) probabilities kept for the backward pass,
# which is small at these lengths and grows with T squared, hence the limit.
CPU_MATH_MAX_LEN = 128


def attend_math(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D/H) where allowed) v, the definition SDPA computes (arXiv:1706.03762).
    q, k, v: (B, H, T, D/H); attn_mask boolean, broadcastable to (B, H, T, T)."""
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))  # (B, H, T, T)
    if attn_mask is not None:
        scores.masked_fill_(~attn_mask, float("-inf"))  # in place: matmul keeps q and k, not this
    probs = scores.softmax(-1)
    if dropout_p:
        probs = F.dropout(probs, dropout_p)
    return torch.matmul(probs, v)  # (B, H, T, D/H)


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention (arXiv:1706.03762).

    `attn_mask` is boolean and broadcastable to (B, H, T, T): True where a query may attend to a
    key. (B, 1, 1, T) masks padding; (B, 1, T, T) masks blocks of packed sequences. Every query
    row must allow at least one key (padding attends to padding), or its softmax is undefined.
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
        if x.device.type == "cpu" and T <= CPU_MATH_MAX_LEN:
            y = attend_math(q, k, v, attn_mask, p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.out(y)
