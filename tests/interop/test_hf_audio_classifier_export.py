"""`selfsup export FT_DIR --format hf` of a speech classifier fine-tuned on a wav2vec 2.0 /
HuBERT encoder: transformers loads it (Wav2Vec2ForSequenceClassification /
HubertForSequenceClassification, as the upstream was) without remote code, with our labels;
its logits on each file, read by its own feature extractor, equal `selfsup predict`'s to 1e-4,
and `pipeline("audio-classification")` gives the same top label. A classifier on a spectral
encoder (Mockingjay's fbank + Transformer) is a one-line error.

The upstreams are tiny random transformers models saved here (three conv layers of 32
channels, kernels 10, 3, 3, strides 5, 2, 2; width 32, 2 layers, 2 heads), fine-tuned for one
epoch on synthetic 16 kHz tones (three labels: the pitch), so clips are shorter than the 10 s
that selfsup reads of a clip.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import assert_clean_error, cli, mockingjay_run, perturb, write_speech

from selfsup.encoders.wav2vec2 import Wav2Vec2Config
from selfsup.interop.hf_audio_classifier import upstream_type

transformers = pytest.importorskip("transformers")

PATTERN = "{digit}_{label}_{index}"
TINY = dict(conv_dim=(32, 32, 32), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2),
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)  # fmt: skip
# name -> (transformers class, config class, config changes, do_normalize, exported class)
LAYOUTS = {
    "base": ("Wav2Vec2Model", "Wav2Vec2Config", {}, True,
             "Wav2Vec2ForSequenceClassification"),  # GroupNorm front end: one clip at a time
    "stable": ("Wav2Vec2Model", "Wav2Vec2Config",
               {"feat_extract_norm": "layer", "conv_bias": True, "do_stable_layer_norm": True},
               False, "Wav2Vec2ForSequenceClassification"),
    # with the feature LayerNorm, as Wav2Vec2: the init folder says HuBERT
    "hubert": ("HubertModel", "HubertConfig", {}, True, "HubertForSequenceClassification"),
}  # fmt: skip


def save_hf(folder, layout: str, seed: int = 0) -> None:
    model_cls, cfg_cls, changes, normalize, _ = LAYOUTS[layout]
    cfg = getattr(transformers, cfg_cls)(**{**TINY, **changes})
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(cfg)
    perturb(model, seed)
    model.save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(
        do_normalize=normalize, return_attention_mask=changes.get("feat_extract_norm") == "layer"
    ).save_pretrained(folder)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_speech(tmp_path_factory.mktemp("speech") / "clips", n=12, rates=(16000,))


@pytest.fixture(scope="module")
def finetuned(clips, tmp_path_factory):
    """{layout: fine-tuned folder}, one epoch from each tiny HF upstream (one thread)."""
    from selfsup.cli import main

    root = tmp_path_factory.mktemp("ft")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folders = {}
    try:
        for layout in LAYOUTS:
            save_hf(root / f"hf-{layout}", layout)
            folders[layout] = root / f"ft-{layout}"
            main(["finetune", "--task", "audio-classify", "--data", str(clips), "--init",
                  str(root / f"hf-{layout}"), "--out", str(folders[layout]), "--pattern",
                  PATTERN, "--epochs", "1", "--batch-size", "4", "--lr", "1e-2", "--cache-dir",
                  str(root / "cache")])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return folders


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_exported_classifier_equals_selfsup_predict(layout, finetuned, clips, tmp_path, capsys):
    ft, out = finetuned[layout], tmp_path / "hf"
    code, stdout, err = cli(capsys, "export", ft, "--format", "hf", "--out", out)
    assert code == 0, err
    name = LAYOUTS[layout][4]
    assert name in stdout and "reads the first 10 s" in stdout
    labels = json.loads((ft / "config.json").read_text())["labels"]
    assert labels == ["s0", "s1", "s2"]
    model = transformers.AutoModelForAudioClassification.from_pretrained(out).eval()
    assert type(model).__name__ == name and not model.config.use_weighted_layer_sum
    assert model.config.id2label == dict(enumerate(labels))
    assert model.config.label2id == {lab: i for i, lab in enumerate(labels)}
    fe = transformers.AutoFeatureExtractor.from_pretrained(out)
    assert fe.do_normalize is LAYOUTS[layout][3] and fe.sampling_rate == 16000

    code, _, err = cli(capsys, "predict", ft, "--input", clips, "--out", tmp_path / "p.jsonl",
                       "--cache-dir", tmp_path / "c")  # fmt: skip
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    classify = transformers.pipeline("audio-classification", model=str(out), device="cpu")
    spread = 0.0
    for row in rows:
        wave, rate = sf.read(row["path"], dtype="float32")
        x = fe(wave, sampling_rate=rate, return_tensors="pt")
        with torch.no_grad():
            logits = model(**x).logits[0].double()  # (C,)
        ours = {t["label"]: t["score"] for t in row["top"]}
        probs = np.array([ours[lab] for lab in labels])
        np.testing.assert_allclose(logits.softmax(-1).numpy(), probs, rtol=0, atol=1e-4)
        # logits up to the softmax's constant: log p - mean(log p) = z - mean(z)
        centred = np.log(probs) - np.log(probs).mean()
        np.testing.assert_allclose((logits - logits.mean()).numpy(), centred, rtol=0, atol=1e-4)
        spread = max(spread, float(logits.max() - logits.min()))
        top = classify({"raw": wave, "sampling_rate": rate})
        assert top[0]["label"] == row["label"]
        assert top[0]["score"] == pytest.approx(row["score"], abs=1e-4)
    assert spread > 0.05  # the logits differ between labels: the comparison has teeth


def test_a_spectral_classifier_is_refused(clips, tmp_path, capsys, one_thread):
    run = mockingjay_run(clips, tmp_path / "mj")
    ft = tmp_path / "ft"
    code, _, err = cli(capsys, "finetune", "--task", "audio-classify", "--data", clips,
                       "--init", run, "--out", ft, "--pattern", PATTERN, "--epochs", "1",
                       "--batch-size", "8", "--cache-dir", tmp_path / "c")  # fmt: skip
    assert code == 0, err
    code, _, err = cli(capsys, "export", ft, "--format", "hf", "--out", tmp_path / "hf")
    assert_clean_error(code, err, tmp_path / "hf",
                       "exports classifiers on a wav2vec 2.0 / HuBERT encoder")  # fmt: skip
    assert "spectral Transformer" in err


def test_onnx_is_refused_for_a_speech_classifier(finetuned, tmp_path, capsys):
    code, _, err = cli(capsys, "export", finetuned["base"], "--format", "onnx", "--out",
                       tmp_path / "o")  # fmt: skip
    assert_clean_error(code, err, tmp_path / "o", "--format hf only")


def test_upstream_type_without_the_init_folder(tmp_path):
    """The init folder moved away: HuBERT when the encoder lacks the feature LayerNorm (which
    Wav2Vec2Model always has), else Wav2Vec2 (the same computation)."""
    gone = str(tmp_path / "moved")
    assert upstream_type(gone, Wav2Vec2Config(feature_norm=False)) == "hubert"
    assert upstream_type(f"random:{gone}", Wav2Vec2Config()) == "wav2vec2"
