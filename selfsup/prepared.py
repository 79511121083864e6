"""What a modality's pretraining recipe prepares for the shared part of `selfsup pretrain`
(selfsup/pretraining.py): one dataclass, in its own module so that every modality's recipe can
return it without importing the others."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Prepared:
    """What a modality's recipe hands the shared part of pretraining: the objective (built,
    on the CPU), its batches, the run's config.json record, the files it adds to the run folder
    (`save`: a tokenizer, feature statistics) and its summary (`summarise(final) -> dict`,
    which also logs the run's last line)."""

    model: torch.nn.Module
    batches: torch.utils.data.Dataset
    eval_batches: list[dict]
    stats: dict
    record: dict
    save: Callable[[Path], None]
    summarise: Callable[[dict, float, Path], dict]
