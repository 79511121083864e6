"""RMSNorm against its equation (arXiv:1910.07467) in float64, values and gradients, on the fused
kernel and on the step-by-step fallback; both norms build as norm(dim, eps=...)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from selfsup.layers import norm
from selfsup.layers.norm import LayerNorm, RMSNorm

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_rms_norm(x, weight, eps):
    """x / sqrt(mean over the last axis of x^2 + eps) * weight, in float64."""
    x, weight = x.double(), weight.double()
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) / x.shape[-1] + eps) * weight


@pytest.mark.parametrize("fused", [True, False])
def test_rms_norm_equals_equation(fused, monkeypatch):
    if not fused:
        monkeypatch.setattr(norm, "_fused_rms_norm", None)
    elif norm._fused_rms_norm is None:
        pytest.skip("this torch has no F.rms_norm")
    g = torch.Generator().manual_seed(0)
    layer = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(16, generator=g))
    x = 3.0 + torch.randn(4, 7, 16, generator=g)  # an offset: no mean is subtracted
    x.requires_grad_(True)
    ours = layer(x)
    ref = reference_rms_norm(x, layer.weight, 1e-6)
    torch.testing.assert_close(ours, ref.float(), atol=1e-5, rtol=1e-5)
    up = torch.randn(4, 7, 16, generator=g)
    for a, b in zip(
        torch.autograd.grad(ours, (x, layer.weight), up),
        torch.autograd.grad(ref, (x, layer.weight), up.double()),
        strict=True,
    ):
        torch.testing.assert_close(a, b.float(), atol=1e-5, rtol=1e-5)


def test_rms_norm_computes_in_float32_and_keeps_the_dtype():
    g = torch.Generator().manual_seed(0)
    layer = RMSNorm(32, eps=1e-6)
    x = (100.0 * torch.randn(2, 3, 32, generator=g)).bfloat16()  # x^2 sums beyond bf16's 8 bits
    y = layer(x)
    assert y.dtype == torch.bfloat16
    ref = reference_rms_norm(x, layer.weight, 1e-6).bfloat16()  # exact, rounded once
    # Within one bf16 step of the exact value; computed in bf16 it is off by up to 2^-7.
    torch.testing.assert_close(y, ref, atol=0, rtol=2**-8)


def test_rms_norm_eps():
    """eps sits inside the root: an all-zero row stays finite and zero."""
    y = RMSNorm(4, eps=1e-6)(torch.zeros(1, 4))
    assert torch.equal(y, torch.zeros(1, 4))


@pytest.mark.parametrize("cls", [LayerNorm, RMSNorm])
def test_norms_build_from_dim_and_eps(cls):
    layer = cls(8, eps=1e-5)
    assert layer(torch.randn(2, 8)).shape == (2, 8)
    params = {"weight"} if cls is RMSNorm else {"weight", "bias"}  # RMSNorm: no bias
    assert set(dict(layer.named_parameters())) == params
    assert LayerNorm is nn.LayerNorm  # checkpoints keep nn.LayerNorm's names
