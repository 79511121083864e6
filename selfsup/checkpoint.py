"""Saving and loading: run folders, atomic checkpoints with full trainer state, and HuggingFace
BERT import/export (config.json + model.safetensors/pytorch_model.bin + vocab.txt).

A run folder:
    config.json               the RunConfig (plus "format": "selfsup-run")
    tokenizer/                vocab.txt, tokenizer.json, tokenizer_config.json
    checkpoints/step_XXXXXXXX model.safetensors + trainer.pt (optimizer, scheduler, RNG, step),
                              whole and written once by rank 0: resumable at any world size
    checkpoints/LATEST        name of the newest complete checkpoint
    model.safetensors         final weights, written when training ends
    metrics.jsonl, tb/        logs
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from selfsup.config import ConfigError, ModelConfig, RunConfig
from selfsup.data.tokenizer import Tokenizer, load_tokenizer
from selfsup.encoders.text import BertEncoder, build_encoder
from selfsup.objectives import OBJECTIVES

RUN_FORMAT = "selfsup-run"


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module | dict[str, torch.Tensor],
    trainer_state: dict,
    keep: int = 2,
) -> Path:
    """Write checkpoints/step_N atomically (temporary folder, fsync, rename), then LATEST.
    `model` is the model or its whole state dict (gathered from several processes)."""
    ckpt_root = run_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=ckpt_root, prefix=f".{name}."))
    try:
        save_file(_contiguous(_state(model)), str(tmp / "model.safetensors"))
        torch.save(trainer_state, tmp / "trainer.pt")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        final = ckpt_root / name
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(ckpt_root / "LATEST", name)
    old = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir() and p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    marker = run_dir / "checkpoints" / "LATEST"
    if not marker.exists():
        return None
    p = run_dir / "checkpoints" / marker.read_text().strip()
    return p if (p / "model.safetensors").exists() else None


def save_final(run_dir: Path, model: nn.Module | dict[str, torch.Tensor]) -> None:
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".model.")
    os.close(fd)
    save_file(_contiguous(_state(model)), tmp)
    os.replace(tmp, run_dir / "model.safetensors")


def _state(model: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return model if isinstance(model, dict) else model.state_dict()


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in sd.items()}


# --------------------------------------------------------------------------------------------
# Loading any model: a selfsup run or a HuggingFace BERT folder
# --------------------------------------------------------------------------------------------


@dataclass
class Loaded:
    """What `load_model` returns. `model` is an objective (MLM...) when MLM weights exist,
    else None; `encoder` is always set."""

    encoder: BertEncoder
    model: nn.Module | None
    tokenizer: Tokenizer
    config: ModelConfig
    source: str  # "run" or "hf"


def is_run(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.exists():
        return False
    try:
        return json.loads(cfg.read_text()).get("format") == RUN_FORMAT
    except json.JSONDecodeError:
        return False


def load_model(path: str | os.PathLike) -> Loaded:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"no such model folder: {path}")
    if not p.is_dir():
        raise ConfigError(f"{path} is not a folder (expected a selfsup run or a HF BERT folder)")
    if is_run(p):
        return _load_run(p)
    if (p / "config.json").exists():
        return _load_hf(p)
    raise ConfigError(f"{path} is neither a selfsup run nor a HuggingFace model folder")


def _load_run(p: Path) -> Loaded:
    cfg = RunConfig.from_dict(_strip_format(json.loads((p / "config.json").read_text())))
    weights = p / "model.safetensors"
    if not weights.exists():
        ckpt = latest_checkpoint(p)
        if ckpt is None:
            raise ConfigError(f"run {p} has no weights yet (no model.safetensors or checkpoint)")
        weights = ckpt / "model.safetensors"
    objective = OBJECTIVES[cfg.train.objective](
        build_encoder(cfg.model), cfg.model.vocab_size, cfg.model.norm_eps
    )
    objective.load_state_dict(load_file(str(weights)))
    objective.eval()
    return Loaded(objective.encoder, objective, load_tokenizer(p), cfg.model, "run")


def _strip_format(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "format"}


def run_config(p: Path) -> RunConfig:
    return RunConfig.from_dict(_strip_format(json.loads((p / "config.json").read_text())))


# --------------------------------------------------------------------------------------------
# HuggingFace BERT interop
# --------------------------------------------------------------------------------------------


def hf_config_to_model(hf: dict) -> ModelConfig:
    if hf.get("model_type", "bert") != "bert":
        raise ConfigError(f"model_type {hf.get('model_type')!r} is not supported (BERT only)")
    act = hf.get("hidden_act", "gelu")
    if act != "gelu":
        raise ConfigError(f"hidden_act {act!r} is not supported (BERT's exact 'gelu' only)")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError("only absolute position embeddings are supported")
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        dim=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"],
        ffn_dim=hf["intermediate_size"],
        max_len=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        dropout=hf.get("hidden_dropout_prob", 0.1),
        attn_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        pad_id=hf.get("pad_token_id", 0) or 0,
    )


def model_to_hf_config(cfg: ModelConfig, architectures: list[str]) -> dict:
    return {
        "architectures": architectures,
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "intermediate_size": cfg.ffn_dim,
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attn_dropout,
        "max_position_embeddings": cfg.max_len,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": 0.02,
        "layer_norm_eps": cfg.norm_eps,
        "pad_token_id": cfg.pad_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


# (ours, HF) name pairs for one layer; q/k/v are fused in ours and handled apart.
_LAYER = [
    ("attn.out", "attention.output.dense"),
    ("attn_norm", "attention.output.LayerNorm"),
    ("mlp.up", "intermediate.dense"),
    ("mlp.down", "output.dense"),
    ("mlp_norm", "output.LayerNorm"),
]
_TOP = [
    ("encoder.embed.tokens.weight", "bert.embeddings.word_embeddings.weight"),
    ("encoder.embed.positions.weight", "bert.embeddings.position_embeddings.weight"),
    ("encoder.embed.segments.weight", "bert.embeddings.token_type_embeddings.weight"),
    ("encoder.embed.norm.weight", "bert.embeddings.LayerNorm.weight"),
    ("encoder.embed.norm.bias", "bert.embeddings.LayerNorm.bias"),
    ("encoder.pooler.weight", "bert.pooler.dense.weight"),
    ("encoder.pooler.bias", "bert.pooler.dense.bias"),
    ("mlm_head.dense.weight", "cls.predictions.transform.dense.weight"),
    ("mlm_head.dense.bias", "cls.predictions.transform.dense.bias"),
    ("mlm_head.norm.weight", "cls.predictions.transform.LayerNorm.weight"),
    ("mlm_head.norm.bias", "cls.predictions.transform.LayerNorm.bias"),
    ("mlm_head.bias", "cls.predictions.bias"),
    ("pair_head.proj.weight", "cls.seq_relationship.weight"),
    ("pair_head.proj.bias", "cls.seq_relationship.bias"),
]


def to_hf_state(sd: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """Our objective's state dict -> BertForPreTraining names."""
    out = {hf: sd[ours] for ours, hf in _TOP if ours in sd}
    for i in range(n_layers):
        ours, hf = f"encoder.transformer.blocks.{i}.", f"bert.encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k, v = sd[f"{ours}attn.qkv.{kind}"].chunk(3, dim=0)
            out[f"{hf}attention.self.query.{kind}"] = q
            out[f"{hf}attention.self.key.{kind}"] = k
            out[f"{hf}attention.self.value.{kind}"] = v
            for o, h in _LAYER:
                out[f"{hf}{h}.{kind}"] = sd[f"{ours}{o}.{kind}"]
    return {k: v.contiguous() for k, v in out.items()}


