"""Contrastive predictive coding (van den Oord et al., arXiv:1807.03748): a conv encoder turns
the waveform into frames z_t (10 ms), a GRU summarises z_1..z_t into c_t, and for k = 1..12
steps ahead a linear map W_k (one per step) predicts z_{t+k} from c_t, scored by InfoNCE
(eq. 4) against negatives: -log exp(z_{t+k}^T W_k c_t) / sum_{z in {z_{t+k}} u negatives}
exp(z^T W_k c_t).

`FuturePrediction` is the machinery CPC, wav2vec and vq-wav2vec share (objectives/wav2vec.py,
objectives/vq_wav2vec.py): the step predictors, the negatives and the scores; each says how
its scores become a loss.

Negatives. The data pipeline draws them with each batch's generator (`future_corrupt`, a
seeded function like Mockingjay's masking), one set per target frame, shared by the 12
predictions of that frame (selfsup/corrupt/negatives.py): CPC takes `same_negatives` = 8 from
the other frames of the same utterance and `other_negatives` = 8 from the other utterances of
the batch (half and half: the paper draws them from the minibatch, CPC_audio from the same
sequence; both kinds are offered). The loss of an utterance then depends on the others, so CPC
is batch-level: --grad-accum is refused, and under torchrun each rank gathers every rank's z
(distributed.gather_with_grad, gradients flowing back), so W processes train as one. The
anchors are the (t, k) pairs with frame t + k real: a clip of L frames has sum_k max(0, L - k).

Returns sums over the anchors: `contrastive_loss` (InfoNCE, the loss) and `contrastive_acc`
(anchors whose positive scores strictly above every negative); in evaluation also the context
vectors' `embedding_std` and `effective_rank` (selfsup.monitors; per batch), which show a
collapse of c to a constant or a subspace.

Legend: B utterances, T samples, T' frames, S prediction steps, K negatives, C encoder width,
D context width, N anchors.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import torch

from selfsup import distributed
from selfsup.corrupt.negatives import frame_negatives
from selfsup.data.audio_batches import AudioNeeds, WaveDataConfig
from selfsup.encoders.conv_context import ConvContextConfig, build_conv_context, preset_shape
from selfsup.errors import ConfigError
from selfsup.keys import FEATURES, NEGATIVES, NOISE_SEED, OTHER_NEGATIVES, PADDING_MASK
from selfsup.layers.conv_frontend import conv_output_lengths, receptive_field
from selfsup.layers.linear import Linear
from selfsup.layers.quantize import GumbelQuantizer
from selfsup.losses import info_nce_scores
from selfsup.monitors import collapse_warnings, embedding_stats
from selfsup.objectives.base import Objective


@dataclass
class CPCConfig:
    """CPC's task (arXiv:1807.03748, 3.1 and 4.1): k = 1..12 steps ahead, one W_k each, the
    log-bilinear score z^T W_k c_t (temperature 1); 8 negatives from the same utterance and 8
    from the other utterances of the batch."""

    name: str = "cpc"
    steps: int = 12
    same_negatives: int = 8
    other_negatives: int = 8
    temperature: float = 1.0

    def validate(self) -> None:
        check_steps_and_negatives(self)
        if self.temperature <= 0:
            raise ConfigError(f"objective.temperature must be positive, got {self.temperature}")


def check_steps_and_negatives(cfg) -> None:
    if cfg.steps < 1:
        raise ConfigError(f"objective.steps must be >= 1, got {cfg.steps}")
    other = getattr(cfg, "other_negatives", 0)
    if cfg.same_negatives < 0 or other < 0:
        raise ConfigError("objective.same_negatives and other_negatives must be >= 0")
    if cfg.same_negatives + other < 1:
        raise ConfigError("a contrastive loss needs at least one negative: set "
                          "objective.same_negatives (or CPC's other_negatives)")  # fmt: skip


def future_corrupt(
    same: int,
    other: int,
    conv_layers: list[tuple[int, int, int]],
    seeds: bool,
    batch: dict,
    g: torch.Generator,
) -> dict:
    """The batch with each encoder frame's negatives (frame_negatives: NEGATIVES, and with
    `other` OTHER_NEGATIVES) and, with `seeds`, a Gumbel noise seed per utterance (NOISE_SEED),
    all drawn from `g`. The frames are the conv encoder's over the batch's samples."""
    pad = batch[PADDING_MASK]  # (B, T) samples
    B, T = pad.shape
    n_frames = conv_output_lengths(max(T, receptive_field(conv_layers)), conv_layers)
    lengths = conv_output_lengths((~pad).sum(1), conv_layers)  # (B,)
    valid = torch.arange(n_frames)[None] < lengths[:, None]  # (B, T')
    same_idx, other_idx = frame_negatives(valid, same, other, g)
    out = {**batch, NEGATIVES: same_idx}
    if other_idx is not None:
        out[OTHER_NEGATIVES] = other_idx
    if seeds:
        out[NOISE_SEED] = torch.randint(0, 2**62, (B,), generator=g)
    return out


MONITOR_ROWS = 1024  # frames the embedding monitors read per batch (an SVD of 1024 x D)


def exact_ties(scores: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """scores (B, T', S, 1 + K) of candidates (B, T', 1 + K, C), the positive first, with each
    negative that is the positive's vector exactly (a quantized frame drawn with the same codes)
    scored exactly as the positive: one matrix product need not round identical columns alike
    (its kernels block the columns by CPU), so a tie would count as a hit or a miss by CPU and
    by rank layout. The gradients are the product's (x - sg(x) + sg(y) has x's gradient)."""
    same = (candidates[:, :, 1:] == candidates[:, :, :1]).all(-1)[:, :, None]  # (B, T', 1, K)
    pos, neg = scores[..., :1], scores[..., 1:]
    tied = neg - neg.detach() + pos.detach()
    return torch.cat([pos, torch.where(same, tied, neg)], -1)


class FuturePrediction(Objective):
    """Predict each encoder frame from the context S steps before, contrastively (the module
    docstring). Subclasses set `Config`, `predictor_bias`, `target` (the encoder output
    predicted: "z", or vq-wav2vec's "quantized") and `contrast(scores)` -> (loss sum, hits)."""

    modality = "audio"
    model_config = ConvContextConfig
    data_config = WaveDataConfig
    work = "frames"
    terms = {"contrastive_loss": "anchors", "contrastive_acc": "anchors",
             "embedding_std": "batches", "effective_rank": "batches"}  # fmt: skip
    loss_terms = ("contrastive_loss",)
    predictor_bias = False
    target = "z"
    quantized = False  # whether the encoder must have a quantizer (vq-wav2vec)

    def __init__(self, encoder: torch.nn.Module, cfg):
        super().__init__()
        self.cfg, self.encoder = cfg, encoder
        # W_1..W_S as one linear map: (B, T', D) -> (B, T', S * C)
        self.predict = Linear(encoder.dim, cfg.steps * encoder.z_dim, bias=self.predictor_bias)

    @classmethod
    def build(cls, cfg, model: ConvContextConfig):
        if cls.quantized and model.quantizer == "none":
            raise ConfigError(f"objective {cfg.name} quantizes the encoder's frames: set "
                              "model.quantizer=gumbel or kmeans")  # fmt: skip
        if not cls.quantized and model.quantizer != "none":
            raise ConfigError(f"objective {cfg.name} predicts the continuous frames: set "
                              "model.quantizer=none, or use --objective vq-wav2vec")  # fmt: skip
        return cls(build_conv_context(model), cfg)

    def audio_needs(self) -> AudioNeeds:
        # a plain function of the settings, not a bound method: data workers get no weights
        seeds = isinstance(self.encoder.quantizer, GumbelQuantizer)  # its noise's
        other = getattr(self.cfg, "other_negatives", 0)
        return AudioNeeds(corrupt=partial(future_corrupt, self.cfg.same_negatives, other,
                                          self.encoder.conv_layers, seeds))  # fmt: skip

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        lengths = self.encoder.frame_lengths(batch[PADDING_MASK])  # (B,)
        anchors = sum(int((lengths - k).clamp(min=0).sum()) for k in range(1, self.cfg.steps + 1))
        return {"anchors": anchors, "frames": int(lengths.sum()), "batches": 1}

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.encoder(batch[FEATURES], batch[PADDING_MASK], seeds=batch.get(NOISE_SEED))

    def scores(self, out: dict, batch: dict) -> torch.Tensor:
        """(N, 1 + K) float32: each anchor's score z^T W_k c_t of its positive, then of its
        negatives, divided by the temperature; anchors in the row-major order of (utterance,
        target frame t + k, step k)."""
        c, z, pad = out["hidden"], out[self.target], out["padding_mask"]
        B, T, C = z.shape
        S = self.cfg.steps
        pred = self.predict(c).view(B, T, S, C)  # pred[b, t, k - 1] = W_k c_t
        # by target frame: ahead[b, s, k - 1] = W_k c_{s-k}, the prediction of z_s from k back
        # (one gather: its backward is one scatter, not a zero-filled copy of pred per step)
        steps = torch.arange(1, S + 1, device=z.device)
        source = torch.arange(T, device=z.device)[:, None] - steps  # (T', S): frame s - k
        ahead = pred[:, source.clamp(min=0), steps - 1]  # (B, T', S, C); s < k: unused
        valid = ~pad[:, :, None] & (source >= 0)[None]  # (B, T', S)
        rows = torch.arange(B, device=z.device)[:, None, None]
        negatives = [z[rows, batch[NEGATIVES]]]  # (B, T', K_same, C)
        if OTHER_NEGATIVES in batch:
            # training under torchrun: this rank holds its rows of the batch; the indices are
            # into the whole batch's frames, so every rank's z is gathered (with gradients)
            whole = self.whole_batch(z)  # (B_all, T', C)
            negatives.append(whole.flatten(0, 1)[batch[OTHER_NEGATIVES]])  # (B, T', K_other, C)
        # the positive first; one product for all, so a negative equal to the positive ties
        candidates = torch.cat([z[:, :, None], *negatives], 2).float()  # (B, T', 1 + K, C)
        with torch.autocast(z.device.type, enabled=False):  # scores in float32, under bf16 too
            scores = torch.einsum("btsc,btkc->btsk", ahead.float(), candidates)  # (B,T',S,1+K)
        if self.quantized:
            scores = exact_ties(scores, candidates)
        return scores[valid] / getattr(self.cfg, "temperature", 1.0)  # (N, 1 + K)

    def contrast(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.encode(batch)
        loss, hits = self.contrast(self.scores(out, batch))
        return {"contrastive_loss": loss, "contrastive_acc": hits, **self.monitors(out)}

    def whole_batch(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, ...) of this rank's rows -> the whole batch's (distributed.whole_batch)."""
        return distributed.whole_batch(x, self.training)

    @torch.no_grad()
    def monitors(self, out: dict) -> dict[str, torch.Tensor]:
        """Collapse monitors of the whole batch, each over a count of 1 per batch: the std and
        effective rank of the context vectors of at most MONITOR_ROWS real frames (evenly
        spaced, so the same frames at any number of processes)."""
        c = self.whole_batch(out["hidden"].detach())
        pad = self.whole_batch(out["padding_mask"].float()) > 0  # (gloo gathers no bool)
        rows = c[~pad].float()  # (N, D)
        rows = rows[:: max(1, -(-rows.shape[0] // MONITOR_ROWS))]
        if rows.shape[0] == 0:  # no real frame (clips shorter than one frame)
            zero = c.new_zeros((), dtype=torch.float32)
            return {"embedding_std": zero, "effective_rank": zero}
        stats = embedding_stats(rows)
        return {"embedding_std": stats["embedding_std"].float(),
                "effective_rank": stats["effective_rank"].float()}  # fmt: skip

    def warnings(self, metrics: dict) -> list[str]:
        """One-line collapse warnings for held-out means (selfsup.monitors.collapse_warnings),
        e.g. of the `eval_` values of a run's summary."""
        means = {k.removeprefix("eval_"): v for k, v in metrics.items()}
        if "effective_rank" in means:
            means["dim"] = self.encoder.dim
        if self.encoder.quantizer is not None:
            means["n_entries"] = self.encoder.quantizer.n_entries
        return collapse_warnings(means)


class CPC(FuturePrediction):
    """CPC: the module docstring. Needs a GRU or causal conv context (model.context)."""

    Config = CPCConfig
    batch_level = True  # negatives from the other utterances of the batch

    @classmethod
    def default_model(cls, model: ConvContextConfig) -> ConvContextConfig:
        """CPC's encoder at the preset's width and its one GRU layer (arXiv:1807.03748, 3.1)."""
        return preset_shape(replace(model, context="gru", n_layers=1, conv_norm="layer"))

    def contrast(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return info_nce_scores(scores)
