"""Training-time losses and the logged accuracy against independent references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.keys import IGNORE
from selfsup.losses import accuracy, hits, masked_ce


def test_accuracy_equals_argmax_share_ignoring_ignored_rows():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 37, generator=g)
    targets = torch.randint(0, 37, (500,), generator=g)
    targets[:200][logits.argmax(-1)[:200] == targets[:200]] = IGNORE  # some hits ignored
    targets[::7] = logits.argmax(-1)[::7]  # and enough hits that the share is not tiny
    keep = targets != IGNORE
    want = (logits.argmax(-1)[keep] == targets[keep]).float().mean()
    assert 0.1 < float(want) < 0.9
    assert torch.equal(accuracy(logits, targets), want)
    assert float(accuracy(logits, torch.full((500,), IGNORE))) == 0.0


def test_masked_ce_equals_cross_entropy_over_kept_rows():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(40, 11, generator=g)
    targets = torch.randint(0, 11, (40,), generator=g)
    targets[::3] = IGNORE
    keep = targets != IGNORE
    want = F.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(masked_ce(logits, targets), want)


@pytest.mark.parametrize("ignored", [0, 5])
def test_fused_masked_ce_equals_cross_entropy_value_and_gradient(ignored):
    """Wide rows take the fused path: the same loss and logits gradient as F.cross_entropy."""
    g = torch.Generator().manual_seed(2)
    logits = (3 * torch.randn(30, 2000, generator=g)).requires_grad_()
    targets = torch.randint(0, 2000, (30,), generator=g)
    targets[:ignored] = IGNORE
    keep = targets != IGNORE
    ours = masked_ce(logits, targets)
    (grad,) = torch.autograd.grad(ours * 1.7, logits)
    ref_logits = logits.detach().clone().requires_grad_()
    ref = F.cross_entropy(ref_logits, targets, ignore_index=IGNORE)
    (ref_grad,) = torch.autograd.grad(ref * 1.7, ref_logits)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(grad, ref_grad, atol=1e-7, rtol=1e-5)
    assert not grad[~keep].any()


def test_fused_masked_ce_refuses_a_second_backward():
    logits = torch.randn(4, 1500, requires_grad=True)
    loss = masked_ce(logits, torch.tensor([1, 2, 3, 4]))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="runs once"):
        loss.backward()


# --------------------------------------------------------------------------------------------
# linear_ce: the MLM decoder and its loss, chunked
# --------------------------------------------------------------------------------------------


def _linear_ce_case(seed: int, m: int = 37, d: int = 16, v: int = 50):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(m, d, generator=g)
    w = torch.randn(v, d, generator=g) * 0.5
    b = torch.randn(v, generator=g)
    t = torch.randint(0, v, (m,), generator=g)
    t[::5] = IGNORE
    return h, w, b, t


@pytest.mark.parametrize("chunk", [1, 8, 37, 100])
def test_linear_ce_equals_the_unfused_loss_hits_and_gradients(chunk):
    from selfsup.losses import linear_ce

    h, w, b, t = _linear_ce_case(0)
    leaves = [x.clone().requires_grad_() for x in (h, w, b)]
    loss, hit = linear_ce(*leaves, t, chunk=chunk)
    ref_leaves = [x.clone().double().requires_grad_() for x in (h, w, b)]
    logits = ref_leaves[0] @ ref_leaves[1].t() + ref_leaves[2]
    ref = F.cross_entropy(logits, t, ignore_index=IGNORE, reduction="sum")
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert hit.item() == hits(logits.detach().float(), t).item()
    (loss * 0.7).backward()
    (ref * 0.7).backward()
    for got, want in zip(leaves, ref_leaves, strict=True):
        torch.testing.assert_close(got.grad, want.grad.float(), rtol=1e-4, atol=1e-5)


def test_linear_ce_under_bf16_autocast_matches_the_unfused_path():
    from selfsup.losses import linear_ce

    h, w, b, t = _linear_ce_case(1, m=300, d=32, v=2048)
    a = [x.clone().requires_grad_() for x in (h, w, b)]
    r = [x.clone().requires_grad_() for x in (h, w, b)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, hit = linear_ce(*a, t, chunk=64)
        logits = F.linear(r[0], r[1], r[2])  # bf16 under autocast
        ref = masked_ce(logits, t, reduction="sum")
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref.item(), rel=1e-3)
    assert hit.item() == hits(logits.detach().float(), t).item()
    loss.backward()
    ref.backward()
    for got, want in zip(a, r, strict=True):
        assert got.grad.dtype == want.grad.dtype == torch.float32
        torch.testing.assert_close(got.grad, want.grad, rtol=2e-2, atol=2e-2)


def test_linear_ce_without_bias_and_without_gradients():
    from selfsup.losses import linear_ce

    h, w, _, t = _linear_ce_case(2)
    with torch.no_grad():
        loss, hit = linear_ce(h, w, None, t)
    ref = F.cross_entropy(h @ w.t(), t, ignore_index=IGNORE, reduction="sum")
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert hit.item() == hits(h @ w.t(), t).item()
