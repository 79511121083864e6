"""Masking of overlapping k-mers (corrupt/dna.py), checked on the bases themselves: each token's
bases are read off the original sequence by position (token t of a row covers bases t-1 ..
t+k-2 after [CLS]), independently of the masking code. Under the leak-free scheme no scored
base appears in any token the model sees; under DNABERT's (arXiv:2008.07200) almost every
scored k-mer has k-1 of its k bases in visible neighbours (the leak of arXiv:2310.07644)."""

from __future__ import annotations

import random

import pytest
import torch

from selfsup.corrupt.dna import (
    SequenceMasker,
    dnabert_positions,
    leakfree_positions,
    mask_sequence_tokens,
    spread,
)
from selfsup.corrupt.tokens import mask_tokens
from selfsup.data.dna import collate_ids
from selfsup.data.dna_tokenizer import sequence_tokenizer
from selfsup.errors import ConfigError
from selfsup.keys import IGNORE


def kmer_batch(k: int, n_rows: int = 16, seed: int = 0, lo: int = 20, hi: int = 300):
    """(tokenizer, batch, sequences): rows [CLS] k-mers [SEP] of random sequences of lo..hi
    bases, padded."""
    tok = sequence_tokenizer(f"dna-kmer{k}")
    rng = random.Random(seed)
    seqs = ["".join(rng.choice("ACGT") for _ in range(rng.randint(lo, hi))) for _ in range(n_rows)]
    rows = [[tok.cls_id, *tok.encode_plain([s])[0], tok.sep_id] for s in seqs]
    return tok, collate_ids(rows, tok.pad_id), seqs


def masker(tok, scheme: str, **kw) -> SequenceMasker:
    special = torch.zeros(tok.vocab_size, dtype=torch.bool)
    special[tok.special_ids] = True
    return SequenceMasker(special, tok.k, tok.mask_id, tok.random_ids(), scheme, **kw)


def bases_of(t: int, k: int) -> range:
    """The base indices token t covers ([CLS] is token 0, so k-mer t starts at base t - 1)."""
    return range(t - 1, t - 1 + k)


def leaks(batch: dict, out: dict, k: int) -> tuple[int, list[int]]:
    """(scored tokens, per scored token the number of its bases that some token the model sees
    holds). A token the model sees: a k-mer left as it was (not [MASK], not a random
    replacement); [CLS], [SEP] and padding hold no bases."""
    scored, shown = 0, []
    original, given, labels, real = (batch["input_ids"], out["input_ids"], out["labels"],
                                     batch["attention_mask"])  # fmt: skip
    for r in range(original.shape[0]):
        n = int(real[r].sum())
        visible = set()
        for t in range(1, n - 1):
            if given[r, t] == original[r, t]:
                visible.update(bases_of(t, k))
        for t in range(1, n - 1):
            if labels[r, t] != IGNORE:
                scored += 1
                shown.append(sum(b in visible for b in bases_of(t, k)))
    return scored, shown


@pytest.mark.parametrize("k", [3, 4, 5, 6])
@pytest.mark.parametrize("span", [0, 1])  # 0: 2k-1 tokens; 1: 3k tokens
def test_leakfree_shows_no_scored_base(k, span):
    tok, batch, _ = kmer_batch(k, seed=k)
    m = masker(tok, "leakfree", mask_prob=0.3, span_tokens=3 * k if span else 0)
    total = 0
    for seed in range(10):
        out = m(batch, torch.Generator().manual_seed(seed))
        scored, shown = leaks(batch, out, k)
        total += scored
        assert all(s == 0 for s in shown)  # no scored base in any unmasked token
        chosen = out["labels"] != IGNORE
        assert (out["input_ids"][chosen] == tok.mask_id).all()
        assert torch.equal(out["labels"][chosen], batch["input_ids"][chosen])
    assert total > 100  # the test scored something


@pytest.mark.parametrize("k", [3, 6])
def test_dnabert_masking_leaks(k):
    tok, batch, _ = kmer_batch(k, seed=k)
    m = masker(tok, "dnabert", mask_prob=0.15)
    shown = []
    for seed in range(10):
        scored, s = leaks(batch, m(batch, torch.Generator().manual_seed(seed)), k)
        shown += s
    # k-1 of k bases visible: copy them, guess one (fewer where anchors' spans run together)
    at_least = sum(s >= k - 1 for s in shown) / len(shown)
    assert len(shown) > 200 and at_least > 0.8


