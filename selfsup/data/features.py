"""Frame features of speech: log-mel filterbanks and MFCCs as librosa defines them, deltas,
cepstral mean and variance normalisation (CMVN), and a cache holding a corpus's features.

Shapes: S samples, B utterances, T frames (one every `hop_length` samples, centred: T = 1 +
S // hop_length), F = n_fft // 2 + 1 frequency bins, D = FeatureConfig.dim feature values.
Frames come first, (T, D), as every encoder here reads them.

Defaults (25 ms Hann windows every 10 ms at 16 kHz, 80 mel bands, 13 MFCCs, deltas over 9
frames) are the usual speech front end (Kaldi, HTK; Davis & Mermelstein 1980 for MFCCs).
Leading and trailing silence can be trimmed from the wave first (`trim_db`, off by default), as
librosa.effects.trim does it.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from selfsup.data.audio import AudioItem, audio_module, load_audio, resample
from selfsup.data.cache import build_once, cache_key, default_cache_dir
from selfsup.errors import ConfigError

FEATURE_KINDS = ("fbank", "mfcc", "wave")  # wave: the samples themselves, (T, 1)
CMVN_KINDS = ("none", "utterance", "global")
CACHE_FORMAT = "audio-features-v1"  # raise whenever what a cache entry stores changes
AMIN, TOP_DB = 1e-10, 80.0  # librosa.power_to_db's defaults, used by its MFCC
TRIM_AMIN = 1e-5  # librosa.amplitude_to_db's floor, as librosa.effects.trim compares levels
# Fields added after CACHE_FORMAT v1, with their "off" value: at that value they stay out of the
# cache key, so the entries built before them remain valid.
KEY_DEFAULTS = {"trim_db": 0.0}
STD_FLOOR = 1e-8  # CMVN divides by at least this: a constant dimension becomes zero, not NaN


@dataclass
class FeatureConfig:
    """How a waveform becomes frames: `kind` "fbank" (log-mel) or "mfcc"; `deltas` 1 appends
    the first derivative over `delta_width` frames, 2 also the second; `cmvn` "utterance"
    normalises each utterance over time, "global" is applied by the caller with global_stats.
    `trim_db` > 0 drops the leading and trailing frames more than that many dB below the
    clip's loudest frame before the features are computed (trim_range); 0 keeps every sample."""

    kind: str = "fbank"
    sample_rate: int = 16000
    n_fft: int = 400
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80
    n_mfcc: int = 13
    fmin: float = 0.0
    fmax: float | None = None  # None: sample_rate / 2
    deltas: int = 0
    delta_width: int = 9
    cmvn: str = "none"
    log_floor: float = 1e-6  # log(mel + log_floor): silence stays finite
    trim_db: float = 0.0  # > 0: trim leading/trailing silence this far below the peak (e.g. 30)

    def validate(self) -> None:
        """A ConfigError on the first bad value."""
        if self.kind not in FEATURE_KINDS:
            raise ConfigError(f"feature kind {self.kind!r}: choose from {', '.join(FEATURE_KINDS)}")
        if self.cmvn not in CMVN_KINDS:
            raise ConfigError(f"cmvn {self.cmvn!r}: choose from {', '.join(CMVN_KINDS)}")
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "n_mfcc"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.win_length > self.n_fft:
            raise ConfigError(f"win_length {self.win_length} exceeds n_fft {self.n_fft}")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            raise ConfigError(f"n_mfcc {self.n_mfcc} exceeds n_mels {self.n_mels}")
        nyquist = self.sample_rate / 2
        fmax = nyquist if self.fmax is None else self.fmax
        if not 0 <= self.fmin < fmax <= nyquist:
            raise ConfigError(
                f"need 0 <= fmin < fmax <= sample_rate / 2 = {nyquist:g} Hz, got fmin "
                f"{self.fmin:g}, fmax {fmax:g}"
            )
        if self.kind == "wave" and self.deltas:
            raise ConfigError("deltas apply to fbank or mfcc frames, not to the wave")
        if self.deltas not in (0, 1, 2):
            raise ConfigError(f"deltas must be 0, 1 or 2, got {self.deltas!r}")
        if self.delta_width < 3 or self.delta_width % 2 == 0:
            raise ConfigError(f"delta_width must be an odd number >= 3, got {self.delta_width}")
        if not self.log_floor > 0:
            raise ConfigError(f"log_floor must be positive, got {self.log_floor}")
        trim = self.trim_db
        if isinstance(trim, bool) or not isinstance(trim, int | float) or not 0 <= trim < math.inf:
            raise ConfigError(
                f"trim_db must be a number of dB >= 0 (0: no trimming), got {self.trim_db!r}"
            )
        mel_filters(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax)

    @property
    def dim(self) -> int:
        """Values per frame: the mel bands or MFCCs, times 1 + the number of delta orders; 1
        for the wave (a frame is one sample)."""
        if self.kind == "wave":
            return 1
        base = self.n_mels if self.kind == "fbank" else self.n_mfcc
        return base * (1 + self.deltas)

    @property
    def frame_rate(self) -> float:
        """Frames per second: sample_rate / hop_length, or sample_rate for the wave."""
        if self.kind == "wave":
            return float(self.sample_rate)
        return self.sample_rate / self.hop_length


