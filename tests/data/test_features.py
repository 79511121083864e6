"""Frame features against librosa as the reference (log-mel, MFCC, deltas, silence trimming) on
synthetic signals and on real recordings from ../shared/data (FSDD digits and Kaldi yesno, 8 kHz;
marked `data`), CMVN statistics, and the feature cache (reuse, keys, bad clips)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import shared

from selfsup.data.audio import AudioItem, read_audio
from selfsup.data.features import (
    FeatureConfig,
    cached_features,
    cmvn,
    compute_features,
    dct_matrix,
    deltas,
    feature_key,
    global_stats,
    log_mel,
    mfcc,
    trim_range,
)
from selfsup.errors import ConfigError

CONFIGS = {
    "default": FeatureConfig(),
    # a window shorter than the FFT (zero-padded on both sides) and a band-limited filterbank
    "short-window": FeatureConfig(
        n_fft=512, win_length=320, hop_length=128, n_mels=64, n_mfcc=20, fmin=50.0, fmax=7000.0
    ),
}
CFG_8K = FeatureConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, n_mels=40)


def chirp(rate: int = 16000, seconds: float = 1.0, f0: float = 100.0, f1: float = 6000.0):
    """A linear sweep from f0 to f1 Hz with a quiet start, so low energies and the log floor
    matter too."""
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.6 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))
    wave[: rate // 10] *= 1e-3
    return wave


def librosa_kwargs(cfg: FeatureConfig) -> dict:
    return dict(
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        center=True,
        pad_mode="constant",
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
    )


def reference_log_mel(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    kwargs = librosa_kwargs(cfg)
    mel = librosa.feature.melspectrogram(
        y=wave, sr=cfg.sample_rate, window="hann", power=2.0, dtype=wave.dtype, **kwargs
    )
    return np.log(mel + cfg.log_floor).T


def reference_mfcc(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    return librosa.feature.mfcc(
        y=wave, sr=cfg.sample_rate, n_mfcc=cfg.n_mfcc, dtype=wave.dtype, **librosa_kwargs(cfg)
    ).T


def check_against_librosa(wave: np.ndarray, cfg: FeatureConfig) -> None:
    """log-mel and MFCC equal librosa's: in float64 to 1e-4, and the float32 path of
    compute_features to float32 accuracy."""
    w64 = np.asarray(wave, dtype=np.float64)
    ours = log_mel(torch.from_numpy(w64), cfg).numpy()
    ref = reference_log_mel(w64, cfg)
    assert ours.shape == ref.shape == (1 + len(wave) // cfg.hop_length, cfg.n_mels)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)
    mcfg = dataclasses.replace(cfg, kind="mfcc")
    ours = mfcc(torch.from_numpy(w64), mcfg).numpy()
    ref = reference_mfcc(w64, mcfg)
    assert ours.shape == ref.shape == (len(ref), cfg.n_mfcc)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    # float32, as the cache computes them (librosa in float32 too)
    w32 = np.asarray(wave, dtype=np.float32)
    np.testing.assert_allclose(
        compute_features(w32, cfg), reference_log_mel(w32, cfg), rtol=0, atol=1e-3
    )
    ref = reference_mfcc(w32, mcfg)
    np.testing.assert_allclose(
        compute_features(w32, mcfg), ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max()
    )


@pytest.mark.parametrize("name", list(CONFIGS))
def test_chirp_matches_librosa(name):
    check_against_librosa(chirp(), CONFIGS[name])


def test_an_odd_length_clip_and_silence():
    cfg = CONFIGS["default"]
    check_against_librosa(chirp(seconds=0.4567), cfg)
    silent = log_mel(torch.zeros(1600), cfg)
    assert torch.allclose(silent, torch.full_like(silent, np.log(cfg.log_floor)))


@pytest.mark.data
@pytest.mark.parametrize(
    "sub", ["fsdd/recordings/0_george_0.wav", "yesno/waves_yesno/0_0_1_0_0_0_1_0.wav"]
)
def test_real_recordings_match_librosa(sub):
    path = shared(sub)
    check_against_librosa(read_audio(path, 16000), CONFIGS["default"])  # resampled
    check_against_librosa(read_audio(path, 8000), CFG_8K)  # at the files' own rate


def test_a_batch_equals_each_utterance():
    cfg = CONFIGS["default"]
    waves = torch.from_numpy(np.stack([chirp(seconds=0.5), chirp(seconds=0.5, f0=2000.0)]))
    for fn in (log_mel, mfcc):
        c = dataclasses.replace(cfg, kind="mfcc") if fn is mfcc else cfg
        batch = fn(waves, c)
        assert batch.shape[0] == 2 and batch.dtype == torch.float64
        for b in range(2):
            torch.testing.assert_close(batch[b], fn(waves[b], c))


def test_the_dct_is_orthonormal_dct_ii():
    from scipy.fft import dct

    x = np.random.default_rng(0).standard_normal((7, 40))
    np.testing.assert_allclose(x @ dct_matrix(13, 40).T, dct(x, type=2, norm="ortho")[:, :13])
    full = dct_matrix(40, 40)
    np.testing.assert_allclose(full @ full.T, np.eye(40), atol=1e-12)


@pytest.mark.parametrize("width", [3, 5, 9])
@pytest.mark.parametrize("order", [1, 2])
def test_deltas_match_librosa(width, order):
    feat = np.random.default_rng(width).standard_normal((37, 6)).astype(np.float32)
    feat = np.cumsum(feat, axis=0)  # smooth-ish trajectories
    ref = librosa.feature.delta(feat.T, width=width, order=order, mode="interp").T
    got = deltas(feat, width, order)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_deltas_of_a_short_utterance():
    feat = np.random.default_rng(0).standard_normal((6, 4))
    # librosa refuses width 9 on 6 frames; the widest window that fits is 5
    np.testing.assert_allclose(deltas(feat, 9, 1), librosa.feature.delta(feat.T, width=5).T)
    np.testing.assert_allclose(
        deltas(feat[:3], 9, 2), librosa.feature.delta(feat[:3].T, width=3, order=2).T
    )
    assert not deltas(feat[:2], 9, 1).any()
    # a straight line's first derivative is its slope, everywhere (edges included)
    line = np.arange(20, dtype=np.float64)[:, None] * [0.5, -2.0]
    np.testing.assert_allclose(deltas(line, 9, 1), np.broadcast_to([0.5, -2.0], (20, 2)))
    with pytest.raises(ConfigError):
        deltas(feat, 4, 1)


@pytest.mark.parametrize("n_deltas", [0, 1, 2])
@pytest.mark.parametrize("kind", ["fbank", "mfcc"])
def test_compute_features_stacks_deltas(kind, n_deltas):
    cfg = FeatureConfig(kind=kind, deltas=n_deltas)
    wave = chirp(seconds=0.3).astype(np.float32)
    feat = compute_features(wave, cfg)
    assert feat.dtype == np.float32 and feat.shape == (1 + len(wave) // 160, cfg.dim)
    base = (log_mel if kind == "fbank" else mfcc)(torch.from_numpy(wave), cfg).numpy()
    n = base.shape[1]
    np.testing.assert_array_equal(feat[:, :n], base)
    for k in range(1, n_deltas + 1):
        np.testing.assert_allclose(feat[:, k * n : (k + 1) * n], deltas(base, 9, k), atol=1e-6)


def test_utterance_cmvn():
    cfg = FeatureConfig(deltas=1, cmvn="utterance")
    feat = compute_features(chirp(seconds=0.5).astype(np.float32), cfg)
    np.testing.assert_allclose(feat.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(feat.std(axis=0), 1, atol=1e-4)
    x = np.random.default_rng(0).normal(3.0, 5.0, size=(50, 4))
    x[:, 2] = 7.0  # a constant dimension becomes zero, not NaN
    y = cmvn(x)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(y.std(axis=0), [1, 1, 0, 1], atol=1e-12)


def test_global_cmvn():
    rng = np.random.default_rng(0)
    feats = [rng.normal(100.0, 2.0, size=(n, 3)).astype(np.float32) for n in (5, 40, 17)]
    mean, std = global_stats(feats)
    whole = np.concatenate(feats).astype(np.float64)
    np.testing.assert_allclose(mean, whole.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, whole.std(axis=0), rtol=1e-9)
    normed = np.concatenate([cmvn(f, mean, std) for f in feats])
    assert normed.dtype == np.float32
    np.testing.assert_allclose(normed.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(normed.std(axis=0), 1, atol=1e-4)
    assert np.abs(cmvn(feats[0], mean, std).mean(axis=0)).max() > 0.01  # not per utterance
    const = [np.full((4, 2), 3.0), np.full((2, 2), 3.0)]
    assert np.isfinite(np.concatenate([cmvn(f, *global_stats(const)) for f in const])).all()
    with pytest.raises(ConfigError):
        global_stats([])


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "spectrogram"},
        {"cmvn": "batch"},
        {"sample_rate": 0},
        {"hop_length": 0},
        {"n_fft": 1.5},
        {"win_length": 512},
        {"kind": "mfcc", "n_mfcc": 81},
        {"fmin": -1.0},
        {"fmax": 9000.0},
        {"fmin": 4000.0, "fmax": 3000.0},
        {"deltas": 3},
        {"delta_width": 8},
        {"log_floor": 0.0},
        {"n_mels": 400},  # bands narrower than an FFT bin
        {"trim_db": -10.0},
        {"trim_db": float("nan")},
        {"trim_db": float("inf")},
        {"trim_db": "30"},
    ],
)
def test_bad_settings(change):
    cfg = dataclasses.replace(FeatureConfig(), **change)
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    assert "\n" not in str(e.value)


def test_dim():
    assert FeatureConfig().dim == 80
    assert FeatureConfig(deltas=2).dim == 240
    assert FeatureConfig(kind="mfcc", deltas=1).dim == 26


# the cache


def write_clips(folder, rates=(8000, 8000, 16000), seconds=(0.5, 0.3, 0.4)):
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i, (rate, sec) in enumerate(zip(rates, seconds, strict=True)):
        path = folder / f"clip{i}.wav"
        sf.write(path, chirp(rate, sec, f1=rate / 2.5).astype(np.float32), rate)
        items.append(AudioItem(str(path), label=str(i)))
    return items


def test_the_cache_is_built_once_then_reused(tmp_path):
    items = write_clips(tmp_path / "clips")
    cfg = FeatureConfig(deltas=1, cmvn="utterance")
    logs = []
    feats = cached_features(items, cfg, tmp_path / "cache", log=logs.append)
    assert "resampled 2 files from 8000 Hz to 16000 Hz" in logs
    for item, f in zip(items, feats, strict=True):
        assert f.dtype == np.float32 and f.shape[1] == cfg.dim
        np.testing.assert_allclose(f, compute_features(read_audio(item.path, 16000), cfg))
    (entry,) = (tmp_path / "cache" / "audio").iterdir()
    assert entry.name == feature_key(items, cfg)
    assert sorted(p.name for p in entry.iterdir()) == ["frames.npy", "offsets.npy"]
    frames = np.load(entry / "frames.npy", allow_pickle=False)
    offsets = np.load(entry / "offsets.npy", allow_pickle=False)
    assert offsets.dtype == np.int64 and offsets.tolist()[0] == 0
    assert offsets[-1] == len(frames) == sum(len(f) for f in feats)
    mtime = (entry / "frames.npy").stat().st_mtime_ns

    logs.clear()
    again = cached_features(items, cfg, tmp_path / "cache", log=logs.append)
    assert logs == [f"audio features: using cached features in {entry}"]  # no audio read
    assert (entry / "frames.npy").stat().st_mtime_ns == mtime
    for a, b in zip(feats, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_default_cache_folder(tmp_path, isolated_cache):
    items = write_clips(tmp_path / "clips", rates=(16000,), seconds=(0.2,))
    cached_features(items, FeatureConfig(), log=lambda _: None)
    entries = [p.name for p in (tmp_path / "cache" / "audio").iterdir()]
    assert entries == [feature_key(items, FeatureConfig())]


OTHER_VALUES = {
    "kind": "mfcc",
    "sample_rate": 8000,
    "n_fft": 512,
    "win_length": 320,
    "hop_length": 80,
    "n_mels": 40,
    "n_mfcc": 20,
    "fmin": 20.0,
    "fmax": 7600.0,
    "deltas": 1,
    "delta_width": 5,
    "cmvn": "utterance",
    "log_floor": 1e-5,
    "trim_db": 30.0,
}


def test_every_setting_is_in_the_key(tmp_path):
    assert set(OTHER_VALUES) == {f.name for f in dataclasses.fields(FeatureConfig)}
    items = write_clips(tmp_path / "clips", rates=(16000,), seconds=(0.2,))
    cfg = FeatureConfig()
    key = feature_key(items, cfg)
    keys = {key}
    for name, value in OTHER_VALUES.items():
        assert getattr(cfg, name) != value
        keys.add(feature_key(items, dataclasses.replace(cfg, **{name: value})))
    assert len(keys) == 1 + len(OTHER_VALUES)
    assert feature_key(items, FeatureConfig()) == key
    assert feature_key(items + items, cfg) != key
    sf.write(items[0].path, chirp(16000, 0.3).astype(np.float32), 16000)  # a changed file
    assert feature_key(items, cfg) != key


def test_keys_of_caches_built_before_trimming_are_unchanged(tmp_path):
    """trim_db at its default (off) is left out of the key: a cache built before the field
    existed is still found."""
    from selfsup.data.cache import cache_key
    from selfsup.data.features import CACHE_FORMAT

    items = write_clips(tmp_path / "clips", rates=(16000,), seconds=(0.2,))
    cfg = FeatureConfig()
    old = [f"{f.name}={getattr(cfg, f.name)!r}" for f in dataclasses.fields(cfg)
           if f.name != "trim_db"]  # fmt: skip
    assert feature_key(items, cfg) == cache_key([Path(i.path) for i in items], *old, CACHE_FORMAT)


def test_bad_clips_are_config_errors(tmp_path):
    items = write_clips(tmp_path / "clips", rates=(16000,), seconds=(0.2,))
    short = tmp_path / "clips" / "short.wav"
    sf.write(short, np.zeros(399, np.float32), 16000)  # one sample short of a 400-sample frame
    with pytest.raises(ConfigError) as e:
        cached_features(items + [AudioItem(str(short))], FeatureConfig(), tmp_path / "c")
    assert "short.wav" in str(e.value) and "shorter than one frame" in str(e.value)
    assert not any((tmp_path / "c" / "audio").iterdir())  # nothing half-built left behind
    text = tmp_path / "clips" / "text.wav"
    text.write_text("not audio at all\n" * 10)
    with pytest.raises(ConfigError, match="text.wav"):
        cached_features([AudioItem(str(text))], FeatureConfig(), tmp_path / "c")
    # at 8 kHz a 200-sample clip is 400 samples after resampling: long enough
    sf.write(short, np.zeros(200, np.float32), 8000)
    (f,) = cached_features([AudioItem(str(short))], FeatureConfig(), tmp_path / "c", log=print)
    assert f.shape == (3, 80)
    with pytest.raises(ConfigError):
        cached_features([], FeatureConfig(), tmp_path / "c")


# silence trimming, against librosa.effects.trim


def padded_tone(rate: int = 16000, lead: float = 0.37, tone: float = 0.5, tail: float = 0.61):
    """A 440 Hz tone between a quiet lead-in and tail (noise 60 dB under the tone), with a
    fade-in so the edge falls between frames."""
    rng = np.random.default_rng(0)
    n_lead, n_tone, n_tail = (int(rate * s) for s in (lead, tone, tail))
    t = np.arange(n_tone) / rate
    body = 0.5 * np.sin(2 * np.pi * 440.0 * t) * np.minimum(1.0, t / 0.05)
    wave = np.concatenate([np.zeros(n_lead), body, np.zeros(n_tail)])
    return (wave + 5e-4 * rng.standard_normal(len(wave))).astype(np.float32), n_lead, n_tone


def check_trim_against_librosa(wave: np.ndarray, cfg: FeatureConfig) -> tuple[int, int]:
    """The same kept samples as librosa.effects.trim, at our windows and at librosa's default
    2048/512 ones; compute_features trims to exactly that range."""
    for db in (20.0, cfg.trim_db, 60.0):
        for frame, hop in ((cfg.win_length, cfg.hop_length), (2048, 512)):
            _, ref = librosa.effects.trim(wave, top_db=db, frame_length=frame, hop_length=hop)
            assert trim_range(wave, db, frame, hop) == tuple(ref.tolist()), (db, frame, hop)
    start, end = trim_range(wave, cfg.trim_db, cfg.win_length, cfg.hop_length)
    off = dataclasses.replace(cfg, trim_db=0.0)
    np.testing.assert_array_equal(compute_features(wave, cfg),
                                  compute_features(wave[start:end], off))  # fmt: skip
    return start, end


def test_trimming_a_tone_padded_with_silence():
    cfg = FeatureConfig(trim_db=30.0)
    wave, n_lead, n_tone = padded_tone()
    start, end = check_trim_against_librosa(wave, cfg)
    # within two hops of where the tone starts and ends (a frame is sound once it reaches in)
    assert n_lead - 2 * cfg.hop_length <= start <= n_lead
    assert n_lead + n_tone <= end <= n_lead + n_tone + 2 * cfg.hop_length
    assert len(compute_features(wave, cfg)) < len(compute_features(wave, FeatureConfig())) / 2


@pytest.mark.data
@pytest.mark.parametrize(
    "sub", ["fsdd/recordings/0_george_0.wav", "yesno/waves_yesno/0_0_1_0_0_0_1_0.wav"]
)
def test_trimming_real_recordings_matches_librosa(sub):
    path = shared(sub)
    wave = read_audio(path, 16000)
    start, end = check_trim_against_librosa(wave, FeatureConfig(trim_db=30.0))
    assert 0 < end - start <= len(wave)
    check_trim_against_librosa(read_audio(path, 8000), dataclasses.replace(CFG_8K, trim_db=25.0))


def test_trimming_never_empties_a_clip():
    cfg = FeatureConfig(trim_db=30.0)
    off = FeatureConfig()
    silence = np.zeros(8000, np.float32)  # every frame at the floor: all of it is kept
    assert trim_range(silence, 30.0, 400, 160) == (0, 8000)
    np.testing.assert_array_equal(compute_features(silence, cfg), compute_features(silence, off))
    click = np.zeros(8000, np.float32)
    click[4000] = 1.0  # in the windows of 3 frames (centred at 3840, 4000, 4160): 480 samples
    start, end = trim_range(click, 30.0, 400, 160)
    assert (start, end) == (3840, 4320)
    np.testing.assert_array_equal(compute_features(click, cfg),
                                  compute_features(click[start:end], off))  # fmt: skip
    click = np.roll(click, 80)  # in 2 frames' windows only (4000, 4160): 320 samples
    assert trim_range(click, 30.0, 400, 160) == (4000, 4320)
    _, ref = librosa.effects.trim(click, top_db=30.0, frame_length=400, hop_length=160)
    assert ref.tolist() == [4000, 4320]
    # shorter than one 400-sample window: the clip is kept whole rather than failing
    np.testing.assert_array_equal(compute_features(click, cfg), compute_features(click, off))
    # trim_db 0 is off: the features of before trimming existed, bit for bit
    wave, _, _ = padded_tone()
    assert compute_features(wave, FeatureConfig(trim_db=0.0)).shape[0] == 1 + len(wave) // 160


def test_the_cache_trims_and_keys_by_trim_db(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    wave, _, _ = padded_tone()
    sf.write(folder / "tone.wav", wave, 16000)
    items = [AudioItem(str(folder / "tone.wav"))]
    (full,) = cached_features(items, FeatureConfig(), tmp_path / "c", log=lambda _: None)
    (cut,) = cached_features(items, FeatureConfig(trim_db=30.0), tmp_path / "c", log=print)
    assert len(cut) < len(full)
    start, end = trim_range(read_audio(items[0].path, 16000), 30.0, 400, 160)
    np.testing.assert_array_equal(cut, compute_features(read_audio(items[0].path, 16000)[start:end],
                                                        FeatureConfig()))  # fmt: skip
    assert len(list((tmp_path / "c" / "audio").iterdir())) == 2


def test_the_wave_kind_keeps_the_samples_and_normalises_per_utterance():
    rng = np.random.default_rng(0)
    wave = (0.3 * rng.standard_normal(1600) + 0.1).astype(np.float32)
    cfg = FeatureConfig(kind="wave")
    assert cfg.dim == 1 and cfg.frame_rate == 16000.0
    raw = compute_features(wave, cfg)
    assert raw.shape == (1600, 1) and raw.dtype == np.float32
    np.testing.assert_array_equal(raw[:, 0], wave)
    normed = compute_features(wave, dataclasses.replace(cfg, cmvn="utterance"))[:, 0]
    # wav2vec 2.0's per-utterance normalisation: zero mean, unit variance
    expect = (wave.astype(np.float64) - wave.mean()) / wave.astype(np.float64).std()
    np.testing.assert_allclose(normed, expect, atol=1e-6)
    with pytest.raises(ConfigError, match="deltas"):
        FeatureConfig(kind="wave", deltas=1).validate()
    assert FeatureConfig().frame_rate == 100.0
