"""Text pretraining data: reading files, sentence splitting, the memory-mapped token cache, chunks,
`[CLS] A [SEP] B [SEP]` pairs with NSP/SOP labels, and batches that are pure functions of
(seed, index)."""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.data.text import (
    PairBuilder,
    PretrainBatches,
    TextDataConfig,
    build_corpus,
    make_chunks,
    read_documents,
    read_paragraphs,
    split_sentences,
)
from selfsup.data.tokenizer import train_tokenizer
from selfsup.errors import ConfigError
from selfsup.objectives.mlm import MLMConfig, token_masker

MAX_LEN = 48
# Every sentence of document d starts with TAGS[d], so any segment tells its document.
TAGS = "apple birch cedar daisy elm fern grape hazel iris juniper kale lotus maple nutmeg".split()
VERBS = ["opened", "painted", "found", "carried", "watched", "cleaned", "sold", "described"]
THINGS = ["the door", "a red boat", "the old map", "a letter", "the garden gate", "two lamps"]
WHEN = ["at dawn", "after lunch", "in the rain", "before the train left", "on Sunday", "slowly"]


def document(tag: str, n: int, rng: random.Random) -> list[str]:
    """n sentences of 1-3 clauses (so sentence lengths vary), each starting with `tag`."""
    out = []
    for _ in range(n):
        clauses = [
            f"{rng.choice(VERBS)} {rng.choice(THINGS)} {rng.choice(WHEN)}"
            for _ in range(rng.randint(1, 3))
        ]
        out.append(f"{tag.capitalize()} " + " and ".join(clauses) + rng.choice([".", "!", "?"]))
    return out


