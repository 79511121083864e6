"""Image backbones: a CIFAR-style ResNet and a ViT on the shared Transformer stack, both taking
images (B, C, H, W) float in [0, 1] (they normalise by the data's mean and std themselves) and
returning the encoder contract of every modality, with the pooled vector the image methods use:

    {"hidden": (B, T, D), "pooled": (B, D), "padding_mask": (B, T) all False,
     "all_hidden": [(B, T_l, D_l), ...] with return_all}

- ResNet (He et al., arXiv:1512.03385), the CIFAR variant of SimCLR (arXiv:2002.05709,
  appendix B.9) and solo-learn: a 3x3 stride-1 stem and no max-pool, so a 32 px image keeps
  32 x 32 positions in the first stage; stages of BasicBlocks, the first at stride 1, each
  later one halving the side. "hidden" is the last stage's positions flattened (T = h * w,
  D = the last width), "pooled" their global average, "all_hidden" the stem's and each
  stage's output. With BatchNorm in training mode an image's output depends on the other
  images of the batch; norm="group" (GroupNorm, Wu & He arXiv:1803.08494) does not.
- ViT (Dosovitskiy et al., arXiv:2010.11929): non-overlapping patch x patch patches, linearly
  embedded (a stride-patch convolution), a learned [CLS] token (pool="cls") and learned
  positions, then the pre-LN stack with a final norm. "hidden" is the tokens after the final
  norm ([CLS] first with pool="cls"; with pool="mean" there is no [CLS], as the paper's
  global-average-pooling variant), "pooled" the [CLS] token or the mean of the patch tokens,
  "all_hidden" the embeddings and every block's output. A smaller input (a side that is a
  multiple of `patch`, up to image_size) interpolates the position table (bicubic), so the
  relative-patch task can feed small patches.

Legend: B images, C channels, H x W pixels, h x w positions of a stage or patch grid,
T tokens (h * w, +1 with [CLS]), D width.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.encoders.transformer import PreLNBlock, Transformer
from selfsup.errors import ConfigError

ARCHS = ("resnet", "vit")
NORMS = ("batch", "group")
POOLS = ("cls", "mean")
# Per-channel mean and std of the CIFAR-10 training images (the values solo-learn and lightly
# normalise CIFAR with).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class ImageConfig:
    """The `model` section of an image run: a ResNet or a ViT. The defaults are ResNet-18
    (11.17M parameters without its classifier) in its CIFAR layout; `image_shape(name)` gives
    the named shapes."""

    arch: str = "resnet"  # resnet | vit
    image_size: int = 32  # the side the model is built for (ViT: its position table)
    channels: int = 3
    mean: tuple[float, ...] = CIFAR10_MEAN  # the encoder normalises its [0, 1] input
    std: tuple[float, ...] = CIFAR10_STD
    # resnet: one BasicBlock stage per width, depths[i] blocks each
    widths: tuple[int, ...] = (64, 128, 256, 512)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    norm: str = "batch"  # batch | group (GroupNorm: batch-independent)
    groups: int = 8  # GroupNorm's groups
    # vit
    patch: int = 4
    dim: int = 192
    n_layers: int = 6
    n_heads: int = 3
    ffn_dim: int = 768
    pool: str = "cls"  # cls | mean
    dropout: float = 0.0
    attn_dropout: float = 0.0
    norm_eps: float = 1e-6

    def describe(self) -> str:
        """The shape in one phrase, for the pretraining log."""
        if self.arch == "resnet":
            widths, depths = "-".join(map(str, self.widths)), "-".join(map(str, self.depths))
            return f"ResNet widths {widths}, depths {depths}"
        return f"ViT {self.n_layers} layers x {self.dim}, {self.patch} px patches"

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown model.arch {self.arch!r}; use {', '.join(ARCHS)}")
        for name in ("image_size", "channels"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ConfigError(
                f"model.mean and model.std need one value per channel ({self.channels}), got "
                f"{len(self.mean)} and {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"model.std must be positive, got {self.std}")
        if self.arch == "resnet":
            self._validate_resnet()
        else:
            self._validate_vit()

    def _validate_resnet(self) -> None:
        if not self.widths or len(self.widths) != len(self.depths):
            raise ConfigError(
                f"model.widths {self.widths} and model.depths {self.depths} need one value per "
                "stage each (at least one stage)"
            )
        if any(v <= 0 for v in (*self.widths, *self.depths)):
            raise ConfigError(f"model.widths and model.depths must be positive, got "
                              f"{self.widths} and {self.depths}")  # fmt: skip
        if self.norm not in NORMS:
            raise ConfigError(f"unknown model.norm {self.norm!r}; use {', '.join(NORMS)}")
        if self.norm == "group" and (self.groups <= 0 or any(w % self.groups for w in self.widths)):
            raise ConfigError(
                f"model.groups {self.groups} must be positive and divide every width {self.widths}"
            )

    def _validate_vit(self) -> None:
        for name in ("patch", "dim", "n_layers", "n_heads", "ffn_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.image_size % self.patch:
            raise ConfigError(
                f"model.image_size {self.image_size} must be a multiple of model.patch {self.patch}"
            )
        if self.dim % self.n_heads:
            raise ConfigError(f"model.dim {self.dim} must be a multiple of n_heads {self.n_heads}")
        if self.pool not in POOLS:
            raise ConfigError(f"unknown model.pool {self.pool!r}; use {', '.join(POOLS)}")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")


# Named shapes: the fields of ImageConfig each sets (the rest keep their defaults).
# resnet-narrow is the CPU budget: ResNet-18's four stages with one block each at a quarter of
# its widths, 0.31M parameters. Forward + backward of 256 images of 32 px took 1.0-1.1 s on one
# thread of this (shared, AMD EPYC, AVX2) CPU, so a SimCLR step of 2 x 256 views about 2 s; at
# widths (24, ..., 192) it was 2.0 s, at (32, ..., 256) 3.7 s, ResNet-18 about 29 s and
# vit-small-cpu 12.5 s.
SHAPES: dict[str, dict] = {
    "resnet18": dict(arch="resnet", widths=(64, 128, 256, 512), depths=(2, 2, 2, 2)),
    "resnet-narrow": dict(arch="resnet", widths=(16, 32, 64, 128), depths=(1, 1, 1, 1)),
    "resnet-tiny": dict(arch="resnet", widths=(8, 16), depths=(1, 1)),
    "vit-tiny": dict(arch="vit", patch=4, dim=32, n_layers=2, n_heads=2, ffn_dim=64),
    "vit-small-cpu": dict(arch="vit", patch=4, dim=192, n_layers=6, n_heads=3, ffn_dim=768),
}


def image_shape(name: str) -> dict:
    """The ImageConfig fields of a named shape: `ImageConfig(**image_shape("resnet18"))`."""
    if name not in SHAPES:
        raise ConfigError(f"unknown image model shape {name!r}; use {', '.join(SHAPES)}")
    return dict(SHAPES[name])


class Normalize(nn.Module):
    """(x - mean) / std per channel. The statistics come from the config and are not saved with
    the weights (non-persistent buffers)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _check_images(x: torch.Tensor, channels: int) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"expected images (B, {channels}, H, W), got {tuple(x.shape)}")


