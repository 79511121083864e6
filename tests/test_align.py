"""`selfsup align` (selfsup/align.py): the language means and their difference equal a direct
computation with the encoder, retrieval accuracy equals a plain cosine nearest-neighbour count,
the shift really enters the forward pass at the named layer, and bad input (a language not in
the data, a model without an MLM head) is one line, exit 2."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_run
from helpers import assert_clean_error, cli, shared
from safetensors.numpy import load_file

from selfsup.align import read_parallel, script_of, shifted
from selfsup.data.multilingual import train_multilingual_tokenizer
from selfsup.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

# A tiny dictionary: sentence i of each language uses the same concepts in the same order.
EN = "river city school water student teacher today food mountain rain book tree".split()
ZH = list("河城校水生师今食山雨书树")


def parallel(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    en, zh = [], []
    for _ in range(n):
        idx = [rng.randrange(len(EN)) for _ in range(rng.randint(3, 9))]
        en.append(" ".join(EN[i] for i in idx) + ".")
        zh.append("".join(ZH[i] for i in idx) + "。")
    return en, zh


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    en, zh = parallel(24)
    f = tmp_path_factory.mktemp("parallel") / "pairs.tsv"
    f.write_text("en\tzh\n" + "".join(f"{a}\t{b}\n" for a, b in zip(en, zh, strict=True)))
    return f


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    en, zh = parallel(200, seed=1)
    tok = train_multilingual_tokenizer({"en": en, "zh": zh}, vocab_size=120)
    return make_run(tmp_path_factory.mktemp("runs") / "multi", tok, objective="mlm", max_len=64)


def direct_vectors(encoder, tok, texts: list[str], layer: int):
    """Each text alone through the encoder: its token vectors at `layer` ([CLS]/[SEP] out)."""
    out = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([[tok.cls_id, *tok.encode_plain([text])[0], tok.sep_id]])
            states = encoder(ids, return_all=True)["all_hidden"][layer][0]  # (T, D)
            out.append(states[1:-1].double().numpy())
    return out


def nearest_accuracy(a: np.ndarray, b: np.ndarray) -> float:
    hits = 0
    for i, x in enumerate(a):
        cos = [float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))) for y in b]
        hits += int(np.argmax(cos) == i)
    return hits / len(a)


@pytest.mark.parametrize("layer", [1, -1])
def test_means_difference_and_retrieval_equal_a_direct_computation(
    tmp_path, capsys, run, data, layer
):
    out = tmp_path / "align"
    args = ["--langs", "en", "zh", "--layer", layer, "--out", out, "--json"]
    code, stdout, err = cli(capsys, "align", run, "--data", data, *args)
    assert code == 0, err
    report = json.loads(stdout)
    loaded = load_model(run)
    n_layers = len(loaded.encoder.transformer.blocks)
    at = layer % (n_layers + 1)
    assert report["layer"] == at
    texts = read_parallel([str(data)], ["en", "zh"])
    tokens = {
        lang: direct_vectors(loaded.encoder, loaded.tokenizer, t, at) for lang, t in texts.items()
    }
    # the language mean: the average of all its token vectors (arXiv:2010.10041)
    means = {lang: np.concatenate(v).mean(0) for lang, v in tokens.items()}
    saved = load_file(str(out / "means.safetensors"))
    for lang in ("en", "zh"):
        np.testing.assert_allclose(saved[f"mean.{lang}"][at], means[lang], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        saved["difference.en->zh"], means["zh"] - means["en"], rtol=1e-4, atol=1e-5
    )
    assert not np.allclose(means["en"], means["zh"])  # the test could fail
    # retrieval: each text's mean vector, cosine nearest neighbour among the translations
    vec = {lang: np.stack([t.mean(0) for t in v]) for lang, v in tokens.items()}
    got = report["retrieval"]["at_layer"]
    assert got["en->zh"]["raw"] == pytest.approx(nearest_accuracy(vec["en"], vec["zh"]))
    assert got["zh->en"]["raw"] == pytest.approx(nearest_accuracy(vec["zh"], vec["en"]))
    centered = nearest_accuracy(vec["en"] - means["en"], vec["zh"] - means["zh"])
    assert got["en->zh"]["centered"] == pytest.approx(centered)
    assert len(report["retrieval"]["by_layer"]) == n_layers + 1
    assert (out / "clusters.png").stat().st_size > 5000
    assert json.loads((out / "align.json").read_text())["layer"] == at
    fill = report["fill_mask"]["pairs"]
    assert [(f["source"], f["target"]) for f in fill] == [("en", "zh"), ("zh", "en")]
    assert report["scripts"] == {"en": "LATIN", "zh": "CJK"}
    for f in fill:
        for side in ("without_shift", "with_shift"):
            assert f[side]["masked"]["answers"] > 0
            assert 0 <= f[side]["masked"]["target_script"] <= 1
        assert f["examples"] and f["examples"][0]["masks"]
    moved = [f[side][part]["target_script"] for f in fill for part in ("masked", "unmasked")
             for side in ("without_shift", "with_shift")]  # fmt: skip
    assert moved[0::2] != moved[1::2]  # the shift changes some answers


def test_the_shift_enters_at_the_named_layer(run):
    """Adding v after block L changes nothing before it and equals running the later blocks
    on (state + v) by hand."""
    loaded = load_model(run)
    enc, tok = loaded.encoder, loaded.tokenizer
    ids = torch.tensor([[tok.cls_id, *tok.encode_plain(["river city 河城"])[0], tok.sep_id]])
    v = torch.randn(enc.dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = enc(ids, return_all=True)["all_hidden"]
        with shifted(enc, 1, v):
            moved = enc(ids, return_all=True)["all_hidden"]
        x = plain[1] + v
        for block in enc.transformer.blocks[1:]:
            x = block(x)
    torch.testing.assert_close(moved[0], plain[0])
    torch.testing.assert_close(moved[1], plain[1] + v)
    torch.testing.assert_close(moved[-1], x)
    with torch.no_grad():  # the hook is gone afterwards
        torch.testing.assert_close(enc(ids)["hidden"], plain[-1])


def test_script_of():
    assert script_of("##river") == "LATIN"
    assert script_of("河") == "CJK"
    assert script_of("ที") == "THAI"
    assert script_of("12,") is None
    assert script_of("a河") == "MIXED"


def test_a_language_not_in_the_data_is_one_line(tmp_path, capsys, run, data):
    out = tmp_path / "align"
    code, _, err = cli(capsys, "align", run, "--data", data, "--langs", "en", "fr", "--out", out)
    assert_clean_error(code, err, out, "language fr is not in the data (it has: en, zh)")


def test_a_model_without_an_mlm_head_is_one_line(tmp_path, capsys, run, data):
    """An encoder alone (exported as a HF BertModel): fill-mask refuses, retrieval runs."""
    from selfsup.models import export_hf_folder

    loaded = load_model(run)
    loaded.model = None  # export the encoder alone: a folder with no MLM head
    enc_only = tmp_path / "encoder"
    export_hf_folder(loaded, enc_only)
    assert load_model(enc_only).model is None
    out = tmp_path / "align"
    code, _, err = cli(
        capsys, "align", enc_only, "--data", data, "--langs", "en", "zh", "--out", out
    )
    assert_clean_error(code, err, out, "has no MLM head")
    code, stdout, err = cli(
        capsys, "align", enc_only, "--data", data, "--langs", "en", "zh", "--measure", "retrieval"
    )
    assert code == 0, err
    assert "retrieval accuracy" in stdout


def test_other_bad_input_is_one_line(tmp_path, capsys, run, data):
    bad = tmp_path / "bad.tsv"
    bad.write_text("en\tzh\nonly one column\n")
    for argv, says in [
        ([run, "--data", bad, "--langs", "en", "zh"], "has not one text per language"),
        ([run, "--data", data, "--langs", "en", "en"], "two or more different languages"),
        ([run, "--data", data, "--langs", "en", "zh", "--layer", "9"], "--layer 9 is not"),
        ([run, "--data", data, "--langs", "en", "zh", "--measure", "qa"], "needs --qa"),
        ([run, "--data", tmp_path / "nope", "--langs", "en", "zh"], "no such file"),
    ]:
        code, _, err = cli(capsys, "align", *argv)
        assert_clean_error(code, err, None, says)


@pytest.mark.data
def test_xquad_paragraphs_are_parallel():
    root = shared("xquad")
    texts = read_parallel([str(root)], ["en", "zh", "th"])
    assert {len(t) for t in texts.values()} == {240}
    assert "Panthers" in texts["en"][0] and "黑豹" in texts["zh"][0]


def test_the_qa_shift_is_measured_below_the_last_block(run):
    """After the last block a shift moves every position's start (and end) logit by the same
    amount, so no answer can change; one block lower it does change the logits' order."""
    from selfsup.align import qa_shift_layer
    from selfsup.heads.span import SpanHead

    loaded = load_model(run)
    enc, tok = loaded.encoder, loaded.tokenizer
    n = len(enc.transformer.blocks)
    assert qa_shift_layer(n, n) == n - 1 and qa_shift_layer(1, n) == 1
    torch.manual_seed(0)
    head = SpanHead(enc.dim)
    ids = torch.tensor([[tok.cls_id, *tok.encode_plain(["the river city was old 河城"])[0]]])
    v = 3 * torch.randn(enc.dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = head(enc(ids)["hidden"])
        outs = {}
        for layer in (n, n - 1):
            with shifted(enc, layer, v):
                outs[layer] = head(enc(ids)["hidden"])
    for p, s in zip(plain, outs[n], strict=True):  # start, end: one constant at every position
        d = s - p
        torch.testing.assert_close(d, d[:, :1].expand_as(d))
    assert any(
        not torch.allclose(s - p, (s - p)[:, :1].expand_as(p))
        for p, s in zip(plain, outs[n - 1], strict=True)
    )


def test_cluster_colours_are_distinct_for_every_xquad_language():
    from selfsup.align import language_colours

    for n in (2, 10, 12, 25):
        colours = language_colours(n)
        assert len(colours) == n and len(set(colours)) == n, n
