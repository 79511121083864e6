"""Image data: list a folder of class sub-folders (ImageFolder's layout), a zip of the same, a
CSV manifest or an unlabelled folder; decode every image once with Pillow into one uint8 array
of image_size x image_size (cached on disk, keyed by the files and settings, so a second run
starts at once); and serve batch k of a run as a pure function of (seed, k), so a resumed run
sees the batches an uninterrupted one would.

Layouts of a folder or zip (names are '/'-separated paths inside it, sorted):
    <class>/**/<image>              labelled: label = index of the class in the sorted names
    <image>                         unlabelled: labels -1, classes []
    {train,test,val,...}/<either>   splits (every top folder a split name): `split` picks one
    <wrapper>/<any of these>        a single wrapping folder (a zipped folder) is looked through
Hidden files and folders and __MACOSX are ignored, and files without an image suffix are
counted as `ignored`. A CSV manifest has a header row with `path` (relative to the CSV) and an
optional `label` column; its rows keep their order.

Each image is converted to RGB (grayscale, RGBA, palette: counted as `converted`), its central
square resized to image_size with bicubic filtering (resize the shorter side, centre crop; a
smaller image is upsampled and counted). A file Pillow cannot decode is skipped and counted.

Legend: N images, B batch, H = W = image_size.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
import warnings
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from selfsup.data.cache import build_once, cache_key, default_cache_dir
from selfsup.data.text import split_chunks
from selfsup.errors import ConfigError
from selfsup.keys import IGNORE, IMAGES, LABELS
from selfsup.seeds import Stream, seed_for

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLIT_NAMES = ("train", "test", "val", "valid", "validation", "dev")
CACHE_FORMAT = "images-v1"  # raise whenever what a cache entry stores changes
FLAGS = ("converted", "upsampled", "resized")  # what _decode reports of each image


@dataclass
class ImageDataConfig:
    """The `data` section of an image run: where the images are and the side they are kept at."""

    paths: list[str] = field(default_factory=list)  # folders, .zip of the same, CSV manifests
    split: str | None = "train"  # a source of split folders (train/, test/ ...): read this one
    image_size: int = 32  # every image stored as image_size x image_size
    heldout_every: int = 50  # every Nth image (in source order) held out for eval batches
    heldout_max: int = 512
    num_workers: int = 0  # DataLoader workers of the training batches (decoding is cached)
    cache_dir: str | None = None  # None: selfsup.data.cache.default_cache_dir()

    def validate(self, model=None) -> None:
        """A ConfigError on the first bad value. `model` (the encoder config) constrains
        nothing here: views are resized by their recipe and the encoders check their input."""
        size = self.image_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"data.image_size must be a positive integer, got {size!r}")
        if self.heldout_every < 1 or self.heldout_max < 0 or self.num_workers < 0:
            raise ConfigError("data.heldout_every must be >= 1, heldout_max and num_workers >= 0")
        if self.split is not None and (not isinstance(self.split, str) or not self.split):
            raise ConfigError(f"data.split must be a folder name or None, got {self.split!r}")


@dataclass
class ImageSet:
    images: np.ndarray  # (N, H, W, 3) uint8 (read-only when it comes from the cache)
    labels: np.ndarray  # (N,) int64, -1 where unlabelled
    classes: list[str]  # label index -> class name
    names: list[str]  # each image's path inside its source
    stats: dict  # images, classes, skipped, converted, upsampled, resized, ignored, per_class


@dataclass
class _Listing:
    """A source before decoding: (name, label) of each image, the class names, the files whose
    (path, size, mtime) key the cache, and how to read a name's bytes."""

    items: list[tuple[str, int]]
    classes: list[str]
    stamps: list[Path]
    read: Callable[[str], bytes]
    ignored: int = 0


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _hidden(name: str) -> bool:
    return name.startswith(".") or "/." in name or "__MACOSX" in name.split("/")


