"""Loading any model folder: a selfsup run, a `selfsup finetune` output, or a HuggingFace BERT
folder. Every command that takes a model goes through `load_model`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from selfsup.checkpoint import RUN_FORMAT, is_run, latest_checkpoint, load_weights, read_run_config
from selfsup.config import RunConfig
from selfsup.data.tokenizer import Tokenizer, load_tokenizer
from selfsup.encoders.text import BertConfig, BertEncoder, build_encoder
from selfsup.errors import ConfigError
from selfsup.interop.hf_bert import export_hf, load_hf
from selfsup.objectives import build_objective

FINETUNE_FORMAT = "selfsup-finetuned"


@dataclass
class Loaded:
    """What `load_model` returns. `model` is the pretraining objective (MLM...) when its weights
    exist, else None; `encoder` is always set."""

    encoder: BertEncoder
    model: nn.Module | None
    tokenizer: Tokenizer
    config: BertConfig
    source: str  # "run", "finetuned" or "hf"


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
        encoder, model, cfg = load_hf(p)
        return Loaded(encoder, model, load_tokenizer(p), cfg, "hf")
    raise ConfigError(f"{path} is neither a selfsup run nor a HuggingFace model folder")


def folder_format(p: Path) -> str | None:
    try:
        d = json.loads((p / "config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return d.get("format") if isinstance(d, dict) else None


def _load_run(p: Path) -> Loaded:
    cfg = run_config(p)
    folder = p
    if not (p / "model.safetensors").exists():
        folder = latest_checkpoint(p)
        if folder is None:
            raise ConfigError(f"run {p} has no weights yet (no model.safetensors or checkpoint)")
    objective = build_objective(cfg.objective, cfg.model)
    objective.load_state_dict(load_weights(folder))  # checks the folder's manifest
    objective.eval()
    return Loaded(objective.encoder, objective, load_tokenizer(p), cfg.model, "run")


def _load_finetuned(p: Path) -> Loaded:
    """The encoder of a fine-tuned folder (its task head is not a pretraining objective)."""
    config = json.loads((p / "config.json").read_text())
    if not isinstance(config.get("model"), dict):
        raise ConfigError(f"{p / 'config.json'} has no model section")
    try:
        mcfg = BertConfig(**config["model"])
    except TypeError as e:
        raise ConfigError(f"{p / 'config.json'}: bad model section ({e})") from None
    if not (p / "model.safetensors").is_file():
        raise ConfigError(f"{p} has no model.safetensors (the fine-tuning did not finish)")
    encoder = build_encoder(mcfg)
    sd = load_weights(p)
    encoder.load_state_dict(
        {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    )
    encoder.eval()
    return Loaded(encoder, None, load_tokenizer(p / "tokenizer"), mcfg, "finetuned")


def export_hf_folder(loaded: Loaded, out: Path) -> None:
    """Write `loaded` as a HuggingFace BERT folder (BertForPreTraining with the pretraining
    heads, BertForMaskedLM, or BertModel for an encoder alone)."""
    module = loaded.model if loaded.model is not None else loaded.encoder
    export_hf(module, loaded.config, loaded.tokenizer, Path(out), encoder_only=loaded.model is None)


__all__ = [
    "FINETUNE_FORMAT", "Loaded", "RUN_FORMAT", "export_hf_folder", "load_model", "run_config",
]  # fmt: skip
