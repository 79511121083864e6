"""TERA (Liu, Li & Lee, arXiv:2007.06028): self-supervised learning of transformer encoder
representation from three alterations of the input, each switchable: time masking (Mockingjay's
spans), frequency masking (one band of consecutive channels zeroed per utterance) and magnitude
alteration (Gaussian noise added to a share of the utterances). The encoder restores the
original frames; L1 is scored on every altered value (selfsup.corrupt.frames.tera_corrupt).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfsup.corrupt.frames import tera_corrupt as alter_frames
from selfsup.errors import ConfigError
from selfsup.keys import FEATURES, FRAME_MASK, PADDING_MASK, TARGETS
from selfsup.objectives.mockingjay import MockingjayConfig, Reconstruction


@dataclass
class TERAConfig(MockingjayConfig):
    """TERA's alterations (arXiv:2007.06028, section III): time masking as Mockingjay's,
    a frequency band of up to 20% of the channels, Gaussian noise (std 0.2) on 10% of the
    utterances."""

    name: str = "tera"
    time: bool = True
    frequency: bool = True
    max_width_ratio: float = 0.2  # widest frequency band, as a share of the channels
    noise: bool = True
    noise_prob: float = 0.1
    noise_std: float = 0.2

    def validate(self) -> None:
        super().validate()
        if not (self.time or self.frequency or self.noise):
            raise ConfigError("TERA needs at least one of objective.time, frequency, noise")
        if not 0.0 <= self.max_width_ratio <= 1.0 or not 0.0 <= self.noise_prob <= 1.0:
            raise ConfigError("objective.max_width_ratio and noise_prob must be in [0, 1]")
        if self.noise_std < 0:
            raise ConfigError(f"objective.noise_std must be >= 0, got {self.noise_std}")


def tera_corrupt(cfg: TERAConfig, stack: int, batch: dict, g: torch.Generator) -> dict:
    x, pad = batch[FEATURES], batch[PADDING_MASK]
    corrupted, mask = alter_frames(
        x, pad, g, time=cfg.time, frequency=cfg.frequency, noise=cfg.noise,
        mask_prob=cfg.mask_prob, span=cfg.span, stack=stack, zero_prob=cfg.zero_prob,
        random_prob=cfg.random_prob, max_width_ratio=cfg.max_width_ratio,
        noise_prob=cfg.noise_prob, std=cfg.noise_std,
    )  # fmt: skip
    return {**batch, FEATURES: corrupted, TARGETS: x, FRAME_MASK: mask}


class TERA(Reconstruction):
    Config = TERAConfig
    corruption = staticmethod(tera_corrupt)
