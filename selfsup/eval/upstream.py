"""Frozen speech upstreams for probing (SUPERB, `embed`): each turns a padded batch of feature
frames into the encoder contract, {"all_hidden": [(B, T', D)] * L, "padding_mask": (B, T')},
and says which features it reads (`features`: a FeatureConfig), so the same evaluation runs over
every upstream:

    fbank, mfcc             the features themselves (one "layer"), the usual baselines
    fbank+cmvn, mfcc+cmvn   the same with per-utterance CMVN (which removes speaker cues)
    RUN                     a selfsup audio run's encoder (its input projection and every layer)
    random:RUN              the same architecture with random weights (seeded): what the
                            pretraining adds over the architecture alone

A run's features are normalised as in its pretraining (global CMVN from its training clips,
feature_stats.json). Upstreams are frozen: eval mode, no gradients.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from selfsup.checkpoint import is_run, latest_checkpoint, load_weights, read_safetensors
from selfsup.data.features import FeatureConfig
from selfsup.errors import ConfigError
from selfsup.models import run_config
from selfsup.objectives import build_objective
from selfsup.pretraining_audio import FEATURE_STATS

BASELINES = ("fbank", "mfcc", "fbank+cmvn", "mfcc+cmvn")


class FeatureUpstream(nn.Module):
    """The features as the one layer (L = 1, T' = T)."""

    def __init__(self, features: FeatureConfig, name: str):
        super().__init__()
        self.features, self.name, self.stack = features, name, 1
        self.dim = features.dim
        self.n_layers = 1

    def forward(self, features: torch.Tensor, padding_mask: torch.Tensor) -> dict:
        return {"all_hidden": [features], "padding_mask": padding_mask}


class RunUpstream(nn.Module):
    """A selfsup audio run's encoder, frozen; all its hidden states."""

    def __init__(self, encoder: nn.Module, features: FeatureConfig, stats, name: str):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.features, self.name = features, name
        self.stack, self.dim = encoder.stack, encoder.dim
        mean, std = stats if stats is not None else (None, None)
        self.register_buffer("mean", None if mean is None else torch.as_tensor(mean).float())
        self.register_buffer("std", None if std is None else torch.as_tensor(std).float())
        with torch.no_grad():
            probe = self.encoder(torch.zeros(1, 2 * self.stack, encoder.feature_dim),
                                 return_all=True)  # fmt: skip
        self.n_layers = len(probe["all_hidden"])

    def forward(self, features: torch.Tensor, padding_mask: torch.Tensor) -> dict:
        if self.mean is not None:
            features = (features - self.mean) / self.std
            features = features.masked_fill(padding_mask[..., None], 0.0)
        out = self.encoder(features, padding_mask, return_all=True)
        return {"all_hidden": out["all_hidden"], "padding_mask": out["padding_mask"]}

    def train(self, mode: bool = True):  # frozen: dropout stays off
        return super().train(False)


def _read_stats(run: Path):
    f = run / FEATURE_STATS
    if not f.exists():
        return None
    d = json.loads(f.read_text())
    return np.asarray(d["mean"], dtype=np.float32), np.asarray(d["std"], dtype=np.float32)


def load_upstream(spec: str, seed: int = 0) -> nn.Module:
    """The upstream `spec` names (see the module docstring)."""
    if spec in BASELINES:
        kind, _, norm = spec.partition("+")
        return FeatureUpstream(FeatureConfig(kind=kind, cmvn="utterance" if norm else "none"),
                               spec)  # fmt: skip
    random_init = spec.startswith("random:")
    path = Path(spec.removeprefix("random:"))
    if not path.is_dir() or not is_run(path):
        raise ConfigError(
            f"upstream {spec!r} is neither a selfsup audio run folder nor one of "
            f"{', '.join(BASELINES)} (or random:RUN)"
        )
    cfg = run_config(path)
    if getattr(cfg.objective, "name", None) is None or not hasattr(cfg.data, "features"):
        raise ConfigError(f"{path} is not an audio run (objective {cfg.objective.name})")
    torch.manual_seed(seed)
    objective = build_objective(cfg.objective, cfg.model)
    if not random_init:
        if (path / "model.safetensors").exists():
            weights = load_weights(path)
        else:
            ckpt = latest_checkpoint(path)
            if ckpt is None:
                raise ConfigError(f"run {path} has no weights yet")
            weights = read_safetensors(ckpt / "model.safetensors")
        objective.load_state_dict(weights)
    # the run's features, with global CMVN applied here (from the run's statistics)
    features = replace(cfg.data.features, cmvn="none" if cfg.data.features.cmvn == "global"
                       else cfg.data.features.cmvn)  # fmt: skip
    stats = _read_stats(path) if cfg.data.features.cmvn == "global" else None
    return RunUpstream(objective.encoder, features, stats, spec)
