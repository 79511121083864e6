"""Masked language modelling on DNA (or protein) tokens: BERT's MLM objective and encoder
(objectives/mlm.py), fed by the sequence pipeline (data/dna.py) and masked by a k-mer aware
scheme (corrupt/dna.py): `leakfree` (the default), DNABERT's `dnabert` (arXiv:2008.07200), or
BERT's token masking `bert`. `--modality dna --objective mlm` resolves to this objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfsup.corrupt.dna import SCHEMES, SequenceMasker
from selfsup.data.dna import DNADataConfig
from selfsup.data.dna_tokenizer import SequenceTokenizer
from selfsup.errors import ConfigError
from selfsup.objectives.mlm import MLM, MLMConfig


@dataclass
class DNAMLMConfig(MLMConfig):
    """MLM over sequence tokens. mask_prob is the share of tokens masked (about: spans may
    overlap); replace_prob and random_prob apply to the dnabert and bert schemes (leakfree masks
    every span token with [MASK])."""

    name: str = "dna-mlm"
    scheme: str = "leakfree"  # leakfree | dnabert | bert (corrupt/dna.py)
    span_tokens: int = 0  # leakfree: tokens per span, at least 2k-1 (0: 2k-1)

    def validate(self) -> None:
        super().validate()
        if self.scheme not in SCHEMES:
            raise ConfigError(
                f"unknown objective.scheme {self.scheme!r}; choose from {', '.join(SCHEMES)}"
            )
        if self.whole_word or self.span:
            raise ConfigError("--whole-word and --span are text masking; DNA tokens are masked "
                              "by objective.scheme (leakfree, dnabert, bert)")  # fmt: skip
        if self.span_tokens < 0:
            raise ConfigError(f"objective.span_tokens must be >= 0, got {self.span_tokens}")


class DNAMLM(MLM):
    """BERT's MLM on sequence windows; `masker(tokenizer)` is its corruption of a batch."""

    Config = DNAMLMConfig
    modality = "dna"
    data_config = DNADataConfig

    def masker(self, tok: SequenceTokenizer) -> SequenceMasker:
        special = torch.zeros(tok.vocab_size, dtype=torch.bool)
        special[tok.special_ids] = True
        c = self.cfg
        return SequenceMasker(
            special, tok.k if tok.overlap else 1, tok.mask_id, tok.random_ids(), c.scheme,
            c.mask_prob, c.replace_prob, c.random_prob, c.span_tokens,
        )  # fmt: skip
