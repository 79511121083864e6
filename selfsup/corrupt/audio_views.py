"""Augmented views of speech features for redundancy-reduction pretraining on audio (DeLoRes,
Ghosh et al., arXiv:2203.13628, which takes its augmentations from BYOL-A, arXiv:2103.06695):
each view is a random crop of `crop` frames of each clip (a clip shorter than the crop is
repeated to fill it), mixed with another clip of the batch at a random ratio (BYOL-A's mixup),
shifted by a random gain, with one time and one frequency band masked (SpecAugment-style).

The features are CMVN-normalised log-mel frames (B, T, F); mixing and gain act on those values
directly (BYOL-A mixes in the power domain before its normalisation: a simplification, said
here). Every draw comes from the generator passed in, a fixed number per clip and view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfsup.errors import ConfigError
from selfsup.keys import FEATURES, PADDING_MASK, VIEWS


@dataclass
class AudioViewRecipe:
    crop: int = 96  # frames per view (~1 s at 100 Hz)
    mix_max: float = 0.4  # mixup ratio uniform in [0, mix_max] (BYOL-A's 0.4)
    gain: float = 0.5  # added offset uniform in [-gain, gain] (normalised units)
    time_mask: float = 0.1  # longest masked time band, as a share of the crop
    freq_mask: float = 0.1  # longest masked frequency band, as a share of the channels

    def validate(self) -> None:
        if self.crop < 1:
            raise ConfigError(f"objective.crop must be positive, got {self.crop}")
        for name in ("mix_max", "time_mask", "freq_mask"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"objective.{name} must be in [0, 1)")
        if self.gain < 0:
            raise ConfigError(f"objective.gain must be >= 0, got {self.gain}")


def crop_clips(x: torch.Tensor, lengths: torch.Tensor, crop: int, u: torch.Tensor) -> torch.Tensor:
    """(B, T, F) with real lengths (B,) -> (B, crop, F): clip b from start floor(u[b] * slack)
    (slack = its length - crop, at least 0); a shorter clip repeated from its start."""
    B = x.shape[0]
    lengths = lengths.clamp(min=1)
    slack = (lengths - crop).clamp(min=0)
    start = torch.minimum((u * (slack + 1)).long(), slack)  # u in [0, 1): uniform in 0..slack
    t = torch.arange(crop)[None] + start[:, None]  # (B, crop)
    t = t % lengths[:, None]  # shorter clips wrap round their own frames
    return x[torch.arange(B)[:, None], t]  # (B, crop, F)


def band_mask(n: int, width: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """(B, n) bool: a band of `width` (B,) long starting at floor(where * (n - width + 1))."""
    start = (where * (n - width + 1).float()).long()
    i = torch.arange(n)[None]
    return (i >= start[:, None]) & (i < (start + width)[:, None])


def audio_view(x: torch.Tensor, lengths: torch.Tensor, g: torch.Generator,
               r: AudioViewRecipe) -> torch.Tensor:  # fmt: skip
    """One view (B, crop, F) of the clips x (B, T, F): the module docstring's chain."""
    B, _, F = x.shape
    u = torch.rand(B, 8, generator=g)  # a fixed block of draws per clip
    view = crop_clips(x, lengths, r.crop, u[:, 0])
    partner = torch.roll(torch.arange(B), 1 + int(u[0, 1] * max(1, B - 1)) % max(1, B))
    other = crop_clips(x[partner], lengths[partner], r.crop, u[:, 2])
    lam = (u[:, 3] * r.mix_max)[:, None, None]
    view = (1 - lam) * view + lam * other
    view = view + ((2 * u[:, 4] - 1) * r.gain)[:, None, None]
    tw = (u[:, 5] * (r.time_mask * r.crop + 1)).long().clamp(max=r.crop)
    fw = (u[:, 6] * (r.freq_mask * F + 1)).long().clamp(max=F)
    t_mask = band_mask(r.crop, tw, u[:, 7])  # (B, crop)
    f_mask = band_mask(F, fw, torch.rand(B, generator=g))  # (B, F)
    return view.masked_fill(t_mask[:, :, None] | f_mask[:, None, :], 0.0)


def audio_views(recipe: AudioViewRecipe, n_views: int, batch: dict, generator) -> dict:
    """{FEATURES (B, T, F), PADDING_MASK} -> {VIEWS (B, V, crop, F)}."""
    x, pad = batch[FEATURES], batch[PADDING_MASK]
    lengths = (~pad).sum(1)
    views = [audio_view(x, lengths, generator, recipe) for _ in range(n_views)]
    return {VIEWS: torch.stack(views, 1)}
