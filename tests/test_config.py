"""The run config: parts owned by their modules, the objective section chosen by name, overrides
that walk the dataclasses with typed values, and run folders written before this layout."""

from __future__ import annotations

import json

import pytest

from selfsup.config import RunConfig, apply_overrides, parse_value
from selfsup.errors import ConfigError
from selfsup.objectives.mlm import MLMConfig
from selfsup.presets import preset

# config.json of a run written before objectives owned their config (commit 3637f2f): the
# objective's name in train, masking in its own section, the tokenizer size in data.
OLD = {
    "format": "selfsup-run",
    "preset": "tiny",
    "model": {"vocab_size": 300, "dim": 128, "n_layers": 2, "n_heads": 2, "ffn_dim": 512,
              "max_len": 64, "type_vocab_size": 2, "dropout": 0.0, "attn_dropout": 0.0,
              "norm_eps": 1e-12, "pad_id": 0},
    "mask": {"mask_prob": 0.2, "replace_prob": 0.8, "random_prob": 0.1, "whole_word": True,
             "span": False, "span_max": 10, "span_p": 0.2},
    "data": {"paths": [], "max_len": 64, "lowercase": True, "vocab_size": 8192,
             "tokenizer": None, "text_field": "text", "pack": False, "heldout_every": 50,
             "heldout_max": 512, "num_workers": 0, "cache_dir": None},
    "train": {"objective": "mlm+sop", "steps": 40, "batch_size": 32, "grad_accum": 1,
              "lr": 0.002, "weight_decay": 0.01, "betas": [0.9, 0.98], "eps": 1e-06,
              "warmup_steps": 100, "schedule": "linear", "min_lr_ratio": 0.0, "clip_norm": 1.0,
              "bf16": False, "seed": 0, "save_every": 500, "eval_every": 250, "log_every": 10,
              "threads": 0, "device": "auto", "compile": False, "fsdp": False},
}  # fmt: skip


def test_old_run_config_is_upgraded():
    cfg = RunConfig.from_dict({k: v for k, v in OLD.items() if k != "format"})
    assert isinstance(cfg.objective, MLMConfig)
    assert cfg.objective.name == "mlm+sop"
    assert cfg.objective.mask_prob == 0.2 and cfg.objective.whole_word
    assert cfg.model.vocab_size == 300 and cfg.train.steps == 40
    assert cfg.train.betas == (0.9, 0.98)  # a tuple again, as AdamW takes it
    assert not hasattr(cfg.train, "objective") and not hasattr(cfg.data, "vocab_size")
    assert cfg.train.precision == "fp32"  # "bf16": false
    cfg.validate()


@pytest.mark.parametrize("bf16, precision", [(True, "bf16"), (False, "fp32")])
def test_a_saved_bf16_flag_keeps_its_precision(bf16, precision):
    """Run configs written before train.precision said `train.bf16: true/false`."""
    d = preset("tiny").to_dict()
    train = {k: v for k, v in d["train"].items() if k != "precision"}
    cfg = RunConfig.from_dict({**d, "train": {**train, "bf16": bf16}})
    assert cfg.train.precision == precision and not hasattr(cfg.train, "bf16")


def test_precision_is_a_choice():
    cfg = preset("tiny")
    assert cfg.train.precision == "auto"
    cfg.train.precision = "fp16"
    with pytest.raises(ConfigError, match="unknown precision 'fp16'; use auto, bf16, fp32"):
        cfg.validate()


def test_round_trip_through_json():
    cfg = preset("mini")
    cfg.set_objective("mlm")
    apply_overrides(cfg, ["objective.span=true", "train.betas=0.9,0.95", "data.pack=1"])
    back = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert json.loads(json.dumps(cfg.to_dict()))["objective"]["name"] == "mlm"


def test_unknown_keys_are_refused_in_every_section():
    d = preset("tiny").to_dict()
    for section in ("model", "objective", "data", "train"):
        bad = {**d, section: {**d[section], "no_such_key": 1}}
        with pytest.raises(ConfigError, match=f"unknown {section} keys: no_such_key"):
            RunConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="unknown objective 'nope'"):
        RunConfig.from_dict({**d, "objective": {"name": "nope"}})


def test_overrides_walk_the_dataclasses_with_typed_values():
    cfg = apply_overrides(preset("tiny"), [
        "model.dim=64", "model.n_heads=4", "objective.random_prob=0", "objective.whole_word=yes",
        "train.lr=3e-4", "train.betas=0.8,0.9", "data.tokenizer=none", "data.paths=a.txt,b.txt",
        "data.cache_dir=/tmp/x", "train.schedule=cosine",
    ])  # fmt: skip
    assert cfg.model.dim == 64 and isinstance(cfg.model.dim, int)
    assert cfg.objective.random_prob == 0.0 and isinstance(cfg.objective.random_prob, float)
    assert cfg.objective.whole_word is True
    assert cfg.train.lr == 3e-4 and cfg.train.betas == (0.8, 0.9)
    assert cfg.data.tokenizer is None and cfg.data.paths == ["a.txt", "b.txt"]
    assert cfg.data.cache_dir == "/tmp/x" and cfg.train.schedule == "cosine"


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("model.nope=1", "unknown option 'model.nope'"),
        ("nope.dim=1", "unknown config section 'nope'"),
        ("model.dim=wide", "bad value 'wide' for model.dim"),
        ("objective.whole_word=maybe", "bad value 'maybe'"),
        ("train.betas=0.9", "bad value '0.9' for train.betas"),
        ("objective.name=mlm", "--objective"),
        ("model", "section.key=value"),
        ("model.dim.x=1", "unknown option"),
    ],
)
def test_bad_overrides_are_one_line_errors(item, says):
    with pytest.raises(ConfigError, match=says.replace(".", r"\.").replace("'", "'")):
        apply_overrides(preset("tiny"), [item])


def test_parse_value_by_annotation():
    assert parse_value("7", int, "k") == 7
    assert parse_value("none", int | None, "k") is None
    assert parse_value("3", int | None, "k") == 3
    assert parse_value("1,2", tuple[float, float], "k") == (1.0, 2.0)
    assert parse_value("x,y", list[str], "k") == ["x", "y"]


def test_switching_objective_keeps_shared_settings():
    cfg = preset("tiny")
    cfg.objective.mask_prob = 0.3
    cfg.set_objective("mlm+sop")
    assert cfg.objective.name == "mlm+sop" and cfg.objective.mask_prob == 0.3


def test_validate_checks_each_part():
    cfg = preset("tiny")
    cfg.objective.mask_prob = 1.5
    with pytest.raises(ConfigError, match="mask_prob"):
        cfg.validate()
    cfg = preset("tiny")
    cfg.model.n_heads = 3
    with pytest.raises(ConfigError, match="not divisible"):
        cfg.validate()


def test_batch_level_objective_refuses_grad_accum_before_the_run(monkeypatch):
    from toys import ToyContrastive

    from selfsup.objectives import OBJECTIVES

    class Contrastive(ToyContrastive):
        Config = MLMConfig

    monkeypatch.setitem(OBJECTIVES, "toy-contrastive", Contrastive)
    cfg = preset("tiny")
    cfg.set_objective("toy-contrastive")
    cfg.validate()
    cfg.train.grad_accum = 2
    with pytest.raises(ConfigError, match="batch-level objective"):
        cfg.validate()
