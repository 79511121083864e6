"""Token corruption for masked language modelling, as seedable pure functions.

BERT (arXiv:1810.04805, 3.1): choose `mask_prob`=15% of the tokens; of those, 80% become [MASK],
10% a random token and 10% stay unchanged. Whole-word masking chooses all pieces of a word
together (BERT's later release); span masking chooses contiguous word spans with geometric
lengths, p=0.2, at most 10 words (SpanBERT, arXiv:1907.10529).

Legend: B batch, T time (tokens).
"""

from __future__ import annotations

import math

import torch

from selfsup.keys import ATTENTION_MASK, IGNORE, INPUT_IDS, LABELS


def word_starts(input_ids: torch.Tensor, continuation: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: True where a token begins a word (it is not a `##` continuation piece).

    `continuation` is a (V,) bool table: True for vocabulary entries that continue a word.
    """
    return ~continuation[input_ids]


def choose_positions(
    special_mask: torch.Tensor,
    generator: torch.Generator,
    mask_prob: float = 0.15,
    starts: torch.Tensor | None = None,
    span: bool = False,
    span_max: int = 10,
    span_p: float = 0.2,
) -> torch.Tensor:
    """Pick the positions to predict. special_mask (B, T) marks [CLS]/[SEP]/[PAD], never chosen.

    Token level when `starts` is None; whole words when `starts` (B, T) marks word beginnings;
    contiguous word spans when `span` is True (needs `starts`, or treats every token as a word).
    Token and word levels choose each independently with `mask_prob`; span mode fills a budget of
    round(mask_prob * real tokens) per call (per batch) with spans that never touch.
    """
    B, T = special_mask.shape
    if span:
        return _choose_spans(special_mask, generator, mask_prob, starts, span_max, span_p)
    r = torch.rand(B, T, generator=generator)
    if starts is not None:
        word = torch.cumsum(word_bounds(starts, special_mask).long(), dim=1) - 1  # (B, T)
        r = r.gather(1, word)  # every piece of a word shares the word's draw
    return (r < mask_prob) & ~special_mask


def word_bounds(starts: torch.Tensor, special_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: where a new word begins. A special token is a word of its own, and so are the
    `##` pieces right after one or at position 0 (a segment cut mid-word): they must not join the
    special token's word, nor a word in another segment."""
    after_special = torch.ones_like(special_mask)
    after_special[:, 1:] = special_mask[:, :-1]
    return starts | special_mask | after_special


def _choose_spans(special_mask, generator, mask_prob, starts, span_max, span_p, tries=20):
    # The budget, round(mask_prob * real tokens), is for the whole batch: a per-row budget of ~19
    # tokens holds only two or three spans, and fitting the last one into what is left skews the
    # lengths short (mean 2.9 words instead of 3.8 at the defaults). A span keeps its sampled
    # length and only its place is redrawn, so accepted lengths follow the distribution. Spans
    # never touch, so each reads as one span with its boundary words visible (SpanBERT's boundary
    # objective predicts from them); this caps the reachable rate near 50% for one-word spans.
    B, T = special_mask.shape
    if starts is None:
        starts = torch.ones_like(special_mask)
    word = torch.cumsum(word_bounds(starts, special_mask).flatten().long(), 0) - 1  # (B*T,)
    n_words = int(word[-1]) + 1
    special_word = torch.zeros(n_words, dtype=torch.bool)
    special_word[word[special_mask.flatten()]] = True
    row = torch.zeros(n_words, dtype=torch.long)
    row[word] = torch.arange(B).repeat_interleave(T)
    word_len = torch.bincount(word, minlength=n_words)
    n_real = int((~special_mask).sum())
    budget = max(1, round(mask_prob * n_real)) if n_real else 0
    # Span length distribution over words: geometric(p) clipped to span_max (SpanBERT).
    lengths = torch.arange(1, span_max + 1, dtype=torch.float64)
    probs = span_p * (1 - span_p) ** (lengths - 1)
    n_draw = 2 * budget + 10  # enough lengths for the budget; drawn at once for speed
    span_len = torch.multinomial(probs, n_draw, replacement=True, generator=generator) + 1
    places = torch.rand(n_draw, tries, generator=generator).tolist()
    candidates = (~special_word).nonzero().squeeze(1).tolist()
    special_word, row, word_len = special_word.tolist(), row.tolist(), word_len.tolist()
    word_chosen = [False] * n_words
    n_chosen = 0
    for L, us in zip(span_len.tolist(), places, strict=True):
        if n_chosen >= budget:
            break
        for u in us:
            s = candidates[int(u * len(candidates))]
            e = s + L
            if e > n_words or row[e - 1] != row[s] or any(special_word[s:e]):
                continue
            if any(word_chosen[max(s - 1, 0) : e + 1]):  # overlaps or touches a chosen span
                continue
            add = sum(word_len[s:e])
            if n_chosen + add <= budget or n_chosen == 0:
                word_chosen[s:e] = [True] * L
                n_chosen += add
            break  # placed, or too long for what is left of the budget: draw the next length
    chosen = torch.tensor(word_chosen, dtype=torch.bool)[word].view(B, T)
    return chosen & ~special_mask


def mask_tokens(
    input_ids: torch.Tensor,
    special_mask: torch.Tensor,
    generator: torch.Generator,
    mask_id: int,
    random_ids: torch.Tensor,
    mask_prob: float = 0.15,
    replace_prob: float = 0.8,
    random_prob: float = 0.1,
    starts: torch.Tensor | None = None,
    span: bool = False,
    span_max: int = 10,
    span_p: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT corruption. Returns (corrupted input_ids, labels): labels hold the original token at
    chosen positions and IGNORE elsewhere. `random_ids` lists the ids a random replacement may
    take (the non-special vocabulary). Same generator state, same result."""
    chosen = choose_positions(special_mask, generator, mask_prob, starts, span, span_max, span_p)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE))
    u = torch.rand(input_ids.shape, generator=generator)
    to_mask = chosen & (u < replace_prob)
    to_random = chosen & (u >= replace_prob) & (u < replace_prob + random_prob)
    pick = torch.randint(0, len(random_ids), input_ids.shape, generator=generator)
    out = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    out = torch.where(to_random, random_ids[pick], out)
    return out, labels


def expected_span_words(span_p: float, span_max: int) -> float:
    """Mean span length in words under the clipped geometric distribution."""
    w = [span_p * (1 - span_p) ** (k - 1) for k in range(1, span_max + 1)]
    return sum(k * x for k, x in zip(range(1, span_max + 1), w, strict=True)) / math.fsum(w)


class TokenMasker:
    """MLM corruption of a collated batch, as configured: `mask_tokens` with the vocabulary's
    tables. `special` (V,) marks ids never chosen, `continuation` (V,) marks `##` pieces (for
    whole-word and span masking), `random_ids` the ids a random replacement may take. Padding
    (attention_mask 0) is never chosen. A callable (batch, generator) -> batch with `labels`."""

    def __init__(
        self,
        special: torch.Tensor,
        continuation: torch.Tensor,
        random_ids: torch.Tensor,
        mask_id: int,
        mask_prob: float = 0.15,
        replace_prob: float = 0.8,
        random_prob: float = 0.1,
        whole_word: bool = False,
        span: bool = False,
        span_max: int = 10,
        span_p: float = 0.2,
    ):
        self.special, self.continuation, self.random_ids = special, continuation, random_ids
        self.mask_id, self.mask_prob = mask_id, mask_prob
        self.replace_prob, self.random_prob = replace_prob, random_prob
        self.whole_word, self.span, self.span_max, self.span_p = whole_word, span, span_max, span_p

    def __call__(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict:
        ids = batch[INPUT_IDS]
        special = self.special[ids] | (batch[ATTENTION_MASK] == 0)  # (B, T)
        starts = word_starts(ids, self.continuation) if self.whole_word or self.span else None
        corrupted, labels = mask_tokens(
            ids, special, generator, self.mask_id, self.random_ids, self.mask_prob,
            self.replace_prob, self.random_prob, starts, self.span, self.span_max, self.span_p,
        )  # fmt: skip
        return {**batch, INPUT_IDS: corrupted, LABELS: labels}