def from_hf_state(hf_sd: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """HF BERT weights (BertModel, BertForPreTraining, BertForMaskedLM; with or without the
    `bert.` prefix; old gamma/beta names) -> our names. Missing heads are simply absent."""
    sd = {}
    for k, v in hf_sd.items():
        k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
            "LayerNorm.beta", "LayerNorm.bias"
        )
        if k.startswith(("embeddings.", "encoder.", "pooler.")):
            k = "bert." + k
        sd[k] = v
    out = {ours: sd[hf] for ours, hf in _TOP if hf in sd}
    for i in range(n_layers):
        ours, hf = f"encoder.transformer.blocks.{i}.", f"bert.encoder.layer.{i}."
        for kind in ("weight", "bias"):
            parts = [sd.get(f"{hf}attention.self.{n}.{kind}") for n in ("query", "key", "value")]
            if any(x is None for x in parts):
                raise ConfigError(f"HF weights lack layer {i} attention ({kind})")
            out[f"{ours}attn.qkv.{kind}"] = torch.cat(parts, dim=0)
            for o, h in _LAYER:
                out[f"{ours}{o}.{kind}"] = sd[f"{hf}{h}.{kind}"]
    return out


def _read_hf_weights(p: Path) -> dict[str, torch.Tensor]:
    if (p / "model.safetensors").exists():
        return load_file(str(p / "model.safetensors"))
    if (p / "pytorch_model.bin").exists():
        return torch.load(p / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise ConfigError(f"{p} has config.json but no model.safetensors or pytorch_model.bin")


def _load_hf(p: Path) -> Loaded:
    try:
        hf = json.loads((p / "config.json").read_text())
    except json.JSONDecodeError:
        raise ConfigError(f"{p / 'config.json'} is not valid JSON") from None
    cfg = hf_config_to_model(hf)
    sd = from_hf_state(_read_hf_weights(p), cfg.n_layers)
    encoder = build_encoder(cfg)
    enc_sd = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    if "pooler.weight" not in enc_sd:  # BertForMaskedLM has no pooler: keep the random one
        enc_sd["pooler.weight"] = encoder.pooler.weight.detach()
        enc_sd["pooler.bias"] = encoder.pooler.bias.detach()
    encoder.load_state_dict(enc_sd)
    model = None
    if "mlm_head.dense.weight" in sd:
        kind = "mlm+nsp" if "pair_head.proj.weight" in sd else "mlm"
        model = OBJECTIVES[kind](encoder, cfg.vocab_size, cfg.norm_eps)
        model.load_state_dict(sd, strict=False)
        model.mlm_head.load_state_dict(
            {k[len("mlm_head.") :]: v for k, v in sd.items() if k.startswith("mlm_head.")}
        )
        model.eval()
    encoder.eval()
    return Loaded(encoder, model, load_tokenizer(p), cfg, "hf")


def export_hf(loaded: Loaded, out: Path) -> None:
    """Write a folder that transformers' BertForPreTraining / BertModel / BertForMaskedLM load."""
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"output folder {out} exists and is not empty")
    module = loaded.model if loaded.model is not None else loaded.encoder
    sd = module.state_dict()
    if loaded.model is None:
        sd = {"encoder." + k: v for k, v in sd.items()}
    hf_sd = to_hf_state(sd, loaded.config.n_layers)
    arch = (
        ["BertForPreTraining"]
        if "cls.seq_relationship.weight" in hf_sd
        else (["BertForMaskedLM"] if "cls.predictions.bias" in hf_sd else ["BertModel"])
    )
    if "cls.predictions.bias" in hf_sd:
        # transformers ties decoder.bias to predictions.bias; store both names so every version
        # of the loader finds it.
        hf_sd["cls.predictions.decoder.bias"] = hf_sd["cls.predictions.bias"].clone()
    if arch == ["BertModel"]:
        hf_sd = {k[len("bert.") :]: v for k, v in hf_sd.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        save_file(hf_sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        cfg = model_to_hf_config(loaded.config, arch)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        loaded.tokenizer.save(tmp, loaded.config.max_len)
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
