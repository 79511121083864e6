"""Image augmentations on batches of tensors, seeded through the run's generator: the random
resized crop, flip, colour jitter, grayscale, Gaussian blur and solarization of SimCLR
(arXiv:2002.05709, appendix A) and BYOL (arXiv:2006.07733, table 6), rotation by quarter turns
for the rotation pretext task (arXiv:1803.07728), and named presets of their view recipes.

Images are (B, C, H, W) float32 in [0, 1], RGB, channels first; every output is clamped to
[0, 1]. Parameters are drawn per image, and only from the `generator` passed in (no global
RNG, no hidden state), so the same generator state gives the same views and exact resume holds.
Each op draws a fixed block of uniforms per image whatever branch an image takes (a skipped
jitter still draws its factors): the generator advances by an amount that depends only on the
batch's shape, and image b's parameters are row b of its op's block, never shifted by what the
other images drew. The layouts (torch.rand per image):

    random_resized_crop  10 tries x (area, log aspect, top, left), float64
    horizontal_flip      1  (flip if < prob)
    color_jitter         9  (apply if < prob; brightness, contrast, saturation, hue factors;
                            4 keys whose argsort is the order of the four adjustments)
    random_grayscale     1
    gaussian_blur        2  (apply if < prob; sigma)
    solarize             1

kornia is not used. Its random modules draw from the global RNG, and its functional ops are
no faster than the torch here on (256, 3, 32, 32) batches (ms, kornia 0.9 / this module, one
thread of a shared EPYC: brightness 1.0 / 0.55, contrast 2.4 / 2.0, saturation 2.8 / 2.0,
hue 35 / 9.7, blur 7.4 / 5.9, crop and resize 10.9 / 9-12). Its crop_and_resize maps the box's
corner pixels onto the output's corners, not torchvision's resize of the crop, and does not
antialias; the crop here is two batched matmuls with PIL's bilinear weights (a triangle filter
widened when shrinking, as PIL and torchvision's antialiased resize), so downscaling does not
alias. benchmarks/image_augment_pil.py times the whole pipeline against per-image PIL.

Legend: B images, C channels, H x W input pixels, S output side, V views, K blur taps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from selfsup.errors import ConfigError

Tensor = torch.Tensor
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as PIL's convert("L")
CROP_TRIES = 10  # torchvision's RandomResizedCrop: 10 tries, then a centre crop


def _rand(generator: torch.Generator, n: int, k: int, device, dtype=torch.float32) -> Tensor:
    """(n, k) uniforms in [0, 1) from `generator` (on its own device), moved to `device`."""
    u = torch.rand(n, k, generator=generator, device=generator.device, dtype=dtype)
    return u.to(device)


def _check_images(x: Tensor, rgb: bool = False) -> None:
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"images must be a float (B, C, H, W) tensor, got {tuple(x.shape)}")
    if rgb and x.shape[1] != 3:
        raise ValueError(f"colour ops need 3 channels (RGB), got {x.shape[1]}")


def _where_images(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """a for the images where mask (B,) holds, else b."""
    return torch.where(mask[:, None, None, None], a, b)


# ---------------------------------------------------------------- random resized crop


def sample_crop_boxes(
    generator: torch.Generator,
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    """(n, 4) long boxes (top, left, h, w), sampled as torchvision's RandomResizedCrop does
    (Inception-style crops, arXiv:1409.4842; SimCLR's default scale (0.08, 1), ratio (3/4, 4/3)):
    up to 10 tries of an area fraction uniform in `scale` and a log-uniform aspect w/h in
    `ratio`, sides rounded; the first try that fits is placed uniformly; when none fits, the
    whole image cropped to the nearest ratio in range, centred. All 10 tries are drawn for
    every image (40 float64 uniforms each)."""
    u = _rand(generator, n, CROP_TRIES * 4, "cpu", torch.float64).view(n, CROP_TRIES, 4)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = torch.round(torch.sqrt(area * aspect))  # (n, tries); round half to even, as Python
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w >= 1) & (w <= width) & (h >= 1) & (h <= height)
    first = fits.to(torch.int8).argmax(1, keepdim=True)  # the first try that fits (0 if none)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    top = torch.floor(u[..., 2].gather(1, first)[:, 0] * (height - h + 1))
    left = torch.floor(u[..., 3].gather(1, first)[:, 0] * (width - w + 1))
    # none fits: the centre crop torchvision falls back to
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(height * max(ratio)), height
    else:
        fw, fh = width, height
    fallback = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=torch.float64)
    boxes = torch.stack([top, left, h, w], 1)
    boxes = torch.where(fits.any(1, keepdim=True), boxes, fallback)
    return boxes.long()


def _resample_matrix(start: Tensor, length: Tensor, in_size: int, out_size: int) -> Tensor:
    """(n, out_size, in_size) bilinear weights taking pixels [start, start + length) of each
    row to out_size pixels, as PIL's resize with a box: output pixel o samples at
    start + (o + 0.5) * length / out_size, with a triangle filter of half-width
    max(1, length / out_size) input pixels (wider when shrinking: antialiased), restricted to
    the image and normalised (so the edges clamp)."""
    step = length.float() / out_size  # (n,) input pixels per output pixel
    support = step.clamp(min=1.0)[:, None, None]
    centre = start.float()[:, None] + (torch.arange(out_size) + 0.5) * step[:, None]  # (n, S)
    pixel = torch.arange(in_size) + 0.5
    weights = (1 - (pixel - centre[:, :, None]).abs_() / support).clamp_(min=0)  # (n, S, in)
    return weights / weights.sum(-1, keepdim=True)


def resized_crop(x: Tensor, boxes: Tensor, size: int) -> Tensor:
    """(B, C, H, W) -> (B, C, size, size): box b (top, left, h, w) of image b resized
    bilinearly (PIL's weights: antialiased when shrinking, edges clamped), as two batched
    matmuls, along W then along H."""
    _check_images(x)
    B, C, H, W = x.shape
    S = size
    top, left, h, w = boxes.cpu().unbind(1)
    rows = _resample_matrix(top, h, H, S).to(x)  # (B, S, H)
    cols = _resample_matrix(left, w, W, S).to(x)  # (B, S, W)
    y = torch.bmm(x.reshape(B, C * H, W), cols.transpose(1, 2))  # (B, C * H, S)
    y = y.view(B, C, H, S).transpose(1, 2).reshape(B, H, C * S)
    y = torch.bmm(rows, y)  # (B, S, C * S)
    return y.view(B, S, C, S).transpose(1, 2).contiguous().clamp_(0, 1)  # (B, C, S, S)


def random_resized_crop(
    x: Tensor,
    generator: torch.Generator,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    """(B, C, H, W) -> (B, C, size, size): a random box per image (sample_crop_boxes, as
    torchvision's RandomResizedCrop; SimCLR's scale (0.08, 1) and ratio (3/4, 4/3)), resized
    bilinearly (resized_crop)."""
    _check_images(x)
    B, C, H, W = x.shape
    return resized_crop(x, sample_crop_boxes(generator, B, H, W, scale, ratio), size)


# ---------------------------------------------------------------- flip, rotation


def horizontal_flip(x: Tensor, generator: torch.Generator, prob: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability `prob` (SimCLR and BYOL: 0.5)."""
    _check_images(x)
    flip = _rand(generator, x.shape[0], 1, x.device)[:, 0] < prob
    return _where_images(flip, x.flip(-1), x)


def rotate90(x: Tensor, k: Tensor) -> Tensor:
    """Rotate image b by k[b] quarter turns counter-clockwise (torch.rot90 on (H, W)), for
    the rotation pretext task (arXiv:1803.07728). Odd turns need square images."""
    _check_images(x)
    k = k.to(x.device).remainder(4)
    if x.shape[-1] != x.shape[-2] and bool((k % 2 == 1).any()):
        raise ValueError(f"odd quarter turns need square images, got {tuple(x.shape[-2:])}")
    out = torch.empty_like(x)
    for r in range(4):
        idx = (k == r).nonzero()[:, 0]
        if idx.numel():
            out[idx] = torch.rot90(x[idx], r, dims=(-2, -1))
    return out


# ---------------------------------------------------------------- colour


def to_grayscale(x: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma with the ITU-R BT.601 weights (0.299, 0.587, 0.114)."""
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b)[:, None]


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Scale image b by factor[b] (a blend with black, as PIL's ImageEnhance.Brightness)."""
    return (x * factor.to(x)[:, None, None, None]).clamp_(0, 1)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend image b with its mean luma by factor[b] (PIL's ImageEnhance.Contrast)."""
    f = factor.to(x)[:, None, None, None]
    mean = to_grayscale(x).mean((1, 2, 3), keepdim=True)
    return torch.addcmul((1 - f) * mean, f, x).clamp_(0, 1)  # f x + (1 - f) mean


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend image b with its own grayscale by factor[b] (PIL's ImageEnhance.Color)."""
    f = factor.to(x)[:, None, None, None]
    return torch.addcmul((1 - f) * to_grayscale(x), f, x).clamp_(0, 1)  # f x + (1 - f) gray


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate image b's hue by shift[b] turns (in [-0.5, 0.5]) in HSV, keeping saturation and
    value (torchvision's adjust_hue). Hue h in sixths of a turn from the largest channel; back
    to RGB as V - V S clamp(min(k, 4 - k), 0, 1) with k = (n + h) mod 6, n = 5, 3, 1 for R, G,
    B, where V S = max - min: gray pixels, whose hue is undefined, come back unchanged."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    delta = maxc - minc
    inv = 1 / delta.clamp(min=1e-12)
    h = torch.lerp(4 + (r - g) * inv, 2 + (b - r) * inv, (g == maxc).to(x.dtype))
    h = torch.lerp(h, (g - b) * inv, (r == maxc).to(x.dtype))  # red wins ties, as colorsys
    h = h + 6 * shift.to(x)[:, None, None]
    h = h - 6 * torch.floor(h * (1 / 6))  # (B, H, W) in [0, 6)
    out = torch.empty_like(x)
    for c, n in enumerate((5, 3, 1)):
        k = h + n
        k = k - 6 * torch.floor(k * (1 / 6))
        f = torch.minimum(k, 4 - k).clamp_(0, 1)
        out[:, c] = torch.addcmul(maxc, delta, f, value=-1)
    return out.clamp_(0, 1)


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(
    x: Tensor,
    generator: torch.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    hue: float = 0.1,
    prob: float = 0.8,
) -> Tensor:
    """SimCLR's colour distortion (arXiv:2002.05709, appendix A; BYOL's table 6 values are the
    defaults): with probability `prob` per image, brightness, contrast and saturation factors
    uniform in [max(0, 1 - s), 1 + s] and a hue shift uniform in [-hue, hue] turns, applied in
    a random order per image (torchvision's ColorJitter). A strength of 0 leaves that
    adjustment out (its factors are still drawn)."""
    _check_images(x, rgb=True)
    B = x.shape[0]
    u = _rand(generator, B, 9, x.device)
    apply = u[:, 0] < prob
    lo = torch.tensor([max(0.0, 1 - brightness), max(0.0, 1 - contrast),
                       max(0.0, 1 - saturation), -hue], device=x.device)  # fmt: skip
    hi = torch.tensor([1 + brightness, 1 + contrast, 1 + saturation, hue], device=x.device)
    factors = lo + (hi - lo) * u[:, 1:5]  # (B, 4)
    order = u[:, 5:9].argsort(1)  # (B, 4): image b's adjustments, first to last
    used = [brightness > 0, contrast > 0, saturation > 0, hue > 0]
    out = x.clone()
    for step in range(4):
        for op in range(4):
            if not used[op]:
                continue
            idx = (apply & (order[:, step] == op)).nonzero()[:, 0]
            if idx.numel():
                out[idx] = JITTER_OPS[op](out[idx], factors[idx, op])
    return out


def random_grayscale(x: Tensor, generator: torch.Generator, prob: float = 0.2) -> Tensor:
    """Replace each image by its luma (ITU-R BT.601), kept as 3 channels, with probability
    `prob` (SimCLR and BYOL: 0.2)."""
    _check_images(x, rgb=True)
    gray = _rand(generator, x.shape[0], 1, x.device)[:, 0] < prob
    return _where_images(gray, to_grayscale(x).expand_as(x), x)


# ---------------------------------------------------------------- blur, solarize


def blur_kernel_size(side: int) -> int:
    """The blur kernel of SimCLR (appendix A: 10% of the image side) made odd, at least 3:
    3 at 32 px, 23 at 224 px (BYOL's 23 x 23)."""
    k = int(0.1 * side)
    return max(3, k + 1 - k % 2)


def blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Gaussian blur of image b with standard deviation sigma[b] pixels, a separable
    kernel_size-tap kernel exp(-t^2 / 2 sigma^2) normalised to 1, borders reflected (torch's
    "reflect": d c b | a b c d, as torchvision's gaussian_blur)."""
    _check_images(x)
    B, C, H, W = x.shape
    pad = kernel_size // 2
    if kernel_size < 1 or kernel_size % 2 == 0 or pad >= min(H, W):
        raise ValueError(f"blur kernel_size must be odd and below the image side, got "
                         f"{kernel_size} for {H}x{W}")  # fmt: skip
    t = torch.arange(kernel_size, device=x.device, dtype=x.dtype) - pad
    kernel = torch.exp(-(t**2) / (2 * sigma.to(x)[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(C, 0)  # (B * C, K)
    y = F.pad(x.reshape(1, B * C, H, W), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, kernel[:, None, None, :], groups=B * C)  # along W
    y = F.conv2d(y, kernel[:, None, :, None], groups=B * C)  # along H
    return y.view(B, C, H, W).clamp_(0, 1)


def gaussian_blur(
    x: Tensor,
    generator: torch.Generator,
    prob: float = 0.5,
    sigma: tuple[float, float] = (0.1, 2.0),
    kernel_size: int | None = None,
) -> Tensor:
    """With probability `prob` per image, blur with sigma uniform in `sigma` pixels (SimCLR,
    appendix A: prob 0.5, sigma in [0.1, 2.0], kernel 10% of the side, blur_kernel_size;
    BYOL: prob 1.0 / 0.1 for its two views)."""
    _check_images(x)
    B, C, H, W = x.shape
    u = _rand(generator, B, 2, x.device)
    idx = (u[:, 0] < prob).nonzero()[:, 0]
    if not idx.numel():
        return x
    s = sigma[0] + (sigma[1] - sigma[0]) * u[idx, 1]
    out = x.clone()
    out[idx] = blur(x[idx], s, kernel_size or blur_kernel_size(min(H, W)))
    return out


def solarize(
    x: Tensor, generator: torch.Generator, prob: float = 0.2, threshold: float = 0.5
) -> Tensor:
    """With probability `prob` per image, v -> 1 - v for every value v >= threshold
    (BYOL, arXiv:2006.07733, table 6: prob 0 / 0.2 for its two views, threshold 0.5)."""
    _check_images(x)
    hit = (_rand(generator, x.shape[0], 1, x.device)[:, 0] < prob).nonzero()[:, 0]
    if not hit.numel():
        return x
    out, y = x.clone(), x[hit]
    out[hit] = torch.where(y >= threshold, 1 - y, y)
    return out


# ---------------------------------------------------------------- recipes and views


@dataclass(frozen=True)
class ViewRecipe:
    """One view's augmentation settings, applied in SimCLR's order: crop, flip, colour
    jitter, grayscale, blur, solarize. The defaults are BYOL's table 6 colour settings (its
    first view less the blur)."""

    size: int = 32
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    jitter_prob: float = 0.8
    gray_prob: float = 0.2
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.0

    def validate(self) -> None:
        if self.size < 1:
            raise ConfigError(f"view size must be >= 1, got {self.size}")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ConfigError(f"crop_ratio must satisfy 0 < lo <= hi, got {self.crop_ratio}")
        for name in ("flip_prob", "jitter_prob", "gray_prob", "blur_prob", "solarize_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            raise ConfigError(f"hue must be in [0, 0.5], got {self.hue}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ConfigError(f"blur_sigma must satisfy 0 < lo <= hi, got {self.blur_sigma}")


def _simclr(s: float, blur_prob: float) -> ViewRecipe:
    """SimCLR's view at colour distortion strength s: ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)
    at 0.8, grayscale 0.2 (arXiv:2002.05709, appendix A)."""
    return ViewRecipe(brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s, hue=0.2 * s,
                      blur_prob=blur_prob)  # fmt: skip


_BYOL = ViewRecipe()  # BYOL table 6: jitter 0.4/0.4/0.2/0.1 at 0.8, grayscale 0.2, flip 0.5

RECIPES: dict[str, tuple[ViewRecipe, ...]] = {
    # SimCLR on CIFAR-10 (appendix B.9 and the official command: --use_blur=False
    # --color_jitter_strength=0.5): strength 0.5 (0.4/0.4/0.4/0.1), no blur
    "simclr": (_simclr(0.5, 0.0),),
    # SimCLR on ImageNet (appendix A): strength 1.0 (0.8/0.8/0.8/0.2), blur at 0.5
    "simclr_imagenet": (_simclr(1.0, 0.5),),
    # BYOL (arXiv:2006.07733, table 6): two asymmetric views, blur 1.0 / 0.1, solarize 0 / 0.2
    "byol": (replace(_BYOL, blur_prob=1.0), replace(_BYOL, blur_prob=0.1, solarize_prob=0.2)),
    # BYOL at 32 px as solo-learn's CIFAR configs (augmentations/asymmetric.yaml): blur off
    # (at 32 px the kernel has 3 taps, and at sigma near 2 it is close to a 3 x 3 box filter,
    # a large loss of detail at that size); solarize 0 / 0.2
    "byol_cifar": (_BYOL, replace(_BYOL, solarize_prob=0.2)),
}


def view_recipes(name: str, n_views: int = 2, size: int = 32) -> tuple[ViewRecipe, ...]:
    """The preset `name` as n_views recipes of side `size`; view v is the preset's
    v % len(preset) (a symmetric preset repeats its one recipe, BYOL alternates its two)."""
    if name not in RECIPES:
        raise ConfigError(f"unknown view preset {name!r}; choose from: {', '.join(RECIPES)}")
    if n_views < 1:
        raise ConfigError(f"n_views must be >= 1, got {n_views}")
    preset = RECIPES[name]
    recipes = tuple(replace(preset[v % len(preset)], size=size) for v in range(n_views))
    for r in recipes:
        r.validate()
    return recipes


def augment(images: Tensor, generator: torch.Generator, recipe: ViewRecipe) -> Tensor:
    """(B, C, H, W) -> (B, C, S, S): one view of every image under `recipe`."""
    r = recipe
    x = random_resized_crop(images, generator, r.size, r.crop_scale, r.crop_ratio)
    x = horizontal_flip(x, generator, r.flip_prob)
    x = color_jitter(x, generator, r.brightness, r.contrast, r.saturation, r.hue, r.jitter_prob)
    x = random_grayscale(x, generator, r.gray_prob)
    x = gaussian_blur(x, generator, r.blur_prob, r.blur_sigma)
    return solarize(x, generator, r.solarize_prob)


def make_views(
    images: Tensor,
    generator: torch.Generator,
    recipes: Sequence[ViewRecipe],
    n_views: int | None = None,
) -> Tensor:
    """(B, C, H, W) -> (B, V, C, S, S): V augmented views of every image (row b holds image
    b's positives), view v under recipes[v % len(recipes)]; V = n_views, else len(recipes).
    Views are drawn one after another from `generator`."""
    V = len(recipes) if n_views is None else n_views
    if V < 1 or not recipes:
        raise ConfigError(f"make_views needs at least one recipe and view, got {V}")
    if len({recipes[v % len(recipes)].size for v in range(V)}) > 1:
        raise ConfigError("the views of one batch must share one size")
    views = [augment(images, generator, recipes[v % len(recipes)]) for v in range(V)]
    return torch.stack(views, 1)  # (B, V, C, S, S)
