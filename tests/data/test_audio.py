"""Speech data: reading audio (resampling, mixdown, bad files), listing corpora from folders and
manifests, and batching frames (crops, padding mask, length buckets). Audio is synthesized into
tmp_path; the real corpora in ../shared/data are only listed (marked `data`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import shared

from selfsup.data.audio import (
    AudioItem,
    collate_frames,
    crop,
    length_buckets,
    list_audio,
    load_audio,
    parse_name,
    read_audio,
)
from selfsup.errors import ConfigError
from selfsup.keys import FEATURES, PADDING_MASK


def sine(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path, wave, rate=8000, subtype=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, rate, subtype=subtype)
    return path


def peak_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.argmax(spectrum) * rate / len(wave))


def one_line_error(excinfo, *parts: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    for part in parts:
        assert part in msg
    return msg


# reading


def test_reads_at_the_files_rate(tmp_path):
    wave = sine(440, 0.5, 8000)
    path = write(tmp_path / "a.wav", wave, subtype="FLOAT")
    got = read_audio(path, 8000)
    assert got.dtype == np.float32 and got.ndim == 1
    np.testing.assert_array_equal(got, wave)
    assert load_audio(path)[1] == 8000


def test_resamples_8k_to_16k_keeping_the_frequency(tmp_path):
    wave = sine(440, 1.0, 8000)
    path = write(tmp_path / "a.wav", wave)  # PCM_16
    up = read_audio(path, 16000)
    assert up.dtype == np.float32 and len(up) == 2 * len(wave)
    assert peak_hz(wave, 8000) == pytest.approx(440, abs=1)
    assert peak_hz(up, 16000) == pytest.approx(440, abs=1)
    # nothing above the old Nyquist appears, and the level is kept
    spectrum = np.abs(np.fft.rfft(up))
    assert spectrum[4100:].max() < 1e-3 * spectrum.max()
    assert np.sqrt(np.mean(up[1000:-1000] ** 2)) == pytest.approx(0.5 / math.sqrt(2), rel=0.01)
    down = read_audio(write(tmp_path / "b.wav", sine(1000, 1.0, 16000), 16000), 8000)
    assert len(down) == 8000 and peak_hz(down, 8000) == pytest.approx(1000, abs=1)


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = sine(300, 0.25, 16000), sine(700, 0.25, 16000, amp=0.25)
    path = write(tmp_path / "st.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    assert sf.info(path).channels == 2
    got = read_audio(path, 16000)
    assert got.shape == left.shape
    np.testing.assert_allclose(got, (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize("suffix", [".flac", ".ogg"])
def test_flac_and_ogg(tmp_path, suffix):
    wave = sine(500, 0.5, 16000)
    got = read_audio(write(tmp_path / f"a{suffix}", wave, 16000), 16000)
    assert got.dtype == np.float32 and got.ndim == 1
    if suffix == ".flac":  # lossless (16-bit)
        np.testing.assert_allclose(got, wave, atol=1 / 32768)
    else:  # lossy: same length and pitch
        assert abs(len(got) - len(wave)) < 100 and peak_hz(got, 16000) == pytest.approx(500, abs=3)


def test_bad_files_are_one_line_config_errors(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    with pytest.raises(ConfigError) as e:
        read_audio(text, 16000)
    one_line_error(e, "notes.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ConfigError) as e:
        read_audio(empty, 16000)
    one_line_error(e, "empty.wav")
    no_samples = write(tmp_path / "zero.wav", np.zeros(0, np.float32))
    with pytest.raises(ConfigError) as e:
        read_audio(no_samples, 16000)
    one_line_error(e, "zero.wav", "no samples")
    with pytest.raises(ConfigError) as e:
        read_audio(tmp_path / "missing.wav", 16000)
    one_line_error(e, "missing.wav", "does not exist")
    with pytest.raises(ConfigError):
        read_audio(tmp_path, 16000)  # a folder


def test_truncated_files(tmp_path):
    wave = sine(440, 1.0, 8000)
    full = write(tmp_path / "full.wav", wave).read_bytes()
    # a wav cut inside its samples: libsndfile reads the samples that are there
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full[: len(full) // 2])
    got = read_audio(cut, 8000)
    assert 0 < len(got) < len(wave)
    np.testing.assert_allclose(got, wave[: len(got)], atol=1 / 32768)
    # cut inside the header: an error naming the file
    head = tmp_path / "head.wav"
    head.write_bytes(full[:30])
    with pytest.raises(ConfigError) as e:
        read_audio(head, 8000)
    one_line_error(e, "head.wav")
    # a flac cut in half cannot be decoded
    flac = write(tmp_path / "full.flac", wave).read_bytes()
    half = tmp_path / "half.flac"
    half.write_bytes(flac[: len(flac) // 2])
    with pytest.raises(ConfigError) as e:
        read_audio(half, 8000)
    one_line_error(e, "half.flac")


def test_non_finite_samples(tmp_path):
    wave = sine(440, 0.1, 8000)
    wave[10] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        read_audio(write(tmp_path / "nan.wav", wave, subtype="FLOAT"), 8000)


# listing


def test_parse_name():
    pattern = "{label}_{speaker}_{index}"
    assert parse_name(pattern, "7_jackson_32") == {
        "label": "7",
        "speaker": "jackson",
        "index": "32",
    }
    assert parse_name(pattern, "7_jackson_3_2")["index"] == "3_2"  # the last field takes the rest
    assert parse_name(pattern, "7_jackson") is None
    assert parse_name(pattern, "7jackson32") is None
    assert parse_name("{label}", "0_0_1_1") == {"label": "0_0_1_1"}
    assert parse_name("spk-{speaker}.{label}", "spk-ab-c.yes") == {
        "speaker": "ab-c",
        "label": "yes",
    }
    assert parse_name("spk-{speaker}.{label}", "x-ab.yes") is None
    for bad in ["plain", "{a}{b}", "{a}_{a}", "{a b}", "{a}_}"]:
        with pytest.raises(ConfigError):
            parse_name(bad, "x_y")


def make_corpus(root):
    for name in ["b/1_jackson_2.flac", "a/0_george_1.wav", "a/0_george_10.WAV", "c/2_theo_0.ogg"]:
        write(root / name, sine(300, 0.1, 8000))
    (root / "a" / "notes.txt").write_text("not audio")
    write(root / ".hidden" / "3_x_1.wav", sine(300, 0.1, 8000))  # skipped
    return root


def test_list_a_folder_with_a_name_pattern(tmp_path):
    root = make_corpus(tmp_path / "corpus")
    items = list_audio(root, pattern="{label}_{speaker}_{index}")
    assert [it.path for it in items] == [
        str(root / n)
        for n in ["a/0_george_1.wav", "a/0_george_10.WAV", "b/1_jackson_2.flac", "c/2_theo_0.ogg"]
    ]
    assert [(it.label, it.speaker) for it in items] == [
        ("0", "george"),
        ("0", "george"),
        ("1", "jackson"),
        ("2", "theo"),
    ]
    assert all(isinstance(it, AudioItem) and it.duration is None for it in items)
    plain = list_audio(root)
    assert [it.path for it in plain] == [it.path for it in items]
    assert all(it.label is None and it.speaker is None for it in plain)
    # the columns name the pattern's fields
    named = list_audio(root, label_column="digit", pattern="{digit}_{speaker}_{take}")
    assert [it.label for it in named] == ["0", "0", "1", "2"]


def test_a_name_that_misses_the_pattern(tmp_path):
    root = make_corpus(tmp_path / "corpus")
    write(root / "odd.wav", sine(300, 0.1, 8000))
    with pytest.raises(ConfigError) as e:
        list_audio(root, pattern="{label}_{speaker}_{index}")
    one_line_error(e, "odd.wav", "{label}_{speaker}_{index}")


@pytest.mark.parametrize("suffix,sep", [(".csv", ","), (".tsv", "\t")])
def test_list_a_manifest(tmp_path, suffix, sep):
    a = write(tmp_path / "clips" / "a.wav", sine(300, 0.1, 8000))
    b = write(tmp_path / "elsewhere" / "b.wav", sine(300, 0.1, 8000))
    rows = [
        ["path", "label", "speaker", "duration", "note"],
        ["clips/a.wav", "yes", "s1", "0.1", "x, y" if sep == "\t" else "x"],
        [str(b), "", "s2", "", ""],
    ]
    manifest = tmp_path / f"list{suffix}"
    manifest.write_text("".join(sep.join(r) + "\n" for r in rows))
    items = list_audio(manifest)
    assert items == [
        AudioItem(str(a), "yes", "s1", 0.1),
        AudioItem(str(b), None, "s2", None),
    ]


def test_a_manifest_without_label_columns_uses_the_pattern(tmp_path):
    write(tmp_path / "3_ann_0.wav", sine(300, 0.1, 8000))
    (tmp_path / "m.csv").write_text("path,speaker\n3_ann_0.wav,bob\n")
    (item,) = list_audio(tmp_path / "m.csv", pattern="{label}_{speaker}_{index}")
    assert (item.label, item.speaker) == ("3", "bob")  # the manifest's column wins
    (tmp_path / "m2.csv").write_text("file\n3_ann_0.wav\n")
    assert list_audio(tmp_path / "m2.csv", path_column="file")[0].path == str(
        tmp_path / "3_ann_0.wav"
    )


def test_listing_errors(tmp_path):
    with pytest.raises(ConfigError) as e:
        list_audio(tmp_path / "nowhere")
    one_line_error(e, "nowhere", "does not exist")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no audio here")
    with pytest.raises(ConfigError) as e:
        list_audio(tmp_path / "empty")
    one_line_error(e, "empty", "no audio files")
    write(tmp_path / "a.wav", sine(300, 0.1, 8000))
    (tmp_path / "nopath.csv").write_text("file,label\na.wav,yes\n")
    with pytest.raises(ConfigError) as e:
        list_audio(tmp_path / "nopath.csv")
    one_line_error(e, "nopath.csv", "'path'", "file, label")
    (tmp_path / "gone.tsv").write_text("path\tlabel\na.wav\tyes\nmissing.wav\tno\n")
    with pytest.raises(ConfigError) as e:
        list_audio(tmp_path / "gone.tsv")
    one_line_error(e, "gone.tsv", "line 3", "missing.wav")
    (tmp_path / "blank.csv").write_text("path,label\n,yes\n")
    with pytest.raises(ConfigError, match="line 2"):
        list_audio(tmp_path / "blank.csv")
    (tmp_path / "dur.csv").write_text("path,duration\na.wav,long\n")
    with pytest.raises(ConfigError, match="line 2.*duration"):
        list_audio(tmp_path / "dur.csv")
    (tmp_path / "header.csv").write_text("path,label\n")
    with pytest.raises(ConfigError, match="no files"):
        list_audio(tmp_path / "header.csv")
    (tmp_path / "list.txt").write_text("a.wav\n")
    with pytest.raises(ConfigError, match="neither a folder nor"):
        list_audio(tmp_path / "list.txt")


@pytest.mark.data
def test_list_the_real_corpora():
    fsdd = list_audio(shared("fsdd/recordings"), pattern="{label}_{speaker}_{index}")
    assert len(fsdd) == 3000
    assert sorted({it.label for it in fsdd}) == [str(d) for d in range(10)]
    assert len({it.speaker for it in fsdd}) == 6
    yesno = list_audio(shared("yesno/waves_yesno"), pattern="{label}")
    assert len(yesno) == 60 and all(len(it.label.split("_")) == 8 for it in yesno)
    assert load_audio(yesno[0].path)[1] == 8000


# batching


def test_collate_frames_pads_with_a_mask():
    rng = np.random.default_rng(0)
    frames = [rng.standard_normal((n, 3)).astype(np.float32) for n in (4, 1, 6)]
    batch = collate_frames(frames)
    x, pad = batch[FEATURES], batch[PADDING_MASK]
    assert x.shape == (3, 6, 3) and x.dtype == torch.float32
    assert pad.shape == (3, 6) and pad.dtype == torch.bool
    for row, p, f in zip(x, pad, frames, strict=True):
        n = len(f)
        assert p.tolist() == [False] * n + [True] * (6 - n)
        np.testing.assert_array_equal(row[:n].numpy(), f)
        assert not row[n:].any()
    with pytest.raises(ValueError):
        collate_frames([np.zeros((2, 3)), np.zeros((2, 4))])


def test_crop():
    feat = np.arange(100 * 2).reshape(100, 2)
    out = crop(feat, 30, np.random.default_rng(1))
    assert out.shape == (30, 2)
    start = out[0, 0] // 2
    np.testing.assert_array_equal(out, feat[start : start + 30])  # contiguous
    np.testing.assert_array_equal(crop(feat, 30, np.random.default_rng(1)), out)  # same seed
    starts = {int(crop(feat, 30, np.random.default_rng(s))[0, 0]) for s in range(20)}
    assert len(starts) > 5
    last = {int(crop(feat, 99, np.random.default_rng(s))[0, 0]) for s in range(20)}
    assert last == {0, 2}  # both possible windows, never past the end
    assert crop(feat, 100, np.random.default_rng(0)) is feat
    assert crop(feat[:5], 30, np.random.default_rng(0)).shape == (5, 2)
    with pytest.raises(ConfigError):
        crop(feat, 0, np.random.default_rng(0))


def test_length_buckets():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 1000, size=103)
    batches = length_buckets(lengths, 8, np.random.default_rng(5))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(103))  # every index exactly once
    assert sorted(len(b) for b in batches) == [7] + [8] * 12
    assert batches == length_buckets(lengths, 8, np.random.default_rng(5))  # same seed
    assert batches != length_buckets(lengths, 8, np.random.default_rng(6))

    def padding(bs):
        return sum(int(lengths[b].max() * len(b) - lengths[b].sum()) for b in bs)

    shuffled = rng.permutation(103)
    random_batches = [shuffled[i : i + 8] for i in range(0, 103, 8)]
    assert padding(batches) * 10 < padding(random_batches)
    # ties broken at random, lengths still sorted within the order
    ties = length_buckets([5] * 10 + [1] * 10, 10, np.random.default_rng(0))
    assert sorted(map(sorted, ties)) == [list(range(10)), list(range(10, 20))]
