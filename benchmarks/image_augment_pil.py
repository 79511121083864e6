"""Batched image augmentation (selfsup.corrupt.views.make_views) against a per-image PIL
pipeline of the same transforms, in one process, on the same images.

    python benchmarks/image_augment_pil.py --threads 1
    python benchmarks/image_augment_pil.py --recipe byol --threads 2 --write

Images: the first --n (512) training images of ../shared/data/cifar10's zip, decoded once with
Pillow (read with zipfile, no extraction); random uint8 images of 32 x 32 when the zip is absent.

- selfsup: the uint8 images as a tensor, scaled to float in [0, 1], views made by make_views
  in batches of --batch-size (256) images, drawn from one torch.Generator.
- PIL: `pil_views`, image by image and view by view, the transforms a torchvision/PIL data
  loader would run for the same recipe: the RandomResizedCrop box (the same sampling, from a
  numpy Generator) resized with Image.resize(box=..., BILINEAR), ImageOps.mirror, the
  ImageEnhance Brightness / Contrast / Color factors and a hue shift of the HSV image's H
  band, in a random order, convert("L") for grayscale, ImageFilter.GaussianBlur(sigma),
  ImageOps.solarize(128); then the views as one float tensor in [0, 1] (as ToTensor would),
  so both sides go from uint8 images to float views.

Reported: source images per second for each side (each makes V views per image; median of
--repeats, sides interleaved), their ratio, and the time of each op of make_views alone on one
(batch-size, 3, 32, 32) batch. Run with --threads 1 for the per-core comparison: PIL works on
one image at a time in one thread. The machine's load average is printed too: on a shared
machine the figures are not quiet ones.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import cpu_name, write_section  # noqa: E402

from selfsup.corrupt import views as V  # noqa: E402

CIFAR_ZIP = ROOT.parent / "shared" / "data" / "cifar10" / "cifar10-jpeg-subset.zip"


# ---------------------------------------------------------------- the PIL pipeline


def pil_box(rng: np.random.Generator, height: int, width: int, scale, ratio):
    """torchvision's RandomResizedCrop.get_params with numpy draws: (top, left, h, w)."""
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        area = height * width * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def pil_hue(img: Image.Image, shift: float) -> Image.Image:
    """Shift the hue by `shift` turns through PIL's HSV (as torchvision's PIL adjust_hue)."""
    h, s, v = img.convert("HSV").split()
    band = np.asarray(h, dtype=np.uint8) + np.uint8(round(shift * 255) % 256)  # wraps mod 256
    return Image.merge("HSV", (Image.fromarray(band, "L"), s, v)).convert("RGB")


def pil_jitter(img: Image.Image, r: V.ViewRecipe, rng: np.random.Generator) -> Image.Image:
    """ColorJitter as torchvision's: factors uniform, the four adjustments in a random order."""
    b = rng.uniform(max(0.0, 1 - r.brightness), 1 + r.brightness)
    c = rng.uniform(max(0.0, 1 - r.contrast), 1 + r.contrast)
    s = rng.uniform(max(0.0, 1 - r.saturation), 1 + r.saturation)
    h = rng.uniform(-r.hue, r.hue)
    for op in rng.permutation(4):
        if op == 0 and r.brightness > 0:
            img = ImageEnhance.Brightness(img).enhance(b)
        elif op == 1 and r.contrast > 0:
            img = ImageEnhance.Contrast(img).enhance(c)
        elif op == 2 and r.saturation > 0:
            img = ImageEnhance.Color(img).enhance(s)
        elif op == 3 and r.hue > 0:
            img = pil_hue(img, h)
    return img


def pil_view(img: Image.Image, r: V.ViewRecipe, rng: np.random.Generator) -> Image.Image:
    """One view of one image: crop, flip, jitter, grayscale, blur, solarize."""
    t, left, h, w = pil_box(rng, img.height, img.width, r.crop_scale, r.crop_ratio)
    img = img.resize((r.size, r.size), Image.BILINEAR, box=(left, t, left + w, t + h))
    if rng.random() < r.flip_prob:
        img = ImageOps.mirror(img)
    if rng.random() < r.jitter_prob:
        img = pil_jitter(img, r, rng)
    if rng.random() < r.gray_prob:
        img = img.convert("L").convert("RGB")
    if rng.random() < r.blur_prob:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(*r.blur_sigma)))
    if rng.random() < r.solarize_prob:
        img = ImageOps.solarize(img, 128)
    return img


