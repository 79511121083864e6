"""DeLoRes (Ghosh et al., arXiv:2203.13628): Barlow Twins' or VICReg's redundancy-reduction
loss on two augmented views of speech (selfsup.corrupt.audio_views), with the speech encoder of
the speech presets, its frames mean-pooled into one vector per view, then the projector. Run as
`selfsup pretrain --modality audio --objective vicreg|barlow` (registered as audio-vicreg and
audio-barlow), and probed like any speech run (`selfsup superb RUN`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import partial

import torch

from selfsup.corrupt.audio_views import AudioViewRecipe, audio_views
from selfsup.data.audio_batches import AudioDataConfig, AudioNeeds
from selfsup.encoders.audio import AudioConfig, build_audio_encoder
from selfsup.objectives.barlow import BarlowTwins, BarlowTwinsConfig
from selfsup.objectives.vicreg import VICReg, VICRegConfig


def _recipe(cfg) -> AudioViewRecipe:
    return AudioViewRecipe(**{f.name: getattr(cfg, f.name) for f in fields(AudioViewRecipe)})


class AudioViews:
    """What DeLoRes changes of its image parent: speech configs and data, views of clips."""

    modality = "audio"
    model_config = AudioConfig
    data_config = AudioDataConfig
    work = "clips"

    @classmethod
    def build(cls, cfg, model: AudioConfig):
        cfg.validate()
        _recipe(cfg).validate()
        return cls(build_audio_encoder(model), cfg)

    def audio_needs(self) -> AudioNeeds:
        return AudioNeeds(corrupt=partial(audio_views, _recipe(self.cfg), self.cfg.n_views))

    def own_counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"clips": next(iter(batch.values())).shape[0]}

    def encode_views(self, views: torch.Tensor) -> torch.Tensor:
        """(B, V, T, F) -> mean-pooled encoder states (B, V, D)."""
        B, V = views.shape[:2]
        h = self.encoder(views.flatten(0, 1))["hidden"]  # (B * V, T', D)
        return h.mean(1).reshape(B, V, -1)


@dataclass
class AudioBarlowConfig(BarlowTwinsConfig, AudioViewRecipe):
    name: str = "audio-barlow"
    views: str = "simclr"  # unused: audio views come from the fields below


@dataclass
class AudioVICRegConfig(VICRegConfig, AudioViewRecipe):
    name: str = "audio-vicreg"
    views: str = "simclr"  # unused


class AudioBarlowTwins(AudioViews, BarlowTwins):
    Config = AudioBarlowConfig


class AudioVICReg(AudioViews, VICReg):
    Config = AudioVICRegConfig
