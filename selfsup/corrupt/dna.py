"""Masking for sequence tokens, where overlapping k-mers share bases (seedable pure functions).

With overlapping k-mers (token t covers bases t .. t+k-1), a masked k-mer's bases also sit in
the k-1 tokens on each side of it. DNABERT (arXiv:2008.07200) masks k contiguous k-mers around
each chosen token; then every masked k-mer but the centre one still has k-1 of its k bases in
its unmasked neighbours, and the centre one all but one, so the task reduces to copying plus
guessing one base (arXiv:2310.07644 reports the fast, shallow learning this gives). Schemes:

    dnabert   anchors chosen with probability mask_prob / k, each masking the k tokens from
              anchor - (k-1)//2 to anchor + k//2 (DNABERT's span for k = 3..6); 80/10/10
              [MASK] / random / unchanged, every masked token scored (BERT's rule).
    leakfree  spans of span_tokens >= 2k-1 tokens (default 2k-1), anchors chosen with
              probability mask_prob / span_tokens; every span token becomes [MASK] (a token left
              unchanged or replaced at random would show bases); a masked token is scored only
              when no token within k-1 of it is visible, so none of its bases is in any
              unmasked token: of a lone span of L tokens, its centre L - 2k + 2 tokens.
    bert      BERT's token masking (corrupt/tokens.py), which is leak-free only for tokens that
              share no bases (single bases, non-overlapping k-mers).

`k` below is the number of tokens that share a base (k for overlapping k-mers, 1 otherwise).
Special tokens and padding are never masked, and count as showing no base.

Legend: B batch, T tokens.
"""

from __future__ import annotations

import torch

from selfsup.corrupt.tokens import mask_tokens
from selfsup.errors import ConfigError
from selfsup.keys import ATTENTION_MASK, IGNORE, INPUT_IDS, LABELS

SCHEMES = ("leakfree", "dnabert", "bert")


