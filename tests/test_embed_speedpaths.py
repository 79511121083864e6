"""The fast embedding path (length-grouped, unpadded batches) against independent references:
sentence-transformers' `encode`, and plain transformers with padded batches and masked mean
pooling. Speed itself is measured in benchmarks/inference.py, never here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfsup.cli import main
from selfsup.embed import (
    embed_sentences,
    hidden_fn,
    length_batches,
    sentence_transformers_settings,
    tokenize,
)
from selfsup.models import load_model
from selfsup.predict import batch_workers

# Several sentences share a token length, so groups are split by batch_size; the order mixes
# lengths, so the output has to be put back in input order.
SENTENCES = [
    "a dark and stormy night .",
    "why ?",
    "Paris is lovely in the spring, or so they say; the rain disagrees.",
    "why ?",
    "the cat sat on the mat",
    "one two three four",
    "hello world",
    "Straße 北京 naïve café résumé",
    "the dog sat on the rug",
    "it 's a charming and often affecting journey .",
]


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return load_model(minilm_dir)


@pytest.mark.parametrize("batch_size,workers", [(1, 1), (2, 1), (64, 1), (1, 3), (2, 2)])
def test_equals_sentence_transformers(minilm_dir, minilm, batch_size, workers):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers not installed")
    ref = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(SENTENCES, batch_size=3)
    ours = embed_sentences(
        minilm.encoder, minilm.tokenizer, SENTENCES, batch_size=batch_size, normalize=True,
        workers=workers,
    )  # fmt: skip
    assert ours.shape == ref.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


def test_equals_transformers_masked_mean(minilm_dir, minilm):
    """Unnormalised mean pooling == transformers' BertModel on padded batches in the given order,
    averaged over the attention mask."""
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    model = transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
    ref = []
    with torch.no_grad():
        for s in range(0, len(SENTENCES), 4):
            batch = tok(SENTENCES[s : s + 4], padding=True, return_tensors="pt")
            h = model(**batch).last_hidden_state  # (B, T, D)
            m = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
            ref.append((h * m).sum(1) / m.sum(1))
    ref = torch.cat(ref).numpy()
    ours = embed_sentences(minilm.encoder, minilm.tokenizer, SENTENCES, batch_size=2)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
    assert not np.allclose(np.linalg.norm(ours, axis=1), 1.0)  # not normalised unless asked


def test_cls_and_tokens_match_the_padded_encoder(tiny_run):
    """cls and tokens pooling, in input order, equal the encoder's own padded forward pass."""
    loaded = load_model(tiny_run)
    tok, enc = loaded.tokenizer, loaded.encoder.eval()
    batch = tok(SENTENCES)
    with torch.no_grad():
        h = enc(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])["hidden"]
    lengths = batch["attention_mask"].sum(1).tolist()
    tokens = embed_sentences(enc, tok, SENTENCES, pooling="tokens", batch_size=2, workers=2)
    cls = embed_sentences(enc, tok, SENTENCES, pooling="cls", batch_size=2, workers=3)
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(tokens[i], h[i, :n].numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(cls, h[:, 0].numpy(), atol=1e-5, rtol=0)


def test_compiled_equals_eager(tiny_run):
    loaded = load_model(tiny_run)
    args = (loaded.encoder, loaded.tokenizer, SENTENCES[:4])
    eager = embed_sentences(*args, batch_size=2)
    compiled = embed_sentences(*args, batch_size=2, hidden=hidden_fn(loaded.encoder, True))
    np.testing.assert_allclose(compiled, eager, atol=1e-5, rtol=0)
    hidden = hidden_fn(loaded.encoder, True)  # one compiled function shared by two workers
    shared = embed_sentences(*args, batch_size=1, hidden=hidden, workers=2)
    np.testing.assert_allclose(shared, eager, atol=1e-5, rtol=0)


def test_workers_run_one_intra_op_thread_each_and_restore_the_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with batch_workers(2) as run:
            seen = list(run(lambda i: (i, torch.get_num_threads()), range(6)))
        assert seen == [(i, 1) for i in range(6)]  # in order, one thread each
        assert torch.get_num_threads() == 2
        with batch_workers(1) as run:
            assert list(run(lambda i: torch.get_num_threads(), range(2))) == [2, 2]
    finally:
        torch.set_num_threads(before)


def test_length_batches_are_unpadded_and_cover_every_index_once():
    lengths = np.random.default_rng(0).integers(3, 12, size=200)
    batches = length_batches(lengths, batch_size=7)
    assert sorted(np.concatenate(batches).tolist()) == list(range(200))
    assert all(1 <= len(b) <= 7 and len(set(lengths[b])) == 1 for b in batches)
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)  # longest first
    assert length_batches(np.zeros(0, dtype=np.int64), 4) == []


