"""Fine-tuning: QA windows and offsets, tag alignment, bucketed batches, the task losses against
hand computations, end-to-end `selfsup finetune` + `selfsup evaluate` on synthetic tasks that a
tiny model learns in seconds, and every bad input as one `selfsup: error:` line."""

from __future__ import annotations

import csv
import json
import math
import random
import weakref
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SHARED, assert_clean_error, cli, strict_json
from torch import nn

from selfsup.data.tasks import QAExample, TaggedSentence, TextExample
from selfsup.encoders.text import build_encoder
from selfsup.errors import ConfigError
from selfsup.finetuning import (
    Features,
    FinetuneBatches,
    _best_span,
    bucketed_order,
    encode_qa,
    encode_tags,
    pad_batch,
    predict,
    score,
    split_by_article,
)
from selfsup.keys import IGNORE
from selfsup.objectives.base import batch_loss
from selfsup.objectives.supervised import (
    Regression,
    SequenceClassification,
    SpanQA,
    TokenTagging,
)
from selfsup.presets import preset

pytestmark = pytest.mark.usefixtures("one_thread")


def last_json(stdout: str) -> dict:
    lines = stdout.strip().splitlines()
    assert lines, "no output"
    return strict_json(lines[-1])


# --------------------------------------------------------------------------------------------
# Synthetic tasks a tiny model learns in seconds
# --------------------------------------------------------------------------------------------

FILLER = "the a river stone light house garden music runs over quickly".split()


def write_table(path: Path, rows: list[tuple], header=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def classify_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """The label is decided by one word ("good" -> pos, "bad" -> neg) among filler words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
        words.insert(rng.randint(0, len(words)), "good" if label == "pos" else "bad")
        rows.append((" ".join(words), label))
    return rows


def write_classify(folder: Path, n_train: int = 160, n_dev: int = 60) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_table(folder / "train.csv", classify_rows(n_train, 0))
    write_table(folder / "dev.csv", classify_rows(n_dev, 1))
    return folder


def write_regress(folder: Path, n_train: int = 160, n_dev: int = 60) -> Path:
    """The target is the number of "good" in the sentence (0-3)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("dev", n_dev, 1)):
        rng = random.Random(seed)
        rows = []
        for _ in range(n):
            k = rng.randint(0, 3)
            words = [rng.choice(FILLER) for _ in range(rng.randint(3, 6))]
            for _ in range(k):
                words.insert(rng.randint(0, len(words)), "good")
            rows.append((" ".join(words), float(k)))
        write_table(folder / f"{split}.csv", rows)
    return folder


# The tag is a function of the word; several words split into many WordPieces.
TAGS = {
    "the": "DET", "a": "DET", "river": "NOUN", "stone": "NOUN", "garden": "NOUN", "music": "NOUN",
    "runner": "NOUN", "Straße": "NOUN", "capital": "NOUN", "runs": "VERB", "jumped": "VERB",
    "sings": "VERB", "painted": "VERB", "quickly": "ADV", "slowly": "ADV", "over": "ADP",
    "under": "ADP", ".": "PUNCT", "!": "PUNCT",
}  # fmt: skip


def conllu(sentences: list[list[tuple[str, str]]]) -> str:
    lines = []
    for s, sent in enumerate(sentences):
        lines.append(f"# sent_id = {s}")
        lines += [f"{i}\t{w}\t{w}\t{t}\t_\t_\t0\tdep\t_\t_" for i, (w, t) in enumerate(sent, 1)]
        lines.append("")
    return "\n".join(lines) + "\n"


