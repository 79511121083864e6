"""Fine-tuning objectives: the four ways a pretrained encoder is put to work (BERT,
arXiv:1810.04805, figure 4), each an encoder plus a small head plus a pure loss.

1. SequenceClassification / Regression on the pooled [CLS] (sentiment, similarity);
2. TokenTagging: one label per word on its first sub-token (POS);
3. sentence pairs are case 1 with segments A/B (NLI, paraphrase);
4. SpanQA: start and end vectors dotted with every token output (SQuAD).
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup import IGNORE
from selfsup.encoders.text import BertEncoder, init_bert_weights
from selfsup.heads.classify import ClassifyHead
from selfsup.heads.span import SpanHead
from selfsup.heads.tag import TagHead
from selfsup.losses import accuracy, masked_ce, mse, span_ce


def _encode(encoder: BertEncoder, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return encoder(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))


class SequenceClassification(nn.Module):
    def __init__(self, encoder: BertEncoder, n_classes: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.head = ClassifyHead(encoder.dim, n_classes, dropout)
        init_bert_weights(self.head)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.head(_encode(self.encoder, batch)["pooled"])  # (B, C)
        out = {"logits": logits}
        if "labels" in batch:
            out["loss"] = masked_ce(logits, batch["labels"])
            out["acc"] = accuracy(logits.detach(), batch["labels"])
        return out


class Regression(nn.Module):
    def __init__(self, encoder: BertEncoder, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.head = ClassifyHead(encoder.dim, 1, dropout)
        init_bert_weights(self.head)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred = self.head(_encode(self.encoder, batch)["pooled"]).squeeze(-1)  # (B,)
        out = {"logits": pred}
        if "labels" in batch:
            out["loss"] = mse(pred, batch["labels"])
        return out


class TokenTagging(nn.Module):
    """Labels sit on each word's first sub-token; other positions hold IGNORE."""

    def __init__(self, encoder: BertEncoder, n_tags: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.head = TagHead(encoder.dim, n_tags, dropout)
        init_bert_weights(self.head)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = _encode(self.encoder, batch)["hidden"]  # (B, T, D)
        out = {}
        if "labels" in batch:
            keep = batch["labels"] != IGNORE  # (B, T)
            logits = self.head(h[keep])  # (M, n_tags): only the scored positions
            # a batch with no labelled word (M = 0) adds nothing, not a NaN mean over no rows
            out["loss"] = masked_ce(logits, batch["labels"][keep]) if len(logits) else h.sum() * 0
            out["acc"] = accuracy(logits.detach(), batch["labels"][keep])
        else:
            out["logits"] = self.head(h)  # (B, T, n_tags)
        return out


class SpanQA(nn.Module):
    def __init__(self, encoder: BertEncoder):
        super().__init__()
        self.encoder = encoder
        self.head = SpanHead(encoder.dim)
        init_bert_weights(self.head)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        start, end = self.head(_encode(self.encoder, batch)["hidden"])  # (B, T) each
        out = {"start_logits": start, "end_logits": end}
        if "start_positions" in batch:
            valid = batch.get("context_mask")
            if valid is not None:
                valid = valid.bool().clone()  # .bool() of a bool mask is the batch's own tensor
                valid[:, 0] = True  # [CLS] stands for "no answer in this window"
            out["loss"] = span_ce(
                start, end, batch["start_positions"], batch["end_positions"], valid
            )
        return out
