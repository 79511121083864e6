"""Training-time losses and the logged accuracy against independent references."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup import IGNORE
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
