"""The image self-supervision losses against independent computations written here from the
papers' equations (plain loops over anchors, pairs and dimensions in float64), values and
gradients; and against lightly's losses where lightly can be imported (a test-only oracle)."""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import pytest
import torch

from selfsup.losses import barlow_twins, byol, nt_xent, simsiam, vicreg, vicreg_terms

TOL = {"rtol": 1e-8, "atol": 1e-8}


def randn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()


def value_and_grad(fn, *xs):
    """(value, gradients of the value w.r.t. each x)."""
    value = fn(*xs)
    return value.detach(), torch.autograd.grad(value, xs)


def assert_same(fn, reference, *xs):
    """fn and reference give the same value and the same gradients w.r.t. every x."""
    v, g = value_and_grad(fn, *xs)
    w, h = value_and_grad(reference, *xs)
    torch.testing.assert_close(v, w, **TOL)
    for a, b in zip(g, h, strict=True):
        torch.testing.assert_close(a, b, **TOL)


# --- references, one term at a time -----------------------------------------------------------


def unit(x):
    return x / torch.sqrt((x * x).sum())


def cos(x, y):
    return (unit(x) * unit(y)).sum()


def nt_xent_reference(z, temperature):
    """Eq. 1 of arXiv:2002.05709 by enumeration: for every anchor (i, v), every positive
    (i, u), u != v, -log exp(s/t) / sum over every other candidate (j, w) != (i, v) of exp(s/t);
    averaged over the anchor's V - 1 positives, summed over anchors."""
    N, V, _ = z.shape
    total = torch.zeros((), dtype=z.dtype)
    for i in range(N):
        for v in range(V):
            others = [(j, w) for j in range(N) for w in range(V) if (j, w) != (i, v)]
            denominator = sum(torch.exp(cos(z[i, v], z[j, w]) / temperature) for j, w in others)
            for u in range(V):
                if u != v:
                    numerator = torch.exp(cos(z[i, v], z[i, u]) / temperature)
                    total = total - torch.log(numerator / denominator) / (V - 1)
    return total


def byol_reference(p, z):
    return sum(((unit(p[n]) - unit(z[n])) ** 2).sum() for n in range(p.shape[0]))


def standardised_column(z, j, eps):
    column = z[:, j]
    mean = column.sum() / len(column)
    variance = ((column - mean) ** 2).sum() / len(column)  # biased, as BatchNorm
    return (column - mean) / torch.sqrt(variance + eps)


def barlow_reference(z1, z2, weight, eps):
    N, D = z1.shape
    a = [standardised_column(z1, j, eps) for j in range(D)]
    b = [standardised_column(z2, j, eps) for j in range(D)]
    total = torch.zeros((), dtype=z1.dtype)
    for i in range(D):
        for j in range(D):
            c_ij = sum(a[i][n] * b[j][n] for n in range(N)) / N
            total = total + ((1 - c_ij) ** 2 if i == j else weight * c_ij**2)
    return total


def vicreg_reference(z1, z2, gamma=1.0, eps=1e-4):
    N, D = z1.shape

    def variance(z):
        terms = []
        for j in range(D):
            mean = z[:, j].sum() / N
            var = ((z[:, j] - mean) ** 2).sum() / (N - 1)
            terms.append(torch.clamp(gamma - torch.sqrt(var + eps), min=0))
        return sum(terms) / D

    def covariance(z):
        means = [z[:, j].sum() / N for j in range(D)]
        total = torch.zeros((), dtype=z.dtype)
        for i in range(D):
            for j in range(D):
                if i != j:
                    c = sum((z[n, i] - means[i]) * (z[n, j] - means[j]) for n in range(N))
                    total = total + (c / (N - 1)) ** 2
        return total / D

    invariance = sum((z1[n, j] - z2[n, j]) ** 2 for n in range(N) for j in range(D)) / (N * D)
    return {
        "invariance": invariance,
        "variance": variance(z1) + variance(z2),
        "covariance": covariance(z1) + covariance(z2),
    }


# --- NT-Xent ------------------------------------------------------------------------------------


@pytest.mark.parametrize("views", [2, 3])
@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_nt_xent_equals_enumeration_value_and_gradient(views, temperature):
    z = randn(3, views, 5, seed=views)
    assert_same(lambda x: nt_xent(x, temperature=temperature),
                lambda x: nt_xent_reference(x, temperature), z)  # fmt: skip