def spread(marks: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """(B, T) bool: True at t when some mark lies at t - hi .. t - lo (each mark at a covers
    a + lo .. a + hi, cut at the row's ends)."""
    T = marks.shape[1]
    out = torch.zeros_like(marks)
    for o in range(lo, hi + 1):
        if o >= T or -o >= T:
            continue
        if o >= 0:
            out[:, o:] |= marks[:, : T - o]
        else:
            out[:, : T + o] |= marks[:, -o:]
    return out


def dnabert_positions(special_mask: torch.Tensor, generator: torch.Generator, k: int,
                      mask_prob: float = 0.15) -> torch.Tensor:  # fmt: skip
    """(B, T) bool: DNABERT's masked tokens, k contiguous ones around each anchor (about
    mask_prob of the tokens; fewer where spans overlap)."""
    anchors = (torch.rand(special_mask.shape, generator=generator) < mask_prob / k) & ~special_mask
    return spread(anchors, -((k - 1) // 2), k // 2) & ~special_mask


def leakfree_positions(special_mask: torch.Tensor, generator: torch.Generator, k: int,
                       mask_prob: float = 0.15, span_tokens: int = 0):  # fmt: skip
    """((B, T) masked, (B, T) scored): spans of span_tokens (default 2k-1) tokens, and the
    masked tokens with no visible token within k-1 of them."""
    L = span_tokens or 2 * k - 1
    if L < 2 * k - 1:
        raise ConfigError(
            f"a leak-free span needs at least 2k-1 = {2 * k - 1} tokens (k = {k}), got "
            f"objective.span_tokens={span_tokens}"
        )
    anchors = (torch.rand(special_mask.shape, generator=generator) < mask_prob / L) & ~special_mask
    masked = spread(anchors, 0, L - 1) & ~special_mask
    visible = ~masked & ~special_mask  # tokens whose bases the model sees
    scored = masked & ~spread(visible, -(k - 1), k - 1)
    return masked, scored


def replace_chosen(input_ids: torch.Tensor, chosen: torch.Tensor, generator: torch.Generator,
                   mask_id: int, random_ids: torch.Tensor, replace_prob: float = 0.8,
                   random_prob: float = 0.1) -> torch.Tensor:  # fmt: skip
    """BERT's replacement of the chosen tokens: [MASK] with replace_prob, a random id of
    `random_ids` with random_prob, unchanged otherwise."""
    u = torch.rand(input_ids.shape, generator=generator)
    to_mask = chosen & (u < replace_prob)
    to_random = chosen & (u >= replace_prob) & (u < replace_prob + random_prob)
    pick = torch.randint(0, len(random_ids), input_ids.shape, generator=generator)
    out = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    return torch.where(to_random, random_ids[pick], out)


def mask_sequence_tokens(
    input_ids: torch.Tensor,
    special_mask: torch.Tensor,
    generator: torch.Generator,
    k: int,
    mask_id: int,
    random_ids: torch.Tensor,
    scheme: str = "leakfree",
    mask_prob: float = 0.15,
    replace_prob: float = 0.8,
    random_prob: float = 0.1,
    span_tokens: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(corrupted input_ids, labels): labels hold the original token where scored, IGNORE
    elsewhere. Same generator state, same result."""
    if scheme == "bert":
        return mask_tokens(input_ids, special_mask, generator, mask_id, random_ids, mask_prob,
                           replace_prob, random_prob)  # fmt: skip
    if scheme == "dnabert":
        chosen = dnabert_positions(special_mask, generator, k, mask_prob)
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE))
        out = replace_chosen(input_ids, chosen, generator, mask_id, random_ids, replace_prob,
                             random_prob)  # fmt: skip
        return out, labels
    if scheme == "leakfree":
        masked, scored = leakfree_positions(special_mask, generator, k, mask_prob, span_tokens)
        labels = torch.where(scored, input_ids, torch.full_like(input_ids, IGNORE))
        return torch.where(masked, torch.full_like(input_ids, mask_id), input_ids), labels
    raise ConfigError(f"unknown masking scheme {scheme!r}; choose from {', '.join(SCHEMES)}")


class SequenceMasker:
    """The masking of a collated batch of sequence tokens, as configured: `special` (V,) marks
    ids never masked (they show no base), `k` the tokens that share a base. A callable
    (batch, generator) -> batch with `labels`; padding (attention_mask 0) is never masked."""

    def __init__(self, special: torch.Tensor, k: int, mask_id: int, random_ids: torch.Tensor,
                 scheme: str = "leakfree", mask_prob: float = 0.15, replace_prob: float = 0.8,
                 random_prob: float = 0.1, span_tokens: int = 0):  # fmt: skip
        if scheme not in SCHEMES:
            raise ConfigError(
                f"unknown masking scheme {scheme!r}; choose from {', '.join(SCHEMES)}"
            )
        if scheme == "dnabert" and k == 1:
            raise ConfigError("dnabert masking is for overlapping k-mers (dna-kmer3 .. dna-kmer6); "
                              "use leakfree or bert")  # fmt: skip
        if scheme == "leakfree" and span_tokens and span_tokens < 2 * k - 1:
            raise ConfigError(
                f"a leak-free span needs at least 2k-1 = {2 * k - 1} tokens, got "
                f"objective.span_tokens={span_tokens}"
            )
        self.special, self.k, self.mask_id, self.random_ids = special, k, mask_id, random_ids
        self.scheme, self.mask_prob, self.span_tokens = scheme, mask_prob, span_tokens
        self.replace_prob, self.random_prob = replace_prob, random_prob

    def __call__(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict:
        ids = batch[INPUT_IDS]
        special = self.special[ids] | (batch[ATTENTION_MASK] == 0)  # (B, T)
        corrupted, labels = mask_sequence_tokens(
            ids, special, generator, self.k, self.mask_id, self.random_ids, self.scheme,
            self.mask_prob, self.replace_prob, self.random_prob, self.span_tokens,
        )  # fmt: skip
        return {**batch, INPUT_IDS: corrupted, LABELS: labels}
