"""The WordPiece tokenizer: BERT's rules (lowercase, accents, CJK one per token), saved in a form
transformers loads unchanged and encodes identically; trained deterministically (the same corpus
gives the same bytes in any process), by the merge rule a naive reference below spells out."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

import selfsup
from selfsup.data.tokenizer import (
    SPECIALS,
    learn_vocab,
    load_tokenizer,
    train_tokenizer,
)
from selfsup.errors import ConfigError

REPO = Path(selfsup.__file__).parents[1]  # the subprocesses import this selfsup
CORPUS = Path(selfsup.__file__).parent / "corpora" / "gutenberg.jsonl.gz"

SENTENCES = [
    "The river runs over the stone.",
    "Café naïve résumé, ÉCOLE Straße!",
    "北京天安门 学生 London",
    "Gamma   Delta\tParis\nquickly; zzqx unknownword 🙂",
]


@pytest.fixture(scope="module")
def cased_tokenizer(texts):
    return train_tokenizer(texts, vocab_size=300, lowercase=False)


def tokens(tok, text: str) -> list[str]:
    return tok.tok.encode(text, add_special_tokens=False).tokens


def test_specials_come_first_and_are_found(tiny_tokenizer):
    assert [tiny_tokenizer.decode_token(i) for i in range(len(SPECIALS))] == SPECIALS
    assert (tiny_tokenizer.pad_id, tiny_tokenizer.cls_id, tiny_tokenizer.sep_id) == (0, 2, 3)


def test_cjk_split_one_per_token(tiny_tokenizer):
    assert tokens(tiny_tokenizer, "北京天安门学生") == list("北京天安门学生")
    # Even glued to Latin text, each CJK character stands alone.
    assert tokens(tiny_tokenizer, "london北京") == ["london", "北", "京"]


def test_lowercase_option(tiny_tokenizer, cased_tokenizer):
    assert tiny_tokenizer.lowercase and not cased_tokenizer.lowercase
    # BERT uncased: lowercase and strip accents.
    assert tokens(tiny_tokenizer, "PARIS Café") == tokens(tiny_tokenizer, "paris cafe")
    assert "paris" in tokens(tiny_tokenizer, "PARIS")
    # Cased: neither.
    assert tokens(cased_tokenizer, "Paris") == ["Paris"]
    assert tokens(cased_tokenizer, "Paris") != tokens(cased_tokenizer, "paris")
    assert "é" in "".join(tokens(cased_tokenizer, "Café"))


def test_call_pads_truncates_and_marks_segments(tiny_tokenizer):
    tok = tiny_tokenizer
    b = tok(SENTENCES[:2], SENTENCES[2:], max_len=12)
    ids, mask, types = b["input_ids"], b["attention_mask"], b["token_type_ids"]
    assert ids.shape[1] <= 12 and (ids[:, 0] == tok.cls_id).all()
    for i in range(2):
        n = int(mask[i].sum())
        seps = (ids[i, :n] == tok.sep_id).nonzero().squeeze(1).tolist()
        assert len(seps) == 2 and seps[1] == n - 1
        assert (types[i, : seps[0] + 1] == 0).all() and (types[i, seps[0] + 1 : n] == 1).all()
        assert (ids[i, n:] == tok.pad_id).all() and (types[i, n:] == 0).all()
    # Padding and truncation are switched off again afterwards.
    assert len(tok.tok.encode(SENTENCES[0] * 20).ids) > 12


def test_vocab_txt_order_matches_ids(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save(tmp_path)
    lines = (tmp_path / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == tiny_tokenizer.vocab_size
    assert [tiny_tokenizer.tok.token_to_id(t) for t in lines[:-1]] == list(range(len(lines) - 1))


@pytest.mark.parametrize("cased", [False, True])
def test_save_load_round_trip(cased, tiny_tokenizer, cased_tokenizer, tmp_path):
    tok = cased_tokenizer if cased else tiny_tokenizer
    tok.save(tmp_path / "full")
    for name in ("vocab.txt", "tokenizer_config.json"):  # an HF folder without tokenizer.json
        (tmp_path / "vocab_only").mkdir(exist_ok=True)
        shutil.copy(tmp_path / "full" / name, tmp_path / "vocab_only" / name)
    for folder in ("full", "vocab_only"):
        back = load_tokenizer(tmp_path / folder)
        assert back.lowercase == tok.lowercase and back.vocab_size == tok.vocab_size
        assert back.encode_plain(SENTENCES) == tok.encode_plain(SENTENCES)
    assert load_tokenizer(tmp_path / "full").fingerprint() == tok.fingerprint()


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(ConfigError):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(ConfigError):
        load_tokenizer(tmp_path)  # a folder without vocab.txt or tokenizer.json


def test_random_ids_and_continuations(tiny_tokenizer):
    tok = tiny_tokenizer
    rand = set(tok.random_ids().tolist())
    assert rand.isdisjoint(tok.special_ids) and len(rand) == tok.vocab_size - len(SPECIALS)
    table = tok.continuation_table()
    pieces = [t for t in tok.tok.get_vocab() if t.startswith("##")]
    assert pieces and int(table.sum()) == len(pieces)
    assert all(table[tok.tok.token_to_id(t)] for t in pieces)


# --------------------------------------------------------------------------------------------
# transformers loads what we save
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cased", [False, True])
def test_transformers_loads_saved_tokenizer(cased, tiny_tokenizer, cased_tokenizer, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = cased_tokenizer if cased else tiny_tokenizer
    tok.save(tmp_path)
    ref = transformers.BertTokenizerFast.from_pretrained(tmp_path)
    assert ref.get_vocab() == tok.tok.get_vocab()
    assert ref.do_lower_case == tok.lowercase
    assert (ref.pad_token_id, ref.unk_token_id, ref.cls_token_id, ref.sep_token_id) == (
        tok.pad_id,
        tok.unk_id,
        tok.cls_id,
        tok.sep_id,
    )
    assert ref.mask_token_id == tok.mask_id
    for text in SENTENCES:
        assert ref.tokenize(text) == tokens(tok, text)
    got = tok(SENTENCES)
    want = ref(SENTENCES, padding=True, return_tensors="pt")
    for k in got:
        assert torch.equal(got[k], want[k]), k
    got = tok(SENTENCES[:2], SENTENCES[2:], max_len=14)
    want = ref(
        SENTENCES[:2],
        SENTENCES[2:],
        padding=True,
        truncation=True,
        max_length=14,
        return_tensors="pt",
    )
    for k in got:
        assert torch.equal(got[k], want[k]), k
    assert (got["token_type_ids"] == 1).any()


# --------------------------------------------------------------------------------------------
# deterministic training
# --------------------------------------------------------------------------------------------


def emma_paragraphs(n_chars: int = 200_000) -> list[str]:
    """The first paragraphs of the packaged corpus (Jane Austen's Emma): real text, whose pair
    counts tie often enough that HF's WordPieceTrainer gave a different vocab.txt every run."""
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        text = json.loads(f.readline())["text"][:n_chars]
    return [p for p in text.split("\n\n") if p.strip()]


@pytest.fixture(scope="module")
def emma() -> list[str]:
    return emma_paragraphs()


def saved_bytes(tok, folder: Path) -> dict[str, bytes]:
    tok.save(folder)
    return {name: (folder / name).read_bytes() for name in ("vocab.txt", "tokenizer.json")}


def test_training_twice_gives_identical_files(emma, tmp_path):
    a = saved_bytes(train_tokenizer(emma, vocab_size=1000), tmp_path / "a")
    b = saved_bytes(train_tokenizer(emma, vocab_size=1000), tmp_path / "b")
    assert a == b


TRAIN_AND_SAVE = """
import sys
sys.path.insert(0, sys.argv[1])
from test_tokenizer import emma_paragraphs
from selfsup.data.tokenizer import train_tokenizer
train_tokenizer(emma_paragraphs(), vocab_size=1000).save(sys.argv[2])
"""


def test_training_in_other_processes_gives_identical_files(emma, tmp_path):
    """Python's string hashing (PYTHONHASHSEED) and Rust's hash maps differ per process; the
    files may not."""
    want = saved_bytes(train_tokenizer(emma, vocab_size=1000), tmp_path / "here")
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = tmp_path / f"seed{seed}"
        here = str(Path(__file__).parent)
        cmd = [sys.executable, "-c", TRAIN_AND_SAVE, here, str(out)]
        subprocess.run(cmd, env=env, cwd=REPO, check=True)
        assert {n: (out / n).read_bytes() for n in want} == want, f"PYTHONHASHSEED={seed}"


def test_vocab_size_is_reached_and_alphabet_comes_first(emma):
    tok = train_tokenizer(emma, vocab_size=1000)
    assert tok.vocab_size == 1000
    vocab = [tok.decode_token(i) for i in range(tok.vocab_size)]
    assert vocab[: len(SPECIALS)] == SPECIALS
    # Single characters (code point order), then `##` characters, then the merges.
    n_chars = sum(len(t) == 1 for t in vocab)
    n_cont = sum(t.startswith("##") and len(t) == 3 for t in vocab)
    chars = vocab[len(SPECIALS) : len(SPECIALS) + n_chars]
    conts = vocab[len(SPECIALS) + n_chars : len(SPECIALS) + n_chars + n_cont]
    assert all(len(t) == 1 for t in chars) and chars == sorted(chars)
    assert all(t.startswith("##") and len(t) == 3 for t in conts) and conts == sorted(conts)
    assert "e" in chars and "##e" in conts and len(vocab) == len(set(vocab))


def test_alphabet_too_big_for_the_vocab_keeps_the_most_frequent():
    # 26 letters, and `##` forms of 25: 51 symbols, room for 20.
    letters = "abcdefghijklmnopqrstuvwxyz"
    texts = [" ".join(letters[: i + 1] for i in range(26))] * 3 + ["aaaa bbbb"]
    tok = train_tokenizer(texts, vocab_size=len(SPECIALS) + 20)
    assert tok.vocab_size == len(SPECIALS) + 20
    vocab = set(tok.tok.get_vocab())
    # "a" starts every word and "b" follows in all but one: they stay, "z" goes ...
    assert {"a", "b", "##b"} <= vocab and "z" not in vocab and "##z" not in vocab
    # ... and a word holding a dropped symbol encodes as [UNK], like any unknown word.
    assert tokens(tok, "xyz") == ["[UNK]"]


def test_too_small_vocab_or_corpus_is_an_error():
    with pytest.raises(ConfigError):
        train_tokenizer(["some text"], vocab_size=len(SPECIALS))
    with pytest.raises(ConfigError):
        train_tokenizer([""], vocab_size=100)


# --------------------------------------------------------------------------------------------
# the merge rule
# --------------------------------------------------------------------------------------------


def test_hand_checked_merges_with_ties():
    """Worked by hand from the rule: merge the most frequent pair, ties to the smaller
    (left, right) strings ('#' sorts before letters)."""
    counts = {"xab": 2, "ab": 2, "b": 5}
    # Words: x ##a ##b (2), a ##b (2), b (5; no pairs, but its letter is in the alphabet).
    alphabet = ["a", "b", "x", "##a", "##b"]
    # Pairs: (x, ##a) 2, (##a, ##b) 2, (a, ##b) 2: a three-way tie, ("##a", "##b") smallest.
    # -> ##ab. Words: x ##ab (2), a ##b (2). Pairs: (x, ##ab) 2, (a, ##b) 2; ("a", ...) first.
    # -> ab. Then (x, ##ab) -> xab. No pairs remain.
    assert learn_vocab(counts, vocab_size=100) == SPECIALS + alphabet + ["##ab", "ab", "xab"]
    # The vocabulary size stops the merges early, in the same order.
    assert learn_vocab(counts, vocab_size=len(SPECIALS) + 6) == SPECIALS + alphabet + ["##ab"]
    # min_frequency: at 3 no pair qualifies.
    assert learn_vocab(counts, vocab_size=100, min_frequency=3) == SPECIALS + alphabet


def test_hand_checked_repeated_letters_merge_left_to_right():
    # a ##a ##a ##a (3): pairs (a, ##a) 3, (##a, ##a) 6 (two places, one word).
    # -> ##aa, merged left to right without overlap: a ##aa ##a. Pairs (a, ##aa) 3,
    # (##aa, ##a) 3; ("##aa", "##a") is smaller -> ##aaa, then a + ##aaa -> aaaa.
    assert learn_vocab({"aaaa": 3}, vocab_size=100) == SPECIALS + [
        "a",
        "##a",
        "##aa",
        "##aaa",
        "aaaa",
    ]


def reference_vocab(
    word_counts: dict[str, int], vocab_size: int, min_frequency: int = 2
) -> list[str]:
    """The rule, naively: recount every pair after every merge."""
    chars = sorted({c for w in word_counts for c in w})
    conts = sorted({"##" + c for w in word_counts for c in w[1:]})
    vocab = SPECIALS + chars + conts
    words = {(w[0], *("##" + c for c in w[1:])): n for w, n in word_counts.items()}
    while len(vocab) < vocab_size:
        pairs: Counter[tuple[str, str]] = Counter()
        for w, n in words.items():
            for pair in zip(w, w[1:], strict=False):
                pairs[pair] += n
        if not pairs:
            break
        (left, right), best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if best < min_frequency:
            break
        merged = left + right[2:]
        if merged not in vocab:
            vocab.append(merged)
        new_words = {}
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if w[i : i + 2] == (left, right):
                    out.append(merged)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] = n
        words = new_words
    return vocab


