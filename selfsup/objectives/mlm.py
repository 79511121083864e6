"""Masked language modelling, alone or with a sentence-pair task on [CLS].

- MLM: predict the chosen tokens (BERT, arXiv:1810.04805): 15% of the tokens, of those 80%
  [MASK], 10% a random token, 10% unchanged; whole words or SpanBERT spans (arXiv:1907.10529).
- NSP: [CLS] tells whether segment B followed A (label 0) or came from elsewhere (label 1) (BERT).
- SOP: [CLS] tells whether two consecutive segments are in order (0) or swapped (1)
  (ALBERT, arXiv:1909.11942).
The objective declares what its data needs (`text_needs`: the pair task and the masking); the
text pipeline builds the pairs and masks, and the objective only scores them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfsup.corrupt.tokens import TokenMasker
from selfsup.data.text import TextNeeds
from selfsup.data.tokenizer import Tokenizer
from selfsup.encoders.text import BertConfig, BertEncoder, build_encoder, init_bert_weights
from selfsup.errors import ConfigError
from selfsup.heads.classify import ClassifyHead
from selfsup.heads.mlm import MLMHead
from selfsup.keys import (
    ATTENTION_MASK,
    CLS_INDEX,
    IGNORE,
    INPUT_IDS,
    LABELS,
    PAIR_LABELS,
    POSITION_IDS,
    SEQ_IDS,
    TOKEN_TYPE_IDS,
)
from selfsup.losses import hits, linear_ce, masked_ce
from selfsup.objectives.base import Objective


@dataclass
class MLMConfig:
    """Masked-LM corruption: BERT's 15% with 80/10/10 (arXiv:1810.04805, section 3.1)."""

    name: str = "mlm+nsp"  # mlm | mlm+nsp | mlm+sop
    mask_prob: float = 0.15
    replace_prob: float = 0.8  # of the chosen tokens, share replaced by [MASK]
    random_prob: float = 0.1  # share replaced by a random token; the rest stay unchanged
    whole_word: bool = False  # choose whole words (all their ##pieces) together
    span: bool = False  # choose contiguous spans (SpanBERT, arXiv:1907.10529)
    span_max: int = 10  # longest span, in words
    span_p: float = 0.2  # geometric parameter of span lengths (SpanBERT uses 0.2)

    def validate(self) -> None:
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.replace_prob < 0 or self.random_prob < 0:
            raise ConfigError("replace_prob and random_prob must be >= 0")
        if self.replace_prob + self.random_prob > 1.0 + 1e-9:
            raise ConfigError("replace_prob + random_prob must be <= 1")
        if self.span_max < 1 or not 0.0 < self.span_p <= 1.0:
            raise ConfigError("span_max must be >= 1 and span_p in (0, 1]")
        if self.whole_word and self.span:
            raise ConfigError(
                "--whole-word and --span (objective.whole_word, objective.span): choose one "
                "(span masking masks whole words)"
            )


def real_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that are not padding (all of them when the batch has no attention mask)."""
    mask = batch.get(ATTENTION_MASK)
    return int(mask.sum()) if mask is not None else batch[INPUT_IDS].numel()


def token_masker(tok: Tokenizer, cfg: MLMConfig) -> TokenMasker:
    """The MLM corruption `cfg` describes, with the tokenizer's special ids and `##` pieces."""
    special = torch.zeros(tok.vocab_size, dtype=torch.bool)
    special[tok.special_ids] = True
    return TokenMasker(
        special, tok.continuation_table(), tok.random_ids(), tok.mask_id, cfg.mask_prob,
        cfg.replace_prob, cfg.random_prob, cfg.whole_word, cfg.span, cfg.span_max, cfg.span_p,
    )  # fmt: skip


