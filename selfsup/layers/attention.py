"""Multi-head attention: self-attention with a fused QKV projection, cross-attention with a fused
KV projection, and one dispatcher (`attend`) between a CPU matmul path and PyTorch's SDPA.

Legend: B batch, H heads, T query tokens, S key tokens (S = T in self-attention), D model width,
D/H head width.

Masks are boolean, True where a query may attend to a key, broadcastable to (B, H, T, S):
(B, 1, 1, S) masks padding, (B, 1, T, T) masks blocks of packed sequences. `causal` hides the
keys after each query (decoders). `bias` is a float added to the scores before the softmax,
broadcastable to (B, H, T, S): T5's relative-position bias (arXiv:1910.10683), ALiBi
(arXiv:2108.12409). Every query row must allow at least one key, or its softmax is undefined.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.layers.linear import Linear

# On CPU, rows up to this many tokens use two matmuls and a softmax (attend_math); longer rows
# and GPUs use PyTorch's SDPA kernels. Measured here (2 cores, fp32, forward + backward of
# packed 128-token rows, 4 heads of 64): about 6.5-8.5 ms a layer against 8-11 ms for SDPA's
# CPU flash kernel. The price is the (B, H, T, T) probabilities kept for the backward pass,
# which is small at these lengths and grows with T squared, hence the limit.
CPU_MATH_MAX_LEN = 128


def causal_attn_mask(T: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, T) boolean mask, True on and below the diagonal: query t sees keys 0..t
    (arXiv:1706.03762, section 3.2.3). The alignment SDPA's is_causal uses."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril_()


def attend_math(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    causal: bool = False,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D/H) + bias where allowed) v, the definition SDPA computes
    (arXiv:1706.03762, eq. 1). q: (B, H, T, D/H); k, v: (B, H, S, D/H); attn_mask boolean and
    bias float, both broadcastable to (B, H, T, S); causal hides key s > t from query t."""
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))  # (B, H, T, S)
    # The updates below are in place: matmul keeps q and k for its backward, not its output.
    if bias is not None:
        scores.add_(bias)
    if attn_mask is not None:
        scores.masked_fill_(~attn_mask, float("-inf"))
    if causal:
        T, S = scores.shape[-2:]
        hidden = torch.ones(T, S, dtype=torch.bool, device=scores.device).triu_(1)  # (T, S)
        scores.masked_fill_(hidden, float("-inf"))
    probs = scores.softmax(-1)
    if dropout_p:
        probs = F.dropout(probs, dropout_p)
    return torch.matmul(probs, v)  # (B, H, T, D/H)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    causal: bool = False,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """attend_math's result, by the fastest path: attend_math on CPU for rows up to
    CPU_MATH_MAX_LEN tokens, else SDPA. SDPA takes one mask, and not every version or kernel
    takes a mask together with is_causal, so causal, the boolean mask and the bias are merged
    into one mask there: boolean while there is no bias, else float with -inf where hidden.
    Without a mask or bias, causal stays SDPA's is_causal (its flash kernels)."""
    T, S = q.shape[-2], k.shape[-2]
    if q.device.type == "cpu" and max(T, S) <= CPU_MATH_MAX_LEN:
        return attend_math(q, k, v, attn_mask, dropout_p, causal, bias)
    if bias is None and (attn_mask is None or not causal):
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=causal
        )
    if causal:
        keep = causal_attn_mask(T, q.device)  # (T, T)
        attn_mask = keep if attn_mask is None else attn_mask & keep  # (B|1, H|1, T, T)
    if bias is not None:
        bias = bias.to(q.dtype)  # SDPA wants a float mask in the queries' dtype (autocast)
        attn_mask = bias if attn_mask is None else torch.where(attn_mask, bias, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)


class SelfAttention(nn.Module):
    """Multi-head self-attention (arXiv:1706.03762): bidirectional by default, causal for
    decoders, with an optional additive bias. Masks and bias as in the module docstring."""

    def __init__(self, dim: int, n_heads: int, attn_dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.attn_dropout = attn_dropout
        self.qkv = Linear(dim, 3 * dim)
        self.out = Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        causal: bool = False,
        bias: torch.Tensor | None = None,
        cache: dict | None = None,
    ) -> torch.Tensor:
        """`cache` (incremental decoding): a dict holding the keys and values of the tokens
        before x ("k", "v": (B, H, S_past, D/H)), empty at the first step; x's keys and values
        are appended to it. With a cache, x's tokens follow the cached ones: causal then lets
        query t see the cached keys and x's keys up to t; `attn_mask` covers all the keys."""
        B, T, D = x.shape
        H = self.n_heads
        qkv = self.qkv(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)  # (3, B, H, T, D/H)
        # unbind, not qkv[0], qkv[1], qkv[2]: its backward stacks the three gradients once,
        # where three selects would each zero-fill and add a gradient the size of all of qkv.
        q, k, v = qkv.unbind(0)  # (B, H, T, D/H) each
        if cache is not None:
            if "k" in cache:
                past = cache["k"].shape[2]
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
                if causal and T > 1:  # causal with an offset: query t sees keys 0..past+t
                    t = torch.arange(T, device=x.device)[:, None]
                    keep = torch.arange(past + T, device=x.device)[None] <= t + past  # (T, S)
                    attn_mask = keep if attn_mask is None else attn_mask & keep
                causal = False  # one new query sees every cached key; more: the mask above
            cache["k"], cache["v"] = k, v
        p = self.attn_dropout if self.training else 0.0
        y = attend(q, k, v, attn_mask, p, causal, bias)  # (B, H, T, D/H)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.out(y)


class CrossAttention(nn.Module):
    """Multi-head attention from queries x (B, T, D) to a memory (B, S, kv_dim), such as an
    encoder's output in an encoder-decoder (arXiv:1706.03762, section 3.2.3; BART
    arXiv:1910.13461). kv_dim defaults to dim. `memory_mask` marks the real memory positions:
    boolean (B, S), or anything broadcastable to (B, H, T, S) such as (B, 1, 1, S)."""

    def __init__(
        self, dim: int, n_heads: int, attn_dropout: float = 0.0, kv_dim: int | None = None
    ):
        super().__init__()
        self.n_heads = n_heads
        self.attn_dropout = attn_dropout
        self.q = Linear(dim, dim)
        self.kv = Linear(dim if kv_dim is None else kv_dim, 2 * dim)
        self.out = Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        cache: dict | None = None,
    ) -> torch.Tensor:
        """`cache` (incremental decoding): the memory's keys and values are computed at the
        first call and kept in the dict ("k", "v") for the next ones."""
        B, T, D = x.shape
        S = memory.shape[1]
        H = self.n_heads
        q = self.q(x).view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, D/H)
        if cache is not None and "k" in cache:
            k, v = cache["k"], cache["v"]
        else:
            kv = self.kv(memory).view(B, S, 2, H, D // H).permute(2, 0, 3, 1, 4)  # (2,B,H,S,D/H)
            k, v = kv.unbind(0)  # (B, H, S, D/H) each
            if cache is not None:  # contiguous: else every step's matmuls would copy them
                k, v = k.contiguous(), v.contiguous()
                cache["k"], cache["v"] = k, v
        if memory_mask is not None and memory_mask.dim() == 2:
            memory_mask = memory_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        p = self.attn_dropout if self.training else 0.0
        y = attend(q, k, v, memory_mask, p)  # (B, H, T, D/H)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.out(y)
