"""Frame corruption for masked acoustic modelling, as seedable pure functions.

Mockingjay (arXiv:1910.12638): choose about `mask_prob`=15% of the frames in spans of `span`=7
consecutive frames; per utterance, 80% of the time zero them, 10% of the time replace them with
random frames, 10% of the time leave them; reconstruct the chosen frames (L1).
TERA (arXiv:2007.06028): the same time alteration, plus a channel (frequency) alteration, one
band of consecutive channels zeroed per utterance, and a magnitude alteration, Gaussian noise
added to some utterances; reconstruct everything that was altered (L1). The defaults here for
the last two (band width up to 20% of the channels, noise on 10% of the utterances, std 0.2)
are this project's choice.

Every function takes a padded batch, `features` (B, T, F) with `padding_mask` (B, T) True on
padding, padding at the end of each row (collation pads on the right; checked). Padding frames are
never chosen, changed or scored. All randomness comes from the `generator` argument.

Legend: B batch, T time (frames), F feature channels, U time units (groups of `stack` frames).
"""

from __future__ import annotations

import torch


def real_lengths(padding_mask: torch.Tensor) -> torch.Tensor:
    """(B,) number of real frames per row; ValueError unless the padding ends each row."""
    B, T = padding_mask.shape
    lengths = (~padding_mask).sum(1)
    if not torch.equal(padding_mask, torch.arange(T) >= lengths[:, None]):
        raise ValueError("padding_mask must be True on a suffix of each row (right padding)")
    return lengths


