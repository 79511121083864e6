"""Where a text run's documents come from and how its batches draw them.

    source = text_source(cfg.data.paths)
    tok = source.cached_tokenizer(cfg.data, vocab_size, encoding, log)
    corpus = source.corpus(tok, cfg.data, encoding, log)
    batches, stats = source.batches(builder, corrupt, chunks, train_ids, batch_size, seed,
                                    cfg.data, log)

`PlainText`: files of one kind (the default), one cached corpus, sequences shuffled uniformly.
LANG=PATH files (`en=a.txt zh=b.txt`) give data/multilingual.py's `Languages`: one corpus per
language joined, one tokenizer over every script, each language drawn with XLM's smoothed
probability. The pretraining recipe asks the source and never asks which one it has.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from selfsup.data import multilingual
from selfsup.data.cache import build_once, cache_key, default_cache_dir
from selfsup.data.text import (
    Corpus,
    PretrainBatches,
    TextDataConfig,
    build_corpus,
    read_paragraphs,
    resolve_files,
)
from selfsup.data.tokenizer import Tokenizer, load_tokenizer, train_tokenizer


class PlainText:
    """Text files of one corpus (the module docstring)."""

    def __init__(self, paths: Iterable[str]):
        self.paths = list(paths)

    def train_tokenizer(
        self, vocab_size: int, lowercase: bool, text_field: str, encoding: str, alpha: float
    ) -> Tokenizer:
        """A WordPiece trained on the files (`alpha` is for language sampling: unused)."""
        return train_tokenizer(read_paragraphs(self.paths, text_field, encoding), vocab_size,
                               lowercase)  # fmt: skip

    def cached_tokenizer(
        self, d: TextDataConfig, vocab_size: int, encoding: str, log=print
    ) -> Tokenizer:
        """The run's WordPiece, cached by the files and settings."""
        key = cache_key(
            resolve_files(self.paths), vocab_size, d.lowercase, d.text_field, encoding, "v2"
        )  # fmt: skip  (v2: the deterministic trainer)
        folder = Path(d.cache_dir or default_cache_dir()) / "tokenizer" / key

        def build(tmp: Path) -> None:
            t0 = time.perf_counter()
            tok = self.train_tokenizer(vocab_size, d.lowercase, d.text_field, encoding, 0.0)
            tok.save(tmp)
            log(f"tokenizer: trained WordPiece, {tok.vocab_size} tokens, in "
                f"{time.perf_counter() - t0:.1f}s")  # fmt: skip

        if build_once(folder, build, "tokenizer.json"):
            log(f"tokenizer: using cached {folder}")
        return load_tokenizer(folder)

    def corpus(self, tok: Tokenizer, d: TextDataConfig, encoding: str, log=print) -> Corpus:
        return build_corpus(self.paths, tok, d, encoding, log=log)

    def batches(
        self, builder, corrupt, chunks: np.ndarray, train_ids: np.ndarray, batch_size: int,
        seed: int, d: TextDataConfig, log=print,
    ) -> tuple[PretrainBatches, dict]:  # fmt: skip
        """The training batches and the stats they add to the run's (none)."""
        return PretrainBatches(builder, corrupt, train_ids, batch_size, seed, pack=d.pack), {}


def text_source(paths: Iterable[str]) -> PlainText | multilingual.Languages:
    """`Languages` for LANG=PATH data, `PlainText` otherwise."""
    paths = list(paths)
    langs = multilingual.language_paths(paths)
    return PlainText(paths) if langs is None else multilingual.Languages(langs)
