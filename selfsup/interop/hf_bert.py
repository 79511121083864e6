"""HuggingFace BERT interop: transformers' BertConfig and weight names <-> ours, reading HF
folders (config.json + model.safetensors or pytorch_model.bin + vocab.txt) and exporting runs
as folders that `BertForPreTraining` / `BertModel` / `BertForMaskedLM.from_pretrained` load, and
fine-tuned models as `BertForSequenceClassification` / `BertForTokenClassification` /
`BertForQuestionAnswering` folders."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from selfsup.checkpoint import (
    read_safetensors,
    save_safetensors,
    temp_folder,
    verify_manifest,
    write_manifest,
)
from selfsup.data.tokenizer import Tokenizer
from selfsup.encoders.text import BertConfig, BertEncoder, build_encoder
from selfsup.errors import ConfigError
from selfsup.objectives.mlm import MLM, MLMWithNSP
from selfsup.paths import check_out_folder

REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size")  # fmt: skip


def hf_config_to_model(hf: dict, where: str = "config.json") -> BertConfig:
    """A transformers BertConfig dict -> ours; a one-line error naming what is missing."""
    if not isinstance(hf, dict):
        raise ConfigError(f"{where} is not a JSON object")
    if hf.get("model_type", "bert") != "bert":
        raise ConfigError(f"model_type {hf.get('model_type')!r} is not supported (BERT only)")
    act = hf.get("hidden_act", "gelu")
    if act != "gelu":
        raise ConfigError(f"hidden_act {act!r} is not supported (BERT's exact 'gelu' only)")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError("only absolute position embeddings are supported")
    missing = [k for k in REQUIRED if k not in hf]
    if missing:
        raise ConfigError(f"{where} is not a BERT config: it lacks {', '.join(missing)}")
    return BertConfig(
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


def model_to_hf_config(cfg: BertConfig, architectures: list[str]) -> dict:
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
        return read_safetensors(p / "model.safetensors")
    if (p / "pytorch_model.bin").exists():
        return torch.load(p / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise ConfigError(f"{p} has config.json but no model.safetensors or pytorch_model.bin")


def load_hf(p: Path) -> tuple[BertEncoder, MLM | None, BertConfig]:
    """(encoder, MLM objective or None, config) of a HuggingFace BERT folder (BertModel,
    BertForPreTraining, BertForMaskedLM: the MLM objective when the folder has MLM weights)."""
    verify_manifest(p)  # folders we exported carry one; a one-line error names a changed file
    try:
        hf = json.loads((p / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{p / 'config.json'} is not valid JSON") from None
    cfg = hf_config_to_model(hf, str(p / "config.json"))
    sd = from_hf_state(_read_hf_weights(p), cfg.n_layers)
    encoder = build_encoder(cfg)
    enc_sd = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    if "pooler.weight" not in enc_sd:  # BertForMaskedLM has no pooler: keep the random one
        enc_sd["pooler.weight"] = encoder.pooler.weight.detach()
        enc_sd["pooler.bias"] = encoder.pooler.bias.detach()
    encoder.load_state_dict(enc_sd)
    model = None
    if "mlm_head.dense.weight" in sd:
        kind = MLMWithNSP if "pair_head.proj.weight" in sd else MLM
        model = kind(encoder, cfg.vocab_size, cfg.norm_eps)
        model.load_state_dict(sd, strict=False)
        model.mlm_head.load_state_dict(
            {k[len("mlm_head.") :]: v for k, v in sd.items() if k.startswith("mlm_head.")}
        )
        model.eval()
    encoder.eval()
    return encoder, model, cfg


def export_hf(
    module: nn.Module, config: BertConfig, tokenizer: Tokenizer, out: Path, encoder_only: bool
) -> None:
    """Write a folder that transformers' BertForPreTraining / BertModel / BertForMaskedLM load:
    `module` is an MLM objective, or a BertEncoder with `encoder_only`."""
    sd = module.state_dict()
    if encoder_only:
        sd = {"encoder." + k: v for k, v in sd.items()}
    hf_sd = to_hf_state(sd, config.n_layers)
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
    cfg = model_to_hf_config(config, arch)
    write_export(out, lambda tmp: _write_hf(tmp, hf_sd, cfg, tokenizer, config.max_len))


# --------------------------------------------------------------------------------------------
# Fine-tuned task models: BertForSequenceClassification / TokenClassification / QuestionAnswering
# --------------------------------------------------------------------------------------------

# kind -> (transformers class, name of its head Linear); our heads are all `head.proj`.
TASK_ARCH = {
    "classify": ("BertForSequenceClassification", "classifier"),
    "pair-classify": ("BertForSequenceClassification", "classifier"),
    "regress": ("BertForSequenceClassification", "classifier"),
    "tag": ("BertForTokenClassification", "classifier"),
    "qa": ("BertForQuestionAnswering", "qa_outputs"),
}
# Token-level models read no pooled [CLS]: transformers builds them without a pooler.
_NO_POOLER = ("tag", "qa")


def task_to_hf_state(
    sd: dict[str, torch.Tensor], n_layers: int, kind: str
) -> dict[str, torch.Tensor]:
    """A fine-tuned task model's state dict (`encoder.*` + `head.proj.*`) -> the names of the
    transformers class TASK_ARCH gives for `kind`. Works on gradients the same way."""
    _, head = TASK_ARCH[kind]
    out = to_hf_state({k: v for k, v in sd.items() if k.startswith("encoder.")}, n_layers)
    if kind in _NO_POOLER:
        out = {k: v for k, v in out.items() if not k.startswith("bert.pooler.")}
    out[f"{head}.weight"] = sd["head.proj.weight"].contiguous()
    out[f"{head}.bias"] = sd["head.proj.bias"].contiguous()
    return out


def task_hf_config(config: BertConfig, kind: str, labels: list | None) -> dict:
    """transformers' config for a fine-tuned model: its class, label names (id2label/label2id,
    which the pipelines print) and problem type."""
    if kind not in TASK_ARCH:
        raise ConfigError(f"no HuggingFace class for task kind {kind!r}")
    cfg = model_to_hf_config(config, [TASK_ARCH[kind][0]])
    cfg["tie_word_embeddings"] = False  # no MLM decoder here
    if kind == "qa":
        cfg["num_labels"] = 2  # qa_outputs: start and end
        return cfg
    if kind == "regress":
        names = ["LABEL_0"]
        cfg["problem_type"] = "regression"  # the pipeline returns the raw score
    else:
        if not labels:
            raise ConfigError(f"a {kind} model needs its labels in config.json")
        names = [str(x) for x in labels]
        cfg["problem_type"] = "single_label_classification"
    cfg["num_labels"] = len(names)
    cfg["id2label"] = {str(i): n for i, n in enumerate(names)}
    cfg["label2id"] = {n: i for i, n in enumerate(names)}
    return cfg


def export_hf_task(
    model: nn.Module,
    config: BertConfig,
    kind: str,
    labels: list | None,
    tokenizer: Tokenizer,
    out: Path,
    max_len: int | None = None,
) -> str:
    """Write a fine-tuned task model (selfsup.objectives.supervised) as a folder that
    `transformers.AutoModelFor...` and `pipeline(...)` load without remote code; the tokenizer
    truncates to `max_len` (default the position table). Returns the transformers class name."""
    cfg = task_hf_config(config, kind, labels)
    hf_sd = task_to_hf_state(model.state_dict(), config.n_layers, kind)
    limit = min(max_len or config.max_len, config.max_len)
    write_export(out, lambda tmp: _write_hf(tmp, hf_sd, cfg, tokenizer, limit))
    return cfg["architectures"][0]


# --------------------------------------------------------------------------------------------
# Writing an export folder atomically
# --------------------------------------------------------------------------------------------


def _write_hf(tmp: Path, hf_sd: dict, cfg: dict, tokenizer: Tokenizer, max_len: int) -> None:
    save_safetensors(hf_sd, tmp / "model.safetensors", metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False))
    tokenizer.save(tmp, max_len)


def write_export(out: Path, fill: Callable[[Path], None]) -> None:
    """Build an export folder in a hidden temporary folder beside `out` (`fill(tmp)` writes the
    files), add its manifest, then rename it into place: `out` is complete or absent."""
    out = check_out_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(out.parent, out.name)  # readable by others as the umask allows
    try:
        fill(tmp)
        write_manifest(tmp)  # last: every file complete and fsynced
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    except (OSError, SafetensorError) as e:  # a full disk, permissions: one line, not a trace
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(f"cannot write the export {out}: {str(e).splitlines()[0]}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
