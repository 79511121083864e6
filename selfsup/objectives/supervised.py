"""Fine-tuning objectives: the four ways a pretrained encoder is put to work (BERT,
arXiv:1810.04805, figure 4), each an encoder plus a small head plus a pure loss.

1. SequenceClassification / Regression on the pooled [CLS] (sentiment, similarity);
2. TokenTagging: one label per word on its first sub-token (POS);
3. sentence pairs are case 1 with segments A/B (NLI, paraphrase);
4. SpanQA: start and end vectors dotted with every token output (SQuAD).

Like every objective (objectives/base.py), `forward` returns sums over the counts `counts`
names; `predict` returns the logits for unlabelled batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from selfsup.encoders.text import BertEncoder, init_bert_weights
from selfsup.heads.classify import ClassifyHead
from selfsup.heads.span import SpanHead
from selfsup.heads.tag import TagHead
from selfsup.keys import (
    ATTENTION_MASK,
    CONTEXT_MASK,
    END_POSITIONS,
    IGNORE,
    INPUT_IDS,
    LABELS,
    START_POSITIONS,
    TOKEN_TYPE_IDS,
)
from selfsup.losses import hits, masked_ce, mse, span_ce
from selfsup.objectives.base import Objective
from selfsup.objectives.mlm import real_tokens


def _encode(encoder: BertEncoder, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return encoder(batch[INPUT_IDS], batch.get(ATTENTION_MASK), batch.get(TOKEN_TYPE_IDS))


class _Supervised(Objective):
    work = "tokens"

    def __init__(self, encoder: BertEncoder):
        super().__init__()
        self.encoder = encoder.requires_grad_(True)  # all of it, pooler included, is fine-tuned

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"examples": self._labelled(batch), "tokens": real_tokens(batch)}

    def _labelled(self, batch) -> int:
        return int((batch[LABELS] != IGNORE).sum())


class SequenceClassification(_Supervised):
    """With `class_weights` (one per class, e.g. sklearn's "balanced" n / (C * count_c)) an
    example's loss is w[y] * ce and the loss is a mean over the weight of the labelled examples,
    sum(w[y] ce) / sum(w[y]) (F.cross_entropy's weighted mean), so any split of a batch still
    trains the same. The weights only shape training: they are a non-persistent buffer, not in
    the state dict, and predictions never use them."""

    terms = {"ce_loss": "examples", "acc": "examples"}
    loss_terms = ("ce_loss",)

    def __init__(
        self,
        encoder: BertEncoder,
        n_classes: int,
        dropout: float = 0.1,
        class_weights: Sequence[float] | torch.Tensor | None = None,
    ):
        super().__init__(encoder)
        self.head = ClassifyHead(encoder.dim, n_classes, dropout)
        init_bert_weights(self.head)
        w = None
        if class_weights is not None:
            w = torch.as_tensor(class_weights, dtype=torch.float).detach().clone()
            if w.shape != (n_classes,) or not bool((w >= 0).all() and w.isfinite().all()):
                raise ValueError(f"class_weights must be {n_classes} finite values >= 0")
            self.terms = {"ce_loss": "weight", "acc": "examples"}
        self.register_buffer("class_weights", w, persistent=False)

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        out = super().counts(batch)
        if self.class_weights is not None:
            labels = batch[LABELS]
            keep = labels != IGNORE
            w = self.class_weights.to(labels.device)
            out["weight"] = float(w[labels[keep]].sum())
        return out

    def predict(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.head(_encode(self.encoder, batch)["pooled"])}  # (B, C)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.predict(batch)["logits"]
        labels = batch[LABELS]
        if self.class_weights is None:
            loss = masked_ce(logits, labels, "sum")
        else:  # sum of w[y] * ce over the labelled rows; the loop divides by their weight
            loss = F.cross_entropy(
                logits.float(), labels, weight=self.class_weights, ignore_index=IGNORE,
                reduction="sum",
            )  # fmt: skip
        return {"ce_loss": loss, "acc": hits(logits.detach(), labels)}


class Regression(_Supervised):
    """A NaN label marks a missing target (any float, -100.0 too, is a target)."""

    terms = {"mse_loss": "examples"}
    loss_terms = ("mse_loss",)

    def __init__(self, encoder: BertEncoder, dropout: float = 0.1):
        super().__init__(encoder)
        self.head = ClassifyHead(encoder.dim, 1, dropout)
        init_bert_weights(self.head)

    def _labelled(self, batch) -> int:
        return int((~batch[LABELS].isnan()).sum())

    def predict(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.head(_encode(self.encoder, batch)["pooled"]).squeeze(-1)}  # (B,)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred, labels = self.predict(batch)["logits"], batch[LABELS]
        keep = ~labels.isnan()
        return {"mse_loss": mse(pred[keep], labels[keep], "sum")}


class TokenTagging(_Supervised):
    """Labels sit on each word's first sub-token; other positions hold IGNORE. The count is the
    labelled words."""

    terms = {"ce_loss": "words", "acc": "words"}
    loss_terms = ("ce_loss",)

    def __init__(self, encoder: BertEncoder, n_tags: int, dropout: float = 0.1):
        super().__init__(encoder)
        encoder.pooler.requires_grad_(False)  # token outputs only: the pooler is not used
        self.head = TagHead(encoder.dim, n_tags, dropout)
        init_bert_weights(self.head)

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"words": self._labelled(batch), "tokens": real_tokens(batch)}

    def predict(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.head(_encode(self.encoder, batch)["hidden"])}  # (B, T, n_tags)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = _encode(self.encoder, batch)["hidden"]  # (B, T, D)
        keep = batch[LABELS] != IGNORE  # (B, T)
        logits = self.head(h[keep])  # (M, n_tags): only the scored positions
        targets = batch[LABELS][keep]
        # a batch with no labelled word (M = 0) adds nothing: a zero sum that keeps the graph
        loss = masked_ce(logits, targets, "sum") if len(logits) else h.sum() * 0
        return {"ce_loss": loss, "acc": hits(logits.detach(), targets)}


class SpanQA(_Supervised):
    """Every window is an example (a window without the answer points at [CLS])."""

    terms = {"span_loss": "examples"}
    loss_terms = ("span_loss",)

    def __init__(self, encoder: BertEncoder):
        super().__init__(encoder)
        encoder.pooler.requires_grad_(False)  # token outputs only: the pooler is not used
        self.head = SpanHead(encoder.dim)
        init_bert_weights(self.head)

    def _labelled(self, batch) -> int:
        return int(batch[START_POSITIONS].numel())

    def predict(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        start, end = self.head(_encode(self.encoder, batch)["hidden"])  # (B, T) each
        return {"start_logits": start, "end_logits": end}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.predict(batch)
        valid = batch.get(CONTEXT_MASK)
        if valid is not None:
            valid = valid.bool().clone()  # .bool() of a bool mask is the batch's own tensor
            valid[:, 0] = True  # [CLS] stands for "no answer in this window"
        loss = span_ce(
            out["start_logits"], out["end_logits"], batch[START_POSITIONS], batch[END_POSITIONS],
            valid, reduction="sum",
        )  # fmt: skip
        return {"span_loss": loss}


def build_task_model(kind: str, encoder, n_labels: int | None, dropout: float, class_weights=None):
    """The objective of a fine-tuning task kind: classify, pair-classify, regress, tag, qa."""
    if kind in ("classify", "pair-classify"):
        return SequenceClassification(encoder, n_labels, dropout, class_weights)
    if kind == "regress":
        return Regression(encoder, dropout)
    if kind == "tag":
        return TokenTagging(encoder, n_labels, dropout)
    return SpanQA(encoder)
