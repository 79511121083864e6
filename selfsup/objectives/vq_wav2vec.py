"""vq-wav2vec (Baevski et al., arXiv:1910.05453): wav2vec with a quantizer between the conv
encoder and the context network. Each encoder frame z is replaced by z^, a product of G = 2
entries out of V = 320 per group; the context network reads the z^ sequence and wav2vec's
binary loss (objectives/wav2vec.py) is computed on z^: for k = 1..8 steps (the paper's K = 8),
h_k(c_i) tells z^_{i+k} from 10 distractors z^ of the same utterance. The codes are the
discrete units that `selfsup units` writes and a BERT then trains on (selfsup/units.py).

The quantizer is the model's (model.quantizer, layers/quantize.py):

    gumbel  a linear layer gives G x V logits per frame; a Gumbel-softmax picks one entry per
            group, hard forward, soft gradient (straight-through). The temperature is annealed
            from 2 to 0.5: linearly over objective.anneal_steps optimizer steps (the paper:
            the first 70% of training), or with anneal_steps=0 (the default) by
            max(0.5, 2 * 0.999995^step), the schedule of the paper's implementation. The step
            is a buffer advanced in after_step(), so a resumed run continues the schedule.
            The noise is drawn per utterance from a seed the data pipeline draws with each
            batch (NOISE_SEED), so batch k stays a pure function of (seed, k).
    kmeans  each group's part of z is replaced by its nearest entry; the loss adds
            ||sg(z) - z^||^2 + gamma ||z - sg(z^)||^2 (eq. 2; gamma = 0.25), here as a mean
            over the quantized values (frames x channels, the scale of the implementation, so
            the term stays comparable to the contrastive loss at any width) times vq_weight.

Returns, besides wav2vec's terms, the codebook monitors of the whole batch's real frames:
`code_perplexity` (exp of the entropy of each group's code histogram, averaged over groups: V
when every entry is used equally, 1 when one is) and `codes_in_use` (entries used at least once,
averaged over groups), per batch; `temperature` (gumbel); `vq_loss`, `codebook_loss` and
`commitment_loss` (kmeans, over the quantized values).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from selfsup.encoders.conv_context import ConvContextConfig
from selfsup.errors import ConfigError
from selfsup.layers.quantize import GumbelQuantizer, code_perplexity, gumbel_temperature
from selfsup.objectives.cpc import check_steps_and_negatives
from selfsup.objectives.wav2vec import Wav2Vec


@dataclass
class VQWav2VecConfig:
    """vq-wav2vec's training (arXiv:1910.05453, 4.2): wav2vec's loss over K = 8 steps with 10
    negatives from the same utterance; Gumbel temperature from 2 to 0.5; k-means commitment
    weight gamma = 0.25."""

    name: str = "vq-wav2vec"
    steps: int = 8
    same_negatives: int = 10
    negative_weight: float = 0.0  # lambda; 0: the number of negatives
    temperature_start: float = 2.0  # Gumbel-softmax temperature ...
    temperature_end: float = 0.5
    anneal_steps: int = 0  # ... linear over these optimizer steps; 0: exponential decay
    temperature_decay: float = 0.999995  # per step, with anneal_steps=0
    commitment_weight: float = 0.25  # gamma (kmeans)
    vq_weight: float = 1.0  # weight of the k-means terms in the loss

    def validate(self) -> None:
        check_steps_and_negatives(self)
        if self.negative_weight < 0:
            raise ConfigError(f"objective.negative_weight must be >= 0, got "
                              f"{self.negative_weight}")  # fmt: skip
        if not 0 < self.temperature_end <= self.temperature_start:
            raise ConfigError("objective.temperature_end must be in (0, temperature_start]")
        if self.anneal_steps < 0 or not 0 < self.temperature_decay <= 1:
            raise ConfigError("objective.anneal_steps must be >= 0 and temperature_decay in (0, 1]")
        if self.commitment_weight < 0 or self.vq_weight < 0:
            raise ConfigError("objective.commitment_weight and vq_weight must be >= 0")


def annealed_temperature(cfg: VQWav2VecConfig, step: int) -> float:
    """The Gumbel temperature after `step` optimizer steps (the module docstring)."""
    start, end = cfg.temperature_start, cfg.temperature_end
    if cfg.anneal_steps:
        return start + (end - start) * min(1.0, step / cfg.anneal_steps)
    return gumbel_temperature(step, start, end, cfg.temperature_decay)


class VQWav2Vec(Wav2Vec):
    """vq-wav2vec: the module docstring."""

    Config = VQWav2VecConfig
    target = "quantized"
    quantized = True

    def __init__(self, encoder: torch.nn.Module, cfg: VQWav2VecConfig):
        super().__init__(encoder, cfg)
        self.gumbel = isinstance(encoder.quantizer, GumbelQuantizer)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # optimizer steps done
        extra = {"code_perplexity": "batches", "codes_in_use": "batches"}
        if self.gumbel:
            extra["temperature"] = "batches"
        else:
            extra |= {"vq_loss": "vq_values", "codebook_loss": "vq_values",
                      "commitment_loss": "vq_values"}  # fmt: skip
            self.loss_terms = (*self.loss_terms, "vq_loss")
        self.terms = {**self.terms, **extra}

    @classmethod
    def default_model(cls, model: ConvContextConfig) -> ConvContextConfig:
        """wav2vec's layout at the preset's width with the Gumbel quantizer (G = 2, V = 320)."""
        return replace(super().default_model(model), quantizer="gumbel")

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        counts = super().counts(batch)
        return {**counts, "vq_values": counts["frames"] * self.encoder.z_dim}

    def after_step(self) -> None:
        self.step += 1

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.gumbel:
            self.encoder.quantizer.temperature = annealed_temperature(self.cfg, int(self.step))
        out = self.encode(batch)
        loss, hits = self.contrast(self.scores(out, batch))
        result = {"contrastive_loss": loss, "contrastive_acc": hits, **self.monitors(out)}
        if self.gumbel:
            t = self.encoder.quantizer.temperature
            result["temperature"] = torch.tensor(t, device=loss.device)
        else:
            codebook, commitment = out["codebook_loss"], out["commitment_loss"]
            w = self.cfg.vq_weight
            result |= {"vq_loss": w * (codebook + self.cfg.commitment_weight * commitment),
                       "codebook_loss": codebook.detach(),
                       "commitment_loss": commitment.detach()}  # fmt: skip
        return result

    @torch.no_grad()
    def monitors(self, out: dict) -> dict[str, torch.Tensor]:
        codes = self.whole_batch(out["codes"].float()).long()  # (B_all, T', G)
        pad = self.whole_batch(out["padding_mask"].float()) > 0
        one_hot = F.one_hot(codes[~pad], self.encoder.quantizer.n_entries)  # (N, G, V)
        return {
            **super().monitors(out),
            "code_perplexity": code_perplexity(one_hot).mean(),
            "codes_in_use": (one_hot.sum(0) > 0).sum(-1).float().mean(),
        }
