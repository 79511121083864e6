"""Speech data: read audio files (wav, flac, ogg) as mono float32 at one sample rate, list a
corpus from a folder or a CSV/TSV manifest, and batch frame features (random crops, padding with
a mask, length buckets).

Frame features themselves (log-mel, MFCC, deltas, CMVN) and their on-disk cache live in
selfsup/data/features.py. Every random choice takes the caller's `np.random.Generator`, so a
batch is a pure function of the run's seed.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from selfsup.errors import ConfigError
from selfsup.keys import FEATURES, PADDING_MASK

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
MANIFEST_DELIMITERS = {".csv": ",", ".tsv": "\t"}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def audio_module(name: str):
    """Import soundfile or librosa (the `audio` extra), or a ConfigError saying how to get it."""
    try:
        return __import__(name)
    except ImportError:
        raise ConfigError(f"audio needs the {name} package (pip install selfsup[audio])") from None


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """(samples, sample rate) of an audio file at its own rate: float32, mono (channels
    averaged), 1-D. An unreadable, non-audio or empty file is a ConfigError naming it; a file cut
    short inside its samples reads as the samples that are there (libsndfile's behaviour)."""
    soundfile = audio_module("soundfile")
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"audio file {p} does not exist")
    try:
        data, rate = soundfile.read(p, dtype="float32", always_2d=True)  # (S, channels)
    except (RuntimeError, OSError) as e:  # soundfile.LibsndfileError is a RuntimeError
        raise ConfigError(f"cannot read audio file {p}: {_one_line(e)}") from None
    if data.shape[0] == 0:
        raise ConfigError(f"audio file {p} holds no samples")
    wave = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if not np.isfinite(wave).all():
        raise ConfigError(f"audio file {p} holds NaN or infinite samples")
    return np.ascontiguousarray(wave, dtype=np.float32), int(rate)


