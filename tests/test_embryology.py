"""`selfsup embryology`: every checkpoint of a tiny run saved with --save-schedule log is read,
its numbers are right (held-out loss equal to the training's own evaluation, MLM by tag equal
to a direct computation, the probe equal to sklearn's logistic regression), the plot is a real
picture, and bad input is one line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import WORDS
from helpers import assert_clean_error, cli, shared

import selfsup
from selfsup.checkpoint import read_safetensors
from selfsup.data.tasks import UPOS, read_conllu
from selfsup.data.tokenizer import load_tokenizer
from selfsup.embryology import encode_words, mask_words, mlm_by_tag, probe_accuracy
from selfsup.models import run_config
from selfsup.objectives import build_objective

# A toy language with parts of speech: DET ADJ? NOUN VERB ADP DET NOUN PUNCT.
LEXICON = {
    "DET": ["the", "a"], "ADJ": ["quickly", "naïve"], "NOUN": ["river", "stone", "house",
    "garden", "music", "runner"], "VERB": ["runs", "jumped", "running"], "ADP": ["over"],
    "PROPN": ["Paris", "London", "Alpha"], "PUNCT": [".", "!", "?"],
}  # fmt: skip


def toy_sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    g = random.Random(seed)
    out = []
    for _ in range(n):
        tags = ["DET", *(["ADJ"] if g.random() < 0.5 else []), "NOUN", "VERB", "ADP"]
        tags += [g.choice(["PROPN", "NOUN"]), "PUNCT"]
        out.append([(g.choice(LEXICON[t]), t) for t in tags])
    return out


def write_conllu(path: Path, sentences) -> None:
    lines = []
    for k, sent in enumerate(sentences):
        lines.append(f"# sent_id = {k}")
        for i, (w, t) in enumerate(sent, 1):
            lines.append(f"{i}\t{w}\t{w.lower()}\t{t}\t_\t_\t0\tdep\t_\t_")
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def toy_ud(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ud")
    write_conllu(folder / "toy-ud-train.conllu", toy_sentences(200, 0))
    write_conllu(folder / "toy-ud-dev.conllu", toy_sentences(60, 1))
    return folder


@pytest.fixture(scope="session")
def embryo_run(tmp_path_factory) -> Path:
    """A tiny MLM+NSP run of 8 steps saved on the log schedule, a checkpoint at step 5 too."""
    root = tmp_path_factory.mktemp("embryo")
    g = random.Random(0)
    docs = [" ".join(w for w, _ in s) for s in toy_sentences(600, 2)]
    docs += [" ".join(g.choice(WORDS) for _ in range(8)) + " ." for _ in range(200)]
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(docs[i : i + 4]) for i in range(0, len(docs), 4)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        selfsup.pretrain(data=[str(corpus)], vocab_size=200, max_len=32, batch_size=16, steps=8,
                         save_every=5, save_schedule="log", eval_every=4, lr=2e-3,
                         warmup_steps=2, cache_dir=str(root / "cache"), no_progress=True,
                         out=str(root / "run"))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return root / "run"


def run_embryology(capsys, run, data, out, *extra) -> tuple[dict, str]:
    code, stdout, err = cli(capsys, "embryology", run, "--probe", "pos", "--data", data,
                            "--out", out, "--train-words", 600, "--dev-words", 200,
                            "--threads", 1, *extra)  # fmt: skip
    assert code == 0, err
    return json.loads((out / "embryology.json").read_text()), stdout


def test_reads_every_checkpoint_and_plots(embryo_run, toy_ud, tmp_path, capsys):
    from matplotlib.image import imread

    report, stdout = run_embryology(capsys, embryo_run, toy_ud, tmp_path / "e")
    got = [(r["step"], r["kind"]) for r in report["steps"]]
    assert got == [(0, "snapshot"), (1, "snapshot"), (2, "snapshot"), (3, "snapshot"),
                   (4, "snapshot"), (5, "checkpoint"), (6, "snapshot"),
                   (8, "snapshot")]  # fmt: skip
    assert stdout.count("POS probe") == 8
    for r in report["steps"]:
        assert 0 <= r["pos_probe_acc"] <= 1 and 0 <= r["mlm_word_acc"] <= 1
        assert set(r["mlm_acc_by_upos"]) <= set(UPOS) and "NOUN" in r["mlm_acc_by_upos"]
        assert {"mlm_loss", "mlm_acc", "nsp_acc"} <= set(r["heldout"])
    assert report["word_vector"] == "first sub-token"
    # the held-out numbers are the training's own evaluation of the same weights (steps 4, 8)
    evals = [json.loads(x) for x in (embryo_run / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r for r in evals if "eval_mlm_loss" in r}
    assert set(evals) == {4, 8}
    for r in report["steps"]:
        if r["step"] in evals:
            for k in ("mlm_loss", "mlm_acc", "nsp_acc"):
                assert r["heldout"][k] == pytest.approx(evals[r["step"]][f"eval_{k}"], abs=2e-4)
    losses = [r["heldout"]["mlm_loss"] for r in report["steps"]]
    assert losses[-1] < losses[0]  # it trained
    png = tmp_path / "e" / "embryology.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    pixels = imread(png)
    assert pixels.shape[0] > 500 and pixels.std() > 0.05
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 100

    # run again: the steps are read back, not measured again; new settings measure again
    again, stdout = run_embryology(capsys, embryo_run, toy_ud, tmp_path / "e")
    assert "POS probe" not in stdout and again["steps"] == report["steps"]
    other, stdout = run_embryology(capsys, embryo_run, toy_ud, tmp_path / "e", "--layer", 0,
                                   "--no-heldout")  # fmt: skip
    assert stdout.count("POS probe") == 8 and other["settings"]["layer"] == 0
    assert "heldout" not in other["steps"][0]


def test_probe_equals_sklearns_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    g = np.random.default_rng(0)
    centres = g.normal(size=(5, 16)) * 0.6
    y = g.integers(0, 5, 1200)
    x = centres[y] + g.normal(size=(1200, 16))
    xt, yt, xd, yd = x[:900], y[:900], x[900:], y[900:]
    ours = probe_accuracy(torch.tensor(xt), torch.tensor(yt), torch.tensor(xd), torch.tensor(yd),
                          n_classes=5)["accuracy"]  # fmt: skip
    theirs = LogisticRegression(max_iter=2000).fit(xt, yt).score(xd, yd)
    assert 0.5 < theirs < 0.99  # a case where the classifiers can differ
    assert ours == pytest.approx(theirs, abs=0.03)
    # a planted signal: dimension y is raised for tag y, the rest is noise
    f = g.normal(size=(1200, 8))
    f[np.arange(1200), y] += 4.0
    acc = probe_accuracy(torch.tensor(f[:900]), torch.tensor(y[:900]), torch.tensor(f[900:]),
                         torch.tensor(y[900:]), n_classes=5)["accuracy"]  # fmt: skip
    assert acc > 0.95


def test_mlm_by_tag_equals_a_direct_computation(embryo_run, toy_ud):
    cfg = run_config(embryo_run)
    tok = load_tokenizer(embryo_run / "tokenizer")
    model = build_objective(cfg.objective, cfg.model)
    model.load_state_dict(read_safetensors(embryo_run / "model.safetensors"))
    model.eval()
    sentences = read_conllu(toy_ud / "toy-ud-dev.conllu")
    data = encode_words(tok, sentences, 32)
    masked, chosen = mask_words(data, tok, 0.3, seed=0)
    got = mlm_by_tag(model, data, masked, chosen, batch_size=7)
    # directly: each sentence alone, its chosen words masked, every piece must be the argmax
    hits, counts = {}, {}
    for i, s in enumerate(sentences):
        enc = tok.tok.encode(s.words, is_pretokenized=True)
        ids = torch.tensor([enc.ids])
        words = [w for w in chosen if data.sentence[w] == i]
        for w in words:
            ids[0, data.positions[w]] = tok.mask_id
        if not words:
            continue
        with torch.no_grad():
            h = model.encoder(ids)["hidden"][0]
            logits = model.mlm_head(h, model.encoder.embed.tokens.weight)
        for w in words:
            word_index = enc.word_ids[data.positions[w][0]]
            tag = s.tags[word_index]
            pos = [t for t, x in enumerate(enc.word_ids) if x == word_index]
            ok = all(int(logits[t].argmax()) == enc.ids[t] for t in pos)
            hits[tag] = hits.get(tag, 0) + ok
            counts[tag] = counts.get(tag, 0) + 1
    assert sum(counts.values()) == len(chosen) > 60
    assert got["by_upos"] == pytest.approx({t: hits[t] / counts[t] for t in counts})
    assert got["word_accuracy"] == pytest.approx(sum(hits.values()) / len(chosen))
    # every sentence has a masked word; the same seed masks the same words
    assert {data.sentence[w] for w in chosen} == set(range(len(sentences)))
    assert mask_words(data, tok, 0.3, seed=0)[1] == chosen != mask_words(data, tok, 0.3, 1)[1]


def test_encode_words_first_pieces_and_cut(embryo_run):
    tok = load_tokenizer(embryo_run / "tokenizer")
    from selfsup.data.tasks import TaggedSentence

    s = TaggedSentence(["The", "runner", "jumped", "quickly", "over", "Paris", "."],
                       ["DET", "NOUN", "VERB", "ADV", "ADP", "PROPN", "PUNCT"])  # fmt: skip
    full = encode_words(tok, [s], 64)
    pieces = [tok.tok.encode(w, add_special_tokens=False).ids for w in s.words]
    starts = np.cumsum([1] + [len(p) for p in pieces])[:-1]
    assert [p[0] for p in full.positions] == starts.tolist()
    assert [UPOS[t] for t in full.tags] == s.tags
    cut = encode_words(tok, [s], 6)  # room for 4 pieces: the words wholly inside are kept
    kept = [k for k in range(len(s.words)) if starts[k] + len(pieces[k]) - 1 <= 4]
    assert [UPOS[t] for t in cut.tags] == [s.tags[k] for k in kept]


def test_real_ud_english(embryo_run, tmp_path, capsys):
    ud = shared("ud-english-ewt")
    report, _ = run_embryology(capsys, embryo_run, ud, tmp_path / "e", "--no-heldout")
    assert len(report["steps"]) == 8
    assert report["probe"]["train_words"] >= 600 and report["probe"]["dev_words"] >= 200
    assert report["baselines"]["majority_tag"] == "NOUN"


def test_bad_input_is_one_line(embryo_run, toy_ud, tmp_path, capsys):
    def fails(says, run, data=toy_ud, *extra):
        code, _, err = cli(capsys, "embryology", run, "--data", data, "--out",
                           tmp_path / "never", *extra)  # fmt: skip
        assert_clean_error(code, err, tmp_path / "never", says)

    fails("no such run folder", tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    fails("is not a selfsup run folder", tmp_path / "plain")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((embryo_run / "config.json").read_text())
    fails("has no saved weights", bare)
    fails("does not exist", embryo_run, tmp_path / "no-ud")
    only_train = tmp_path / "ud1"
    only_train.mkdir()
    (only_train / "toy-ud-train.conllu").write_text((toy_ud / "toy-ud-train.conllu").read_text())
    fails("no dev file", embryo_run, only_train)
    fails("--layer 9 is not a layer", embryo_run, toy_ud, "--layer", 9)
    fails("--mask-prob", embryo_run, toy_ud, "--mask-prob", 1.5)
    fails("invalid choice", embryo_run, toy_ud, "--probe", "ner")
