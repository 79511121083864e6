"""Batched image augmentations (selfsup.corrupt.views) against independent per-image
references: PIL (ImageEnhance, ImageOps, convert("L"), resize with a box), colorsys, numpy's
rot90, scipy.ndimage's Gaussian filter, and torchvision's crop procedure written out in Python.
Random ops are checked through their documented draw layouts (module docstring), read from a
generator with the same seed."""

from __future__ import annotations

import colorsys
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

from selfsup.corrupt import views as V
from selfsup.errors import ConfigError


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def uint8_images(n: int, h: int = 12, w: int = 12, seed: int = 0) -> np.ndarray:
    """(n, h, w, 3) uint8 with smooth structure and noise, so crops and blurs matter."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 100 * np.sin(xx[None, ..., None] / 3.0 + yy[None, ..., None] / 5.0
                              + rng.uniform(0, 6, (n, 1, 1, 3)))  # fmt: skip
    return np.clip(base + rng.normal(0, 25, (n, h, w, 3)), 0, 255).astype(np.uint8)


def to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) float -> (B, H, W, C) float64 in [0, 255]."""
    return x.permute(0, 2, 3, 1).double().numpy() * 255


IDENTITY = V.ViewRecipe(size=12, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0,
                        jitter_prob=0.0, gray_prob=0.0)  # fmt: skip


# ---------------------------------------------------------------- determinism, shapes


@pytest.mark.parametrize("name", sorted(V.RECIPES))
def test_make_views_same_seed_same_views_other_seed_other_views(name):
    x = to_tensor(uint8_images(6, 24, 24))
    recipes = V.view_recipes(name, n_views=2, size=16)
    a = V.make_views(x, gen(1), recipes)
    assert a.shape == (6, 2, 3, 16, 16) and a.dtype == torch.float32
    assert 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, V.make_views(x, gen(1), recipes))
    assert not torch.equal(a, V.make_views(x, gen(2), recipes))
    g = gen(3)
    state = g.get_state()  # resuming from a saved state gives the same views
    b = V.make_views(x, g, recipes)
    g.set_state(state)
    assert torch.equal(b, V.make_views(x, g, recipes))


