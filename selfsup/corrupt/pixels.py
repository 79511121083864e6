"""Images as sequences of colour ids, and the two pixel-prediction corruptions of iGPT (Chen,
Radford, Child, Wu, Jun, Luan and Sutskever, "Generative Pretraining from Pixels", ICML 2020).

iGPT (section 3.2, "Context Reduction") reduces the 3 x 256 values of a pixel to one of 512
colours, a 9-bit colour palette made by k-means (k = 512) on the (R, G, B) values of the
pixels, and reads the image in raster order (section 2.1). Here k is a setting (16 or 64 fit a
CPU budget; the objective's default is 16), the clusters are found on a seeded sample of the
pixels with selfsup.cluster.kmeans, and colours are RGB in [0, 1].

Ids: 0 .. k-1 are the palette's colours; the pixel sequence models add two more, k the mask
token of the BERT objective and k + 1 the start token of the autoregressive one (the ids of
selfsup.encoders.pixels.PixelSequenceEncoder).

Legend: B images, T = H * W positions, k colours.
"""

from __future__ import annotations

import numpy as np
import torch

from selfsup.cluster import kmeans
from selfsup.errors import ConfigError
from selfsup.keys import IGNORE

MAX_PIXELS = 200_000  # pixels k-means sees: plenty for 3-d points and at most 512 clusters


def pixel_rows(images) -> torch.Tensor:
    """(N * H * W, 3) float32 RGB in [0, 1] from uint8 images (N, H, W, 3), channels last (the
    uint8 cache's layout, numpy or torch), or float images (N, 3, H, W) in [0, 1], channels first
    (the batches' layout)."""
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if x.ndim != 4:
        raise ConfigError(f"pixel palettes need a stack of images, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        if x.shape[-1] != 3:
            raise ConfigError(f"uint8 images must be (N, H, W, 3), got {tuple(x.shape)}")
        return x.reshape(-1, 3).float() / 255
    if x.shape[1] != 3:
        raise ConfigError(f"float images must be (N, 3, H, W), got {tuple(x.shape)}")
    return x.float().permute(0, 2, 3, 1).reshape(-1, 3)


def sample_pixels(images, generator: torch.Generator, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """(n, 3) pixels of `images` (layouts of `pixel_rows`): all of them when there are at most
    `max_pixels`, else `max_pixels` drawn uniformly with replacement from `generator` (a draw
    per pixel, no permutation of millions)."""
    rows = pixel_rows(images)
    if rows.shape[0] <= max_pixels:
        return rows
    pick = torch.randint(rows.shape[0], (max_pixels,), generator=generator, device=generator.device)
    return rows[pick.to(rows.device)]


def fit_palette(
    images, k: int, generator: torch.Generator, max_pixels: int = MAX_PIXELS
) -> torch.Tensor:
    """(k, 3) float32 colours in [0, 1]: k-means (Lloyd, k-means++ initialisation, scikit-learn's
    stopping rule; selfsup.cluster.kmeans, in float64) on
    `sample_pixels(images, generator, max_pixels)`: iGPT's palette (k = 512 there). The same
    generator state gives the same palette."""
    if k < 2:
        raise ConfigError(f"a palette needs at least 2 colours, got {k}")
    sample = sample_pixels(images, generator, max_pixels)
    if sample.unique(dim=0).shape[0] < k:
        raise ConfigError(f"a palette of {k} colours from images with fewer distinct colours")
    # in float64: 3-d points are cheap, and near-equal distances then fall as scikit-learn's do
    centroids, _ = kmeans(sample.double(), k, generator=generator)
    return centroids.float().clamp(0, 1)


def quantize(images: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """(B, H * W) long: the id of each pixel's nearest palette colour (squared RGB distance,
    ties to the lower id), pixels in raster order (row by row). images (B, 3, H, W), palette
    (k, 3). Distances are differences squared, not the ||x||^2 - 2 x.c + ||c||^2 expansion, so
    the nearest colour is exact to float rounding of 3-term sums."""
    B, C, H, W = images.shape
    if C != 3 or palette.ndim != 2 or palette.shape[1] != 3:
        raise ConfigError(f"quantize needs (B, 3, H, W) images and a (k, 3) palette, got "
                          f"{tuple(images.shape)} and {tuple(palette.shape)}")  # fmt: skip
    x = images.float().permute(0, 2, 3, 1).reshape(-1, 1, 3)  # (B T, 1, 3)
    p = palette.float().to(x.device)[None]  # (1, k, 3)
    chunk = max(1, (1 << 22) // (3 * palette.shape[0]))  # rows of (rows, k, 3) alive at once
    ids = torch.cat([(x[s : s + chunk] - p).pow(2).sum(-1).argmin(-1)
                     for s in range(0, x.shape[0], chunk)])  # fmt: skip
    return ids.view(B, H * W)


def dequantize(ids: torch.Tensor, palette: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(B, 3, H, W) images from (B, H * W) colour ids in raster order: each pixel its colour."""
    B, T = ids.shape
    if T != H * W:
        raise ConfigError(f"{T} ids per image cannot fill {H} x {W} pixels")
    if int(ids.min()) < 0 or int(ids.max()) >= palette.shape[0]:
        raise ConfigError(f"colour ids must be in 0..{palette.shape[0] - 1} (no mask/start ids)")
    return palette[ids].view(B, H, W, 3).permute(0, 3, 1, 2).contiguous()


def choose_pixels(shape: tuple[int, int], generator: torch.Generator, mask_prob: float = 0.15):
    """(B, T) bool, True on the positions to predict: each independently with `mask_prob`
    (iGPT, section 2.1: each index enters the BERT mask M independently with probability 0.15),
    and each image's position with the smallest draw as well, so that every image has one."""
    if not 0.0 < mask_prob < 1.0:
        raise ConfigError(f"mask_prob must be in (0, 1), got {mask_prob}")
    u = torch.rand(shape, generator=generator, device=generator.device)  # (B, T)
    return (u < mask_prob) | (u == u.min(1, keepdim=True).values)


def mask_pixels(
    ids: torch.Tensor, generator: torch.Generator, mask_id: int, mask_prob: float = 0.15
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels) for iGPT's BERT objective on (B, T) colour ids: the positions
    `choose_pixels` picks become `mask_id` in the input and keep their id in the labels, IGNORE
    elsewhere.

    Every chosen position becomes the mask token: no 80/10/10. iGPT's BERT loss (eq. 2) is the
    likelihood of x_M given the unmasked x_[1,n]\\M only, so no chosen pixel may stay visible
    (BERT's 10% unchanged) or be replaced by another colour (its 10% random), which would make
    the model predict pixels it also sees or distrust every visible one."""
    chosen = choose_pixels(tuple(ids.shape), generator, mask_prob).to(ids.device)
    return ids.masked_fill(chosen, mask_id), ids.masked_fill(~chosen, IGNORE)


def next_pixel_targets(ids: torch.Tensor, start_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels) for iGPT's autoregressive objective (eq. 1) on (B, T) colour ids:
    labels[t] = ids[t] at every position and input[t] = ids[t - 1], with input[0] = `start_id`
    (k + 1 for a palette of k colours: the first pixel is predicted from a start-of-sequence
    token, as in GPT models). A causal model reading the input then predicts each pixel from
    the ones before it in raster order."""
    start = torch.full_like(ids[:, :1], start_id)
    return torch.cat([start, ids[:, :-1]], 1), ids.clone()