def resample(wave: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """`wave` from `rate` to `sample_rate` Hz with librosa's soxr_hq resampler (ceil(S * ratio)
    samples); unchanged when the rates are equal."""
    if rate == sample_rate:
        return wave
    librosa = audio_module("librosa")
    out = librosa.resample(wave, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
    return np.ascontiguousarray(out, dtype=np.float32)


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """The samples of an audio file as float32, mono, 1-D at `sample_rate` Hz (resampled with
    soxr_hq when the file's rate differs). Bad files are a ConfigError (see load_audio)."""
    wave, rate = load_audio(path)
    return resample(wave, rate, sample_rate)


@dataclass
class AudioItem:
    """One utterance of a corpus: its file, and what is known about it."""

    path: str
    label: str | None = None
    speaker: str | None = None
    duration: float | None = None  # seconds, when the manifest gives it


def _pattern_regex(pattern: str) -> re.Pattern:
    """`{name}` fields between literal text: a field runs up to the first occurrence of the text
    that follows it (so `{label}_{speaker}` splits at the first `_`); the last field takes the
    rest of the name."""
    pieces = re.split(r"\{(\w+)\}", pattern)  # literal, field, literal, field, ..., literal
    literals, names = pieces[0::2], pieces[1::2]
    if not names:
        raise ConfigError(f"file name pattern {pattern!r} has no {{field}}")
    if len(set(names)) < len(names):
        raise ConfigError(f"file name pattern {pattern!r} repeats a field")
    if any("{" in t or "}" in t for t in literals):
        raise ConfigError(f"file name pattern {pattern!r}: fields are {{name}} (letters, _)")
    if any(not t for t in literals[1:-1]):
        raise ConfigError(f"file name pattern {pattern!r}: two fields need text between them")
    regex = re.escape(literals[0])
    for name, after in zip(names, literals[1:], strict=True):
        field = f"(?:(?!{re.escape(after)}).)+" if after else ".+"
        regex += f"(?P<{name}>{field}){re.escape(after)}"
    return re.compile(regex)


def parse_name(pattern: str, stem: str) -> dict[str, str] | None:
    """The fields of a file name (without its suffix) written by `pattern`, e.g.
    parse_name("{label}_{speaker}_{index}", "7_jackson_32") -> {"label": "7", "speaker":
    "jackson", "index": "32"}; None when the name does not fit the pattern."""
    m = _pattern_regex(pattern).fullmatch(stem)
    return m.groupdict() if m else None


def _from_name(path: Path, pattern: str | None, label_column: str, speaker_column: str):
    if pattern is None:
        return None, None
    fields = parse_name(pattern, path.stem)
    if fields is None:
        raise ConfigError(f"file name {path.name} does not match the pattern {pattern!r}")
    return fields.get(label_column), fields.get(speaker_column)


def _list_folder(folder: Path, pattern, label_column, speaker_column) -> list[AudioItem]:
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in AUDIO_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise ConfigError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {folder}")
    return [AudioItem(str(p), *_from_name(p, pattern, label_column, speaker_column)) for p in files]


def _cell(row: dict, name: str) -> str | None:
    value = (row.get(name) or "").strip()  # a short row gives None
    return value or None


def _list_manifest(
    manifest: Path, pattern, label_column, speaker_column, path_column
) -> list[AudioItem]:
    delimiter = MANIFEST_DELIMITERS[manifest.suffix.lower()]
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = reader.fieldnames or []
        if path_column not in columns:
            raise ConfigError(
                f"manifest {manifest} has no {path_column!r} column in its header row "
                f"(columns: {', '.join(columns) or 'none'})"
            )
        items = []
        for row in reader:
            line = reader.line_num
            name = _cell(row, path_column)
            if name is None:
                raise ConfigError(f"manifest {manifest}, line {line}: empty {path_column!r}")
            path = Path(name).expanduser()
            path = path if path.is_absolute() else manifest.parent / path
            if not path.is_file():
                raise ConfigError(f"manifest {manifest}, line {line}: {path} does not exist")
            label, speaker = _from_name(path, pattern, label_column, speaker_column)
            duration = _cell(row, "duration")
            try:
                duration = None if duration is None else float(duration)
            except ValueError:
                raise ConfigError(
                    f"manifest {manifest}, line {line}: duration {duration!r} is not a number"
                ) from None
            label = _cell(row, label_column) if label_column in columns else label
            speaker = _cell(row, speaker_column) if speaker_column in columns else speaker
            items.append(AudioItem(str(path), label, speaker, duration))
    if not items:
        raise ConfigError(f"manifest {manifest} lists no files")
    return items


def list_audio(
    source: str | Path,
    label_column: str = "label",
    speaker_column: str = "speaker",
    path_column: str = "path",
    pattern: str | None = None,
) -> list[AudioItem]:
    """The utterances of a corpus, from either

    - a folder, searched recursively for .wav/.flac/.ogg files (sorted; hidden files and
      folders skipped), or
    - a .csv/.tsv manifest with a header row: a `path_column` (paths relative to the
      manifest's folder), and optional label, speaker and `duration` (seconds) columns.

    `pattern` (e.g. "{label}_{speaker}_{index}") reads fields from each file name; the fields
    named `label_column` and `speaker_column` become the item's label and speaker (a manifest's
    own columns win). Every problem is a one-line ConfigError."""
    src = Path(source).expanduser()
    if not src.exists():
        raise ConfigError(f"audio source {src} does not exist")
    if pattern is not None:
        _pattern_regex(pattern)  # a bad pattern fails before any file is read
    if src.is_dir():
        return _list_folder(src, pattern, label_column, speaker_column)
    if src.suffix.lower() in MANIFEST_DELIMITERS:
        return _list_manifest(src, pattern, label_column, speaker_column, path_column)
    raise ConfigError(f"audio source {src} is neither a folder nor a .csv/.tsv manifest")


def crop(features: np.ndarray, max_frames: int, rng: np.random.Generator) -> np.ndarray:
    """A random contiguous window of `max_frames` frames (the first axis) of `features`; the
    whole array when it is not longer. Draws from `rng` only when it crops."""
    if max_frames < 1:
        raise ConfigError(f"max_frames must be at least 1, got {max_frames}")
    T = len(features)
    if T <= max_frames:
        return features
    start = int(rng.integers(0, T - max_frames + 1))
    return features[start : start + max_frames]


def collate_frames(frames: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """A batch of (T_i, F) frame arrays: {"features": (B, T, F) float32 zero-padded to the
    longest, "padding_mask": (B, T) bool, True on padding}."""
    if not frames:
        raise ValueError("collate_frames needs at least one example")
    dims = {f.shape[1:] for f in frames}
    if len(dims) > 1 or any(f.ndim != 2 for f in frames):
        raise ValueError(f"frames must all be (T, F) with one F, got shapes {sorted(dims)}")
    lengths = np.array([len(f) for f in frames])
    T = int(lengths.max())
    out = np.zeros((len(frames), T, frames[0].shape[1]), dtype=np.float32)  # (B, T, F)
    for row, f in zip(out, frames, strict=True):
        row[: len(f)] = f
    padding = np.arange(T) >= lengths[:, None]  # (B, T)
    return {FEATURES: torch.from_numpy(out), PADDING_MASK: torch.from_numpy(padding)}


def length_buckets(
    lengths: list[int] | np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[list[int]]:
    """Batches of example indices of similar length, so little of a batch is padding: indices
    sorted by length (ties broken at random), cut into runs of `batch_size` (the last may be
    shorter), the runs shuffled. Every index appears in exactly one batch."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    lengths = np.asarray(lengths)
    order = np.lexsort((rng.random(len(lengths)), lengths))  # by length, then the random key
    batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