def _tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h * w, C)


def _contract(hidden: torch.Tensor, pooled: torch.Tensor, states: list | None) -> dict:
    B, T, _ = hidden.shape
    out = {"hidden": hidden, "pooled": pooled,
           "padding_mask": torch.zeros(B, T, dtype=torch.bool, device=hidden.device)}  # fmt: skip
    if states is not None:
        out["all_hidden"] = states
    return out


# --------------------------------------------------------------------------------------------
# ResNet
# --------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet's two-layer block (arXiv:1512.03385, fig. 2): conv3x3-norm-ReLU-conv3x3-norm plus
    the shortcut, then ReLU. The shortcut is a 1x1 convolution and a norm when the block
    changes the width or the side (option B of the paper), else the identity."""

    def __init__(self, in_dim: int, out_dim: int, stride: int, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, stride, 1, bias=False)
        self.norm1 = norm(out_dim)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, 1, 1, bias=False)
        self.norm2 = norm(out_dim)
        self.shortcut = nn.Identity()
        if stride != 1 or in_dim != out_dim:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_dim, out_dim, 1, stride, bias=False), norm(out_dim)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(h)) + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet (module docstring). `norm` builds a norm layer from a width:
    nn.BatchNorm2d, or partial(nn.GroupNorm, 8) (width -> GroupNorm(8, width)).
    Any input side works (8 px leaves the last of 4 stages 1 x 1 position)."""

    def __init__(
        self,
        widths: tuple[int, ...],
        depths: tuple[int, ...],
        norm=nn.BatchNorm2d,
        channels: int = 3,
        image_size: int = 32,
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
    ):
        super().__init__()
        self.dim, self.image_size, self.channels = widths[-1], image_size, channels
        self.normalize = Normalize(mean, std)
        self.stem = nn.Sequential(
            nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False), norm(widths[0]), nn.ReLU()
        )
        stages, in_dim = [], widths[0]
        for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(in_dim, width, stride, norm))
                in_dim = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        init_resnet_weights(self)

    def forward(self, images: torch.Tensor, return_all: bool = False) -> dict:
        _check_images(images, self.channels)
        # channels-last: oneDNN's convolutions ran 1.2-1.3x faster forward + backward here (CPU,
        # one thread); the GPU's cuDNN prefers it under mixed precision too.
        x = self.normalize(images).contiguous(memory_format=torch.channels_last)
        x = self.stem(x)  # (B, widths[0], H, W)
        states = [_tokens(x)] if return_all else None
        for stage in self.stages:
            x = stage(x)  # (B, width, h, w)
            if states is not None:
                states.append(_tokens(x))
        return _contract(_tokens(x), x.mean((2, 3)), states)


