"""wav2vec (Schneider et al., arXiv:1904.05862): the conv encoder of CPC (with group norm) turns
the waveform into frames z_i, a causal conv context network turns them into c_i, and for each
step k = 1..12 an affine step h_k(c_i) = W_k c_i + b_k is trained to tell z_{i+k} from 10
distractors of the same utterance by the binary loss of eq. 1:

    L_k = - sum_i [ log sigma(z_{i+k}^T h_k(c_i)) + lambda E_{z~} log sigma(-z~^T h_k(c_i)) ]

with lambda = 10, the number of negatives (the expectation estimated by their mean). The
machinery (negatives drawn by the data pipeline, one set per target frame shared by the steps;
anchors; scores) is CPC's `FuturePrediction` (objectives/cpc.py). The distractors come from the
anchor's own utterance only, so the loss is a sum of per-utterance terms: not batch-level, and
under torchrun no rank needs another's frames.

Returns sums over the (i, k) anchors: `contrastive_loss` (the binary loss, summed over the
steps as the paper's sum over k and i; the loop divides it by the anchors, so it is the mean per
anchor) and `contrastive_acc`; in evaluation the context's `embedding_std` and
`effective_rank`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from selfsup.encoders.conv_context import ConvContextConfig, preset_shape
from selfsup.errors import ConfigError
from selfsup.losses import wav2vec_binary_scores
from selfsup.objectives.cpc import FuturePrediction, check_steps_and_negatives


@dataclass
class Wav2VecConfig:
    """wav2vec's task (arXiv:1904.05862, 3 and 4.3): k = 1..12 steps, 10 negatives from the
    same utterance, lambda = the number of negatives (`negative_weight` 0: that default)."""

    name: str = "wav2vec"
    steps: int = 12
    same_negatives: int = 10  # all from the same audio, as the paper
    negative_weight: float = 0.0  # lambda; 0: the number of negatives, as the paper

    def validate(self) -> None:
        check_steps_and_negatives(self)
        if self.negative_weight < 0:
            raise ConfigError(f"objective.negative_weight must be >= 0, got "
                              f"{self.negative_weight}")  # fmt: skip


class Wav2Vec(FuturePrediction):
    """wav2vec: the module docstring."""

    Config = Wav2VecConfig
    predictor_bias = True  # h_k is affine

    @classmethod
    def default_model(cls, model: ConvContextConfig) -> ConvContextConfig:
        """wav2vec's layout at the preset's width: group norm in the encoder, the causal conv
        context (the preset's layers; the paper's 9: --set model.n_layers=9)."""
        return preset_shape(replace(model, context="conv", conv_norm="group"))

    def contrast(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight = self.cfg.negative_weight or None  # None: K
        return wav2vec_binary_scores(scores, weight)