OPS = {
    "crop": lambda x, g, p: V.random_resized_crop(x, g, 8, scale=(p * 0.9 + 0.05, 1.0)),
    "flip": lambda x, g, p: V.horizontal_flip(x, g, p),
    "jitter": lambda x, g, p: V.color_jitter(x, g, prob=p),
    "gray": lambda x, g, p: V.random_grayscale(x, g, p),
    "blur": lambda x, g, p: V.gaussian_blur(x, g, p),
    "solarize": lambda x, g, p: V.solarize(x, g, p),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_ops_keep_shape_range_and_input(op):
    x = to_tensor(uint8_images(16))
    before = x.clone()
    y = OPS[op](x, gen(0), 1.0)
    assert y.dtype == torch.float32 and y.shape[:2] == x.shape[:2]
    assert y.shape[2:] == ((8, 8) if op == "crop" else x.shape[2:])
    assert 0 <= y.min() and y.max() <= 1
    assert torch.equal(x, before), "the input was modified in place"


@pytest.mark.parametrize("op", sorted(OPS))
def test_draws_per_image_do_not_depend_on_branches(op):
    """The generator advances by the same amount whatever each image's branch: prob 0
    (nothing applied) and prob 1 (everything applied) leave it in the same state."""
    x = to_tensor(uint8_images(10))
    states = []
    for p in (0.0, 1.0):
        g = gen(5)
        OPS[op](x, g, p)
        states.append(g.get_state())
    assert torch.equal(states[0], states[1])


def test_jitter_draws_the_same_with_a_strength_switched_off():
    x = to_tensor(uint8_images(10))
    g1, g2 = gen(5), gen(5)
    V.color_jitter(x, g1)
    V.color_jitter(x, g2, hue=0.0, saturation=0.0)
    assert torch.equal(g1.get_state(), g2.get_state())


# ---------------------------------------------------------------- random resized crop


def torchvision_boxes(u: torch.Tensor, height, width, scale, ratio) -> list[list[int]]:
    """torchvision's RandomResizedCrop.get_params written out per image in plain Python, fed
    the uniforms of the documented layout (10 tries x (area, log aspect, top, left))."""
    out = []
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for row in u.view(-1, 10, 4).tolist():
        for a, r, t, l in row:
            target = height * width * (scale[0] + (scale[1] - scale[0]) * a)
            aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * r)
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                out.append([int(t * (height - h + 1)), int(l * (width - w + 1)), h, w])
                break
        else:
            in_ratio = width / height
            if in_ratio < min(ratio):
                w, h = width, round(width / min(ratio))
            elif in_ratio > max(ratio):
                h, w = height, round(height * max(ratio))
            else:
                w, h = width, height
            out.append([(height - h) // 2, (width - w) // 2, h, w])
    return out


@pytest.mark.parametrize(
    "height,width,scale,ratio",
    [(20, 30, (0.08, 1.0), (3 / 4, 4 / 3)), (32, 32, (0.5, 1.0), (0.2, 5.0)),
     (16, 40, (0.9, 1.0), (3 / 4, 4 / 3)), (24, 24, (0.6, 1.0), (8.0, 10.0))],
)  # fmt: skip
def test_crop_boxes_follow_torchvision_procedure(height, width, scale, ratio):
    n = 300
    boxes = V.sample_crop_boxes(gen(7), n, height, width, scale, ratio)
    u = torch.rand(n, 40, generator=gen(7), dtype=torch.float64)
    assert boxes.tolist() == torchvision_boxes(u, height, width, scale, ratio)


def test_crop_boxes_areas_ratios_and_places_within_bounds():
    H, W, n = 48, 64, 3000
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    top, left, h, w = V.sample_crop_boxes(gen(1), n, H, W, scale, ratio).double().unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= H).all() and (left + w <= W).all()
    # the sides are the rounded sqrt(A r) and sqrt(A / r): within half a pixel of exact
    assert ((w + 0.5) * (h + 0.5) >= scale[0] * H * W).all()
    assert ((w - 0.5) * (h - 0.5) <= scale[1] * H * W).all()
    assert ((w + 0.5) / (h - 0.5) >= ratio[0]).all() and ((w - 0.5) / (h + 0.5) <= ratio[1]).all()
    frac = (w * h / (H * W)).numpy()
    assert frac.min() < 0.1 and frac.max() > 0.9  # the whole range is used


def test_crop_places_uniformly():
    top, left, h, w = V.sample_crop_boxes(gen(2), 4000, 32, 32, (0.25, 0.25), (1.0, 1.0)).T
    assert (h == 16).all() and (w == 16).all()
    counts = torch.bincount(top, minlength=17)
    assert counts.numel() == 17 and counts.min() > 4000 / 17 * 0.7  # every offset 0..16


def test_crop_falls_back_to_the_centre():
    boxes = V.sample_crop_boxes(gen(0), 50, 32, 32, (0.5, 1.0), (10.0, 10.0))
    assert (boxes == torch.tensor([14, 0, 3, 32])).all()  # w = 32, h = round(32 / 10)


def test_full_box_is_the_identity_and_a_plain_resize():
    x = to_tensor(uint8_images(5, 24, 24))
    same = V.random_resized_crop(x, gen(0), 24, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(same, x, atol=1e-6, rtol=0)
    for size in (10, 40):
        y = V.random_resized_crop(x, gen(0), size, scale=(1.0, 1.0), ratio=(1.0, 1.0))
        ref = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        torch.testing.assert_close(y, ref.clamp(0, 1), atol=1e-5, rtol=0)


def test_resized_crop_matches_pil_box_resize():
    """Each image's box resized by PIL (mode F, BILINEAR, box=): up- and downscaling."""
    x = to_tensor(uint8_images(12, 40, 36))
    size = 20
    y = V.random_resized_crop(x, gen(4), size)
    boxes = V.sample_crop_boxes(gen(4), 12, 40, 36)
    assert (boxes[:, 2:] > size).any() and (boxes[:, 2:] < size).any()
    for b, (t, l, h, w) in enumerate(boxes.tolist()):
        for c in range(3):
            im = Image.fromarray(x[b, c].numpy(), mode="F")
            ref = np.asarray(im.resize((size, size), Image.BILINEAR, box=(l, t, l + w, t + h)))
            np.testing.assert_allclose(y[b, c].numpy(), ref, atol=1e-5)


# ---------------------------------------------------------------- flip, rotation


def test_flip_is_exact_and_follows_its_draw():
    x = to_tensor(uint8_images(40))
    y = V.horizontal_flip(x, gen(3), 0.5)
    flip = torch.rand(40, 1, generator=gen(3))[:, 0] < 0.5
    assert 0 < flip.sum() < 40
    for b in range(40):
        assert torch.equal(y[b], x[b].flip(-1) if flip[b] else x[b])


def test_rotate90_matches_numpy_rot90():
    x = to_tensor(uint8_images(6, 8, 8))
    k = torch.tensor([0, 1, 2, 3, -1, 5])
    y = V.rotate90(x, k)
    for b in range(6):
        ref = np.rot90(x[b].numpy(), int(k[b]), axes=(1, 2))
        np.testing.assert_array_equal(y[b].numpy(), ref)
    # counter-clockwise: one quarter turn brings the top-right pixel to the top-left
    one = torch.arange(4.0).view(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    assert V.rotate90(one, torch.tensor([1])).flatten().tolist() == [1.0, 3.0, 0.0, 2.0]


def test_rotate90_odd_turns_need_square_images():
    x = torch.rand(2, 3, 4, 6)
    with pytest.raises(ValueError, match="square"):
        V.rotate90(x, torch.tensor([0, 1]))
    assert torch.equal(V.rotate90(x, torch.tensor([2, 2])), x.flip(-1, -2))


# ---------------------------------------------------------------- colour against PIL


def pil(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a)


@pytest.mark.parametrize(
    "op,enhance",
    [(V.adjust_brightness, ImageEnhance.Brightness), (V.adjust_contrast, ImageEnhance.Contrast),
     (V.adjust_saturation, ImageEnhance.Color)],
)  # fmt: skip
def test_blend_adjustments_match_pil_image_enhance(op, enhance):
    imgs = uint8_images(8, 16, 16, seed=3)
    factors = torch.linspace(0.3, 1.7, 8)
    y = to_numpy(op(to_tensor(imgs), factors))
    for b in range(8):
        ref = np.asarray(enhance(pil(imgs[b])).enhance(float(factors[b])), dtype=np.float64)
        # PIL rounds to uint8 and uses an integer mean / integer luma: within 2 levels
        assert np.abs(y[b] - ref).max() <= 2.0 + 1e-4


def test_grayscale_matches_pil_convert_l():
    imgs = uint8_images(8, 16, 16, seed=4)
    y = V.to_grayscale(to_tensor(imgs))[:, 0].double().numpy() * 255
    for b in range(8):
        ref = np.asarray(pil(imgs[b]).convert("L"), dtype=np.float64)
        assert np.abs(y[b] - ref).max() <= 0.5 + 1e-2


def test_random_grayscale_replaces_chosen_images_by_luma():
    x = to_tensor(uint8_images(40, seed=5))
    y = V.random_grayscale(x, gen(6), 0.5)
    gray = torch.rand(40, 1, generator=gen(6))[:, 0] < 0.5
    luma = V.to_grayscale(x).expand_as(x)
    for b in range(40):
        assert torch.equal(y[b], luma[b] if gray[b] else x[b])


def test_solarize_matches_pil_imageops():
    imgs = uint8_images(30, seed=6)
    x = to_tensor(imgs)
    y = V.solarize(x, gen(8), 0.5)
    hit = torch.rand(30, 1, generator=gen(8))[:, 0] < 0.5
    assert 0 < hit.sum() < 30
    for b in range(30):
        # v / 255 >= 0.5 exactly when v >= 128
        ref = np.asarray(ImageOps.solarize(pil(imgs[b]), 128)) if hit[b] else imgs[b]
        np.testing.assert_allclose(to_numpy(y[b : b + 1])[0], ref, atol=1e-4)


def test_solarize_inverts_values_from_the_threshold_up():
    x = torch.tensor([0.25, 0.2, 0.3, 0.0, 1.0]).view(1, 1, 1, 5)
    y = V.solarize(x, gen(0), prob=1.0, threshold=0.25)
    assert y.flatten().tolist() == pytest.approx([0.75, 0.2, 0.7, 0.0, 0.0])


def colorsys_hue(rgb: np.ndarray, shift: float) -> np.ndarray:
    """(H, W, 3) float in [0, 1], hue rotated by `shift` turns, pixel by pixel."""
    out = np.empty_like(rgb)
    for i, j in np.ndindex(rgb.shape[:2]):
        h, s, v = colorsys.rgb_to_hsv(*rgb[i, j])
        out[i, j] = colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)
    return out


def test_hue_matches_colorsys():
    x = to_tensor(uint8_images(6, 6, 6, seed=7))
    x[0, 1] = x[0, 0]  # ties between the largest channels
    x[1] = x[1, :1]  # gray pixels
    shifts = torch.tensor([0.1, 0.45, -0.1, -0.5, 0.0, 0.3])
    y = V.adjust_hue(x, shifts).permute(0, 2, 3, 1).double().numpy()
    rgb = x.permute(0, 2, 3, 1).double().numpy()
    for b in range(6):
        np.testing.assert_allclose(y[b], colorsys_hue(rgb[b], float(shifts[b])), atol=2e-6)


def numpy_jitter(img: np.ndarray, factors, order) -> np.ndarray:
    """SimCLR's colour distortion for one (H, W, 3) image in [0, 1], from the formulas."""
    w = np.array(V.GRAY_WEIGHTS)
    for op in order:
        f = float(factors[op])
        if op == 0:
            img = np.clip(img * f, 0, 1)
        elif op == 1:
            img = np.clip(f * img + (1 - f) * (img @ w).mean(), 0, 1)
        elif op == 2:
            img = np.clip(f * img + (1 - f) * (img @ w)[..., None], 0, 1)
        else:
            img = colorsys_hue(img, f)
    return img


def test_color_jitter_matches_per_image_reference():
    B, s = 12, dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, prob=0.6)
    x = to_tensor(uint8_images(B, 6, 6, seed=8))
    y = V.color_jitter(x, gen(9), **s).permute(0, 2, 3, 1).double().numpy()
    u = torch.rand(B, 9, generator=gen(9)).double().numpy()
    lo = np.array([0.6, 0.6, 0.6, -0.1])
    hi = np.array([1.4, 1.4, 1.4, 0.1])
    rgb = x.permute(0, 2, 3, 1).double().numpy()
    applied = u[:, 0] < s["prob"]
    assert 0 < applied.sum() < B
    for b in range(B):
        if not applied[b]:
            np.testing.assert_array_equal(y[b], rgb[b])
            continue
        factors = lo + (hi - lo) * u[b, 1:5]
        ref = numpy_jitter(rgb[b], factors, np.argsort(u[b, 5:9]))
        np.testing.assert_allclose(y[b], ref, atol=1e-5)


# ---------------------------------------------------------------- blur


def test_blur_matches_scipy_gaussian_filter():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = to_tensor(uint8_images(4, 16, 16, seed=9))
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    for k in (3, 7):
        y = V.blur(x, sigma, k).double().numpy()
        for b in range(4):
            ref = x[b].double().numpy()
            for axis in (1, 2):  # torch's "reflect" padding is scipy's "mirror"
                ref = ndimage.gaussian_filter1d(ref, float(sigma[b]), axis=axis, mode="mirror",
                                                radius=k // 2)  # fmt: skip
            np.testing.assert_allclose(y[b], ref, atol=1e-5)


def test_gaussian_blur_blurs_the_chosen_images_with_their_sigma():
    x = to_tensor(uint8_images(20, seed=10))
    y = V.gaussian_blur(x, gen(11), prob=0.5, sigma=(0.5, 1.5))
    u = torch.rand(20, 2, generator=gen(11))
    for b in range(20):
        if u[b, 0] < 0.5:
            ref = V.blur(x[b : b + 1], 0.5 + u[b, 1:2], 3)[0]
            torch.testing.assert_close(y[b], ref, atol=1e-6, rtol=0)
        else:
            assert torch.equal(y[b], x[b])


def test_blur_kernel_size_is_a_tenth_of_the_side_and_odd():
    assert [V.blur_kernel_size(s) for s in (32, 50, 96, 224)] == [3, 5, 9, 23]
    with pytest.raises(ValueError):
        V.blur(torch.rand(1, 3, 8, 8), torch.ones(1), 4)


# ---------------------------------------------------------------- rates


@pytest.mark.parametrize("op", ["flip", "jitter", "gray", "blur", "solarize"])
def test_share_of_changed_images_is_close_to_prob(op):
    n, prob = 4000, 0.3
    x = torch.rand(n, 3, 8, 8, generator=gen(12))
    y = OPS[op](x, gen(13), prob)
    share = (y != x).flatten(1).any(1).float().mean().item()
    assert abs(share - prob) < 4 * math.sqrt(prob * (1 - prob) / n)


# ---------------------------------------------------------------- views and recipes


def test_make_views_count_and_differing_views():
    x = to_tensor(uint8_images(8))
    assert V.make_views(x, gen(0), V.view_recipes("simclr", 3, 12)).shape == (8, 3, 3, 12, 12)
    views = V.make_views(x, gen(0), V.view_recipes("simclr", 1, 12), n_views=4)
    assert views.shape == (8, 4, 3, 12, 12)
    assert not torch.equal(views[:, 0], views[:, 1])


def test_make_views_honours_each_recipe_and_cycles_them():
    x = to_tensor(uint8_images(8))
    recipes = (IDENTITY, replace(IDENTITY, solarize_prob=1.0), replace(IDENTITY, gray_prob=1.0))
    views = V.make_views(x, gen(0), recipes, n_views=4)
    torch.testing.assert_close(views[:, 0], x, atol=1e-6, rtol=0)
    torch.testing.assert_close(views[:, 1], torch.where(x >= 0.5, 1 - x, x), atol=1e-6, rtol=0)
    torch.testing.assert_close(views[:, 2], V.to_grayscale(x).expand_as(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(views[:, 3], x, atol=1e-6, rtol=0)  # view 3 uses recipes[0]
    blurred = V.make_views(x, gen(0), (replace(IDENTITY, blur_prob=1.0),))[:, 0]
    assert (blurred - x).abs().amax((1, 2, 3)).min() > 0.01


def test_make_views_refuses_views_of_different_sizes():
    with pytest.raises(ConfigError):
        V.make_views(torch.rand(2, 3, 12, 12), gen(0), (IDENTITY, replace(IDENTITY, size=8)))


def test_presets_are_the_papers_settings():
    simclr = V.view_recipes("simclr")
    assert simclr[0] == simclr[1]
    c = simclr[0]
    assert (c.brightness, c.contrast, c.saturation, c.hue) == pytest.approx((0.4, 0.4, 0.4, 0.1))
    assert (c.jitter_prob, c.gray_prob, c.blur_prob, c.crop_scale) == (0.8, 0.2, 0.0, (0.08, 1))
    imagenet = V.view_recipes("simclr_imagenet")[0]
    assert (imagenet.brightness, imagenet.hue, imagenet.blur_prob) == pytest.approx((0.8, 0.2, 0.5))
    for name, blur in (("byol", (1.0, 0.1)), ("byol_cifar", (0.0, 0.0))):
        one, two = V.view_recipes(name)
        assert (one.blur_prob, two.blur_prob) == blur
        assert (one.solarize_prob, two.solarize_prob) == (0.0, 0.2)
        for r in (one, two):
            assert (r.brightness, r.contrast, r.saturation, r.hue) == (0.4, 0.4, 0.2, 0.1)
            assert (r.jitter_prob, r.gray_prob, r.flip_prob) == (0.8, 0.2, 0.5)


def test_view_recipes_cycle_and_take_the_size():
    r = V.view_recipes("byol", n_views=5, size=24)
    assert len(r) == 5 and r[2] == r[0] and r[3] == r[1] and r[0] != r[1]
    assert {x.size for x in r} == {24}


def test_unknown_preset_is_a_one_line_error_listing_choices():
    with pytest.raises(ConfigError) as e:
        V.view_recipes("mocov9")
    msg = str(e.value)
    assert "\n" not in msg and all(name in msg for name in V.RECIPES)


@pytest.mark.parametrize(
    "bad",
    [dict(size=0), dict(crop_scale=(0.0, 1.0)), dict(crop_scale=(0.8, 0.5)),
     dict(flip_prob=1.5), dict(gray_prob=-0.1), dict(hue=0.6), dict(contrast=-0.1),
     dict(blur_sigma=(0.0, 1.0)), dict(crop_ratio=(2.0, 1.0))],
)  # fmt: skip
def test_recipe_validation(bad):
    with pytest.raises(ConfigError):
        replace(V.ViewRecipe(), **bad).validate()


def test_benchmark_pil_pipeline_runs_and_is_the_identity_without_transforms():
    """benchmarks/image_augment_pil.py's per-image reference: shapes, seeding, and the
    transforms switched off give back the images."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "image_augment_pil.py"
    spec = importlib.util.spec_from_file_location("image_augment_pil", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    imgs = uint8_images(4)
    recipes = V.view_recipes("byol", 2, 12)
    a = bench.pil_views(imgs, recipes, np.random.default_rng(0))
    assert a.shape == (4, 2, 12, 12, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, bench.pil_views(imgs, recipes, np.random.default_rng(0)))
    same = bench.pil_views(imgs, (IDENTITY,), np.random.default_rng(0))[:, 0]
    np.testing.assert_array_equal(same, imgs)
    solar = bench.pil_views(imgs, (replace(IDENTITY, solarize_prob=1.0),), np.random.default_rng(0))
    np.testing.assert_array_equal(solar[:, 0], np.where(imgs >= 128, 255 - imgs, imgs))
