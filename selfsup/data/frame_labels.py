"""Frame labels of audio files: one integer per frame of each file, as HuBERT's k-means targets
(arXiv:2106.07447, section 3.2). `selfsup cluster` writes them; the HuBERT data pipeline reads
them, resampled to the model's frames.

A labels folder holds

    labels.tsv     one line per audio file: its absolute path, a tab, its labels (space-separated
                   integers in [0, k), one per frame at the source's frame rate)
    labels.json    what they are (LABELS_FORMAT): k, the frames' geometry (sample_rate, hop,
                   offset, frame_rate), the source (mfcc, or a run and its layer), the features'
                   trim_db, the files and frames, how the centroids were fitted, cluster usage
    centroids.npy  the (k, D) centroids; centroids.json their note (selfsup.cluster)

Geometry: frame i of a source is centred on sample `offset + i * hop` of its file. MFCCs
computed on centred windows (selfsup.data.features: 25 ms every 10 ms at 16 kHz) have hop 160
and offset 0 (100 Hz); a convolutional encoder without padding (wav2vec 2.0's, HuBERT's) has
hop = its total stride (320) and offset = (receptive field - 1) / 2 (199.5 samples; 50 Hz).

Files are matched by their resolved absolute path, so a corpus listed as a folder, a relative
path or a manifest finds its labels from any working directory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfsup.errors import ConfigError

LABELS_FORMAT = "selfsup-frame-labels-v1"
LABELS_FILE, INFO_FILE, CENTROIDS_FILE = "labels.tsv", "labels.json", "centroids.npy"
# A file's label count may differ from its duration times the frame rate by this many frames:
# the edge frames each front end keeps or drops (centred MFCC windows add one, an unpadded conv
# drops about one), nothing more.
COUNT_TOLERANCE = 2


@dataclass(frozen=True)
class FrameGeometry:
    """Where a source's frames sit in a file: frame i centred on sample offset + i * hop, at
    sample_rate samples per second."""

    sample_rate: int
    hop: int  # samples from one frame to the next
    offset: float  # the sample at the centre of frame 0

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    @classmethod
    def of_conv(cls, sample_rate: int, stride: int, receptive_field: int) -> FrameGeometry:
        """The frames of an unpadded conv stack: frame t reads samples [t * stride, t * stride +
        receptive_field), centred on t * stride + (receptive_field - 1) / 2."""
        return cls(sample_rate, stride, (receptive_field - 1) / 2)


def resample_labels(
    labels: np.ndarray, source: FrameGeometry, target: FrameGeometry, n: int
) -> np.ndarray:
    """(n,) labels at the `target` frames from `labels` at the `source` frames, by the nearest
    centre: target frame j takes the source frame whose centre is closest to its own (a tie
    goes to the later one), clipped to the source's first and last frames. From 100 Hz MFCC
    frames to wav2vec 2.0's 50 Hz frames, frame j (centred on sample 320 j + 199.5) takes MFCC
    frame round(2 j + 1.25) = 2 j + 1; between equal geometries it is the identity."""
    if source.sample_rate != target.sample_rate:
        raise ConfigError(
            f"labels at {source.sample_rate} Hz audio cannot label frames of {target.sample_rate}"
            " Hz audio"
        )
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise ConfigError("no labels to resample")
    centres = target.offset + target.hop * np.arange(n, dtype=np.float64)  # (n,) in samples
    nearest = np.floor((centres - source.offset) / source.hop + 0.5).astype(np.int64)
    return labels[np.clip(nearest, 0, len(labels) - 1)]


def expected_frames(n_samples: int, geometry: FrameGeometry) -> float:
    """A file's duration in frames: n_samples / hop (what the label count is checked against)."""
    return n_samples / geometry.hop


def check_count(path: str, n_labels: int, n_samples: int, geometry: FrameGeometry) -> None:
    """A ConfigError unless `n_labels` is within COUNT_TOLERANCE frames of n_samples / hop."""
    want = expected_frames(n_samples, geometry)
    if abs(n_labels - want) > COUNT_TOLERANCE:
        raise ConfigError(
            f"labels for {path}: {n_labels} frames at {geometry.frame_rate:g} Hz, but its "
            f"{n_samples} samples ({n_samples / geometry.sample_rate:.2f} s) make {want:.1f} "
            f"(+-{COUNT_TOLERANCE}): the labels were made from other audio"
        )


