"""MASS (Song et al., arXiv:1905.02450): one contiguous fragment of about half of each segment
is masked in the encoder's input (80% [MASK], 10% random, 10% unchanged); the decoder writes
the fragment only, fed the fragment shifted right at the fragment's own positions, so it must
lean on the encoder for everything outside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from selfsup.corrupt.seq2seq import mass_fragment
from selfsup.data.tokenizer import Tokenizer
from selfsup.errors import ConfigError
from selfsup.objectives.seq2seq import (
    GenerationPlan,
    Seq2SeqExample,
    Seq2SeqObjective,
    torch_generator,
    wrap,
)


@dataclass
class MassConfig:
    name: str = "mass"
    share: float = 0.5  # the fragment's share of the segment
    random_prob: float = 0.1  # of the fragment's tokens in the source: random tokens
    keep_prob: float = 0.1  # unchanged; the rest are [MASK]

    def validate(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise ConfigError(f"objective.share must be in (0, 1], got {self.share}")
        if self.random_prob < 0 or self.keep_prob < 0 or self.random_prob + self.keep_prob >= 1:
            raise ConfigError("objective.random_prob and keep_prob must be >= 0, their sum < 1")


class MASS(Seq2SeqObjective):
    Config = MassConfig

    def example(self, sentences: list[np.ndarray], rng: np.random.Generator, tok: Tokenizer,
                max_len: int) -> Seq2SeqExample:  # fmt: skip
        text = np.concatenate(sentences)[: max_len - 2]
        f = mass_fragment(torch.from_numpy(text.astype(np.int64)), torch_generator(rng),
                          tok.mask_id, tok.cls_id, self.cfg.share, tok.random_ids(),
                          self.cfg.random_prob, self.cfg.keep_prob)  # fmt: skip
        # the fragment's positions in the encoder's input ([CLS] first), for the decoder too
        positions = list(range(f.start + 1, f.start + 1 + len(f.target)))
        hidden = f.source[f.start : f.start + len(f.target)]
        info = {"text_len": len(text), "fragment": len(f.target),
                "masked": int((hidden == tok.mask_id).sum()),
                "unchanged": int((hidden == f.target).sum())}  # fmt: skip
        return Seq2SeqExample(wrap(tok, f.source.tolist(), max_len), f.decoder_input.tolist(),
                              f.target.tolist(), positions, info)  # fmt: skip

    def _fragment(self, tok: Tokenizer, source: list[int]) -> tuple[int, int]:
        masks = [i for i, t in enumerate(source) if t == tok.mask_id]
        if not masks:
            raise ConfigError("a MASS model restores a run of [MASK]s: the text has none")
        return masks[0], masks[-1] + 1

    def generation_plan(self, tok: Tokenizer, source: list[int]) -> GenerationPlan:
        """The fragment from its first [MASK] to its last, at its positions, from the token
        before it, exactly as many tokens as it spans (MASS writes no EOS)."""
        start, end = self._fragment(tok, source)
        return GenerationPlan(source[start - 1], start, end - start, eos=False)

    def restore(self, tok: Tokenizer, source: list[int], written: list[int]) -> list[int]:
        """The input with the fragment written back in."""
        start, end = self._fragment(tok, source)
        return [*source[1:start], *written, *source[end:-1]]
