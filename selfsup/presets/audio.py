"""Speech presets: Transformer shapes over 80 log-mel values (25 ms windows every 10 ms at
16 kHz) stacked 3 frames at a time, and their training defaults, written in Python.

`base` is Mockingjay's and TERA's base model (3 layers x 768, 12 heads; arXiv:1910.12638,
arXiv:2007.06028); the smaller ones keep 3 layers and narrow the width so that the CPU recipes
finish in minutes; `large` is Mockingjay's 12-layer model. APC switches the same shape to one
frame at a time with causal attention (objectives/apc.py), or to its GRU with model.arch=gru.
"""

from __future__ import annotations

from copy import deepcopy

from selfsup.config import RunConfig, TrainConfig
from selfsup.data.audio_batches import AudioDataConfig
from selfsup.data.features import FeatureConfig
from selfsup.encoders.audio import AudioConfig
from selfsup.objectives.mockingjay import MockingjayConfig


def _audio(n_layers: int, dim: int) -> AudioConfig:
    # No dropout in pretraining, as the text presets (short budgets; CPU dropout is costly).
    return AudioConfig(dim=dim, n_layers=n_layers, n_heads=max(1, dim // 64), ffn_dim=4 * dim,
                       dropout=0.0, attn_dropout=0.0)  # fmt: skip


MODELS: dict[str, AudioConfig] = {
    "tiny": _audio(2, 128),
    "mini": _audio(3, 256),
    "small": _audio(3, 512),
    "base": _audio(3, 768),  # Mockingjay / TERA base
    "large": _audio(12, 768),  # Mockingjay large
}

# Batches are clips (crops of up to data.max_frames frames). `tiny` runs in about a minute on
# 2 CPU cores; `mini` is the 30-minute CPU recipe of the README's speech section.
TRAIN: dict[str, TrainConfig] = {
    "tiny": TrainConfig(
        steps=300, batch_size=16, lr=1e-3, warmup_steps=30, save_every=100, eval_every=100
    ),  # fmt: skip
    "mini": TrainConfig(steps=6000, batch_size=32, lr=5e-4, warmup_steps=300),
    "small": TrainConfig(steps=20000, batch_size=32, lr=3e-4, warmup_steps=1000),
    "base": TrainConfig(steps=200000, batch_size=32, lr=2e-4, warmup_steps=7000),
    "large": TrainConfig(steps=500000, batch_size=32, lr=2e-4, warmup_steps=7000),
}


def audio_preset(name: str) -> RunConfig:
    # Global CMVN (one mean and deviation per channel, from the run's training clips): the
    # features on a scale a zeroed frame means "the average frame", as Mockingjay's normalised
    # inputs, while every utterance keeps its own level (utterance CMVN would remove speaker
    # cues; SUPERB's fbank+cmvn baseline shows what that costs).
    data = AudioDataConfig(features=FeatureConfig(cmvn="global"))
    return RunConfig(preset=name, model=deepcopy(MODELS[name]), objective=MockingjayConfig(),
                     data=data, train=deepcopy(TRAIN[name]))  # fmt: skip
