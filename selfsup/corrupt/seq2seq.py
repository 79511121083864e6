"""Noise for encoder-decoder pretraining, as seedable pure functions on one example.

An encoder-decoder learns by restoring a broken text: the encoder reads the corrupted tokens and
the decoder writes the original (BART, arXiv:1910.13461) or only what was hidden (MASS,
arXiv:1905.02450; T5, arXiv:1910.10683). Every function here takes the example's token ids
(a 1-D LongTensor, no special tokens around it) and a `torch.Generator`, and draws from that
generator only: the same generator state gives the same output.

BART's five noises (section 2.2 of the paper):
- token masking: each token becomes [MASK] with probability p;
- token deletion: each token is dropped with probability p (the model must find where);
- text infilling: spans with Poisson(lambda=3) lengths cover a share p of the tokens, each span
  (including a zero-length one, which inserts) becomes one [MASK];
- sentence permutation: the sentences are shuffled;
- document rotation: the text is rotated to begin at a uniformly chosen token.
MASS masks one contiguous fragment (~50%) and the decoder writes the fragment only; T5 replaces
spans (noise density 0.15, mean span length 3) by sentinels numbered in order, and the target is
each sentinel followed by its span.

Legend: T tokens of one example, S sentences, K spans.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _uniform(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=generator)


def _randperm(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=generator)


def replace_some(
    ids: torch.Tensor,
    chosen: torch.Tensor,
    generator: torch.Generator,
    mask_id: int,
    random_ids: torch.Tensor | None = None,
    random_prob: float = 0.0,
) -> torch.Tensor:
    """`ids` with the `chosen` (T,) positions set to [MASK], a `random_prob` share of them to a
    token drawn from `random_ids` instead (BART replaces 10% of its masks by random tokens)."""
    out = torch.where(chosen, torch.full_like(ids, mask_id), ids)
    if random_ids is not None and random_prob > 0:
        u = _uniform(generator, len(ids))
        pick = random_ids[torch.randint(0, len(random_ids), ids.shape, generator=generator)]
        out = torch.where(chosen & (u < random_prob), pick, out)
    return out


def token_mask(
    ids: torch.Tensor,
    generator: torch.Generator,
    mask_id: int,
    prob: float,
    random_ids: torch.Tensor | None = None,
    random_prob: float = 0.0,
) -> torch.Tensor:
    """BART's token masking: each token becomes [MASK] independently with probability `prob`."""
    chosen = _uniform(generator, len(ids)) < prob
    return replace_some(ids, chosen, generator, mask_id, random_ids, random_prob)


def token_delete(ids: torch.Tensor, generator: torch.Generator, prob: float) -> torch.Tensor:
    """BART's token deletion: each token is dropped independently with probability `prob`."""
    return ids[_uniform(generator, len(ids)) >= prob]


def poisson_span_lengths(
    n_tokens: int, generator: torch.Generator, prob: float, poisson_lambda: float = 3.0
) -> list[int]:
    """Span lengths ~ Poisson(lambda) drawn until they cover round(prob x n_tokens) tokens; the
    last is shortened so they cover exactly that many. Zero-length spans count as spans."""
    budget = round(prob * n_tokens)
    lengths: list[int] = []
    covered = 0
    if budget == 0:
        return lengths
    rate = torch.full((max(8, 2 * math.ceil(budget / max(poisson_lambda, 0.5))),), poisson_lambda)
    while covered < budget:
        for x in torch.poisson(rate, generator=generator).long().tolist():
            lengths.append(min(x, budget - covered))
            covered += lengths[-1]
            if covered >= budget:
                break
    return lengths


def place_spans(
    n_tokens: int, lengths: list[int], generator: torch.Generator
) -> list[tuple[int, int]]:
    """Non-touching places for spans of the given lengths in `n_tokens` tokens: (start, end)
    pairs in order, uniform over all such placements. Each span goes into its own gap between
    the tokens it leaves (stars and bars), so two spans are always apart by at least one kept
    token; spans that cannot fit so are dropped from the end of `lengths`."""
    lengths = list(lengths)
    while lengths and len(lengths) > n_tokens - sum(lengths) + 1:
        lengths.pop()
    kept = n_tokens - sum(lengths)
    gaps = sorted(_randperm(kept + 1, generator)[: len(lengths)].tolist())  # kept tokens before
    order = _randperm(len(lengths), generator).tolist()  # which span goes into which gap
    spans, shift = [], 0
    for gap, k in zip(gaps, order, strict=True):
        start = gap + shift
        spans.append((start, start + lengths[k]))
        shift += lengths[k]
    return spans


