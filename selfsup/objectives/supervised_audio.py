"""Fine-tuning objective for speech: one label per utterance, with the whole encoder trained.

AudioClassification is SUPERB's utterance head (mean over the frames, then a linear layer;
Yang et al. 2021, arXiv:2105.01051) put on the encoder's last layer and trained end to end, as
the pretrained speech encoders' papers fine-tune them (Mockingjay, arXiv:1910.12638,
section 4). Like every objective (objectives/base.py), `forward` returns sums over the counts
`counts` names; `predict` returns the logits for unlabelled batches.

Legend: B batch, T frames, T' encoder positions (T / stack), D model width, C classes.
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.encoders.text import init_bert_weights
from selfsup.heads.classify import ClassifyHead
from selfsup.keys import FEATURES, IGNORE, LABELS, PADDING_MASK
from selfsup.losses import hits, masked_ce
from selfsup.objectives.base import Objective


class AudioClassification(Objective):
    """encoder -> mean over the real positions (the encoder's own, downsampled padding mask)
    -> dropout -> linear. A batch holds `features` (B, T, F), `padding_mask` (B, T) and, to
    train or score, `labels` (B,) (IGNORE: not scored)."""

    modality = "audio"
    terms = {"ce_loss": "examples", "acc": "examples"}
    loss_terms = ("ce_loss",)
    work = "frames"

    def __init__(self, encoder: nn.Module, n_classes: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder.requires_grad_(True)  # all of it is fine-tuned
        self.head = ClassifyHead(encoder.dim, n_classes, dropout)
        init_bert_weights(self.head)

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        return {
            "examples": int((batch[LABELS] != IGNORE).sum()),
            "frames": int((~batch[PADDING_MASK]).sum()),
        }

    def predict(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.encoder(batch[FEATURES], batch[PADDING_MASK])
        h, pad = out["hidden"], out["padding_mask"]  # (B, T', D), (B, T')
        keep = (~pad).to(h.dtype)[..., None]  # (B, T', 1)
        pooled = (h * keep).sum(1) / keep.sum(1).clamp_min(1.0)  # (B, D)
        return {"logits": self.head(pooled)}  # (B, C)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits, labels = self.predict(batch)["logits"], batch[LABELS]
        return {"ce_loss": masked_ce(logits, labels, "sum"), "acc": hits(logits.detach(), labels)}
