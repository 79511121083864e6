"""LARS against the update equations written out here (arXiv:1708.03888 as SimCLR's LARS applies
them), over several steps with a changing learning rate, two parameter shapes and an excluded
group; trust clipping; zero-norm parameters; exact resume from the state dict."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from selfsup.lars import LARS
from selfsup.train import param_groups

LR, MOMENTUM, WD, ETA = 0.5, 0.9, 1e-2, 0.02


class Toy(nn.Module):
    """A matrix, a 3-d tensor (two parameter shapes) and a bias (the excluded group)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(5, 3, generator=g))
        self.kernel = nn.Parameter(torch.randn(2, 3, 3, generator=g))
        self.bias = nn.Parameter(torch.randn(5, generator=g))

    def loss(self, step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(100 + step)
        x = torch.randn(4, 3, generator=g)
        h = torch.tanh(x @ self.weight.T + self.bias)  # (4, 5)
        k = torch.einsum("ij,aij->a", x[:3], self.kernel)  # (2,)
        return h.square().sum() + k.square().sum() + (h[:, :2] * k).sum()


def groups(model: Toy, **extra) -> list[dict]:
    return [{"params": [model.weight, model.kernel], "weight_decay": WD, **extra},
            {"params": [model.bias], "weight_decay": WD, "lars_exclude": True}]  # fmt: skip


def reference_step(w: list[float], g: list[float], v: list[float], lr: float, excluded: bool,
                   clip: bool = False) -> None:  # fmt: skip
    """One parameter's update on flat lists, in place:
    u = g + wd w; trust = eta |w| / |u| (1 on a zero norm); v = m v + lr trust u; w -= v.
    Excluded: v = m v + lr g. Clipped: lr trust -> min(lr, trust)."""
    if excluded:
        u, trust = list(g), 1.0
    else:
        u = [gi + WD * wi for gi, wi in zip(g, w, strict=True)]
        w_norm = math.sqrt(sum(wi * wi for wi in w))
        u_norm = math.sqrt(sum(ui * ui for ui in u))
        trust = ETA * w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
        if clip:
            trust = min(trust / lr, 1.0)
    for i in range(len(w)):
        v[i] = MOMENTUM * v[i] + lr * trust * u[i]
        w[i] -= v[i]


@pytest.mark.parametrize("clip", [False, True])
def test_matches_the_update_equations(clip):
    model = Toy()
    opt = LARS(groups(model), lr=LR, momentum=MOMENTUM, eta=ETA, trust_clip=clip)
    ref = Toy()  # the same start, updated by reference_step in float64 lists
    flat = {n: p.detach().double().flatten().tolist() for n, p in ref.named_parameters()}
    vel = {n: [0.0] * len(w) for n, w in flat.items()}
    lrs = [LR, LR, LR * 0.5, LR * 0.1, LR * 0.1]  # a schedule: the rate sits in the velocity
    for step, lr in enumerate(lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        model.loss(step).backward()
        # the reference's gradient at its own weights
        with torch.no_grad():
            for n, p in ref.named_parameters():
                p.copy_(torch.tensor(flat[n]).view_as(p))
        ref.zero_grad()
        ref.loss(step).backward()
        opt.step()
        for n, p in ref.named_parameters():
            reference_step(flat[n], p.grad.double().flatten().tolist(), vel[n], lr,
                           excluded=n == "bias", clip=clip)  # fmt: skip
    for n, p in model.named_parameters():
        want = torch.tensor(flat[n], dtype=torch.float64).view_as(p)
        assert torch.allclose(p.double(), want, rtol=1e-5, atol=1e-6), n
    start = dict(Toy().named_parameters())
    moved = {n: float((p - start[n]).abs().max().detach()) for n, p in model.named_parameters()}
    assert all(d > 1e-4 for d in moved.values()), moved


def test_excluded_group_is_momentum_sgd_and_layers_move_by_eta():
    model = Toy()
    opt = LARS(groups(model), lr=1.0, momentum=0.0, eta=ETA)
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    model.loss(0).backward()
    gb = model.bias.grad.clone()
    opt.step()
    assert torch.allclose(model.bias, b0 - gb, atol=1e-6)  # no decay, no adaptation
    # the first step of an adapted layer is eta * |w| long, whatever its gradient's scale
    step = float((model.weight.detach() - w0).norm())
    assert math.isclose(step, ETA * float(w0.norm()), rel_tol=1e-5)


def test_zero_weights_take_the_plain_step():
    p = nn.Parameter(torch.zeros(3))
    opt = LARS([p], lr=0.1, momentum=0.0, weight_decay=0.0)
    p.grad = torch.tensor([1.0, -2.0, 0.5])
    opt.step()
    assert torch.allclose(p, torch.tensor([-0.1, 0.2, -0.05]))  # trust 1 on a zero norm
    p.grad = torch.zeros(3)
    before = p.detach().clone()
    opt.step()
    assert torch.equal(p, before)  # a zero update, no nan


def test_state_dict_resumes_exactly():
    def run(model, opt, steps):
        for step in steps:
            opt.zero_grad()
            model.loss(step).backward()
            opt.step()

    straight = Toy()
    opt = LARS(groups(straight), lr=LR, eta=ETA)
    run(straight, opt, range(6))

    first = Toy()
    opt1 = LARS(groups(first), lr=LR, eta=ETA)
    run(first, opt1, range(3))
    saved_weights, saved_state = copy.deepcopy(first.state_dict()), copy.deepcopy(opt1.state_dict())
    assert saved_state["param_groups"][1]["lars_exclude"] is True
    assert all("momentum_buffer" in s for s in saved_state["state"].values())
    resumed = Toy()
    resumed.load_state_dict(saved_weights)
    opt2 = LARS(groups(resumed), lr=LR, eta=ETA)
    opt2.load_state_dict(saved_state)
    run(resumed, opt2, range(3, 6))
    for (n, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters(), strict=True):
        assert torch.equal(a, b), n


def test_takes_the_training_loops_groups():
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    gs = param_groups(model, weight_decay=1e-6)
    gs[1]["lars_exclude"] = True  # as selfsup.train.build_optimizer marks biases and norms
    opt = LARS(gs, lr=0.1)
    assert [len(g["params"]) for g in opt.param_groups] == [1, 3]
    assert [g["lars_exclude"] for g in opt.param_groups] == [False, True]
    model(torch.randn(2, 4)).sum().backward()
    opt.step()


@pytest.mark.parametrize(
    ("kw", "says"),
    [({"lr": -1.0}, "lr"), ({"momentum": 1.0}, "momentum"), ({"weight_decay": -1.0}, "decay"),
     ({"eta": 0.0}, "eta")],
)  # fmt: skip
def test_bad_arguments(kw, says):
    with pytest.raises(ValueError, match=says):
        LARS([nn.Parameter(torch.zeros(2))], **{"lr": 0.1, **kw})
