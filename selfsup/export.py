"""`selfsup export`: any model folder as a HuggingFace folder or an ONNX graph.

Text models export as BERT / BART folders (and their task models); a speech run whose encoder
is a Wav2Vec2Encoder (the wav2vec2 and hubert objectives) as a wav2vec 2.0 / HuBERT folder
(export_wave_run); a speech classifier fine-tuned on one as Wav2Vec2ForSequenceClassification /
HubertForSequenceClassification (selfsup.interop.hf_audio_classifier)."""

from __future__ import annotations

import os
from pathlib import Path

from selfsup.checkpoint import is_run
from selfsup.data.text import TextDataConfig
from selfsup.encoders.text import BertConfig
from selfsup.errors import ConfigError
from selfsup.interop.hf_bart import export_bart
from selfsup.interop.hf_bert import export_hf_task
from selfsup.models import (
    FINETUNE_FORMAT,
    export_hf_folder,
    folder_format,
    is_audio_classifier,
    load_finetuned,
    load_model,
    on_seq2seq,
    run_config,
    run_weights,
)
from selfsup.objectives import build_objective
from selfsup.objectives.seq2seq import Seq2SeqObjective
from selfsup.paths import check_out_folder

EXPORT_FORMATS = ("hf", "onnx")


def export_model(path: str | os.PathLike, out: str | os.PathLike, fmt: str = "hf") -> str:
    """Export any model folder as `fmt`: a fine-tuned folder with its task head
    (transformers' BertFor{SequenceClassification,TokenClassification,QuestionAnswering}, or an
    ONNX graph of its logits), a run or HF folder as BertForPreTraining / BertForMaskedLM /
    BertModel (hf) or its encoder's last hidden state (onnx). Returns what was written, in
    words."""
    from selfsup.interop.onnx import export_onnx  # needs onnx: imported when asked for

    if fmt not in EXPORT_FORMATS:
        raise ConfigError(
            f"unknown export format {fmt!r} (choose from {', '.join(EXPORT_FORMATS)})"
        )
    out = check_out_folder(out)
    p = Path(path)
    if p.is_dir() and is_run(p) and not isinstance(run_config(p).data, TextDataConfig):
        if fmt != "hf":
            raise ConfigError(f"{path} is a speech run: it exports to --format hf only")
        return export_wave_run(p, out)
    if is_audio_classifier(p):  # on a wav2vec 2.0 / HuBERT encoder: a transformers classifier
        from selfsup.interop.hf_audio_classifier import export_audio_classifier

        if fmt != "hf":
            raise ConfigError(f"{path} is a speech classifier: it exports to --format hf only")
        return export_audio_classifier(p, out)
    if p.is_dir() and not is_run(p) and folder_format(p) == FINETUNE_FORMAT:
        model, tok, config = load_finetuned(p)
        if on_seq2seq(config):
            raise ConfigError(
                f"{path} is fine-tuned on an encoder-decoder: its export is not supported yet "
                "(export the pretraining run with --format hf for a BART folder)"
            )
        mcfg, kind, labels = BertConfig(**config["model"]), config["kind"], config["labels"]
        max_len = config.get("max_len") if kind != "tag" else mcfg.max_len
        if fmt == "hf":
            name = export_hf_task(model, mcfg, kind, labels, tok, out, max_len)
            return f"{name} folder (loads with transformers.{name}.from_pretrained)"
        export_onnx(model, kind, mcfg, tok, out, labels, config.get("task"), max_len)
        return f"ONNX {kind} model (model.onnx, tokenizer, config.json)"
    loaded = load_model(p)
    if isinstance(loaded.model, Seq2SeqObjective):
        if fmt != "hf":
            raise ConfigError("an encoder-decoder exports to --format hf only (ONNX: not yet)")
        export_bart(loaded.model.model, loaded.config, loaded.tokenizer, out)
        return ("HuggingFace BART folder (loads with "
                "transformers.BartForConditionalGeneration.from_pretrained)")  # fmt: skip
    if fmt == "onnx":
        export_onnx(loaded.encoder, "encoder", loaded.config, loaded.tokenizer, out)
        return "ONNX encoder (model.onnx -> last_hidden_state, tokenizer, config.json)"
    export_hf_folder(loaded, out)
    return "HuggingFace BERT folder (loads with transformers.BertForPreTraining.from_pretrained)"


def export_wave_run(path: Path, out: Path) -> str:
    """A speech run whose encoder is a Wav2Vec2Encoder as a transformers folder: HubertModel
    for the hubert objective; Wav2Vec2ForPreTraining for an objective with wav2vec 2.0's heads
    (a GumbelQuantizer `quantizer` over the conv features and the context projection
    `project`: the wav2vec2 objective), whose Wav2Vec2Model AutoModel also loads; else
    Wav2Vec2Model. Every one has the run's hidden states (tested) and a preprocessor_config.json
    that normalises each waveform as the run's data did (features.cmvn "utterance":
    do_normalize) at its sample rate. Returns what was written."""
    from selfsup.encoders.wav2vec2 import Wav2Vec2Encoder
    from selfsup.interop.hf_wav2vec2 import PretrainingHeads, export_hf_wav2vec2
    from selfsup.layers.quantize import GumbelQuantizer

    cfg = run_config(path)
    features = cfg.data.features
    objective = build_objective(cfg.objective, cfg.model)
    encoder = getattr(objective, "encoder", None)
    if not isinstance(encoder, Wav2Vec2Encoder):
        raise ConfigError(f"{path} is a {cfg.objective.name} run: --format hf exports speech "
                          "runs with a wav2vec 2.0 / HuBERT encoder (objectives wav2vec2, "
                          "hubert)")  # fmt: skip
    if features.kind != "wave" or features.cmvn == "global":
        raise ConfigError(f"{path} reads {features.kind} features with {features.cmvn} CMVN: a "
                          "transformers feature extractor gives the waveform as it is or "
                          "normalised per utterance")  # fmt: skip
    objective.load_state_dict(run_weights(path))
    model_type = "hubert" if cfg.objective.name == "hubert" else "wav2vec2"
    heads = None
    quantizer, project = getattr(objective, "quantizer", None), getattr(objective, "project", None)
    if model_type == "wav2vec2" and isinstance(quantizer, GumbelQuantizer) and project is not None:
        task = {k: getattr(cfg.objective, k) for k in ("temperature", "mask_prob", "span",
                "min_spans", "diversity_weight") if hasattr(cfg.objective, k)}  # fmt: skip
        if hasattr(cfg.objective, "n_negatives"):
            task["n_negatives"] = cfg.objective.n_negatives
        heads = PretrainingHeads(quantizer, project, **task)
    name = export_hf_wav2vec2(encoder, cfg.model, out, model_type=model_type,
                              do_normalize=features.cmvn == "utterance",
                              sampling_rate=features.sample_rate, heads=heads)  # fmt: skip
    note = ("" if not features.trim_db else
            f"; the run trimmed silence below {features.trim_db:g} dB, which transformers' "
            "feature extractor does not")  # fmt: skip
    return f"HuggingFace {name} folder (loads with transformers.{name}.from_pretrained){note}"