def write_docs(folder: Path, seed: int = 0) -> list[Path]:
    """13 JSON-lines documents and one text file with 2 paragraphs and an overlong sentence."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    docs = [" ".join(document(tag, rng.randint(8, 20), rng)) for tag in TAGS[:13]]
    jsonl = folder / "a.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    long = "Nutmeg " + " and ".join(f"{v} the door" for v in VERBS * 4) + "."  # ~100 tokens
    paras = [
        " ".join(document("nutmeg", 6, rng)),
        long + " " + " ".join(document("nutmeg", 6, rng)),
    ]
    txt = folder / "b.txt"
    txt.write_text("\n\n".join(paras) + "\n")
    return [jsonl, txt]


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> list[Path]:
    return write_docs(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="module")
def tok(paths):
    return train_tokenizer(read_paragraphs([str(p) for p in paths]), vocab_size=400)


@pytest.fixture(scope="module")
def cfg(paths) -> TextDataConfig:
    return TextDataConfig(max_len=MAX_LEN, cache_dir=str(paths[0].parent / "cache"))


@pytest.fixture(scope="module")
def corpus(paths, tok, cfg):
    return build_corpus([str(p) for p in paths], tok, cfg, log=lambda s: None)


@pytest.fixture(scope="module")
def chunks(corpus):
    return make_chunks(corpus, MAX_LEN)


def tag_ids(tok) -> dict[int, int]:
    """token id -> document index, for the tag words."""
    ids = {}
    for d, tag in enumerate(TAGS[:14]):
        (i,) = tok.encode_plain([tag])[0]  # each tag is one token
        ids[i] = d
    return ids


def split_example(ids: list[int], types: list[int], tok) -> tuple[list[int], list[int]]:
    """Check the `[CLS] A [SEP] B [SEP]` layout and return (A, B)."""
    assert len(ids) == len(types) <= MAX_LEN
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
    seps = [i for i, t in enumerate(ids) if t == tok.sep_id]
    assert len(seps) in (1, 2) and tok.pad_id not in ids and tok.mask_id not in ids
    first = seps[0]
    assert types[: first + 1] == [0] * (first + 1)
    assert types[first + 1 :] == [1] * (len(ids) - first - 1)
    return ids[1:first], ids[first + 1 : -1]


# --------------------------------------------------------------------------------------------
# Reading and splitting
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, sentences",
    [
        ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        ("It rose (slowly.) Then fell.", ["It rose (slowly.)", "Then fell."]),
        ("Chapter 1. 2 apples fell.", ["Chapter 1.", "2 apples fell."]),
        ('Done. "Why?" she asked.', ["Done.", '"Why?" she asked.']),
        # No split before a lower-case word, inside numbers or without a space.
        ("It costs 3.50 dollars. and more", ["It costs 3.50 dollars. and more"]),
        ("See example.com for more.", ["See example.com for more."]),
        ("  spaced   out.   Next one.  ", ["spaced   out.", "Next one."]),
        ("", []),
    ],
)
def test_split_sentences(text, sentences):
    assert split_sentences(text) == sentences


@pytest.mark.parametrize(
    "text, sentences",
    [
        # No split after a title, "e.g.", "etc." or an initial; "I." is the pronoun.
        ("Mr. Smith met Dr. Jones. They left.", ["Mr. Smith met Dr. Jones.", "They left."]),
        ("Mrs. Ms. Prof. St. Paul came. Then rain.", ["Mrs. Ms. Prof. St. Paul came.",
                                                      "Then rain."]),
        ("Fruit, e.g. Apples, i.e. Red ones. Done.", ["Fruit, e.g. Apples, i.e. Red ones.",
                                                      "Done."]),
        ("Tools, etc. Were sold. So did I. Then.", ["Tools, etc. Were sold.", "So did I.",
                                                    "Then."]),
        ("J. R. R. Tolkien wrote it. (Dr. No.) Fine.", ["J. R. R. Tolkien wrote it.",
                                                        "(Dr. No.)", "Fine."]),
        # Chinese: after 。！？ and their closing quotes, with or without a space.
        ("今天天气很好。我们去公园吧！你来吗？好的。",
         ["今天天气很好。", "我们去公园吧！", "你来吗？", "好的。"]),
        ("他说：“你好。”然后走了。 The end.", ["他说：“你好。”", "然后走了。", "The end."]),
        ("真的吗？！「是的。」", ["真的吗？！", "「是的。」"]),
    ],
)  # fmt: skip
def test_split_sentences_abbreviations_and_chinese(text, sentences):
    assert split_sentences(text) == sentences


def test_read_documents_formats(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("Line one\nwrapped here.\n\n\n  Second paragraph.  \n")
    (tmp_path / "b.jsonl").write_text('{"body": "Row one.\\n\\nTwo."}\n\n{"body": ""}\n')
    with open(tmp_path / "c.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "body"], [1, "Comma, quoted\nand wrapped."], [2, "x"]])
    (tmp_path / "d.tsv").write_text("body\tid\nTab row.\t1\n")
    with gzip.open(tmp_path / "sub" / "e.txt.gz", "wt") as f:
        f.write("Gzipped text.")
    with bz2.open(tmp_path / "sub" / "f.jsonl.bz2", "wt") as f:
        f.write(json.dumps({"body": "Bzipped row."}))
    (tmp_path / ".hidden.txt").write_text("Never read.")
    (tmp_path / "g.bin").write_bytes(b"\x00")  # not a text suffix

    docs = [list(d) for d in read_documents([str(tmp_path)], text_field="body")]
    assert docs == [
        ["Line one wrapped here.", "Second paragraph."],  # a.txt
        ["Row one.", "Two."],  # b.jsonl, an empty row gives an empty document
        [],
        ["Comma, quoted and wrapped."],  # c.csv
        ["x"],
        ["Tab row."],  # d.tsv
        ["Gzipped text."],  # sub/e.txt.gz
        ["Bzipped row."],  # sub/f.jsonl.bz2
    ]


def test_read_a_huge_csv_cell(tmp_path):
    big = "A long document. " * 20_000  # 340 kB, past csv's default field limit
    with open(tmp_path / "big.csv", "w", newline="") as f:
        csv.writer(f).writerows([["text"], [big]])
    (doc,) = [list(d) for d in read_documents([str(tmp_path / "big.csv")])]
    assert doc == [big.strip()]


@pytest.mark.parametrize(
    "name, data, says",
    [
        ("bad.jsonl", b'{"text": "ok"}\nnot json\n', "bad.jsonl:2 is not a JSON line"),
        ("field.jsonl", b'{"body": "ok"}\n', "no 'text' field"),
        ("col.csv", b"body\nok\n", "no 'text' column"),
        ("latin.txt", "Caf\u00e9.".encode("latin-1"), "--encoding"),
        ("late.txt", b"ok\n" * 5000 + b"caf\xe9\n", "offset"),  # past the first read buffer
        ("nul.txt", b"a\x00b", "binary"),
        ("bad.txt.gz", b"not gzip", "cannot read"),
    ],
)
def test_read_errors_are_config_errors(tmp_path, name, data, says):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ConfigError, match=says.replace("'", ".")):
        for doc in read_documents([str(tmp_path / name)]):
            list(doc)


def test_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("\n \n")
    (tmp_path / "b.jsonl").write_text('{"text": "  "}\n')
    with pytest.raises(ConfigError, match="empty"):
        list(read_paragraphs([str(tmp_path)]))


# --------------------------------------------------------------------------------------------
# Token cache and chunks
# --------------------------------------------------------------------------------------------


def test_cached_tokens_equal_direct_tokenization(paths, tok, corpus):
    assert isinstance(corpus.tokens, np.memmap)
    expected_docs = []
    for doc in read_documents([str(p) for p in paths]):
        sents = [s for para in doc for s in split_sentences(para)]
        pieces = []
        for ids in tok.encode_plain(sents):  # a sentence too long for a sequence is cut
            pieces += [ids[i : i + MAX_LEN - 3] for i in range(0, len(ids), MAX_LEN - 3)]
        expected_docs.append(pieces)
    off, starts = corpus.sent_offsets, corpus.doc_sents
    assert len(starts) - 1 == len(expected_docs) == 14
    for d, pieces in enumerate(expected_docs):
        got = [corpus.tokens[off[i] : off[i + 1]].tolist() for i in range(starts[d], starts[d + 1])]
        assert got == pieces
    lengths = np.diff(off)
    assert lengths.max() == MAX_LEN - 3 and lengths.min() > 0  # the long sentence was cut
    assert corpus.n_tokens == len(corpus.tokens)


def test_chunks_stay_in_their_document(corpus, chunks):
    lengths = np.diff(corpus.sent_offsets)
    doc_of = np.searchsorted(corpus.doc_sents, np.arange(len(lengths)), side="right") - 1
    # Consecutive, non-empty, and together every sentence exactly once.
    assert chunks[0, 0] == 0 and chunks[-1, 1] == len(lengths)
    assert (chunks[1:, 0] == chunks[:-1, 1]).all() and (chunks[:, 1] > chunks[:, 0]).all()
    for i, (s, e, d) in enumerate(chunks):
        assert (doc_of[s:e] == d).all()  # never across documents
        assert lengths[s:e].sum() <= MAX_LEN - 3  # room for [CLS] A [SEP] B [SEP]
        if i + 1 < len(chunks) and chunks[i + 1, 2] == d:  # greedy: the next one did not fit
            assert lengths[s : e + 1].sum() > MAX_LEN - 3
    assert set(chunks[:, 2]) == set(range(14))


def test_cache_is_reused_and_keyed_on_the_files(tmp_path, tok):
    paths = [str(p) for p in write_docs(tmp_path / "docs")]
    cfg = TextDataConfig(max_len=MAX_LEN, cache_dir=str(tmp_path / "cache"))
    logs: list[str] = []
    first = build_corpus(paths, tok, cfg, log=logs.append)
    assert "tokenized" in logs[-1]
    second = build_corpus(paths, tok, cfg, log=logs.append)
    assert second.folder == first.folder and "using cached" in logs[-1]
    np.testing.assert_array_equal(second.tokens, first.tokens)
    assert [p.name for p in (tmp_path / "cache" / "corpus").iterdir()] == [first.folder.name]

    with open(paths[1], "a") as f:  # a changed file is a new corpus
        f.write("\nApple opened the door at dawn. Apple sold a letter slowly.\n")
    third = build_corpus(paths, tok, cfg, log=logs.append)
    assert third.folder != first.folder and "tokenized" in logs[-1]
    assert third.n_tokens > first.n_tokens
    other_len = build_corpus(paths, tok, TextDataConfig(max_len=32, cache_dir=cfg.cache_dir))
    assert other_len.folder not in (first.folder, third.folder)


# --------------------------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------------------------


def examples(corpus, chunks, tok, pair_task, n=1200):
    """n (chunk, ids, types, label) from random chunks."""
    builder = PairBuilder(corpus, chunks, tok, MAX_LEN, pair_task)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        c = int(rng.integers(len(chunks)))
        out.append((c, *builder.example(c, rng)))
    return builder, out


@pytest.mark.parametrize("pair_task", [None, "nsp", "sop"])
def test_pair_layout(corpus, chunks, tok, pair_task):
    builder, exs = examples(corpus, chunks, tok, pair_task, n=400)
    for c, ids, types, label in exs:
        a, b = split_example(ids, types, tok)
        assert len(a) > 0
        if pair_task is None:
            assert label == 0
            # A then B is the chunk itself (cut at a sentence boundary when it has several).
            assert a + b == np.concatenate(builder.sentences(chunks[c])).tolist()


def test_nsp_labels_and_random_next(corpus, chunks, tok):
    builder, exs = examples(corpus, chunks, tok, "nsp")
    tags = tag_ids(tok)
    labels = np.array([label for _, _, _, label in exs])
    assert 0.44 < labels.mean() < 0.56  # 1200 draws: the standard error is 1.4 points
    for c, ids, types, label in exs:
        a, b = split_example(ids, types, tok)
        assert len(b) > 0
        if label == 0:  # the true continuation
            assert a + b == np.concatenate(builder.sentences(chunks[c])).tolist()
        else:  # a segment of one other document
            doc = {tags[t] for t in b if t in tags} or {13}  # 13: a tail of the long sentence
            assert len(doc) == 1 and chunks[c, 2] not in doc


def test_sop_swaps_half(corpus, chunks, tok):
    builder, exs = examples(corpus, chunks, tok, "sop")
    labels = np.array([label for _, _, _, label in exs])
    assert 0.44 < labels.mean() < 0.56
    for c, ids, types, label in exs:
        a, b = split_example(ids, types, tok)
        whole = np.concatenate(builder.sentences(chunks[c])).tolist()
        if label == 0:
            assert a + b == whole
        else:
            assert len(b) > 0 and b + a == whole  # the same two segments, swapped


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


def make_batches(corpus, chunks, tok, seed=7, pair_task="nsp"):
    builder = PairBuilder(corpus, chunks, tok, MAX_LEN, pair_task)
    ids = np.arange(len(chunks))
    return PretrainBatches(builder, token_masker(tok, MLMConfig()), ids, batch_size=8, seed=seed)


def assert_batches_equal(x: dict, y: dict) -> None:
    assert x.keys() == y.keys()
    for k in x:
        assert torch.equal(x[k], y[k]), k


def test_batches_are_pure_functions_of_seed_and_index(corpus, chunks, tok):
    ds = make_batches(corpus, chunks, tok)
    epoch = len(chunks) // 8
    keys = [3, 0, epoch + 2, 3, 5 * epoch + 1]  # out of order, across epochs, repeated
    first = {k: ds[k] for k in keys}
    assert_batches_equal(first[3], ds[3])  # after other batches and epochs were built
    fresh = make_batches(corpus, chunks, tok)  # a new object (a new process, a resumed run)
    for k in reversed(keys):
        assert_batches_equal(first[k], fresh[k])
    b = first[3]
    assert set(b) == {"input_ids", "token_type_ids", "attention_mask", "pair_labels", "labels"}
    assert b["input_ids"].shape[0] == 8 and b["input_ids"].shape[1] <= MAX_LEN
    assert not torch.equal(first[0]["input_ids"], first[3]["input_ids"])
    other_seed = make_batches(corpus, chunks, tok, seed=8)[3]
    assert not torch.equal(other_seed["input_ids"], b["input_ids"])


def test_each_epoch_is_a_permutation(corpus, chunks, tok):
    ds = make_batches(corpus, chunks, tok)
    orders = [ds._order(epoch).tolist() for epoch in range(3)]
    assert all(sorted(o) == list(range(len(chunks))) for o in orders)
    assert orders[0] != orders[1] != orders[2]  # reshuffled each epoch
