"""Losses as pure functions of tensors. Objectives apply them; models never own a loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup import IGNORE


def masked_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the rows of (M, V) logits whose target is not IGNORE (mean over rows).

    With MLM the rows are already the masked positions only (BERT, arXiv:1810.04805, eq. in 3.1).
    """
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE)


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Share of rows whose argmax equals the target, IGNORE rows excluded."""
    keep = targets != IGNORE
    if not bool(keep.any()):
        return logits.new_zeros(())
    return (logits.argmax(-1)[keep] == targets[keep]).float().mean()
