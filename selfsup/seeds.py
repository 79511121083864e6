"""Seeds for every random stream of a run, derived from the run's seed and named here.

Every draw (data order, example building, masking, dropout, fine-tuning order, splits) takes a
generator seeded by `seed_for(seed, STREAM, *position)`, a pure function of its arguments: so
batches, masks and resumes do not depend on the process, the worker or Python's hash seed.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum


class Stream(IntEnum):
    """One number per random stream (the values are part of what a seed reproduces: never
    renumber one)."""

    EPOCH_ORDER = 1  # pretraining: permutation of the chunks in each epoch
    EXAMPLE = 2  # pretraining: building one example (pair cut, NSP/SOP choice)
    CORRUPT = 3  # pretraining: corrupting one batch (masking)
    DROPOUT = 4  # ranks > 0: their own dropout stream
    CHUNK_OFFSET = 5  # audio pretraining: where a long clip's chunks start in each epoch
    FINETUNE_ORDER = 11  # fine-tuning: length-bucketed order of each epoch
    ARTICLE_SPLIT = 17  # QA: which articles are held out
    TRAIN_LIMIT = 23  # fine-tuning: which examples `--train-limit` keeps
    LANGUAGE_SAMPLE = 37  # multilingual pretraining: each epoch's draw per language


# Held-out pretraining batches use the run's seed plus this offset, so they never share draws
# with training batches.
HELDOUT_OFFSET = 1_000_003


def seed_for(seed: int, stream: Stream, *position: int) -> int:
    """A stable 63-bit seed for `stream` at `position` (e.g. epoch, example, step)."""
    parts = (seed, *position, int(stream))
    h = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)
