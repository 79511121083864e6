"""The projection (and prediction) heads of the joint-embedding methods: an MLP of Linear-Norm-
ReLU blocks and a last Linear, built from numbers so each method's head is one line:

    SimCLR (arXiv:2002.05709, section 2.1):          Projector(D, 2048, 128)
        g(h) = W2 ReLU(W1 h), two layers to 128; the paper's hidden width is the backbone's
        (2048 for ResNet-50), solo-learn's CIFAR recipe keeps 2048 with a BN on it.
    BYOL (arXiv:2006.07733, section 3.3):            Projector(D, 4096, 256)
        projector and predictor alike, Linear-BN-ReLU-Linear, 4096 -> 256:
        predictor = Projector(256, 4096, 256).
    SimSiam (arXiv:2011.10566, section 4):           Projector(D, 2048, 2048, 3, last_norm=True)
        three layers of 2048, BN on every layer including the output (affine-free there);
        predictor Projector(2048, 512, 2048), a bottleneck.
    Barlow Twins (arXiv:2103.03230, section 4):      Projector(D, 8192, 8192, 3, last_bias=False)
        three layers of 8192, BN and ReLU after the first two; the official code's last
        layer has no bias.
    VICReg (arXiv:2105.04906, section 4.2):          Projector(D, 8192, 8192, 3, last_bias=False)
        the "expander": three layers of 8192, BN and ReLU after the first two, the last
        without bias (the official code).

Hidden Linears carry no bias when a norm follows them: the norm's own shift takes that role
(a BatchNorm in training removes a bias exactly, so it would receive a zero gradient), as
SimSiam's and Barlow Twins' code write them. For the same reason `last_norm` drops the last
Linear's bias. With BatchNorm the head normalises over the batch: an embedding depends on the
other images of the batch in training mode.

Legend: N rows (images x views), D in_dim.
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.layers.linear import Linear


class Projector(nn.Module):
    """n_layers Linear layers, the first n_layers - 1 each followed by `norm(width)` and ReLU:
    in_dim -> hidden_dim -> ... -> hidden_dim -> out_dim. n_layers=1 is one Linear.
    `norm` builds a norm from a width (nn.BatchNorm1d, nn.LayerNorm, or None for none);
    `last_norm` adds `norm(out_dim, affine=False)` on the output (SimSiam; the norm must take
    `affine`, as BatchNorm does); `last_bias=False` drops the last Linear's bias (Barlow Twins,
    VICReg). forward: (N, in_dim) -> (N, out_dim)."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        n_layers: int = 2,
        norm: type[nn.Module] | None = nn.BatchNorm1d,
        last_norm: bool = False,
        last_bias: bool = True,
    ):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"a projector needs at least one layer, got n_layers={n_layers}")
        if last_norm and norm is None:
            raise ValueError("last_norm needs a norm")
        self.in_dim, self.out_dim = in_dim, out_dim
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(n_layers - 1):
            layers.append(Linear(width, hidden_dim, bias=norm is None))
            if norm is not None:
                layers.append(norm(hidden_dim))
            layers.append(nn.ReLU())
            width = hidden_dim
        layers.append(Linear(width, out_dim, bias=last_bias and not last_norm))
        if last_norm:
            layers.append(norm(out_dim, affine=False))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # (N, out_dim)