def _layout(source: Path, files: list[str], dirs: set[str], split: str | None):
    """(items, classes, ignored) of a folder's or zip's file and folder names (see the module
    docstring); a one-line ConfigError for no images, a missing split or an empty class."""
    files = sorted(f for f in files if not _hidden(f))
    images = [f for f in files if f.lower().endswith(IMAGE_SUFFIXES)]
    dirs = {d for d in dirs if not _hidden(d)}
    for f in files:  # folders a zip implies without listing them
        parts = f.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))

    def below(prefix: str) -> tuple[list[str], list[str]]:  # (sub-folders, images directly in)
        subs = sorted(d[len(prefix) :] for d in dirs if d.startswith(prefix) and d != prefix
                      and "/" not in d[len(prefix) :])  # fmt: skip
        return subs, [f for f in images if f.startswith(prefix) and "/" not in f[len(prefix) :]]

    prefix = ""
    subs, tops = below(prefix)
    while len(subs) == 1 and not tops and subs[0] not in SPLIT_NAMES and below(subs[0] + "/")[0]:
        prefix += subs[0] + "/"  # a wrapping folder
        subs, tops = below(prefix)
    if subs and not tops and all(s in SPLIT_NAMES for s in subs):
        if split is None or split not in subs:
            said = "choose one with data.split" if split is None else f"no {split!r} among them"
            raise ConfigError(f"{source} holds the splits {', '.join(subs)}: {said}")
        prefix += split + "/"
        subs, tops = below(prefix)
    where = f"{source}" + (f" ({prefix.rstrip('/')})" if prefix else "")
    inner = [f for f in images if f.startswith(prefix)]
    if not inner:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {where}")
    if not subs:  # unlabelled
        return [(f, -1) for f in inner], [], len(files) - len(images)
    if tops:
        raise ConfigError(f"{where} mixes images ({tops[0]}) with class folders ({subs[0]}/): "
                          "put every image in a class folder, or none")  # fmt: skip
    groups = defaultdict(list)
    for f in inner:
        groups[f[len(prefix) :].split("/", 1)[0]].append(f)
    empty = [c for c in subs if not groups[c]]
    if empty:
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise ConfigError(f"class folder {prefix}{empty[0]}/ in {source} holds no images{more}")
    items = [(f, label) for label, c in enumerate(subs) for f in groups[c]]
    return items, subs, len(files) - len(images)


def _walk(root: Path) -> tuple[list[str], set[str]]:
    files, dirs = [], set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"]
        rel = Path(dirpath).relative_to(root).as_posix()
        pre = "" if rel == "." else rel + "/"
        if pre:
            dirs.add(rel)
        files += [pre + f for f in filenames]
    return files, dirs


