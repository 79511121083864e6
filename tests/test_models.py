"""Every command that takes a model folder: a foreign or incomplete config.json is a one-line
error naming what is wrong; a fine-tuned folder and a run written before the current config
layout still load."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import assert_clean_error, cli
from safetensors.torch import load_file
from test_config import OLD

from selfsup.checkpoint import MANIFEST
from selfsup.models import load_model


def commands(model, tmp_path):
    sentences = tmp_path / "s.txt"
    sentences.write_text("a river.\n")
    rows = tmp_path / "rows.csv"
    rows.write_text("text,label\n" + "".join(f"river {i},{i % 2}\n" for i in range(8)))
    return {
        "fill-mask": ["fill-mask", model, "the [MASK] ."],
        "export": ["export", model, "--out", tmp_path / "exported"],
        "embed": ["embed", model, "--input", sentences, "--out", tmp_path / "v.npy"],
        "finetune": [
            "finetune",
            "--task",
            "classify",
            "--data",
            rows,
            "--init",
            model,
            "--text-column",
            "text",
            "--label-column",
            "label",
            "--out",
            tmp_path / "ft",
        ],  # fmt: skip
    }


FOLDERS = {
    "empty config": ({}, "lacks vocab_size, hidden_size"),
    "partial BERT": (
        {"model_type": "bert", "vocab_size": 10, "hidden_size": 8},
        "lacks num_hidden_layers",
    ),  # fmt: skip
    "foreign model": ({"model_type": "gpt2", "n_embd": 8}, "model_type 'gpt2'"),
    "not an object": ([1, 2], "not a JSON object"),
}


@pytest.mark.parametrize("folder", sorted(FOLDERS))
@pytest.mark.parametrize("command", ["fill-mask", "export", "embed", "finetune"])
def test_foreign_or_incomplete_config_is_one_line(folder, command, tmp_path, capsys):
    config, says = FOLDERS[folder]
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(config))
    argv = commands(model, tmp_path)[command]
    code, _, err = cli(capsys, *argv)
    assert_clean_error(code, err, says=says)
    for out in ("exported", "v.npy", "ft"):
        assert not (tmp_path / out).exists()


def test_run_written_before_the_current_layout_loads(tiny_run, tmp_path):
    """Same weights and tokenizer; its config.json in the old layout (train.objective, mask)."""
    run = tmp_path / "old"
    shutil.copytree(tiny_run, run)
    old = {**OLD, "train": {**OLD["train"], "objective": "mlm+nsp"}}
    old["model"] = json.loads((tiny_run / "config.json").read_text())["model"]
    (run / "config.json").write_text(json.dumps(old))
    (run / MANIFEST).unlink(missing_ok=True)  # written before manifests too
    loaded = load_model(run)
    assert type(loaded.model).__name__ == "MLMWithNSP"
    assert loaded.model.cfg.whole_word and loaded.model.cfg.mask_prob == 0.2
    want = load_file(str(tiny_run / "model.safetensors"))
    got = loaded.model.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_fine_tuned_folder_gives_its_encoder(tiny_run, tmp_path, capsys):
    """A `selfsup finetune` output works where a model is expected (here: embed and export);
    fill-mask says it has no MLM head."""
    data = tmp_path / "rows.csv"
    data.write_text("text,label\n" + "".join(f"river {i} runs,{i % 2}\n" for i in range(40)))
    ft = tmp_path / "ft"
    code, _, err = cli(capsys, "finetune", "--task", "classify", "--data", data, "--init",
                       tiny_run, "--text-column", "text", "--label-column", "label",
                       "--epochs", "1", "--device", "cpu", "--out", ft)  # fmt: skip
    assert code == 0, err
    loaded = load_model(ft)
    assert loaded.source == "finetuned" and loaded.model is None
    weights = load_file(str(ft / "model.safetensors"))
    enc = loaded.encoder.state_dict()
    assert all(torch.equal(weights["encoder." + k], v) for k, v in enc.items())
    sentences = tmp_path / "s.txt"
    sentences.write_text("a river.\n")
    code, _, err = cli(capsys, "embed", ft, "--input", sentences, "--out", tmp_path / "v.npy")
    assert code == 0, err
    code, _, err = cli(capsys, "fill-mask", ft, "the [MASK] .")
    assert_clean_error(code, err, says="no MLM head")
