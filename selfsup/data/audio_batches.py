"""Audio pretraining batches: files -> cached features -> length-bucketed, randomly cropped,
corrupted batches; batch k a pure function of (seed, k), so a resumed run sees the batches an
uninterrupted one would.

The objective says what it needs (`audio_needs()`: a corruption applied to each collated batch
with the batch's generator); the pipeline knows no objective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from selfsup.data.audio import collate_frames, crop, length_buckets, list_audio
from selfsup.data.features import FeatureConfig, cached_features, cmvn, global_stats
from selfsup.data.text import split_chunks
from selfsup.errors import ConfigError
from selfsup.seeds import Stream, seed_for


@dataclass
class AudioDataConfig:
    """Audio pretraining data: folders or manifests of audio files, their features, crops."""

    paths: list[str] = field(default_factory=list)  # folders of audio files or CSV/TSV manifests
    features: FeatureConfig = field(default_factory=FeatureConfig)
    max_frames: int = 500  # each example a random crop of at most this many frames (5 s)
    heldout_every: int = 20  # every Nth file (in sorted order) is held out for evaluation
    heldout_max: int = 256
    num_workers: int = 0
    cache_dir: str | None = None

    def validate(self, model) -> None:
        self.features.validate()
        if self.max_frames < 1:
            raise ConfigError(f"data.max_frames must be positive, got {self.max_frames}")
        if self.heldout_every < 1 or self.heldout_max < 0 or self.num_workers < 0:
            raise ConfigError("data.heldout_every must be >= 1, heldout_max and num_workers >= 0")
        if -(-self.max_frames // model.stack) > model.max_len:
            raise ConfigError(
                f"data.max_frames {self.max_frames} / model.stack {model.stack} is beyond "
                f"model.max_len {model.max_len}"
            )


@dataclass(frozen=True)
class AudioNeeds:
    """What an objective asks of the audio pipeline: a corruption (batch, generator) -> batch
    applied to each collated batch of {features, padding_mask}."""

    corrupt: Callable[[dict, torch.Generator], dict] | None = None


class AudioBatches(torch.utils.data.Dataset):
    """Micro-batch k of `batch_size` crops of the clips `ids`. Each epoch groups the clips by
    length (selfsup.data.audio.length_buckets, seeded by the epoch) so a batch holds clips of
    similar length and little padding; every example is a random crop of at most `max_frames`
    frames, seeded by its position in the run. Every tensor has the batch's examples as its first
    dimension, so distributed.RankShard cuts a rank's share out of the whole corrupted batch."""

    def __init__(
        self,
        frames: list[np.ndarray],
        ids: np.ndarray,
        batch_size: int,
        max_frames: int,
        seed: int,
        corrupt: Callable[[dict, torch.Generator], dict] | None = None,
        shuffle: bool = True,
    ):
        if len(ids) < batch_size and shuffle:
            raise ConfigError(
                f"{len(ids)} training clips make no batch of {batch_size}: use a smaller "
                "--batch-size or more data"
            )
        self.frames, self.ids, self.batch_size = frames, np.asarray(ids), batch_size
        self.max_frames, self.seed, self.corrupt, self.shuffle = max_frames, seed, corrupt, shuffle
        self.lengths = np.array([min(len(frames[i]), max_frames) for i in self.ids])
        self._epoch: tuple[int, list[list[int]]] | None = None

    def __len__(self) -> int:  # batches per epoch
        return max(1, len(self.ids) // self.batch_size)

    def _batches(self, epoch: int) -> list[list[int]]:
        if not self.shuffle:
            B = self.batch_size
            return [list(range(s, min(s + B, len(self.ids)))) for s in range(0, len(self.ids), B)]
        if self._epoch is None or self._epoch[0] != epoch:
            rng = np.random.default_rng(seed_for(self.seed, Stream.EPOCH_ORDER, epoch))
            groups = length_buckets(self.lengths, self.batch_size, rng)
            groups = [g for g in groups if len(g) == self.batch_size][: len(self)]  # full only
            self._epoch = (epoch, groups)
        return self._epoch[1]

    def examples(self, k: int) -> list[np.ndarray]:
        """The crops of batch k, before collating and corruption."""
        epoch, j = divmod(k, len(self)) if self.shuffle else (0, k)
        out = []
        for n, i in enumerate(self._batches(epoch)[j]):
            clip = self.frames[int(self.ids[i])]
            if self.shuffle:
                rng = np.random.default_rng(seed_for(self.seed, Stream.EXAMPLE, k, n))
                out.append(crop(clip, self.max_frames, rng))
            else:  # held-out: the clip's start, the same every time
                out.append(clip[: self.max_frames])
        return out

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        batch = collate_frames(self.examples(k))  # features (B, T, F), padding_mask (B, T)
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
) -> AudioData:
    """Training and held-out batches over `frames` (every heldout_every-th clip held out)."""
    train_ids, held_ids = split_chunks(len(frames), cfg.heldout_every, cfg.heldout_max)
    stats = None
    if cfg.features.cmvn == "global":  # statistics of the training clips only
        mean, std = global_stats([frames[i] for i in train_ids])
        frames = [cmvn(f, mean, std) for f in frames]
        stats = (mean, std)
    batches = AudioBatches(frames, train_ids, batch_size, cfg.max_frames, seed, needs.corrupt)
    eval_batches = []
    if len(held_ids):
        held = AudioBatches(frames, held_ids, 32, cfg.max_frames, heldout_seed, needs.corrupt,
                            shuffle=False)  # fmt: skip
        eval_batches = [held[k] for k in range(-(-len(held_ids) // 32))]
    seconds = sum(len(f) for f in frames) * cfg.features.hop_length / cfg.features.sample_rate
    info = {
        "clips": len(frames),
        "frames": int(sum(len(f) for f in frames)),
        "hours": round(seconds / 3600, 4),
        "train_clips": int(len(train_ids)),
        "heldout_clips": int(len(held_ids)),
        "feature_dim": int(frames[0].shape[1]),
    }
    return AudioData(batches, eval_batches, info, stats)
