"""`selfsup export` of an encoder-decoder run: a BART folder transformers loads with the same
logits, that imports back, and the formats it cannot take refused in one line."""

import json

import pytest
import torch
from helpers import assert_clean_error, cli

from selfsup.models import load_model

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from selfsup.cli import main

    folder = tmp_path_factory.mktemp("bart_export")
    docs = [f"The river {i} saw the stone. The cloud went north {i}." for i in range(60)]
    (folder / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    main(["pretrain", "--objective", "bart", "--data", str(folder / "docs.jsonl"), "--steps", "3",
          "--vocab-size", "200", "--max-len", "32", "--batch-size", "4", "--precision", "fp32",
          "--set", "model.dim=32", "--set", "model.n_heads=2", "--set", "model.ffn_dim=64",
          "--set", "model.max_len=64", "--no-progress", "--cache-dir", str(folder / "cache"),
          "--out", str(folder / "run")])  # fmt: skip
    return folder / "run"


def test_export_loads_in_transformers_with_the_same_logits_and_back(run, tmp_path, capsys):
    out = tmp_path / "hf"
    code, stdout, err = cli(capsys, "export", run, "--format", "hf", "--out", out)
    assert code == 0, err
    assert "BartForConditionalGeneration" in stdout
    assert json.loads((out / "config.json").read_text())["model_type"] == "bart"
    hf = transformers.BartForConditionalGeneration.from_pretrained(out).eval()
    ours = load_model(run)
    tok = ours.tokenizer
    batch = tok(["the river saw the [MASK] .", "north"])
    dec = torch.tensor([[tok.cls_id, 7, 9, 11], [tok.cls_id, 8, 8, 8]])
    with torch.no_grad():
        want = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  decoder_input_ids=dec).logits  # fmt: skip
        got = ours.model.model(batch["input_ids"], dec, batch["attention_mask"])
        back = load_model(out)  # a BART folder imports back
        again = back.model.model(batch["input_ids"], dec, batch["attention_mask"])
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(again, got, atol=0, rtol=0)
    assert back.source == "hf" and back.tokenizer.vocab_size == tok.vocab_size


def test_onnx_export_of_an_encoder_decoder_is_refused_in_one_line(run, tmp_path, capsys):
    out = tmp_path / "onnx"
    code, _, err = cli(capsys, "export", run, "--format", "onnx", "--out", out)
    assert_clean_error(code, err, out, says="--format hf only")
