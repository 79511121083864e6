"""Masked-LM corruption (BERT arXiv:1810.04805, SpanBERT arXiv:1907.10529) measured on >= 100k
real tokens: the first 200k words of the packaged Gutenberg corpus, a WordPiece vocabulary trained
on them (so words split into real `##` pieces), packed as `[CLS] A [SEP] B [SEP]` rows with
padding, the way the pretraining pipeline builds them."""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass

import pytest
import torch

from selfsup.corrupt.tokens import (
    choose_positions,
    expected_span_words,
    mask_tokens,
    word_starts,
)
from selfsup.data.readers import paragraphs
from selfsup.data.text import default_corpus, split_sentences
from selfsup.data.tokenizer import Tokenizer, train_tokenizer
from selfsup.keys import IGNORE

T = 128  # row length, as in the `tiny` preset
BATCH = 32  # rows per mask_tokens call, as in the `tiny` preset (span budgets are per call)
MIN_TOKENS = 120_000  # real (non-special) tokens in the rows


@dataclass
class Rows:
    tok: Tokenizer
    input_ids: torch.Tensor  # (B, T)
    special: torch.Tensor  # (B, T) [CLS], [SEP] and padding
    starts: torch.Tensor  # (B, T) word starts from the tokenizer's continuation table
    random_ids: torch.Tensor  # ids a random replacement may take
    word: torch.Tensor  # (B, T) reference word number (unique over all rows), -1 at specials
    n_real: int


def _reference_words(ids: list[list[int]], tok: Tokenizer) -> torch.Tensor:
    """Words from the token strings, independently of the code under test: a word is a token not
    spelled `##...` followed by its `##` pieces; special tokens belong to no word, and `##` pieces
    right after one (B cut mid-word) form a word of their own."""
    specials = set(tok.special_ids)
    piece = {i: tok.decode_token(i).startswith("##") for i in {t for row in ids for t in row}}
    word = torch.full((len(ids), T), -1, dtype=torch.long)
    n = -1
    for r, row in enumerate(ids):
        prev_special = True
        for t, i in enumerate(row):
            if i in specials:
                prev_special = True
                continue
            if prev_special or not piece[i]:
                n += 1
            word[r, t] = n
            prev_special = False
    return word


@pytest.fixture(scope="module")
def rows() -> Rows:
    paras, n_words = [], 0
    with gzip.open(default_corpus(), "rt", encoding="utf-8") as f:
        for line in f:
            for p in paragraphs(json.loads(line)["text"].splitlines()):
                paras.append(p)
                n_words += len(p.split())
            if n_words > 200_000:
                break
    tok = train_tokenizer(paras, vocab_size=2000)
    sents = [s for p in paras for s in split_sentences(p)]
    encoded: list[list[int]] = []
    for k in range(0, len(sents), 500):
        encoded += tok.encode_plain(sents[k : k + 500])
        if sum(map(len, encoded)) > 1.3 * MIN_TOKENS:
            break
    # Pack consecutive sentences into chunks of up to T - 3 tokens; split each chunk into A and
    # B at a sentence boundary, or at a random token (often mid-word) when it holds one sentence
    # and in every fifth row, as the pipeline's pair builder does.
    rng = random.Random(0)
    chunks, cur = [], []
    for s in encoded:
        s = s[: T - 3]
        if cur and sum(map(len, cur)) + len(s) > T - 3:
            chunks.append(cur)
            cur = []
        cur.append(s)
    seqs = []
    for k, chunk in enumerate(chunks):
        flat = [t for s in chunk for t in s]
        if len(chunk) >= 2 and k % 5:
            cut = sum(map(len, chunk[: rng.randint(1, len(chunk) - 1)]))
        else:
            cut = rng.randint(1, len(flat) - 1) if len(flat) >= 2 else len(flat)
        a, b = flat[:cut], flat[cut:]
        seqs.append([tok.cls_id, *a, tok.sep_id] + ([*b, tok.sep_id] if b else []))
    ids = torch.full((len(seqs), T), tok.pad_id)
    for r, seq in enumerate(seqs):
        ids[r, : len(seq)] = torch.tensor(seq)
    table = torch.zeros(tok.vocab_size, dtype=torch.bool)
    table[tok.special_ids] = True
    special = table[ids]
    n_real = int((~special).sum())
    assert n_real >= MIN_TOKENS, n_real
    word = _reference_words([seq + [tok.pad_id] * (T - len(seq)) for seq in seqs], tok)
    starts = word_starts(ids, tok.continuation_table())
    return Rows(tok, ids, special, starts, tok.random_ids(), word, n_real)