def pil_views(
    images_uint8: np.ndarray, recipes: Sequence[V.ViewRecipe], rng: np.random.Generator
) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, V, S, S, 3) uint8: V = len(recipes) views of every image,
    view v under recipes[v], one image at a time through PIL."""
    N = len(images_uint8)
    S = recipes[0].size
    out = np.empty((N, len(recipes), S, S, 3), dtype=np.uint8)
    for i in range(N):
        img = Image.fromarray(images_uint8[i], "RGB")
        for v, r in enumerate(recipes):
            out[i, v] = np.asarray(pil_view(img, r, rng))
    return out


# ---------------------------------------------------------------- the benchmark


def load_images(n: int, path: Path = CIFAR_ZIP, seed: int = 0) -> tuple[np.ndarray, str]:
    """(n, 32, 32, 3) uint8: the first n training images of the CIFAR-10 zip, else random."""
    if not path.exists():
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), "random uint8 (no zip)"
    with zipfile.ZipFile(path) as z:
        names = sorted(m for m in z.namelist() if m.startswith("train/") and m.endswith(".jpg"))
        names = names[:: max(1, len(names) // n)][:n]  # spread over the classes
        imgs = []
        for m in names:
            img = Image.open(io.BytesIO(z.read(m))).convert("RGB")
            if img.size != (32, 32):
                img = img.resize((32, 32), Image.BILINEAR)
            imgs.append(np.asarray(img))
    return np.stack(imgs), f"{len(imgs)} CIFAR-10 training JPEGs from {path.name}"


def selfsup_side(images: np.ndarray, recipes, generator, batch_size: int) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)  # (N, 3, H, W)
    return torch.cat([V.make_views(b, generator, recipes) for b in x.split(batch_size)])


def pil_side(images: np.ndarray, recipes, rng) -> torch.Tensor:
    views = torch.from_numpy(pil_views(images, recipes, rng))  # (N, V, S, S, 3) uint8
    return views.permute(0, 1, 4, 2, 3).float().div_(255)  # (N, V, 3, S, S), as ToTensor


def op_times(batch: torch.Tensor, recipe: V.ViewRecipe, repeats: int = 10) -> dict[str, float]:
    """Milliseconds of each make_views op alone on `batch` (median of repeats), in order."""
    r, g = recipe, torch.Generator().manual_seed(0)
    crop = V.random_resized_crop(batch, g, r.size, r.crop_scale, r.crop_ratio)
    ops = {
        "crop": lambda: V.random_resized_crop(batch, g, r.size, r.crop_scale, r.crop_ratio),
        "flip": lambda: V.horizontal_flip(crop, g, r.flip_prob),
        "jitter": lambda: V.color_jitter(crop, g, r.brightness, r.contrast, r.saturation, r.hue,
                                         r.jitter_prob),
        "grayscale": lambda: V.random_grayscale(crop, g, r.gray_prob),
        "blur": lambda: V.gaussian_blur(crop, g, r.blur_prob, r.blur_sigma),
        "solarize": lambda: V.solarize(crop, g, r.solarize_prob),
        "one view (all)": lambda: V.augment(batch, g, r),
    }  # fmt: skip
    out = {}
    for name, fn in ops.items():
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[name] = 1e3 * statistics.median(times)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="simclr", choices=list(V.RECIPES))
    p.add_argument("--n-views", type=int, default=2)
    p.add_argument("--n", type=int, default=512, help="source images")
    p.add_argument("--batch-size", type=int, default=256, help="make_views batch")
    p.add_argument("--threads", type=int, default=1, help="torch threads (PIL uses one)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", type=Path, default=CIFAR_ZIP)
    p.add_argument("--write", action="store_true", help="add the table to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    about = (f"{cpu_name()}, {os.cpu_count()} cores, load average {load} (a shared machine: "
             f"not quiet), torch {torch.__version__} ({torch.get_num_threads()} threads), "
             f"Pillow {Image.__version__}")  # fmt: skip
    print(about, flush=True)
    images, source = load_images(args.n, args.data)
    recipes = V.view_recipes(args.recipe, args.n_views, images.shape[1])
    print(f"{source}; recipe {args.recipe}, {args.n_views} views", flush=True)

    g, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    selfsup_side(images[: args.batch_size], recipes, g, args.batch_size)  # warm-up
    pil_side(images[:16], recipes, rng)
    secs = {"selfsup": [], "PIL": []}
    for _ in range(args.repeats):  # interleaved, so a load change hits both sides
        t = time.perf_counter()
        ours = selfsup_side(images, recipes, g, args.batch_size)
        secs["selfsup"].append(time.perf_counter() - t)
        t = time.perf_counter()
        ref = pil_side(images, recipes, rng)
        secs["PIL"].append(time.perf_counter() - t)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    rate = {k: len(images) / statistics.median(v) for k, v in secs.items()}
    ratio = rate["selfsup"] / rate["PIL"]

    batch = torch.from_numpy(images[: args.batch_size]).permute(0, 3, 1, 2).float().div_(255)
    ops = op_times(batch, recipes[0])
    lines = [
        f"| side | images/s | views/s | ms per batch of {args.batch_size} ({args.n_views} views) |",
        "|---|---|---|---|",
    ]
    for k, r in rate.items():
        lines.append(f"| {k} | {r:.0f} | {r * args.n_views:.0f} | "
                     f"{1e3 * args.batch_size / r:.1f} |")  # fmt: skip
    lines.append(f"\nselfsup / PIL: {ratio:.1f}x\n")
    shape = f"({args.batch_size}, 3, {images.shape[1]}, {images.shape[2]})"
    lines.append(f"| make_views op, recipe {args.recipe} view 0 | ms per {shape} batch |")
    lines.append("|---|---|")
    lines += [f"| {k} | {v:.2f} |" for k, v in ops.items()]
    table = "\n".join(lines)
    print(table)
    if args.write:
        head = f"## Image augmentation: selfsup make_views vs per-image PIL (CPU: {cpu_name()})"
        write_section(head, "image_augment_pil.py", sys.argv[1:], about, table)


if __name__ == "__main__":
    main()
