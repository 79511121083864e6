"""Audio pretraining batches: files -> cached features -> length-bucketed, randomly cropped,
corrupted batches; batch k a pure function of (seed, k), so a resumed run sees the batches an
uninterrupted one would.

Examples of a clip of T frames, with M = data.max_frames:
    T <= M        the whole clip, one example
    M < T < 2M    one random crop of M frames per epoch
    T >= 2M       (data.long_clips="chunk", the default) T // M consecutive chunks of M frames,
                  each an example; each epoch they start at a random offset in [0, T mod M]
                  (drawn from the run's seed, the epoch and the clip, so a resumed run cuts
                  where an uninterrupted one did), so the frames left over move between epochs.
                  data.long_clips="crop" keeps one random crop per epoch (the behaviour before
                  chunking, which run configs written before it keep).
Held-out clips are read from their start: the first M frames, or every chunk at offset 0.

The objective says what it needs (`audio_needs()`: a corruption applied to each collated batch
with the batch's generator); the pipeline knows no objective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from selfsup.data.audio import collate_frames, length_buckets, list_audio
from selfsup.data.features import FeatureConfig, cached_features, cmvn, global_stats
from selfsup.data.text import split_chunks
from selfsup.errors import ConfigError
from selfsup.keys import IGNORE, TARGETS
from selfsup.seeds import Stream, seed_for

LONG_CLIPS = ("chunk", "crop")


@dataclass
class AudioDataConfig:
    """Audio pretraining data: folders or manifests of audio files, their features, crops."""

    paths: list[str] = field(default_factory=list)  # folders of audio files or CSV/TSV manifests
    features: FeatureConfig = field(default_factory=FeatureConfig)
    max_frames: int = 500  # each example a random crop of at most this many frames (5 s)
    long_clips: str = "chunk"  # a clip of 2+ max_frames: "chunk" into max_frames each, or "crop"
    heldout_every: int = 20  # every Nth file (in sorted order) is held out for evaluation
    heldout_max: int = 256
    num_workers: int = 0
    cache_dir: str | None = None

    def validate(self, model) -> None:
        self._validate_common()
        if -(-self.max_frames // model.stack) > model.max_len:
            raise ConfigError(
                f"data.max_frames {self.max_frames} / model.stack {model.stack} is beyond "
                f"model.max_len {model.max_len}"
            )

    def _validate_common(self) -> None:
        self.features.validate()
        if self.max_frames < 1:
            raise ConfigError(f"data.max_frames must be positive, got {self.max_frames}")
        if self.long_clips not in LONG_CLIPS:
            raise ConfigError(
                f"data.long_clips {self.long_clips!r}: choose from {', '.join(LONG_CLIPS)}"
            )
        if self.heldout_every < 1 or self.heldout_max < 0 or self.num_workers < 0:
            raise ConfigError("data.heldout_every must be >= 1, heldout_max and num_workers >= 0")

    def frame_targets(self, items: list, frames: list[np.ndarray], cfg) -> FrameTargets | None:
        """Per-clip targets read with the data (a subclass's, e.g. HuBERT's k-means labels), or
        None: called once the features are read, before the model is built, with the run config
        `cfg`, which it may size to them (a labels' k, as a tokenizer sizes a text model)."""
        return None


def _wave_features() -> FeatureConfig:
    return FeatureConfig(kind="wave", cmvn="utterance")


@dataclass
class WaveDataConfig(AudioDataConfig):
    """Waveform pretraining data (wav2vec 2.0, HuBERT, CPC): the same files, crops and cache,
    each "frame" one sample (features.kind "wave", (T, 1)), normalised per utterance to zero
    mean and unit variance as wav2vec 2.0 does (features.cmvn "utterance"); crops of at most
    max_frames samples (4 s at 16 kHz)."""

    features: FeatureConfig = field(default_factory=_wave_features)
    max_frames: int = 64000

    def validate(self, model) -> None:
        self._validate_common()
        if self.features.kind != "wave":
            raise ConfigError(
                f"this objective reads the waveform: data.features.kind must be wave, not "
                f"{self.features.kind!r}"
            )
        need = getattr(model, "receptive_field", 1)
        if self.max_frames < need:
            raise ConfigError(
                f"data.max_frames {self.max_frames} samples is shorter than the model's "
                f"receptive field ({need} samples)"
            )


@dataclass(frozen=True)
class FrameTargets:
    """Integer targets of every clip at a coarser rate than its frames, cropped together with
    them (HuBERT's cluster labels at the encoder's frame rate, over waveform samples):
    `labels[i][j]` belongs to clip i's frames from j * hop on. Crops and chunks then start at a
    multiple of `hop` frames, and an example cut at frame s, n frames long, carries
    labels[i][s // hop : (s + n) // hop], batched as `key` (B, T_targets) long, IGNORE after
    each example's own. `note` is what the run's log says about them."""

    labels: list[np.ndarray]
    hop: int
    key: str = TARGETS
    note: str = ""


@dataclass(frozen=True)
class AudioNeeds:
    """What an objective asks of the audio pipeline: a corruption (batch, generator) -> batch
    applied to each collated batch of {features, padding_mask}."""

    corrupt: Callable[[dict, torch.Generator], dict] | None = None


class AudioBatches(torch.utils.data.Dataset):
    """Micro-batch k of `batch_size` examples of the clips `ids`: a clip's whole frames, a random
    crop of `max_frames` of them, or (`chunk`, clips of 2 * max_frames or more) its chunks, as
    the module docstring says. Each epoch groups the examples by length
    (selfsup.data.audio.length_buckets, seeded by the epoch) so a batch holds examples of similar
    length and little padding; crops are seeded by their position in the run, chunk offsets by
    (epoch, clip). Every tensor has the batch's examples as its first dimension, so
    distributed.RankShard cuts a rank's share out of the whole corrupted batch."""

    def __init__(
        self,
        frames: list[np.ndarray],
        ids: np.ndarray,
        batch_size: int,
        max_frames: int,
        seed: int,
        corrupt: Callable[[dict, torch.Generator], dict] | None = None,
        shuffle: bool = True,
        chunk: bool = True,
        targets: FrameTargets | None = None,
    ):
        self.frames, self.ids, self.batch_size = frames, np.asarray(ids), batch_size
        # FrameTargets: crops and chunk offsets on multiples of its hop, its labels cut alongside
        self.targets, self.align = targets, 1 if targets is None else targets.hop
        if targets is not None and (len(targets.labels) != len(frames) or max_frames % targets.hop):
            raise ValueError("frame targets need one array per clip and max_frames a multiple "
                             "of their hop")  # fmt: skip
        self.max_frames, self.seed, self.corrupt, self.shuffle = max_frames, seed, corrupt, shuffle
        # example u is chunk part[u] of count[u] of clip clip[u] (count 1: the clip or a crop)
        lengths = np.array([len(frames[i]) for i in self.ids], dtype=np.int64)
        counts = np.maximum(1, lengths // max_frames) if chunk else np.ones_like(lengths)
        self.clip = np.repeat(self.ids, counts)
        self.count = np.repeat(counts, counts)
        self.part = np.arange(len(self.clip)) - np.repeat(np.cumsum(counts) - counts, counts)
        self.lengths = np.minimum(np.repeat(lengths, counts), max_frames)
        self.chunked_clips = int((counts > 1).sum())
        self.chunks = int(counts[counts > 1].sum())
        if len(self.clip) < batch_size and shuffle:
            raise ConfigError(
                f"{len(self.clip)} training examples ({len(self.ids)} clips) make no batch of "
                f"{batch_size}: use a smaller --batch-size or more data"
            )
        self._epoch: tuple[int, list[list[int]]] | None = None

    def __len__(self) -> int:  # batches per epoch
        return max(1, len(self.clip) // self.batch_size)

    def _batches(self, epoch: int) -> list[list[int]]:
        if not self.shuffle:
            B, n = self.batch_size, len(self.clip)
            return [list(range(s, min(s + B, n))) for s in range(0, n, B)]
        if self._epoch is None or self._epoch[0] != epoch:
            rng = np.random.default_rng(seed_for(self.seed, Stream.EPOCH_ORDER, epoch))
            groups = length_buckets(self.lengths, self.batch_size, rng)
            groups = [g for g in groups if len(g) == self.batch_size][: len(self)]  # full only
            self._epoch = (epoch, groups)
        return self._epoch[1]

    def windows(self, k: int) -> list[tuple[int, int, int]]:
        """(clip, first frame, frames) of each example of batch k."""
        epoch, j = divmod(k, len(self)) if self.shuffle else (0, k)
        out, M, a = [], self.max_frames, self.align
        for n, u in enumerate(self._batches(epoch)[j]):
            i, count = int(self.clip[u]), int(self.count[u])
            T = len(self.frames[i])
            if count > 1:  # one of the clip's consecutive chunks
                start = self._offset(epoch, i, T - count * M) + int(self.part[u]) * M
                out.append((i, start, M))
            elif self.shuffle and T > M:  # (a generator only where it crops: cheap)
                rng = np.random.default_rng(seed_for(self.seed, Stream.EXAMPLE, k, n))
                out.append((i, a * int(rng.integers(0, (T - M) // a + 1)), M))  # a = 1: crop()'s
            else:  # a clip that fits; held-out: the clip's start, the same every time
                out.append((i, 0, min(T, M)))
        return out

    def examples(self, k: int) -> list[np.ndarray]:
        """The crops and chunks of batch k, before collating and corruption."""
        return [self.frames[i][s : s + n] for i, s, n in self.windows(k)]

    def _offset(self, epoch: int, clip: int, slack: int) -> int:
        """Where clip `clip`'s chunks start in `epoch`: uniform in [0, slack] (0 when held out),
        the same for every chunk of the clip in that epoch, so they never overlap."""
        if not self.shuffle or slack == 0:
            return 0
        rng = np.random.default_rng(seed_for(self.seed, Stream.CHUNK_OFFSET, epoch, clip))
        return self.align * int(rng.integers(0, slack // self.align + 1))

    def _cut_targets(self, windows: list[tuple[int, int, int]]) -> torch.Tensor:
        """(B, T_targets) long: each example's frame targets, IGNORE after them."""
        h = self.targets.hop
        parts = [self.targets.labels[i][s // h : (s + n) // h] for i, s, n in windows]
        out = torch.full((len(parts), max(len(p) for p in parts)), IGNORE, dtype=torch.long)
        for row, p in zip(out, parts, strict=True):
            row[: len(p)] = torch.from_numpy(np.asarray(p, dtype=np.int64))
        return out

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        windows = self.windows(k)
        batch = collate_frames([self.frames[i][s : s + n] for i, s, n in windows])  # (B, T, F)
        if self.targets is not None:
            batch[self.targets.key] = self._cut_targets(windows)
        if self.corrupt is not None:
            g = torch.Generator().manual_seed(seed_for(self.seed, Stream.CORRUPT, k))
            batch = self.corrupt(batch, g)
        return batch


@dataclass
class AudioData:
    batches: AudioBatches
    eval_batches: list[dict]
    stats: dict
    feature_stats: tuple[np.ndarray, np.ndarray] | None  # global CMVN (mean, std), if used


def load_frames(cfg: AudioDataConfig, log=print) -> tuple[list, list[np.ndarray]]:
    """The data's audio items and their feature frames (cached by files and feature settings)."""
    if not cfg.paths:
        raise ConfigError("audio pretraining needs --data: folders of audio files or manifests")
    items = [item for p in cfg.paths for item in list_audio(p)]
    frames = cached_features(items, cfg.features, cfg.cache_dir, log=log)
    return items, frames


def prepare_audio_data(
    cfg: AudioDataConfig,
    frames: list[np.ndarray],
    batch_size: int,
    seed: int,
    needs: AudioNeeds,
    heldout_seed: int,
    targets: FrameTargets | None = None,
) -> AudioData:
    """Training and held-out batches over `frames` (every heldout_every-th clip held out), with
    the clips' `targets` when the data has them (AudioDataConfig.frame_targets)."""
    train_ids, held_ids = split_chunks(len(frames), cfg.heldout_every, cfg.heldout_max)
    stats = None
    if cfg.features.cmvn == "global":  # statistics of the training clips only
        mean, std = global_stats([frames[i] for i in train_ids])
        frames = [cmvn(f, mean, std) for f in frames]
        stats = (mean, std)
    chunk = cfg.long_clips == "chunk"
    batches = AudioBatches(frames, train_ids, batch_size, cfg.max_frames, seed, needs.corrupt,
                           chunk=chunk, targets=targets)  # fmt: skip
    eval_batches = []
    if len(held_ids):
        held = AudioBatches(frames, held_ids, 32, cfg.max_frames, heldout_seed, needs.corrupt,
                            shuffle=False, chunk=chunk, targets=targets)  # fmt: skip
        eval_batches = [held[k] for k in range(-(-len(held.clip) // 32))]
    seconds = sum(len(f) for f in frames) / cfg.features.frame_rate
    info = {
        "clips": len(frames),
        "frames": int(sum(len(f) for f in frames)),
        "hours": round(seconds / 3600, 4),
        "train_clips": int(len(train_ids)),
        "heldout_clips": int(len(held_ids)),
        "train_examples": int(len(batches.clip)),  # an epoch's examples: clips, crops, chunks
        "chunked_clips": batches.chunked_clips,
        "chunks": batches.chunks,
        "feature_dim": int(frames[0].shape[1]),
    }
    return AudioData(batches, eval_batches, info, stats)
