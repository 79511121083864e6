"""The waveform encoder of wav2vec 2.0 (arXiv:2006.11477) and HuBERT (arXiv:2106.07447), which
share one architecture: a convolutional feature encoder over raw 16 kHz samples (20 ms frames),
a LayerNorm + Linear projection to the model width, a learned mask embedding that replaces the
masked frames, a convolutional relative positional embedding, and a Transformer stack.

Two layouts (`stable_layer_norm`):

    False  post-LN blocks; the positional embedding is added, then LayerNorm, then the blocks
           (wav2vec 2.0 and HuBERT base)
    True   pre-LN blocks; the positional embedding is added, the blocks, then a final
           LayerNorm (wav2vec2-large-lv60, HuBERT large: "stable layer norm")

forward(features, padding_mask, mask) returns the encoder contract of every modality and what
the objectives need:

    "hidden"            (B, T', D) the last layer (after the final LayerNorm when pre-LN)
    "padding_mask"      (B, T') True on padding frames
    "all_hidden"        (with return_all) the Transformer's input, then each block's output,
                        as transformers' output_hidden_states gives them (v5: the pre-LN
                        layout's last entry is before the final LayerNorm)
    "conv_features"     (B, T', C) the front end's output (wav2vec 2.0's feature penalty)
    "extract_features"  (B, T', C) the same after the projection's LayerNorm: what wav2vec 2.0
                        quantises, transformers' `extract_features`
    "projected"         (B, T', D) after the projection, before masking

Waveforms come in as (B, T) or as (B, T, 1) frames of one value, so the rest of selfsup can
treat them as features of width `feature_dim` = 1.

Legend: B batch, T samples, T' frames, C conv channels, D model width.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from selfsup.encoders.text import init_bert_weights
from selfsup.encoders.transformer import PostLNBlock, PreLNBlock, Transformer
from selfsup.errors import ConfigError
from selfsup.layers.conv_frontend import (
    ConvFeatureEncoder,
    ConvFrontEndSpec,
    ConvPositionalEmbedding,
    FeatureProjection,
    downsample_padding_mask,
    receptive_field,
    scale_grad,
    total_stride,
    wave_input,
)


@dataclass
class Wav2Vec2Config(ConvFrontEndSpec):
    """A wav2vec 2.0 / HuBERT encoder; the defaults are wav2vec 2.0 base's pretraining
    (arXiv:2006.11477, section 4.2 and appendix B): 7 conv layers of 512 channels, 12 post-LN
    layers x 768, 12 heads, FFN 3072, a positional conv of kernel 128 in 16 groups, dropout 0.1
    (residual, attention and on the projected features), front-end gradients x 0.1.
    wav2vec2-large-lv60 is dim 1024, 24 layers, 16 heads, FFN 4096, conv_norm="layer",
    conv_bias=True, stable_layer_norm=True. HuBERT base and large use the same numbers.

    The front end is given as three tuples (the layers' channels, kernels and strides) so each
    can be overridden from the command line (`model.conv_strides=5,2,2`); `conv_layers` is the
    list of (channels, kernel, stride)."""

    feature_dim: int = 1  # values per input frame: one waveform sample (fixed)
    conv_channels: tuple[int, ...] = (512,) * 7
    conv_kernels: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_strides: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_norm: str = "group"  # group (first conv only) | layer (every conv)
    conv_bias: bool = False
    feature_norm: bool = True  # LayerNorm on the conv features before the projection
    dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    ffn_dim: int = 3072
    stable_layer_norm: bool = False  # pre-LN blocks and a final LayerNorm
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    dropout: float = 0.1  # residual dropout, and on the Transformer's input
    attn_dropout: float = 0.1
    proj_dropout: float = 0.1  # on the projected features (the reference code's dropout_input)
    norm_eps: float = 1e-5
    feature_grad_mult: float = 0.1  # gradient scale into the front end; 0 freezes it

    def validate(self) -> None:
        self.validate_frontend()
        for name in ("dim", "n_layers", "n_heads", "ffn_dim", "pos_conv_kernel"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.dim % self.n_heads:
            raise ConfigError(f"model.dim {self.dim} must be a multiple of n_heads {self.n_heads}")
        if self.pos_conv_groups <= 0 or self.dim % self.pos_conv_groups:
            raise ConfigError(f"model.dim {self.dim} must be a multiple of pos_conv_groups "
                              f"{self.pos_conv_groups}")  # fmt: skip
        for name in ("dropout", "attn_dropout", "proj_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.norm_eps <= 0:
            raise ConfigError(f"model.norm_eps must be positive, got {self.norm_eps}")
        if self.feature_grad_mult < 0:
            raise ConfigError(f"model.feature_grad_mult must be >= 0 (0 freezes the front end), "
                              f"got {self.feature_grad_mult}")  # fmt: skip


class Wav2Vec2Encoder(nn.Module):
    """Waveforms -> frames -> Transformer, as the module docstring describes. `pre_norm` picks
    the block and where the stack's LayerNorm (`norm`) goes in one choice: PostLNBlock with
    `norm` before the stack, or PreLNBlock with `norm` after it.

    `feature_grad_mult` scales the gradient into the front end (0.1 in wav2vec 2.0 and HuBERT
    pretraining); 0 runs the front end without gradients. A "group" front end normalises over
    time, so its real frames depend on the batch's padding (see ConvFeatureEncoder); "layer"
    front ends and the rest of the encoder keep padding out of the real frames: padded frames
    are zeroed before the positional conv and hidden from attention."""

    def __init__(
        self,
        conv_layers: list[tuple[int, int, int]],
        dim: int,
        n_layers: int,
        n_heads: int,
        ffn_dim: int,
        conv_norm: str = "group",
        conv_bias: bool = False,
        feature_norm: bool = True,
        pre_norm: bool = False,
        pos_conv_kernel: int = 128,
        pos_conv_groups: int = 16,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        proj_dropout: float = 0.1,
        norm_eps: float = 1e-5,
        feature_grad_mult: float = 0.1,
    ):
        super().__init__()
        self.conv_layers = list(conv_layers)
        self.dim, self.n_layers, self.stack, self.feature_dim = dim, n_layers, 1, 1
        self.frame_stride = total_stride(self.conv_layers)  # samples per frame
        self.receptive_field = receptive_field(self.conv_layers)  # samples one frame reads
        self.pre_norm, self.feature_grad_mult = pre_norm, feature_grad_mult
        self.frontend = ConvFeatureEncoder(self.conv_layers, conv_norm, conv_bias)
        self.projection = FeatureProjection(self.conv_layers[-1][0], dim, proj_dropout,
                                            feature_norm, norm_eps)  # fmt: skip
        # U(0, 1), as the reference code
        self.mask_embed = nn.Parameter(torch.empty(dim).uniform_())
        self.pos_conv = ConvPositionalEmbedding(dim, pos_conv_kernel, pos_conv_groups)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.drop = nn.Dropout(dropout)
        block = PreLNBlock if pre_norm else PostLNBlock
        self.transformer = Transformer(dim, n_layers, n_heads, ffn_dim, dropout, attn_dropout,
                                       norm_eps, block=block)  # fmt: skip

    def extract(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, T) samples -> (B, T', C) front-end frames, their gradient scaled."""
        if self.feature_grad_mult == 0:
            with torch.no_grad():
                return self.frontend(wave)
        x = self.frontend(wave)
        if self.feature_grad_mult != 1 and torch.is_grad_enabled():
            x = scale_grad(x, self.feature_grad_mult)
        return x

    def apply_mask(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T', D) with the frames where `mask` (B, T') is True replaced by the mask
        embedding."""
        if mask.shape != x.shape[:2]:
            raise ValueError(f"mask {tuple(mask.shape)} does not match the frames "
                             f"{tuple(x.shape[:2])}")  # fmt: skip
        return torch.where(mask[..., None], self.mask_embed.to(x.dtype), x)

    def contextualise(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None, return_all: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """(B, T', D) projected (and masked) frames -> (last hidden state, all hidden states
        or None): positional conv, the stack and its LayerNorm."""
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)  # padding adds nothing to pos_conv
        x = x + self.pos_conv(x)
        if not self.pre_norm:
            x = self.norm(x)
        x = self.drop(x)
        attn_mask = None
        if padding_mask is not None and bool(padding_mask.any()):
            # A clip shorter than one frame has no real key: let it see all, so its (ignored)
            # rows stay finite instead of NaN.
            keep = ~padding_mask | padding_mask.all(-1, keepdim=True)
            attn_mask = keep[:, None, None, :]  # (B, 1, 1, T')
        out = self.transformer(x, attn_mask, return_all=return_all)
        states = out if return_all else None
        hidden = out[-1] if return_all else out
        if self.pre_norm:
            hidden = self.norm(hidden)
        return hidden, states

    def forward(
        self,
        features: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_all: bool = False,
    ) -> dict[str, torch.Tensor]:
        """features: (B, T) or (B, T, 1) samples; padding_mask (B, T) True on padding samples;
        mask (B, T') True on the frames to replace by the mask embedding."""
        wave, padding_mask = wave_input(features, padding_mask, self.receptive_field)
        B = wave.shape[0]
        conv = self.extract(wave)  # (B, T', C)
        T = conv.shape[1]
        pad = downsample_padding_mask(padding_mask, self.conv_layers, T)  # (B, T')
        projected, normed = self.projection(conv)  # (B, T', D), (B, T', C)
        x = projected if mask is None else self.apply_mask(projected, mask)
        hidden, states = self.contextualise(x, pad, return_all)
        if pad is None:
            pad = torch.zeros(B, T, dtype=torch.bool, device=conv.device)
        result = {"hidden": hidden, "padding_mask": pad, "conv_features": conv,
                  "extract_features": normed, "projected": projected}  # fmt: skip
        if return_all:
            result["all_hidden"] = states
        return result


def build_wav2vec2(cfg: Wav2Vec2Config) -> Wav2Vec2Encoder:
    """The encoder of `cfg`, initialised as the reference code: the Transformer as BERT
    (N(0, 0.02) linears, zero biases), Kaiming-normal front-end convs, PyTorch's default for the
    projection, the positional conv and mask embedding as their modules say."""
    enc = Wav2Vec2Encoder(
        cfg.conv_layers, cfg.dim, cfg.n_layers, cfg.n_heads, cfg.ffn_dim, cfg.conv_norm,
        cfg.conv_bias, cfg.feature_norm, cfg.stable_layer_norm, cfg.pos_conv_kernel,
        cfg.pos_conv_groups, cfg.dropout, cfg.attn_dropout, cfg.proj_dropout, cfg.norm_eps,
        cfg.feature_grad_mult,
    )  # fmt: skip
    init_bert_weights(enc.transformer)
    return enc


def preset_shape(cfg: Wav2Vec2Config) -> Wav2Vec2Config:
    """A preset's Transformer shape (carried over from the audio presets: dim, layers, heads,
    FFN, no dropout) as a waveform encoder for the CPU recipes: the conv front end as wide as
    the model, at most 512 channels (the paper's width; 512 channels cost about 4 GFLOP per
    second of audio forward, more than a tiny Transformer), dropout on the projected features
    off like the presets' other dropouts. `--set model.conv_channels=...` still overrides."""
    width = min(512, cfg.dim)
    return dataclasses.replace(
        cfg,
        feature_dim=1,  # one sample per input frame (a spectral preset's 80 does not carry)
        conv_channels=(width,) * len(cfg.conv_channels),
        proj_dropout=cfg.dropout,
    )