@lru_cache(maxsize=16)
def mel_filters(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None
) -> np.ndarray:
    """(n_mels, F) float64 Slaney-style mel filterbank (librosa.filters.mel with htk=False,
    norm="slaney"), computed once per settings. Bands too narrow to hold an FFT bin are a
    ConfigError (librosa only warns; such a band is a constant feature)."""
    librosa = audio_module("librosa")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # empty filters: reported below instead
        basis = librosa.filters.mel(
            sr=sample_rate,
            n_fft=n_fft,
            n_mels=n_mels,
            fmin=fmin,
            fmax=fmax,
            htk=False,
            norm="slaney",
            dtype=np.float64,
        )
    empty = int((basis.max(axis=1) == 0).sum())
    if empty:
        raise ConfigError(
            f"{empty} of n_mels={n_mels} mel bands hold no FFT bin at n_fft={n_fft}, "
            f"sample_rate={sample_rate}: lower n_mels or raise n_fft"
        )
    basis.setflags(write=False)  # shared by every caller through the cache
    return basis


@lru_cache(maxsize=16)
def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) float64 orthonormal DCT-II (scipy's dct(type=2, norm="ortho"), first n_out
    rows): X[k] = sqrt(2 / N) * s_k * sum_n x[n] cos(pi k (2n + 1) / 2N), s_0 = 1/sqrt(2)."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    m = np.sqrt(2.0 / n_in) * np.cos(np.pi * k * (2 * n + 1) / (2 * n_in))
    m[0] /= np.sqrt(2.0)
    m.setflags(write=False)
    return m


def _float(wave: torch.Tensor) -> torch.Tensor:
    return wave if wave.dtype in (torch.float32, torch.float64) else wave.float()


