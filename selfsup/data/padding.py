"""Padding lists of token ids (or labels) into one (B, T) tensor: used to collate pretraining
examples, fine-tuning features, packed rows and embedding batches."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
import torch


def pad_sequences(
    seqs: Sequence[Sequence[int]], pad_value: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(padded, mask): `seqs` as a (B, T) long tensor, each row filled up with `pad_value` to
    T = the longest sequence, and a (B, T) bool mask, True on the real positions.

    One flat copy of all the values and one scatter, not a copy per row; sequences of one length
    (embedding batches) are a single tensor() call."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    T = int(lengths.max(initial=0))
    if len(seqs) and (lengths == T).all():  # nothing to pad
        return torch.tensor(seqs, dtype=torch.long), torch.ones((len(seqs), T), dtype=torch.bool)
    mask = np.arange(T) < lengths[:, None]  # (B, T)
    flat = np.fromiter(chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
    out = np.full((len(seqs), T), pad_value, dtype=np.int64)
    out[mask] = flat
    return torch.from_numpy(out), torch.from_numpy(mask)
