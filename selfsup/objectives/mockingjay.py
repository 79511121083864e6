"""Mockingjay (Liu et al., arXiv:1910.12638): masked acoustic modelling. 15% of the frames are
chosen in spans of 7 consecutive (stacked) frames; per utterance, the chosen frames are zeroed
(80%), replaced by random frames of the batch (10%) or kept (10%); a Transformer over 3-frame
stacks restores every chosen frame, scored by L1.

The corruption is selfsup.corrupt.frames.mask_time, applied by the data pipeline to each batch;
the objective only scores: the sum of |prediction - original| over the chosen frames' values,
over a count of those values (so the loss is the paper's mean L1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from selfsup.corrupt.frames import mask_time
from selfsup.data.audio_batches import AudioDataConfig, AudioNeeds
from selfsup.encoders.audio import AudioConfig, build_audio_encoder, unstack_frames
from selfsup.encoders.text import init_bert_weights
from selfsup.errors import ConfigError
from selfsup.heads.reconstruct import ReconstructHead
from selfsup.keys import FEATURES, FRAME_MASK, PADDING_MASK, TARGETS
from selfsup.losses import masked_l1
from selfsup.objectives.base import Objective


@dataclass
class MockingjayConfig:
    """Mockingjay's masking (arXiv:1910.12638, section 3.2): 15% of frames in spans of 7,
    80% zeroed / 10% random frames / 10% kept, drawn per utterance."""

    name: str = "mockingjay"
    mask_prob: float = 0.15
    span: int = 7  # consecutive (stacked) frames per masked span
    zero_prob: float = 0.8
    random_prob: float = 0.1

    def validate(self) -> None:
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"objective.mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.span < 1:
            raise ConfigError(f"objective.span must be >= 1, got {self.span}")
        if self.zero_prob < 0 or self.random_prob < 0 or self.zero_prob + self.random_prob > 1:
            raise ConfigError("objective.zero_prob and random_prob must be >= 0, summing to <= 1")


def real_frames(batch: dict[str, torch.Tensor]) -> int:
    return int((~batch[PADDING_MASK]).sum())


class Reconstruction(Objective):
    """Restore corrupted frames: encoder -> ReconstructHead -> L1 on `frame_mask`. Returns sums
    over the scored values: `l1` (the loss). The corruption (`corrupt`) is the subclass's."""

    modality = "audio"
    model_config = AudioConfig
    data_config = AudioDataConfig
    work = "frames"
    terms = {"l1": "values"}
    loss_terms = ("l1",)

    def __init__(self, encoder: torch.nn.Module, cfg):
        super().__init__()
        self.cfg, self.encoder = cfg, encoder
        self.head = ReconstructHead(encoder.dim, encoder.stack * encoder.feature_dim)
        init_bert_weights(self.head)

    @classmethod
    def build(cls, cfg, model: AudioConfig):
        if model.causal:
            raise ConfigError(f"{cfg.name} restores masked frames from both sides: set "
                              "model.causal=false")  # fmt: skip
        return cls(build_audio_encoder(model), cfg)

    corruption = None  # the subclass's: (cfg, stack, batch, generator) -> batch

    def audio_needs(self) -> AudioNeeds:
        # a plain function of the settings, not a bound method: data workers get no weights
        return AudioNeeds(corrupt=partial(type(self).corruption, self.cfg, self.encoder.stack))

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"values": int(batch[FRAME_MASK].sum()), "frames": real_frames(batch)}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch[FEATURES]  # (B, T, F), corrupted
        out = self.encoder(x, batch[PADDING_MASK])
        pred = unstack_frames(self.head(out["hidden"]), self.encoder.stack, x.shape[1])  # (B,T,F)
        return {"l1": masked_l1(pred.float(), batch[TARGETS], batch[FRAME_MASK])}


def mockingjay_corrupt(cfg: MockingjayConfig, stack: int, batch: dict, g: torch.Generator) -> dict:
    """Mockingjay's masking of a batch: corrupted features, the originals as targets, and every
    value of a chosen frame scored."""
    x, pad = batch[FEATURES], batch[PADDING_MASK]
    corrupted, chosen = mask_time(x, pad, g, cfg.mask_prob, cfg.span, stack, cfg.zero_prob,
                                  cfg.random_prob)  # fmt: skip
    mask = chosen[:, :, None].expand_as(x).contiguous()  # (B, T, F)
    return {**batch, FEATURES: corrupted, TARGETS: x, FRAME_MASK: mask}


class Mockingjay(Reconstruction):
    Config = MockingjayConfig
    corruption = staticmethod(mockingjay_corrupt)
