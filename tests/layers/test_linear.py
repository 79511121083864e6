"""selfsup.layers.linear: the float32 CPU linear on oneDNN gives F.linear's outputs and
gradients (to float32 rounding), and steps aside under autocast and tracing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.layers import linear as L

pytestmark = pytest.mark.skipif(
    not hasattr(torch.ops.mkldnn, "_linear_pointwise"), reason="this PyTorch has no oneDNN linear"
)


@pytest.fixture
def onednn(monkeypatch):
    monkeypatch.setenv("SELFSUP_ONEDNN_LINEAR", "1")
    L.onednn_linear_enabled.cache_clear()
    yield
    monkeypatch.undo()
    L.onednn_linear_enabled.cache_clear()


def test_the_environment_decides(monkeypatch):
    for value, want in (("0", False), ("1", True)):
        monkeypatch.setenv("SELFSUP_ONEDNN_LINEAR", value)
        L.onednn_linear_enabled.cache_clear()
        assert L.onednn_linear_enabled() is want
    L.onednn_linear_enabled.cache_clear()


@pytest.mark.parametrize("shape, bias", [((5, 16), True), ((3, 7, 16), True), ((3, 7, 16), False)])
def test_outputs_and_gradients_equal_f_linear(onednn, shape, bias):
    torch.manual_seed(0)
    layer = L.Linear(16, 24, bias=bias)
    x = torch.randn(*shape, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    w_ref = layer.weight.detach().clone().requires_grad_()
    b_ref = layer.bias.detach().clone().requires_grad_() if bias else None
    y = layer(x)
    ref = F.linear(x_ref, w_ref, b_ref)
    assert y.grad_fn is not None and "OneDNN" in type(y.grad_fn).__name__  # the oneDNN path
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    y.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad, w_ref.grad, rtol=1e-5, atol=1e-5)
    if bias:
        torch.testing.assert_close(layer.bias.grad, b_ref.grad, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():  # no graph: the plain op
        torch.testing.assert_close(layer(x.detach()), ref.detach(), rtol=1e-5, atol=1e-5)


def test_gradient_check_in_float64_reference(onednn):
    """Against the definition, not only against F.linear: dW = dy^T x, dx = dy W, db = sum dy."""
    torch.manual_seed(1)
    x = torch.randn(6, 8, requires_grad=True)
    w = torch.randn(5, 8, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    dy = torch.randn(6, 5)
    L.linear(x, w, b).backward(dy)
    x64, w64, dy64 = x.detach().double(), w.detach().double(), dy.double()
    torch.testing.assert_close(x.grad.double(), dy64 @ w64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w.grad.double(), dy64.t() @ x64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.grad.double(), dy64.sum(0), rtol=1e-5, atol=1e-5)


def test_autocast_and_other_dtypes_use_f_linear(onednn):
    layer = L.Linear(16, 8)
    x = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16
    assert layer.double()(x.double()).dtype == torch.float64


def test_export_sees_a_plain_linear(onednn):
    layer = L.Linear(16, 8)
    ep = torch.export.export(layer, (torch.randn(2, 16),))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert not any("mkldnn" in t for t in targets), targets
    assert any("linear" in t or "addmm" in t for t in targets), targets


def test_an_expanded_output_gradient_gives_the_reference_gradients(onednn):
    # x.sum().backward() hands the backward a zero-stride gradient (copied first: fast path)
    x = torch.randn(64, 32, requires_grad=True)
    w = torch.randn(48, 32, requires_grad=True)
    b = torch.randn(48, requires_grad=True)
    L.linear(x, w, b).sum().backward()
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, w, b))
    F.linear(x2, w2, b2).sum().backward()
    for ours, ref in ((x, x2), (w, w2), (b, b2)):
        torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-5, atol=1e-4)
