"""`selfsup contextual` (one word's vectors across sentences) and `selfsup embed --plot`: the
vectors equal the encoder's hidden states at the word's sub-tokens (and HF transformers' for a
HF folder), the similarity matrix equals sklearn's, the plots are real images, bad input is one
line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_run, synthetic_texts
from helpers import assert_clean_error, cli

from selfsup.data.tokenizer import train_tokenizer
from selfsup.models import load_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "contextual-sentences.tsv"


def example_rows() -> list[tuple[str, str]]:
    lines = EXAMPLES.read_text(encoding="utf-8").splitlines()[1:]  # a header first
    return [tuple(line.split("\t", 1)) for line in lines if line.strip()]


@pytest.fixture(scope="session")
def ctx_run(tmp_path_factory) -> Path:
    """A tiny random run whose tokenizer knows the example sentences' words and characters."""
    sentences = [s for _, s in example_rows()]
    tok = train_tokenizer(synthetic_texts() + sentences * 3, vocab_size=700)
    return make_run(tmp_path_factory.mktemp("ctx") / "run", tok)


def direct_vector(loaded, sentence: str, span: tuple[int, int], layer: int) -> np.ndarray:
    """The mean hidden state at `layer` of the sub-tokens covering characters span of the
    sentence, computed here from the tokenizer's offsets and one encoder forward."""
    enc = loaded.tokenizer.tok.encode(sentence)  # [CLS] ... [SEP], offsets into the sentence
    a, b = span
    positions = [i for i, (s, e) in enumerate(enc.offsets) if e > s and s >= a and e <= b]
    assert positions
    with torch.no_grad():
        states = loaded.encoder.eval()(torch.tensor([enc.ids]), return_all=True)["all_hidden"]
    return states[layer][0, positions].mean(0).numpy()


def run_contextual(capsys, model, word, inp, out, *extra) -> dict:
    code, stdout, err = cli(capsys, "contextual", model, "--word", word, "--input", inp,
                            "--out", out, *extra)  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "occurrences.json").read_text(encoding="utf-8"))
    report["stdout"] = stdout
    return report


@pytest.mark.parametrize("word, layer", [("bank", -1), ("bank", 1), ("苹果", -1), ("苹果", 0)])
def test_vectors_equal_the_encoders_states(ctx_run, tmp_path, capsys, word, layer):
    out = tmp_path / "out"
    report = run_contextual(capsys, ctx_run, word, EXAMPLES, out, "--layer", layer)
    vecs = np.load(out / "vectors.npy")
    rows = [(lab, s) for lab, s in example_rows() if word in s.lower()]
    assert len(report["rows"]) == len(rows) == len(vecs) > 0
    loaded = load_model(ctx_run)
    for r, vec in zip(report["rows"], vecs, strict=True):
        start = r["sentence"].lower().index(word)  # one occurrence per example sentence
        expected = direct_vector(loaded, r["sentence"], (start, start + len(word)), layer)
        np.testing.assert_allclose(vec, expected, rtol=1e-5, atol=1e-5)
    if word == "苹果":  # two CJK characters: two words, two pieces, their mean
        assert all(r["pieces"] == ["苹", "果"] for r in report["rows"])
    assert report["layer"] == layer % 3 and report["layers"] == 2


def test_a_word_of_several_pieces_is_their_mean(ctx_run, tmp_path, capsys):
    inp = tmp_path / "s.txt"
    inp.write_text("a lighthouse by the river.\nThe LIGHTHOUSE of the bank, lighthouses.\n")
    out = tmp_path / "out"
    report = run_contextual(capsys, ctx_run, "lighthouse", inp, out)
    assert len(report["rows"]) == 2  # not "lighthouses"
    loaded = load_model(ctx_run)
    for r, vec in zip(report["rows"], np.load(out / "vectors.npy"), strict=True):
        assert len(r["pieces"]) >= 3 and r["pieces"][1].startswith("##")
        m = re.search(r"\blighthouse\b", r["sentence"], re.I)
        expected = direct_vector(loaded, r["sentence"], m.span(), -1)
        np.testing.assert_allclose(vec, expected, rtol=1e-5, atol=1e-5)


def test_similarity_neighbours_and_label_summary(ctx_run, tmp_path, capsys):
    from sklearn.metrics.pairwise import cosine_similarity

    out = tmp_path / "out"
    report = run_contextual(capsys, ctx_run, "bank", EXAMPLES, out, "--top-k", 2)
    vecs, sim = np.load(out / "vectors.npy"), np.load(out / "similarity.npy")
    np.testing.assert_allclose(sim, cosine_similarity(vecs), atol=1e-5)
    for i, r in enumerate(report["rows"]):
        others = [j for j in np.argsort(-cosine_similarity(vecs)[i]) if j != i]
        assert [n["row"] for n in r["neighbours"]] == [int(j) for j in others[:2]]
    labels = np.array([r["label"] for r in report["rows"]])
    same, off = labels[:, None] == labels[None, :], ~np.eye(len(labels), dtype=bool)
    assert report["labels"]["within"] == pytest.approx(sim[same & off].mean(), abs=1e-4)
    assert report["labels"]["across"] == pytest.approx(sim[~same].mean(), abs=1e-4)
    assert set(report["labels"]["by_label"]) == {"river", "money"}
    assert "within-label mean similarity" in report["stdout"]


def test_heatmap_png_is_a_real_picture(ctx_run, tmp_path, capsys):
    from matplotlib.image import imread

    out = tmp_path / "out"
    run_contextual(capsys, ctx_run, "苹果", EXAMPLES, out)
    png = out / "similarity.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    pixels = imread(png)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50  # not constant


