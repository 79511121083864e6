"""`selfsup export`: any model folder as a HuggingFace folder or an ONNX graph."""

from __future__ import annotations

import os
from pathlib import Path

from selfsup.checkpoint import is_run
from selfsup.encoders.text import BertConfig
from selfsup.errors import ConfigError
from selfsup.interop.hf_bart import export_bart
from selfsup.interop.hf_bert import export_hf_task
from selfsup.models import (
    FINETUNE_FORMAT,
    export_hf_folder,
    folder_format,
    load_finetuned,
    load_model,
    on_seq2seq,
)
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
