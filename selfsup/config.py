"""Dataclasses for every part of a run, and a small override parser.

The config is consumed once, in the builders (`build_encoder`, `build_objective`, ...); layers
take plain int/float arguments.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from selfsup.errors import ConfigError


@dataclass
class ModelConfig:
    """A BERT encoder (Devlin et al., arXiv:1810.04805); defaults are BERT-base."""

    vocab_size: int = 30522
    dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    ffn_dim: int = 3072
    max_len: int = 512  # size of the learned position table
    type_vocab_size: int = 2
    dropout: float = 0.1
    attn_dropout: float = 0.1
    norm_eps: float = 1e-12
    pad_id: int = 0

    def validate(self) -> None:
        if self.dim % self.n_heads:
            raise ConfigError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "ffn_dim", "max_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")


@dataclass
class MaskConfig:
    """Masked-LM corruption: BERT's 15% with 80/10/10 (arXiv:1810.04805, section 3.1)."""

    mask_prob: float = 0.15
    replace_prob: float = 0.8  # of the chosen tokens, share replaced by [MASK]
    random_prob: float = 0.1  # share replaced by a random token; the rest stay unchanged
    whole_word: bool = False  # choose whole words (all their ##pieces) together
    span: bool = False  # choose contiguous spans (SpanBERT, arXiv:1907.10529)
    span_max: int = 10  # longest span, in words
    span_p: float = 0.2  # geometric parameter of span lengths (SpanBERT uses 0.2)

    def validate(self) -> None:
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.replace_prob < 0 or self.random_prob < 0:
            raise ConfigError("replace_prob and random_prob must be >= 0")
        if self.replace_prob + self.random_prob > 1.0 + 1e-9:
            raise ConfigError("replace_prob + random_prob must be <= 1")
        if self.span_max < 1 or not 0.0 < self.span_p <= 1.0:
            raise ConfigError("span_max must be >= 1 and span_p in (0, 1]")


@dataclass
class DataConfig:
    paths: list[str] = field(default_factory=list)  # empty = the packaged default corpus
    max_len: int = 128
    lowercase: bool = True
    vocab_size: int = 8192  # when a tokenizer is trained for the run
    tokenizer: str | None = None  # a tokenizer folder, run or HF model folder
    text_field: str = "text"  # column of .jsonl/.csv/datasets inputs
    pack: bool = False  # pack each batch's examples into full rows (no padding FLOPs)
    heldout_every: int = 50  # every Nth chunk is held out for evaluation
    heldout_max: int = 512
    num_workers: int = 0
    cache_dir: str | None = None


@dataclass
class TrainConfig:
    objective: str = "mlm+nsp"
    steps: int = 1000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 100
    schedule: str = "linear"  # linear | cosine | constant
    min_lr_ratio: float = 0.0
    clip_norm: float = 1.0
    bf16: bool = False
    seed: int = 0
    save_every: int = 500
    eval_every: int = 250
    log_every: int = 10
    threads: int = 0  # 0 = torch default
    device: str = "auto"  # auto: the GPU when there is one (one process; torchrun: LOCAL_RANK)
    compile: bool = False  # torch.compile the model (in place: checkpoints keep their keys)
    # Several processes (torchrun): shard parameters, gradients and optimizer state with FSDP2
    # instead of replicating the model on every rank (DDP), for models too big for one device.
    fsdp: bool = False

    def validate(self) -> None:
        from selfsup.objectives import OBJECTIVES

        if self.objective not in OBJECTIVES:
            raise ConfigError(
                f"unknown objective {self.objective!r}; choose from {', '.join(OBJECTIVES)}"
            )
        if self.schedule not in ("linear", "cosine", "constant"):
            raise ConfigError(f"unknown schedule {self.schedule!r}; use linear, cosine, constant")
        for name in ("steps", "batch_size", "grad_accum"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.save_every < 0 or self.eval_every < 0:
            raise ConfigError("save_every and eval_every must be >= 0")


@dataclass
class RunConfig:
    preset: str = "tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        self.model.validate()
        self.mask.validate()
        self.train.validate()
        if self.data.max_len > self.model.max_len:
            raise ConfigError(
                f"max_len {self.data.max_len} is beyond the model's position table "
                f"({self.model.max_len})"
            )
        if self.data.max_len < 8:
            raise ConfigError(f"max_len must be at least 8, got {self.data.max_len}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return cls(
            preset=d.get("preset", "custom"),
            model=_build(ModelConfig, d.get("model", {})),
            mask=_build(MaskConfig, d.get("mask", {})),
            data=_build(DataConfig, d.get("data", {})),
            train=_build(TrainConfig, d.get("train", {})),
        )


def _build(cls, d: dict[str, Any]):
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(sorted(unknown))}")
    out = cls(**d)
    if "betas" in d and isinstance(out, TrainConfig):
        out.betas = tuple(out.betas)
    return out


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply `section.key=value` strings (e.g. `mask.whole_word=true`); unknown keys are errors."""
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        key, raw = item.split("=", 1)
        section, name = key.split(".", 1)
        if section not in ("model", "mask", "data", "train"):
            raise ConfigError(f"unknown config section {section!r} in {item!r}")
        obj = getattr(cfg, section)
        types = {f.name: f.type for f in fields(obj)}
        if name not in types:
            raise ConfigError(f"unknown option {key!r}")
        setattr(obj, name, _parse_value(raw, getattr(obj, name), key))
    return cfg


def _parse_value(raw: str, current: Any, key: str) -> Any:
    try:
        if isinstance(current, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, tuple):
            return tuple(float(x) for x in raw.split(","))
        if isinstance(current, list):
            return [x for x in raw.split(",") if x]
    except ValueError:
        raise ConfigError(f"bad value {raw!r} for {key}") from None
    return None if raw.lower() == "none" else raw


def replace(obj, **kw):
    return dataclasses.replace(obj, **kw)
