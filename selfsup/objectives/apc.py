"""Autoregressive predictive coding (Chung et al., arXiv:1904.03240): a causal model reads the
frames up to t and predicts frame t + n (n = 3 by default), scored by L1. The model is APC's
unidirectional GRU/LSTM stack (model.arch=gru|lstm) or the shared Transformer with causal
attention (model.arch=transformer, model.causal=true); either way position t sees no later
frame, so the objective needs no corruption.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from selfsup.data.audio_batches import AudioDataConfig, AudioNeeds
from selfsup.encoders.audio import AudioConfig, build_audio_encoder
from selfsup.errors import ConfigError
from selfsup.keys import FEATURES, PADDING_MASK
from selfsup.layers.linear import Linear
from selfsup.losses import masked_l1
from selfsup.objectives.base import Objective
from selfsup.objectives.mockingjay import real_frames


@dataclass
class APCConfig:
    """APC's target (arXiv:1904.03240, section 3): the frame `shift` steps ahead."""

    name: str = "apc"
    shift: int = 3

    def validate(self) -> None:
        if self.shift < 1:
            raise ConfigError(f"objective.shift must be >= 1, got {self.shift}")


class APC(Objective):
    """Returns `l1`: the sum of |prediction_t - frame_{t+n}| over every value of each real
    frame t + n (t from 0), over its count."""

    Config = APCConfig
    modality = "audio"
    model_config = AudioConfig
    data_config = AudioDataConfig
    work = "frames"
    terms = {"l1": "values"}
    loss_terms = ("l1",)

    def __init__(self, encoder: torch.nn.Module, cfg: APCConfig):
        super().__init__()
        self.cfg, self.encoder = cfg, encoder
        self.head = Linear(encoder.dim, encoder.feature_dim)  # APC's linear output layer

    @classmethod
    def default_model(cls, model: AudioConfig) -> AudioConfig:
        """APC reads one frame at a time and sees only the past."""
        return replace(model, stack=1, causal=True)

    @classmethod
    def build(cls, cfg: APCConfig, model: AudioConfig) -> APC:
        if model.stack != 1 or (model.arch == "transformer" and not model.causal):
            raise ConfigError(
                "APC predicts each next frame from the past only: it needs model.stack=1 and, "
                "for a Transformer, model.causal=true"
            )
        return cls(build_audio_encoder(model), cfg)

    def audio_needs(self) -> AudioNeeds:
        return AudioNeeds()

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        n, x = self.cfg.shift, batch[FEATURES]
        targets = int((~batch[PADDING_MASK][:, n:]).sum())
        return {"values": targets * x.shape[-1], "frames": real_frames(batch)}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n, x, pad = self.cfg.shift, batch[FEATURES], batch[PADDING_MASK]
        pred = self.head(self.encoder(x, pad)["hidden"])  # (B, T, F)
        valid = ~pad[:, n:]  # (B, T - n): target frame t + n is real
        mask = valid[:, :, None].expand(-1, -1, x.shape[-1])
        return {"l1": masked_l1(pred[:, :-n].float(), x[:, n:], mask)}
