"""Attention against a reference written here from the equation (arXiv:1706.03762, eq. 1), one
batch element and one head at a time: values and gradients, with padding, causal masks, additive
biases and cross-attention, on the CPU matmul path and on SDPA. Also the CPU matmul path against
PyTorch's SDPA."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.layers import attention
from selfsup.layers.attention import CrossAttention, SelfAttention, attend_math

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-5


def reference_attention(q, k, v, keep=None, bias=None):
    """softmax(q k^T / sqrt(d) + bias) v over the keys where keep is True, written out for each
    batch element and head. q: (B, H, T, d); k, v: (B, H, S, d); keep boolean and bias float,
    broadcastable to (B, H, T, S)."""
    B, H, T, d = q.shape
    S = k.shape[2]
    keep = torch.ones(B, H, T, S, dtype=torch.bool) if keep is None else keep.expand(B, H, T, S)
    bias = torch.zeros(B, H, T, S) if bias is None else bias.expand(B, H, T, S)
    out = []
    for b in range(B):
        heads = []
        for h in range(H):
            scores = q[b, h] @ k[b, h].T / math.sqrt(d) + bias[b, h]  # (T, S)
            scores = torch.where(keep[b, h], scores, float("-inf"))
            weights = (scores - scores.max(-1, keepdim=True).values.detach()).exp()
            weights = weights / weights.sum(-1, keepdim=True)
            heads.append(weights @ v[b, h])  # (T, d)
        out.append(torch.stack(heads))
    return torch.stack(out)  # (B, H, T, d)


def split_heads(x, H):
    B, T, D = x.shape
    return x.view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, d)


def merge_heads(y):
    B, H, T, d = y.shape
    return y.transpose(1, 2).reshape(B, T, H * d)  # (B, T, D)


def reference_self_attention(attn, x, keep=None, bias=None):
    D = x.shape[-1]
    q, k, v = (x @ attn.qkv.weight.T + attn.qkv.bias).split(D, -1)
    y = reference_attention(*(split_heads(t, attn.n_heads) for t in (q, k, v)), keep, bias)
    return merge_heads(y) @ attn.out.weight.T + attn.out.bias


def reference_cross_attention(attn, x, memory, keep=None):
    D = x.shape[-1]
    q = x @ attn.q.weight.T + attn.q.bias
    k, v = (memory @ attn.kv.weight.T + attn.kv.bias).split(D, -1)
    y = reference_attention(*(split_heads(t, attn.n_heads) for t in (q, k, v)), keep)
    return merge_heads(y) @ attn.out.weight.T + attn.out.bias


def causal_keep(T):
    """(T, T): query t sees key s when s <= t."""
    return torch.tensor([[s <= t for s in range(T)] for t in range(T)])


def length_keep(lengths, S):
    """(B, 1, 1, S): keys before each length."""
    return torch.tensor([[s < n for s in range(S)] for n in lengths])[:, None, None]


@pytest.fixture(params=["math", "sdpa"])
def path(request, monkeypatch):
    """Forces one path (SDPA by lowering the CPU limit to 0) and counts attend_math calls, so a
    test can check that the path it meant ran."""
    if request.param == "sdpa":
        monkeypatch.setattr(attention, "CPU_MATH_MAX_LEN", 0)
    calls = []
    math_path = attention.attend_math

    def counted(*args, **kwargs):
        calls.append(1)
        return math_path(*args, **kwargs)

    monkeypatch.setattr(attention, "attend_math", counted)
    yield request.param
    assert bool(calls) == (request.param == "math"), "the other attention path ran"


def grads(out, inputs, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.autograd.grad(out, inputs, torch.randn(out.shape, generator=g))


CASES = [
    "none",
    "padding",
    "causal",
    "causal+padding",
    "bias",
    "bias+padding",
    "bias+causal+padding",
    "blocks+causal",
]


@pytest.mark.parametrize("case", CASES)
def test_self_attention_equals_reference(case, path):
    g = torch.Generator().manual_seed(0)
    B, T, D, H = 3, 9, 16, 4
    attn = SelfAttention(D, H)
    x = torch.randn(B, T, D, generator=g, requires_grad=True)
    causal = "causal" in case
    mask = keep = bias = None
    if "padding" in case:
        mask = length_keep([9, 5, 2], T)
    if "blocks" in case:  # packed examples; padding (-1) sees padding
        seq_ids = torch.tensor([[0] * 4 + [1] * 5, [0] * 2 + [1] * 6 + [-1], [0] * 9])
        mask = (seq_ids[:, :, None] == seq_ids[:, None, :])[:, None]
    if "bias" in case:  # shared over the batch (T5) alone, per example with padding
        shape = (B, H, T, T) if "padding" in case else (1, H, T, T)
        bias = torch.randn(shape, generator=g, requires_grad=True)
    keep = mask
    if causal:
        keep = causal_keep(T) if keep is None else keep & causal_keep(T)

    ours = attn(x, mask, causal=causal, bias=bias)
    ref = reference_self_attention(attn, x, keep, bias)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=ATOL)
    inputs = [x, attn.qkv.weight, attn.out.weight] + ([bias] if bias is not None else [])
    for a, b in zip(grads(ours, inputs), grads(ref, inputs), strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=ATOL)


def test_long_rows_take_sdpa_and_equal_reference(monkeypatch):
    """Above CPU_MATH_MAX_LEN tokens SDPA runs, unpatched: causal with padding and a bias."""
    calls = []
    math_path = attention.attend_math
    monkeypatch.setattr(attention, "attend_math", lambda *a: calls.append(1) or math_path(*a))
    g = torch.Generator().manual_seed(0)
    B, T, D, H = 2, attention.CPU_MATH_MAX_LEN + 3, 8, 2
    attn = SelfAttention(D, H)
    x = torch.randn(B, T, D, generator=g, requires_grad=True)
    bias = torch.randn(1, H, T, T, generator=g, requires_grad=True)
    mask = length_keep([T, 40], T)
    ours = attn(x, mask, causal=True, bias=bias)
    ref = reference_self_attention(attn, x, mask & causal_keep(T), bias)
    assert not calls
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=ATOL)
    for a, b in zip(grads(ours, [x, bias]), grads(ref, [x, bias]), strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("mask_shape", ["none", "(B, S)", "(B, 1, 1, S)"])
def test_cross_attention_equals_reference(mask_shape, path):
    g = torch.Generator().manual_seed(0)
    B, T, S, D, H, kv_dim = 3, 7, 11, 16, 4, 12
    attn = CrossAttention(D, H, kv_dim=kv_dim)
    x = torch.randn(B, T, D, generator=g, requires_grad=True)
    memory = torch.randn(B, S, kv_dim, generator=g, requires_grad=True)
    keep = length_keep([11, 6, 1], S) if mask_shape != "none" else None
    mask = keep[:, 0, 0] if mask_shape == "(B, S)" else keep

    ours = attn(x, memory, mask)
    ref = reference_cross_attention(attn, x, memory, keep)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=ATOL)
    inputs = [x, memory, attn.q.weight, attn.kv.weight, attn.out.weight]
    for a, b in zip(grads(ours, inputs), grads(ref, inputs), strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=ATOL)


def test_cross_attention_ignores_padded_memory():
    g = torch.Generator().manual_seed(0)
    attn = CrossAttention(8, 2)
    x, memory = torch.randn(2, 5, 8, generator=g), torch.randn(2, 6, 8, generator=g)
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3])  # 1/0 integers, as tokenizers give
    changed = memory.clone()
    changed[1, 3:] = torch.randn(3, 8, generator=g)
    torch.testing.assert_close(attn(x, memory, mask), attn(x, changed, mask))
    assert not torch.allclose(attn(x, memory), attn(x, changed))


def test_bias_in_another_dtype_on_sdpa(monkeypatch):
    """A float32 bias with bfloat16 activations (autocast) runs on SDPA, which wants one dtype."""
    monkeypatch.setattr(attention, "CPU_MATH_MAX_LEN", 0)
    g = torch.Generator().manual_seed(0)
    attn = SelfAttention(16, 4)
    x = torch.randn(2, 6, 16, generator=g)
    bias = torch.randn(1, 4, 6, 6, generator=g)
    mask = length_keep([6, 3], 6)
    ref = attn(x, mask, causal=True, bias=bias)
    ours = attn.to(torch.bfloat16)(x.bfloat16(), mask, causal=True, bias=bias)
    assert ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), ref, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("mask", ["none", "padding", "blocks"])
def test_attend_math_equals_sdpa(mask):
    g = torch.Generator().manual_seed(0)
    B, H, T, Dh = 3, 2, 9, 8
    q, k, v = (torch.randn(B, H, T, Dh, generator=g, requires_grad=True) for _ in range(3))
    lengths = torch.tensor([9, 5, 2])
    if mask == "padding":  # (B, 1, 1, T): keys beyond each length are hidden
        attn_mask = (torch.arange(T)[None] < lengths[:, None])[:, None, None]
    elif mask == "blocks":  # (B, 1, T, T): packed examples see only themselves
        seq_ids = torch.tensor([[0] * 4 + [1] * 5, [0] * 2 + [1] * 6 + [-1], [0] * 9])
        attn_mask = (seq_ids[:, :, None] == seq_ids[:, None, :])[:, None]
    else:
        attn_mask = None
    grad = torch.randn(B, H, T, Dh, generator=g)
    ours = attend_math(q, k, v, attn_mask)
    (dq, dk, dv) = torch.autograd.grad(ours, (q, k, v), grad)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    (rq, rk, rv) = torch.autograd.grad(ref, (q, k, v), grad)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    for a, b in ((dq, rq), (dk, rk), (dv, rv)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
