"""Relative patch position pairs: labels, where each patch came from, gaps, jitter, seeds."""

from __future__ import annotations

import pytest
import torch

from selfsup.corrupt.patches import NEIGHBOURS, patch_geometry, relative_patch_pairs
from selfsup.errors import ConfigError
from selfsup.keys import LABELS, PATCHES


def coordinate_images(B: int, H: int, W: int) -> torch.Tensor:
    """(B, 3, H, W) whose channel 0 holds the row, channel 1 the column, channel 2 the image."""
    y = torch.arange(H, dtype=torch.float32)[:, None].expand(H, W)
    x = torch.arange(W, dtype=torch.float32)[None, :].expand(H, W)
    b = torch.arange(B, dtype=torch.float32)[:, None, None].expand(B, H, W)
    return torch.stack([y.expand(B, H, W), x.expand(B, H, W), b], 1)


def corners(pairs) -> torch.Tensor:
    """(B, 2, 2) top-left (row, column) of each patch, read from coordinate images; asserts the
    patch is a contiguous P x P window of its own image."""
    p = pairs[PATCHES]
    B, _, _, P, _ = p.shape
    top = p[:, :, 0, 0, 0], p[:, :, 1, 0, 0]
    steps = torch.arange(P, dtype=torch.float32)
    assert torch.equal(p[:, :, 0], top[0][..., None, None] + steps[:, None].expand(P, P))
    assert torch.equal(p[:, :, 1], top[1][..., None, None] + steps[None, :].expand(P, P))
    assert torch.equal(p[:, :, 2], torch.arange(B, dtype=torch.float32)[:, None, None, None]
                       .expand(B, 2, P, P))  # fmt: skip
    return torch.stack(top, -1).long()


def test_cifar_defaults():
    assert patch_geometry(32) == (7, 3, 1)
    assert patch_geometry(144 * 3) == (96, 48, 7)  # the paper's patch, gap and jitter
    pairs = relative_patch_pairs(torch.rand(4, 3, 32, 32), torch.Generator().manual_seed(0))
    assert pairs[PATCHES].shape == (4, 2, 3, 7, 7) and pairs[LABELS].dtype == torch.long


def test_labels_uniform_over_the_eight_neighbours():
    pairs = relative_patch_pairs(torch.rand(8000, 1, 32, 32), torch.Generator().manual_seed(1))
    counts = torch.bincount(pairs[LABELS], minlength=8)
    assert counts.numel() == 8
    # 1000 expected each, binomial std ~30: 5 std
    assert int(counts.min()) > 850 and int(counts.max()) < 1150