def choose_spans(
    padding_mask: torch.Tensor,
    generator: torch.Generator,
    mask_prob: float = 0.15,
    span: int = 7,
    stack: int = 1,
) -> torch.Tensor:
    """(B, T) bool: the frames Mockingjay masks, in non-overlapping spans of `span` time units.

    A unit is `stack` raw frames aligned to multiples of `stack`: an encoder that stacks 3 frames
    into one input step (Mockingjay's downsampling, dr=3) sees a span of 7 units = 21 raw frames,
    so masking is aligned to its steps; a trailing group of fewer than `stack` real frames, which
    such an encoder drops or pads, is never chosen.

    Rate: an utterance of n >= span units gets k spans, x = mask_prob * n / span rounded
    stochastically (floor(x), plus one with probability frac(x)), at most n // span: the expected
    masked fraction is mask_prob exactly for every length n >= span, where round() would mask
    nothing below span / (2 * mask_prob) units (24 at the defaults; an FSDD digit is ~44 frames,
    ~14 units with stack=3) and floor() (the reference implementation's rule) nothing below
    span / mask_prob units (47), and both miss the rate in between. Spans never overlap, so
    k * span units are masked exactly; they may touch, and a run of touching spans reads as one
    run whose length is a multiple of `span`. The k spans are placed uniformly among all
    non-overlapping placements (k slots out of n - k * (span - 1), each later span shifted by
    span - 1 per span before it). An utterance of 0 < n < span units is masked whole (one span
    clipped to it) with probability mask_prob, which keeps its expected rate; an empty one never.
    """
    B, T = padding_mask.shape
    U = T // stack
    n = real_lengths(padding_mask) // stack  # (B,) whole units per row
    x = mask_prob * n.double() / span
    k = torch.floor(x) + (torch.rand(B, generator=generator, dtype=torch.float64) < x % 1)
    k = torch.minimum(k.long(), n // span)
    short = (n > 0) & (n < span)
    k = torch.where(short, (torch.rand(B, generator=generator) < mask_prob).long(), k)
    width = torch.where(short, n, torch.full_like(n, span))  # (B,) span length in units
    slots = n - k * (width - 1)  # (B,) places for the k starts once the spans are shrunk to 1
    # Choose k of the `slots` places: the k smallest of uniform keys, invalid places keyed 2.
    keys = torch.rand(B, U, generator=generator)  # (B, U)
    place = torch.arange(U)
    keys = keys.masked_fill(place >= slots[:, None], 2.0)
    rank = torch.empty_like(place).repeat(B, 1)
    rank.scatter_(1, keys.argsort(1), place.repeat(B, 1))  # (B, U) rank of each place's key
    picked = rank < k[:, None]
    order = picked.cumsum(1) - 1  # how many spans start before this one
    start = place + order * (width[:, None] - 1)  # (B, U) the span's first unit, where picked
    delta = torch.zeros(B, U + 1, dtype=torch.long)
    delta.scatter_add_(1, torch.where(picked, start, U), picked.long())
    delta.scatter_add_(1, torch.where(picked, start + width[:, None], U), -picked.long())
    units = delta.cumsum(1)[:, :U] > 0  # (B, U)
    chosen = torch.zeros(B, T, dtype=torch.bool)
    chosen[:, : U * stack] = units.repeat_interleave(stack, dim=1)  # (B, U * stack)
    return chosen & ~padding_mask


def mask_time(
    features: torch.Tensor,
    padding_mask: torch.Tensor,
    generator: torch.Generator,
    mask_prob: float = 0.15,
    span: int = 7,
    stack: int = 1,
    zero_prob: float = 0.8,
    random_prob: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mockingjay's time alteration (arXiv:1910.12638; TERA's time alteration, arXiv:2007.06028,
    with the same defaults). Returns (corrupted features, chosen (B, T) bool).

    The frames are chosen by `choose_spans` (see it for the rate and `stack`). Then one action is
    drawn per utterance, as in the paper's reference implementation (not per frame, as BERT does
    per token): with `zero_prob` all its chosen frames become 0; with `random_prob` each chosen
    frame is replaced by a real frame drawn uniformly from the whole batch, any utterance (the
    reference copies spans of the same utterance; drawing from the batch also serves utterances
    shorter than a span); otherwise they are kept. The loss scores every chosen frame, whatever
    its action. Same generator state, same result.
    """
    B, T, _ = features.shape
    chosen = choose_spans(padding_mask, generator, mask_prob, span, stack)
    u = torch.rand(B, generator=generator)
    zero = (u < zero_prob)[:, None] & chosen  # (B, T)
    rand = ((u >= zero_prob) & (u < zero_prob + random_prob))[:, None] & chosen
    real = (~padding_mask).flatten().nonzero().squeeze(1)  # (N,) flat indices of real frames
    out = features.masked_fill(zero[..., None], 0.0)
    if len(real):
        pick = real[torch.randint(0, len(real), (B, T), generator=generator)]  # (B, T)
        if rand.any():  # copy only the replaced frames (most batches replace few or none)
            out[rand] = features.flatten(0, 1)[pick[rand]]  # (M, F)
    return out, chosen


def mask_frequency(
    features: torch.Tensor,
    padding_mask: torch.Tensor,
    generator: torch.Generator,
    max_width_ratio: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """TERA's channel alteration (arXiv:2007.06028): per utterance one band of consecutive
    channels, its width uniform in 0..floor(max_width_ratio * F), its start uniform among the
    places it fits, set to 0 on the utterance's real frames. Returns (corrupted, band (B, F))."""
    B, T, F = features.shape
    max_width = int(max_width_ratio * F)
    width = torch.randint(0, max_width + 1, (B,), generator=generator)
    start = (torch.rand(B, generator=generator) * (F - width + 1)).long()  # 0..F - width
    channel = torch.arange(F)
    band = (channel >= start[:, None]) & (channel < (start + width)[:, None])  # (B, F)
    hit = band[:, None, :] & ~padding_mask[..., None]  # (B, T, F)
    return features.masked_fill(hit, 0.0), band


