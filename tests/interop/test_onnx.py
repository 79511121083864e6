"""ONNX export: a pretrained encoder and every fine-tuned head run under onnxruntime with the
outputs selfsup computes (1e-4), at two batch sizes and two lengths from one graph (one of
them longer than attention's CPU matmul limit, so both attention paths are compared), and the
folder carries the tokenizer and the label names."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import assert_clean_error, cli, pair_batch
from test_hf_heads import LABELS_OF, make_finetuned

from selfsup.data.tokenizer import load_tokenizer
from selfsup.export import export_model
from selfsup.finetuning import load_finetuned
from selfsup.interop.onnx import INPUTS, OUTPUTS
from selfsup.layers.attention import CPU_MATH_MAX_LEN
from selfsup.models import load_model

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

ATOL = 1e-4
SHAPES = [(3, 11), (2, CPU_MATH_MAX_LEN + 12)]  # (B, T): two batch sizes, two lengths


def batch_of(B: int, T: int, vocab_size: int, seed: int, pad: bool) -> dict[str, torch.Tensor]:
    """[CLS] A [SEP] B [SEP] rows; with `pad` the rows after the first are shorter."""
    g = torch.Generator().manual_seed(seed)
    lengths = [T] + [max(4, T - 3 * (i + 1)) if pad else T for i in range(B - 1)]
    return pair_batch(lengths, vocab_size, g)


def session(folder):
    return ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])


def run(sess, batch) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    out = sess.run(None, {k: batch[k].numpy() for k in INPUTS})
    return dict(zip(names, out, strict=True))


def close(a: np.ndarray, b: torch.Tensor, what: str) -> None:
    b = b.detach().numpy()
    assert a.shape == b.shape, (what, a.shape, b.shape)
    err = float(np.abs(a - b).max())
    assert err <= ATOL, f"{what}: max abs difference {err:.3g} > {ATOL}"


def assert_dynamic(folder, kind: str) -> None:
    """Inputs and outputs have symbolic batch and sequence axes, not numbers ((B, C) logits of
    sequence classification have no sequence axis)."""
    graph = onnx.load(str(folder / "model.onnx")).graph
    assert [i.name for i in graph.input] == list(INPUTS)
    assert [o.name for o in graph.output] == list(OUTPUTS[kind])
    for v in [*graph.input, *graph.output]:
        dims = v.type.tensor_type.shape.dim
        with_seq = v.name in INPUTS or kind in ("encoder", "tag", "qa")
        for d in dims[: 2 if with_seq else 1]:
            assert d.dim_param and not d.dim_value, (v.name, dims)


def test_encoder_onnx_matches_selfsup(run_factory, tmp_path, one_thread):
    run_dir = run_factory("mlm", max_len=CPU_MATH_MAX_LEN + 32)
    export_model(run_dir, tmp_path / "onnx", "onnx")
    loaded = load_model(run_dir)
    assert_dynamic(tmp_path / "onnx", "encoder")
    sess = session(tmp_path / "onnx")
    for (B, T), pad in zip(SHAPES, (True, False), strict=True):
        batch = batch_of(B, T, loaded.config.vocab_size, seed=B, pad=pad)
        with torch.no_grad():
            ref = loaded.encoder(**batch)["hidden"]
        got = run(sess, batch)
        assert list(got) == ["last_hidden_state"]
        close(got["last_hidden_state"], ref, f"hidden {B}x{T}")
    cfg = json.loads((tmp_path / "onnx" / "config.json").read_text())
    assert cfg["selfsup"]["kind"] == "encoder"
    assert cfg["selfsup"]["outputs"] == ["last_hidden_state"]
    # The tokenizer travels with the graph and encodes as the run's does.
    tok, ours = load_tokenizer(tmp_path / "onnx"), loaded.tokenizer
    text = "the river runs quickly over a stone"
    assert tok.tok.encode(text).ids == ours.tok.encode(text).ids


@pytest.mark.parametrize("kind", list(LABELS_OF))
def test_head_onnx_matches_selfsup(kind, tmp_path, tiny_tokenizer, perturb, one_thread):
    ft = make_finetuned(tmp_path / "ft", tiny_tokenizer, kind, perturb)
    export_model(ft, tmp_path / "onnx", "onnx")
    model, tok, config = load_finetuned(ft)
    folder = tmp_path / "onnx"
    assert_dynamic(folder, kind)
    sess = session(folder)
    for (B, T), pad in zip(SHAPES, (True, False), strict=True):
        batch = batch_of(B, T, tok.vocab_size, seed=B, pad=pad)
        with torch.no_grad():
            ref = model.predict(batch)
        got = run(sess, batch)
        assert list(got) == list(OUTPUTS[kind])
        for name in got:
            close(got[name], ref[name], f"{kind} {name} {B}x{T}")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["selfsup"]["kind"] == kind and cfg["selfsup"]["labels"] == LABELS_OF[kind]
    if LABELS_OF[kind]:
        assert [cfg["id2label"][str(i)] for i in range(len(LABELS_OF[kind]))] == LABELS_OF[kind]
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "manifest.json"):
        assert (folder / name).is_file(), name


def test_cli_export_onnx_and_its_errors(tiny_tokenizer, perturb, tmp_path, capsys):
    ft = make_finetuned(tmp_path / "ft", tiny_tokenizer, "classify", perturb)
    code, out, err = cli(capsys, "export", ft, "--format", "onnx", "--out", tmp_path / "o")
    assert code == 0, err
    assert "ONNX" in out and (tmp_path / "o" / "model.onnx").is_file()
    code, _, err = cli(capsys, "export", ft, "--format", "onnx", "--out", tmp_path / "o")
    assert_clean_error(code, err, says="not empty")
    code, _, err = cli(capsys, "export", tmp_path / "nope", "--format", "onnx", "--out",
                       tmp_path / "p")  # fmt: skip
    assert_clean_error(code, err, tmp_path / "p", says="no such model folder")
