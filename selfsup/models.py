"""Loading any model folder: a selfsup run, a `selfsup finetune` output, or a HuggingFace BERT
folder. Every command that takes a model goes through `load_model`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from selfsup.checkpoint import (
    RUN_FORMAT,
    is_run,
    latest_checkpoint,
    load_weights,
    read_run_config,
    read_safetensors,
)
from selfsup.config import RunConfig
from selfsup.data.text import TextDataConfig
from selfsup.data.tokenizer import Tokenizer, load_tokenizer
from selfsup.encoders.seq2seq import (
    Seq2SeqConfig,
    Seq2SeqEncoder,
    Seq2SeqModel,
    build_seq2seq_encoder,
)
from selfsup.encoders.text import BertConfig, BertEncoder, build_encoder
from selfsup.errors import ConfigError
from selfsup.interop.hf_bart import load_bart
from selfsup.interop.hf_bert import export_hf, load_hf
from selfsup.objectives import build_objective
from selfsup.objectives.bart import BART, BartObjectiveConfig
from selfsup.objectives.supervised import build_task_model

FINETUNE_FORMAT = "selfsup-finetuned"
# The layout of a fine-tuned folder's config.json; raised when a field changes meaning.
FINETUNE_VERSION = 1
# The kind of a fine-tuned speech classifier (selfsup/finetune_audio.py): no text model inside.
AUDIO_CLASSIFY = "audio-classify"
# HuggingFace model types of waveform encoders (selfsup/interop/hf_wav2vec2.py reads them).
HF_SPEECH_TYPES = ("wav2vec2", "hubert")


@dataclass
class Loaded:
    """What `load_model` returns. `model` is the pretraining objective (MLM...) when its weights
    exist, else None; `encoder` is always set; a fine-tuned folder's task objective and its
    config.json are `task` and `task_config`."""

    encoder: BertEncoder
    model: nn.Module | None
    tokenizer: Tokenizer
    config: BertConfig
    source: str  # "run", "finetuned" or "hf"
    task: nn.Module | None = None
    task_config: dict | None = None


def run_config(p: Path) -> RunConfig:
    """The RunConfig of a run folder (a one-line error when config.json is unreadable)."""
    try:
        return RunConfig.from_dict(read_run_config(p))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
        raise ConfigError(f"{p / 'config.json'} is not a valid selfsup run config") from None


def load_model(path: str | os.PathLike) -> Loaded:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"no such model folder: {path}")
    if not p.is_dir():
        raise ConfigError(f"{path} is not a folder (expected a selfsup run or a HF BERT folder)")
    if is_run(p):
        return _load_run(p)
    fmt = folder_format(p)
    if fmt == FINETUNE_FORMAT:
        return _load_finetuned(p)
    if (p / "config.json").exists():
        if _model_type(p) in HF_SPEECH_TYPES:  # a waveform encoder: no tokenizer, no text
            raise ConfigError(
                f"{path} is a HuggingFace {_model_type(p)} (speech) model: use it with superb, "
                "embed or finetune --task audio-classify"
            )
        if _model_type(p) == "bart":  # an encoder-decoder: restored as a BART objective
            net, cfg = load_bart(p)
            objective = BART(net, BartObjectiveConfig())
            encoder = Seq2SeqEncoder.of(net).eval()
            return Loaded(encoder, objective, load_tokenizer(p), cfg, "hf")
        encoder, model, cfg = load_hf(p)
        return Loaded(encoder, model, load_tokenizer(p), cfg, "hf")
    raise ConfigError(f"{path} is neither a selfsup run nor a HuggingFace model folder")


def _config_field(p: Path, key: str) -> str | None:
    """`key` of the folder's config.json, None when it is absent or unreadable."""
    try:
        d = json.loads((p / "config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return d.get(key) if isinstance(d, dict) else None


def _model_type(p: Path) -> str | None:
    return _config_field(p, "model_type")


def hf_model_type(path: str | os.PathLike) -> str | None:
    """The model_type of a HuggingFace folder's config.json; None for a selfsup run or a
    fine-tuned folder (their config.json is ours), a folder without one, or a file."""
    p = Path(path)
    if not p.is_dir() or is_run(p) or folder_format(p) == FINETUNE_FORMAT:
        return None
    value = _model_type(p)
    return value if isinstance(value, str) else None


def is_hf_speech(path: str | os.PathLike) -> bool:
    """Whether `path` is a HuggingFace wav2vec 2.0 or HuBERT folder (a speech upstream)."""
    return hf_model_type(path) in HF_SPEECH_TYPES


def folder_format(p: Path) -> str | None:
    return _config_field(p, "format")


def run_weights(p: Path) -> dict:
    """The weights of a run folder: model.safetensors (its manifest checked), else the newest
    checkpoint whose files match its manifest; a one-line error when there are none yet."""
    if (p / "model.safetensors").exists():
        return load_weights(p)
    ckpt = latest_checkpoint(p)
    if ckpt is None:
        raise ConfigError(f"run {p} has no weights yet (no model.safetensors or checkpoint)")
    return read_safetensors(ckpt / "model.safetensors")


def _load_run(p: Path) -> Loaded:
    cfg = run_config(p)
    if not isinstance(cfg.data, TextDataConfig):  # a speech run: no tokenizer, no text commands
        raise ConfigError(
            f"{p} is a {cfg.objective.name} (speech) run: use it with superb, embed or "
            "finetune --task audio-classify"
        )
    if (p / "model.safetensors").exists():
        weights = load_weights(p)  # checks the run's manifest
    else:
        ckpt = latest_checkpoint(p)  # the newest whose files match its manifest
        if ckpt is None:
            raise ConfigError(f"run {p} has no weights yet (no model.safetensors or checkpoint)")
        weights = read_safetensors(ckpt / "model.safetensors")
    objective = build_objective(cfg.objective, cfg.model)
    objective.load_state_dict(weights)
    objective.eval()
    # an encoder-decoder's objective holds the whole model (objective.model): its encoder
    # half, with BERT's contract, serves the commands that take an encoder
    encoder = getattr(objective, "encoder", None)
    if encoder is None and isinstance(getattr(objective, "model", None), Seq2SeqModel):
        encoder = Seq2SeqEncoder.of(objective.model).eval()
    return Loaded(encoder, objective, load_tokenizer(p), cfg.model, "run")


def _load_finetuned(p: Path) -> Loaded:
    """The encoder of a fine-tuned folder (its task head is not a pretraining objective)."""
    model, tok, config = load_finetuned(p)
    mcfg = _model_config(config)
    encoder = model.encoder if hasattr(model, "encoder") else Seq2SeqEncoder.of(model.model)
    return Loaded(encoder, None, tok, mcfg, "finetuned", task=model, task_config=config)


def on_seq2seq(config: dict) -> bool:
    """Whether a fine-tuned folder's config.json describes an encoder-decoder's model (seq2seq
    tasks, and classifiers on an encoder-decoder's encoder half)."""
    return config.get("encoder") == "seq2seq" or config.get("kind") == "seq2seq"


def _model_config(config: dict):
    """A fine-tuned folder's model config: BERT's, or an encoder-decoder's (on_seq2seq)."""
    return (Seq2SeqConfig if on_seq2seq(config) else BertConfig)(**config["model"])


def is_audio_classifier(path: str | os.PathLike) -> bool:
    """Whether `path` is a fine-tuned speech classifier's folder (selfsup/finetune_audio.py)."""
    p = Path(path)
    return (p.is_dir() and folder_format(p) == FINETUNE_FORMAT
            and _config_field(p, "kind") == AUDIO_CLASSIFY)  # fmt: skip


def read_finetuned_config(path: str | Path) -> dict:
    """The config.json of a `selfsup finetune` output folder, checked: its format, a version
    this selfsup reads, and final weights present."""
    p = Path(path)
    cfg_file = p / "config.json"
    if not p.is_dir() or not cfg_file.exists():
        raise ConfigError(f"{path} is not a fine-tuned model folder")
    try:
        config = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        config = None
    if not isinstance(config, dict) or config.get("format") != FINETUNE_FORMAT:
        raise ConfigError(f"{path} is not a fine-tuned model folder (run `selfsup finetune`)")
    if config.get("version", 1) > FINETUNE_VERSION:  # folders before versions are version 1
        raise ConfigError(
            f"{path} was written by a newer selfsup (fine-tuned folder version "
            f"{config['version']}, this one reads {FINETUNE_VERSION}): upgrade selfsup"
        )
    if not (p / "model.safetensors").is_file():
        raise ConfigError(f"{path} has no model.safetensors (the fine-tuning did not finish)")
    return config


def load_finetuned(path: str | Path):
    """(model, tokenizer, config dict) of a `selfsup finetune` output folder of a text task."""
    p = Path(path)
    cfg_file = p / "config.json"
    config = read_finetuned_config(p)
    if config.get("kind") == AUDIO_CLASSIFY:
        raise ConfigError(
            f"{path} is a speech classifier ({AUDIO_CLASSIFY}): `selfsup predict` and "
            "`selfsup evaluate --task audio-classify` read it; this command takes text models"
        )
    try:
        mcfg = _model_config(config)
        labels = config["labels"]
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{cfg_file}: bad or missing model section ({e})") from None
    if config["kind"] == "seq2seq":
        from selfsup.encoders.seq2seq import build_seq2seq
        from selfsup.objectives.seq2seq import Seq2SeqTask

        model = Seq2SeqTask(build_seq2seq(mcfg))
    else:
        # class weights shape only the training loss (a non-persistent buffer, not in the
        # weights): rebuilt from config.json so model(batch) gives the loss fine-tuning
        # optimised
        encoder = (build_seq2seq_encoder(mcfg) if isinstance(mcfg, Seq2SeqConfig)
                   else build_encoder(mcfg))  # fmt: skip
        model = build_task_model(
            config["kind"], encoder, len(labels) if labels else None, 0.0,
            config.get("class_weights"),
        )  # fmt: skip
    model.load_state_dict(load_weights(p))  # checks the folder's manifest
    model.eval()
    return model, load_tokenizer(p / "tokenizer"), config


def export_hf_folder(loaded: Loaded, out: Path) -> None:
    """Write `loaded` as a HuggingFace BERT folder (BertForPreTraining with the pretraining
    heads, BertForMaskedLM, or BertModel for an encoder alone)."""
    module = loaded.model if loaded.model is not None else loaded.encoder
    export_hf(module, loaded.config, loaded.tokenizer, Path(out), encoder_only=loaded.model is None)


__all__ = [
    "AUDIO_CLASSIFY", "FINETUNE_FORMAT", "HF_SPEECH_TYPES", "Loaded", "RUN_FORMAT",
    "export_hf_folder", "hf_model_type", "is_audio_classifier", "is_hf_speech", "load_model",
    "read_finetuned_config", "run_config",
]  # fmt: skip