def test_a_lone_leakfree_span_scores_its_centre():
    k, L = 4, 11
    T = 200
    special = torch.zeros(1, T, dtype=torch.bool)
    special[0, 0] = special[0, -1] = True
    found = 0
    for seed in range(200):
        masked, scored = leakfree_positions(special, torch.Generator().manual_seed(seed), k,
                                            mask_prob=0.05, span_tokens=L)  # fmt: skip
        m = masked[0].tolist()
        runs, t = [], 1
        while t < T - 1:  # the runs of masked tokens
            if m[t]:
                s = t
                while t < T - 1 and m[t]:
                    t += 1
                runs.append((s, t))
            t += 1
        for s, e in runs:
            inner = s >= k and e <= T - 1 - k  # k-1 visible k-mers on both sides
            if e - s == L and inner:
                found += 1
                want = [s + k - 1 + j for j in range(L - 2 * k + 2)]
                assert scored[0, s:e].nonzero().squeeze(1).add(s).tolist() == want
    assert found > 20


def test_rates_follow_the_anchor_probabilities():
    T, B, p = 4000, 32, 0.15  # ~1,700 spans: the share's standard error is ~0.004
    special = torch.zeros(B, T, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    for k in (3, 6):
        share = dnabert_positions(special, g, k, p)[:, 10:-10].float().mean().item()
        assert abs(share - (1 - (1 - p / k) ** k)) < 0.012
        L = 2 * k - 1
        masked, scored = leakfree_positions(special, g, k, p, 0)
        share = masked[:, 20:-20].float().mean().item()
        assert abs(share - (1 - (1 - p / L) ** L)) < 0.012
        assert scored.sum() < masked.sum() / 2


def test_dnabert_span_is_k_tokens_around_the_anchor():
    marks = torch.zeros(1, 20, dtype=torch.bool)
    marks[0, 10] = True
    for k, (lo, hi) in {3: (9, 11), 4: (9, 12), 5: (8, 12), 6: (8, 13)}.items():
        got = spread(marks, -((k - 1) // 2), k // 2)[0].nonzero().squeeze(1).tolist()
        assert got == list(range(lo, hi + 1))  # DNABERT's span: k tokens


def test_specials_and_padding_are_never_masked_and_seeds_repeat():
    tok, batch, _ = kmer_batch(6, seed=1, lo=10, hi=80)
    for scheme in ("leakfree", "dnabert", "bert"):
        m = masker(tok, scheme, mask_prob=0.4)
        a = m(batch, torch.Generator().manual_seed(5))
        b = m(batch, torch.Generator().manual_seed(5))
        assert all(torch.equal(a[x], b[x]) for x in a)
        frame = (batch["input_ids"] == tok.cls_id) | (batch["input_ids"] == tok.sep_id)
        frame |= batch["attention_mask"] == 0
        assert torch.equal(a["input_ids"][frame], batch["input_ids"][frame])
        assert (a["labels"][frame] == IGNORE).all()


def test_bert_scheme_is_token_masking():
    tok, batch, _ = kmer_batch(3, seed=2)
    special = torch.isin(batch["input_ids"], torch.tensor(tok.special_ids))
    special |= batch["attention_mask"] == 0
    got = mask_sequence_tokens(batch["input_ids"], special, torch.Generator().manual_seed(1), 3,
                               tok.mask_id, tok.random_ids(), "bert")  # fmt: skip
    want = mask_tokens(batch["input_ids"], special, torch.Generator().manual_seed(1), tok.mask_id,
                       tok.random_ids())  # fmt: skip
    assert all(torch.equal(x, y) for x, y in zip(got, want, strict=True))


def test_bad_settings_are_one_line_errors():
    tok = sequence_tokenizer("dna-kmer6")
    with pytest.raises(ConfigError, match="at least 2k-1 = 11"):
        masker(tok, "leakfree", span_tokens=10)
    with pytest.raises(ConfigError, match="unknown masking scheme"):
        masker(tok, "random")
    base = sequence_tokenizer("dna-base")
    special = torch.zeros(base.vocab_size, dtype=torch.bool)
    with pytest.raises(ConfigError, match="for overlapping k-mers"):
        SequenceMasker(special, 1, base.mask_id, base.random_ids(), "dnabert")
