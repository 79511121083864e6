"""BART (Lewis et al., arXiv:1910.13461): the encoder reads the text broken by any combination
of its five noises (corrupt/seq2seq.py: token masking, token deletion, text infilling, sentence
permutation, document rotation), the decoder writes the whole original text.

The defaults are the paper's large model: text infilling of 30% of the tokens in Poisson(3)
spans, 10% of the masks replaced by random tokens, every sentence permuted. Table 1's single
noises are settings of the same objective, e.g. token deletion:
`--set objective.mask_prob=0 --set objective.permute=0 --set objective.delete_prob=0.3`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from selfsup.corrupt.seq2seq import BartNoise, bart_noise
from selfsup.data.tokenizer import Tokenizer
from selfsup.errors import ConfigError
from selfsup.objectives.seq2seq import (
    Seq2SeqExample,
    Seq2SeqObjective,
    ids_tensor,
    torch_generator,
    wrap,
)


@dataclass
class BartObjectiveConfig:
    """BART's noise (corrupt/seq2seq.py BartNoise), as the objective section of a run."""

    name: str = "bart"
    mask_prob: float = 0.3  # share of tokens masked (0: none)
    infill: bool = True  # Poisson spans, each one [MASK] (text infilling); False: token masking
    poisson_lambda: float = 3.0
    random_prob: float = 0.1  # share of the masks that are a random token instead
    delete_prob: float = 0.0
    permute: float = 1.0  # share of the sentences permuted
    rotate: float = 0.0  # probability of rotating the document

    def validate(self) -> None:
        for key in ("mask_prob", "random_prob", "delete_prob", "permute", "rotate"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"objective.{key} must be in [0, 1], got {getattr(self, key)}")
        if self.mask_prob + self.delete_prob >= 1.0:
            raise ConfigError("objective.mask_prob + objective.delete_prob must be < 1")
        if self.poisson_lambda <= 0:
            raise ConfigError(f"objective.poisson_lambda must be > 0, got {self.poisson_lambda}")

    def noise(self) -> BartNoise:
        return BartNoise(**{k: v for k, v in asdict(self).items() if k != "name"})


class BART(Seq2SeqObjective):
    Config = BartObjectiveConfig

    def example(self, sentences: list[np.ndarray], rng: np.random.Generator, tok: Tokenizer,
                max_len: int) -> Seq2SeqExample:  # fmt: skip
        sents = ids_tensor(sentences)
        noisy, info = bart_noise(sents, torch_generator(rng), self.cfg.noise(), tok.mask_id,
                                 tok.random_ids())  # fmt: skip
        text = [t for s in sentences for t in s.tolist()][: max_len - 1]
        target = [*text, tok.sep_id]
        info |= {"text_len": sum(len(s) for s in sentences), "sentences": len(sentences)}
        return Seq2SeqExample(wrap(tok, noisy.tolist(), max_len), [tok.cls_id, *text], target,
                              info=info)  # fmt: skip
