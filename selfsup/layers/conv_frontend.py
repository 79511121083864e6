"""The waveform front end of wav2vec 2.0 (arXiv:2006.11477, section 2 and appendix B) and HuBERT
(arXiv:2106.07447): a stack of 1-D convolutions that turns 16 kHz samples into 20 ms frames, the
convolutional relative positional embedding, and the projection of the frames to the model width.

A front end is a list of (channels, kernel, stride) layers, as in wav2vec 2.0. Its base model's,
WAV2VEC2_CONV_LAYERS, is seven layers of 512 channels with kernels (10, 3, 3, 3, 3, 2, 2) and
strides (5, 2, 2, 2, 2, 2, 2): 320 samples a frame, each frame reading 400 samples (25 ms).
The convolutions have no padding, so frame t reads samples [320 t, 320 t + 400) and exists only
when all of them do; `conv_output_lengths` is that count.

Legend: B batch, T samples, T' frames, C conv channels, D model width, K kernel width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import ConfigError
from selfsup.layers.linear import Linear

WAV2VEC2_CONV_LAYERS: list[tuple[int, int, int]] = (
    [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
)
CONV_NORMS = ("group", "layer")


def conv_output_lengths(lengths: torch.Tensor | int, layers: list[tuple[int, int, int]]):
    """Frames out of `lengths` samples (a tensor of any shape, or an int): floor((L - K) / S) + 1
    per layer, never below 0 (a clip shorter than the receptive field gives no frame)."""
    for _, kernel, stride in layers:
        if isinstance(lengths, torch.Tensor):
            lengths = torch.clamp(torch.div(lengths - kernel, stride, rounding_mode="floor") + 1, 0)
        else:
            lengths = max(0, (lengths - kernel) // stride + 1)
    return lengths


def downsample_padding_mask(
    padding_mask: torch.Tensor | None, layers: list[tuple[int, int, int]], n_frames: int
) -> torch.Tensor | None:
    """(B, T) True on padding samples -> (B, T') True on padding frames: every frame whose
    window reaches past a clip's last sample (padding comes after the real samples)."""
    if padding_mask is None:
        return None
    lengths = conv_output_lengths((~padding_mask).sum(-1), layers)  # (B,)
    return torch.arange(n_frames, device=padding_mask.device)[None] >= lengths[:, None]


def total_stride(layers: list[tuple[int, int, int]]) -> int:
    """Samples from one frame to the next (320 for wav2vec 2.0: 20 ms at 16 kHz)."""
    return math.prod(stride for _, _, stride in layers)


def receptive_field(layers: list[tuple[int, int, int]]) -> int:
    """Samples one frame reads (400 for wav2vec 2.0: 25 ms at 16 kHz)."""
    r = 1
    for _, kernel, stride in reversed(layers):
        r = (r - 1) * stride + kernel
    return r


class ConvFrontEndSpec:
    """What a waveform encoder's config says of its conv front end, for config dataclasses with
    `feature_dim`, `conv_channels`, `conv_kernels`, `conv_strides` and `conv_norm` fields: the
    (channels, kernel, stride) layers, where its frames lie, and the checks of those fields."""

    @property
    def conv_layers(self) -> list[tuple[int, int, int]]:
        return list(zip(self.conv_channels, self.conv_kernels, self.conv_strides, strict=True))

    @property
    def receptive_field(self) -> int:
        """Samples one output frame reads."""
        return receptive_field(self.conv_layers)

    @property
    def frame_stride(self) -> int:
        """Samples from one output frame to the next."""
        return total_stride(self.conv_layers)

    def validate_frontend(self) -> None:
        """A ConfigError on the first bad front-end field."""
        if self.feature_dim != 1:
            raise ConfigError(f"model.feature_dim is 1 for a waveform encoder, got "
                              f"{self.feature_dim}")  # fmt: skip
        n = len(self.conv_channels)
        if not n:
            raise ConfigError("model.conv_channels needs at least one conv layer")
        if len(self.conv_kernels) != n or len(self.conv_strides) != n:
            raise ConfigError(
                f"model.conv_channels, conv_kernels and conv_strides must have the same length, "
                f"got {n}, {len(self.conv_kernels)} and {len(self.conv_strides)}"
            )
        for name in ("conv_channels", "conv_kernels", "conv_strides"):
            if any(v <= 0 for v in getattr(self, name)):
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.conv_norm not in CONV_NORMS:
            raise ConfigError(f"unknown model.conv_norm {self.conv_norm!r}; use "
                              f"{', '.join(CONV_NORMS)}")  # fmt: skip


def wave_input(
    features: torch.Tensor, padding_mask: torch.Tensor | None, receptive_field: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A waveform encoder's input: (B, T) or (B, T, 1) samples -> (B, T) samples with padding
    zeroed (what padding holds never matters), and the padding mask (None stays None). A batch
    shorter than one frame (`receptive_field` samples) is padded to one frame of padding, as
    such a clip is in a batch of longer ones, so an encoder can be probed with a few samples."""
    wave = features
    if wave.dim() == 3:
        if wave.shape[-1] != 1:
            raise ValueError(f"a waveform encoder reads one value per frame, (B, T, 1) or "
                             f"(B, T); got {tuple(wave.shape)}")  # fmt: skip
        wave = wave[..., 0]
    B, T = wave.shape
    if T < receptive_field:
        if padding_mask is None:
            padding_mask = torch.zeros(B, T, dtype=torch.bool, device=wave.device)
        extra = receptive_field - T
        wave = F.pad(wave, (0, extra))
        padding_mask = F.pad(padding_mask, (0, extra), value=True)
    if padding_mask is not None:
        wave = wave.masked_fill(padding_mask, 0.0)
    return wave, padding_mask


class ScaleGrad(torch.autograd.Function):
    """The identity forward; the gradient times `factor` backward. wav2vec 2.0 scales the
    gradient into its front end by 0.1 (section 4.2), which keeps the convolutions from
    changing faster than the Transformer they feed."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """x, with its gradient multiplied by `factor` on the way back."""
    return ScaleGrad.apply(x, factor)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, T') conv output, each frame on its own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class ConvLayer(nn.Module):
    """Conv1d -> optional norm -> GELU."""

    def __init__(self, in_channels: int, channels: int, kernel: int, stride: int, bias: bool,
                 norm: nn.Module | None):  # fmt: skip
        super().__init__()
        self.conv = nn.Conv1d(in_channels, channels, kernel, stride, bias=bias)
        self.norm = norm
        self.act = nn.GELU()
        nn.init.kaiming_normal_(self.conv.weight)  # as wav2vec 2.0's reference code

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.act(x)


class ConvFeatureEncoder(nn.Module):
    """wav2vec 2.0's feature encoder: (B, T) samples -> (B, T', C) frames through `layers`
    (channels, kernel, stride), each a Conv1d and a GELU, with

        norm="group"  GroupNorm with one group per channel after the first conv only (the base
                      models): each channel normalised over time, so the padding of a batch
                      changes the real frames; unpadded batches or equal lengths only
        norm="layer"  LayerNorm over the channels after every conv (wav2vec2-large-lv60): per
                      frame, so padding changes no real frame

    `bias` adds conv biases (the "layer" large models have them, the base models not)."""

    def __init__(self, layers: list[tuple[int, int, int]], norm: str = "group",
                 bias: bool = False):  # fmt: skip
        super().__init__()
        if norm not in CONV_NORMS:
            raise ValueError(f"unknown conv norm {norm!r}; use {', '.join(CONV_NORMS)}")
        self.layers = nn.ModuleList()
        in_channels = 1
        for i, (channels, kernel, stride) in enumerate(layers):
            if norm == "layer":
                layer_norm = ChannelLayerNorm(channels)
            elif i == 0:
                layer_norm = nn.GroupNorm(channels, channels)
            else:
                layer_norm = None
            self.layers.append(ConvLayer(in_channels, channels, kernel, stride, bias, layer_norm))
            in_channels = channels

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = wave[:, None]  # (B, 1, T)
        for layer in self.layers:
            x = layer(x)  # (B, C, T')
        return x.transpose(1, 2)  # (B, T', C)


class ConvPositionalEmbedding(nn.Module):
    """wav2vec 2.0's relative positional embedding (section 2, after Mohamed et al.,
    arXiv:1904.11660): a grouped Conv1d over the frames (kernel 128, 16 groups in the base and
    large models), padded to keep the length, then GELU; the caller adds it to its input.
    An even kernel sees one frame more than it is centred on; that last output frame is dropped.

    The weight is weight-normalised over the kernel axis (Salimans & Kingma, arXiv:1602.07868;
    dim=2): weight = weight_g * weight_v / ||weight_v||, the norm taken over the output and input
    channels for each kernel position, weight_g (1, 1, K). Initialised as the reference code:
    weight_v ~ N(0, 4 / (K D)), weight_g = ||weight_v||, zero bias."""

    def __init__(self, dim: int, kernel: int = 128, groups: int = 16):
        super().__init__()
        self.kernel, self.groups = kernel, groups
        self.weight_v = nn.Parameter(torch.empty(dim, dim // groups, kernel))
        self.weight_g = nn.Parameter(torch.empty(1, 1, kernel))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        dim = self.weight_v.shape[0]
        with torch.no_grad():
            self.weight_v.normal_(0.0, math.sqrt(4.0 / (self.kernel * dim)))
            self.weight_g.copy_(self.weight_v.norm(dim=(0, 1), keepdim=True))
            self.bias.zero_()

    @property
    def weight(self) -> torch.Tensor:
        """(D, D / groups, K) the convolution's weight."""
        return self.weight_g * self.weight_v / self.weight_v.norm(dim=(0, 1), keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel // 2
        y = F.conv1d(x.transpose(1, 2), self.weight, self.bias, padding=pad, groups=self.groups)
        if self.kernel % 2 == 0:  # (B, D, T' + 1) -> (B, D, T')
            y = y[..., :-1]
        return F.gelu(y).transpose(1, 2)  # (B, T', D)


class FeatureProjection(nn.Module):
    """The frames into the model: LayerNorm over the conv channels (optional: HuBERT folders
    without it exist), Linear to the model width, dropout (wav2vec 2.0's dropout on the
    Transformer's input, 0.1 in pretraining). forward returns (projected (B, T', D), normalised
    frames (B, T', C)): wav2vec 2.0 quantises the normalised frames."""

    def __init__(self, in_dim: int, dim: int, dropout: float = 0.1, norm: bool = True,
                 eps: float = 1e-5):  # fmt: skip
        super().__init__()
        self.norm = nn.LayerNorm(in_dim, eps=eps) if norm else None
        self.proj = Linear(in_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normed = x if self.norm is None else self.norm(x)
        return self.drop(self.proj(normed)), normed