def init_resnet_weights(module: nn.Module) -> None:
    """He (kaiming) normal initialisation of the convolutions, fan-out, for ReLU
    (arXiv:1502.01852, as torchvision's ResNet); norms at weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------
# ViT
# --------------------------------------------------------------------------------------------


class ViT(nn.Module):
    """A Vision Transformer (module docstring): patch embedding, [CLS] (pool="cls") and learned
    positions, dropout, then `Transformer(block=PreLNBlock, final_norm=True)`."""

    def __init__(
        self,
        image_size: int,
        patch: int,
        dim: int,
        n_layers: int,
        n_heads: int,
        ffn_dim: int,
        pool: str = "cls",
        channels: int = 3,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        norm_eps: float = 1e-6,
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
    ):
        super().__init__()
        self.dim, self.image_size, self.channels = dim, image_size, channels
        self.patch, self.pool, self.grid = patch, pool, image_size // patch
        self.normalize = Normalize(mean, std)
        self.patch_embed = nn.Conv2d(channels, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.positions = nn.Parameter(torch.zeros(1, self.grid * self.grid, dim))
        self.drop = nn.Dropout(dropout)
        self.transformer = Transformer(dim, n_layers, n_heads, ffn_dim, dropout, attn_dropout,
                                       norm_eps, block=PreLNBlock, final_norm=True)  # fmt: skip
        init_vit_weights(self)

    def position_table(self, h: int, w: int) -> torch.Tensor:
        """(1, h * w, D) positions for an h x w patch grid: the learned table, interpolated
        (bicubic, as timm and DeiT resize it) for a smaller grid."""
        if (h, w) == (self.grid, self.grid):
            return self.positions
        table = self.positions.reshape(1, self.grid, self.grid, self.dim).permute(0, 3, 1, 2)
        table = F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False)
        return table.permute(0, 2, 3, 1).reshape(1, h * w, self.dim)

    def forward(self, images: torch.Tensor, return_all: bool = False) -> dict:
        _check_images(images, self.channels)
        H, W = images.shape[-2:]
        if H % self.patch or W % self.patch or H > self.image_size or W > self.image_size:
            raise ValueError(
                f"a {H} x {W} image does not fit a ViT of {self.patch} px patches built for "
                f"{self.image_size} px: sides must be multiples of the patch, at most image_size"
            )
        x = _tokens(self.patch_embed(self.normalize(images)))  # (B, h * w, D)
        x = x + self.position_table(H // self.patch, W // self.patch)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)  # (B, T, D)
        out = self.transformer(self.drop(x), return_all=return_all)
        h = out[-1] if return_all else out
        pooled = h[:, 0] if self.cls_token is not None else h.mean(1)  # (B, D)
        return _contract(h, pooled, out if return_all else None)


def init_vit_weights(module: ViT, std: float = 0.02) -> None:
    """Truncated normal (std 0.02, cut at 2 std) for every linear map, the patch embedding, the
    [CLS] token and the positions, zero biases, unit norms (the ViT and timm initialisation)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for p in (module.cls_token, module.positions):
        if p is not None:
            nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)


def build_image_encoder(cfg: ImageConfig) -> nn.Module:
    cfg.validate()
    if cfg.arch == "resnet":
        norm = nn.BatchNorm2d if cfg.norm == "batch" else partial(nn.GroupNorm, cfg.groups)
        return ResNet(cfg.widths, cfg.depths, norm, cfg.channels, cfg.image_size, cfg.mean,
                      cfg.std)  # fmt: skip
    return ViT(cfg.image_size, cfg.patch, cfg.dim, cfg.n_layers, cfg.n_heads, cfg.ffn_dim,
               cfg.pool, cfg.channels, cfg.dropout, cfg.attn_dropout, cfg.norm_eps, cfg.mean,
               cfg.std)  # fmt: skip