def path_key(path: str | Path) -> str:
    """How a file is named in labels.tsv and matched: its resolved absolute path."""
    return str(Path(path).expanduser().resolve())


def write_labels(folder: Path, paths: list[str], labels: list[np.ndarray], info: dict) -> None:
    """labels.tsv (a line per file, in order) and labels.json (`info`, with the format) into
    `folder`, which the caller renames into place once everything is written."""
    with open(folder / LABELS_FILE, "w", encoding="utf-8") as f:
        for path, lab in zip(paths, labels, strict=True):
            f.write(f"{path_key(path)}\t{' '.join(map(str, np.asarray(lab).tolist()))}\n")
    note = {"format": LABELS_FORMAT, **info}
    (folder / INFO_FILE).write_text(json.dumps(note, indent=2) + "\n")


@dataclass
class FrameLabels:
    """A labels folder, read: its note (labels.json), geometry, k, and each file's labels."""

    folder: Path
    info: dict
    geometry: FrameGeometry
    k: int
    labels: dict[str, np.ndarray]  # path_key -> (n,) int32

    def of(self, path: str) -> np.ndarray:
        """The labels of the audio file `path`; a ConfigError naming it when there are none."""
        found = self.labels.get(path_key(path))
        if found is None:
            raise ConfigError(
                f"labels {self.folder} have no line for audio file {path}: run `selfsup cluster` "
                "on the same --data"
            )
        return found


def read_info(folder: str | Path) -> tuple[dict, FrameGeometry, int]:
    """(labels.json, its geometry, its k) of a labels folder; ConfigErrors for a missing or
    malformed folder."""
    folder = Path(folder)
    note = folder / INFO_FILE
    if not folder.is_dir() or not note.is_file():
        raise ConfigError(
            f"{folder} is not a labels folder (no {INFO_FILE}): make one with `selfsup cluster`"
        )
    try:
        info = json.loads(note.read_text())
        if info.get("format") != LABELS_FORMAT:
            raise ValueError(f"format {info.get('format')!r}, not {LABELS_FORMAT}")
        geometry = FrameGeometry(int(info["sample_rate"]), int(info["hop"]),
                                 float(info["offset"]))  # fmt: skip
        k = int(info["k"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"{note} is not a valid labels note: {e}") from None
    if geometry.hop < 1 or geometry.sample_rate < 1 or k < 1 or not math.isfinite(geometry.offset):
        raise ConfigError(f"{note} gives hop {geometry.hop}, sample_rate "
                          f"{geometry.sample_rate}, k {k}: not valid labels")  # fmt: skip
    return info, geometry, k


def read_labels(folder: str | Path) -> FrameLabels:
    """A labels folder as `write_labels` wrote it; a one-line ConfigError naming the file and
    line of anything malformed (no tab, a label that is not an integer in [0, k), a file listed
    twice)."""
    folder = Path(folder)
    info, geometry, k = read_info(folder)
    table = folder / LABELS_FILE
    if not table.is_file():
        raise ConfigError(f"labels folder {folder} has no {LABELS_FILE}")
    labels: dict[str, np.ndarray] = {}
    with open(table, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            path, tab, values = line.rpartition("\t")
            where = f"{table}, line {line_no}"
            if not tab or not path:
                raise ConfigError(f"{where}: expected a path, a tab and the labels")
            try:
                lab = np.array(values.split(), dtype=np.int64)
            except ValueError:
                raise ConfigError(f"{where}: the labels are not integers") from None
            if len(lab) == 0:
                raise ConfigError(f"{where}: no labels for {path}")
            if lab.min() < 0 or lab.max() >= k:
                raise ConfigError(f"{where}: labels must be in [0, {k}), got {lab.min()}..."
                                  f"{lab.max()}")  # fmt: skip
            if path in labels:
                raise ConfigError(f"{where}: {path} is listed twice")
            labels[path] = lab.astype(np.int32)
    if not labels:
        raise ConfigError(f"{table} lists no files")
    return FrameLabels(folder, info, geometry, k, labels)
