"""Image data: layouts (class folders, zips, splits, CSV manifests, unlabelled), conversions and
skips counted, one-line errors, the uint8 cache and its invalidation, deterministic batches, and
the real CIFAR-10 subset zip (marked `data`, skipped when ../shared/data is absent)."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import shared
from PIL import Image

from selfsup.data import image as image_mod
from selfsup.data.image import (
    ImageBatches,
    ImageDataConfig,
    ImageNeeds,
    prepare_image_data,
    read_image_sources,
    read_images,
)
from selfsup.errors import ConfigError
from selfsup.keys import IGNORE, IMAGES, LABELS
from selfsup.seeds import Stream, seed_for

RED, GREEN, BLUE = (200, 30, 30), (30, 200, 30), (30, 30, 200)


def save(path: Path, img: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def make_pets(root: Path) -> Path:
    """cat: an 8x8 PNG, a 40x30 JPEG, an 8x8 grayscale PNG; dog: a 10x10 RGBA PNG, an 8x8
    palette GIF, a corrupt .jpg and a notes.txt; plus a hidden image and a __MACOSX folder."""
    save(root / "cat" / "a.png", Image.new("RGB", (8, 8), RED))
    save(root / "cat" / "b.jpg", Image.new("RGB", (40, 30), GREEN))
    save(root / "cat" / "c.png", Image.new("L", (8, 8), 77))
    save(root / "dog" / "d.png", Image.new("RGBA", (10, 10), (*BLUE, 0)))
    save(root / "dog" / "e.gif", Image.new("RGB", (8, 8), RED).convert("P"))
    (root / "dog" / "f.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "dog" / "notes.txt").write_text("not an image")
    save(root / "dog" / ".hidden.png", Image.new("RGB", (8, 8), RED))
    save(root / "__MACOSX" / "cat" / "._a.png", Image.new("RGB", (8, 8), RED))
    return root


def zip_folder(folder: Path, out: Path, prefix: str = "", dirs: bool = False) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for p in sorted(folder.rglob("*")):
            name = prefix + p.relative_to(folder).as_posix()
            if p.is_file():
                zf.write(p, name)
            elif dirs:
                zf.writestr(name + "/", b"")
    return out


@pytest.fixture
def pets(tmp_path) -> Path:
    return make_pets(tmp_path / "pets")


def read(path, cache: Path, logs: list | None = None, **kw):
    return read_images(path, cache_dir=cache, log=(logs.append if logs is not None else str), **kw)


def test_class_folders_labels_conversions_and_skips(pets, tmp_path):
    logs = []
    s = read(pets, tmp_path / "c", logs, image_size=16)
    assert s.classes == ["cat", "dog"]
    assert s.names == ["cat/a.png", "cat/b.jpg", "cat/c.png", "dog/d.png", "dog/e.gif"]
    assert s.labels.tolist() == [0, 0, 0, 1, 1] and s.labels.dtype == np.int64
    assert s.images.shape == (5, 16, 16, 3) and s.images.dtype == np.uint8
    st = s.stats
    assert (st["images"], st["classes"], st["skipped"], st["ignored"]) == (5, 2, 1, 1)
    assert st["converted"] == 3  # grayscale, RGBA, palette
    assert st["upsampled"] == 4  # all but the 40x30 JPEG
    assert st["per_class"] == {"cat": 3, "dog": 2}
    skip = [line for line in logs if "skipped" in line and "unreadable" in line]
    assert len(skip) == 1 and "skipped 1 " in skip[0] and "dog/f.jpg" in skip[0]
    assert (s.images[0] == RED).all()  # a solid 8x8 upsampled stays solid
    assert (s.images[2] == 77).all()  # gray v -> (v, v, v)
    assert (s.images[3] == BLUE).all()  # alpha dropped, colour kept


def test_resize_crops_the_centre(tmp_path):
    img = Image.new("RGB", (60, 30), GREEN)  # red and blue bands well outside the central 30x30
    img.paste(RED, (0, 0, 8, 30))  # (bicubic's support reaches 6 pixels past the crop at 1/3)
    img.paste(BLUE, (52, 0, 60, 30))
    save(tmp_path / "d" / "x.png", img)
    tall = Image.new("RGB", (20, 50), GREEN)
    tall.paste(RED, (0, 0, 20, 10))
    save(tmp_path / "d" / "y.png", tall)
    s = read(tmp_path / "d", tmp_path / "c", image_size=10)
    assert s.classes == [] and s.labels.tolist() == [-1, -1]
    assert np.abs(s.images.astype(int) - GREEN).max() <= 2
    assert (s.stats["upsampled"], s.stats["resized"]) == (0, 2)


def test_large_jpeg_decoded_at_reduced_scale_matches_full_decode(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (15, 20, 3)).astype(np.uint8).repeat(16, 0).repeat(16, 1)
    path = save(tmp_path / "big" / "x.jpg", Image.fromarray(pixels))  # 320 x 240: 1/4 draft
    s = read(tmp_path / "big", tmp_path / "c", image_size=32)
    full = Image.open(path).convert("RGB")  # full decode, then the same centre crop + resize
    want = np.asarray(full.resize((32, 32), Image.Resampling.BICUBIC, box=(40, 0, 280, 240)))
    assert np.abs(s.images[0].astype(int) - want).mean() < 3


def test_zip_reads_like_the_folder(pets, tmp_path):
    folder = read(pets, tmp_path / "c")
    for z in (zip_folder(pets, tmp_path / "a.zip"),
              zip_folder(pets, tmp_path / "b.zip", prefix="pets/", dirs=True)):  # fmt: skip
        s = read(z, tmp_path / "c")
        assert s.classes == folder.classes and s.labels.tolist() == folder.labels.tolist()
        assert np.array_equal(s.images, folder.images)
        assert [n.removeprefix("pets/") for n in s.names] == folder.names
        assert s.stats == folder.stats


def test_splits(tmp_path):
    root = tmp_path / "data"
    make_pets(root / "train")
    save(root / "test" / "cat" / "t.png", Image.new("RGB", (8, 8), BLUE))
    save(root / "test" / "dog" / "u.png", Image.new("RGB", (8, 8), GREEN))
    train = read(root, tmp_path / "c")
    test = read(root, tmp_path / "c", split="test")
    assert len(train.names) == 5 and train.names[0] == "train/cat/a.png"
    assert test.names == ["test/cat/t.png", "test/dog/u.png"] and test.labels.tolist() == [0, 1]
    with pytest.raises(ConfigError, match="holds the splits test, train: choose one"):
        read(root, tmp_path / "c", split=None)
    with pytest.raises(ConfigError, match="no 'val' among them"):
        read(root, tmp_path / "c", split="val")
    # a split name among class names is a class (CIFAR-100 has a class "train")
    save(tmp_path / "cls" / "train" / "a.png", Image.new("RGB", (8, 8), RED))
    save(tmp_path / "cls" / "tree" / "b.png", Image.new("RGB", (8, 8), RED))
    assert read(tmp_path / "cls", tmp_path / "c").classes == ["train", "tree"]


def test_csv_manifest(pets, tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("path,label\npets/cat/a.png,10\npets/dog/d.png,2\npets/cat/c.png,\n")
    s = read(m, tmp_path / "c")
    assert s.classes == ["2", "10"]  # integer names in numeric order
    assert s.labels.tolist() == [1, 0, -1] and s.names[0] == "pets/cat/a.png"
    assert (s.images[1] == BLUE).all()
    m.write_text("path\npets/cat/a.png\n")
    assert read(m, tmp_path / "c").classes == []
    m.write_text("file,label\npets/cat/a.png,x\n")
    with pytest.raises(ConfigError, match="no 'path' column"):
        read(m, tmp_path / "c")
    m.write_text("path,label\npets/cat/a.png,x\npets/cat/missing.png,x\n")
    with pytest.raises(ConfigError, match=r"line 3: .*missing.png does not exist"):
        read(m, tmp_path / "c")


def one_line_error(fn, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        fn()
    assert says in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_bad_sources_are_one_line_errors(pets, tmp_path):
    c = tmp_path / "c"
    one_line_error(lambda: read(tmp_path / "nowhere", c), "does not exist")
    (pets / "bird").mkdir()
    one_line_error(lambda: read(pets, c), "class folder bird/ in")
    (pets / "bird" / "readme.txt").write_text("still no images")
    one_line_error(lambda: read(pets, c), "bird/ in")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    one_line_error(lambda: read(tmp_path / "texts", c), "no images")
    save(tmp_path / "mixed" / "a.png", Image.new("RGB", (8, 8), RED))
    save(tmp_path / "mixed" / "k" / "b.png", Image.new("RGB", (8, 8), RED))
    one_line_error(lambda: read(tmp_path / "mixed", c), "mixes images")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    one_line_error(lambda: read(tmp_path / "bad.zip", c), "cannot read zip")
    one_line_error(lambda: read(tmp_path / "texts" / "a.txt", c), "neither a folder")
    (tmp_path / "broken" / "k").mkdir(parents=True)
    (tmp_path / "broken" / "k" / "a.png").write_bytes(b"garbage")
    one_line_error(lambda: read(tmp_path / "broken", c), "none of the 1 images")
    one_line_error(lambda: read(pets, c, image_size=0), "image_size")
    assert not any(p.name.startswith(".tmp") for p in (c / "images").glob("*"))


def test_cache_hit_and_invalidation(pets, tmp_path):
    logs = []
    first = read(pets, tmp_path / "c", logs)
    again = read(pets, tmp_path / "c", logs)
    assert "using cached" in logs[-1] and not again.images.flags.writeable
    assert np.array_equal(first.images, again.images) and first.names == again.names
    assert first.labels.tolist() == again.labels.tolist() and first.stats == again.stats
    save(pets / "cat" / "a.png", Image.new("RGB", (8, 8), BLUE))  # same size, new content
    os.utime(pets / "cat" / "a.png", ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = read(pets, tmp_path / "c", logs)
    assert "decoded" in logs[-2] and (changed.images[0] == BLUE).all()
    assert len(list((tmp_path / "c" / "images").iterdir())) == 2
    assert read(pets, tmp_path / "c", split="test").names == first.names  # no splits: ignored
    assert read(pets, tmp_path / "c", image_size=8).images.shape[1:] == (8, 8, 3)


def test_interrupted_build_leaves_no_entry(pets, tmp_path, monkeypatch):
    calls = []

    def interrupted(data, size):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(data, size)

    real = image_mod._decode
    monkeypatch.setattr(image_mod, "_decode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        read(pets, tmp_path / "c")
    assert list((tmp_path / "c" / "images").iterdir()) == []
    monkeypatch.setattr(image_mod, "_decode", real)
    assert read(pets, tmp_path / "c").stats["images"] == 5


def test_read_image_sources_merges_classes(pets, tmp_path):
    save(tmp_path / "more" / "dog" / "x.png", Image.new("RGB", (8, 8), GREEN))
    save(tmp_path / "more" / "fish" / "y.png", Image.new("RGB", (8, 8), BLUE))
    cfg = ImageDataConfig(paths=[str(pets), str(tmp_path / "more")], image_size=8,
                          cache_dir=str(tmp_path / "c"))  # fmt: skip
    s = read_image_sources(cfg, log=str)
    assert s.classes == ["cat", "dog", "fish"]
    assert s.labels.tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert s.names[-1] == f"{tmp_path / 'more'}/fish/y.png" and s.images.shape == (7, 8, 8, 3)
    assert s.stats["per_class"] == {"cat": 3, "dog": 3, "fish": 1} and s.stats["images"] == 7
    one_line_error(lambda: read_image_sources(ImageDataConfig()), "needs --data")
    one_line_error(lambda: ImageDataConfig(heldout_every=0).validate(None), "heldout_every")


def noisy(batch: dict, g: torch.Generator) -> dict:
    """A corruption that shows its generator: adds noise drawn from it."""
    return {**batch, IMAGES: batch[IMAGES] + torch.rand(batch[IMAGES].shape, generator=g)}


def toy(n: int = 24, side: int = 4) -> tuple[np.ndarray, np.ndarray]:
    images = (np.arange(n * side * side * 3) % 251).astype(np.uint8).reshape(n, side, side, 3)
    images[:, 0, 0, 0] = np.arange(n)  # each image's index in a pixel
    return images, np.arange(n) % 3 - 1  # labels -1, 0, 1, ...


def test_batches_deterministic_and_cover_each_epoch():
    images, labels = toy()
    ids = np.arange(2, 22)  # 20 images, batches of 5: 4 per epoch
    a = ImageBatches(images, ids, 5, seed=7, labels=labels)
    b = ImageBatches(images, ids, 5, seed=7, labels=labels)
    assert len(a) == 4
    for k in (5, 0, 3, 9, 4):  # out of order, across epochs: pure functions of k
        x, y = a[k], b[k]
        assert torch.equal(x[IMAGES], y[IMAGES]) and torch.equal(x[LABELS], y[LABELS])
    batch = a[0]
    assert batch[IMAGES].shape == (5, 3, 4, 4) and batch[IMAGES].dtype == torch.float32
    assert 0.0 <= batch[IMAGES].min() and batch[IMAGES].max() <= 1.0
    rows = a.rows(0)
    assert torch.equal(batch[IMAGES], torch.from_numpy(images[rows]).permute(0, 3, 1, 2) / 255)
    want = torch.tensor(labels[rows]).masked_fill(torch.tensor(labels[rows]) < 0, IGNORE)
    assert torch.equal(batch[LABELS], want) and (batch[LABELS] == IGNORE).any()
    epochs = [np.concatenate([a.rows(e * 4 + j) for j in range(4)]) for e in range(2)]
    assert sorted(epochs[0].tolist()) == ids.tolist() == sorted(epochs[1].tolist())
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(ImageBatches(images, ids, 5, seed=8).rows(0), rows)
    assert LABELS not in ImageBatches(images, ids, 5, seed=7)[0]
    with pytest.raises(ConfigError, match="make no batch of 32"):
        ImageBatches(images, ids, 32, seed=7)


def test_unshuffled_batches_in_order_last_partial():
    images, _ = toy()
    held = ImageBatches(images, np.arange(0, 24, 2), 5, seed=1, shuffle=False)
    assert len(held) == 3
    assert [held.rows(k).tolist() for k in range(3)] == [[0, 2, 4, 6, 8], [10, 12, 14, 16, 18],
                                                         [20, 22]]  # fmt: skip
    with pytest.raises(IndexError):
        held[3]


def test_corrupt_gets_a_generator_seeded_by_k():
    images, _ = toy()
    seen = []

    def spy(batch, g):
        seen.append(g.initial_seed())
        return noisy(batch, g)

    a = ImageBatches(images, np.arange(24), 6, seed=3, corrupt=spy)
    b = ImageBatches(images, np.arange(24), 6, seed=3, corrupt=noisy)
    assert torch.equal(a[6][IMAGES], b[6][IMAGES])  # same k, same draws
    a[2]
    assert seen == [seed_for(3, Stream.CORRUPT, 6), seed_for(3, Stream.CORRUPT, 2)]
    clean = ImageBatches(images, np.arange(24), 6, seed=3)
    assert not torch.equal(a[6][IMAGES] - clean[6][IMAGES], b[2][IMAGES] - clean[2][IMAGES])


def test_prepare_image_data_holds_out_fixed_eval_batches():
    images, labels = toy(n=40)
    data = image_mod.ImageSet(images, labels, ["a", "b"], list(map(str, range(40))), {"images": 40})
    cfg = ImageDataConfig(heldout_every=4, heldout_max=9)
    plain = prepare_image_data(cfg, data, 4, seed=0, needs=ImageNeeds(), heldout_seed=99)
    index = torch.cat([e[IMAGES][:, 0, 0, 0] for e in plain.eval_batches]) * 255
    assert index.round().long().tolist() == list(range(0, 36, 4))  # the held-out images
    assert [len(e[IMAGES]) for e in plain.eval_batches] == [3, 3, 3]  # 9 as 3 x 3, not 4 + 4 + 1
    assert not set(plain.batches.ids.tolist()) & set(range(0, 36, 4))
    st = plain.stats
    assert (st["heldout_images"], st["train_images"], st["batches_per_epoch"]) == (9, 31, 7)
    needs = ImageNeeds(corrupt=noisy)
    one = prepare_image_data(cfg, data, 4, seed=0, needs=needs, heldout_seed=99)
    two = prepare_image_data(cfg, data, 4, seed=5, needs=needs, heldout_seed=99)
    other = prepare_image_data(cfg, data, 4, seed=0, needs=needs, heldout_seed=100)
    for e1, e2 in zip(one.eval_batches, two.eval_batches, strict=True):
        assert torch.equal(e1[IMAGES], e2[IMAGES]) and torch.equal(e1[LABELS], e2[LABELS])
    assert not torch.equal(one.eval_batches[0][IMAGES], other.eval_batches[0][IMAGES])
    assert not torch.equal(one.eval_batches[0][IMAGES], plain.eval_batches[0][IMAGES])


# --------------------------------------------------------------------- the real CIFAR-10 zip
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]  # fmt: skip


@pytest.mark.data
def test_cifar10_zip(tmp_path):
    z = shared("cifar10") / "cifar10-jpeg-subset.zip"
    train = read_images(z, "train", 32, tmp_path, log=str)
    test = read_images(z, "test", 32, tmp_path, log=str)
    assert (len(train.names), len(test.names)) == (20000, 10000)
    assert train.classes == CIFAR_CLASSES == test.classes
    assert train.images.shape == (20000, 32, 32, 3) and test.images.shape == (10000, 32, 32, 3)
    assert np.bincount(train.labels).tolist() == [2000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert train.stats["skipped"] == train.stats["converted"] == train.stats["resized"] == 0
    with zipfile.ZipFile(z) as zf:
        for s, i in ((train, 0), (train, 12345), (train, 19999), (test, 7)):
            name = s.names[i]
            assert name.split("/")[:2] == [("train" if s is train else "test"),
                                           CIFAR_CLASSES[s.labels[i]]]  # fmt: skip
            want = np.asarray(Image.open(zf.open(name)).convert("RGB"))
            assert np.array_equal(s.images[i], want), name
