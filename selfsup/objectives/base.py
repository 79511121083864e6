"""The contract between an objective and the training loop, for every modality.

An objective is an `nn.Module` that owns its encoder and heads and declares:

- `terms`: each value its forward returns, mapped to the count it is a *sum* over
  (`{"mlm_loss": "masked", "mlm_acc": "masked", "nsp_loss": "examples", ...}`);
- `loss_terms`: which of those values make up the training loss;
- `counts(batch)`: those counts, computed from the batch alone (before any forward), as numbers;
- `work`: the count that measures work in logs and throughput (tokens, frames, images);
- `batch_level`: whether its loss depends on batch statistics (negatives, cross-correlation,
  variance, BatchNorm) instead of being a sum of per-item terms;
- optionally `after_step()`, called once after every optimizer step (a moving-average target);
- optionally `warnings(metrics)`, one-line warnings (a collapsing codebook) that the loop logs
  after every evaluation, from its held-out metrics;
- optionally a class method `init_from(path) -> FolderInit`: what a folder of another library's
  weights gives a new run (`pretrain --init`, selfsup/pretraining_init.py);
- `modality` (text, audio, ...): which pipeline feeds it, with its `model_config` and
  `data_config` classes (BERT's and text's by default).

The loop adds the counts of every micro-batch of one optimizer step and of every rank (one
all-reduce), then trains on `sum_k value_k / count_k` over the loss terms: so one global batch
trains the same however it is split over processes or accumulation steps, for every loss that is
a sum of per-item terms (torchtune's count-normalised loss, fairseq's sample_size). A batch-level
objective cannot be split into accumulation steps (the loop refuses it); across ranks it gathers
what its loss needs (`distributed.gather_with_grad`) and returns per-rank sums over a count it
declares, e.g. its local anchors, or the whole-batch value over a count of 1 per rank.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


class Objective(nn.Module):
    """Defaults for the declarations above; subclasses set `terms`, `loss_terms` and `work` and
    implement `counts` and `forward`."""

    modality: str = "text"
    terms: dict[str, str] = {}
    loss_terms: tuple[str, ...] = ()
    work: str = "examples"
    batch_level: bool = False
    # Trainable parameters that some batches leave unused in forward: DDP must then look for
    # them every step. (Parameters never used should be frozen instead: requires_grad_(False).)
    unused_parameters: bool = False

    @classmethod
    def extra_tokens(cls, cfg) -> list[str]:
        """Special tokens the objective needs in the vocabulary (T5's sentinels); the
        pretraining adds them to the tokenizer before the model is built."""
        return []

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        raise NotImplementedError

    def after_step(self) -> None:
        """Called by the loop after every optimizer step; nothing by default."""

    def warnings(self, metrics: dict[str, float]) -> list[str]:
        """One-line warnings about the held-out `metrics` (the means `evaluate` returns, keys
        without the `eval_` prefix), logged by the loop after every evaluation; none by
        default."""
        return []


@dataclass
class FolderInit:
    """What a folder gives a new run through an objective's `init_from` (pretrain --init):
    `model` (the run's model section), `objective` (settings of the objective's config: shapes,
    task numbers), `features` (settings of data.features: how the model reads its input),
    `weights()` -> (the objective's state dict, all of it or a part; a warning for the log or
    None) and `describe`, the folder's kind in words."""

    model: Any
    objective: dict[str, Any]
    features: dict[str, Any]
    weights: Callable[[], tuple[dict, str | None]]
    describe: str


def normalise(sums: dict[str, float], counts: dict[str, float], terms: dict[str, str]) -> dict:
    """Means from sums: each value over its count (0 when the count is 0), plus `loss`."""
    return {k: v / counts[terms[k]] if counts[terms[k]] else 0.0 for k, v in sums.items()}


def total_loss(means: dict[str, float], loss_terms: tuple[str, ...]) -> float:
    return sum(means[k] for k in loss_terms)


def batch_loss(objective: Objective, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss the loop trains on for this one batch in one process: each loss term's sum over
    its count, added (a convenience for tests and notebooks; the loop adds counts over
    micro-batches and ranks first)."""
    out, counts = objective(batch), objective.counts(batch)
    terms = objective.terms
    return sum(out[k] / max(counts[terms[k]], 1) for k in objective.loss_terms)
