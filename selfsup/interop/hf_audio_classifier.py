"""A fine-tuned speech classifier (`selfsup finetune --task audio-classify`) on a wav2vec 2.0 /
HuBERT encoder as a transformers Wav2Vec2ForSequenceClassification or
HubertForSequenceClassification folder (`selfsup export FT_DIR --format hf`), which
`from_pretrained` and `pipeline("audio-classification", model=FOLDER)` load without remote code.

Why the two compute the same logits. Ours (objectives/supervised_audio.py AudioClassification):
the last layer's frames, their mean over the real frames, dropout (training only), a linear
layer. transformers': the last layer (its learned layer sum, use_weighted_layer_sum, is off
here), a linear `projector` (D -> classifier_proj_size) on every frame, the mean over the real
frames, a linear `classifier`. A mean commutes with a linear map, so an identity projector
(classifier_proj_size = D) and our linear layer as the classifier give our logits (tested
against `selfsup predict` to 1e-4).

Outside the network, and stated by the export: selfsup reads the first `max_frames` samples of a
clip (10 s by default), transformers all of it; a fine-tuning that trimmed silence (trim_db) did
so before the encoder, which transformers' feature extractor does not; per-utterance
normalisation divides by max(std, 1e-8) here and by sqrt(var + 1e-7) there (equal to rounding
on real audio). Other encoders (the fbank + Transformer of Mockingjay / TERA / APC, the conv
context of CPC / wav2vec) have no transformers class: a one-line error names what exports.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from selfsup.checkpoint import save_safetensors
from selfsup.data.features import FeatureConfig
from selfsup.encoders.wav2vec2 import Wav2Vec2Config
from selfsup.errors import ConfigError
from selfsup.interop.hf_bert import write_export
from selfsup.interop.hf_wav2vec2 import preprocessor_config, to_hf_state, wav2vec2_to_hf_config

CLASSES = {"wav2vec2": "Wav2Vec2ForSequenceClassification",
           "hubert": "HubertForSequenceClassification"}  # fmt: skip
ENCODER_WORDS = {"audio": "spectral Transformer (fbank / MFCC frames: Mockingjay, TERA, APC)",
                 "conv_context": "conv context (CPC, wav2vec, vq-wav2vec)"}  # fmt: skip


def upstream_type(init: str | None, cfg: Wav2Vec2Config) -> str:
    """The family ("hubert" or "wav2vec2") of the upstream a classifier was fine-tuned from
    (its --init: a hubert run or HF HuBERT folder, else wav2vec 2.0). Where that folder is no
    longer there, the architecture decides: without the feature projection's LayerNorm only
    HuBERT; with it the two classes compute the same, and Wav2Vec2 is written."""
    from selfsup.checkpoint import is_run
    from selfsup.models import hf_model_type, run_config

    path = Path(str(init or "").removeprefix("random:"))
    if path.is_dir() and is_run(path):
        return "hubert" if run_config(path).objective.name == "hubert" else "wav2vec2"
    if hf_model_type(path) in CLASSES:
        return hf_model_type(path)
    return "wav2vec2" if cfg.feature_norm else "hubert"


def export_audio_classifier(path: str | Path, out: str | Path) -> str:
    """Write the fine-tuned folder `path` as a transformers sequence classifier in `out`
    (atomic: complete or absent): config.json with id2label / label2id, model.safetensors,
    preprocessor_config.json (a Wav2Vec2FeatureExtractor at the fine-tuning's sample rate,
    normalising each clip as its features did) and our manifest. Returns what was written."""
    from selfsup.finetune_audio import load_audio_classifier
    from selfsup.models import read_finetuned_config

    p = Path(path)
    config = read_finetuned_config(p)
    kind = config.get("encoder", "audio")
    if kind != "wav2vec2":
        raise ConfigError(
            f"{p} fine-tunes a {ENCODER_WORDS.get(kind, kind)} encoder (init "
            f"{config.get('init')}), which has no transformers class: --format hf exports "
            "classifiers on a wav2vec 2.0 / HuBERT encoder (fine-tuned from a wav2vec2 or "
            "hubert run, or an HF wav2vec2 / hubert folder)"
        )
    try:
        features = FeatureConfig(**config["features"])
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{p / 'config.json'}: bad or missing features ({e})") from None
    if features.kind != "wave" or features.cmvn == "global":
        raise ConfigError(f"{p} reads {features.kind} features with {features.cmvn} CMVN: a "
                          "transformers feature extractor gives the waveform as it is or "
                          "normalised per utterance")  # fmt: skip
    model, config = load_audio_classifier(p)  # checks the weights against the manifest
    mcfg = Wav2Vec2Config(**{k: tuple(v) if isinstance(v, list) else v
                             for k, v in config["model"].items()})  # fmt: skip
    model_type = upstream_type(config.get("init"), mcfg)
    name = CLASSES[model_type]
    labels = list(config["labels"])
    dim = mcfg.dim
    hf_cfg = wav2vec2_to_hf_config(mcfg, model_type)
    hf_cfg.update(
        architectures=[name],
        id2label={str(i): label for i, label in enumerate(labels)},
        label2id={label: i for i, label in enumerate(labels)},
        classifier_proj_size=dim,
        use_weighted_layer_sum=False,
    )
    encoder = to_hf_state(model.encoder.state_dict(), mcfg, model_type)
    sd = {f"{model_type}.{k}": v for k, v in encoder.items()}
    head = model.head.proj
    sd.update({
        "projector.weight": torch.eye(dim), "projector.bias": torch.zeros(dim),
        "classifier.weight": head.weight.detach().contiguous(),
        "classifier.bias": head.bias.detach().contiguous(),
    })  # fmt: skip
    pre = preprocessor_config(mcfg, features.cmvn == "utterance", features.sample_rate)

    def fill(tmp: Path) -> None:
        save_safetensors(sd, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_cfg, indent=2))
        (tmp / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))

    write_export(Path(out), fill)
    seconds = config["max_frames"] / features.sample_rate
    notes = [f"selfsup predict reads the first {seconds:g} s of a clip (max_frames "
             f"{config['max_frames']}), transformers all of it"]  # fmt: skip
    if features.trim_db:
        notes.append(f"the fine-tuning trimmed silence below {features.trim_db:g} dB, which "
                     "transformers' feature extractor does not")  # fmt: skip
    return (f"HuggingFace {name} folder with {len(labels)} labels (loads with "
            f"transformers.{name}.from_pretrained and pipeline('audio-classification')); "
            + "; ".join(notes))  # fmt: skip