@pytest.mark.parametrize(("size", "grid", "kwargs"), [
    (32, 3, {}),
    (40, 3, {"patch": 8, "gap": 4, "jitter": 1}),
    (30, 5, {}),
    (33, 3, {"jitter": 0}),
])  # fmt: skip
def test_each_patch_comes_from_its_cell_within_the_jitter(size, grid, kwargs):
    B = 2000
    images = coordinate_images(B, size, size + 3)  # not square: the grid fits the short side
    pairs = relative_patch_pairs(images, torch.Generator().manual_seed(2), grid=grid, **kwargs)
    P, gap, J = patch_geometry(size, grid, kwargs.get("patch"), kwargs.get("gap"),
                               kwargs.get("jitter"))  # fmt: skip
    assert pairs[PATCHES].shape[-1] == P
    cell = P + gap
    origin = torch.tensor([(size - grid * cell) // 2, (size + 3 - grid * cell) // 2])
    top = corners(pairs)  # (B, 2, 2)
    cells = torch.div(top - origin, cell, rounding_mode="floor")  # (B, 2, 2)
    inside = top - origin - cells * cell  # position inside the cell
    assert int(inside.min()) == gap // 2 - J and int(inside.max()) == gap // 2 + J  # all used
    assert int((inside + P).max()) <= cell  # the patch ends inside its cell
    assert int(cells.min()) >= 0 and int(cells.max()) <= grid - 1
    anchor, neighbour = cells[:, 0], cells[:, 1]
    assert int(anchor.min()) >= 1 and int(anchor.max()) <= grid - 2  # has 8 neighbours
    offsets = torch.tensor(NEIGHBOURS)[pairs[LABELS]]
    assert torch.equal(neighbour - anchor, offsets)
    if grid == 3:
        assert bool((anchor == 1).all())  # the centre cell


def test_patches_never_touch():
    """Two patches whose cells are neighbours are at least 1 px apart along the axis on which
    their cells differ (with the largest jitter the gap allows)."""
    for size, kw in [(32, {}), (32, {"patch": 6, "gap": 4, "jitter": 1}), (64, {})]:
        images = coordinate_images(3000, size, size)
        pairs = relative_patch_pairs(images, torch.Generator().manual_seed(3), **kw)
        P = pairs[PATCHES].shape[-1]
        top = corners(pairs)
        offsets = torch.tensor(NEIGHBOURS)[pairs[LABELS]]  # (B, 2) sign of the neighbour's place
        first, second = top[:, 0], top[:, 1]
        # separation along each axis the cells differ on: start of the later minus end of the
        # earlier patch, in pixels between them
        between = torch.where(offsets > 0, second - (first + P), first - (second + P))
        differs = offsets != 0
        assert int(between[differs].min()) >= 1
        # and the smallest separation really is reached: gap - 2 jitter
        _, gap, J = patch_geometry(size, 3, kw.get("patch"), kw.get("gap"), kw.get("jitter"))
        assert int(between[differs].min()) == gap - 2 * J


def test_same_seed_same_pairs_other_seed_other_pairs():
    images = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(4))

    def draw(seed):
        return relative_patch_pairs(images, torch.Generator().manual_seed(seed),
                                    color_drop_prob=0.5)  # fmt: skip

    a, b, c = draw(5), draw(5), draw(6)
    assert torch.equal(a[PATCHES], b[PATCHES]) and torch.equal(a[LABELS], b[LABELS])
    assert not torch.equal(a[LABELS], c[LABELS])


def test_color_dropping_keeps_one_channel_and_adds_faint_noise():
    g = torch.Generator().manual_seed(7)
    images = torch.rand(500, 3, 32, 32, generator=g)
    plain = relative_patch_pairs(images, torch.Generator().manual_seed(8))
    dropped = relative_patch_pairs(images, torch.Generator().manual_seed(8), color_drop_prob=1.0)
    assert torch.equal(plain[LABELS], dropped[LABELS])  # the same pairs, then the dropping
    p, q = plain[PATCHES], dropped[PATCHES]  # (B, 2, 3, P, P)
    same = (p == q).flatten(3).all(-1)  # (B, 2, 3) channels left untouched
    assert bool((same.sum(-1) == 1).all())  # exactly one channel kept per patch
    kept = p.flatten(3)[same].view(500, 2, -1)  # (B, 2, P * P) the kept channel
    noise = q.flatten(3)[~same].view(500, 2, 2, -1)  # (B, 2, 2, P * P) the dropped channels
    torch.testing.assert_close(noise.mean(-1), kept.mean(-1, keepdim=True).expand(500, 2, 2),
                               atol=0.01, rtol=0)  # fmt: skip
    ratio = noise.std(-1) / kept.std(-1, keepdim=True)
    assert 0.005 < float(ratio.mean()) < 0.015
    counts = torch.bincount(same.float().argmax(-1).flatten(), minlength=3)
    assert int(counts.min()) > 250  # the kept channel is uniform over the three (1000 draws)
    half = relative_patch_pairs(images, torch.Generator().manual_seed(8), color_drop_prob=0.5)
    share = float((half[PATCHES] != p).flatten(2).any(-1).float().mean())
    assert 0.4 < share < 0.6


def test_bad_settings_are_one_line_errors():
    images = torch.rand(2, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    for kw in [{"patch": 10, "gap": 2}, {"gap": 3, "jitter": 2}, {"grid": 2},
               {"color_drop_prob": 1.5}, {"patch": 0}]:  # fmt: skip
        with pytest.raises(ConfigError):
            relative_patch_pairs(images, g, **kw)
    with pytest.raises(ConfigError):
        relative_patch_pairs(torch.rand(2, 1, 32, 32), g, color_drop_prob=0.5)