def write_tag(folder: Path, n_train: int = 100, n_dev: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    words = [w for w in TAGS if TAGS[w] != "PUNCT"]
    for split, n, seed in (("train", n_train, 0), ("dev", n_dev, 1)):
        rng = random.Random(seed)
        sents = []
        for _ in range(n):
            ws = [rng.choice(words) for _ in range(rng.randint(3, 9))] + [rng.choice(".!")]
            sents.append([(w, TAGS[w]) for w in ws])
        (folder / f"{split}.conllu").write_text(conllu(sents), encoding="utf-8")
    return folder


COUNTRIES = ["Alpha", "Beta", "Gamma", "Delta", "Paris", "London", "Straße", "北京", "ÉCOLE"]
CITIES = ["stone", "light", "music", "runner", "Café", "naïve", "résumé", "天安门", "学生"]


def qa_articles(n_articles: int, per_article: int, seed: int) -> list[dict]:
    """SQuAD-format articles: "... the capital of X is Y . ..." asked as "what is the capital of
    X ?"; the answer is the word after "is"."""
    rng = random.Random(seed)
    data = []
    for a in range(n_articles):
        paras = []
        for q in range(per_article):
            x, y = rng.choice(COUNTRIES), rng.choice(CITIES)
            pre = " ".join(rng.choice(FILLER) for _ in range(rng.randint(2, 14)))
            post = " ".join(rng.choice(FILLER) for _ in range(rng.randint(2, 14)))
            context = f"{pre} . the capital of {x} is {y} . {post} ."
            start = context.index(f" is {y} .") + 4
            qa = {"id": f"{seed}-{a}-{q}", "question": f"what is the capital of {x} ?",
                  "answers": [{"text": y, "answer_start": start}]}  # fmt: skip
            paras.append({"context": context, "qas": [qa]})
        data.append({"title": f"article {seed}-{a}", "paragraphs": paras})
    return data


def write_qa(folder: Path, n_train: int = 160, n_dev: int = 50) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train-v1.1.json", n_train, 0), ("dev-v1.1.json", n_dev, 1)):
        data = {"version": "1.1", "data": qa_articles(5, n // 5, seed)}
        (folder / name).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return folder


# --------------------------------------------------------------------------------------------
# QA features
# --------------------------------------------------------------------------------------------


def qa_example(qid: str, words: list[str], question: str, i: int, j: int) -> QAExample:
    """A question whose answer is words[i:j] of the context " ".join(words)."""
    context = " ".join(words)
    start = len(" ".join(words[:i])) + (1 if i else 0)
    text = " ".join(words[i:j])
    assert context[start : start + len(text)] == text
    return QAExample(qid, context, question, [{"text": text, "answer_start": start}], "t")


def qa_examples() -> list[QAExample]:
    rng = random.Random(0)
    vocab = FILLER + ["capital", "good", "Café", "naïve", "résumé", "Straße", "北京", "天安门"]
    long_words = [rng.choice(vocab) for _ in range(90)] + ["😀", "end", "."]
    out = [
        qa_example("short", "the capital of France is Paris .".split(), "where ?", 5, 6),
        qa_example("accents", "Café naïve résumé la capitale est 北京 .".split(), "où ?", 2, 3),
        qa_example("cjk", "Straße 天安门 在 北京 .".split(), "what is the capital ?", 1, 2),
    ]
    # One long context asked about many spans, so some answers straddle window edges; two
    # question lengths so windows of different sizes are cut from it.
    for n, i in enumerate(range(0, 92, 3)):
        q = "where ?" if n % 2 else "what is the capital ?"
        out.append(qa_example(f"long{i}", long_words, q, i, min(i + 1 + n % 3, 93)))
    return out


def test_qa_windows_map_answers_back_exactly(tiny_tokenizer):
    tok, max_len, stride = tiny_tokenizer, 48, 16
    examples = qa_examples()
    feats = encode_qa(tok, examples, max_len, stride)
    windows = defaultdict(list)
    for w, e in enumerate(feats.extra["example"]):
        windows[e].append(w)
    assert sorted(windows) == list(range(len(examples)))
    n_labelled = 0
    for e, ex in enumerate(examples):
        a0 = ex.answers[0]["answer_start"]
        a1 = a0 + len(ex.answers[0]["text"])
        q = tok.tok.encode(ex.question, add_special_tokens=False).ids
        full = [tuple(o) for o in tok.tok.encode(ex.context, add_special_tokens=False).offsets]
        spans, found = [], False
        for w in windows[e]:
            ids, off = feats.ids[w], feats.extra["offsets"][w]
            cm, (s, t) = feats.extra["context_mask"][w], feats.labels[w]
            assert len(ids) <= max_len
            assert ids[: len(q) + 2] == [tok.cls_id, *q, tok.sep_id] and ids[-1] == tok.sep_id
            ctx = [p for p, m in enumerate(cm) if m]
            assert ctx == list(range(len(q) + 2, len(ids) - 1))
            assert all((off[p] is not None) == bool(cm[p]) for p in range(len(ids)))
            assert feats.types[w] == [0] * (len(q) + 2) + [1] * (len(ids) - len(q) - 2)
            span = [tuple(off[p]) for p in ctx]
            spans.append(span)
            whole = span[0][0] <= a0 and span[-1][1] >= a1
            if whole:
                assert cm[s] and cm[t] and s <= t
                assert ex.context[off[s][0] : off[t][1]] == ex.answers[0]["text"]
                found, n_labelled = True, n_labelled + 1
            else:
                assert (s, t) == (0, 0), f"{ex.qid}: a window without the answer points at {s}"
        assert found, f"{ex.qid}: no window holds the whole answer"
        # Windows cover the context in order, each sharing exactly `stride` tokens with the next.
        assert spans[0][0] == full[0] and spans[-1][-1] == full[-1]
        assert sorted(set().union(*spans)) == full
        for a, b in zip(spans, spans[1:], strict=False):
            assert a[-stride:] == b[:stride]
            assert len(set(a) & set(b)) == stride
        if ex.qid.startswith("long"):
            assert len(spans) >= 3
    assert 0 < n_labelled < len(feats)  # some windows hold the answer, some point at [CLS]


def test_qa_stride_beyond_the_window_still_advances(tiny_tokenizer):
    ex = qa_examples()[-1]
    feats = encode_qa(tiny_tokenizer, [ex], 40, stride=128)  # the default stride, short windows
    spans = [[o for o in off if o is not None] for off in feats.extra["offsets"]]
    full = tiny_tokenizer.tok.encode(ex.context, add_special_tokens=False).offsets
    assert 3 <= len(spans) < len(full)
    for a, b in zip(spans, spans[1:], strict=False):
        assert b[0][0] > a[0][0] and b[0] in a  # moves forward, still overlaps
    assert sorted(set().union(*map(set, spans))) == [tuple(o) for o in full]
    with pytest.raises(ConfigError, match="no room"):
        encode_qa(tiny_tokenizer, [ex], 12, 4)


def brute_best(start, end, ctx, max_len):
    best = None
    for i in range(len(start)):
        for j in range(i, min(len(start), i + max_len)):
            if ctx[i] and ctx[j] and (best is None or start[i] + end[j] > best[0]):
                best = (float(start[i] + end[j]), i, j)
    return best


def test_best_span_is_valid_and_best():
    g = torch.Generator().manual_seed(0)
    for trial in range(300):
        T = int(torch.randint(4, 60, (1,), generator=g))
        start, end = torch.randn(T, generator=g) * 3, torch.randn(T, generator=g) * 3
        a = int(torch.randint(1, T - 1, (1,), generator=g))
        b = int(torch.randint(a + 1, T, (1,), generator=g))
        ctx = torch.zeros(T, dtype=torch.bool)
        ctx[a:b] = True
        start[~ctx] += 100  # the question and padding score highest: never to be picked
        end[~ctx] += 100
        max_len = int(torch.randint(1, 8, (1,), generator=g))
        res = _best_span(start, end, ctx, max_len)
        assert res is not None
        score_, i, j = res
        assert i <= j < i + max_len, (trial, res)
        assert bool(ctx[i]) and bool(ctx[j])
        assert score_ == pytest.approx(float(start[i] + end[j]))
        if int(ctx.sum()) <= 20:  # every position is a candidate: the exact best
            want = brute_best(start.tolist(), end.tolist(), ctx.tolist(), max_len)
            assert (i, j) == want[1:] and score_ == pytest.approx(want[0])
    # The best start comes after the best end: the pair is not allowed.
    start = torch.tensor([0.0, 0, 0, 0, 9, 0])
    end = torch.tensor([0.0, 8, 0, 0, 0, 1])
    assert _best_span(start, end, torch.tensor([0, 1, 1, 1, 1, 1]).bool(), 3)[1:] == (4, 5)
    assert _best_span(start, end, torch.zeros(6, dtype=torch.bool), 3) is None


# --------------------------------------------------------------------------------------------
# Tag features
# --------------------------------------------------------------------------------------------


def test_tag_labels_sit_on_first_subtokens(tiny_tokenizer):
    tok = tiny_tokenizer
    words = ["good", "capital", "the", "Straße", "naïve", "river", "北京", "quickly", "!"]
    tags = ["ADJ", "NOUN", "DET", "PROPN", "ADJ", "NOUN", "PROPN", "ADV", "PUNCT"]
    index = {t: i for i, t in enumerate(sorted(set(tags)))}
    pieces = [len(tok.tok.encode(w, add_special_tokens=False).ids) for w in words]
    assert max(pieces) >= 3 and sum(p > 1 for p in pieces) >= 3  # the test needs split words
    firsts = [1 + sum(pieces[:k]) for k in range(len(words))]  # after [CLS]

    sents = [TaggedSentence(words, tags), TaggedSentence(words[::-1], tags[::-1])]
    feats = encode_tags(tok, sents, 128, index)
    lab = feats.labels[0]
    assert len(lab) == len(feats.ids[0]) == 2 + sum(pieces)
    want = [IGNORE] * len(lab)
    for k, p in enumerate(firsts):
        want[p] = index[tags[k]]
    assert lab == want
    for lab, s in zip(feats.labels, sents, strict=True):
        assert sum(t != IGNORE for t in lab) == len(s.words)
    assert feats.extra["cut_words"] == [0, 0]

    # Cut to 10 tokens: the words that still start inside are labelled, the rest are counted.
    feats = encode_tags(tok, sents[:1], 10, index)
    kept = [k for k, p in enumerate(firsts) if p < 9]
    assert [t for t in feats.labels[0] if t != IGNORE] == [index[tags[k]] for k in kept]
    assert feats.extra["cut_words"] == [len(words) - len(kept)] and len(kept) < len(words)


def test_tag_score_counts_cut_words_as_wrong(tiny_tokenizer):
    index = {"A": 0, "B": 1}
    sents = [TaggedSentence(["river"] * 20, ["A"] * 20)]
    feats = encode_tags(tiny_tokenizer, sents, 12, index)
    preds = [[0] * 10]  # all 10 scored words right; the 10 cut ones cannot be
    res = score("tag", "tag", sents, feats, preds, ["A", "B"])
    assert res == {"accuracy": 0.5, "words": 20}


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


def test_bucketed_order_one_group_is_length_sorted():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=77)
    batches = bucketed_order(lengths, 8, np.random.default_rng(1), bucket=50)  # one group
    assert sorted(np.concatenate(batches).tolist()) == list(range(77))
    assert [len(b) for b in batches].count(8) == 9
    ranges = sorted((lengths[b].min(), lengths[b].max()) for b in batches)
    for (_, hi), (lo, _) in zip(ranges, ranges[1:], strict=False):
        assert hi <= lo  # batches are consecutive slices of the sorted lengths
    # The batches themselves come shuffled, not sorted.
    assert [lengths[b].min() for b in batches] != sorted(lengths[b].min() for b in batches)


def test_bucketed_order_groups():
    lengths = np.random.default_rng(0).integers(1, 500, size=1003)
    batches = bucketed_order(lengths, 8, np.random.default_rng(3), bucket=5)
    flat = np.concatenate(batches)
    assert len(flat) == 1003 and sorted(flat.tolist()) == list(range(1003))
    assert all(np.all(np.diff(lengths[b]) >= 0) for b in batches)
    # Groups of 40: the first permutation draw decides them; inside one, batches tile the
    # sorted lengths.
    perm = np.random.default_rng(3).permutation(1003)
    group_of = {int(i): g // 40 for g, i in enumerate(perm)}
    by_group = defaultdict(list)
    for b in batches:
        gs = {group_of[int(i)] for i in b}
        assert len(gs) == 1
        by_group[gs.pop()].append(b)
    for bs in by_group.values():
        ranges = sorted((lengths[b].min(), lengths[b].max()) for b in bs)
        assert all(hi <= lo for (_, hi), (lo, _) in zip(ranges, ranges[1:], strict=False))
    # Far less padding than random batches.
    pad = sum(len(b) * lengths[b].max() for b in batches)
    rand = np.random.default_rng(0).permutation(1003)
    pad_random = sum(8 * lengths[rand[s : s + 8]].max() for s in range(0, 1003, 8))
    assert pad < 0.7 * pad_random


def toy_features(n: int = 53, seed: int = 0) -> Features:
    rng = random.Random(seed)
    ids = [[5 + i % 50] * rng.randint(2, 30) for i in range(n)]
    return Features(ids, [[0] * len(x) for x in ids], list(range(n)))


def epoch_orders(ds: FinetuneBatches, epochs: int) -> list[list[int]]:
    n = len(ds)
    return [
        [i for k in range(e * n, (e + 1) * n) for i in ds[k]["labels"].tolist()]
        for e in range(epochs)
    ]


def test_finetune_batches_are_a_function_of_seed_and_index():
    feats = toy_features()
    ds = FinetuneBatches(feats, 8, 0, "classify", seed=7)
    assert len(ds) == 7
    orders = epoch_orders(ds, 3)
    for order in orders:
        assert sorted(order) == list(range(53))  # each example exactly once per epoch
    assert orders[0] != orders[1] and orders[1] != orders[2]
    # Any access order, any fresh object: the same batch k.
    other = FinetuneBatches(feats, 8, 0, "classify", seed=7)
    ks = list(range(21))
    random.Random(0).shuffle(ks)
    for k in ks:
        a, b = other[k], ds[k]
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert epoch_orders(FinetuneBatches(feats, 8, 0, "classify", seed=8), 1)[0] != orders[0]


def test_pad_batch_pads_dynamically():
    feats = toy_features()
    idx = [3, 10, 4]
    batch = pad_batch(feats, idx, pad_id=0, kind="classify")
    lengths = [len(feats.ids[i]) for i in idx]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert bool((batch["input_ids"][batch["attention_mask"] == 0] == 0).all())
    assert batch["labels"].tolist() == idx


# --------------------------------------------------------------------------------------------
# Task losses against hand computations
# --------------------------------------------------------------------------------------------


def tiny_encoder(vocab_size: int = 50, seed: int = 0):
    cfg = preset("tiny").model
    cfg.vocab_size, cfg.max_len, cfg.dim, cfg.n_heads, cfg.ffn_dim = vocab_size, 32, 32, 2, 64
    torch.manual_seed(seed)
    return build_encoder(cfg)


def toy_batch(B: int = 4, T: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 9:] = 0
    mask[3, 6:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def test_span_qa_loss_by_hand():
    model = SpanQA(tiny_encoder()).eval()
    batch = toy_batch()
    ctx = torch.zeros(4, 12, dtype=torch.bool)  # question 0-3, context 4 .. last real - 1
    ctx[0, 4:11], ctx[1, 4:8], ctx[2, 4:11], ctx[3, 4:5] = True, True, True, True
    batch["context_mask"] = ctx
    batch["start_positions"] = torch.tensor([5, 0, 7, 4])  # row 1: no answer -> [CLS]
    batch["end_positions"] = torch.tensor([6, 0, 10, 4])
    kept = ctx.clone()
    out = model.predict(batch)
    loss = batch_loss(model, batch)
    assert torch.equal(batch["context_mask"], kept)  # the batch's mask is left alone

    def ce(logits, target, valid):
        lse = torch.logsumexp(logits[valid], 0)
        return float(lse - logits[target])

    s, e = out["start_logits"].detach(), out["end_logits"].detach()
    want = 0.0
    for r in range(4):
        valid = ctx[r].clone()
        valid[0] = True  # [CLS] stays a choice: "the answer is not in this window"
        want += 0.5 * (
            ce(s[r], batch["start_positions"][r], valid)
            + ce(e[r], batch["end_positions"][r], valid)
        )
    assert float(loss.detach()) == pytest.approx(want / 4, rel=1e-5)
    assert float(model(batch)["span_loss"]) == pytest.approx(want, rel=1e-5)  # the sum
    # The unmasked softmax gives another value: the mask matters.
    plain = 0.5 * (
        F.cross_entropy(s, batch["start_positions"]) + F.cross_entropy(e, batch["end_positions"])
    )
    assert float(plain) != pytest.approx(want / 4, rel=1e-3)
    loss.backward()
    assert next(model.encoder.parameters()).grad is not None


def test_regression_uses_mse():
    model = Regression(tiny_encoder(), dropout=0.0).eval()
    batch = {**toy_batch(), "labels": torch.tensor([0.0, 1.5, -2.0, 4.0])}
    pred = model.predict(batch)["logits"]
    loss = float(batch_loss(model, batch))
    assert pred.shape == (4,)
    assert loss == pytest.approx(float(((pred - batch["labels"]) ** 2).mean()))
    assert loss != pytest.approx(float((pred - batch["labels"]).abs().mean()))
    # a missing target (NaN) is left out of the sum and of the count
    batch["labels"][1] = float("nan")
    keep = [0, 2, 3]
    want = float(((pred[keep] - batch["labels"][keep]) ** 2).mean())
    assert float(batch_loss(model, batch)) == pytest.approx(want)
    assert model.counts(batch)["examples"] == 3


def test_sequence_classification_loss():
    model = SequenceClassification(tiny_encoder(), 3, dropout=0.0).eval()
    batch = {**toy_batch(), "labels": torch.tensor([0, 2, 1, 2])}
    logits = model.predict(batch)["logits"]
    assert float(batch_loss(model, batch)) == pytest.approx(
        float(F.cross_entropy(logits, batch["labels"]))
    )


def test_token_tagging_scores_only_labelled_positions():
    model = TokenTagging(tiny_encoder(), 5, dropout=0.0).eval()
    batch = toy_batch()
    labels = torch.full((4, 12), IGNORE)
    labels[0, [1, 3, 4]] = torch.tensor([0, 4, 2])
    labels[1, [1, 2]] = torch.tensor([1, 1])
    labels[3, 1] = 3
    keep = labels != IGNORE
    full = model.predict(batch)["logits"]  # (B, T, 5) without labels
    seen = []
    hook = model.head.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    loss = batch_loss(model, {**batch, "labels": labels})
    hook.remove()
    assert seen == [(int(keep.sum()), 32)]  # the head ran on the 6 labelled rows only
    want = F.cross_entropy(full[keep], labels[keep])
    assert float(loss) == pytest.approx(float(want), rel=1e-5)
    # A batch with nothing labelled adds nothing (not a NaN mean over no rows).
    none = batch_loss(model, {**batch, "labels": torch.full((4, 12), IGNORE)})
    assert float(none) == 0.0
    none.backward()


# --------------------------------------------------------------------------------------------
# Prediction holds one batch of logits at a time
# --------------------------------------------------------------------------------------------


class Spy(nn.Module):
    """Wraps a task model; records, at each call, how many earlier calls' logits are alive."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.refs, self.alive, self.sizes = inner, [], [], []

    def predict(self, batch):
        self.alive.append(sum(any(r() is not None for r in refs) for refs in self.refs))
        self.sizes.append(batch["input_ids"].shape[0])
        out = self.inner.predict(batch)
        self.refs.append([weakref.ref(v) for v in out.values()])
        return out


@pytest.mark.parametrize("kind", ["classify", "regress", "tag", "qa"])
def test_predict_holds_one_batch_of_logits(kind, tiny_tokenizer):
    enc = tiny_encoder(vocab_size=tiny_tokenizer.vocab_size)
    rng = random.Random(0)
    if kind == "qa":
        inner = SpanQA(enc)
        feats = encode_qa(tiny_tokenizer, qa_examples(), 32, 8)
    elif kind == "tag":
        inner = TokenTagging(enc, 3)
        sents = [TaggedSentence(r[0].split(), ["A"] * len(r[0].split())) for r in
                 classify_rows(40, 0)]  # fmt: skip
        feats = encode_tags(tiny_tokenizer, sents, 32, {"A": 0})
    else:
        inner = Regression(enc) if kind == "regress" else SequenceClassification(enc, 2)
        ids = [[2] + [rng.randint(5, 140) for _ in range(rng.randint(2, 20))] + [3]
               for _ in range(40)]  # fmt: skip
        feats = Features(ids, [[0] * len(x) for x in ids], [0] * 40)
    spy = Spy(inner)
    preds = predict(spy, feats, kind, tiny_tokenizer.pad_id, batch_size=8)
    assert len(spy.sizes) >= 5 and max(spy.sizes) <= 8
    assert max(spy.alive) <= 1, spy.alive
    flat = list(preds.values()) if kind == "qa" else preds
    assert len(flat) == (len(qa_examples()) if kind == "qa" else len(feats))
    assert not any(isinstance(x, torch.Tensor) for x in flat)


# --------------------------------------------------------------------------------------------
# Scoring and splits
# --------------------------------------------------------------------------------------------


def test_score_keeps_every_regression_target():
    ex = [TextExample("x", None, v) for v in (-100.0, 0.0, 1.0, 2.0)]
    feats = Features([[1]] * 4, [[0]] * 4, [-100.0, 0.0, 1.0, 2.0])
    res = score("regress", "regress", ex, feats, [-100.0, 0.0, 1.0, 2.0], None)
    assert res["pearson"] == pytest.approx(1.0)  # dropping -100 would still give 1 ...
    res = score("regress", "regress", ex, feats, [3.0, 0.0, 1.0, 2.0], None)
    assert res["pearson"] < 0  # ... but not this: the -100 target is scored


def test_score_of_an_unlabelled_split_is_empty():
    ex = [TextExample("x"), TextExample("y")]
    feats = Features([[1], [1]], [[0], [0]], [IGNORE, IGNORE])
    assert score("classify", "classify", ex, feats, [0, 1], ["a", "b"]) == {}
    feats = Features([[1], [1]], [[0], [0]], [math.nan, math.nan])
    assert score("regress", "regress", ex, feats, [0.5, 1.0], None) == {}


def test_split_by_article():
    examples = [QAExample(f"q{i}", "c", "q", [], f"title {i % 7}") for i in range(70)]
    train, dev = split_by_article(examples, 0.3, seed=0)
    assert len(train) + len(dev) == 70
    assert {e.title for e in train}.isdisjoint({e.title for e in dev})
    assert len({e.title for e in dev}) == 2  # round(0.3 * 7)
    assert split_by_article(examples, 0.3, seed=0) == (train, dev)
    dev_titles = [{e.title for e in split_by_article(examples, 0.3, s)[1]} for s in range(5)]
    assert len({frozenset(t) for t in dev_titles}) > 1  # the seed picks the articles
    with pytest.raises(ConfigError):
        split_by_article(examples, 1.0, seed=0)
    with pytest.raises(ConfigError, match="fewer than 2"):
        split_by_article(examples[:1], 0.5, seed=0)


# --------------------------------------------------------------------------------------------
# End to end: finetune, then evaluate reproduces the numbers
# --------------------------------------------------------------------------------------------

E2E = {
    # task: (writer, extra finetune args, main metric, threshold)
    "classify": (write_classify, ["--epochs", "3", "--lr", "1e-3"], "accuracy", 0.9),
    "tag": (write_tag, ["--epochs", "3", "--lr", "1e-3"], "accuracy", 0.9),
    "qa": (write_qa, ["--epochs", "3", "--lr", "1e-3", "--max-len", "48"], "exact_match", None),
    "regress": (write_regress, ["--epochs", "3", "--lr", "1e-3"], "corr", 0.5),
}


def finetune_and_evaluate(capsys, tmp_path, task, data, init_args, extra):
    out = tmp_path / "ft"
    argv = ["finetune", "--task", task, "--data", data, *init_args, "--out", out]
    argv += ["--batch-size", "16", "--max-len", "32", *extra]
    code, stdout, err = cli(capsys, *argv)
    assert code == 0, err
    tuned = last_json(stdout)
    assert tuned["task"] == task
    assert {"config.json", "model.safetensors", "results.json"} <= {p.name for p in out.iterdir()}
    assert strict_json((out / "results.json").read_text())["dev"] == {
        k: v for k, v in tuned.items() if k != "task"
    }
    code, stdout, err = cli(capsys, "evaluate", out, "--task", task, "--data", data)
    assert code == 0, err
    evaluated = last_json(stdout)
    assert evaluated.pop("split") == "dev"
    tuned.pop("step")
    assert evaluated == tuned  # the same numbers, not just close
    pred_file = out / f"predictions-{task}-dev.jsonl"
    rows = [strict_json(line) for line in pred_file.read_text(encoding="utf-8").splitlines()]
    return tuned, rows, out


@pytest.mark.parametrize("task", list(E2E))
def test_finetune_learns_and_evaluate_reproduces(task, tmp_path, capsys, tiny_run):
    writer, extra, metric, threshold = E2E[task]
    data = writer(tmp_path / "data")
    res, rows, out = finetune_and_evaluate(
        capsys, tmp_path, task, data, ["--init", tiny_run], extra
    )
    if task == "classify":
        assert res["accuracy"] >= threshold
        assert len(rows) == 60 and {r["prediction"] for r in rows} <= {"pos", "neg"}
        good = [r["prediction"] == r["label"] for r in rows]
        assert sum(good) / len(good) == res["accuracy"]
    elif task == "tag":
        assert res["accuracy"] >= threshold
        assert len(rows) == 40 and all(len(r["prediction"]) == len(r["words"]) for r in rows)
        right = [
            p == TAGS[w] for r in rows for p, w in zip(r["prediction"], r["words"], strict=True)
        ]
        assert res["words"] == len(right) and sum(right) / len(right) == res["accuracy"]
    elif task == "qa":
        dev = json.loads((data / "dev-v1.1.json").read_text(encoding="utf-8"))["data"]
        paras = [p for a in dev for p in a["paragraphs"]]
        # chance: a uniformly random single word of the context is the answer
        chance = 100 * float(np.mean([1 / len(p["context"].split()) for p in paras]))
        assert res["exact_match"] > max(20.0, 3 * chance), (res, chance)
        assert 0 <= res["exact_match"] <= res["f1"] <= 100
        assert len(rows) == len(paras) and all(isinstance(r["prediction"], str) for r in rows)
    else:
        assert set(res) >= {"pearson", "spearmanr", "corr"}
        assert res["corr"] > threshold and -1 <= res["pearson"] <= 1
        assert len(rows) == 60 and all(isinstance(r["prediction"], float) for r in rows)
    assert metric in res


def test_finetune_from_scratch_and_unlabelled_test_split(tmp_path, capsys, tiny_run):
    data = write_classify(tmp_path / "data")
    write_table(data / "test.csv", [(t, "") for t, _ in classify_rows(12, 2)])
    args = ["--init", "scratch", "--preset", "tiny", "--tokenizer", tiny_run]
    res, _, out = finetune_and_evaluate(
        capsys, tmp_path, "classify", data, args, ["--epochs", "3", "--lr", "1e-3"]
    )
    assert res["accuracy"] >= 0.9
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["dim"] == preset("tiny").model.dim and config["init"] == "scratch"
    # An unlabelled test split: predictions, no metrics, still JSON on the last line.
    code, stdout, err = cli(capsys, "evaluate", out, "--task", "classify", "--data", data,
                            "--split", "test")  # fmt: skip
    assert code == 0, err
    assert last_json(stdout) == {"task": "classify", "split": "test"}
    rows = (out / "predictions-classify-test.jsonl").read_text().splitlines()
    assert len(rows) == 12 and all(json.loads(r)["prediction"] in ("pos", "neg") for r in rows)


def test_undefined_metric_is_null_not_nan(tmp_path, capsys, tiny_run):
    """A dev set with one constant target: Pearson is undefined; the output stays JSON."""
    data = write_regress(tmp_path / "data", n_train=32, n_dev=6)
    write_table(data / "dev.csv", [(f"river good {i}", 1.0) for i in range(6)])
    argv = ["finetune", "--task", "regress", "--data", data, "--init", tiny_run, "--out",
            tmp_path / "ft", "--epochs", "1", "--max-len", "16"]  # fmt: skip
    code, stdout, err = cli(capsys, *argv)
    assert code == 0, err
    assert last_json(stdout)["pearson"] is None
    strict_json((tmp_path / "ft" / "results.json").read_text())


# --------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing left behind
# --------------------------------------------------------------------------------------------

BAD = {
    "unknown task": ("finetune --task nope --data {cls} --init {run} --out {out}", "unknown task"),
    "missing data": ("finetune --task classify --data {tmp}/none --init {run} --out {out}",
                     "does not exist"),
    "unseen dev label": ("finetune --task classify --data {unseen} --init {run} --out {out}",
                         "never saw"),
    "unseen dev tag": ("finetune --task tag --data {tags} --init {run} --out {out}", "never saw"),
    "missing column": ("finetune --task classify --data {cls} --text-column review --init {run} "
                       "--out {out}", "review"),
    "missing init": ("finetune --task classify --data {cls} --init {tmp}/none --out {out}",
                     "no such model"),
    "scratch without tokenizer": ("finetune --task classify --data {cls} --init scratch "
                                  "--preset tiny --out {out}", "--tokenizer"),
    "scratch without preset": ("finetune --task classify --data {cls} --init scratch "
                               "--tokenizer {run}/tokenizer --out {out}", "--preset"),
    "holdout on classify": ("finetune --task classify --data {cls} --init {run} "
                            "--article-holdout 0.2 --out {out}", "QA"),
    "bad lr": ("finetune --task classify --data {cls} --init {run} --lr 0 --out {out}", "--lr"),
    "bad train limit": ("finetune --task classify --data {cls} --init {run} --train-limit -5 "
                        "--out {out}", "--train-limit"),
    "out is a file": ("finetune --task classify --data {cls} --init {run} --out {cls}/train.csv",
                      "is a file"),
    "out not empty": ("finetune --task classify --data {cls} --init {run} --out {cls}",
                      "not empty"),
    "evaluate a run": ("evaluate {run} --task classify --data {cls}", "not a fine-tuned"),
    "evaluate a folder": ("evaluate {tmp} --task classify --data {cls}", "not a fine-tuned"),
    "evaluate bad config": ("evaluate {broken} --task classify --data {cls}", "not a fine-tuned"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line(case, tmp_path, capsys, tiny_run):
    cls = write_classify(tmp_path / "cls", 20, 10)
    unseen = write_classify(tmp_path / "unseen", 20, 10)
    write_table(unseen / "dev.csv", [("good river", "pos"), ("so so river", "meh")])
    tags = write_tag(tmp_path / "tags", 10, 4)
    with open(tags / "dev.conllu", "a", encoding="utf-8") as f:
        f.write(conllu([[("river", "NOUN"), ("xyz", "SYM")]]))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    out = tmp_path / "out"
    template, says = BAD[case]
    names = dict(tmp=tmp_path, cls=cls, unseen=unseen, tags=tags, run=tiny_run, out=out,
                 broken=broken)  # fmt: skip
    argv = [a.format(**names) for a in template.split()]
    code, _, err = cli(capsys, *argv)
    assert_clean_error(code, err, out, says)
    assert not list(tmp_path.rglob("predictions-*"))


def test_evaluate_with_a_task_of_another_kind(tmp_path, capsys, tiny_run):
    data = write_classify(tmp_path / "data", 16, 8)
    argv = ["finetune", "--task", "classify", "--data", data, "--init", tiny_run, "--out",
            tmp_path / "ft", "--epochs", "1", "--max-len", "16"]  # fmt: skip
    assert cli(capsys, *argv)[0] == 0
    tags = write_tag(tmp_path / "tags", 4, 4)
    code, _, err = cli(capsys, "evaluate", tmp_path / "ft", "--task", "tag", "--data", tags)
    assert_clean_error(code, err, says="classify")


# --------------------------------------------------------------------------------------------
# Real data and a real pretrained model
# --------------------------------------------------------------------------------------------


@pytest.mark.data
@pytest.mark.slow
def test_minilm_finetunes_on_sst2(minilm_dir, tmp_path, capsys):
    sst2 = SHARED / "glue" / "SST-2"
    if not sst2.exists():
        pytest.skip(f"{sst2} is absent (set SELFSUP_SHARED_DATA to the shared data folder)")
    out = tmp_path / "ft"
    argv = ["finetune", "--task", "sst2", "--data", sst2, "--init", minilm_dir, "--out", out,
            "--train-limit", "300", "--epochs", "1", "--max-len", "64", "--lr", "1e-4"]  # fmt: skip
    code, stdout, err = cli(capsys, *argv)
    assert code == 0, err
    tuned = last_json(stdout)
    assert 0.0 <= tuned["accuracy"] <= 1.0
    code, stdout, err = cli(capsys, "evaluate", out, "--task", "sst2", "--data", sst2)
    assert code == 0, err
    evaluated = last_json(stdout)
    assert evaluated["accuracy"] == tuned["accuracy"]
    rows = (out / "predictions-sst2-dev.jsonl").read_text().splitlines()
    assert len(rows) == 872 and json.loads(rows[0])["prediction"] in ("0", "1")


# --------------------------------------------------------------------------------------------
# Honest fine-tuning: a single file is never scored on its training rows; the best evaluation
# is kept
# --------------------------------------------------------------------------------------------


def _texts_of(examples) -> list[str]:
    return [e.text for e in examples]


def test_single_file_gets_a_seeded_dev_split_never_trained_on(tmp_path):
    from selfsup.finetuning import FinetuneConfig, load_splits

    rows = [(f"row {i} {t}", lab) for i, (t, lab) in enumerate(classify_rows(200, 3))]
    data = write_table(tmp_path / "reviews.csv", rows)
    said = []
    cfg = FinetuneConfig("classify", str(data), "x", "x", seed=4)
    train_ex, dev_ex = load_splits(cfg, said.append)
    assert len(dev_ex) == 20 and len(train_ex) == 180
    assert not set(_texts_of(train_ex)) & set(_texts_of(dev_ex))
    assert any("held out of training" in s and "20 rows" in s for s in said), said
    # seeded: the same split again, another with another seed
    again = load_splits(cfg, lambda s: None)[1]
    assert _texts_of(again) == _texts_of(dev_ex)
    other = load_splits(FinetuneConfig("classify", str(data), "x", "x", seed=5), print)[1]
    assert _texts_of(other) != _texts_of(dev_ex)
    # --dev FILE: train on every row of the file, score on the other file
    dev_file = write_table(tmp_path / "dev.csv", classify_rows(30, 9))
    cfg = FinetuneConfig("classify", str(data), "x", "x", dev=str(dev_file))
    train_ex, dev_ex = load_splits(cfg, lambda s: None)
    assert len(train_ex) == 200 and len(dev_ex) == 30
    with pytest.raises(ConfigError, match="dev-fraction"):
        load_splits(FinetuneConfig("classify", str(data), "x", "x", dev_fraction=1.5), print)


def test_a_folder_with_splits_keeps_its_own_dev(tmp_path):
    from selfsup.finetuning import FinetuneConfig, load_splits

    data = write_classify(tmp_path / "data", n_train=50, n_dev=20)
    train_ex, dev_ex = load_splits(FinetuneConfig("classify", str(data), "x", "x"), print)
    assert (len(train_ex), len(dev_ex)) == (50, 20)


def test_the_best_evaluation_is_kept(tmp_path, capsys, tiny_run, monkeypatch):
    """Dev scores that fall after the first evaluation: the folder keeps the first
    evaluation's weights, and results.json says so."""
    import selfsup.finetuning as ft

    seen, real_predict = [], ft.predict
    scores = iter([0.9, 0.5, 0.4])

    def spy_predict(m, *a, **kw):
        seen.append({k: v.detach().clone() for k, v in m.state_dict().items()})
        return real_predict(m, *a, **kw)

    monkeypatch.setattr(ft, "predict", spy_predict)
    monkeypatch.setattr(ft, "score", lambda *a, **kw: {"accuracy": next(scores)})
    data = write_classify(tmp_path / "data", n_train=96, n_dev=20)
    out = tmp_path / "ft"
    code, _, err = cli(capsys, "finetune", "--task", "classify", "--data", data, "--init",
                       tiny_run, "--epochs", "3", "--batch-size", "32", "--device", "cpu",
                       "--out", out)  # fmt: skip
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert res["kept"] == "best" and res["kept_step"] == 3 and res["dev"]["accuracy"] == 0.9
    assert [h["accuracy"] for h in res["history"]] == [0.9, 0.5, 0.4]
    from safetensors.torch import load_file

    saved = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(saved[k], seen[0][k]) for k in saved)
    assert not all(torch.equal(saved[k], seen[-1][k]) for k in saved)


# --------------------------------------------------------------------------------------------
# Early stopping, class weights, Ctrl-C, CLUE file flags (issue 9)
# --------------------------------------------------------------------------------------------


def spied_finetune(monkeypatch, scores):
    """Patch finetune's predict (to record the weights each evaluation scores) and score (to
    return `scores` one by one; an exception instance is raised instead). Returns the list of
    recorded state dicts."""
    import selfsup.finetuning as ft

    seen, real_predict, it = [], ft.predict, iter(scores)

    def spy_predict(m, *a, **kw):
        seen.append({k: v.detach().clone() for k, v in m.state_dict().items()})
        return real_predict(m, *a, **kw)

    def fake_score(*a, **kw):
        value = next(it)
        if isinstance(value, BaseException):
            raise value
        return {"accuracy": value}

    monkeypatch.setattr(ft, "predict", spy_predict)
    monkeypatch.setattr(ft, "score", fake_score)
    return seen


def finetune_argv(data, run, out, *extra):
    return ("finetune", "--task", "classify", "--data", data, "--init", run, "--batch-size",
            "32", "--device", "cpu", "--out", out, *extra)  # fmt: skip


def test_patience_stops_early_and_keeps_the_best(tmp_path, capsys, tiny_run, monkeypatch):
    """3 steps an epoch; dev 0.5, 0.9, 0.6, 0.7: with --patience 2 training stops after the 4th
    evaluation (step 12 of 30), the folder holds the 2nd evaluation's weights, results.json and
    metrics.jsonl say so."""
    seen = spied_finetune(monkeypatch, [0.5, 0.9, 0.6, 0.7, 0.99, 0.99])
    data = write_classify(tmp_path / "data", n_train=96, n_dev=20)
    out = tmp_path / "ft"
    code, stdout, err = cli(capsys, *finetune_argv(data, tiny_run, out, "--epochs", "10",
                                                   "--patience", "2"))  # fmt: skip
    assert code == 0, err
    assert len(seen) == 4
    res = json.loads((out / "results.json").read_text())
    assert res["stopped_early_at"] == 12 and res["kept_step"] == 6 and res["kept"] == "best"
    assert [h["step"] for h in res["history"]] == [3, 6, 9, 12]
    assert res["dev"]["accuracy"] == 0.9 and "interrupted" not in res
    from safetensors.torch import load_file

    saved = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(saved[k], seen[1][k]) for k in saved)
    assert not all(torch.equal(saved[k], seen[-1][k]) for k in saved)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval_accuracy" in r] == [3, 6, 9, 12]
    assert max(r["step"] for r in rows) == 12
    config = json.loads((out / "config.json").read_text())
    assert config["finetune"]["patience"] == 2
    assert "stopped early at step 12" in stdout
    from selfsup.finetuning import load_finetuned

    model, _, _ = load_finetuned(out)
    assert all(torch.equal(model.state_dict()[k], seen[1][k]) for k in saved)


def test_patience_with_keep_last_keeps_the_stopping_evaluation(
    tmp_path, capsys, tiny_run, monkeypatch
):
    seen = spied_finetune(monkeypatch, [0.9, 0.5, 0.99])
    data = write_classify(tmp_path / "data", n_train=96, n_dev=20)
    out = tmp_path / "ft"
    code, _, err = cli(capsys, *finetune_argv(data, tiny_run, out, "--epochs", "5",
                                              "--patience", "1", "--keep", "last"))  # fmt: skip
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert (res["stopped_early_at"], res["kept_step"], res["kept"]) == (6, 6, "last")
    from safetensors.torch import load_file

    saved = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(saved[k], seen[1][k]) for k in saved)


def test_ctrl_c_after_an_evaluation_keeps_the_best(tmp_path, capsys, tiny_run, monkeypatch):
    """Ctrl-C during the 2nd evaluation: exit 130, and the folder is a usable fine-tuned model
    with the 1st evaluation's weights, results.json marked interrupted at step 6, no trainer
    checkpoint left."""
    seen = spied_finetune(monkeypatch, [0.7, KeyboardInterrupt()])
    data = write_classify(tmp_path / "data", n_train=96, n_dev=20)
    out = tmp_path / "ft"
    code, stdout, err = cli(capsys, *finetune_argv(data, tiny_run, out, "--epochs", "3"))
    assert code == 130, err
    res = json.loads((out / "results.json").read_text())
    assert res["interrupted"] is True and res["at_step"] == 6
    assert res["kept_step"] == 3 and res["dev"]["accuracy"] == 0.7
    assert not (out / "checkpoints").exists()
    assert "interrupted at step 6" in stdout
    from selfsup.finetuning import load_finetuned

    model, _, config = load_finetuned(out)
    assert config["kind"] == "classify"
    assert all(torch.equal(v, seen[0][k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, seen[1][k]) for k, v in model.state_dict().items())


def test_ctrl_c_before_any_evaluation_removes_the_folder(tmp_path, capsys, tiny_run, monkeypatch):
    spied_finetune(monkeypatch, [KeyboardInterrupt()])
    data = write_classify(tmp_path / "data", n_train=64, n_dev=20)
    out = tmp_path / "ft"
    code, stdout, err = cli(capsys, *finetune_argv(data, tiny_run, out, "--epochs", "1"))
    assert code == 130, err
    assert not out.exists()
    assert "interrupted before the first dev evaluation: removed" in stdout


def test_weighted_classification_loss_is_torch_weighted_mean():
    w = torch.tensor([0.5, 3.0, 1.25])
    model = SequenceClassification(tiny_encoder(), 3, dropout=0.0, class_weights=w).eval()
    labels = torch.tensor([0, 2, IGNORE, 1])
    batch = {**toy_batch(), "labels": labels}
    logits = model.predict(batch)["logits"]
    want = F.cross_entropy(logits, labels, weight=w, ignore_index=IGNORE)
    assert float(batch_loss(model, batch).detach()) == pytest.approx(float(want), rel=1e-6)
    assert model.counts(batch)["weight"] == pytest.approx(0.5 + 1.25 + 3.0)
    assert model.counts(batch)["examples"] == 3
    # unweighted differs (the test could fail), and the weights are not in the state dict
    assert float(want) != pytest.approx(float(F.cross_entropy(logits, labels, ignore_index=IGNORE)))
    assert "class_weights" not in model.state_dict()
    # the gradient too
    model.zero_grad()
    batch_loss(model, batch).backward()
    got = model.head.proj.weight.grad.clone()
    model.zero_grad()
    F.cross_entropy(model.predict(batch)["logits"], labels, weight=w,
                    ignore_index=IGNORE).backward()  # fmt: skip
    assert torch.allclose(got, model.head.proj.weight.grad, atol=1e-6)


def test_weighted_loss_is_the_same_however_the_batch_is_split():
    from selfsup.objectives.base import normalise

    w = torch.tensor([0.2, 5.0])
    model = SequenceClassification(tiny_encoder(), 2, dropout=0.0, class_weights=w).eval()
    batch = {**toy_batch(), "labels": torch.tensor([0, 0, 1, 0])}
    whole = float(batch_loss(model, batch))
    sums, counts = {}, {}
    for part in ([0, 1], [2, 3]):
        b = {k: v[part] for k, v in batch.items()}
        for k, v in model(b).items():
            sums[k] = sums.get(k, 0.0) + float(v)
        for k, v in model.counts(b).items():
            counts[k] = counts.get(k, 0.0) + v
    assert normalise(sums, counts, model.terms)["ce_loss"] == pytest.approx(whole, rel=1e-5)


def test_balanced_class_weights_are_sklearns():
    from selfsup.finetuning import balanced_class_weights

    sk = pytest.importorskip("sklearn.utils.class_weight")
    y = ["a"] * 5 + ["b"] * 2 + ["c"]
    want = sk.compute_class_weight("balanced", classes=np.array(["a", "b", "c"]), y=np.array(y))
    assert balanced_class_weights(y, ["a", "b", "c"]) == pytest.approx(want.tolist())
    assert balanced_class_weights(["a", "a", "b"], ["a", "b", "z"])[2] == 0.0  # never seen


def test_class_weights_are_written_and_reloaded(tmp_path, capsys, tiny_run):
    from selfsup.finetuning import balanced_class_weights, load_finetuned

    folder = tmp_path / "data"
    folder.mkdir()
    rows = classify_rows(48, 0)
    rows = [r for r in rows if r[1] == "pos"][:8] + [r for r in rows if r[1] == "neg"]
    write_table(folder / "train.csv", rows)
    write_table(folder / "dev.csv", classify_rows(16, 1))
    out = tmp_path / "ft"
    code, _, err = cli(capsys, *finetune_argv(folder, tiny_run, out, "--epochs", "1",
                                              "--class-weights", "balanced"))  # fmt: skip
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    want = balanced_class_weights([r[1] for r in rows], config["labels"])
    assert config["class_weights"] == pytest.approx(want) and want[0] != want[1]
    assert config["finetune"]["class_weights"] == "balanced"
    model, _, _ = load_finetuned(out)
    assert model.class_weights.tolist() == pytest.approx(want)
    assert model.terms["ce_loss"] == "weight"


def test_class_weights_are_for_classification_only(tmp_path, capsys, tiny_run):
    data = write_regress(tmp_path / "data", 20, 10)
    out = tmp_path / "ft"
    code, _, err = cli(capsys, "finetune", "--task", "regress", "--data", data, "--init",
                       tiny_run, "--class-weights", "balanced", "--out", out)  # fmt: skip
    assert_clean_error(code, err, out, "--class-weights is for classification")


def test_clue_file_flags_become_task_options():
    from selfsup.cli import _task_options, build_parser

    parser = build_parser()
    args = parser.parse_args(["finetune", "--task", "tnews", "--data", "d", "--init", "x",
                              "--out", "o", "--fold", "all"])  # fmt: skip
    assert _task_options(args) == {"fold": "all"}
    args = parser.parse_args(["evaluate", "m", "--task", "ocnli", "--data", "d",
                              "--ocnli-train", "3k"])  # fmt: skip
    assert _task_options(args) == {"train_size": "3k"}
    args = parser.parse_args(["evaluate", "m", "--task", "tnews", "--data", "d"])
    assert _task_options(args) == {}  # the task's own default (fold 0)
    args = parser.parse_args(["finetune", "--task", "sst2", "--data", "d", "--init", "x",
                              "--out", "o", "--fold", "1"])  # fmt: skip
    with pytest.raises(ConfigError, match="--fold is for task tnews"):
        _task_options(args)


def test_ocnli_skipped_rows_are_named_in_the_log(tmp_path):
    from selfsup.finetuning import FinetuneConfig, load_splits

    folder = tmp_path / "ocnli"
    folder.mkdir()
    row = lambda s1, lab: json.dumps({"sentence1": s1, "sentence2": "b", "label": lab})  # noqa: E731
    (folder / "train.3k.json").write_text(
        "\n".join([row("x", "entailment"), row("y", "-"), row("z", "neutral"), row("w", "-")])
    )
    (folder / "dev.json").write_text("\n".join([row("x", "neutral"), row("y", "-")]))
    lines = []
    cfg = FinetuneConfig("ocnli", str(folder), "x", "x", options={"train_size": "3k"})
    train_ex, dev_ex = load_splits(cfg, lines.append)
    assert (len(train_ex), len(dev_ex)) == (2, 1)
    assert "skipped 2 training rows labelled '-' (no gold label)" in lines
    assert any(line.startswith("skipped 1 dev rows labelled '-'") for line in lines)


def test_fine_tuned_folders_carry_a_format_version(tmp_path, capsys, tiny_run):
    from selfsup.finetuning import FINETUNE_VERSION, load_finetuned

    data = write_classify(tmp_path / "data", n_train=32, n_dev=8)
    out = tmp_path / "ft"
    code, _, err = cli(capsys, "finetune", "--task", "classify", "--data", data, "--init",
                       tiny_run, "--epochs", "1", "--device", "cpu", "--out", out)  # fmt: skip
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["version"] == FINETUNE_VERSION
    config["version"] = FINETUNE_VERSION + 1
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="newer selfsup"):
        load_finetuned(out)