def test_whole_words_case_and_repeats(ctx_run, tmp_path, capsys):
    inp = tmp_path / "s.txt"
    inp.write_text("The Bank opened.\nbanks and embankments\n\nfrom bank to bank .\nno match\n")
    report = run_contextual(capsys, ctx_run, "bank", inp, tmp_path / "out")
    got = [(r["line"], r["occurrence"], r["chars"]) for r in report["rows"]]
    assert got == [(1, 1, [4, 8]), (4, 1, [5, 9]), (4, 2, [13, 17])]  # uncased: Bank matches
    assert "label" not in report["rows"][0] and "labels" not in report


def test_hf_folder_vectors_equal_transformers(minilm_dir, tmp_path, capsys):
    from transformers import AutoModel, AutoTokenizer

    out = tmp_path / "out"
    report = run_contextual(capsys, minilm_dir, "bank", EXAMPLES, out, "--layer", 3)
    vecs = np.load(out / "vectors.npy")
    tok, model = AutoTokenizer.from_pretrained(minilm_dir), AutoModel.from_pretrained(minilm_dir)
    for r, vec in zip(report["rows"], vecs, strict=True):
        enc = tok(r["sentence"], return_offsets_mapping=True, return_tensors="pt")
        a, b = r["chars"]
        spans = enc.pop("offset_mapping")[0].tolist()
        positions = [i for i, (s, e) in enumerate(spans) if e > s and s >= a and e <= b]
        with torch.no_grad():
            h = model(**enc, output_hidden_states=True).hidden_states[3][0, positions].mean(0)
        np.testing.assert_allclose(vec, h.numpy(), rtol=1e-4, atol=1e-4)


def test_bad_input_is_one_line(ctx_run, tmp_path, capsys):
    def fails(says, *argv, out=tmp_path / "never"):
        code, _, err = cli(capsys, "contextual", ctx_run, *argv, "--out", out)
        assert_clean_error(code, err, out if out.name == "never" else None, says)

    fails("occurs in none of the 22 sentences", "--word", "bankrupt", "--input", EXAMPLES)
    fails("no such input file", "--word", "bank", "--input", tmp_path / "missing.txt")
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("river\tthe bank\nthe other bank\n")
    fails("line 2", "--word", "bank", "--input", mixed)
    fails("--layer 5 is not a layer", "--word", "bank", "--input", EXAMPLES, "--layer", 5)
    fails("holds no word", "--word", " ", "--input", EXAMPLES)
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    fails("not empty", "--word", "bank", "--input", EXAMPLES, out=full)
    code, _, err = cli(capsys, "contextual", tmp_path / "nope", "--word", "bank", "--input",
                       EXAMPLES, "--out", tmp_path / "never")  # fmt: skip
    assert_clean_error(code, err, tmp_path / "never", "no such model folder")


# --------------------------------------------------------------------------------------------
# embed --plot


def test_embed_plot_tsne_by_label(ctx_run, tmp_path, capsys):
    from matplotlib.image import imread

    table = tmp_path / "s.csv"
    rows = example_rows()
    table.write_text("label,text\n" + "".join(f'{lab},"{s}"\n' for lab, s in rows),
                     encoding="utf-8")  # fmt: skip
    code, out, err = cli(capsys, "embed", ctx_run, "--input", table, "--out",
                         tmp_path / "v.npy", "--plot", tmp_path / "map.png", "--label-column",
                         "label")  # fmt: skip
    assert code == 0, err
    assert "t-SNE map" in out
    vecs = np.load(tmp_path / "v.npy")
    # the same vectors as embedding the sentences themselves
    from selfsup import load

    np.testing.assert_allclose(vecs, load(ctx_run).embed([s for _, s in rows]), atol=1e-5)
    png = tmp_path / "map.png"
    assert png.stat().st_size > 10_000
    pixels = imread(png)[..., :3].reshape(-1, 3)
    colours = {tuple(p) for p in np.round(pixels, 2) if p.max() - p.min() > 0.3}  # saturated
    assert len(colours) >= 4  # four labels, four colours (and their anti-aliasing)


def test_embed_plot_of_plain_lines_and_errors(ctx_run, tmp_path, capsys):
    lines = tmp_path / "s.txt"
    lines.write_text("".join(s + "\n" for _, s in example_rows()), encoding="utf-8")
    code, _, err = cli(capsys, "embed", ctx_run, "--input", lines, "--out", tmp_path / "v.npy",
                       "--plot", tmp_path / "map.png")  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "map.png").stat().st_size > 5_000
    few = tmp_path / "few.txt"
    few.write_text("one\ntwo\n")
    for argv, says in [
        (["--input", few, "--plot", tmp_path / "p.png"], "at least 5 sentences"),
        (["--input", lines, "--plot", tmp_path / "p.jpg"], ".png"),
        (["--input", lines, "--plot", tmp_path / "p.png", "--pooling", "tokens"], "tokens"),
        (["--input", tmp_path / "s.csv", "--label-column", "label"], "no such input file"),
    ]:
        code, _, err = cli(capsys, "embed", ctx_run, *argv, "--out", tmp_path / "w.npy")
        assert_clean_error(code, err, tmp_path / "w.npy", says)
    table = tmp_path / "t.csv"
    table.write_text("text,kind\na,b\n")
    code, _, err = cli(capsys, "embed", ctx_run, "--input", table, "--label-column", "label",
                       "--out", tmp_path / "w.npy")  # fmt: skip
    assert_clean_error(code, err, tmp_path / "w.npy", "no column 'label'")