def corrupt(
    rows: Rows, seed: int, mode: str = "token", n_rows: int | None = None, **kw
) -> tuple[torch.Tensor, ...]:
    """mask_tokens over the rows (all, or the first n_rows) with one generator; in span mode
    BATCH rows per call, since span budgets are per call. Returns (corrupted, labels, chosen)."""
    g = torch.Generator().manual_seed(seed)
    starts = None if mode == "token" else rows.starts
    n = n_rows or len(rows.input_ids)
    step = BATCH if mode == "span" else n
    outs, labels = [], []
    for k in range(0, n, step):
        o, lab = mask_tokens(
            rows.input_ids[k : k + step], rows.special[k : k + step], g, rows.tok.mask_id,
            rows.random_ids, starts=None if starts is None else starts[k : k + step],
            span=mode == "span", **kw,
        )  # fmt: skip
        outs.append(o)
        labels.append(lab)
    out, lab = torch.cat(outs), torch.cat(labels)
    return out, lab, lab != IGNORE


def word_counts(rows: Rows, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(size, chosen tokens) of every reference word."""
    w = rows.word[rows.word >= 0]
    size = torch.bincount(w)
    hit = torch.bincount(w, weights=chosen[rows.word >= 0].double(), minlength=len(size))
    return size, hit.long()


def span_lengths(rows: Rows, chosen: torch.Tensor) -> torch.Tensor:
    """Length in words of every run of consecutive chosen tokens."""
    prev = torch.nn.functional.pad(chosen, (1, 0))[:, :-1]
    prev_word = torch.nn.functional.pad(rows.word, (1, 0), value=-1)[:, :-1]
    run_start = chosen & ~prev
    new_word = chosen & (run_start | (rows.word != prev_word))
    run = torch.cumsum(run_start.flatten().long(), 0) - 1  # run number of each token
    return torch.bincount(run[chosen.flatten()], weights=new_word[chosen].double()).long()


# --------------------------------------------------------------------------------------------
# Token-level masking: BERT's 15% and 80/10/10
# --------------------------------------------------------------------------------------------


def test_rows_are_realistic(rows):
    pieces = rows.word >= 0
    pieces &= ~rows.starts  # `##` continuation pieces
    assert pieces.float().sum() / rows.n_real > 0.05  # many words split into pieces
    assert (rows.input_ids == rows.tok.pad_id).any()  # padding present
    orphan = rows.special[:, :-1] & ~rows.starts[:, 1:] & ~rows.special[:, 1:]
    assert orphan.sum() > 20  # segments beginning with a `##` piece (cut mid-word)


def test_token_rates_80_10_10(rows):
    ids = rows.input_ids
    out, labels, chosen = corrupt(rows, seed=0)
    n = int(chosen.sum())
    assert abs(n / rows.n_real - 0.15) < 0.005
    masked = chosen & (out == rows.tok.mask_id)
    changed = chosen & (out != rows.tok.mask_id) & (out != ids)
    same = chosen & (out == ids)
    # A random replacement equals the original with chance 1/V (V = len(random_ids)): counted as
    # unchanged it moves 0.1/V (0.005 points here) from the random share to the unchanged one.
    v = len(rows.random_ids)
    assert abs(masked.sum() / n - 0.8) < 0.01
    assert abs(changed.sum() / n - 0.1 * (1 - 1 / v)) < 0.01
    assert abs(same.sum() / n - (0.1 + 0.1 / v)) < 0.01
    assert (out[~chosen] == ids[~chosen]).all()  # nothing outside the chosen set changes


def test_random_replacements_are_uniform_over_non_special_vocab(rows):
    # All chosen tokens replaced at random: measures the random branch on its own.
    out, _, chosen = corrupt(rows, seed=1, replace_prob=0.0, random_prob=1.0)
    drawn = out[chosen]
    assert not torch.isin(drawn, torch.tensor(rows.tok.special_ids)).any()
    assert torch.isin(drawn, rows.random_ids).all()
    # ~24k draws over ~2k ids: every id is drawn (a unigram-shaped draw would miss rare ones),
    # and a draw equals the original at about the chance rate 1/V, not more.
    assert len(torch.unique(drawn)) >= 0.99 * len(rows.random_ids)
    same = (drawn == rows.input_ids[chosen]).float().mean()
    assert same < 5 / len(rows.random_ids)


@pytest.mark.parametrize("mode", ["token", "whole_word", "span"])
def test_special_tokens_never_chosen_and_labels_exact(rows, mode):
    ids, special = rows.input_ids, rows.special
    out, labels, chosen = corrupt(rows, seed=2, mode=mode)
    assert not (chosen & special).any()
    assert (out[special] == ids[special]).all()
    assert (labels[special] == IGNORE).all()
    # Labels hold the original id exactly where chosen, IGNORE elsewhere.
    assert (labels[chosen] == ids[chosen]).all()
    assert (labels[~chosen] == IGNORE).all()
    # The chosen set drawn again by choose_positions from the same generator state (mask_tokens
    # draws it first): the labels of the first batch match it, not only their own IGNOREs.
    g = torch.Generator().manual_seed(2)
    n = BATCH if mode == "span" else len(ids)
    starts = None if mode == "token" else rows.starts[:n]
    ref = choose_positions(special[:n], g, 0.15, starts, mode == "span")
    assert ref.any()
    assert torch.equal(labels[:n], torch.where(ref, ids[:n], IGNORE))
    replaced = out != ids
    assert not (replaced & ~chosen).any()
    randoms = out[replaced & (out != rows.tok.mask_id)]
    assert not torch.isin(randoms, torch.tensor(rows.tok.special_ids)).any()


@pytest.mark.parametrize("mode", ["token", "whole_word", "span"])
def test_same_seed_same_output_other_seed_differs(rows, mode):
    a = corrupt(rows, seed=3, mode=mode, n_rows=8 * BATCH)
    b = corrupt(rows, seed=3, mode=mode, n_rows=8 * BATCH)
    c = corrupt(rows, seed=4, mode=mode, n_rows=8 * BATCH)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


# --------------------------------------------------------------------------------------------
# Configurable probabilities
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "replace_prob, random_prob, want",
    [(1.0, 0.0, (1.0, 0.0, 0.0)), (0.0, 0.0, (0.0, 0.0, 1.0)), (0.5, 0.3, (0.5, 0.3, 0.2))],
)
def test_replace_and_random_prob(rows, replace_prob, random_prob, want):
    ids = rows.input_ids
    out, _, chosen = corrupt(rows, seed=5, replace_prob=replace_prob, random_prob=random_prob)
    n = int(chosen.sum())
    shares = (
        float((chosen & (out == rows.tok.mask_id)).sum()) / n,
        float((chosen & (out != rows.tok.mask_id) & (out != ids)).sum()) / n,
        float((chosen & (out == ids)).sum()) / n,
    )
    for got, w in zip(shares, want, strict=True):
        assert abs(got - w) < (0.011 if 0 < w < 1 else 1e-9)  # 0 and 1 leave nothing to chance


@pytest.mark.parametrize("mode", ["token", "whole_word", "span"])
@pytest.mark.parametrize("mask_prob", [0.3, 0.05])
def test_mask_prob(rows, mode, mask_prob):
    _, _, chosen = corrupt(rows, seed=6, mode=mode, mask_prob=mask_prob)
    assert abs(chosen.sum() / rows.n_real - mask_prob) < 0.005


# --------------------------------------------------------------------------------------------
# Whole-word masking
# --------------------------------------------------------------------------------------------


def test_whole_word_masking(rows):
    _, _, chosen = corrupt(rows, seed=7, mode="whole_word")
    size, hit = word_counts(rows, chosen)
    assert ((hit == 0) | (hit == size)).all()  # every word fully chosen or not at all
    assert ((hit == size) & (size >= 2)).sum() > 300  # and many multi-piece words were chosen
    assert abs(chosen.sum() / rows.n_real - 0.15) < 0.005
    # A segment cut mid-word starts with `##` pieces: a word of their own in the reference
    # words above (so whole by the check above), chosen like any other word.
    orphan = torch.zeros_like(chosen)
    orphan[:, 1:] = rows.special[:, :-1] & ~rows.starts[:, 1:] & ~rows.special[:, 1:]
    assert 0 < chosen[orphan].sum() < orphan.sum()


def test_whole_word_with_continuation_at_position_0():
    # Row 0 starts mid-word with no [CLS]: "##x" is its own word, not part of "y ##z".
    special = torch.tensor([[False, False, False, True]] * 2000)
    starts = torch.tensor([[False, True, False, False]] * 2000)
    g = torch.Generator().manual_seed(0)
    chosen = choose_positions(special, g, 0.5, starts)
    assert (chosen[:, 1] == chosen[:, 2]).all()
    together = (chosen[:, 0] == chosen[:, 1]).float().mean()
    assert 0.4 < together < 0.6  # independent draws agree half the time, not always
    chosen = choose_positions(special, g, 0.5, starts, span=True)  # used to crash
    assert not chosen[:, 3].any()


# --------------------------------------------------------------------------------------------
# Span masking (SpanBERT)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("span_max, span_p", [(10, 0.2), (5, 0.5)])
def test_span_masking(rows, span_max, span_p):
    _, _, chosen = corrupt(rows, seed=8, mode="span", span_max=span_max, span_p=span_p)
    # The budget is round(0.15 * real tokens) per call and spans are added until it is met, so
    # the rate is exact but for rounding and a final shortfall of a few tokens per batch:
    # a quarter of a point.
    assert abs(chosen.sum() / rows.n_real - 0.15) < 0.0025
    size, hit = word_counts(rows, chosen)
    assert ((hit == 0) | (hit == size)).all()  # spans are made of whole words
    assert not (chosen & rows.special).any()  # so no span crosses [CLS]/[SEP]/[PAD]
    lengths = span_lengths(rows, chosen).float()
    assert lengths.max() <= span_max
    # Spans never touch, so every run of chosen tokens is one span. 5k-11k spans: the mean's
    # standard error is ~1% of it; 5% leaves room for the shorter last spans of each batch.
    expected = expected_span_words(span_p, span_max)
    assert abs(lengths.mean() / expected - 1) < 0.05
    p1 = span_p / (1 - (1 - span_p) ** span_max)  # share of one-word spans
    assert abs((lengths == 1).float().mean() - p1) < 0.03


def test_span_rate_on_short_rows():
    # Rows of 6 real tokens. A per-row budget rounds 0.9 up to one token and lets the first
    # span overshoot it: 36% of the tokens were chosen.
    special = torch.zeros(400, 8, dtype=torch.bool)
    special[:, [0, 7]] = True
    g = torch.Generator().manual_seed(0)
    chosen = choose_positions(special, g, 0.15, None, span=True)
    assert abs(chosen.sum() / 2400 - 0.15) < 0.0025
