"""pad_sequences: the one padding function of the data pipelines."""

from __future__ import annotations

import random

import torch

from selfsup.data.padding import pad_sequences


def test_pads_to_the_longest_with_a_mask():
    rng = random.Random(0)
    seqs = [[rng.randrange(100) for _ in range(rng.randint(0, 9))] for _ in range(20)]
    padded, mask = pad_sequences(seqs, -7)
    T = max(map(len, seqs))
    assert padded.shape == mask.shape == (20, T) and padded.dtype == torch.long
    assert mask.dtype == torch.bool
    for row, m, s in zip(padded, mask, seqs, strict=True):
        assert row.tolist() == s + [-7] * (T - len(s))
        assert m.tolist() == [True] * len(s) + [False] * (T - len(s))


def test_equal_lengths_and_empty():
    padded, mask = pad_sequences([[1, 2], [3, 4]], 0)
    assert padded.tolist() == [[1, 2], [3, 4]] and bool(mask.all())
    padded, mask = pad_sequences([], 0)
    assert padded.shape == mask.shape == (0, 0)
    padded, mask = pad_sequences([[], [5]], 9)
    assert padded.tolist() == [[9], [5]] and mask.tolist() == [[False], [True]]
