"""Convolutional waveform encoders with a causal context network, the layout that CPC
(van den Oord et al., arXiv:1807.03748), wav2vec (Schneider et al., arXiv:1904.05862) and
vq-wav2vec (Baevski et al., arXiv:1910.05453) share:

    wave (B, T) -> conv encoder -> z (B, T', C) [-> quantizer -> z^ (B, T', C)]
                -> causal context network -> c (B, T', D)

The conv encoder is wav2vec 2.0's ConvFeatureEncoder (selfsup/layers/conv_frontend.py) over
CPC's and wav2vec's five layers: kernels (10, 8, 4, 4, 4), strides (5, 4, 2, 2, 2), 512
channels, 160 samples a frame (10 ms at 16 kHz), each frame reading 465 samples (29 ms). The
context network reads the encoder's frames (vq-wav2vec: their quantized values) and sees no
later frame:

    context="gru"   CPC's autoregressive GRU (256 units, one layer), `GRUContext`
    context="conv"  wav2vec's causal conv context network (9 layers of kernel 3 in the paper),
                    `CausalConvContext`

vq-wav2vec puts a quantizer between the two (quantizer="gumbel" or "kmeans", G = 2 groups of
V = 320 entries, selfsup/layers/quantize.py), so the context reads discrete codes.

Departures from the papers, each for a reason:
- The conv layers use GELU (ConvFeatureEncoder's), not ReLU.
- conv_norm="layer" (CPC's default here) normalises each frame over its channels after every
  conv: CPC_audio's channel norm, and per frame, so padding and later samples change no real
  frame. conv_norm="group" (wav2vec's default here) normalises each channel over time after the
  first conv, as wav2vec 2.0's base front end (wav2vec normalises every layer over time and
  channels): then a frame depends on the whole clip, so the encoder is neither causal nor
  padding-invariant; its context network still is, given z.
- wav2vec's context layers normalise over time too; here each frame is normalised over its
  channels (LayerNorm), so the context network is strictly causal.

forward(features, padding_mask, return_all=False, seeds=None) returns the encoder contract of
every modality and what the objectives need:

    "hidden"        (B, T', D) the context network's last output c
    "padding_mask"  (B, T') True on padding frames (a frame reading past a clip's last sample)
    "all_hidden"    (with return_all) z, when it is as wide as the context (D = C: the presets),
                    then each context layer's output; all of width D, as SUPERB stacks them
    "z"             (B, T', C) the conv encoder's output
    "context_input" (B, T', C) what the context read: z, or its quantized values
    with a quantizer:
    "quantized"     (B, T', C) z^, zeros on padding frames
    "codes"         (B, T', G) long, each frame's entry in every group (0 on padding frames)
    kmeans only: "codebook_loss", "commitment_loss", sums over the real frames of
    ||sg(z) - z^||^2 and ||z - sg(z^)||^2 (KMeansQuantizer)

The Gumbel quantizer in training draws its noise per utterance from `seeds` (B,) (one generator
per utterance, so an utterance's noise is the same in any batch and on any rank); without seeds
it adds none (the straight-through argmax at the current temperature). Evaluation takes the
argmax, no noise.

Legend: B batch, T samples, T' frames, C conv channels, D context width, G groups, V entries,
N real frames.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import ConfigError
from selfsup.layers.conv_frontend import (
    ConvFeatureEncoder,
    ConvFrontEndSpec,
    conv_output_lengths,
    downsample_padding_mask,
    receptive_field,
    total_stride,
    wave_input,
)
from selfsup.layers.quantize import GumbelQuantizer, KMeansQuantizer, gumbel_noise

CONTEXTS = ("gru", "conv")
QUANTIZERS = ("none", "gumbel", "kmeans")


@dataclass
class ConvContextConfig(ConvFrontEndSpec):
    """A conv encoder + causal context network; the defaults are CPC's (arXiv:1807.03748,
    section 3.1): five conv layers of 512 channels, kernels (10, 8, 4, 4, 4), strides
    (5, 4, 2, 2, 2), one GRU layer of 256 units. wav2vec (arXiv:1904.05862, section 3) is the
    same encoder with context="conv", dim=512, n_layers=9, context_kernel=3; vq-wav2vec
    (arXiv:1910.05453, section 3) adds quantizer="gumbel" or "kmeans" with n_groups=2,
    n_entries=320. The front end is three tuples, as Wav2Vec2Config's."""

    feature_dim: int = 1  # values per input frame: one waveform sample (fixed)
    conv_channels: tuple[int, ...] = (512,) * 5
    conv_kernels: tuple[int, ...] = (10, 8, 4, 4, 4)
    conv_strides: tuple[int, ...] = (5, 4, 2, 2, 2)
    conv_norm: str = "layer"  # layer (every conv, per frame) | group (first conv, over time)
    conv_bias: bool = False
    context: str = "gru"  # gru (CPC) | conv (wav2vec)
    dim: int = 256  # the context's width: GRU units or context conv channels
    n_layers: int = 1  # GRU layers or context conv layers
    context_kernel: int = 3  # the context convs' kernel (context="conv")
    quantizer: str = "none"  # none | gumbel | kmeans (vq-wav2vec)
    n_groups: int = 2
    n_entries: int = 320
    dropout: float = 0.0  # between context layers

    def validate(self) -> None:
        self.validate_frontend()  # receptive field 465 samples, stride 160 (10 ms at 16 kHz)
        choices = {"context": CONTEXTS, "quantizer": QUANTIZERS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown model.{name} {getattr(self, name)!r}; use "
                                  f"{', '.join(allowed)}")  # fmt: skip
        for name in ("dim", "n_layers", "context_kernel"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.quantizer != "none":
            if self.n_groups <= 0 or self.n_entries <= 1:
                raise ConfigError("model.n_groups must be positive and model.n_entries above 1")
            if self.conv_channels[-1] % self.n_groups:
                raise ConfigError(
                    f"the last conv layer's {self.conv_channels[-1]} channels must divide into "
                    f"model.n_groups={self.n_groups} groups"
                )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


class GRUContext(nn.Module):
    """CPC's autoregressive model g_ar (arXiv:1807.03748, 3.1: a GRU of 256 units): `n_layers`
    unidirectional GRU layers, dropout between them. forward((B, T', C)) -> every layer's
    output (B, T', D); output t has read inputs 0..t only."""

    def __init__(self, in_dim: int, dim: int, n_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.n_layers = n_layers
        self.layers = nn.ModuleList(
            nn.GRU(in_dim if i == 0 else dim, dim, batch_first=True) for i in range(n_layers)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        states = []
        for i, gru in enumerate(self.layers):
            x, _ = gru(self.drop(x) if i else x)  # (B, T', D)
            states.append(x)
        return states


class CausalConvContext(nn.Module):
    """wav2vec's context network (arXiv:1904.05862, 3: 9 layers, kernel 3, stride 1, 512
    channels): each layer a Conv1d padded kernel - 1 frames on the left only, so output t reads
    inputs t - n_layers (kernel - 1) .. t, then a LayerNorm over each frame's channels and ReLU.
    forward((B, T', C)) -> every layer's output (B, T', D)."""

    def __init__(
        self, in_dim: int, dim: int, n_layers: int = 9, kernel: int = 3, dropout: float = 0.0
    ):
        super().__init__()
        self.kernel, self.n_layers = kernel, n_layers
        self.convs = nn.ModuleList(
            nn.Conv1d(in_dim if i == 0 else dim, dim, kernel) for i in range(n_layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(n_layers))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        states = []
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            h = (self.drop(x) if i else x).transpose(1, 2)  # (B, C, T')
            h = conv(F.pad(h, (self.kernel - 1, 0))).transpose(1, 2)  # (B, T', D)
            x = F.relu(norm(h))
            states.append(x)
        return states


class ConvContextEncoder(nn.Module):
    """Waveforms -> conv frames z -> (quantizer) -> causal context c, as the module docstring
    describes. The context network and the quantizer (GumbelQuantizer, KMeansQuantizer or None)
    are passed in; `dim` is the context's width."""

    def __init__(
        self,
        conv_layers: list[tuple[int, int, int]],
        context: nn.Module,
        dim: int,
        conv_norm: str = "layer",
        conv_bias: bool = False,
        quantizer: nn.Module | None = None,
    ):
        super().__init__()
        self.conv_layers = list(conv_layers)
        self.frontend = ConvFeatureEncoder(self.conv_layers, conv_norm, conv_bias)
        self.quantizer = quantizer
        self.context = context
        self.dim, self.z_dim = dim, self.conv_layers[-1][0]
        self.n_layers = context.n_layers
        self.stack, self.feature_dim = 1, 1
        self.frame_stride = total_stride(self.conv_layers)  # samples per frame
        self.receptive_field = receptive_field(self.conv_layers)  # samples one frame reads

    def frame_lengths(self, padding_mask: torch.Tensor) -> torch.Tensor:
        """(B,) real frames of each clip of a (B, T) sample padding mask."""
        return conv_output_lengths((~padding_mask).sum(-1), self.conv_layers)

    def forward(
        self,
        features: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        return_all: bool = False,
        seeds: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """features: (B, T) or (B, T, 1) samples; padding_mask (B, T) True on padding samples;
        seeds (B,) long: the Gumbel noise's, per utterance (training only)."""
        z, pad = self.frames(features, padding_mask)  # (B, T', C), (B, T')
        result = {"z": z, "padding_mask": pad}
        x = z
        if self.quantizer is not None:
            result.update(self.quantize(z, pad, seeds))
            x = result["quantized"]
        states = self.context(x)  # [(B, T', D)] * n_layers
        result.update(hidden=states[-1], context_input=x)
        if return_all:
            result["all_hidden"] = ([z] if z.shape[-1] == self.dim else []) + states
        return result

    def units(
        self, features: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """{"codes" (B, T', G), "padding_mask" (B, T')}: the quantizer's codes of each frame,
        without the context network (`selfsup units`). In eval mode: the argmax codes."""
        if self.quantizer is None:
            raise ValueError("this encoder has no quantizer: it has no units")
        z, pad = self.frames(features, padding_mask)
        return {"codes": self.quantize(z, pad, None)["codes"], "padding_mask": pad}

    def frames(
        self, features: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) or (B, T, 1) samples -> (z (B, T', C), the frames' padding mask (B, T'))."""
        wave, padding_mask = wave_input(features, padding_mask, self.receptive_field)
        if padding_mask is None:
            padding_mask = torch.zeros(wave.shape, dtype=torch.bool, device=wave.device)
        z = self.frontend(wave)  # (B, T', C)
        return z, downsample_padding_mask(padding_mask, self.conv_layers, z.shape[1])

    def quantize(self, z: torch.Tensor, pad: torch.Tensor, seeds: torch.Tensor | None) -> dict:
        """The quantizer over the real frames only (padding frames: zeros, code 0), so its
        codes, losses and statistics count no padding."""
        real = ~pad
        rows = z[real]  # (N, C), row-major: utterance by utterance
        if rows.shape[0] == 0:  # no real frame (clips shorter than one): nothing to quantize
            return self._no_frames(z, pad)
        if isinstance(self.quantizer, GumbelQuantizer):
            noise = None
            if self.quantizer.training:
                noise = self.gumbel_noise(real.sum(1), seeds, rows.device)
            out = self.quantizer(rows, noise=noise)
        else:
            out = self.quantizer(rows)
        quantized = z.new_zeros(z.shape).index_put((real,), out["quantized"].to(z.dtype))
        codes = torch.zeros(*pad.shape, out["codes"].shape[-1], dtype=torch.long, device=z.device)
        codes[real] = out["codes"]  # (B, T', G)
        result = {"quantized": quantized, "codes": codes}
        for name in ("codebook_loss", "commitment_loss"):
            if name in out:
                result[name] = out[name]
        return result

    def _no_frames(self, z: torch.Tensor, pad: torch.Tensor) -> dict:
        G = self.quantizer.n_groups
        codes = torch.zeros(*pad.shape, G, dtype=torch.long, device=z.device)
        result = {"quantized": z * 0.0, "codes": codes}  # zeros, in the graph
        if isinstance(self.quantizer, KMeansQuantizer):
            zero = self.quantizer.codebooks.sum() * 0.0
            result |= {"codebook_loss": zero, "commitment_loss": zero}
        return result

    def gumbel_noise(
        self, lengths: torch.Tensor, seeds: torch.Tensor | None, device: torch.device
    ) -> torch.Tensor:
        """(N, G, V) Gumbel noise for the real frames, utterance b's drawn from a generator
        seeded with seeds[b] (zeros without seeds)."""
        G, V = self.quantizer.n_groups, self.quantizer.n_entries
        if seeds is None:
            return torch.zeros(int(lengths.sum()), G, V, device=device)
        parts = []
        for n, seed in zip(lengths.tolist(), seeds.tolist(), strict=True):
            g = torch.Generator(device=device).manual_seed(int(seed))
            parts.append(gumbel_noise((n, G, V), g))
        return torch.cat(parts) if parts else torch.zeros(0, G, V, device=device)


def build_conv_context(cfg: ConvContextConfig) -> ConvContextEncoder:
    """The encoder of `cfg`: front-end convs Kaiming-normal (ConvFeatureEncoder's), the GRU,
    context convs and quantizer as their modules initialise them."""
    C = cfg.conv_channels[-1]
    if cfg.context == "gru":
        context = GRUContext(C, cfg.dim, cfg.n_layers, cfg.dropout)
    else:
        context = CausalConvContext(C, cfg.dim, cfg.n_layers, cfg.context_kernel, cfg.dropout)
    quantizer = None
    if cfg.quantizer == "gumbel":
        quantizer = GumbelQuantizer(C, C, cfg.n_groups, cfg.n_entries)
    elif cfg.quantizer == "kmeans":
        quantizer = KMeansQuantizer(C, cfg.n_groups, cfg.n_entries)
    return ConvContextEncoder(cfg.conv_layers, context, cfg.dim, cfg.conv_norm, cfg.conv_bias,
                              quantizer)  # fmt: skip


def preset_shape(cfg: ConvContextConfig) -> ConvContextConfig:
    """A preset's width (carried over from the audio presets: dim, layers, dropout) for the CPU
    recipes: the conv encoder as wide as the context, at most 512 channels (the papers' width;
    512 channels cost about 2.4 GMAC per second of audio forward, far more than a tiny context).
    `--set model.conv_channels=...` still overrides."""
    width = min(512, cfg.dim)
    return dataclasses.replace(cfg, feature_dim=1, conv_channels=(width,) * len(cfg.conv_channels))