def test_truncation_equals_transformers(minilm_dir, minilm):
    transformers = pytest.importorskip("transformers")
    ref = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    for max_len in (2, 3, 8, 512):
        want = ref(SENTENCES, truncation=True, max_length=max_len)["input_ids"]
        assert tokenize(minilm.tokenizer, SENTENCES, max_len) == want


def test_empty_input(minilm):
    out = embed_sentences(minilm.encoder, minilm.tokenizer, [])
    assert out.shape == (0, 384)


def test_settings_come_from_the_folder(minilm_dir, tiny_run):
    assert sentence_transformers_settings(minilm_dir) == {
        "normalize": True,
        "pooling": "mean",
        "max_len": 256,
    }
    assert sentence_transformers_settings(tiny_run) == {}


def test_embed_command_follows_the_folder(minilm_dir, tmp_path, capsys):
    src = tmp_path / "s.txt"
    src.write_text("\n".join(SENTENCES) + "\n")
    norms = {}
    for name, flags in {"on": ["--normalize"], "off": ["--no-normalize"], "default": []}.items():
        out = tmp_path / f"{name}.npy"
        main(["embed", str(minilm_dir), "--input", str(src), "--out", str(out), *flags])
        assert f"embedded {len(SENTENCES)} sentences" in capsys.readouterr().out
        norms[name] = np.linalg.norm(np.load(out), axis=1)
    np.testing.assert_allclose(norms["on"], 1.0, rtol=1e-5)
    np.testing.assert_allclose(norms["default"], 1.0, rtol=1e-5)  # modules.json has Normalize
    assert not np.allclose(norms["off"], 1.0)


def test_embed_file_keeps_a_row_per_line(tiny_run, tmp_path, capsys):
    """Blank lines are rows (the embedding of the empty sentence), so row i is line i + 1."""
    lines = ["the cat sat", "", "hello world", "   ", "why ?"]
    src = tmp_path / "s.txt"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "v.npy"
    main(["embed", str(tiny_run), "--input", str(src), "--out", str(out), "--batch-size", "2"])
    assert "embedded 5 sentences" in capsys.readouterr().out
    x = np.load(out, allow_pickle=False)
    loaded = load_model(tiny_run)
    ref = embed_sentences(loaded.encoder, loaded.tokenizer, [ln.strip() for ln in lines])
    empty = embed_sentences(loaded.encoder, loaded.tokenizer, [""])[0]
    assert x.shape == (5, loaded.encoder.dim)
    np.testing.assert_allclose(x, ref, atol=1e-6, rtol=0)
    np.testing.assert_allclose(x[1], empty, atol=1e-6, rtol=0)
    np.testing.assert_allclose(x[3], empty, atol=1e-6, rtol=0)
    assert not np.allclose(x[0], empty)


def test_token_vectors_are_an_npz_of_plain_arrays(tiny_run, tmp_path, capsys):
    from selfsup.embed import read_token_vectors

    src = tmp_path / "s.txt"
    src.write_text("\n".join(SENTENCES[:4]) + "\n\n")  # a trailing blank line is a row too
    out = tmp_path / "t.npz"
    main(["embed", str(tiny_run), "--input", str(src), "--out", str(out), "--pooling", "tokens"])
    capsys.readouterr()
    with np.load(out, allow_pickle=False) as z:  # would raise on an object array
        assert sorted(z.files) == ["offsets", "vectors"]
        vectors, offsets = z["vectors"], z["offsets"]
    loaded = load_model(tiny_run)
    ref = embed_sentences(loaded.encoder, loaded.tokenizer, [*SENTENCES[:4], ""], "tokens")
    assert vectors.dtype == np.float32 and offsets.dtype == np.int64
    assert offsets.tolist() == np.cumsum([0] + [len(r) for r in ref]).tolist()
    got = read_token_vectors(out)
    assert len(got) == 5 and got[4].shape == (2, loaded.encoder.dim)  # [CLS] [SEP]
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "content,out,says",
    [("a\n", "t.npy", "name --out t.npz"), ("\n  \n", "v.npy", "has no sentences")],
)
def test_embed_file_refusals(tiny_run, tmp_path, capsys, content, out, says):
    from helpers import assert_clean_error, cli

    src = tmp_path / "s.txt"
    src.write_text(content)
    pooling = ["--pooling", "tokens"] if out.endswith("t.npy") else []
    code, _, err = cli(capsys, "embed", tiny_run, "--input", src, "--out", tmp_path / out, *pooling)
    assert_clean_error(code, err, tmp_path / out, says)


def test_nothing_unpickles_numpy_files():
    """No numpy load in the package, its tests or benchmarks allows pickles (a pickled .npy can
    run code when loaded)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    needle = "allow_pickle=" + "True"  # split so this file does not match itself
    hits = [
        str(f.relative_to(root))
        for folder in ("selfsup", "tests", "benchmarks", "experiments")
        for f in (root / folder).rglob("*.py")
        if needle in f.read_text(encoding="utf-8")
    ]
    assert hits == []