def _sorted_labels(labels: set[str]) -> list[str]:
    """Class names in order: numerically when every name is an integer ("2" before "10")."""
    if all(s.lstrip("-").isdigit() for s in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _manifest(path: Path) -> _Listing:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        reader.fieldnames = [c.strip() for c in reader.fieldnames or []]
        if "path" not in reader.fieldnames:
            raise ConfigError(f"manifest {path} has no 'path' column in its header row "
                              f"(columns: {', '.join(reader.fieldnames) or 'none'})")  # fmt: skip
        rows, files = [], {}
        for row in reader:
            name = (row.get("path") or "").strip()
            if not name:
                raise ConfigError(f"manifest {path}, line {reader.line_num}: empty 'path'")
            file = path.parent / Path(name).expanduser()  # an absolute name stays itself
            if not file.is_file():
                raise ConfigError(f"manifest {path}, line {reader.line_num}: {file} does not exist")
            rows.append((name, (row.get("label") or "").strip()))
            files[name] = file
    if not rows:
        raise ConfigError(f"manifest {path} lists no images")
    classes = _sorted_labels({label for _, label in rows if label})
    index = {c: i for i, c in enumerate(classes)}
    items = [(name, index.get(label, -1)) for name, label in rows]
    return _Listing(items, classes, [path, *files.values()], lambda n: files[n].read_bytes())


def _decode(data: bytes, size: int) -> tuple[np.ndarray, bool, bool, bool]:
    """(size, size, 3) uint8 of an encoded image, and whether it was converted to RGB,
    upsampled, resized. A JPEG much larger than `size` is decoded at 1/2, 1/4 or 1/8 scale
    (libjpeg's DCT scaling via Pillow's draft, never below `size`), several times faster."""
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        drafted = im.draft(None, (size, size))  # (mode, box of the whole image at that scale)
        if drafted is not None:
            w, h = drafted[1][2:]
        im.load()
        converted = im.mode != "RGB"
        rgb = im.convert("RGB") if converted else im
        m, resized = min(w, h), rgb.size != (size, size)
        if resized:  # the central m x m square, resized: the shorter side resized, centre crop
            box = ((w - m) / 2, (h - m) / 2, (w + m) / 2, (h + m) / 2)
            rgb = rgb.resize((size, size), Image.Resampling.BICUBIC, box=box)
        return np.asarray(rgb), converted, m < size, resized


def _decode_all(listing: _Listing, size: int, source: Path, log):
    """(N, size, size, 3) uint8 of every readable image, which items they are (a mask), and
    the counts of skipped, converted, upsampled and resized images."""
    out = np.empty((len(listing.items), size, size, 3), dtype=np.uint8)
    keep = np.zeros(len(listing.items), dtype=bool)
    counts, first_bad = Counter(), ""
    with warnings.catch_warnings():  # palette transparency, large images: handled, not news
        warnings.simplefilter("ignore")
        for i, (name, _) in enumerate(listing.items):
            try:
                out[i], *flags = _decode(listing.read(name), size)
            except Exception as e:  # any failure of any decoder on a bad file: a skip
                counts["skipped"] += 1
                first_bad = first_bad or f"{name}: {_one_line(e)}"
                continue
            keep[i] = True
            counts.update(k for k, f in zip(FLAGS, flags, strict=True) if f)
    if counts["skipped"]:
        log(f"images: skipped {counts['skipped']} unreadable files in {source} "
            f"(first: {first_bad})")  # fmt: skip
    if not keep.any():
        raise ConfigError(f"none of the {len(keep)} images in {source} could be read "
                          f"(first: {first_bad})")  # fmt: skip
    return out[keep], keep, counts


def _list_source(src: Path, split: str | None, stack: ExitStack) -> _Listing:
    """The listing of a folder, zip or CSV manifest (a zip stays open until `stack` closes)."""
    if not src.exists():
        raise ConfigError(f"image source {src} does not exist")
    if src.is_dir():
        items, classes, ignored = _layout(src, *_walk(src), split)
        stamps = [src / name for name, _ in items]
        return _Listing(items, classes, stamps, lambda n: (src / n).read_bytes(), ignored)
    if src.suffix.lower() == ".csv":
        return _manifest(src)
    if src.suffix.lower() != ".zip":
        raise ConfigError(f"image source {src} is neither a folder, a .zip nor a .csv manifest")
    try:
        zf = stack.enter_context(zipfile.ZipFile(src))
    except (zipfile.BadZipFile, OSError) as e:
        raise ConfigError(f"cannot read zip {src}: {_one_line(e)}") from None
    names = zf.namelist()
    files = [n for n in names if not n.endswith("/")]
    dirs = {n.rstrip("/") for n in names if n.endswith("/")}
    items, classes, ignored = _layout(src, files, dirs, split)
    return _Listing(items, classes, [src], zf.read, ignored)


def _build(listing: _Listing, size: int, src: Path, split, log, tmp: Path) -> None:
    """Decode `listing` into the cache entry being built in `tmp`: images.npy, then meta.json."""
    t0 = time.perf_counter()
    images, keep, counts = _decode_all(listing, size, src, log)
    items = [it for it, k in zip(listing.items, keep, strict=True) if k]
    labels = [label for _, label in items]
    per_class = Counter(labels)
    for i, c in enumerate(listing.classes):
        if not per_class[i]:
            raise ConfigError(f"class {c!r} of {src}: none of its images could be read")
    stats = {"images": len(items), "classes": len(listing.classes),
             **{k: counts[k] for k in ("skipped", "converted", "upsampled", "resized")},
             "ignored": listing.ignored,
             "per_class": {c: per_class[i] for i, c in enumerate(listing.classes)}}  # fmt: skip
    np.save(tmp / "images.npy", images, allow_pickle=False)
    meta = {"format": CACHE_FORMAT, "source": str(src), "split": split, "image_size": size,
            "labels": labels, "classes": listing.classes, "names": [n for n, _ in items],
            "stats": stats}  # fmt: skip
    (tmp / "meta.json").write_text(json.dumps(meta))  # written last: the entry's "ready" file
    log(f"images: decoded {_counts_note(stats)} of {size} px from {src} in "
        f"{time.perf_counter() - t0:.1f} s")  # fmt: skip


def read_images(
    path: str | Path,
    split: str | None = "train",
    image_size: int = 32,
    cache_dir: str | Path | None = None,
    log=print,
) -> ImageSet:
    """The images of one source (see the module docstring), decoded once into the cache entry
    `cache_dir / "images" / key` (images.npy, memory-mapped read-only, never pickled, and
    meta.json: labels, classes, names, stats), the key covering the source's files (path,
    size, mtime), `split`, `image_size` and CACHE_FORMAT. The entry is built in a temporary
    folder renamed into place (cache.build_once): an interrupted run leaves no half entry.
    Bad sources are a one-line ConfigError; unreadable files a counted skip."""
    ImageDataConfig(image_size=image_size, split=split).validate()
    src = Path(path).expanduser()
    with ExitStack() as stack:
        # a zip's stamp is its own: a cached entry is found without listing its members
        is_zip = src.is_file() and src.suffix.lower() == ".zip"
        listing = None if is_zip else _list_source(src, split, stack)
        stamps = [src] if is_zip else listing.stamps
        key = cache_key(stamps, f"split={split!r}", f"size={image_size}", CACHE_FORMAT)
        folder = Path(cache_dir or default_cache_dir()) / "images" / key

        def build(tmp: Path) -> None:
            _build(listing or _list_source(src, split, stack), image_size, src, split, log, tmp)

        reused = build_once(folder, build, "meta.json")
    images = np.load(folder / "images.npy", mmap_mode="r", allow_pickle=False)
    meta = json.loads((folder / "meta.json").read_text())
    if images.shape[1:] != (image_size, image_size, 3) or len(images) != len(meta["labels"]):
        raise ConfigError(f"cache entry {folder} does not fit these settings; delete it")
    log(f"images: {'using cached' if reused else 'cached'} images in {folder}"
        + (f" ({_counts_note(meta['stats'])})" if reused else ""))  # fmt: skip
    labels = np.asarray(meta["labels"], dtype=np.int64)
    return ImageSet(np.asarray(images), labels, meta["classes"], meta["names"], meta["stats"])


def _counts_note(stats: dict) -> str:
    notes = [f"{stats['images']:,} images", f"{stats['classes']} classes"]
    notes += [f"{stats[k]} {k}" for k in ("converted", "upsampled", "skipped", "ignored")
              if stats[k]]  # fmt: skip
    return ", ".join(notes)


def read_image_sources(cfg: ImageDataConfig, log=print) -> ImageSet:
    """Every source of cfg.paths read (read_images) and concatenated in order; classes merged
    by name (sorted), names prefixed with their source when there are several."""
    if not cfg.paths:
        raise ConfigError("image pretraining needs --data: folders, zips or CSV manifests")
    cfg.validate()
    sets = [read_images(p, cfg.split, cfg.image_size, cfg.cache_dir, log) for p in cfg.paths]
    if len(sets) == 1:
        return sets[0]
    classes = _sorted_labels({c for s in sets for c in s.classes})
    index = {c: i for i, c in enumerate(classes)}
    labels = []
    for s in sets:  # each source's label indices -> the merged ones (-1 stays -1)
        remap = np.array([index[c] for c in s.classes] + [-1], dtype=np.int64)
        labels.append(remap[s.labels])
    stats = {k: sum(s.stats[k] for s in sets) for k in sets[0].stats if k != "per_class"}
    stats["classes"] = len(classes)
    stats["per_class"] = {c: sum(s.stats["per_class"].get(c, 0) for s in sets) for c in classes}
    names = [f"{p}/{n}" for p, s in zip(cfg.paths, sets, strict=True) for n in s.names]
    images = np.concatenate([s.images for s in sets])
    return ImageSet(images, np.concatenate(labels), classes, names, stats)


@dataclass(frozen=True)
class ImageNeeds:
    """What an objective asks of the image pipeline: a corruption (batch, generator) -> batch
    applied to each collated batch of {IMAGES[, LABELS]} (views, rotations, patches)."""

    corrupt: Callable[[dict, torch.Generator], dict] | None = None


class ImageBatches(torch.utils.data.Dataset):
    """Batch k of `batch_size` of the images `ids`: {IMAGES (B, 3, H, W) float32 in [0, 1]}
    plus LABELS (B,) long (IGNORE where -1) when `labels` is given, then corrupted with a
    generator seeded by (seed, k). Shuffled: epoch e's order a permutation seeded by (seed, e),
    cut into full batches (the rest wait for another epoch's order); not shuffled: `ids` in
    order, the last batch partial. Every tensor has examples first (RankShard cuts rows)."""

    def __init__(
        self,
        images: np.ndarray,
        ids: np.ndarray,
        batch_size: int,
        seed: int,
        corrupt: Callable[[dict, torch.Generator], dict] | None = None,
        shuffle: bool = True,
        labels: np.ndarray | None = None,
    ):
        self.images, self.ids, self.batch_size = images, np.asarray(ids, dtype=np.int64), batch_size
        self.seed, self.corrupt, self.shuffle = seed, corrupt, shuffle
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if shuffle and len(self.ids) < batch_size:
            raise ConfigError(f"{len(self.ids)} training images make no batch of {batch_size}: "
                              "use a smaller --batch-size or more data")  # fmt: skip
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, its permutation of ids)

    def __len__(self) -> int:  # batches per epoch
        if self.shuffle:
            return len(self.ids) // self.batch_size
        return -(-len(self.ids) // self.batch_size)

    def rows(self, k: int) -> np.ndarray:
        """The image indices of batch k, in batch order."""
        B = self.batch_size
        if not self.shuffle:
            if not 0 <= k < len(self):
                raise IndexError(f"batch {k} of {len(self)}")
            return self.ids[k * B : (k + 1) * B]
        epoch, j = divmod(k, len(self))
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng(seed_for(self.seed, Stream.EPOCH_ORDER, epoch))
            self._order = (epoch, self.ids[rng.permutation(len(self.ids))])
        return self._order[1][j * B : (j + 1) * B]

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        rows = self.rows(k)
        x = torch.from_numpy(np.ascontiguousarray(self.images[rows].transpose(0, 3, 1, 2)))
        batch = {IMAGES: x.float().div_(255.0)}  # (B, 3, H, W)
        if self.labels is not None:
            y = torch.from_numpy(self.labels[rows])
            batch[LABELS] = y.masked_fill_(y < 0, IGNORE)  # (B,)
        if self.corrupt is not None:
            g = torch.Generator().manual_seed(seed_for(self.seed, Stream.CORRUPT, k))
            batch = self.corrupt(batch, g)
        return batch


@dataclass
class ImageData:
    batches: ImageBatches
    eval_batches: list[dict]
    stats: dict


def prepare_image_data(
    cfg: ImageDataConfig,
    data: ImageSet,
    batch_size: int,
    seed: int,
    needs: ImageNeeds,
    heldout_seed: int,
) -> ImageData:
    """Training batches over `data` less every heldout_every-th image (at most heldout_max held
    out), and the held-out images as fixed eval batches corrupted with `heldout_seed`: as few
    batches of at most batch_size as hold them, of near-equal size (no batch of one image,
    which batch-level losses cannot score). Labels travel with the batches when the data has
    classes."""
    train_ids, held_ids = split_chunks(len(data.images), cfg.heldout_every, cfg.heldout_max)
    labels = data.labels if data.classes else None
    batches = ImageBatches(data.images, train_ids, batch_size, seed, needs.corrupt, labels=labels)
    eval_batches = []
    if len(held_ids):
        n_batches = -(-len(held_ids) // batch_size)
        size = -(-len(held_ids) // n_batches)
        held = ImageBatches(data.images, held_ids, size, heldout_seed, needs.corrupt,
                            shuffle=False, labels=labels)  # fmt: skip
        eval_batches = [held[k] for k in range(len(held))]
    stats = {**data.stats, "train_images": int(len(train_ids)),
             "heldout_images": int(len(held_ids)), "batches_per_epoch": len(batches)}  # fmt: skip
    return ImageData(batches, eval_batches, stats)
