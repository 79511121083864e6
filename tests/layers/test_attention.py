"""The CPU matmul attention path against PyTorch's SDPA, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.layers.attention import attend_math


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
