"""What every encoder-decoder denoising objective shares: the model, the batch layout and the
loss. The encoder reads a corrupted source, the decoder is fed the target shifted right and
scored on every target token with cross-entropy (teacher forcing). BART, MASS and T5 differ only
in how an example's source and target are made from the text (objectives/bart.py, mass.py,
t5.py), which each gives the text pipeline as its `text_needs`.

Every example is [CLS] source [SEP] for the encoder; the target ends with [SEP] (the decoder's
EOS) unless the objective says otherwise (MASS writes its fragment only), and the decoder starts
from [CLS].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.data.packing import RowLayout, pack_rows
from selfsup.data.padding import pad_sequences
from selfsup.data.text import TextNeeds
from selfsup.data.tokenizer import Tokenizer
from selfsup.encoders.seq2seq import (
    Seq2SeqConfig,
    Seq2SeqModel,
    build_seq2seq,
    packed_decoder_masks,
)
from selfsup.keys import (
    ATTENTION_MASK,
    DECODER_INPUT_IDS,
    DECODER_POSITION_IDS,
    DECODER_SEQ_IDS,
    IGNORE,
    INPUT_IDS,
    LABELS,
    POSITION_IDS,
    SEQ_IDS,
)
from selfsup.losses import hits, linear_ce
from selfsup.objectives.base import Objective
from selfsup.objectives.mlm import real_tokens


@dataclass
class Seq2SeqExample:
    """One example: the encoder's source, the decoder's input and its target (the same length),
    and the target's positions when they are not 0, 1, 2, ... (MASS)."""

    source: list[int]
    decoder_input: list[int]
    target: list[int]
    decoder_positions: list[int] | None = None
    info: dict | None = None  # what the corruption did (for inspect-masking; not collated)