def add_noise(
    features: torch.Tensor,
    padding_mask: torch.Tensor,
    generator: torch.Generator,
    noise_prob: float = 0.1,
    std: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """TERA's magnitude alteration (arXiv:2007.06028): with probability `noise_prob` an
    utterance gets Gaussian noise N(0, std^2) added to every value of its real frames.
    Returns (corrupted, noised (B,) bool)."""
    B = features.shape[0]
    noised = torch.rand(B, generator=generator) < noise_prob
    noise = torch.randn(features.shape, generator=generator, dtype=features.dtype) * std
    where = (noised[:, None] & ~padding_mask)[..., None]  # (B, T, 1)
    return features + noise * where, noised


def tera_corrupt(
    features: torch.Tensor,
    padding_mask: torch.Tensor,
    generator: torch.Generator,
    time: bool = True,
    frequency: bool = True,
    noise: bool = True,
    mask_prob: float = 0.15,
    span: int = 7,
    stack: int = 1,
    zero_prob: float = 0.8,
    random_prob: float = 0.1,
    max_width_ratio: float = 0.2,
    noise_prob: float = 0.1,
    std: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """TERA's corruption (arXiv:2007.06028): `mask_time`, then `mask_frequency`, then `add_noise`
    (each switchable; the noise lands on the already masked values). Returns (corrupted,
    frame_mask (B, T, F) bool), the values the L1 loss scores: TERA reconstructs what it altered,
    so frame_mask = the time-chosen frames (all channels) | the frequency band (on real frames) |
    every real value of a noised utterance. Padding is never in it. With every switch off the
    features come back unchanged and frame_mask is empty."""
    B, T, F = features.shape
    real = ~padding_mask[..., None]  # (B, T, 1)
    frame_mask = torch.zeros(B, T, F, dtype=torch.bool)
    out = features
    if time:
        out, chosen = mask_time(
            out, padding_mask, generator, mask_prob, span, stack, zero_prob, random_prob
        )
        frame_mask |= chosen[..., None]
    if frequency:
        out, band = mask_frequency(out, padding_mask, generator, max_width_ratio)
        frame_mask |= band[:, None, :] & real
    if noise:
        out, noised = add_noise(out, padding_mask, generator, noise_prob, std)
        frame_mask |= noised[:, None, None] & real
    return out, frame_mask


def frame_stats(chosen: torch.Tensor, padding_mask: torch.Tensor) -> dict:
    """What a time mask realised, for `inspect-masking`: the share of real frames chosen
    (`masked_fraction`), the share of non-empty utterances with any frame chosen
    (`masked_utterances`), and `run_lengths`, {length: number of runs} of maximal runs of chosen
    frames (touching spans count as one run)."""
    chosen = chosen & ~padding_mask
    B, T = chosen.shape
    n_real = int((~padding_mask).sum())
    rows = (~padding_mask).any(1)
    edges = torch.zeros(B, T + 2, dtype=torch.long)
    edges[:, 1:-1] = chosen.long()
    step = edges.diff(dim=1)  # (B, T + 1): 1 where a run starts, -1 after it ends
    starts = step.eq(1).nonzero()[:, 1]  # row-major, so the k-th start matches the k-th end
    ends = step.eq(-1).nonzero()[:, 1]
    counts = torch.bincount(ends - starts)
    return {
        "masked_fraction": int(chosen.sum()) / n_real if n_real else 0.0,
        "masked_utterances": int(chosen.any(1).sum()) / int(rows.sum()) if rows.any() else 0.0,
        "run_lengths": {int(L): int(c) for L, c in enumerate(counts.tolist()) if c},
    }


def overlapping_spans(
    padding_mask: torch.Tensor,
    generator: torch.Generator,
    start_prob: float = 0.065,
    span: int = 10,
    min_spans: int = 2,
) -> torch.Tensor:
    """(B, T) bool: wav2vec 2.0's and HuBERT's time mask over encoder frames (arXiv:2006.11477,
    section 3.1: p = 0.065 of the frames start a span of M = 10; HuBERT, arXiv:2106.07447: p =
    0.08): for an utterance of n real frames, k span starts, k = floor(start_prob * n + u) with
    u ~ U[0, 1) (stochastic rounding; the reference implementations' `mask_prob` is
    start_prob * span, e.g. transformers' mask_time_prob 0.65 for the paper's 0.065), at least
    `min_spans` and at most n - span + 1, drawn without replacement from the n - span + 1
    places; each masks the `span` frames from its start. Spans may overlap, so the masked share
    is below k * span / n (about 49% of the frames at the defaults). An utterance shorter than
    `span` gets one span clipped to it (masked whole) when min_spans > 0; an empty one nothing.
    Padding is never masked."""
    if not 0.0 <= start_prob <= 1.0 or span < 1 or min_spans < 0:
        raise ValueError("need 0 <= start_prob <= 1, span >= 1 and min_spans >= 0")
    B, T = padding_mask.shape
    n = real_lengths(padding_mask)  # (B,)
    places = (n - span + 1).clamp(min=1)  # (B,) possible starts (short rows: one, at 0)
    u = torch.rand(B, generator=generator, dtype=torch.float64)
    k = torch.floor(start_prob * n.double() + u).long().clamp(min=min_spans)
    k = torch.minimum(k, places) * (n > 0)  # (B,)
    keys = torch.rand(B, T, generator=generator).masked_fill(
        torch.arange(T) >= places[:, None], 2.0
    )
    rank = keys.argsort(1).argsort(1)  # (B, T) rank of each place's key
    starts = rank < k[:, None]  # (B, T) the k places with the smallest keys
    delta = torch.zeros(B, T + span, dtype=torch.long)
    delta[:, :T] += starts.long()
    delta[:, span : T + span] -= starts.long()
    return (delta.cumsum(1)[:, :T] > 0) & ~padding_mask