def text_infill(
    ids: torch.Tensor,
    generator: torch.Generator,
    mask_id: int,
    prob: float = 0.3,
    poisson_lambda: float = 3.0,
    random_ids: torch.Tensor | None = None,
    random_prob: float = 0.0,
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """BART's text infilling: spans with Poisson(`poisson_lambda`) lengths cover round(`prob` x T)
    tokens; each span becomes a single [MASK] (a zero-length span inserts one), a `random_prob`
    share of them a random token instead. Returns the corrupted ids and the spans (start, end)
    in the original positions."""
    lengths = poisson_span_lengths(len(ids), generator, prob, poisson_lambda)
    spans = place_spans(len(ids), lengths, generator)
    pieces, at = [], 0
    for start, end in spans:
        pieces += [ids[at:start], torch.tensor([mask_id])]
        at = end
    pieces.append(ids[at:])
    out = torch.cat(pieces) if pieces else ids.clone()
    if random_ids is not None and random_prob > 0 and spans:
        out = replace_some(out, out == mask_id, generator, mask_id, random_ids, random_prob)
    return out, spans


def permute_sentences(
    sentences: list[torch.Tensor], generator: torch.Generator, share: float = 1.0
) -> tuple[torch.Tensor, list[int]]:
    """BART's sentence permutation: a `share` of the sentences (all by default, as BART) swap
    places in a random order. Returns the joined ids and the order (original sentence index at
    each place). One sentence cannot be permuted: check the order to know whether it was."""
    n = len(sentences)
    order = list(range(n))
    k = round(share * n)
    if k >= 2:
        who = sorted(_randperm(n, generator)[:k].tolist())
        new = [who[i] for i in _randperm(k, generator).tolist()]
        for place, src in zip(who, new, strict=True):
            order[place] = src
    joined = [sentences[i] for i in order]
    return (torch.cat(joined) if joined else torch.zeros(0, dtype=torch.long)), order


def rotate(ids: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """BART's document rotation: the text begins at a uniformly chosen token, what preceded it is
    moved to the end. Returns the rotated ids and the offset (0 = unchanged)."""
    if len(ids) < 2:
        return ids.clone(), 0
    k = int(torch.randint(0, len(ids), (1,), generator=generator))
    return torch.cat([ids[k:], ids[:k]]), k


@dataclass
class Fragment:
    """MASS's corruption of one example: `source` (fragment masked), `target` (the fragment),
    `decoder_input` (the fragment shifted right, starting with the token before it or
    `start_id`), and `start` (the fragment's first position in the original)."""

    source: torch.Tensor
    target: torch.Tensor
    decoder_input: torch.Tensor
    start: int


def mass_fragment(
    ids: torch.Tensor,
    generator: torch.Generator,
    mask_id: int,
    start_id: int,
    share: float = 0.5,
    random_ids: torch.Tensor | None = None,
    random_prob: float = 0.0,
    keep_prob: float = 0.0,
) -> Fragment:
    """MASS: one contiguous fragment of round(`share` x T) tokens (at least one), placed uniformly,
    is masked in the encoder's input (a `random_prob` share of it a random token, a `keep_prob`
    share unchanged: the paper's 80/10/10 is 0.1 and 0.1); the decoder writes only the
    fragment, fed the fragment shifted right (its first input is the token just before the
    fragment, or `start_id` at the beginning: the other tokens of the decoder's input are
    hidden, as in the paper)."""
    n = len(ids)
    length = min(n, max(1, round(share * n)))
    start = int(torch.randint(0, n - length + 1, (1,), generator=generator))
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[start : start + length] = True
    if keep_prob > 0:
        chosen &= _uniform(generator, n) >= keep_prob
    source = replace_some(ids, chosen, generator, mask_id, random_ids,
                          random_prob / (1 - keep_prob))  # fmt: skip
    target = ids[start : start + length].clone()
    first = ids[start - 1 : start] if start > 0 else torch.tensor([start_id])
    return Fragment(source, target, torch.cat([first, target[:-1]]), start)


def t5_noise_mask(
    n_tokens: int, generator: torch.Generator, density: float = 0.15, mean_span: float = 3.0
) -> torch.Tensor:
    """(T,) bool: T5's span corruption mask. round(density x T) noise tokens (at least 1, at most
    T - 1) in round(noise / mean_span) spans (at least 1); the noise and the kept tokens are each
    split at random into that many non-empty runs, alternating, starting with a kept run."""
    n_noise = min(max(round(density * n_tokens), 1), n_tokens - 1)
    n_spans = max(round(n_noise / mean_span), 1)
    n_spans = min(n_spans, n_noise, n_tokens - n_noise)
    noise = _split(n_noise, n_spans, generator)
    keep = _split(n_tokens - n_noise, n_spans, generator)
    mask = torch.zeros(n_tokens, dtype=torch.bool)
    at = 0
    for k, z in zip(keep, noise, strict=True):
        mask[at + k : at + k + z] = True
        at += k + z
    return mask


def _split(total: int, parts: int, generator: torch.Generator) -> list[int]:
    """`total` split into `parts` positive integers, uniformly over all such compositions."""
    cuts = sorted((_randperm(total - 1, generator)[: parts - 1] + 1).tolist())
    bounds = [0, *cuts, total]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def t5_spans(
    ids: torch.Tensor, noise_mask: torch.Tensor, sentinel_ids: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """T5's input and target for `noise_mask`: in the input each noise span is replaced by the
    next sentinel (sentinel_ids[0] for the first span, in order); the target is each sentinel
    followed by its span. Returns (input, target); the caller appends EOS to both."""
    starts = noise_mask & ~torch.cat([torch.tensor([False]), noise_mask[:-1]])
    n_spans = int(starts.sum())
    if n_spans > len(sentinel_ids):
        raise ValueError(f"{n_spans} noise spans but only {len(sentinel_ids)} sentinels")
    span_index = torch.cumsum(starts.long(), 0) - 1  # (T,) index of the span a token is in
    sentinel = torch.tensor(sentinel_ids[: max(n_spans, 1)])
    source = torch.where(starts, sentinel[span_index.clamp(min=0)], ids)[starts | ~noise_mask]
    target = []
    for k, (s, e) in enumerate(_runs(noise_mask)):
        target += [sentinel_ids[k], *ids[s:e].tolist()]
    return source, torch.tensor(target, dtype=torch.long)


def _runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each run of True in a (T,) bool mask."""
    m = [False, *mask.tolist(), False]
    edges = [i for i in range(1, len(m)) if m[i] != m[i - 1]]
    return [(edges[i] - 1, edges[i + 1] - 1) for i in range(0, len(edges), 2)]


def t5_lengths(input_length: int, density: float = 0.15, mean_span: float = 3.0) -> tuple[int, int]:
    """How many raw tokens to cut so that T5's corrupted input is exactly `input_length` tokens
    (EOS included) and no padding is needed: returns (raw tokens, target length with EOS). The
    largest raw length whose input fits, as T5's own computation."""

    def lengths(raw: int) -> tuple[int, int]:
        noise = min(max(round(density * raw), 1), raw - 1)
        spans = max(round(noise / mean_span), 1)
        return raw - noise + spans + 1, noise + spans + 1

    raw = input_length
    while lengths(raw + 1)[0] <= input_length:
        raw += 1
    return raw, lengths(raw)[1]


@dataclass
class BartNoise:
    """A combination of BART's noises with their rates (the paper's large model by default: 30%
    of the tokens masked in Poisson(3) spans, every sentence permuted, 10% of the masks replaced
    by random tokens). Applied in the order permutation, deletion, masking, rotation."""

    mask_prob: float = 0.3  # share of tokens masked (0: no masking)
    infill: bool = True  # spans, each one [MASK] (text infilling); False: token masking
    poisson_lambda: float = 3.0  # mean span length for infilling
    random_prob: float = 0.1  # share of the masks that become a random token instead
    delete_prob: float = 0.0  # share of tokens deleted
    permute: float = 1.0  # share of the sentences permuted
    rotate: float = 0.0  # probability of rotating the document


def bart_noise(
    sentences: list[torch.Tensor],
    generator: torch.Generator,
    noise: BartNoise,
    mask_id: int,
    random_ids: torch.Tensor,
) -> tuple[torch.Tensor, dict]:
    """The corrupted source of one segment, given as its sentences, and what was done to it:
    {"order": sentence order, "masked": tokens masked, "spans": span lengths, "deleted",
    "rotated": offset}. The target is the segment itself, uncorrupted."""
    ids, order = permute_sentences(sentences, generator, noise.permute)
    info: dict = {"order": order, "masked": 0, "spans": [], "deleted": 0, "rotated": 0}
    if noise.delete_prob > 0:
        kept = token_delete(ids, generator, noise.delete_prob)
        info["deleted"] = len(ids) - len(kept)
        ids = kept
    if noise.mask_prob > 0 and len(ids):
        if noise.infill:
            ids, spans = text_infill(
                ids, generator, mask_id, noise.mask_prob, noise.poisson_lambda, random_ids,
                noise.random_prob,
            )  # fmt: skip
            info["spans"] = [e - s for s, e in spans]
            info["masked"] = sum(info["spans"])
        else:
            before = ids
            ids = token_mask(
                ids, generator, mask_id, noise.mask_prob, random_ids, noise.random_prob
            )
            info["masked"] = int((ids != before).sum())
    if noise.rotate > 0 and float(torch.rand((), generator=generator)) < noise.rotate:
        ids, info["rotated"] = rotate(ids, generator)
    return ids, info