def test_nt_xent_two_ranks_equal_one_process():
    """Each rank scores its own anchors against every rank's views (gathered with gradient);
    the ranks' sums add up to one process's sum, in value and gradient."""
    z = randn(6, 2, 4, seed=3)

    def two_ranks(x):
        return sum(nt_xent(x[r * 3 : (r + 1) * 3], x, first=r * 3) for r in range(2))

    assert_same(two_ranks, nt_xent, z)


def test_nt_xent_is_low_when_views_agree_and_ignores_scale():
    z = randn(8, 1, 16, seed=4).detach()
    agree = nt_xent(torch.cat([z, 3 * z], 1), temperature=0.1)  # positives identical up to scale
    shuffled = nt_xent(torch.cat([z, z[torch.arange(8).roll(1)]], 1), temperature=0.1)
    assert float(agree) < float(shuffled)
    torch.testing.assert_close(nt_xent(torch.cat([z, 3 * z], 1)), nt_xent(torch.cat([z, z], 1)))


def test_nt_xent_rejects_bad_shapes():
    with pytest.raises(ValueError):
        nt_xent(randn(4, 1, 3))
    with pytest.raises(ValueError):
        nt_xent(randn(4, 2, 3), randn(6, 2, 3), first=3)


# --- BYOL and SimSiam ---------------------------------------------------------------------------


def test_byol_equals_normalised_squared_distance():
    assert_same(byol, byol_reference, randn(5, 7, seed=5), randn(5, 7, seed=6))


def test_byol_values_at_aligned_and_opposite():
    z = randn(4, 6, seed=7).detach()
    torch.testing.assert_close(byol(2.5 * z, z), torch.zeros((), dtype=z.dtype), **TOL)
    torch.testing.assert_close(byol(-z, z), torch.tensor(4.0 * 4, dtype=z.dtype), **TOL)


def test_simsiam_equals_negative_cosine_with_stopped_z():
    p, z = randn(5, 7, seed=8), randn(5, 7, seed=9)
    v, (gp,) = value_and_grad(lambda x: simsiam(x, z), p)
    w, (hp,) = value_and_grad(lambda x: -sum(cos(x[n], z[n].detach()) for n in range(5)), p)
    torch.testing.assert_close(v, w, **TOL)
    torch.testing.assert_close(gp, hp, **TOL)


def test_simsiam_gives_z_no_gradient():
    p, z = randn(5, 7, seed=10), randn(5, 7, seed=11)
    simsiam(p, z).backward()
    assert z.grad is None and p.grad is not None and p.grad.abs().sum() > 0


# --- Barlow Twins -------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_barlow_twins_equals_formula_value_and_gradient(eps):
    z1, z2 = randn(6, 4, seed=12), randn(6, 4, seed=13)
    assert_same(lambda a, b: barlow_twins(a, b, offdiag_weight=0.3, eps=eps),
                lambda a, b: barlow_reference(a, b, 0.3, eps), z1, z2)  # fmt: skip


def decorrelated(N, D, seed):
    """(N, D) with mean-0 columns, biased variance 1 and zero correlation: sqrt(N) times the
    orthonormal columns of a QR of a centred matrix."""
    x = torch.randn(N, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(0))
    return q * math.sqrt(N)


def test_barlow_twins_is_zero_for_identical_decorrelated_views():
    z = decorrelated(32, 8, seed=14)
    assert float(barlow_twins(z, z, eps=0.0)) < 1e-20
    assert float(barlow_twins(z, z)) < 1e-8  # eps shrinks C_ii to 1 / (1 + eps): ~D eps^2
    assert float(barlow_twins(z, z.roll(1, dims=1))) > 1  # permuted dimensions: not invariant


# --- VICReg -------------------------------------------------------------------------------------


def test_vicreg_terms_equal_formulas_value_and_gradient():
    z1, z2 = randn(6, 4, seed=15), 0.3 * randn(6, 4, seed=16)  # small std: variance term on
    for name in ("invariance", "variance", "covariance"):
        assert_same(lambda a, b, k=name: vicreg_terms(a, b)[k],
                    lambda a, b, k=name: vicreg_reference(a, b)[k], z1, z2)  # fmt: skip
    assert float(vicreg_terms(z1, z2)["variance"].detach()) > 0
    weights = {"invariance": 25.0, "variance": 25.0, "covariance": 1.0}
    assert_same(vicreg, lambda a, b: sum(w * vicreg_reference(a, b)[k]
                                         for k, w in weights.items()), z1, z2)  # fmt: skip


