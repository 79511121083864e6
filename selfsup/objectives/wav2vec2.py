"""wav2vec 2.0 (Baevski et al., arXiv:2006.11477): a conv encoder turns the waveform into latent
frames z_t; spans of them are masked (p = 0.065 of the frames start a span of 10) before the
Transformer, whose output c_t at each masked frame must pick the quantized latent q_t out of
Q_t, q_t and K = 100 distractors quantized from other masked frames of the same utterance
(section 3.2, eq. 3):

    L_m = -log( exp(cos(c_t, q_t) / kappa) / sum over q~ in Q_t of exp(cos(c_t, q~) / kappa) )

with kappa = 0.1. A distractor with the target's codes in every group (so the target's
vector: the paper's implementation compares the vectors, which is the same up to rounding) is
left out. q_t comes from a product Gumbel-softmax quantizer (G = 2 groups of V = 320 entries,
its temperature annealed from 2 to 0.5 by 0.999995 a step); a diversity loss L_d (weight 0.1,
eq. 4) keeps its entries in use, and an L2 penalty on the conv encoder's output (weight 10 in
the paper's implementation) keeps the features small (section 4.2). The base models' front end
normalises each channel over time (conv_norm "group"), so padding changes an utterance's
frames: the pipeline batches clips of similar length (little padding), and the "layer" front
end has no such effect.

Where things happen, so that batch k is a pure function of (seed, k) and W ranks train as one:

- the corruption (`wav2vec2_corrupt`, applied by the audio pipeline to each batch with the
  batch's generator) draws the time mask over encoder frames, each masked frame's distractors
  (by position in its utterance) and one seed per utterance for its Gumbel noise;
- the objective draws the noise from those seeds (`utterance_gumbel_noise`), never from the
  global RNG; the temperature follows the optimizer step, a buffer advanced by `after_step`
  (so a resumed run continues the schedule);
- distractors are within an utterance, so they need nothing from other ranks; the diversity
  loss and the codebook and embedding statistics are batch-level: in training each rank adds
  its sums of code probabilities (with their gradient) and moments to every other rank's
  (`distributed.gather_with_grad`), so their value is the global batch's. Gradient
  accumulation is refused (`batch_level`). In eval every rank reads whole batches
  (selfsup.train.evaluate), so nothing is gathered.

Returned sums, over the counts of the base contract: `contrastive_loss` (L_m summed over the M
masked frames, count "masked"); `diversity_loss` (diversity_weight * L_d of the whole batch,
times the rank's masked frames, count "masked": the paper's implementation weights it by the
number of masked frames in the same way, so the trained loss is L_m's mean + 0.1 L_d);
`feature_penalty` (feature_penalty_weight * the squares of the conv output on real frames,
count "conv_values": its mean). Monitors, in the log with every step and evaluation (batch-level
values, each times the rank's masked frames over "masked"): `contrastive_acc`, the masked frames
whose target scores above every distractor; `prob_perplexity`, the perplexity of the batch's
mean soft code distribution summed over groups (transformers' `codevector_perplexity`; L_d is
(G V - prob_perplexity) / (G V)); per group g, `code_perplexity_g` and `codes_in_use_g` of the
masked frames' noise-free codes (argmax); `temperature`; `embedding_std` and `effective_rank`
of the context vectors c_t of the masked frames. `warnings(metrics)` turns them into the
one-line collapse warnings of selfsup.monitors, logged by the loop at every evaluation.

Legend: B utterances, T samples, T' encoder frames, C conv channels, D model width, P the
projected width of c and q (`proj_dim`), G groups, V entries per group, K distractors,
M masked frames, N quantized frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from selfsup import distributed
from selfsup.corrupt.frames import overlapping_spans
from selfsup.data.audio_batches import AudioNeeds, WaveDataConfig
from selfsup.encoders.wav2vec2 import Wav2Vec2Config, build_wav2vec2, preset_shape
from selfsup.errors import ConfigError
from selfsup.keys import FEATURES, NEGATIVES, NOISE_SEED, PADDING_MASK, TIME_MASK
from selfsup.layers.conv_frontend import (
    conv_output_lengths,
    downsample_padding_mask,
    receptive_field,
)
from selfsup.layers.linear import Linear
from selfsup.layers.quantize import (
    GumbelQuantizer,
    code_perplexity,
    gumbel_noise,
    gumbel_temperature,
)
from selfsup.losses import (
    diversity_loss,
    feature_penalty,
    sample_negatives,
    wav2vec2_contrastive_by_utterance,
)
from selfsup.monitors import collapse_warnings, moment_stats
from selfsup.objectives.base import Objective

NEGATIVE_SOURCES = ("masked", "all")


@dataclass
class Wav2Vec2ObjectiveConfig:
    """wav2vec 2.0's pretraining task (arXiv:2006.11477, sections 3 and 4.2, and its fairseq
    base recipe): `mask_prob` 0.065 of the encoder frames start a masked span of `span` 10
    (at least `min_spans` 2 per utterance; transformers' mask_time_prob is mask_prob * span);
    `n_negatives` 100 distractors per masked frame, from the other masked frames of its
    utterance (`negatives_from` "masked", the paper's and transformers') or from all its real
    frames ("all"); cosine scores over `temperature` 0.1; a quantizer of `n_groups` 2 x
    `n_entries` 320 entries, `code_dim` 256 wide, projected with c_t to `proj_dim` 256; Gumbel
    temperature max(gumbel_end, gumbel_start * gumbel_decay ** step) = 2 -> 0.5; loss weights
    `diversity_weight` 0.1 and `feature_penalty_weight` 10 (fairseq's; the paper leaves the
    penalty's weight out, transformers has no penalty)."""

    name: str = "wav2vec2"
    mask_prob: float = 0.065  # share of the frames that start a masked span (the paper's p)
    span: int = 10
    min_spans: int = 2
    n_negatives: int = 100
    negatives_from: str = "masked"  # masked | all
    temperature: float = 0.1
    n_groups: int = 2
    n_entries: int = 320
    code_dim: int = 256
    proj_dim: int = 256
    gumbel_start: float = 2.0
    gumbel_end: float = 0.5
    gumbel_decay: float = 0.999995
    diversity_weight: float = 0.1
    feature_penalty_weight: float = 10.0

    def validate(self) -> None:
        if not 0.0 < self.mask_prob <= 1.0:
            raise ConfigError(f"objective.mask_prob must be in (0, 1], got {self.mask_prob}")
        for name in ("span", "n_negatives", "n_groups", "n_entries", "code_dim", "proj_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"objective.{name} must be a positive integer, got {value!r}")
        if self.min_spans < 0:
            raise ConfigError(f"objective.min_spans must be >= 0, got {self.min_spans}")
        if self.negatives_from not in NEGATIVE_SOURCES:
            raise ConfigError(f"objective.negatives_from {self.negatives_from!r}: choose from "
                              f"{', '.join(NEGATIVE_SOURCES)}")  # fmt: skip
        if self.code_dim % self.n_groups:
            raise ConfigError(f"objective.code_dim {self.code_dim} must be a multiple of "
                              f"n_groups {self.n_groups}")  # fmt: skip
        if not self.temperature > 0:
            raise ConfigError(f"objective.temperature must be positive, got {self.temperature}")
        if not 0 < self.gumbel_end <= self.gumbel_start or not 0 < self.gumbel_decay <= 1:
            raise ConfigError("need 0 < objective.gumbel_end <= gumbel_start and 0 < "
                              "gumbel_decay <= 1")  # fmt: skip
        if self.diversity_weight < 0 or self.feature_penalty_weight < 0:
            raise ConfigError("objective.diversity_weight and feature_penalty_weight must be >= 0")


def frame_padding_mask(padding_mask: torch.Tensor, conv_layers) -> torch.Tensor:
    """(B, T) True on padding samples -> (B, T') True on padding encoder frames, T' as the
    encoder computes it (a batch shorter than one frame's receptive field is padded to one)."""
    n = max(padding_mask.shape[1], receptive_field(conv_layers))
    return downsample_padding_mask(padding_mask, conv_layers, conv_output_lengths(n, conv_layers))


def wav2vec2_corrupt(
    cfg: Wav2Vec2ObjectiveConfig, conv_layers: tuple, batch: dict, g: torch.Generator
) -> dict:
    """wav2vec 2.0's masking of a batch of waveforms, all of it drawn from `g`: the time mask
    over the encoder frames (`overlapping_spans`), each frame's distractors (`sample_negatives`
    among the frames `negatives_from` names; stored as frames of the utterance, (B, T', K)
    int32, so a batch cut by rows keeps them) and a Gumbel-noise seed per utterance."""
    pad = batch[PADDING_MASK]  # (B, T) samples
    frame_pad = frame_padding_mask(pad, conv_layers)  # (B, T')
    B, T = frame_pad.shape
    mask = overlapping_spans(frame_pad, g, cfg.mask_prob, cfg.span, cfg.min_spans)
    sources = mask if cfg.negatives_from == "masked" else ~frame_pad
    flat = sample_negatives(sources, cfg.n_negatives, g)  # (N, K) into the B * T' frames
    negatives = torch.zeros(B, T, cfg.n_negatives, dtype=torch.int32)
    negatives[sources] = (flat % T).int()
    seeds = torch.randint(0, 2**62, (B,), generator=g)
    return {**batch, TIME_MASK: mask, NEGATIVES: negatives, NOISE_SEED: seeds}


def utterance_gumbel_noise(
    seeds: torch.Tensor, rows: torch.Tensor, n_groups: int, n_entries: int, device=None
) -> torch.Tensor:
    """(N, G, V) Gumbel noise for the frames `rows` (B, T') selects, in the order of
    `x[rows]`: utterance b's from a generator seeded by seeds[b], one draw per selected frame
    in order. An utterance's noise depends on its seed and frames only, not on the batch it is
    in, so a batch cut across ranks draws what one process does."""
    device = torch.device("cpu") if device is None else torch.device(device)
    parts = []
    for seed, n in zip(seeds.tolist(), rows.sum(1).tolist(), strict=True):
        g = torch.Generator(device=device).manual_seed(seed)
        parts.append(gumbel_noise((n, n_groups, n_entries), g))
    return torch.cat(parts) if parts else torch.zeros(0, n_groups, n_entries, device=device)


def _gathered_sum(x: torch.Tensor) -> torch.Tensor:
    """x summed over the ranks (the gradient reaching each rank's own x); one process: x."""
    return distributed.gather_with_grad(x[None]).sum(0)


class Wav2Vec2(Objective):
    """The encoder (Wav2Vec2Encoder), the quantizer (GumbelQuantizer, its output projected to
    proj_dim: fairseq's project_q) and the projection of c_t (its final_proj). See the module
    docstring for the terms."""

    Config = Wav2Vec2ObjectiveConfig
    modality = "audio"
    model_config = Wav2Vec2Config
    data_config = WaveDataConfig
    work = "samples"
    batch_level = True
    loss_terms = ("contrastive_loss", "diversity_loss", "feature_penalty")

    def __init__(self, encoder: torch.nn.Module, cfg: Wav2Vec2ObjectiveConfig):
        super().__init__()
        self.cfg, self.encoder = cfg, encoder
        channels = encoder.conv_layers[-1][0]
        self.quantizer = GumbelQuantizer(channels, cfg.code_dim, cfg.n_groups, cfg.n_entries,
                                         cfg.proj_dim, cfg.gumbel_start)  # fmt: skip
        self.project = Linear(encoder.dim, cfg.proj_dim)
        # optimizer steps taken: the Gumbel temperature's clock, saved with the weights
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        groups = range(cfg.n_groups)
        self.terms = {
            "contrastive_loss": "masked", "diversity_loss": "masked",
            "feature_penalty": "conv_values", "contrastive_acc": "masked",
            "prob_perplexity": "masked", **{f"code_perplexity_{g}": "masked" for g in groups},
            **{f"codes_in_use_{g}": "masked" for g in groups}, "temperature": "masked",
            "code_frames": "masked",
            "embedding_std": "masked", "effective_rank": "masked",
        }  # fmt: skip

    @classmethod
    def default_model(cls, model: Wav2Vec2Config) -> Wav2Vec2Config:
        """A preset's Transformer shape as a waveform encoder: a conv front end as wide as the
        model (at most 512 channels), one sample per input frame."""
        return preset_shape(model)

    @classmethod
    def build(cls, cfg: Wav2Vec2ObjectiveConfig, model: Wav2Vec2Config) -> Wav2Vec2:
        cfg.validate()
        return cls(build_wav2vec2(model), cfg)

    @classmethod
    def init_from(cls, path):
        """`pretrain --init FOLDER`: a HuggingFace wav2vec 2.0 folder, ideally a
        Wav2Vec2ForPreTraining with its quantizer (selfsup.interop.hf_wav2vec2.pretraining_init;
        selfsup/pretraining_init.py says how a run starts from it)."""
        from selfsup.interop.hf_wav2vec2 import pretraining_init

        return pretraining_init(path)

    def audio_needs(self) -> AudioNeeds:
        # a plain function of the settings, not a bound method: data workers get no weights
        return AudioNeeds(corrupt=partial(wav2vec2_corrupt, self.cfg,
                                          tuple(self.encoder.conv_layers)))  # fmt: skip

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        samples = (~batch[PADDING_MASK]).sum(1)  # (B,)
        frames = int(conv_output_lengths(samples, self.encoder.conv_layers).sum())
        return {
            "masked": int(batch[TIME_MASK].sum()),  # the contrastive task's anchors
            "conv_values": frames * self.encoder.conv_layers[-1][0],  # the penalty's values
            "samples": int(samples.sum()),  # the work: real audio
        }

    def gumbel_temperature(self) -> float:
        """The quantizer's temperature at the current optimizer step."""
        c = self.cfg
        return gumbel_temperature(int(self.step), c.gumbel_start, c.gumbel_end, c.gumbel_decay)

    def after_step(self) -> None:
        self.step += 1

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg, G, V = self.cfg, self.cfg.n_groups, self.cfg.n_entries
        mask = batch[TIME_MASK]  # (B, T')
        out = self.encoder(batch[FEATURES], batch[PADDING_MASK], mask=mask)
        frame_pad = out["padding_mask"]  # (B, T')
        B, T = mask.shape
        rows = mask if cfg.negatives_from == "masked" else ~frame_pad  # (B, T') frames to quantize
        z = out["extract_features"][rows]  # (N, C)
        noise, temperature = None, self.gumbel_temperature()
        if self.training:
            self.quantizer.temperature = temperature
            noise = utterance_gumbel_noise(batch[NOISE_SEED], rows, G, V, z.device)
        quant = self.quantizer(z, noise=noise)
        q = quant["quantized"]
        targets = q.new_zeros(B, T, q.shape[-1])
        targets[rows] = q  # (B, T', P)
        codes = quant["codes"].new_zeros(B, T, G)
        codes[rows] = quant["codes"]  # (B, T', G)
        context = self.project(out["hidden"])  # (B, T', P)
        negatives = batch[NEGATIVES][mask].long()  # (M, K) frames of the anchor's utterance
        b = mask.nonzero()[:, 0]  # (M,) utterance of each masked frame
        # a distractor with the target's codes is the target's vector (the paper's check)
        same = (codes[b[:, None], negatives] == codes[mask][:, None]).all(-1)  # (M, K)
        contrastive, hits = wav2vec2_contrastive_by_utterance(context, targets, mask, negatives,
                                                              same, cfg.temperature)  # fmt: skip
        penalty, _ = feature_penalty(out["conv_features"], ~frame_pad)

        # batch-level: the code distribution and statistics of every rank's masked frames
        scored = mask[rows]  # (N,) the quantized frames that are masked
        m = scored.sum().float()  # this rank's masked frames
        probs = quant["probs"][scored]  # (M, G, V) soft-max without noise
        prob_sum = probs.sum(0)  # (G, V)
        c = context[mask].detach().double()  # (M, P)
        moments = torch.cat([
            F.one_hot(probs.detach().argmax(-1), V).sum(0).double().flatten(),  # code counts
            c.sum(0), (c.T @ c).flatten(), m.double()[None],
        ])  # fmt: skip
        if self.training:
            prob_sum, moments = _gathered_sum(prob_sum), _gathered_sum(moments)
        P = c.shape[1]
        counts, total = moments[: G * V].view(G, V), moments[G * V : G * V + P]
        gram, n = moments[G * V + P : -1].view(P, P), moments[-1]
        mean_probs = prob_sum / n.clamp(min=1).to(prob_sum)  # (G, V)
        diversity = diversity_loss(mean_probs[None])
        code_ppl = code_perplexity(counts[None] / n.clamp(min=1))  # (G,)
        in_use = (counts > 0).sum(-1)  # (G,)
        embedding = moment_stats(total, gram, n)
        with torch.no_grad():
            monitors = {
                "contrastive_acc": hits,
                "prob_perplexity": code_perplexity(mean_probs[None]).sum() * m,
                **{f"code_perplexity_{g}": code_ppl[g] * m for g in range(G)},
                **{f"codes_in_use_{g}": in_use[g] * m for g in range(G)},
                "temperature": torch.tensor(temperature) * m,
                "code_frames": n.to(prob_sum) * m,  # frames the code statistics are over
                "embedding_std": embedding["embedding_std"] * m,
                "effective_rank": embedding["effective_rank"] * m,
            }
        return {
            "contrastive_loss": contrastive,
            "diversity_loss": cfg.diversity_weight * diversity * m,
            "feature_penalty": cfg.feature_penalty_weight * penalty,
            **{k: v.float().to(contrastive.device) for k, v in monitors.items()},
        }

    def warnings(self, metrics: dict) -> list[str]:
        """selfsup.monitors.collapse_warnings of evaluation metrics (means, as the loop's
        evaluate returns them): codebook perplexity and entries in use per group, the context
        vectors' spread and effective rank, a trivial contrastive task."""
        G = self.cfg.n_groups
        if any(f"code_perplexity_{g}" not in metrics for g in range(G)):
            return []
        return collapse_warnings({
            "code_perplexity": [metrics[f"code_perplexity_{g}"] for g in range(G)],
            "codes_in_use": [metrics[f"codes_in_use_{g}"] for g in range(G)],
            "n_entries": self.cfg.n_entries,
            "code_frames": metrics.get("code_frames"),
            "embedding_std": metrics["embedding_std"],
            "effective_rank": metrics["effective_rank"],
            "dim": self.cfg.proj_dim,
            "contrastive_acc": metrics["contrastive_acc"],
            "contrastive_loss": metrics["contrastive_loss"],
        })  # fmt: skip
