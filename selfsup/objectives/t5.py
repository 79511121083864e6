"""T5's span corruption (Raffel et al., arXiv:1910.10683, section 3.1.4): 15% of the tokens,
in spans of mean length 3, are each replaced in the input by one sentinel, numbered in order;
the target is every sentinel followed by the span it hides, then EOS. The sentinels (100 by
default, as T5) join the vocabulary before the model is built.

Segments are the raw length whose corrupted input fills the model's sequence exactly (T5's
input/target length computation), cut from each document's running text across sentence ends
as T5 does (data.text.make_token_chunks): every segment but a document's last needs no padding.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from selfsup.corrupt.seq2seq import t5_lengths, t5_noise_mask, t5_spans
from selfsup.data.tokenizer import Tokenizer
from selfsup.errors import ConfigError
from selfsup.objectives.seq2seq import (
    GenerationPlan,
    Seq2SeqExample,
    Seq2SeqObjective,
    torch_generator,
    wrap,
)


@functools.cache
def _raw_len(input_length: int, density: float, mean_span: float) -> int:
    return t5_lengths(input_length, density, mean_span)[0]


def sentinel(k: int) -> str:
    return f"<extra_id_{k}>"


@dataclass
class T5Config:
    name: str = "t5"
    noise_density: float = 0.15
    mean_span: float = 3.0
    sentinels: int = 100

    def validate(self) -> None:
        if not 0.0 < self.noise_density < 1.0:
            raise ConfigError(
                f"objective.noise_density must be in (0, 1), got {self.noise_density}"
            )
        if self.mean_span < 1:
            raise ConfigError(f"objective.mean_span must be >= 1, got {self.mean_span}")
        if self.sentinels < 1:
            raise ConfigError(f"objective.sentinels must be >= 1, got {self.sentinels}")


class T5(Seq2SeqObjective):
    Config = T5Config
    cut_sentences = True  # T5 splits running text into equal pieces, not at sentence ends

    @classmethod
    def extra_tokens(cls, cfg: T5Config) -> list[str]:
        return [sentinel(k) for k in range(cfg.sentinels)]

    def segment_len(self, max_len: int) -> int:
        # [CLS] + corrupted input + [SEP] = max_len for a full segment
        return _raw_len(max_len - 1, self.cfg.noise_density, self.cfg.mean_span)

    def example(self, sentences: list[np.ndarray], rng: np.random.Generator, tok: Tokenizer,
                max_len: int) -> Seq2SeqExample:  # fmt: skip
        ids = torch.from_numpy(np.concatenate(sentences).astype(np.int64))
        ids = ids[: self.segment_len(max_len)]
        if len(ids) < 2:  # nothing to hide and keep: the text is its own target
            return Seq2SeqExample(wrap(tok, ids.tolist(), max_len), [tok.cls_id],
                                  [tok.sep_id])  # fmt: skip
        mask = t5_noise_mask(len(ids), torch_generator(rng), self.cfg.noise_density,
                             self.cfg.mean_span)  # fmt: skip
        source, target = t5_spans(ids, mask, self._sentinel_ids(tok))
        target = [*target.tolist(), tok.sep_id]
        n_spans = int((mask & ~torch.cat([torch.tensor([False]), mask[:-1]])).sum())
        info = {"text_len": len(ids), "noise": int(mask.sum()), "spans": n_spans}
        return Seq2SeqExample(wrap(tok, source.tolist(), max_len), [tok.cls_id, *target[:-1]],
                              target, info=info)  # fmt: skip

    def _sentinel_ids(self, tok: Tokenizer) -> list[int]:
        """The sentinels' ids in `tok`, looked up once per tokenizer (asked per example)."""
        cached = getattr(self, "_sentinels", None)
        if cached is None or cached[0] is not tok:
            cached = self._sentinels = (tok, tok.ids_of(self.extra_tokens(self.cfg)))
        return cached[1]

    def prepare_source(self, tok: Tokenizer, source: list[int]) -> list[int]:
        """Each run of [MASK] typed by a user becomes the next sentinel (sentinels typed as
        <extra_id_N> stay as they are)."""
        ids = self._sentinel_ids(tok)
        out, k = [], 0
        for i, t in enumerate(source):
            if t == tok.mask_id:
                if i and source[i - 1] == tok.mask_id:
                    continue
                if k >= len(ids):
                    raise ConfigError(f"more [MASK] runs than the model's {len(ids)} sentinels")
                out.append(ids[k])
                k += 1
            else:
                out.append(t)
        return out

    def generation_plan(self, tok: Tokenizer, source: list[int]) -> GenerationPlan:
        if not set(source) & set(self._sentinel_ids(tok)):
            raise ConfigError("a T5 model fills spans: the text has no [MASK] or <extra_id_N>")
        return GenerationPlan(start=tok.cls_id)

    def restore(self, tok: Tokenizer, source: list[int], written: list[int]) -> list[int]:
        """The input with each sentinel replaced by the span written after it."""
        ids = self._sentinel_ids(tok)
        spans: dict[int, list[int]] = {}
        key = None
        for t in written:
            if t in ids:
                key = t
                spans[key] = []
            elif key is not None:
                spans[key].append(t)
        return [y for t in source[1:-1] for y in (spans.get(t, []) if t in ids else [t])]
