"""`selfsup finetune --task audio-classify`: a speech run's encoder fine-tuned end to end on
labelled clips, then `evaluate` and `predict` with its folder; one-line errors for bad input.

The clips of helpers.write_speech are named {i % 4}_s{i % 3}_{i}.wav and their pitch is set by
i % 3, so the middle field is the learnable label (the first one is noise)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import assert_clean_error, cli, mockingjay_run, write_speech

from selfsup.checkpoint import read_safetensors

PATTERN = "{digit}_{label}_{index}"  # the label: s0 s1 s2, one pitch each


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return write_speech(tmp_path_factory.mktemp("speech") / "clips", n=40)


@pytest.fixture(scope="module")
def run(speech):
    """A 2-step Mockingjay run over the clips: a speech encoder with its features and stats."""
    return mockingjay_run(speech, speech.parent / "run")


def finetune(capsys, speech, init, out, *extra):
    return cli(capsys, "finetune", "--task", "audio-classify", "--data", speech, "--init", init,
               "--out", out, "--pattern", PATTERN, "--epochs", "6", "--batch-size", "8",
               "--lr", "1e-3", "--cache-dir", speech.parent / "cache", *extra)  # fmt: skip


def test_finetune_evaluate_predict(run, speech, tmp_path, capsys, one_thread):
    ft = tmp_path / "ft"
    code, out, err = finetune(capsys, speech, run, ft)
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["dev"]["clips"] == res["test"]["clips"] == 4  # 80/10/10 of 40, by file
    assert res["test"]["accuracy"] > 1 / 3  # better than chance over 3 pitches

    assert {"config.json", "model.safetensors", "manifest.json", "results.json",
            "metrics.jsonl"} <= {p.name for p in ft.iterdir()}  # fmt: skip
    assert not (ft / "checkpoints").exists()
    config = json.loads((ft / "config.json").read_text())
    assert config["format"] == "selfsup-finetuned" and config["kind"] == "audio-classify"
    assert config["labels"] == ["s0", "s1", "s2"] and config["split"] == "file"
    assert config["model"]["dim"] == 128 and config["features"]["cmvn"] == "global"
    stats = json.loads((run / "feature_stats.json").read_text())
    np.testing.assert_allclose(config["feature_stats"]["mean"], stats["mean"], rtol=1e-6)
    results = json.loads((ft / "results.json").read_text())
    assert results["test"] == res["test"] and results["dev"]["step"] == results["kept_step"]
    assert max(h["accuracy"] for h in results["history"]) == results["dev"]["accuracy"]

    # end to end: the encoder moved away from the run's weights; the head is new
    before, after = read_safetensors(run / "model.safetensors"), read_safetensors(
        ft / "model.safetensors")  # fmt: skip
    enc = [k for k in after if k.startswith("encoder.")]
    assert enc and set(enc) <= set(before)
    assert any(not torch.equal(before[k], after[k]) for k in enc)
    assert "head.proj.weight" in after

    # evaluate re-cuts the same test files and scores them with the kept weights
    code, out, err = cli(capsys, "evaluate", ft, "--task", "audio-classify", "--data", speech,
                         "--split", "test", "--cache-dir", speech.parent / "cache")  # fmt: skip
    assert code == 0, err
    ev = json.loads(out.strip().splitlines()[-1])
    assert ev["accuracy"] == pytest.approx(res["test"]["accuracy"]) and ev["clips"] == 4
    scored = [json.loads(r) for r in (ft / "predictions-audio-classify-test.jsonl").open()]

    code, out, err = cli(capsys, "predict", ft, "--input", speech, "--out", tmp_path / "p.jsonl",
                         "--cache-dir", speech.parent / "cache")  # fmt: skip
    assert code == 0, err
    rows = [json.loads(r) for r in (tmp_path / "p.jsonl").open()]
    assert len(rows) == 40 and all(r["label"] in config["labels"] for r in rows)
    assert all(abs(sum(t["score"] for t in r["top"]) - 1) < 1e-5 for r in rows)
    by_path = {r["path"]: r["label"] for r in rows}
    assert all(by_path[s["path"]] == s["prediction"] for s in scored)

    # a spectral (Mockingjay-style) encoder has no transformers class; wav2vec2/HuBERT ones export
    code, _, err = cli(capsys, "export", ft, "--out", tmp_path / "hf")
    assert_clean_error(code, err, tmp_path / "hf", "no transformers class")


def test_scratch_with_a_dev_folder(speech, tmp_path, capsys, one_thread):
    dev = write_speech(tmp_path / "dev", n=6, seed=1)
    ft = tmp_path / "ft"
    code, out, err = finetune(capsys, speech, "scratch", ft, "--preset", "tiny", "--dev", dev,
                              "--epochs", "1", "--keep", "last")  # fmt: skip
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["dev"]["clips"] == 6 and res["test"]["clips"] == 4
    config = json.loads((ft / "config.json").read_text())
    assert len(config["feature_stats"]["std"]) == 80 and min(config["feature_stats"]["std"]) > 0
    assert json.loads((ft / "results.json").read_text())["n_train"] == 36  # train + cut's dev


def test_padding_changes_no_clip(one_thread):
    from selfsup.data.audio import collate_frames
    from selfsup.encoders.audio import AudioConfig, build_audio_encoder
    from selfsup.objectives.supervised_audio import AudioClassification

    torch.manual_seed(0)
    cfg = AudioConfig(feature_dim=8, dim=16, n_layers=1, n_heads=2, ffn_dim=32)
    model = AudioClassification(build_audio_encoder(cfg), 3).eval()
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal((n, 8)).astype(np.float32) for n in (7, 20)]
    together = model.predict(collate_frames(clips))["logits"]
    alone = model.predict(collate_frames(clips[:1]))["logits"]
    torch.testing.assert_close(together[:1], alone, atol=1e-5, rtol=1e-5)


def _manifest(tmp_path, speech, label):
    m = tmp_path / "one.csv"
    m.write_text("path,label\n" + "".join(f"{p},{label}\n" for p in sorted(speech.glob("*.wav"))))
    return m


@pytest.mark.parametrize(
    "case, says",
    [
        ("no labels", "no 'label' label"),
        ("one class", "at least 2 labels"),
        ("empty folder", "no audio files"),
        ("not audio", "cannot read audio file"),
    ],
)
def test_bad_input_is_a_one_line_error(case, says, run, speech, tmp_path, capsys, one_thread):
    argv = ["--pattern", PATTERN]
    data = speech
    if case == "no labels":
        argv = []
    elif case == "one class":
        data, argv = _manifest(tmp_path, speech, "same"), []
    elif case == "empty folder":
        (data := tmp_path / "empty").mkdir()
    elif case == "not audio":
        (data := tmp_path / "bad").mkdir()
        for i in range(10):
            (data / f"a_s{i % 2}_{i}.wav").write_text("not a wave file")
    out = tmp_path / "ft"
    code, _, err = cli(capsys, "finetune", "--task", "audio-classify", "--data", data, "--init",
                       run, "--out", out, "--cache-dir", tmp_path / "cache", *argv)  # fmt: skip
    assert_clean_error(code, err, out, says)
