"""Speech encoders over frame features (log-mel, MFCC): a Transformer (Mockingjay, TERA; causal
for APC) and a recurrent stack (APC's GRU/LSTM). Both return the encoder contract of every
modality: {"hidden": (B, T', D), "padding_mask": (B, T') True on padding, "all_hidden": the
input projection and every layer's output (with `return_all`)}, where T' = ceil(T / stack).

Frame stacking (Mockingjay, arXiv:1910.12638, section 3.2): `stack` consecutive frames are
concatenated into one input vector of stack * F values, which shortens the sequence the
Transformer attends over by that factor. A stacked frame is padding only when all of its frames
are; the input is zero-padded to a multiple of `stack`.

Legend: B batch, T frames, T' stacked frames, F feature values per frame, D model width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from selfsup.encoders.text import init_bert_weights
from selfsup.encoders.transformer import Transformer, causal_padding_attn_mask
from selfsup.errors import ConfigError
from selfsup.layers.linear import Linear

ARCHS = ("transformer", "gru", "lstm")


@dataclass
class AudioConfig:
    """A speech encoder. Mockingjay's base model is 3 layers x 768 with 3-frame stacking over
    160 mel values (arXiv:1910.12638); APC's is 3 GRU layers of 512 over 80 log-mel values, one
    frame at a time (arXiv:1904.03240)."""

    feature_dim: int = 80  # values per input frame (set from the data's features)
    stack: int = 3  # frames concatenated into one encoder input (1 = none)
    arch: str = "transformer"  # transformer | gru | lstm
    dim: int = 768
    n_layers: int = 3
    n_heads: int = 12
    ffn_dim: int = 3072
    max_len: int = 3000  # most stacked frames in one input (positions are sinusoidal)
    dropout: float = 0.1
    attn_dropout: float = 0.1
    norm_eps: float = 1e-12
    causal: bool = False  # each position sees only the frames before it (APC's Transformer)

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown model.arch {self.arch!r}; use {', '.join(ARCHS)}")
        for name in ("feature_dim", "stack", "dim", "n_layers", "max_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.arch == "transformer":
            if self.n_heads <= 0 or self.ffn_dim <= 0 or self.dim % self.n_heads:
                raise ConfigError(
                    f"model.dim {self.dim} must be a multiple of n_heads {self.n_heads} "
                    "(both positive, and ffn_dim too)"
                )
        elif self.stack != 1:
            raise ConfigError(f"a {self.arch} encoder reads one frame at a time: set model.stack=1")


def stack_frames(
    features: torch.Tensor, padding_mask: torch.Tensor | None, stack: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, T, F) -> (B, ceil(T / stack), stack * F), and the padding mask alongside."""
    if stack == 1:
        return features, padding_mask
    B, T, F = features.shape
    extra = -T % stack
    if extra:
        features = nn.functional.pad(features, (0, 0, 0, extra))
        if padding_mask is not None:
            padding_mask = nn.functional.pad(padding_mask, (0, extra), value=True)
    x = features.reshape(B, (T + extra) // stack, stack * F)  # (B, T', stack * F)
    if padding_mask is not None:
        padding_mask = padding_mask.reshape(B, -1, stack).all(-1)  # (B, T')
    return x, padding_mask


def unstack_frames(x: torch.Tensor, stack: int, T: int) -> torch.Tensor:
    """(B, T', stack * F) -> (B, T, F): the inverse of stack_frames, padding cut off."""
    B, Tp, SF = x.shape
    return x.reshape(B, Tp * stack, SF // stack)[:, :T]


def sinusoidal_positions(T: int, dim: int, device=None) -> torch.Tensor:
    """(T, dim) sine/cosine position encodings (arXiv:1706.03762, section 3.5), as Mockingjay."""
    pos = torch.arange(T, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim)
    )
    pe = torch.zeros(T, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe


class AudioTransformer(nn.Module):
    """Mockingjay's encoder: stacked frames -> linear -> + sinusoidal positions -> LayerNorm ->
    dropout -> the shared (post-LN) Transformer stack. `causal` makes each position attend only
    to itself and earlier positions (APC's Transformer variant)."""

    def __init__(
        self,
        feature_dim: int,
        stack: int,
        dim: int,
        n_layers: int,
        n_heads: int,
        ffn_dim: int,
        max_len: int = 3000,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        norm_eps: float = 1e-12,
        causal: bool = False,
    ):
        super().__init__()
        self.dim, self.stack, self.max_len, self.causal = dim, stack, max_len, causal
        self.feature_dim = feature_dim
        self.input = Linear(stack * feature_dim, dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.drop = nn.Dropout(dropout)
        self.transformer = Transformer(dim, n_layers, n_heads, ffn_dim, dropout, attn_dropout,
                                       norm_eps)  # fmt: skip

    def forward(
        self,
        features: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        return_all: bool = False,
    ) -> dict[str, torch.Tensor]:
        x, pad = stack_frames(features, padding_mask, self.stack)  # (B, T', stack * F)
        B, T, _ = x.shape
        if T > self.max_len:
            raise ValueError(f"{T} stacked frames > model.max_len {self.max_len}")
        if pad is None:
            pad = torch.zeros(B, T, dtype=torch.bool, device=x.device)
        x = self.input(x) + sinusoidal_positions(T, self.dim, x.device)  # (B, T', D)
        x = self.drop(self.norm(x))
        if self.causal:
            out = self.transformer(x, causal_padding_attn_mask(~pad), return_all=return_all)
        else:
            mask = None if not bool(pad.any()) else (~pad)[:, None, None, :]
            out = self.transformer(x, mask, return_all=return_all)
        result = {"hidden": out[-1] if return_all else out, "padding_mask": pad}
        if return_all:
            result["all_hidden"] = out
        return result


class AudioRNN(nn.Module):
    """APC's encoder (arXiv:1904.03240, section 3): a stack of unidirectional GRU or LSTM layers
    over the frames, with residual connections between layers (after the first), so position t
    depends on frames 0..t only. Padding frames come after the real ones, so they change no
    real position. Its "all_hidden" holds the n_layers layer outputs (the input frames have
    another width than D)."""

    def __init__(self, feature_dim: int, dim: int, n_layers: int, cell: str = "gru",
                 dropout: float = 0.0):  # fmt: skip
        super().__init__()
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.dim, self.stack, self.causal, self.feature_dim = dim, 1, True, feature_dim
        self.layers = nn.ModuleList(
            rnn(feature_dim if i == 0 else dim, dim, batch_first=True) for i in range(n_layers)
        )
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        features: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        return_all: bool = False,
    ) -> dict[str, torch.Tensor]:
        B, T, _ = features.shape
        pad = padding_mask
        if pad is None:
            pad = torch.zeros(B, T, dtype=torch.bool, device=features.device)
        x, states = features, []  # layer outputs only: the input has another width
        for i, layer in enumerate(self.layers):
            h = self.drop(layer(x)[0])  # (B, T, D)
            x = h if i == 0 else x + h
            states.append(x)
        result = {"hidden": x, "padding_mask": pad}
        if return_all:
            result["all_hidden"] = states
        return result


def build_audio_encoder(cfg: AudioConfig) -> nn.Module:
    if cfg.arch == "transformer":
        enc = AudioTransformer(
            cfg.feature_dim, cfg.stack, cfg.dim, cfg.n_layers, cfg.n_heads, cfg.ffn_dim,
            cfg.max_len, cfg.dropout, cfg.attn_dropout, cfg.norm_eps, cfg.causal,
        )  # fmt: skip
        init_bert_weights(enc)
        return enc
    return AudioRNN(cfg.feature_dim, cfg.dim, cfg.n_layers, cfg.arch, cfg.dropout)
