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


def eval_summary(steps: int, final: dict, minutes: float, stats: dict) -> dict:
    """A run's summary.json: its steps and minutes, the last held-out means (`eval_` values
    of the final row) and the data's statistics."""
    return {
        "steps": steps,
        "minutes": round(minutes, 2),
        **{k: v for k, v in final.items() if k.startswith("eval_")},
        **stats,
    }
