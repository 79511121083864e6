"""BatchNorm over ranks: without a process group exactly nn.BatchNorm; its statistics path with
one rank equals PyTorch's batch norm (outputs, gradients, running statistics); two gloo
processes holding shares of a batch (equal and unequal) give the outputs, input gradients,
summed parameter gradients and running statistics of one process on the whole batch."""

from __future__ import annotations

import copy
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from selfsup.encoders.image import ImageConfig, build_image_encoder, image_shape
from selfsup.heads.projector import Projector
from selfsup.layers.batchnorm import (
    RankBatchNorm1d,
    RankBatchNorm2d,
    convert_batchnorm,
    global_batch_norm,
)


def _same(a, b, tol=1e-6):
    assert torch.allclose(a, b, rtol=tol, atol=tol), (a - b).abs().max()


@pytest.mark.parametrize(
    ("shape", "affine", "momentum", "offset"),
    [
        ((8, 5, 4, 3), True, 0.1, 0.0),  # BatchNorm2d
        ((8, 5), True, 0.3, 0.0),  # BatchNorm1d on (N, C)
        ((4, 5, 6), False, 0.1, 0.0),  # BatchNorm1d on (N, C, L), no affine
        ((16, 3), True, 0.1, 100.0),  # a mean far larger than the spread
    ],
)
def test_statistics_path_equals_torch_batch_norm(shape, affine, momentum, offset):
    g = torch.Generator().manual_seed(0)
    C = shape[1]
    x = (torch.randn(shape, generator=g) * 2 + offset).requires_grad_()
    w = (torch.rand(C, generator=g) + 0.5).requires_grad_() if affine else None
    b = torch.randn(C, generator=g).requires_grad_() if affine else None
    rm, rv = torch.randn(C, generator=g), torch.rand(C, generator=g) + 0.5
    rm2, rv2 = rm.clone(), rv.clone()
    up = torch.randn(shape, generator=g)

    ours = global_batch_norm(x, w, b, rm, rv, momentum, 1e-5, reduce=lambda t: t)
    ref = F.batch_norm(x, rm2, rv2, w, b, training=True, momentum=momentum, eps=1e-5)
    inputs = (x, w, b) if affine else (x,)
    g_ours = torch.autograd.grad(ours, inputs, up)
    g_ref = torch.autograd.grad(ref, inputs, up)
    _same(ours, ref, tol=1e-5 if offset else 1e-6)
    for a, r in zip(g_ours, g_ref, strict=True):
        _same(a, r, tol=1e-4 if offset else 1e-6)
    _same(rm, rm2)
    _same(rv, rv2)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_without_a_process_group_it_is_nn_batchnorm(momentum):
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(4, momentum=momentum)
    ours = RankBatchNorm2d(4, momentum=momentum)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    for step in range(3):
        x = torch.randn(6, 4, 3, 3) + step
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), ref(xb)
        assert torch.equal(ya, yb)
        up = torch.randn_like(ya)
        ya.backward(up)
        yb.backward(up)
        assert torch.equal(xa.grad, xb.grad)
    assert torch.equal(ours.weight.grad, ref.weight.grad)
    assert torch.equal(ours.bias.grad, ref.bias.grad)
    for k, v in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    ours.eval(), ref.eval()
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(ours(x), ref(x))


