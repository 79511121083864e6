"""Negatives for predicting future frames contrastively (CPC, wav2vec, vq-wav2vec): for every
real encoder frame of a batch, K other frames of the batch to tell it apart from. The data
pipeline draws them with the batch's generator (the objectives' corruption), so batch k stays a
pure function of (seed, k) and a resumed run, or one on several processes, contrasts the same.

Negatives are drawn per TARGET frame and shared by the predictions of it from every step back
(CPC's W_1 c_{t-1}, ..., W_12 c_{t-12} all face the negatives of frame t), as wav2vec's
implementation does: one draw per frame instead of one per (frame, step).

Legend: B utterances, T' frames, K negatives, R real frames of the batch.
"""

from __future__ import annotations

import torch

from selfsup.losses import sample_negatives


def other_utterance_negatives(
    valid: torch.Tensor, n_negatives: int, generator: torch.Generator
) -> torch.Tensor:
    """(R, K) flat indices into the B * T' frames, for each of the R real frames of `valid`
    (B, T') bool in the row-major order of `x[valid]`: K frames drawn uniformly, with
    replacement, from the real frames of the OTHER utterances of the batch (CPC's negatives from
    the minibatch, arXiv:1807.03748, 3.1). Where no other utterance has a real frame (a batch of
    one), from the same utterance instead (`sample_negatives`)."""
    B, T = valid.shape
    flat = valid.reshape(-1).nonzero().squeeze(1)  # (R,) grouped by utterance
    if flat.numel() == 0:
        return flat.new_zeros(0, n_negatives)
    per_row = valid.sum(1)  # (B,)
    own = per_row[flat // T][:, None]  # (R, 1) real frames of the frame's own utterance
    start = (per_row.cumsum(0) - per_row)[flat // T][:, None]  # (R, 1) its run's start in flat
    others = flat.numel() - own  # (R, 1)
    u = torch.rand(
        flat.numel(), n_negatives, generator=generator, dtype=torch.float64,
        device=generator.device,
    ).to(flat.device)  # fmt: skip
    r = torch.minimum((u * others).long(), (others - 1).clamp(min=0))  # (R, K) in [0, others)
    j = torch.where(r >= start, r + own, r)  # skip the own utterance's run
    idx = flat[j.clamp(max=flat.numel() - 1)]  # (R, K); rows with no other: replaced below
    if bool((others == 0).any()):
        idx = torch.where(others > 0, idx, sample_negatives(valid, n_negatives, generator))
    return idx


def frame_negatives(
    valid: torch.Tensor, same: int, other: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each frame's negatives, for valid (B, T') True on real frames:

    - (B, T', same) long: `same` frames (0..T'-1) of its own utterance, drawn from its OTHER
      real frames (wav2vec, arXiv:1904.05862, 3: 10 from the same audio; `sample_negatives`);
    - with `other`, (B, T', other) long: flat indices into the batch's B * T' frames, drawn from
      the real frames of the other utterances (`other_utterance_negatives`); else None.

    A padding frame's negatives are itself (it is never scored). Drawn from `generator` only,
    the same-utterance draws first."""
    B, T = valid.shape
    frames = torch.arange(T, device=valid.device).view(1, T, 1).expand(B, T, same).clone()
    if same:
        frames[valid] = sample_negatives(valid, same, generator) % T  # (R, same)
    if not other:
        return frames, None
    flat = torch.arange(B * T, device=valid.device).view(B, T, 1).expand(B, T, other).clone()
    flat[valid] = other_utterance_negatives(valid, other, generator)  # (R, other)
    return frames, flat
