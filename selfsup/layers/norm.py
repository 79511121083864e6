"""Normalisation layers, each built as norm(dim, eps=...) so a block takes the class as an
argument: `norm=LayerNorm` (BERT, GPT-2, ViT) or `norm=RMSNorm` (T5, LLaMA)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.LayerNorm):
    """Layer normalisation (Ba et al., arXiv:1607.06450): (x - mean) / sqrt(var + eps) * weight
    + bias; PyTorch's, with its weight and bias names, computed in float32 whatever the input.

    Under CPU bf16 autocast, PyTorch's LayerNorm (and softmax) keep a bf16 input in bf16, where
    CUDA autocast computes them in float32: the residual stream of a post-LN stack (BERT) then
    lives in bf16, 8 bits of mantissa. A mini BERT pretrained so stayed on the unigram plateau
    (held-out MLM accuracy 0.19 after 2,467 steps where fp32 had left it by step 1,250). Here a
    bf16 input is normalised in float32 and the output is float32, so the residual stream is
    float32 and only the matmuls run in bf16, as on a GPU. Without autocast: nn.LayerNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps)


# torch >= 2.4: the same equation in one kernel, 17 against 28 ms forward + backward for a
# (8192, 256) float32 input here (one thread). Older versions compute it step by step.
_fused_rms_norm = getattr(F, "rms_norm", None)


class RMSNorm(nn.Module):
    """Root mean square normalisation (Zhang & Sennrich, arXiv:1910.07467):
    x / sqrt(mean(x^2) + eps) * weight, with no mean subtraction and no bias. Computed in float32
    and cast back to the input's dtype, as T5 does, so bf16 and fp16 inputs do not lose the
    mean of squares. eps 1e-6 as in T5 (arXiv:1910.10683)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        if _fused_rms_norm is None:
            y = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        else:
            y = _fused_rms_norm(h, self.weight.shape, self.weight.float(), self.eps)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
