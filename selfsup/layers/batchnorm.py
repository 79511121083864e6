"""BatchNorm whose batch statistics cover every rank's rows (Ioffe & Szegedy, arXiv:1502.03167;
the cross-replica BatchNorm SimCLR (arXiv:2002.05709, section 2.2) and BYOL train with), for
CPU process groups too: `torch.nn.SyncBatchNorm` refuses CPU tensors in this torch.

`RankBatchNorm1d` / `RankBatchNorm2d` are nn.BatchNorm1d / nn.BatchNorm2d (the same parameters,
buffers, state-dict keys and options). In training, with a process group of more than one rank,
each channel's mean and (biased) variance are those of all ranks' rows together, computed
differentiably, so W ranks holding a batch's shares train as one process on the whole batch:
every rank gets the same outputs, the input gradient of its own rows, and parameter gradients
that sum over the ranks to one process's. The running statistics follow the global batch
(unbiased variance over all rows), so they stay equal on every rank. Otherwise (evaluation,
no group, one rank) the layer is exactly nn.BatchNorm.

The statistics: each rank takes its rows' count n_r, mean m_r and biased variance s_r per
channel (in float32 at least), then one all-reduce (differentiable: its backward all-reduces the
gradient) sums [n_r, n_r m_r, n_r (s_r + m_r^2)] in float64, from which
mean = sum n_r m_r / N and var = sum n_r (s_r + m_r^2) / N - mean^2. Float64 keeps that
difference exact to float32 rounding even where the mean is large against the spread.

Legend: N rows (B, or B x L, or B x H x W per channel), C channels.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["RankBatchNorm1d", "RankBatchNorm2d", "convert_batchnorm", "global_batch_norm"]


class _AllReduceSum(torch.autograd.Function):
    """The sum over ranks, differentiable: every rank's output is the same sum, so the gradient
    of each rank's input is the sum of the ranks' output gradients (another all-reduce).
    (torch.distributed.nn.functional.all_reduce does the same and is deprecated in this torch.)"""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _all_reduce(x: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(x)


def global_batch_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    momentum: float,
    eps: float,
    reduce=_all_reduce,
) -> torch.Tensor:
    """Training-mode batch norm of x (N, C, ...) with statistics summed by `reduce` (a
    differentiable sum over ranks; the identity gives one process's batch norm). The running
    statistics, when given, move by `momentum` towards the batch's mean and unbiased variance."""
    rows = x.numel() // x.shape[1]
    if rows == 0:  # (checked here, on the host: the count over ranks would need a sync)
        raise ValueError(f"batch norm over ranks got no rows on this rank: {tuple(x.shape)}")
    dims = [0, *range(2, x.ndim)]
    xf = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16 / fp16: in float32
    var, mean = torch.var_mean(xf, dim=dims, correction=0)  # (C,) each, this rank's rows
    n = torch.tensor(float(rows), dtype=torch.float64, device=x.device)
    mean64, var64 = mean.double(), var.double()
    stats = torch.cat([n[None], n * mean64, n * (var64 + mean64 * mean64)])  # (1 + 2C,)
    stats = reduce(stats)
    C = x.shape[1]
    total = stats[0]  # N, all ranks' rows
    g_mean = stats[1 : 1 + C] / total
    g_var = (stats[1 + C :] / total - g_mean * g_mean).clamp(min=0)
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            unbiased = g_var * (total / (total - 1).clamp(min=1))  # one row in all: var 0
            running_mean.lerp_(g_mean.to(running_mean.dtype), momentum)
            running_var.lerp_(unbiased.to(running_var.dtype), momentum)
    scale = torch.rsqrt(g_var.to(xf.dtype) + eps)  # (C,)
    if weight is not None:
        scale = scale * weight.to(xf.dtype)
    shift = -g_mean.to(xf.dtype) * scale
    if bias is not None:
        shift = shift + bias.to(xf.dtype)
    shape = [1, C] + [1] * (x.ndim - 2)
    return (xf * scale.view(shape) + shift.view(shape)).to(x.dtype)


class _RankBatchNorm:
    """The shared forward of the rank versions (a mixin before nn.BatchNormNd)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):  # fmt: skip
            return super().forward(x)
        self._check_input_dim(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative average, as nn.BatchNorm
                momentum = 1.0 / float(self.num_batches_tracked)
        return global_batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var,
                                 momentum, self.eps)  # fmt: skip


class RankBatchNorm1d(_RankBatchNorm, nn.BatchNorm1d):
    """nn.BatchNorm1d with statistics over every rank's rows in training (module docstring)."""


class RankBatchNorm2d(_RankBatchNorm, nn.BatchNorm2d):
    """nn.BatchNorm2d with statistics over every rank's rows in training (module docstring)."""


_RANK_VERSION = {nn.BatchNorm1d: RankBatchNorm1d, nn.BatchNorm2d: RankBatchNorm2d}


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every nn.BatchNorm1d / nn.BatchNorm2d in `module` (in place) by its rank version,
    holding the very same parameter and buffer tensors (so an optimizer built before still
    updates them) and the same training flag. Returns `module`, or the new layer when `module`
    is itself a BatchNorm. Subclasses (SyncBatchNorm, the rank versions) are left alone."""
    rank_cls = _RANK_VERSION.get(type(module))
    if rank_cls is not None:
        new = rank_cls(module.num_features, module.eps, module.momentum, module.affine,
                       module.track_running_stats, device="meta")  # fmt: skip
        new._parameters = dict(module._parameters)
        new._buffers = dict(module._buffers)
        new.train(module.training)
        return new
    for name, child in module.named_children():
        new = convert_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module
