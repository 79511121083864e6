"""Training-time losses and the logged accuracy against independent references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.keys import IGNORE
from selfsup.losses import accuracy, masked_ce


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
