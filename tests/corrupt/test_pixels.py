"""Colour palettes, quantization and the two pixel-prediction corruptions (iGPT)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfsup.cluster import inertia, kmeans_plusplus
from selfsup.corrupt.pixels import (
    choose_pixels,
    dequantize,
    fit_palette,
    mask_pixels,
    next_pixel_targets,
    quantize,
    sample_pixels,
)
from selfsup.errors import ConfigError
from selfsup.keys import IGNORE


def blob_images(n=40, side=16, seed=0) -> np.ndarray:
    """uint8 (n, side, side, 3) images whose colours come from 6 noisy blobs, as a cache holds."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(20, 236, size=(6, 3))
    which = rng.integers(0, 6, size=(n, side, side))
    pixels = centres[which] + rng.normal(0, 12, size=(n, side, side, 3))
    return np.clip(pixels, 0, 255).round().astype(np.uint8)


def test_sample_uses_every_pixel_or_a_seeded_draw():
    images = blob_images()
    everything = sample_pixels(images, torch.Generator().manual_seed(0))
    assert everything.shape == (40 * 16 * 16, 3)
    assert float(everything.min()) >= 0 and float(everything.max()) <= 1
    a = sample_pixels(images, torch.Generator().manual_seed(1), max_pixels=1000)
    b = sample_pixels(images, torch.Generator().manual_seed(1), max_pixels=1000)
    assert a.shape == (1000, 3) and torch.equal(a, b)
    # float channels-first images give the same pixels as their uint8 channels-last cache
    chw = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(sample_pixels(chw, torch.Generator()), everything)


def test_palette_equals_sklearn_kmeans_on_the_same_sample():
    sklearn = pytest.importorskip("sklearn.cluster")
    images, k = blob_images(), 8
    palette = fit_palette(images, k, torch.Generator().manual_seed(2), max_pixels=5000)
    assert palette.shape == (k, 3) and palette.dtype == torch.float32
    g = torch.Generator().manual_seed(2)  # the same draws: the sample, then k-means++
    sample = sample_pixels(images, g, max_pixels=5000)
    init = kmeans_plusplus(sample, k, g)
    ref = sklearn.KMeans(k, init=init.double().numpy(), n_init=1, algorithm="lloyd")
    ref.fit(sample.double().numpy())
    order = lambda c: c[np.lexsort(c.T[::-1])]  # noqa: E731  compare as sets of colours
    np.testing.assert_allclose(order(palette.double().numpy()), order(ref.cluster_centers_),
                               atol=1e-6)  # fmt: skip
    # and no worse than scikit-learn's own k-means++ (best of 4 starts) by more than 1%
    best = sklearn.KMeans(k, n_init=4, random_state=0).fit(sample.double().numpy())
    assert inertia(sample, palette) <= 1.01 * best.inertia_


def test_palette_is_deterministic_per_seed_and_rejects_too_few_colours():
    images = blob_images()
    a = fit_palette(images, 6, torch.Generator().manual_seed(3), max_pixels=3000)
    b = fit_palette(images, 6, torch.Generator().manual_seed(3), max_pixels=3000)
    assert torch.equal(a, b)
    flat = np.full((2, 4, 4, 3), 7, dtype=np.uint8)
    with pytest.raises(ConfigError):
        fit_palette(flat, 4, torch.Generator())
    with pytest.raises(ConfigError):
        fit_palette(np.zeros((2, 4, 4, 4), dtype=np.uint8), 2, torch.Generator())


def test_quantize_picks_the_nearest_colour_in_raster_order():
    g = torch.Generator().manual_seed(4)
    palette = torch.rand(13, 3, generator=g)
    images = torch.rand(3, 3, 5, 7, generator=g)
    ids = quantize(images, palette)
    assert ids.shape == (3, 35) and ids.dtype == torch.long
    for b in range(3):
        for y in range(5):
            for x in range(7):
                d = [float(((images[b, :, y, x] - c) ** 2).sum()) for c in palette]
                assert ids[b, y * 7 + x] == int(np.argmin(d))


def test_palette_colours_round_trip_exactly():
    g = torch.Generator().manual_seed(5)
    palette = torch.rand(16, 3, generator=g)
    ids = torch.randint(16, (4, 6 * 8), generator=g)
    images = dequantize(ids, palette, 6, 8)
    assert images.shape == (4, 3, 6, 8)
    assert torch.equal(images[1, :, 2, 3], palette[ids[1, 2 * 8 + 3]])  # raster order
    assert torch.equal(quantize(images, palette), ids)
    assert torch.equal(dequantize(quantize(images, palette), palette, 6, 8), images)
    with pytest.raises(ConfigError):
        dequantize(torch.full((1, 48), 16), palette, 6, 8)  # the mask id is not a colour


def test_quantization_error_is_small_on_the_images_the_palette_came_from():
    images = blob_images()
    palette = fit_palette(images, 6, torch.Generator().manual_seed(6))
    chw = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    back = dequantize(quantize(chw, palette), palette, 16, 16)
    rms = float((back - chw).pow(2).mean().sqrt())
    assert rms < 0.06  # the blobs' own noise: 12 / 255 = 0.047


def test_mask_rate_labels_and_seed():
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(16, (200, 256), generator=g)
    inp, labels = mask_pixels(ids, torch.Generator().manual_seed(8), mask_id=16)
    chosen = labels != IGNORE
    assert abs(float(chosen.float().mean()) - 0.15) < 0.005  # 51,200 draws: std 0.0016
    assert bool(chosen.any(1).all())  # every image has a position to predict
    assert torch.equal(labels[chosen], ids[chosen])
    assert bool((inp[chosen] == 16).all())  # all masked: no 80/10/10
    assert torch.equal(inp[~chosen], ids[~chosen])
    again = mask_pixels(ids, torch.Generator().manual_seed(8), mask_id=16)
    other = mask_pixels(ids, torch.Generator().manual_seed(9), mask_id=16)
    assert torch.equal(again[0], inp) and torch.equal(again[1], labels)
    assert not torch.equal(other[1], labels)
    rate = float(choose_pixels((400, 256), torch.Generator().manual_seed(10), 0.4).float().mean())
    assert abs(rate - 0.4) < 0.01
    with pytest.raises(ConfigError):
        choose_pixels((2, 3), torch.Generator(), mask_prob=0.0)


def test_next_pixel_alignment():
    ids = torch.randint(16, (3, 20), generator=torch.Generator().manual_seed(11))
    inp, labels = next_pixel_targets(ids, start_id=17)
    assert torch.equal(labels, ids)
    assert bool((inp[:, 0] == 17).all())
    assert torch.equal(inp[:, 1:], ids[:, :-1])  # input[t] is the pixel before t