def mel_power(wave: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """(T, n_mels) or (B, T, n_mels) mel power spectrogram of (S,) or (B, S) samples: |STFT|^2
    (periodic Hann window, centred frames, zero padding as librosa >= 0.10) through the mel
    filterbank. Computed in the wave's precision (float64 stays float64)."""
    wave = _float(wave)
    window = torch.hann_window(cfg.win_length, periodic=True, dtype=wave.dtype, device=wave.device)
    spec = torch.stft(
        wave,
        cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )  # (B, F, T)
    power = spec.real.square() + spec.imag.square()
    basis = mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
    basis = torch.tensor(basis, dtype=power.dtype, device=power.device)  # (n_mels, F)
    return (basis @ power).transpose(-1, -2)  # (B, T, n_mels)


def log_mel(wave: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """(T, n_mels) or (B, T, n_mels) log-mel filterbank energies, log(mel power + log_floor):
    log(librosa.feature.melspectrogram(...) + log_floor).T for the same settings."""
    return torch.log(mel_power(wave, cfg) + cfg.log_floor)


def mfcc(wave: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """(T, n_mfcc) or (B, T, n_mfcc) MFCCs as librosa.feature.mfcc: the mel power in dB
    (10 log10 max(1e-10, S), floored 80 dB below the utterance's peak) through an orthonormal
    DCT-II, keeping the first n_mfcc coefficients."""
    db = 10.0 * torch.log10(mel_power(wave, cfg).clamp_min(AMIN))  # (B, T, n_mels)
    peak = db.amax(dim=(-2, -1), keepdim=True)  # per utterance
    db = torch.maximum(db, peak - TOP_DB)
    dct = torch.tensor(dct_matrix(cfg.n_mfcc, cfg.n_mels), dtype=db.dtype, device=db.device)
    return db @ dct.T  # (B, T, n_mfcc)


def deltas(feat: np.ndarray, width: int = 9, order: int = 1) -> np.ndarray:
    """The `order`-th time derivative of (T, D) frames: a Savitzky-Golay filter of polynomial
    order `order` over `width` frames, polynomial fits at the edges; equal to
    librosa.feature.delta(feat.T, width=width, order=order, mode="interp").T.

    An utterance shorter than `width` frames (where librosa raises) uses the widest odd window
    that fits; under 3 frames (order 1) or when no window fits, the deltas are zero."""
    if width < 3 or width % 2 == 0:
        raise ConfigError(f"delta width must be an odd number >= 3, got {width}")
    if order < 1:
        raise ConfigError(f"delta order must be at least 1, got {order}")
    T = len(feat)
    w = min(width, T if T % 2 else T - 1)
    if w < 3 or w <= order:
        return np.zeros_like(feat)
    from scipy.signal import savgol_filter

    out = savgol_filter(feat, w, polyorder=order, deriv=order, axis=0, mode="interp")
    return out.astype(feat.dtype, copy=False)


def cmvn(
    feat: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None
) -> np.ndarray:
    """(T, D) frames with each dimension shifted to zero mean and scaled to unit standard
    deviation over the utterance, or by the given (global) `mean` and `std`. A constant
    dimension becomes zero."""
    if (mean is None) != (std is None):
        raise ValueError("cmvn takes both mean and std, or neither")
    x = np.asarray(feat, dtype=np.float64)
    if mean is None:
        mean, std = x.mean(axis=0), x.std(axis=0)
    out = (x - mean) / np.maximum(std, STD_FLOOR)
    return out.astype(feat.dtype, copy=False)


def global_stats(feats: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std), each (D,) float64, of every frame of every utterance (two passes, so large
    offsets lose no precision); std is at least STD_FLOOR, so dividing by it is safe."""
    n = sum(len(f) for f in feats)
    if n == 0:
        raise ConfigError("global CMVN statistics need at least one frame")
    mean = sum(np.asarray(f, dtype=np.float64).sum(axis=0) for f in feats) / n
    var = sum(np.square(np.asarray(f, dtype=np.float64) - mean).sum(axis=0) for f in feats) / n
    return mean, np.maximum(np.sqrt(var), STD_FLOOR)


def trim_range(
    wave: np.ndarray, top_db: float, frame_length: int, hop_length: int
) -> tuple[int, int]:
    """The samples [start, end) of a 1-D wave left once its leading and trailing silence is
    trimmed, as librosa.effects.trim(wave, top_db=top_db, frame_length=frame_length,
    hop_length=hop_length) finds them: the RMS of centred frames (zero-padded by
    frame_length // 2 at both ends, one every hop_length samples) in dB relative to the loudest
    frame (floored at 1e-5, librosa's amin); frames within `top_db` dB of it are sound, and the
    range runs from the first sound frame's start (its index * hop_length) to the last one's
    end ((index + 1) * hop_length, at most len(wave)). The loudest frame is always sound, so
    the range is never empty."""
    x = np.square(np.asarray(wave, dtype=np.float64))
    half = frame_length // 2
    x = np.pad(x, (half, half))
    n_frames = 1 + (len(x) - frame_length) // hop_length
    windows = np.lib.stride_tricks.sliding_window_view(x, frame_length)[::hop_length][:n_frames]
    rms = np.maximum(np.sqrt(windows.mean(axis=1)), TRIM_AMIN)  # (T,)
    sound = np.flatnonzero(rms > rms.max() * 10.0 ** (-top_db / 20.0))
    return int(sound[0]) * hop_length, min(len(wave), (int(sound[-1]) + 1) * hop_length)


def trimmed_range(wave: np.ndarray, cfg: FeatureConfig) -> tuple[int, int]:
    """The samples [start, end) of a 1-D wave that compute_features reads: trim_range's when
    cfg.trim_db > 0 and what is left holds one window, else the whole wave."""
    if cfg.trim_db > 0 and len(wave) >= cfg.win_length:
        start, end = trim_range(wave, cfg.trim_db, cfg.win_length, cfg.hop_length)
        if end - start >= cfg.win_length:  # else a lone click: keep the clip rather than fail
            return start, end
    return 0, len(wave)


def compute_features(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """(T, cfg.dim) float32 frames of a 1-D wave at cfg.sample_rate: silence trimmed when
    cfg.trim_db > 0 (trim_range over the feature windows; a clip whose trimmed part would be
    shorter than one window is kept whole), log-mel or MFCC, then deltas, then utterance CMVN
    when cfg.cmvn == "utterance". A wave shorter than one window (win_length samples) is a
    ConfigError."""
    cfg.validate()
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ConfigError(f"a wave must be 1-D (mono samples), got shape {wave.shape}")
    start, end = trimmed_range(wave, cfg)
    wave = wave[start:end]
    if len(wave) < cfg.win_length:
        raise ConfigError(
            f"{len(wave)} samples at {cfg.sample_rate} Hz is shorter than one frame "
            f"({cfg.win_length} samples, {1000 * cfg.win_length / cfg.sample_rate:g} ms)"
        )
    if cfg.kind == "wave":  # the samples as (T, 1) frames; utterance CMVN = wav2vec 2.0's
        feat = np.asarray(wave, dtype=np.float64)[:, None]  # per-utterance normalisation
        return np.ascontiguousarray(cmvn(feat) if cfg.cmvn == "utterance" else feat, np.float32)
    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    with torch.no_grad():
        base = (log_mel if cfg.kind == "fbank" else mfcc)(x, cfg).numpy()  # (T, n_mels|n_mfcc)
    parts = [base] + [deltas(base, cfg.delta_width, k) for k in range(1, cfg.deltas + 1)]
    feat = np.concatenate(parts, axis=1) if len(parts) > 1 else base  # (T, D)
    if cfg.cmvn == "utterance":
        feat = cmvn(feat)
    return np.ascontiguousarray(feat, dtype=np.float32)


def feature_key(items: list[AudioItem], cfg: FeatureConfig) -> str:
    """The cache entry of these files' features: the files (path, size, mtime, in order) and
    every FeatureConfig field (those of KEY_DEFAULTS only when they differ from their default,
    so entries built before those fields existed stay valid)."""
    settings = [
        f"{f.name}={getattr(cfg, f.name)!r}"
        for f in dataclasses.fields(cfg)
        if f.name not in KEY_DEFAULTS or getattr(cfg, f.name) != KEY_DEFAULTS[f.name]
    ]
    return cache_key([Path(i.path) for i in items], *settings, CACHE_FORMAT)


def _resample_report(rates: Counter, sample_rate: int) -> str:
    total = sum(rates.values())
    if len(rates) == 1:
        (rate,) = rates
        return f"resampled {total} files from {rate} Hz to {sample_rate} Hz"
    parts = ", ".join(f"{n} from {rate} Hz" for rate, n in sorted(rates.items()))
    return f"resampled {total} files to {sample_rate} Hz: {parts}"


def cached_features(
    items: list[AudioItem],
    cfg: FeatureConfig,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> list[np.ndarray]:
    """The (T_i, cfg.dim) float32 features of every item, computed once into the cache entry
    `cache_dir / "audio" / feature_key(items, cfg)` (default cache_dir: default_cache_dir()) and
    read from it afterwards: frames.npy (every frame, in item order) and offsets.npy (item i
    is frames[offsets[i]:offsets[i + 1]]), memory-mapped read-only, never pickled."""
    cfg.validate()
    if not items:
        raise ConfigError("no audio files to compute features of")
    base = Path(cache_dir or default_cache_dir()) / "audio"  # beside text's tokenizer/, corpus/
    folder = base / feature_key(items, cfg)

    def build(tmp: Path) -> None:
        rates: Counter = Counter()
        pieces = []
        for item in items:
            wave, rate = load_audio(item.path)
            if rate != cfg.sample_rate:
                rates[rate] += 1
            try:
                pieces.append(compute_features(resample(wave, rate, cfg.sample_rate), cfg))
            except ConfigError as e:
                raise ConfigError(f"audio file {item.path}: {e}") from None
        if rates:
            log(_resample_report(rates, cfg.sample_rate))
        offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in pieces], out=offsets[1:])
        np.save(tmp / "frames.npy", np.concatenate(pieces), allow_pickle=False)
        np.save(tmp / "offsets.npy", offsets, allow_pickle=False)
        log(f"audio features: {len(items)} files, {offsets[-1]} frames of {cfg.dim} in {folder}")

    if build_once(folder, build, "offsets.npy"):
        log(f"audio features: using cached features in {folder}")
    frames = np.load(folder / "frames.npy", mmap_mode="r", allow_pickle=False)
    offsets = np.load(folder / "offsets.npy", allow_pickle=False)
    if len(offsets) != len(items) + 1 or frames.shape[1:] != (cfg.dim,):
        raise ConfigError(f"cache entry {folder} does not fit these files; delete it")
    frames = np.asarray(frames)  # a plain read-only view of the memory map
    return [frames[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