def test_convert_batchnorm_swaps_every_batchnorm_keeping_its_tensors():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4),
        nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6, momentum=None)),
        nn.BatchNorm1d(6, affine=False),
    )  # fmt: skip
    model(torch.randn(5, 3, 6, 6))  # running statistics away from their initial values
    before = copy.deepcopy(model)
    tensors = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    model.eval()
    assert convert_batchnorm(model) is model
    kinds = [type(m) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert kinds == [RankBatchNorm2d, RankBatchNorm1d, RankBatchNorm1d]
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(tensors)
    assert all(after[k] is tensors[k] for k in tensors)  # the same Parameters and buffers
    assert not model[1].training  # the training flag carried over
    assert model[2][2].momentum is None and not model[3].affine
    x = torch.randn(5, 3, 6, 6)
    assert torch.equal(model(x), before.eval()(x))
    model.train(), before.train()
    assert torch.equal(model(x), before(x))
    bare = nn.BatchNorm1d(3)
    assert type(convert_batchnorm(bare)) is RankBatchNorm1d
    sync = nn.SyncBatchNorm(3)
    assert convert_batchnorm(sync) is sync


# --------------------------------------------------------------------------------------------
# Two processes
# --------------------------------------------------------------------------------------------

B = 8
SPLITS = [(4, 4), (5, 3)]  # rows of rank 0 and rank 1 at each step


# the model and the dtype it runs in: float64 makes the comparison sharp (1e-10) through the
# deeper network, where float32's rounding differs at 1e-5 between the two reduction orders
MODELS = {"small": torch.float32, "resnet": torch.float64}
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


class ResNetHead(nn.Module):
    """The image methods' layout: a ResNet (BatchNorm2d, channels-last) and a projector
    (BatchNorm1d)."""

    def __init__(self):
        super().__init__()
        self.encoder = build_image_encoder(ImageConfig(**image_shape("resnet-tiny")))
        self.projector = Projector(16, 12, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x)["pooled"])


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "resnet":
        model = ResNetHead()
    else:
        model = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
            nn.Linear(4 * 3 * 3, 5), nn.BatchNorm1d(5, momentum=None),
        )  # fmt: skip
    with torch.no_grad():  # affine parameters away from (1, 0)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.to(MODELS[name])


def _data(name: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g, dtype = torch.Generator().manual_seed(10 + step), MODELS[name]
    if name == "resnet":
        x, up = torch.rand(B, 3, 12, 12, generator=g), torch.randn(B, 6, generator=g)
    else:
        x, up = torch.randn(B, 3, 5, 5, generator=g) * 2 + 1, torch.randn(B, 5, generator=g)
    return x.to(dtype), up.to(dtype)


def _run(name: str, model: nn.Module, rows: list[slice]) -> dict:
    """Per step: the outputs and input gradients of `rows`, and the parameter gradients; then
    the state and an eval output. loss = sum(output * fixed weights) over the rows."""
    found: dict = {"y": [], "gx": [], "grads": []}
    model.train()
    for step, part in enumerate(rows):
        x, up = _data(name, step)
        x = x[part].clone().requires_grad_()
        model.zero_grad()
        y = model(x)
        (y * up[part]).sum().backward()
        found["y"].append(y.detach())
        found["gx"].append(x.grad)
        found["grads"].append({n: p.grad.clone() for n, p in model.named_parameters()})
    found["state"] = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    with torch.no_grad():
        found["eval"] = model(_data(name, 9)[0])
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)  # fmt: skip
    try:
        rows = [slice(0, a) if rank == 0 else slice(a, a + b) for a, b in SPLITS]
        for name in MODELS:
            found = _run(name, convert_batchnorm(_model(name)), rows)
            torch.save(found, Path(out) / f"{name}_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rank_bn")
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=2, start_method="spawn")
    return out


@pytest.mark.parametrize("name", MODELS)
def test_two_processes_equal_one_process_on_the_whole_batch(name, two_process_runs):
    ranks = [torch.load(two_process_runs / f"{name}_rank{r}.pt") for r in range(2)]
    one = _run(name, _model(name), [slice(0, B)] * len(SPLITS))  # nn.BatchNorm, no group
    tol = TOL[MODELS[name]]
    for step, (a, _) in enumerate(SPLITS):
        parts = (slice(0, a), slice(a, B))
        for r in range(2):
            _same(ranks[r]["y"][step], one["y"][step][parts[r]], tol)
            _same(ranks[r]["gx"][step], one["gx"][step][parts[r]], tol)
        for pname, grad in one["grads"][step].items():
            summed = ranks[0]["grads"][step][pname] + ranks[1]["grads"][step][pname]
            _same(summed, grad, tol)
    for r in range(2):
        for k, v in one["state"].items():
            if k.endswith("num_batches_tracked"):
                assert torch.equal(ranks[r]["state"][k], v)
            elif "running" in k:
                _same(ranks[r]["state"][k], v, tol)
        _same(ranks[r]["eval"], one["eval"], tol)  # eval: the running statistics, no sync


def test_the_ranks_need_the_sync():
    """Without it (plain nn.BatchNorm per rank) the same split gives other outputs: the test
    above can fail."""
    model = _model("small")
    x, _ = _data("small", 0)
    model.train()
    whole, half = model(x)[:4], model(x[:4])
    assert not torch.allclose(whole, half, atol=1e-3)
