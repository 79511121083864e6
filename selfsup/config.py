"""The run config: one dataclass per part, each owned by its part, composed here, plus an
override parser that walks them.

    model      the model's config, the class the objective names in `model_config` (text:
               encoders/text.py BertConfig; encoder-decoders: encoders/seq2seq.py Seq2SeqConfig)
    objective  the objective's own config (objectives/*.py), chosen by its `name`
    data       the data pipeline's config (text: data/text.py TextDataConfig)
    train      the loop's config (TrainConfig, below)

The config is consumed once, in the builders (`build_encoder`, `build_objective`, ...); layers
take plain int/float arguments. `--set section.key=value` reaches every field of every part.
"""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from selfsup.data.text import TextDataConfig
from selfsup.device import PRECISIONS
from selfsup.encoders.text import BertConfig
from selfsup.errors import ConfigError
from selfsup.objectives import get_objective
from selfsup.objectives.mlm import MLMConfig
from selfsup.snapshots import SCHEDULES


@dataclass
class TrainConfig:
    """The training loop's settings (selfsup/train.py)."""

    steps: int = 1000
    batch_size: int = 32  # the global batch of one optimizer step, before grad_accum
    grad_accum: int = 1
    lr: float = 1e-3
    optimizer: str = "adamw"  # adamw | lars (SimCLR's, BYOL's and Barlow Twins' large batches)
    momentum: float = 0.9  # lars
    lars_eta: float = 0.02  # lars: the trust coefficient
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 100
    schedule: str = "linear"  # linear | cosine | constant
    min_lr_ratio: float = 0.0
    clip_norm: float = 1.0
    # auto: bf16 autocast where the hardware has native bf16, else fp32 (selfsup/device.py);
    # a run records the concrete value it resolved to.
    precision: str = "auto"  # auto | bf16 | fp32
    seed: int = 0
    save_every: int = 500
    # also keep the weights at scheduled steps, never pruned (selfsup/snapshots.py): none | log
    save_schedule: str = "none"
    eval_every: int = 250
    log_every: int = 10
    threads: int = 0  # 0 = torch default
    device: str = "auto"  # auto: the GPU when there is one (one process; torchrun: LOCAL_RANK)
    compile: bool = False  # torch.compile the model (in place: checkpoints keep their keys)
    # Several processes (torchrun): shard parameters, gradients and optimizer state with FSDP2
    # instead of replicating the model on every rank (DDP), for models too big for one device.
    fsdp: bool = False
    # A new run's starting weights (pretrain --init, selfsup/pretraining_init.py): a folder the
    # objective reads, e.g. an HF wav2vec 2.0 folder for wav2vec2; "" starts from random ones.
    init: str = ""

    def validate(self) -> None:
        if self.optimizer not in ("adamw", "lars"):
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; use adamw or lars")
        if self.schedule not in ("linear", "cosine", "constant"):
            raise ConfigError(f"unknown schedule {self.schedule!r}; use linear, cosine, constant")
        for name in ("steps", "batch_size", "grad_accum"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.save_every < 0 or self.eval_every < 0:
            raise ConfigError("save_every and eval_every must be >= 0")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; use {', '.join(PRECISIONS)}")
        if self.save_schedule not in SCHEDULES:
            raise ConfigError(f"unknown save schedule {self.save_schedule!r}; use "
                              f"{' or '.join(SCHEDULES)}")  # fmt: skip


@dataclass
class RunConfig:
    preset: str = "tiny"
    model: Any = field(default_factory=BertConfig)  # the objective's model_config (BERT's)
    objective: Any = field(default_factory=MLMConfig)  # the objective's Config, by its name
    data: Any = field(default_factory=TextDataConfig)  # the objective's data_config (text's)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        objective = get_objective(self.objective.name)
        if not isinstance(self.model, model_config_of(objective)):
            raise ConfigError(
                f"model section is not a {model_config_of(objective).__name__} "
                f"(objective {self.objective.name})"
            )
        self.model.validate()
        if not isinstance(self.objective, objective.Config):
            raise ConfigError(f"objective section is not a {objective.Config.__name__}")
        if hasattr(self.objective, "validate"):
            self.objective.validate()
        self.train.validate()
        if objective.batch_level and self.train.grad_accum > 1:
            raise ConfigError(
                f"{self.objective.name} is a batch-level objective (its loss depends on the whole "
                "batch), so --grad-accum would train a different batch: use a larger --batch-size"
            )
        if not isinstance(self.data, data_config_of(objective)):
            raise ConfigError(
                f"data section is not a {data_config_of(objective).__name__} "
                f"(objective {self.objective.name})"
            )
        self.data.validate(self.model)

    def set_objective(self, name: str) -> None:
        """Switch to objective `name`, keeping the old settings when its config is of the same
        class (the MLM variants), else starting from the new objective's defaults."""
        objective = get_objective(name)
        cls = objective.Config
        if isinstance(self.objective, cls):  # a variant of the same family (mlm -> mlm+nsp)
            old = asdict(self.objective)
            self.objective = cls(**{f.name: old[f.name] for f in fields(cls) if f.name in old})
        else:  # another family: its own defaults (BART's mask_prob is 0.3, not MLM's 0.15)
            self.objective = cls()
        self.objective.name = name
        model_cls = model_config_of(objective)
        if not isinstance(self.model, model_cls):  # e.g. BERT's shape -> an encoder-decoder
            # The shape carries over; each layout keeps its own LayerNorm eps (BERT 1e-12,
            # BART 1e-5), so a converted model still maps onto its reference implementation.
            shape = {k: v for k, v in asdict(self.model).items() if k != "norm_eps"}
            self.model = model_cls(**{f.name: shape[f.name] for f in fields(model_cls)
                                      if f.name in shape})  # fmt: skip
        if hasattr(objective, "default_model"):  # what the objective needs of it (APC: causal)
            self.model = objective.default_model(self.model)
        data_cls = data_config_of(objective)
        if not isinstance(self.data, data_cls):  # another modality: its own data defaults
            self.data = data_cls()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        d = _upgrade(d)
        obj = dict(d.get("objective", {}))
        name = obj.get("name", MLMConfig.name)
        return cls(
            preset=d.get("preset", "custom"),
            model=build_section(model_config_of(get_objective(name)), d.get("model", {}), "model"),
            objective=build_section(get_objective(name).Config, obj, "objective"),
            data=build_section(data_config_of(get_objective(name)), d.get("data", {}), "data"),
            train=build_section(TrainConfig, d.get("train", {}), "train"),
        )


def model_config_of(objective: type) -> type:
    """The model config class an objective builds from (`model_config`; BERT's by default)."""
    return getattr(objective, "model_config", BertConfig)


def data_config_of(objective: type) -> type:
    """The data config class an objective trains from (`data_config`; text's by default)."""
    return getattr(objective, "data_config", TextDataConfig)


def modality_of(objective: type) -> str:
    """The modality an objective's data comes in (`modality`; text by default)."""
    return getattr(objective, "modality", "text")


def _upgrade(d: dict[str, Any]) -> dict[str, Any]:
    """Run configs written before objectives owned their config: the objective's name was
    `train.objective`, its masking settings the `mask` section, and `data.vocab_size` the size
    of the tokenizer to train (now `model.vocab_size`, the one vocabulary size). Before
    `train.precision`, `train.bf16: true/false` meant bf16/fp32. Audio runs written before
    `data.long_clips` took one random crop of every clip ("crop"), so a resumed one still does."""
    train = d.get("train", {})
    data = d.get("data", {})
    old_layout = "mask" in d or "objective" in train
    old_bf16 = isinstance(train, dict) and "bf16" in train
    old_audio = isinstance(data, dict) and "features" in data and "long_clips" not in data
    if not old_layout and not old_bf16 and not old_audio:
        return d
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    train = d.setdefault("train", {})
    if old_audio:
        d["data"]["long_clips"] = "crop"
    if old_bf16:
        train.setdefault("precision", "bf16" if train.pop("bf16") else "fp32")
    if old_layout:
        d["objective"] = {"name": train.pop("objective", MLMConfig.name), **d.pop("mask", {})}
        d.setdefault("data", {}).pop("vocab_size", None)
    return d


def build_section(cls, d: dict[str, Any], section: str):
    """`cls(**d)` with unknown keys refused and JSON lists turned back into tuples."""
    if not isinstance(d, dict):
        raise ConfigError(f"config section {section!r} is not a mapping")
    hints = typing.get_type_hints(cls)
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ConfigError(f"unknown {section} keys: {', '.join(sorted(unknown))}")
    values = {}
    for k, v in d.items():
        if is_dataclass(hints[k]):  # a nested section (data.features)
            v = build_section(hints[k], v, f"{section}.{k}")
        values[k] = tuple(v) if _origin(hints[k]) is tuple else v
    return cls(**values)


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply `section.key=value` strings (e.g. `objective.whole_word=true`, `model.dim=256`),
    walking the dataclasses; unknown keys are errors, values are parsed by the field's type."""
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        key, raw = item.split("=", 1)
        *path, name = key.split(".")
        obj: Any = cfg
        for part in path:
            if not is_dataclass(obj) or part not in {f.name for f in fields(obj)}:
                raise ConfigError(f"unknown config section {part!r} in {item!r}")
            obj = getattr(obj, part)
        if not is_dataclass(obj) or name not in {f.name for f in fields(obj)}:
            raise ConfigError(f"unknown option {key!r}")
        if key == "objective.name":
            raise ConfigError("choose the objective with --objective, not objective.name")
        hint = typing.get_type_hints(type(obj))[name]
        if is_dataclass(getattr(obj, name)):
            raise ConfigError(f"{key!r} is a section; set one of its keys")
        setattr(obj, name, parse_value(raw, hint, key))
    return cfg


def _origin(hint) -> Any:
    return typing.get_origin(hint) or hint


def parse_value(raw: str, hint, key: str) -> Any:
    """Parse `raw` as the annotated type: bool, int, float, str, tuples and lists of those
    (comma-separated), optionally `| None` (the word `none`)."""
    args = typing.get_args(hint)
    if _origin(hint) in (typing.Union, types.UnionType):
        if type(None) in args and raw.lower() == "none":
            return None
        (hint,) = [a for a in args if a is not type(None)]
        args = typing.get_args(hint)
    kind = _origin(hint)
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind in (int, float, str):
            return kind(raw)
        if kind in (tuple, list):
            item = args[0] if args else str
            values = [parse_value(x, item, key) for x in raw.split(",") if x]
            if kind is tuple and args and args[-1] is not Ellipsis and len(values) != len(args):
                raise ValueError
            return tuple(values) if kind is tuple else values
    except ValueError:
        raise ConfigError(f"bad value {raw!r} for {key}") from None
    return raw
