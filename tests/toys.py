"""Toy objectives that hold the core to its contract: nothing in them is text, and the loop and
the distributed code must train them unchanged (importable as `toys`: tests/ is on sys.path)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed
from selfsup.keys import IGNORE
from selfsup.objectives.base import Objective

V, T = 40, 12  # vocabulary and length of text_batch


def text_batch(k: int, n: int = 8) -> dict[str, torch.Tensor]:
    """Random tokens, ~30% masked (at least one per row, so every row is scored), pair labels
    and class labels: rows hold unequal numbers of masked tokens."""
    g = torch.Generator().manual_seed(k)
    ids = torch.randint(5, V, (n, T), generator=g)
    ids[:, 0] = 2
    lengths = torch.randint(4, T + 1, (n,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    chosen = (torch.rand(n, T, generator=g) < 0.3) & mask.bool()
    chosen[:, 0], chosen[:, 1] = False, True
    return {
        "input_ids": torch.where(chosen, torch.full_like(ids, 4), ids) * mask,
        "attention_mask": mask,
        "token_type_ids": torch.zeros_like(ids),
        "labels": torch.where(chosen, ids, torch.full_like(ids, IGNORE)),
        "pair_labels": torch.randint(0, 2, (n,), generator=g),
        # a quarter unlabelled: halves of a batch hold unequal numbers of labelled examples
        "class_labels": torch.where(
            torch.rand(n, generator=g) < 0.25, IGNORE, torch.randint(0, 3, (n,), generator=g)
        ),
    }


class VectorRegression(Objective):
    """Continuous vectors in, continuous targets out: squared error summed over examples. No
    tokens, no vocabulary, no mask: batches hold `features` (B, D) and `targets` (B, K)."""

    terms = {"sq_loss": "examples", "abs_err": "values"}
    loss_terms = ("sq_loss",)
    work = "examples"

    def __init__(self, dim: int = 6, out: int = 3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Linear(16, out))

    def counts(self, batch):
        return {"examples": len(batch["features"]), "values": batch["targets"].numel()}

    def forward(self, batch):
        pred = self.net(batch["features"])
        err = pred - batch["targets"]
        return {"sq_loss": (err**2).sum(-1).sum(), "abs_err": err.detach().abs().sum()}


class ToyContrastive(Objective):
    """A batch-level objective: InfoNCE (arXiv:1807.03748) between two views of each example,
    every other example of the *global* batch a negative. Each rank gathers every rank's
    embeddings with their gradient and sums the loss of its own anchors."""

    terms = {"nce_loss": "anchors"}
    loss_terms = ("nce_loss",)
    work = "anchors"
    batch_level = True

    def __init__(self, dim: int = 6, temperature: float = 0.5):
        super().__init__()
        self.proj = nn.Linear(dim, 8)
        self.temperature = temperature

    def counts(self, batch):
        return {"anchors": len(batch["view1"])}

    def forward(self, batch):
        z1 = F.normalize(self.proj(batch["view1"]), dim=-1)  # (b, 8) this rank's
        z2 = F.normalize(self.proj(batch["view2"]), dim=-1)
        everyone = distributed.gather_with_grad(z2)  # (B, 8) every rank's, in rank order
        offset = distributed.rank() * len(z1)
        logits = z1 @ everyone.T / self.temperature  # (b, B)
        targets = torch.arange(len(z1)) + offset
        return {"nce_loss": F.cross_entropy(logits, targets, reduction="sum")}


class VectorBatches(torch.utils.data.Dataset):
    """Batch k of `B` examples, a pure function of (seed, k)."""

    def __init__(self, kind: str, B: int = 8, dim: int = 6, seed: int = 0):
        self.kind, self.B, self.dim, self.seed = kind, B, dim, seed

    def __len__(self) -> int:
        return 1000

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + k)
        x = torch.randn(self.B, self.dim, generator=g)
        if self.kind == "regression":
            return {"features": x, "targets": torch.sin(x[:, :3]) + 0.1 * x[:, 3:]}
        noise = 0.1 * torch.randn(2, self.B, self.dim, generator=g)
        return {"view1": x + noise[0], "view2": x + noise[1]}