def test_vicreg_terms_vanish_where_the_paper_says():
    z = decorrelated(32, 8, seed=17) * 1.5  # every std > 1, zero covariance
    t = vicreg_terms(z, z)
    assert float(t["invariance"]) == 0.0
    assert float(t["variance"]) == 0.0
    assert float(t["covariance"]) < 1e-20
    shrunk = vicreg_terms(0.1 * z, 0.1 * z)["variance"]  # std 0.15 in every dimension
    torch.testing.assert_close(shrunk, torch.tensor(2 * (1 - math.sqrt(0.15**2 * 32 / 31 + 1e-4)),
                                                    dtype=z.dtype))  # fmt: skip


# --- lightly as an oracle (installed with `pip install lightly --no-deps`; not a dependency) ----


def lightly_loss_module(name: str, monkeypatch):
    """lightly/loss/<name>.py loaded by path. The package's own `lightly.loss` and
    `lightly.models` import torchvision, which does not load against this torch; the three loss
    files need only torch, lightly.utils.dist and (NTXentLoss) the memory bank, which with size
    0 passes its input through: that one is stubbed, nothing of the loss math is."""
    spec = importlib.util.find_spec("lightly")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lightly not installed")
    path = Path(spec.submodule_search_locations[0]) / "loss" / f"{name}.py"
    if not path.exists():
        pytest.skip(f"lightly has no loss/{name}.py")

    class NoMemoryBank(torch.nn.Module):
        def __init__(self, size=0, gather_distributed=False, **_):
            super().__init__()
            assert size == 0

        def forward(self, output, labels=None, update=False):
            return output, None

    bank = types.ModuleType("lightly.models.modules.memory_bank")
    bank.MemoryBankModule = NoMemoryBank
    monkeypatch.setitem(sys.modules, "lightly.models.modules.memory_bank", bank)
    module_spec = importlib.util.spec_from_file_location(f"_lightly_oracle_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except ImportError as e:  # a lightly whose loss files need more than this
        pytest.skip(f"lightly's {name} does not import here: {e}")
    return module


def test_nt_xent_equals_lightly_times_anchors(monkeypatch):
    """lightly's NTXentLoss is the mean over the 2N anchors; ours is their sum."""
    oracle = lightly_loss_module("ntx_ent_loss", monkeypatch).NTXentLoss(temperature=0.5)
    z = randn(8, 2, 16, seed=18)
    assert_same(nt_xent, lambda x: oracle(x[:, 0], x[:, 1]) * 16, z)


def test_barlow_twins_equals_lightly(monkeypatch):
    """lightly's BarlowTwinsLoss standardises with F.batch_norm (biased variance, eps 1e-5),
    the same convention: equal values with the same lambda."""
    oracle = lightly_loss_module("barlow_twins_loss", monkeypatch)
    loss = oracle.BarlowTwinsLoss(lambda_param=0.0051)
    z1, z2 = randn(16, 8, seed=19), randn(16, 8, seed=20)
    assert_same(barlow_twins, loss, z1, z2)


def test_vicreg_equals_lightly_with_its_variance_averaged(monkeypatch):
    """lightly (as the authors' code) averages the two branches' variance terms where eq. 6
    adds them: ours with var_weight w equals lightly's with mu_param 2 w; the other two terms
    are the same."""
    module = lightly_loss_module("vicreg_loss", monkeypatch)
    z1, z2 = randn(16, 8, seed=21), 0.5 * randn(16, 8, seed=22)
    loss = module.VICRegLoss(lambda_param=25.0, mu_param=50.0, nu_param=1.0)
    assert_same(vicreg, loss, z1, z2)
    t = vicreg_terms(z1, z2)
    torch.testing.assert_close(t["variance"], module.variance_loss(z1) + module.variance_loss(z2))
    torch.testing.assert_close(t["covariance"],
                               module.covariance_loss(z1) + module.covariance_loss(z2))  # fmt: skip
    torch.testing.assert_close(t["invariance"], module.invariance_loss(z1, z2))
