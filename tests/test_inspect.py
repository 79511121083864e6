"""`inspect_masking` end to end: a small real corpus through the whole data pipeline (tokenizer
training, token cache, pair building, masking), and the realised statistics it reports."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from helpers import cli

from selfsup.corrupt.tokens import expected_span_words
from selfsup.data.text import default_corpus
from selfsup.inspect import inspect_masking
from selfsup.keys import IGNORE
from selfsup.presets import preset
from selfsup.pretraining import prepare_data

N_BATCHES = 20  # of 32 rows of up to 128 tokens: ~64k real tokens


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The first ~30k words of the packaged corpus (Austen's Emma) as a plain text file."""
    folder = tmp_path_factory.mktemp("inspect")
    with gzip.open(default_corpus(), "rt", encoding="utf-8") as f:
        text = json.loads(f.readline())["text"]
    paras, n_words = [], 0
    for p in text.split("\n\n"):
        paras.append(p)
        n_words += len(p.split())
        if n_words > 30_000:
            break
    (folder / "emma.txt").write_text("\n\n".join(paras), encoding="utf-8")
    return folder / "emma.txt"


def config(corpus: Path, **mask):
    cfg = preset("tiny")  # objective mlm+nsp, batches of 32 rows of up to 128 tokens
    cfg.data.paths = [str(corpus)]
    cfg.data.cache_dir = str(corpus.parent / "cache")  # shared: the tokenizer is trained once
    cfg.model.vocab_size = 500
    for k, v in mask.items():
        setattr(cfg.objective, k, v)
    return cfg


@pytest.mark.parametrize("mode", ["token", "whole_word", "span"])
def test_reported_rates(corpus, mode):
    mask = {} if mode == "token" else {mode: True}  # MLMConfig.whole_word / .span
    stats = inspect_masking(config(corpus, **mask), N_BATCHES)
    assert stats["mode"] == mode.replace("_", "-")
    assert stats["batches"] == N_BATCHES and stats["real_tokens"] > 50_000
    assert stats["target_mask_prob"] == 0.15
    assert abs(stats["chosen_rate"] - 0.15) < 0.005
    # ~9.6k chosen tokens: the standard error of the 80% share is 0.4 points.
    assert abs(stats["mask_share"] - 0.8) < 0.015
    assert abs(stats["random_share"] - 0.1) < 0.015
    assert abs(stats["unchanged_share"] - 0.1) < 0.015
    total = stats["mask_share"] + stats["random_share"] + stats["unchanged_share"]
    assert abs(total - 1) < 1e-3
    assert stats["special_tokens_chosen"] == 0
    chosen_tokens = stats["chosen_rate"] * stats["real_tokens"]
    assert 0 < stats["chosen_words"] <= chosen_tokens
    assert 1 <= stats["mean_chosen_run_words"] <= stats["mean_chosen_run_tokens"]
    assert stats["mean_chosen_run_tokens"] <= stats["max_chosen_run_tokens"]
    assert abs(stats["nsp_positive_share"] - 0.5) < 0.06  # 640 pairs: 3 standard errors
    if mode == "token":
        assert stats["whole_word_share"] < 0.8  # single pieces chosen out of longer words
    else:
        assert stats["whole_word_share"] == 1.0
    if mode == "span":
        expected = expected_span_words(0.2, 10)
        assert stats["expected_span_words"] == round(expected, 3)
        # ~1.6k spans: the mean's standard error is under 2% of it.
        assert abs(stats["mean_chosen_run_words"] / expected - 1) < 0.06
    else:
        assert "expected_span_words" not in stats


