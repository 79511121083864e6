"""Relative patch position pairs (Doersch, Gupta and Efros, arXiv:1505.05192), drawn in batches
from a seeded generator.

The image is cut into a grid x grid of cells; the pair is an anchor cell's patch (the centre
cell of the paper's 3 x 3 grid) and the patch of one of its 8 neighbours, and the label says
which neighbour, in raster order around the anchor (the paper's figure 2 numbers them 1..8 the
same way):

    0 1 2
    3 . 4
    5 6 7

Against "trivial" solutions (section 3.1 of the paper) the patches are smaller than their cells,
so neighbouring patches are separated by a gap (the paper: 96 px patches, a gap of 48 px,
about half a patch) and each patch's position is jittered inside its cell (the paper: up to
7 px), so that continuing lines and textures across a boundary, or exact offsets, give no
answer. The same section's counter to chromatic aberration, "color dropping", is an option
(`color_drop_prob`): 2 of a patch's 3 channels become Gaussian noise with 1/100 the standard
deviation of the kept channel.

Geometry, in pixels: a cell is patch + gap wide; the grid of cells is centred in the image; a
patch sits at floor(gap / 2) inside its cell plus a jitter drawn uniformly from
[-jitter, jitter] in y and in x (independently per patch). jitter <= (gap - 1) // 2, so every
patch stays inside its own cell and two patches are always at least gap - 2 jitter >= 1 px
apart: they never touch.

Defaults scale with the image side S = min(H, W): cell = S // grid, gap = max(2, round(cell / 3)),
patch = cell - gap, jitter = min(max(1, round(patch / 14)), (gap - 1) // 2). At the paper's
scale (cells of 144 px) that is its 96 px patches, 48 px gap and 7 px jitter; at CIFAR's 32 px,
cells of 10 px: patches of 7 px, a gap of 3 px and a jitter of 1 px (neighbours 1 to 5 px
apart: a gap of 2 px with 8 px patches would let jittered patches touch).

Legend: B images, C channels, H, W image size, P patch side, G grid side.
"""

from __future__ import annotations

import torch

from selfsup.errors import ConfigError
from selfsup.keys import LABELS, PATCHES

NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))  # (dy, dx)
COLOR_NOISE = 0.01  # noise std of a dropped channel, relative to the kept channel's (sec. 3.1)