def test_learn_vocab_matches_the_naive_reference():
    """Random words over 2-3 letters with small counts: ties everywhere, repeated letters, the
    vocabulary size or min_frequency ending the merges."""
    for seed in range(30):
        rng = random.Random(seed)
        letters = "ab" if seed % 2 else "abc"
        counts = {
            "".join(rng.choice(letters) for _ in range(rng.randint(1, 7))): rng.randint(1, 4)
            for _ in range(rng.randint(5, 40))
        }
        vocab_size = rng.choice([12, 20, 40, 1000])
        assert learn_vocab(counts, vocab_size) == reference_vocab(counts, vocab_size), seed


def test_special_tokens_written_in_raw_text_stay_plain_text(tmp_path):
    from selfsup.data.tokenizer import train_tokenizer

    tok = train_tokenizer(["the mask of the sep sat [ in ] the cls here"] * 20, 80, True)
    (ids,) = tok.encode_plain(["the [MASK] of [SEP] in [CLS]"])
    assert not set(ids) & set(tok.special_ids)  # not even [UNK]: every piece is known
    assert tok.decode_token(ids[1]) == "["
    # a prompt typed for fill-mask still reads [MASK] as the mask
    assert tok.mask_id in tok(["the [MASK] sat"])["input_ids"][0].tolist()