class MLM(Objective):
    """Returns sums: `mlm_loss` and `mlm_acc` (hits) over the masked tokens, and with a pair
    task `{nsp,sop}_loss` and `_acc` over the examples."""

    Config = MLMConfig
    pair_task: str | None = None  # the variant's pair task, declared to the data by text_needs
    work = "tokens"

    def __init__(
        self,
        encoder: BertEncoder,
        vocab_size: int,
        norm_eps: float = 1e-12,
        cfg: MLMConfig | None = None,
    ):
        super().__init__()
        self.cfg = cfg or MLMConfig()
        self.encoder = encoder
        self.mlm_head = MLMHead(encoder.dim, vocab_size, norm_eps)
        if self.pair_task:
            self.pair_head = ClassifyHead(encoder.dim, 2)
        init_bert_weights(self.mlm_head)  # (after both heads exist: the order of random draws)
        self.terms = {"mlm_loss": "masked", "mlm_acc": "masked"}
        self.loss_terms = ("mlm_loss",)
        if not self.pair_task:
            # The pooler feeds only a pair head: without one it is frozen (never trained), so
            # DDP need not search for unused parameters every step. Fine-tuning unfreezes it.
            encoder.pooler.requires_grad_(False)
        if self.pair_task:
            init_bert_weights(self.pair_head)
            task = self.pair_task
            self.terms |= {f"{task}_loss": "examples", f"{task}_acc": "examples"}
            self.loss_terms += (f"{task}_loss",)

    @classmethod
    def build(cls, cfg: MLMConfig, model: BertConfig) -> MLM:
        return cls(build_encoder(model), model.vocab_size, model.norm_eps, cfg)

    def text_needs(self, tok: Tokenizer, max_len: int | None = None) -> TextNeeds:
        """Pairs of segments (with NSP/SOP labels when there is a pair task), masked."""
        return TextNeeds(pair_task=self.pair_task, corrupt=token_masker(tok, self.cfg))

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        out = {
            "masked": int((batch[LABELS] != IGNORE).sum()),
            "tokens": real_tokens(batch),
        }
        if self.pair_task:
            out["examples"] = int((batch[PAIR_LABELS] != IGNORE).sum())
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.encoder(
            batch[INPUT_IDS], batch.get(ATTENTION_MASK), batch.get(TOKEN_TYPE_IDS),
            batch.get(POSITION_IDS), seq_ids=batch.get(SEQ_IDS), cls_index=batch.get(CLS_INDEX),
            sparse_grad=not torch.compiler.is_compiling(),
        )  # fmt: skip
        # sparse_grad: the decoder is the input embedding (tied), so a dense (V, D) gradient
        # reaches it anyway and the lookup's can be the batch's rows only, added into it: no
        # zero-filled (V, D) buffer and no second dense add per step (6% of a `mini` CPU step).
        # Not under torch.compile: inductor cannot compile the sparse gradient (graph breaks).
        labels = batch[LABELS]
        keep = labels != IGNORE  # (B, T)
        h = out["hidden"][keep]  # (M, D): only the masked positions are scored
        # The decoder (the tied embedding) and the loss in one, a chunk of rows at a time: the
        # (M, V) logits are never held whole (losses.linear_ce).
        z = self.mlm_head.transform(h)
        loss, hit = linear_ce(z, self.encoder.embed.tokens.weight, self.mlm_head.bias, labels[keep])
        result = {"mlm_loss": loss, "mlm_acc": hit}
        if self.pair_task:
            pair_logits = self.pair_head(out["pooled"])  # (B, 2)
            pair_labels = batch[PAIR_LABELS]
            result[f"{self.pair_task}_loss"] = masked_ce(pair_logits, pair_labels, "sum")
            result[f"{self.pair_task}_acc"] = hits(pair_logits.detach(), pair_labels)
        return result

    @torch.no_grad()
    def predict_masked(
        self, batch: dict[str, torch.Tensor], positions: torch.Tensor
    ) -> torch.Tensor:
        """Log-probabilities (M, V) at the given (B, T) boolean positions."""
        out = self.encoder(batch[INPUT_IDS], batch.get(ATTENTION_MASK), batch.get(TOKEN_TYPE_IDS))
        logits = self.mlm_head(out["hidden"][positions], self.encoder.embed.tokens.weight)
        return torch.log_softmax(logits.float(), dim=-1)


class MLMWithNSP(MLM):
    pair_task = "nsp"


class MLMWithSOP(MLM):
    pair_task = "sop"
