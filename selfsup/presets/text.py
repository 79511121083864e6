"""Text presets: BERT shapes and their training defaults, written in Python.

Shapes follow Turc et al., "Well-Read Students Learn Better" (arXiv:1908.08962): the BERT
miniatures (L layers, H hidden, H/64 heads, 4H feed-forward), and BERT-base (arXiv:1810.04805).
"""

from __future__ import annotations

from selfsup.config import RunConfig, TrainConfig
from selfsup.encoders.text import BertConfig


def _bert(n_layers: int, dim: int) -> BertConfig:
    # Pretraining runs without dropout: on short budgets it trains faster and no worse (Cramming,
    # arXiv:2212.14034), and CPU dropout is costly. Fine-tuning sets its own dropout.
    return BertConfig(
        dim=dim, n_layers=n_layers, n_heads=max(1, dim // 64), ffn_dim=4 * dim,
        dropout=0.0, attn_dropout=0.0,
    )  # fmt: skip


MODELS: dict[str, BertConfig] = {
    "tiny": _bert(2, 128),  # BERT-Tiny
    "mini": _bert(4, 256),  # BERT-Mini
    "small": _bert(4, 512),  # BERT-Small
    "medium": _bert(8, 512),  # BERT-Medium
    "base": _bert(12, 768),  # BERT-Base
}

# Training defaults per preset: small models take larger learning rates. `tiny` is tuned so that
# `selfsup pretrain` with no arguments finishes in a few minutes on 2 CPU cores.
TRAIN: dict[str, TrainConfig] = {
    "tiny": TrainConfig(steps=1500, batch_size=32, lr=2e-3, warmup_steps=100, save_every=500),
    "mini": TrainConfig(steps=10000, batch_size=64, lr=1e-3, warmup_steps=500),
    "small": TrainConfig(steps=20000, batch_size=128, lr=5e-4, warmup_steps=1000),
    "medium": TrainConfig(steps=50000, batch_size=128, lr=3e-4, warmup_steps=2000),
    "base": TrainConfig(steps=100000, batch_size=256, lr=1e-4, warmup_steps=10000),
}


def text_preset(name: str) -> RunConfig:
    from copy import deepcopy

    return RunConfig(preset=name, model=deepcopy(MODELS[name]), train=deepcopy(TRAIN[name]))
