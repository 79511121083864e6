"""Linear layers whose float32 matmuls run on oneDNN where PyTorch's BLAS is slow.

PyTorch's CPU build sends a float32 `linear` to MKL's sgemm, and MKL keeps its fastest kernels
for Intel processors: on an AMD EPYC (avx512) one core ran a (1280 x 384) @ (384 x 1536) sgemm
at about 80 GFLOP/s through MKL and 160-220 through oneDNN (also in PyTorch, `mkldnn`), for the
same float32 result to rounding. `linear` and `Linear` here compute x @ W^T + b with oneDNN's
matmul in that case, forward and backward, and with `F.linear` everywhere else: a GPU, bf16 or
autocast (PyTorch already uses oneDNN for bf16), tracing (torch.compile, torch.export and ONNX
export see a plain linear), or an Intel CPU, where MKL is fast.

The choice is read from the CPU's vendor string, never timed; SELFSUP_ONEDNN_LINEAR=1 or 0
forces it either way.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@functools.cache
def onednn_linear_enabled() -> bool:
    """Whether float32 CPU linears go to oneDNN: $SELFSUP_ONEDNN_LINEAR (1 or 0) when set, else
    on a CPU that is not Intel's (MKL's sgemm is slow there), when PyTorch has the op."""
    has_op = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    env = os.environ.get("SELFSUP_ONEDNN_LINEAR", "")
    if env in ("0", "1"):
        return env == "1" and has_op
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    vendor = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                   if ln.startswith("vendor_id")), "")  # fmt: skip
    return has_op and vendor not in ("", "GenuineIntel")


def _onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
        and onednn_linear_enabled()
    )


def _mm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight^T + bias on oneDNN; weight (N, K), x (..., K)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """x @ W^T + b with oneDNN for the forward and for both gradient matmuls:
    dx = dy @ W, dW = dy^T @ x, db = sum of dy over the rows."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _mm(x, weight, bias)

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        dx = dw = db = None
        if 0 in dy.stride():  # an expanded gradient (x.sum().backward()): oneDNN's product
            dy = dy.contiguous()  # over zero strides took seconds instead of milliseconds
        dy2 = dy.reshape(-1, dy.shape[-1])  # (M, N)
        if ctx.needs_input_grad[0]:
            dx = _mm(dy, weight.t().contiguous(), None)  # (..., K)
        if ctx.needs_input_grad[1]:
            x2 = x.reshape(-1, x.shape[-1])  # (M, K)
            # oneDNN reads the transposed views as they are: copying them first took as long
            # as the product (AMD EPYC here, M = 4032, N = 1024, K = 256: 14.5 ms with both
            # copies, 7.9 ms without, computed as (K, N) and transposed back; with N < K the
            # (N, K) order was the faster one).
            if dy2.shape[1] < x2.shape[1]:
                dw = _mm(dy2.t(), x2.t(), None)  # (N, K)
            else:
                dw = _mm(x2.t(), dy2.t(), None).t()  # (K, N) -> (N, K)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy2.sum(0)
        return dx, dw, db


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias), on oneDNN where `onednn_linear_enabled` and the inputs are
    float32 CPU tensors outside autocast and tracing."""
    if not _onednn(x, weight):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    ):
        return _OneDNNLinear.apply(x, weight, bias)
    return _mm(x, weight, bias)


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for a (M, K) and b (K, N), on oneDNN where `linear` would be (strided views such
    as a transpose are read as they are, not copied)."""
    if not _onednn(a, b):
        return a @ b
    return _mm(a, b.t(), None)


class Linear(nn.Linear):
    """nn.Linear (same parameters and state-dict names) computed by `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
