"""Projection heads: the layer layout of each method's head, equal to the same MLP written out
with functional ops, parameter counts, gradients reaching every parameter, argument errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.heads.projector import Projector


def linears(head: Projector) -> list[nn.Linear]:
    return [m for m in head.modules() if isinstance(m, nn.Linear)]


def norms(head: Projector) -> list[nn.Module]:
    return [m for m in head.modules() if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm))]


@pytest.mark.parametrize(
    ("args", "kw", "shapes", "biases", "n_norms"),
    [
        # SimCLR (512-wide ResNet-18 features): 512 -> 2048 -> 128
        ((512, 2048, 128), {}, [(2048, 512), (128, 2048)], [False, True], 1),
        # BYOL's predictor shape at a small width: 16 -> 64 -> 16
        ((16, 64, 16), {}, [(64, 16), (16, 64)], [False, True], 1),
        # Barlow Twins / VICReg: three layers, the last without bias
        ((16, 32, 24), {"n_layers": 3, "last_bias": False},
         [(32, 16), (32, 32), (24, 32)], [False, False, False], 2),
        # SimSiam's projector: BN on the output too, so no last bias
        ((16, 32, 24), {"n_layers": 3, "last_norm": True},
         [(32, 16), (32, 32), (24, 32)], [False, False, False], 3),
        # no norm: every Linear keeps its bias
        ((16, 32, 8), {"norm": None}, [(32, 16), (8, 32)], [True, True], 0),
        ((16, 32, 8), {"n_layers": 1}, [(8, 16)], [True], 0),
    ],
)  # fmt: skip
def test_layout(args, kw, shapes, biases, n_norms):
    head = Projector(*args, **kw)
    assert [tuple(m.weight.shape) for m in linears(head)] == shapes
    assert [m.bias is not None for m in linears(head)] == biases
    assert len(norms(head)) == n_norms
    assert sum(isinstance(m, nn.ReLU) for m in head.modules()) == len(shapes) - 1
    assert head(torch.randn(4, args[0])).shape == (4, args[2])


def test_simclr_head_parameter_count():
    head = Projector(512, 2048, 128)
    assert sum(p.numel() for p in head.parameters()) == 512 * 2048 + 2 * 2048 + 2048 * 128 + 128


def test_last_norm_is_affine_free_and_standardises_the_output():
    head = Projector(8, 16, 6, n_layers=3, last_norm=True).train()
    last = head.layers[-1]
    assert isinstance(last, nn.BatchNorm1d) and not last.affine
    z = head(torch.randn(64, 8) * 3 + 1)
    assert torch.allclose(z.mean(0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(z.var(0, unbiased=False), torch.ones(6), atol=1e-3)


@pytest.mark.parametrize("training", [True, False])
def test_equals_the_mlp_written_out(training):
    torch.manual_seed(0)
    head = Projector(6, 10, 4, n_layers=3, last_bias=False).train(training)
    with torch.no_grad():  # non-trivial norm parameters and running statistics
        for bn in norms(head):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    x = torch.randn(7, 6, requires_grad=True)
    (l1, l2, l3), (n1, n2) = linears(head), norms(head)

    def bn(h, n):
        if training:
            mean, var = h.mean(0), h.var(0, unbiased=False)
        else:
            mean, var = n.running_mean, n.running_var
        return (h - mean) / torch.sqrt(var + n.eps) * n.weight + n.bias

    h = F.relu(bn(x @ l1.weight.T, n1))
    h = F.relu(bn(h @ l2.weight.T, n2))
    ref = h @ l3.weight.T
    out = head(x)
    assert torch.allclose(out, ref, atol=1e-5)
    g = torch.randn_like(out)
    gx_ref, gw_ref = torch.autograd.grad(ref, (x, l1.weight), g)
    gx, gw = torch.autograd.grad(out, (x, l1.weight), g)
    assert torch.allclose(gx, gx_ref, atol=1e-5) and torch.allclose(gw, gw_ref, atol=1e-5)


def test_every_parameter_gets_a_gradient():
    head = Projector(8, 16, 4, n_layers=3)
    z = head(torch.randn(5, 8))
    (z * torch.randn_like(z)).sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_layer_norm_heads():
    head = Projector(8, 16, 4, norm=nn.LayerNorm)
    assert len(norms(head)) == 1 and head(torch.randn(1, 8)).shape == (1, 4)  # batch of one


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one layer"):
        Projector(8, 16, 4, n_layers=0)
    with pytest.raises(ValueError, match="last_norm needs a norm"):
        Projector(8, 16, 4, norm=None, last_norm=True)
