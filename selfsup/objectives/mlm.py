"""Masked language modelling, alone or with a sentence-pair task on [CLS].

- MLM: predict the chosen tokens (BERT, arXiv:1810.04805).
- NSP: [CLS] tells whether segment B followed A (label 0) or came from elsewhere (label 1) (BERT).
- SOP: [CLS] tells whether two consecutive segments are in order (0) or swapped (1)
  (ALBERT, arXiv:1909.11942).
The data pipeline makes the pair labels (`pair_task`); the objective only scores them.
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup import IGNORE
from selfsup.encoders.text import BertEncoder, init_bert_weights
from selfsup.heads.classify import ClassifyHead
from selfsup.heads.mlm import MLMHead
from selfsup.losses import accuracy, masked_ce


class MLM(nn.Module):
    pair_task: str | None = None

    def __init__(self, encoder: BertEncoder, vocab_size: int, norm_eps: float = 1e-12):
        super().__init__()
        self.encoder = encoder
        self.mlm_head = MLMHead(encoder.dim, vocab_size, norm_eps)
        if self.pair_task:
            self.pair_head = ClassifyHead(encoder.dim, 2)
        init_bert_weights(self.mlm_head)
        if self.pair_task:
            init_bert_weights(self.pair_head)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.encoder(
            batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"),
            batch.get("position_ids"), seq_ids=batch.get("seq_ids"),
            cls_index=batch.get("cls_index"), sparse_grad=not torch.compiler.is_compiling(),
        )  # fmt: skip
        # sparse_grad: the decoder is the input embedding (tied), so a dense (V, D) gradient
        # reaches it anyway and the lookup's can be the batch's rows only, added into it: no
        # zero-filled (V, D) buffer and no second dense add per step (6% of a `mini` CPU step).
        # Not under torch.compile: inductor cannot compile the sparse gradient (graph breaks).
        labels = batch["labels"]
        keep = labels != IGNORE  # (B, T)
        h = out["hidden"][keep]  # (M, D): only the masked positions are scored
        logits = self.mlm_head(h, self.encoder.embed.tokens.weight)  # (M, V)
        targets = labels[keep]
        mlm_loss = masked_ce(logits, targets)
        result = {
            "loss": mlm_loss,
            "mlm_loss": mlm_loss.detach(),
            "mlm_acc": accuracy(logits.detach(), targets),
            "n_masked": keep.sum(),
        }
        if self.pair_task:
            pair_logits = self.pair_head(out["pooled"])  # (B, 2)
            pair_loss = masked_ce(pair_logits, batch["pair_labels"])
            result["loss"] = mlm_loss + pair_loss
            result[f"{self.pair_task}_loss"] = pair_loss.detach()
            result[f"{self.pair_task}_acc"] = accuracy(pair_logits.detach(), batch["pair_labels"])
        return result

    @torch.no_grad()
    def predict_masked(
        self, batch: dict[str, torch.Tensor], positions: torch.Tensor
    ) -> torch.Tensor:
        """Log-probabilities (M, V) at the given (B, T) boolean positions."""
        out = self.encoder(
            batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids")
        )
        logits = self.mlm_head(out["hidden"][positions], self.encoder.embed.tokens.weight)
        return torch.log_softmax(logits.float(), dim=-1)


class MLMWithNSP(MLM):
    pair_task = "nsp"


class MLMWithSOP(MLM):
    pair_task = "sop"