def collate_seq2seq(examples: list[Seq2SeqExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad sources and targets to the longest of the batch; padded targets are IGNORE."""
    source, mask = pad_sequences([e.source for e in examples], pad_id)  # (B, S)
    dec, _ = pad_sequences([e.decoder_input for e in examples], pad_id)  # (B, T)
    labels, _ = pad_sequences([e.target for e in examples], IGNORE)
    batch = {INPUT_IDS: source, ATTENTION_MASK: mask.long(), DECODER_INPUT_IDS: dec,
             LABELS: labels}  # fmt: skip
    if examples and examples[0].decoder_positions is not None:
        batch[DECODER_POSITION_IDS], _ = pad_sequences([e.decoder_positions for e in examples], 0)
    return batch


def pack_seq2seq(
    batch: dict[str, torch.Tensor], pad_id: int, width: int, min_saving: float = 0.1
) -> dict[str, torch.Tensor]:
    """A padded seq2seq batch (collate_seq2seq's) packed into rows of at most `width` tokens on
    each side: example i's source and target go into the same row r, each after the row's
    earlier examples (data.packing.pack_rows with both lengths), positions restarting per
    example (a target keeps its own positions: MASS), `seq_ids` and `decoder_seq_ids` naming
    each token's example (-1 on padding) so attention stays inside it (packed_decoder_masks).
    Every target token of a seq2seq batch is scored, so the targets' lengths are read from
    the labels. The same examples, the same loss as the padded batch.

    A batch that packing would shrink by less than `min_saving` of its token slots (sources
    and targets together) is returned as it is: rows wider than the examples cost more
    attention than so little padding (AMD EPYC here, mini, full 128-token examples packed two
    to a 256-token row: 1.60x transformers' speed against 1.72x padded;
    benchmarks/seq2seq_throughput.py --padded)."""
    src_mask = batch[ATTENTION_MASK].bool()  # (B, S)
    tgt_mask = batch[LABELS] != IGNORE  # (B, T)
    rows = pack_rows(src_mask.sum(1).tolist(), width, tgt_mask.sum(1).tolist())
    src, tgt = RowLayout(src_mask, rows), RowLayout(tgt_mask, rows)
    padded_slots = src_mask.numel() + tgt_mask.numel()
    if src.R * (src.width + tgt.width) > (1 - min_saving) * padded_slots:
        return batch
    positions = batch.get(DECODER_POSITION_IDS)
    return {
        INPUT_IDS: src.scatter(batch[INPUT_IDS], pad_id),
        ATTENTION_MASK: src.scatter(torch.ones_like(batch[INPUT_IDS]), 0),
        POSITION_IDS: src.positions(),
        SEQ_IDS: src.seq_ids(),
        DECODER_INPUT_IDS: tgt.scatter(batch[DECODER_INPUT_IDS], pad_id),
        DECODER_POSITION_IDS: tgt.positions() if positions is None else tgt.scatter(positions, 0),
        DECODER_SEQ_IDS: tgt.seq_ids(),
        LABELS: tgt.scatter(batch[LABELS], IGNORE),
    }


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A torch generator seeded from an example's numpy generator (the corruption functions
    draw from torch)."""
    return torch.Generator().manual_seed(int(rng.integers(0, 2**62)))


def ids_tensor(sentences: list[np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.asarray(s, dtype=np.int64)) for s in sentences]


class Seq2SeqObjective(Objective):
    """Returns sums over the target tokens: `s2s_loss` (cross-entropy) and `s2s_acc` (hits).
    Subclasses set `Config` and implement `example(sentences, rng, tok)`."""

    model_config = Seq2SeqConfig
    cut_sentences = False  # True: segments of exactly segment_len tokens, across sentence ends
    terms = {"s2s_loss": "targets", "s2s_acc": "targets"}
    loss_terms = ("s2s_loss",)
    work = "targets"

    def __init__(self, model: Seq2SeqModel, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = model

    @classmethod
    def build(cls, cfg, model: Seq2SeqConfig):
        return cls(build_seq2seq(model), cfg)

    def example(self, sentences: list[np.ndarray], rng: np.random.Generator, tok: Tokenizer,
                max_len: int) -> Seq2SeqExample:  # fmt: skip
        raise NotImplementedError

    def segment_len(self, max_len: int) -> int | None:
        """The most text tokens in one segment (None: the pipeline's default, max_len - 3)."""
        return None

    def text_needs(self, tok: Tokenizer, max_len: int) -> TextNeeds:
        return TextNeeds(
            examples=lambda sentences, rng: self.example(sentences, rng, tok, max_len),
            collate=lambda examples: collate_seq2seq(examples, tok.pad_id),
            segment_len=self.segment_len(max_len),
            pack=lambda batch: pack_seq2seq(batch, tok.pad_id, self.pack_width(max_len)),
            cut_sentences=self.cut_sentences,
        )

    def pack_width(self, max_len: int) -> int:
        """The width of packed rows (--pack), on each side. Twice max_len: a segment fills
        max_len with whole sentences, so rows of max_len would rarely hold two; positions
        restart per example, so a row may be wider than the position table."""
        return 2 * max_len

    def prepare_source(self, tok: Tokenizer, source: list[int]) -> list[int]:
        """A user's input as the encoder expects it (T5: [MASK] runs -> sentinels)."""
        return source

    def generation_plan(self, tok: Tokenizer, source: list[int]) -> GenerationPlan:
        """How `selfsup generate` decodes for `source` ([CLS] ... [SEP]): from [CLS], the
        whole text, up to EOS (BART and T5)."""
        return GenerationPlan(start=tok.cls_id)

    def restore(self, tok: Tokenizer, source: list[int], written: list[int]) -> list[int]:
        """The text to show for what the decoder wrote: BART writes the whole text."""
        return written

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"targets": int((batch[LABELS] != IGNORE).sum()), "tokens": real_tokens(batch)}

    def target_states(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(decoder states (M, D), targets (M,)) at the real target tokens, teacher-forced."""
        m = self.model
        seq_ids = batch.get(SEQ_IDS)  # packed rows (pack_seq2seq) when present
        enc = m.encode(batch[INPUT_IDS], batch.get(ATTENTION_MASK),
                       position_ids=batch.get(POSITION_IDS), seq_ids=seq_ids)  # fmt: skip
        self_mask = cross_mask = None
        if seq_ids is not None:
            self_mask, cross_mask = packed_decoder_masks(seq_ids, batch[DECODER_SEQ_IDS])
        h = m.decode(batch[DECODER_INPUT_IDS], enc["hidden"], enc["padding_mask"],
                     attn_mask=self_mask, position_ids=batch.get(DECODER_POSITION_IDS),
                     memory_mask=cross_mask)  # fmt: skip
        labels = batch[LABELS]
        keep = labels != IGNORE  # (B, T): only real target tokens are scored
        return h[keep], labels[keep]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h, targets = self.target_states(batch)
        m = self.model
        loss, hit = linear_ce(h, m.tokens.weight, m.logits_bias, targets)
        return {"s2s_loss": loss, "s2s_acc": hit}


def wrap(tok: Tokenizer, source: list[int], max_len: int) -> list[int]:
    """[CLS] source [SEP], the source cut to fit max_len."""
    return [tok.cls_id, *source[: max_len - 2], tok.sep_id]


@dataclass
class GenerationPlan:
    """How to generate for one source: the decoder's first input and its position, at most how
    many tokens (None: as asked), and whether the model writes an EOS."""

    start: int
    position: int = 0
    max_new: int | None = None
    eos: bool = True


class Seq2SeqTask(Seq2SeqObjective):
    """Supervised source -> target (seq2seq fine-tuning): the same teacher-forced loss over
    the target tokens, label-smoothed with `label_smoothing` > 0 (then the output projection
    is not fused with the loss: smoothing needs every vocabulary entry's log-probability)."""

    def __init__(self, model: Seq2SeqModel, label_smoothing: float = 0.0):
        super().__init__(model, None)
        self.label_smoothing = label_smoothing

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.label_smoothing:
            return super().forward(batch)
        h, targets = self.target_states(batch)
        logits = self.model.logits(h).float()  # (M, V)
        loss = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing,
                               reduction="sum")  # fmt: skip
        return {"s2s_loss": loss, "s2s_acc": hits(logits.detach(), targets)}
