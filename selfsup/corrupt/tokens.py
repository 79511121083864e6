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

from selfsup import IGNORE


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
    """
    B, T = special_mask.shape
    if span:
        return _choose_spans(special_mask, generator, mask_prob, starts, span_max, span_p)
    r = torch.rand(B, T, generator=generator)
    if starts is not None:
        starts = starts | special_mask  # a special token is a word of its own
        word = torch.cumsum(starts.long(), dim=1) - 1  # (B, T) index of each token's word
        r = r.gather(1, word.clamp(min=0))  # every piece of a word shares the word's draw
    return (r < mask_prob) & ~special_mask


def _choose_spans(special_mask, generator, mask_prob, starts, span_max, span_p):
    B, T = special_mask.shape
    if starts is None:
        starts = torch.ones_like(special_mask)
    starts = starts | special_mask
    chosen = torch.zeros_like(special_mask)
    # Span length distribution over words: geometric(p) clipped to span_max (SpanBERT).
    lengths = torch.arange(1, span_max + 1, dtype=torch.float64)
    probs = span_p * (1 - span_p) ** (lengths - 1)
    probs /= probs.sum()
    for b in range(B):
        word = torch.cumsum(starts[b].long(), 0) - 1  # (T,)
        n_words = int(word[-1]) + 1
        special_word = torch.zeros(n_words, dtype=torch.bool)
        special_word[word[special_mask[b]]] = True
        n_real = int((~special_mask[b]).sum())
        budget = max(1, round(mask_prob * n_real)) if n_real else 0
        word_chosen = torch.zeros(n_words, dtype=torch.bool)
        n_chosen, tries = 0, 0
        word_len = torch.bincount(word, minlength=n_words)
        while n_chosen < budget and tries < 10 * T:
            tries += 1
            L = int(torch.multinomial(probs, 1, generator=generator)) + 1
            s = int(torch.randint(0, n_words, (1,), generator=generator))
            e = min(s + L, n_words)
            seg = slice(s, e)
            if special_word[seg].any() or word_chosen[seg].any():
                continue
            add = int(word_len[seg].sum())
            if n_chosen + add > budget and n_chosen > 0:
                continue
            word_chosen[seg] = True
            n_chosen += add
        chosen[b] = word_chosen[word] & ~special_mask[b]
    return chosen


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