def test_counts_match_a_direct_recount(corpus):
    # Token-level masking splits words, so the whole-word and run counts have work to do.
    cfg = config(corpus)
    stats = inspect_masking(cfg, 4)
    data = prepare_data(cfg, log=lambda s: None)
    tok = data.tokenizer
    specials = set(tok.special_ids)
    n_real = n_chosen = n_mask = n_same = words = whole = 0
    runs: list[int] = []
    for k in range(4):
        b = data.batches[k]
        for ids, labels, att in zip(
            b["input_ids"].tolist(), b["labels"].tolist(), b["attention_mask"].tolist(), strict=True
        ):
            original = [lab if lab != IGNORE else i for i, lab in zip(ids, labels, strict=True)]
            chosen = [lab != IGNORE for lab in labels]
            n_real += sum(a == 1 and t not in specials for a, t in zip(att, original, strict=True))
            n_chosen += sum(chosen)
            n_mask += sum(c and i == tok.mask_id for c, i in zip(chosen, ids, strict=True))
            n_same += sum(c and i == o for c, i, o in zip(chosen, ids, original, strict=True))
            # Words from the token strings: a `##` piece continues the word before it unless a
            # special token comes first.
            groups: list[list[int]] = []
            prev_special = True
            for t, o in enumerate(original):
                if o in specials or not att[t]:
                    prev_special = True
                    continue
                if prev_special or not tok.decode_token(o).startswith("##"):
                    groups.append([])
                groups[-1].append(t)
                prev_special = False
            hit = [sum(chosen[t] for t in g) for g in groups]
            words += sum(h > 0 for h in hit)
            whole += sum(h == len(g) for h, g in zip(hit, groups, strict=True) if h)
            run = 0
            for c in [*chosen, False]:
                if c:
                    run += 1
                elif run:
                    runs.append(run)
                    run = 0
    assert stats["real_tokens"] == n_real
    assert stats["chosen_rate"] == round(n_chosen / n_real, 5)
    assert stats["mask_share"] == round(n_mask / n_chosen, 4)
    assert stats["unchanged_share"] == round(n_same / n_chosen, 4)
    assert stats["chosen_words"] == words
    assert stats["whole_word_share"] == round(whole / words, 4)
    assert stats["mean_chosen_run_tokens"] == round(sum(runs) / len(runs), 3)
    assert stats["max_chosen_run_tokens"] == max(runs)


def test_span_lengths_follow_the_settings(corpus):
    stats = inspect_masking(config(corpus, span=True, span_max=3, span_p=0.5), 8)
    assert stats["expected_span_words"] == round(expected_span_words(0.5, 3), 3)
    assert abs(stats["mean_chosen_run_words"] / stats["expected_span_words"] - 1) < 0.08
    assert stats["whole_word_share"] == 1.0
    assert abs(stats["chosen_rate"] - 0.15) < 0.005


def test_higher_mask_prob(corpus):
    stats = inspect_masking(config(corpus, mask_prob=0.3, replace_prob=1.0, random_prob=0.0), 8)
    assert abs(stats["chosen_rate"] - 0.3) < 0.006
    assert stats["mask_share"] == 1.0
    assert stats["random_share"] == stats["unchanged_share"] == 0.0


@pytest.mark.parametrize("objective", ["bart", "mass", "t5"])
def test_inspect_masking_reports_what_the_seq2seq_noise_did(objective, tmp_path, capsys):
    path = tmp_path / "docs.jsonl"
    words = "river stone cloud apple north quiet paper glass tiger lemon iron music".split()
    docs = [" ".join(f"The {words[(d + s) % 12]} saw a {words[(d * s + 1) % 12]}." for s in
                     range(20)) for d in range(60)]  # fmt: skip
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    code, out, err = cli(capsys, "inspect-masking", "--objective", objective, "--data", path,
                         "--vocab-size", "200", "--max-len", "64", "--batches", "4", "--json",
                         "--cache-dir", tmp_path / "cache")  # fmt: skip
    assert code == 0, err
    stats = json.loads(out)
    assert stats["objective"] == objective and stats["examples"] == 4 * 32
    if objective == "bart":
        assert stats["masked_share"] == pytest.approx(0.3, abs=0.01)  # BART's default, not 0.15
        assert stats["permuted_share"] > 0.6 and stats["segments_with_2+_sentences"] > 60
        hist = stats["span_length_share_vs_poisson"]
        assert hist["3"][1] == pytest.approx(0.224, abs=1e-3)  # the Poisson(3) law
        assert abs(hist["3"][0] - hist["3"][1]) < 0.06
    elif objective == "mass":
        assert stats["fragment_share"] == pytest.approx(0.5, abs=0.02)
        assert stats["mask_share_in_fragment"] == pytest.approx(0.8, abs=0.05)
    else:
        assert stats["noise_share"] == pytest.approx(0.15, abs=0.01)
        assert stats["mean_span_tokens"] == pytest.approx(3.0, abs=0.3)
    assert len(stats["pairs"]) == 3 and all(p["source"] and p["target"] for p in stats["pairs"])