def patch_geometry(
    size: int, grid: int = 3, patch: int | None = None, gap: int | None = None,
    jitter: int | None = None,
) -> tuple[int, int, int]:  # fmt: skip
    """(patch, gap, jitter) in pixels for images of side `size` (min(H, W)): the given values,
    the others filled in by the rules of the module docstring. ConfigError if they do not fit
    the image or would let patches touch."""
    if grid < 3:
        raise ConfigError(f"relative patch position needs a grid of at least 3, got {grid}")
    cell = size // grid
    if gap is None:
        gap = max(2, round(cell / 3)) if patch is None else cell - patch
    if patch is None:
        patch = cell - gap
    if jitter is None:
        jitter = min(max(1, round(patch / 14)), (gap - 1) // 2)
    if patch < 1 or gap < 1 or jitter < 0:
        raise ConfigError(
            f"relative patches of {patch} px with a gap of {gap} px and jitter {jitter} px: "
            "need patch >= 1, gap >= 1, jitter >= 0"
        )
    if grid * (patch + gap) > size:
        raise ConfigError(
            f"a {grid} x {grid} grid of {patch} px patches with {gap} px gaps needs "
            f"{grid * (patch + gap)} px, the images have {size}"
        )
    if 2 * jitter >= gap:
        raise ConfigError(
            f"jitter {jitter} px with a gap of {gap} px lets patches touch: "
            f"use jitter <= {(gap - 1) // 2}"
        )
    return patch, gap, jitter


def relative_patch_pairs(
    images: torch.Tensor,
    generator: torch.Generator,
    grid: int = 3,
    patch: int | None = None,
    gap: int | None = None,
    jitter: int | None = None,
    color_drop_prob: float = 0.0,
) -> dict[str, torch.Tensor]:
    """{PATCHES: (B, 2, C, P, P), LABELS: (B,) long in 0..7} from images (B, C, H, W): per image
    the anchor cell's patch, then the patch of the neighbour LABELS names (module docstring for
    the order and the geometry). The anchor cell is the centre of a 3 x 3 grid; with a larger
    grid it is drawn uniformly among the cells that have 8 neighbours. Neighbours, anchor cells,
    jitter and colour dropping are drawn per image from `generator` (CPU).

    color_drop_prob: probability that a patch keeps one channel (drawn uniformly) and has the
    other two replaced by Gaussian noise around the kept channel's patch mean with 1/100 of its
    standard deviation (arXiv:1505.05192, 3.1, "color dropping"; the paper drops on every patch,
    1.0; 0 by default). Needs C = 3."""
    if images.ndim != 4:
        raise ConfigError(f"relative patches need images (B, C, H, W), got {tuple(images.shape)}")
    if not 0.0 <= color_drop_prob <= 1.0:
        raise ConfigError(f"color_drop_prob must be in [0, 1], got {color_drop_prob}")
    B, C, H, W = images.shape
    if color_drop_prob > 0 and C != 3:
        raise ConfigError(f"color dropping needs 3 channels, the images have {C}")
    P, gap, J = patch_geometry(min(H, W), grid, patch, gap, jitter)
    cell = P + gap

    def draw_int(low: int, high: int, shape: tuple) -> torch.Tensor:  # uniform in [low, high)
        return torch.randint(low, high, shape, generator=generator, device=generator.device)

    labels = draw_int(0, len(NEIGHBOURS), (B,))
    anchor = draw_int(1, grid - 1, (B, 2))  # (B, 2) the anchor cell's (row, column)
    jitters = draw_int(-J, J + 1, (B, 2, 2))  # (B, 2 patches, (y, x))
    offsets = torch.tensor(NEIGHBOURS, device=labels.device)[labels]  # (B, 2)
    cells = torch.stack([anchor, anchor + offsets], 1)  # (B, 2 patches, (row, column))
    origin = torch.tensor([(H - grid * cell) // 2, (W - grid * cell) // 2], device=labels.device)
    corner = origin + cells * cell + gap // 2 + jitters  # (B, 2, 2) each patch's top-left pixel
    corner = corner.to(images.device)

    steps = torch.arange(P, device=images.device)
    rows = corner[..., 0, None] + steps  # (B, 2, P)
    cols = corner[..., 1, None] + steps  # (B, 2, P)
    b = torch.arange(B, device=images.device)[:, None, None, None]
    patches = images[b, :, rows[..., :, None], cols[..., None, :]]  # (B, 2, P, P, C)
    patches = patches.permute(0, 1, 4, 2, 3).contiguous()  # (B, 2, C, P, P)
    if color_drop_prob > 0:
        patches = drop_colors(patches, generator, color_drop_prob)
    return {PATCHES: patches, LABELS: labels.to(images.device)}


def drop_colors(patches: torch.Tensor, generator: torch.Generator, prob: float) -> torch.Tensor:
    """patches (B, 2, 3, P, P) where each patch, with probability `prob`, keeps one channel drawn
    uniformly and has the other two replaced by N(mean, (std / 100)^2) of the kept channel over
    the patch (arXiv:1505.05192, 3.1), clamped to [0, 1]."""
    B, n, C, P, _ = patches.shape
    dev = generator.device
    drop = torch.rand(B, n, generator=generator, device=dev) < prob  # (B, 2)
    keep = torch.randint(C, (B, n), generator=generator, device=dev)  # (B, 2) the kept channel
    noise = torch.randn(B, n, C, P, P, generator=generator, device=dev).to(patches)
    drop, keep = drop.to(patches.device), keep.to(patches.device)
    kept = patches.gather(2, keep[:, :, None, None, None].expand(B, n, 1, P, P))  # (B, 2, 1, P, P)
    mean = kept.mean((-2, -1), keepdim=True)
    std = kept.std((-2, -1), keepdim=True, unbiased=False)
    replaced = (mean + COLOR_NOISE * std * noise).clamp(0, 1)  # (B, 2, C, P, P)
    channel = torch.arange(C, device=patches.device)[None, None, :, None, None]
    dropped = drop[:, :, None, None, None] & (channel != keep[:, :, None, None, None])
    return torch.where(dropped, replaced, patches)
