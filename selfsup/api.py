"""The Python API: the commands as functions, and any model folder as an object.

    import selfsup

    summary = selfsup.pretrain(steps=200, out="runs/demo")          # = selfsup pretrain ...
    model = selfsup.load("runs/demo")                               # a run, HF or fine-tuned folder
    model.fill_mask("it was a dark and stormy [MASK] .")
    vectors = model.embed(["a sentence", "another one"])            # (2, D) numpy
    result = selfsup.finetune(task="classify", data="reviews.csv", init="runs/demo",
                              text_column="review", label_column="stars", out="ft/reviews")
    selfsup.load("ft/reviews").predict(["a great hotel", "never again"])

`pretrain` and `finetune` take the command's flags as keyword arguments (`--batch-size 32` is
`batch_size=32`, `--whole-word` is `whole_word=True`, repeatable flags take lists) and run the
same code as the command line, through the same parser and checks: a bad setting raises
`selfsup.ConfigError` with the message the command would print.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selfsup.errors import ConfigError
from selfsup.models import Loaded, load_model


def _argv(command: str, flags: dict[str, Any], positional: tuple = ()) -> list[str]:
    argv = [command, *map(str, positional)]
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, list | tuple):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def _run(command: str, flags: dict[str, Any], positional: tuple = ()):
    from selfsup.cli import COMMANDS, build_parser

    args = build_parser().parse_args(_argv(command, flags, positional))
    return COMMANDS[command](args)


def pretrain(**flags: Any) -> dict:
    """`selfsup pretrain` with these flags (e.g. `data=["corpus.txt"], preset="mini",
    steps=2000, out="runs/mini"`, `resume="runs/mini"`); returns the run's summary (held-out
    metrics, minutes, corpus statistics)."""
    return _run("pretrain", flags)


def finetune(**flags: Any) -> dict:
    """`selfsup finetune` with these flags (`task`, `data`, `init`, `out` required); returns
    {"dev": metrics, "history": [...], "kept": ..., ...}."""
    return _run("finetune", flags)


@dataclass
class Model:
    """A loaded model folder. `encoder`, `tokenizer` and `config` are always there; a run or
    an HF folder with an MLM head can `fill_mask`, a fine-tuned folder can `predict`, every
    folder can `embed`."""

    path: Path
    loaded: Loaded

    @property
    def encoder(self):
        return self.loaded.encoder

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def config(self):
        return self.loaded.config

    @property
    def kind(self) -> str | None:
        """The fine-tuned task kind (classify, pair-classify, regress, tag, qa), else None."""
        return self._finetuned()[2]["kind"] if self.loaded.source == "finetuned" else None

    def fill_mask(self, text: str, top_k: int = 5) -> list[list[dict]]:
        """For each [MASK] of `text`, the `top_k` likeliest tokens: [{"token", "prob"}, ...]."""
        from selfsup.fill_mask import fill_mask

        return fill_mask(self.loaded, text, top_k)

    def embed(
        self,
        sentences: list[str],
        pooling: str = "mean",
        normalize: bool = False,
        precision: str = "fp32",
    ) -> np.ndarray | list[np.ndarray]:
        """(N, D) float32 sentence vectors (mean over real tokens, or `cls`), or with
        `pooling="tokens"` one (T_i, D) array per sentence. `precision` fp32 | bf16 | auto."""
        from selfsup.embed import embed_sentences

        if isinstance(sentences, str):
            raise ConfigError("embed takes a list of sentences, not one string")
        return embed_sentences(
            self.loaded.encoder, self.loaded.tokenizer, list(sentences), pooling,
            normalize=normalize, bf16=self._bf16(precision),
        )  # fmt: skip

    def predict(
        self,
        inputs: list,
        top_k: int | None = None,
        batch_size: int = 64,
        precision: str = "fp32",
    ) -> list:
        """One prediction per input, in order, as `selfsup predict` writes them (its schema):
        texts (classify, regress), (text, text_pair) pairs (pair-classify), texts whose
        whitespace-separated words are tagged or lists of words (tag), {"question", "context"}
        dicts (qa). `precision` fp32 | bf16 | auto."""
        from selfsup.data.tasks import QAExample, TaggedSentence, TextExample
        from selfsup.label import predict_rows

        net, tok, config = self._finetuned()
        kind = config["kind"]
        examples = []
        for i, x in enumerate(inputs):
            if kind == "qa":
                if not isinstance(x, dict) or not {"question", "context"} <= set(x):
                    raise ConfigError(f"input {i}: a qa model takes {{'question', 'context'}}")
                examples.append(QAExample(str(x.get("id", i)), x["context"], x["question"], []))
            elif kind == "tag":
                words = x.split() if isinstance(x, str) else list(x)
                examples.append(TaggedSentence(words, []))
            elif kind == "pair-classify":
                if not isinstance(x, list | tuple) or len(x) != 2:
                    raise ConfigError(f"input {i}: a pair-classify model takes (text, text_pair)")
                examples.append(TextExample(str(x[0]), str(x[1])))
            else:
                examples.append(TextExample(str(x)))
        rows, _ = predict_rows(net, tok, config, examples, batch_size, top_k,
                               log=lambda s: None, bf16=self._bf16(precision))  # fmt: skip
        return rows

    def _bf16(self, precision: str) -> bool:
        from selfsup.device import inference_bf16

        return inference_bf16(precision, next(self.loaded.encoder.parameters()).device)

    def _finetuned(self):
        if self.loaded.source != "finetuned":
            raise ConfigError(
                f"{self.path} is not a fine-tuned folder (run `selfsup finetune`): cannot predict"
            )
        return self.loaded.task, self.loaded.tokenizer, self.loaded.task_config


def load(path: str | os.PathLike) -> Model:
    """A selfsup run, a HuggingFace BERT folder or a `selfsup finetune` folder."""
    loaded = load_model(path)
    return Model(Path(path), loaded)


__all__ = ["Model", "finetune", "load", "pretrain"]
