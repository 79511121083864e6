"""Frozen speech upstreams for probing (SUPERB, `embed`): each turns a padded batch of feature
frames into the encoder contract, {"all_hidden": [(B, T', D)] * L, "padding_mask": (B, T')},
and says which features it reads (`features`: a FeatureConfig), so the same evaluation runs over
every upstream:

    fbank, mfcc             the features themselves (one "layer"), the usual baselines
    fbank+cmvn, mfcc+cmvn   the same with per-utterance CMVN (which removes speaker cues)
    RUN                     a selfsup audio run's encoder (its input projection and every layer)
    HF_FOLDER               a HuggingFace wav2vec 2.0 or HuBERT folder (Wav2Vec2Model,
                            HubertModel or a task model such as Wav2Vec2ForCTC: its encoder),
                            e.g. a download of facebook/wav2vec2-base, read offline
    random:RUN, random:HF_FOLDER
                            the same architecture with random weights (seeded): what the
                            pretraining adds over the architecture alone

A run's features are normalised as in its pretraining (global CMVN from its training clips,
feature_stats.json), and trimmed as in it (its data.features.trim_db). An HF folder reads the
waveform (features.kind "wave") at its preprocessor_config.json's sampling_rate, normalised per
utterance when its do_normalize is true (as Wav2Vec2FeatureExtractor; it divides by
sqrt(var + 1e-7) where we divide by the standard deviation), and its layers are transformers'
hidden_states. Upstreams are frozen: eval mode, no gradients.

Where the frames are: every upstream says where its output step j is centred, in samples of
its features' sample rate: j * frame_stride_samples + frame_offset_samples (`frame_centres`).
Spectral features: frame t is centred on sample t * hop_length, a step of `stack` frames on its
centre frame (stride hop_length * stack, offset hop_length * (stack // 2)). A waveform encoder's
frame t reads samples [t * S, t * S + R) of its conv front end (S its total stride, R its
receptive field: 320 and 400 for wav2vec 2.0), centred on t * S + R / 2.

Batches: a waveform encoder whose front end normalises over time (GroupNorm, the wav2vec 2.0 and
HuBERT base models) would let a batch's padding change the real frames, so such an upstream
encodes each padded example on its own: every clip's states are those of the clip alone (what
transformers gives for one unpadded clip), whatever the batch.

Long clips: a Transformer run reads at most model.max_len stacked frames at once, so a longer
input is encoded in consecutive windows of max_len * stack frames and the windows' outputs (and
padding masks) are concatenated; attention does not cross a window's boundary, so the frames
near one see only their own window's context. Inputs that fit are encoded in one pass, as
before. Recurrent runs (no max_len) always read the whole input. A waveform encoder reads any
length, but attention over a long recording grows with its square, so inputs over
WAVE_WINDOW_SECONDS (30 s) are encoded in windows of 30 s of frames, each window given the
R - S samples of context its last frame reads: the windows' frames are exactly the whole clip's
frame grid (frame t still reads samples [t * S, t * S + R)); only attention, the positional conv
and a GroupNorm front end's statistics stop at the window's edge.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from selfsup.checkpoint import is_run
from selfsup.data.features import FeatureConfig
from selfsup.errors import ConfigError
from selfsup.eval.upstream_base import Upstream, normalises_over_time
from selfsup.layers.conv_frontend import conv_output_lengths, receptive_field, total_stride
from selfsup.models import (
    FINETUNE_FORMAT,
    HF_SPEECH_TYPES,
    folder_format,
    hf_model_type,
    run_config,
    run_weights,
)
from selfsup.objectives import build_objective
from selfsup.pretraining_audio import FEATURE_STATS

BASELINES = ("fbank", "mfcc", "fbank+cmvn", "mfcc+cmvn")
WAVE_WINDOW_SECONDS = 30.0  # a waveform encoder reads longer inputs in windows of this length


class FeatureUpstream(Upstream):
    """The features as the one layer (L = 1, T' = T)."""

    def __init__(self, features: FeatureConfig, name: str):
        super().__init__()
        self._set_geometry(features, 1)
        self.name = name
        self.dim = features.dim
        self.n_layers = 1

    def forward(self, features: torch.Tensor, padding_mask: torch.Tensor) -> dict:
        return {"all_hidden": [features], "padding_mask": padding_mask}


def encode_windows(
    encoder: nn.Module, features: torch.Tensor, padding_mask: torch.Tensor, window: int
) -> dict:
    """{"all_hidden": [(B, ceil(T / stack), D)] * L, "padding_mask"} of (B, T, F) frames encoded
    in consecutive windows of `window` frames (a multiple of encoder.stack), concatenated over
    time. A window holding only padding for some example skips it (zeros, marked padding)."""
    hidden: list[list[torch.Tensor]] = []
    masks = []
    for s in range(0, features.shape[1], window):
        x, pad = features[:, s : s + window], padding_mask[:, s : s + window]
        rows = (~pad).any(1).nonzero().squeeze(1)  # the examples with frames in this window
        T = -(-x.shape[1] // encoder.stack)
        hidden_s, mask_s = _encode_rows(encoder, x, pad, rows, T)
        hidden.append(hidden_s)
        masks.append(mask_s)
    layers = [torch.cat(layer, dim=1) for layer in zip(*hidden, strict=True)]  # (B, T', D)
    return {"all_hidden": layers, "padding_mask": torch.cat(masks, dim=1)}


def _encode_rows(encoder: nn.Module, x: torch.Tensor, pad: torch.Tensor, rows: torch.Tensor,
                 T: int) -> tuple[list[torch.Tensor], torch.Tensor]:  # fmt: skip
    """All hidden states [(B, T, D)] * L and the padding mask (B, T) of the examples `rows`
    (at least one) of (x, pad) encoded together; the other examples zeros, all padding."""
    B = x.shape[0]
    if len(rows) == B:
        out = encoder(x, pad, return_all=True)
        return out["all_hidden"], out["padding_mask"]
    out = encoder(x[rows], pad[rows], return_all=True)
    states = []
    for h in out["all_hidden"]:
        z = h.new_zeros(B, T, h.shape[-1])  # (B, T', D)
        z[rows] = h
        states.append(z)
    full = torch.ones(B, T, dtype=torch.bool, device=pad.device)
    full[rows] = out["padding_mask"]
    return states, full


def encode_wave_windows(
    encoder: nn.Module,
    wave: torch.Tensor,
    padding_mask: torch.Tensor,
    conv_layers: list[tuple[int, int, int]],
    step: int,
) -> dict:
    """{"all_hidden": [(B, T', D)] * L, "padding_mask"} of (B, T, 1) samples through a waveform
    encoder, in windows that start every `step` samples (a multiple of the front end's stride
    S) and read step + R - S samples (R its receptive field): window k gives frames
    k * step / S .. (k + 1) * step / S - 1 of the whole clip, the same frames the whole clip
    would give (T' = conv_output_lengths(T)), concatenated. An example with less than R samples
    in a window skips it (zeros, marked padding)."""
    S, R = total_stride(conv_layers), receptive_field(conv_layers)
    if step % S:
        raise ValueError(f"window step {step} is not a multiple of the stride {S}")
    T = wave.shape[1]
    hidden: list[list[torch.Tensor]] = []
    masks = []
    for s in range(0, T, step):
        if T - s < R:  # no frame starts here: the clip's frames are all out
            break
        x, pad = wave[:, s : s + step + R - S], padding_mask[:, s : s + step + R - S]
        rows = ((~pad).sum(1) >= R).nonzero().squeeze(1)  # the examples with a frame here
        n = int(conv_output_lengths(x.shape[1], conv_layers))
        hidden_s, mask_s = _encode_rows(encoder, x, pad, rows, n)
        hidden.append(hidden_s)
        masks.append(mask_s)
    layers = [torch.cat(layer, dim=1) for layer in zip(*hidden, strict=True)]  # (B, T', D)
    return {"all_hidden": layers, "padding_mask": torch.cat(masks, dim=1)}


class RunUpstream(Upstream):
    """An audio encoder, frozen; all its hidden states, of inputs of any length (in windows of
    `window` = max_len * stack frames beyond what a Transformer run reads at once; for a
    waveform encoder, windows of WAVE_WINDOW_SECONDS). A waveform encoder (features.kind
    "wave") is described by its `conv_layers`; one that normalises over time (GroupNorm)
    encodes each padded example alone (`per_example`)."""

    def __init__(self, encoder: nn.Module, features: FeatureConfig, stats, name: str):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.name, self.dim = name, encoder.dim
        conv_layers = getattr(encoder, "conv_layers", None) if features.kind == "wave" else None
        if features.kind == "wave" and conv_layers is None:
            raise ConfigError(
                f"{name}: its encoder reads the waveform but does not list its "
                "conv front end (conv_layers), so its frames cannot be placed"
            )
        self._set_geometry(features, encoder.stack, conv_layers)
        self.per_example = features.kind == "wave" and normalises_over_time(encoder)
        max_len = getattr(encoder, "max_len", None)  # an RNN or a conv front end reads any length
        self.window = None if max_len is None else max_len * self.stack
        if conv_layers is not None:  # whole strides of WAVE_WINDOW_SECONDS
            S = self.frame_stride_samples
            self.window = max(1, int(WAVE_WINDOW_SECONDS * features.sample_rate) // S) * S
        mean, std = stats if stats is not None else (None, None)
        self.register_buffer("mean", None if mean is None else torch.as_tensor(mean).float())
        self.register_buffer("std", None if std is None else torch.as_tensor(std).float())
        n = max(2 * self.stack, getattr(encoder, "receptive_field", 1))  # one step at least
        with torch.no_grad():
            probe = self.encoder(torch.zeros(1, n, encoder.feature_dim), return_all=True)
        self.n_layers = len(probe["all_hidden"])

    def forward(self, features: torch.Tensor, padding_mask: torch.Tensor) -> dict:
        if self.mean is not None:
            features = (features - self.mean) / self.std
            features = features.masked_fill(padding_mask[..., None], 0.0)
        if self.per_example and bool(padding_mask.any()):
            return self._each(features, padding_mask)
        return self._encode(features, padding_mask)

    def _encode(self, features: torch.Tensor, padding_mask: torch.Tensor) -> dict:
        if self.conv_layers is not None:
            R, S = receptive_field(self.conv_layers), self.frame_stride_samples
            if features.shape[1] > self.window + R - S:
                return encode_wave_windows(self.encoder, features, padding_mask,
                                           self.conv_layers, self.window)  # fmt: skip
        elif self.window is not None and features.shape[1] > self.window:
            return encode_windows(self.encoder, features, padding_mask, self.window)
        out = self.encoder(features, padding_mask, return_all=True)
        return {"all_hidden": out["all_hidden"], "padding_mask": out["padding_mask"]}

    def _each(self, features: torch.Tensor, padding_mask: torch.Tensor) -> dict:
        """Every example encoded on its own (its padding cut off), padded back together."""
        lengths = (~padding_mask).sum(1).tolist()
        outs = [self._encode(features[i : i + 1, :n], padding_mask[i : i + 1, :n])
                for i, n in enumerate(lengths)]  # fmt: skip
        T = max(o["padding_mask"].shape[1] for o in outs)
        mask = torch.ones(len(outs), T, dtype=torch.bool, device=padding_mask.device)
        layers = []
        for layer in range(self.n_layers):
            first = outs[0]["all_hidden"][layer]
            z = first.new_zeros(len(outs), T, first.shape[-1])  # (B, T', D)
            for i, o in enumerate(outs):
                h = o["all_hidden"][layer][0]
                z[i, : len(h)] = h
            layers.append(z)
        for i, o in enumerate(outs):
            m = o["padding_mask"][0]
            mask[i, : len(m)] = m
        return {"all_hidden": layers, "padding_mask": mask}

    def train(self, mode: bool = True):  # frozen: dropout stays off
        return super().train(False)


def _read_stats(run: Path):
    f = run / FEATURE_STATS
    if not f.exists():
        return None
    d = json.loads(f.read_text())
    return np.asarray(d["mean"], dtype=np.float32), np.asarray(d["std"], dtype=np.float32)


def hf_features(info: dict) -> FeatureConfig:
    """The features an HF wav2vec 2.0 / HuBERT folder reads (its preprocessor's `info`): the
    waveform at its sampling rate, normalised per utterance when do_normalize."""
    return FeatureConfig(kind="wave", sample_rate=info["sampling_rate"],
                         cmvn="utterance" if info["do_normalize"] else "none")  # fmt: skip


def load_hf_encoder(path: Path, random_init: bool = False, seed: int = 0):
    """(encoder in eval mode, Wav2Vec2Config, FeatureConfig) of an HF wav2vec 2.0 / HuBERT
    folder: its weights, or (`random_init`) its architecture with seeded random weights."""
    from selfsup.encoders.wav2vec2 import build_wav2vec2
    from selfsup.interop.hf_wav2vec2 import load_hf_wav2vec2, read_hf_wav2vec2_config

    model_type = hf_model_type(path)
    if model_type not in HF_SPEECH_TYPES:
        raise ConfigError(f"{path} is a HuggingFace {model_type or 'model'} folder, not a speech "
                          f"model: speech upstreams are {' or '.join(HF_SPEECH_TYPES)} folders, "
                          "selfsup audio runs or feature baselines")  # fmt: skip
    if random_init:
        cfg, info = read_hf_wav2vec2_config(path)
        torch.manual_seed(seed)
        encoder = build_wav2vec2(cfg).eval()
    else:
        encoder, cfg, info = load_hf_wav2vec2(path)
    return encoder, cfg, hf_features(info)


def load_upstream(spec: str, seed: int = 0) -> Upstream:
    """The upstream `spec` names (see the module docstring)."""
    if spec.startswith("units:"):  # units:VQRUN:BERTRUN, a text BERT over vq-wav2vec units
        from selfsup.units import load_units_upstream

        return load_units_upstream(spec)
    if spec in BASELINES:
        kind, _, norm = spec.partition("+")
        return FeatureUpstream(FeatureConfig(kind=kind, cmvn="utterance" if norm else "none"),
                               spec)  # fmt: skip
    random_init = spec.startswith("random:")
    path = Path(spec.removeprefix("random:"))
    if path.is_dir() and folder_format(path) == FINETUNE_FORMAT:
        raise ConfigError(
            f"{path} is a fine-tuned folder; an upstream is a pretrained model: "
            "a selfsup audio run, an HF wav2vec2 / hubert folder or a baseline"
        )
    if path.is_dir() and not is_run(path) and (path / "config.json").is_file():
        encoder, _, features = load_hf_encoder(path, random_init, seed)
        return RunUpstream(encoder, features, None, spec)
    if not path.is_dir() or not is_run(path):
        raise ConfigError(
            f"upstream {spec!r} is neither a selfsup audio run folder, an HF wav2vec2 / hubert "
            f"folder nor one of {', '.join(BASELINES)} (or random:RUN)"
        )
    cfg = run_config(path)
    if getattr(cfg.objective, "name", None) is None or not hasattr(cfg.data, "features"):
        raise ConfigError(f"{path} is not an audio run (objective {cfg.objective.name})")
    torch.manual_seed(seed)
    objective = build_objective(cfg.objective, cfg.model)
    if not random_init:
        objective.load_state_dict(run_weights(path))
    # the run's features, with global CMVN applied here (from the run's statistics)
    features = replace(cfg.data.features, cmvn="none" if cfg.data.features.cmvn == "global"
                       else cfg.data.features.cmvn)  # fmt: skip
    stats = _read_stats(path) if cfg.data.features.cmvn == "global" else None
    return RunUpstream(objective.encoder, features, stats, spec)
