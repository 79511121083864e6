"""HuBERT (Hsu et al., arXiv:2106.07447): masked prediction of k-means cluster labels.

The wav2vec 2.0 encoder (selfsup/encoders/wav2vec2.py) reads the waveform; spans of its 20 ms
frames are replaced by the learned mask embedding (p = 0.08 of the frames start a span of 10,
section 4.2); a projection A of each masked frame's last hidden state o_t is scored against
learned cluster embeddings e_c by cosine similarity over a temperature of 0.1 (eq. 2-3):

    p(c | x, t) = exp(cos(A o_t, e_c) / 0.1) / sum_c' exp(cos(A o_t, e_c') / 0.1)

and trained by cross-entropy with the frame's cluster id, on the masked frames (alpha = 1, the
paper's best; `unmasked_weight` > 0 adds the unmasked frames' term, 1 - alpha in eq. 4).

The labels come from `selfsup cluster` (selfsup/cluster_audio.py): iteration 1 clusters MFCCs
(k = 100), iteration 2 a chosen layer of the iteration-1 model (k = 500 at full scale); `selfsup
pretrain --objective hubert --labels LABELS` reads them (HuBERTDataConfig), checks each file's
label count against its length, resamples them to the model's frames (nearest frame centre:
100 Hz MFCC frame 2 t + 1 for model frame t) and crops them with the waveform, whose crops then
start on a model frame. objective.n_clusters is set to the labels' k.

As in the reference implementation, not the paper: the L2 penalty on the conv features
(weight 10) and cluster embeddings initialised U(0, 1).

Legend: B batch, T samples, T' encoder frames, D model width, M masked frames, C clusters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.corrupt.frames import overlapping_spans
from selfsup.data.audio_batches import AudioNeeds, FrameTargets, WaveDataConfig
from selfsup.data.frame_labels import (
    FrameGeometry,
    check_count,
    read_info,
    read_labels,
    resample_labels,
)
from selfsup.encoders.wav2vec2 import Wav2Vec2Config, build_wav2vec2, preset_shape
from selfsup.errors import ConfigError
from selfsup.keys import FEATURES, IGNORE, PADDING_MASK, TARGETS, TIME_MASK
from selfsup.layers.conv_frontend import (
    conv_output_lengths,
    downsample_padding_mask,
    total_stride,
)
from selfsup.losses import cluster_ce, feature_penalty
from selfsup.monitors import cluster_usage
from selfsup.objectives.base import Objective


@dataclass
class HuBERTConfig:
    """HuBERT's pretraining task (arXiv:2106.07447, section 4.2): p = 0.08 of the frames start a
    masked span of 10 (at least 2 spans per utterance, as the reference code), cosine logits
    over temperature 0.1, a projection to 256 (the base model's), loss on the masked frames."""

    name: str = "hubert"
    n_clusters: int = 100  # the labels' k: set from data.labels when the data is read
    mask_prob: float = 0.08  # share of frames that start a masked span (the paper's p)
    span: int = 10
    min_spans: int = 2
    temperature: float = 0.1
    final_dim: int = 256  # width of the projection A and of the cluster embeddings
    unmasked_weight: float = 0.0  # weight of the unmasked frames' loss (1 - alpha; 0: paper)
    feature_penalty_weight: float = 10.0  # L2 on the conv features (the reference recipe)

    def validate(self) -> None:
        if self.n_clusters < 2:
            raise ConfigError(f"objective.n_clusters must be >= 2, got {self.n_clusters}")
        if not 0.0 < self.mask_prob <= 1.0:
            raise ConfigError(f"objective.mask_prob must be in (0, 1], got {self.mask_prob}")
        if self.span < 1 or self.min_spans < 0:
            raise ConfigError("objective.span must be >= 1 and objective.min_spans >= 0")
        if not self.temperature > 0:
            raise ConfigError(f"objective.temperature must be positive, got {self.temperature}")
        if self.final_dim < 1:
            raise ConfigError(f"objective.final_dim must be positive, got {self.final_dim}")
        if self.unmasked_weight < 0 or self.feature_penalty_weight < 0:
            raise ConfigError("objective.unmasked_weight and feature_penalty_weight must be >= 0")


def model_geometry(model: Wav2Vec2Config, sample_rate: int) -> FrameGeometry:
    """Where the encoder's frames sit: one every total stride (320) samples, centred half its
    receptive field (400) in."""
    return FrameGeometry.of_conv(sample_rate, total_stride(model.conv_layers),
                                 model.receptive_field)  # fmt: skip


@dataclass
class HuBERTDataConfig(WaveDataConfig):
    """HuBERT's data: the waveform (WaveDataConfig: per-utterance normalised samples, crops of
    max_frames samples, a multiple of the model's frame stride so every crop starts on a
    frame) and the k-means labels `labels`, the folder `selfsup cluster` wrote."""

    labels: str | None = None

    def validate(self, model) -> None:
        super().validate(model)
        if not self.labels:
            raise ConfigError(
                "hubert predicts k-means labels: give --labels LABELS, made by `selfsup cluster "
                "mfcc --data ... --k 100 --out LABELS`"
            )
        hop = total_stride(model.conv_layers)
        if self.max_frames % hop:
            raise ConfigError(
                f"data.max_frames {self.max_frames} must be a multiple of the model's {hop} "
                "samples per frame, so that crops start and end on a frame"
            )
        info, geometry, _ = read_info(self.labels)
        self._check_info(info, geometry, model)

    def _check_info(self, info: dict, geometry: FrameGeometry, model) -> None:
        f = self.features
        if geometry.sample_rate != f.sample_rate:
            raise ConfigError(
                f"labels {self.labels} are of {geometry.sample_rate} Hz audio, the data is read "
                f"at {f.sample_rate} Hz (data.features.sample_rate)"
            )
        trim = float(info.get("trim_db", 0.0))
        if trim != float(f.trim_db):
            raise ConfigError(
                f"labels {self.labels} were made with trim_db {trim:g}, the data reads "
                f"trim_db {f.trim_db:g}: the frames would not line up"
            )
        target = model_geometry(model, f.sample_rate)
        if geometry.hop > target.hop:
            raise ConfigError(
                f"labels {self.labels} at {geometry.frame_rate:g} Hz are coarser than the "
                f"model's {target.frame_rate:g} Hz frames: cluster features at the model's frame "
                "rate or finer"
            )

    def frame_targets(self, items: list, frames: list[np.ndarray], cfg) -> FrameTargets:
        """Each file's labels at the model's frames (resample_labels), after checking their
        count against its length (frame_labels.check_count); sets cfg.objective.n_clusters to
        the labels' k."""
        found = read_labels(self.labels)
        self._check_info(found.info, found.geometry, cfg.model)
        target = model_geometry(cfg.model, self.features.sample_rate)
        layers = cfg.model.conv_layers
        out = []
        for item, wave in zip(items, frames, strict=True):
            lab = found.of(item.path)
            check_count(item.path, len(lab), len(wave), found.geometry)
            n = conv_output_lengths(len(wave), layers)
            out.append(resample_labels(lab, found.geometry, target, n))
        cfg.objective.n_clusters = found.k
        source = found.info.get("source", "?")
        layer = found.info.get("layer")
        note = (
            f"labels: k={found.k} from {source}{'' if layer is None else f' layer {layer}'} at "
            f"{found.geometry.frame_rate:g} Hz, for the model's {target.frame_rate:g} Hz frames"
        )
        return FrameTargets(out, target.hop, TARGETS, note)


def hubert_corrupt(
    cfg: HuBERTConfig, conv_layers: tuple, receptive_field: int, batch: dict, g: torch.Generator
) -> dict:
    """HuBERT's masking of a batch of waveforms and labels: TIME_MASK (B, T') the frames to
    replace by the mask embedding (overlapping_spans over the real encoder frames), TARGETS
    (B, T') the labels cut or IGNORE-padded to the encoder's frames, IGNORE on padding."""
    pad = batch[PADDING_MASK]  # (B, T) samples
    layers = list(conv_layers)
    T = conv_output_lengths(max(pad.shape[1], receptive_field), layers)  # the encoder's T'
    frame_pad = downsample_padding_mask(pad, layers, T)  # (B, T')
    mask = overlapping_spans(frame_pad, g, cfg.mask_prob, cfg.span, cfg.min_spans)
    labels = batch[TARGETS][:, :T]  # (B, <= T')
    labels = F.pad(labels, (0, T - labels.shape[1]), value=IGNORE).masked_fill(frame_pad, IGNORE)
    return {**batch, TARGETS: labels, TIME_MASK: mask}


class HuBERT(Objective):
    """Returns sums over the scored frames: `masked_loss` (the training loss) and `masked_acc`
    (frames whose label scores highest) over the masked frames; with unmasked_weight > 0,
    `unmasked_loss` (already times the weight) and `unmasked_acc` over the unmasked frames;
    with feature_penalty_weight > 0, `feature_penalty` (times its weight) over the conv values
    of the real frames; and the collapse monitors of the masked frames' predictions
    (monitors.cluster_usage: `cluster_used_fraction`, `cluster_max_share`) per batch."""

    Config = HuBERTConfig
    modality = "audio"
    model_config = Wav2Vec2Config
    data_config = HuBERTDataConfig
    work = "frames"

    def __init__(self, encoder: nn.Module, cfg: HuBERTConfig):
        super().__init__()
        self.cfg, self.encoder = cfg, encoder
        self.final_proj = nn.Linear(encoder.dim, cfg.final_dim)  # A
        # e_c, U(0, 1) as the reference code (cosine logits: only their directions matter)
        self.cluster_embed = nn.Parameter(torch.empty(cfg.n_clusters, cfg.final_dim).uniform_())
        terms = {"masked_loss": "masked", "masked_acc": "masked"}
        loss_terms = ["masked_loss"]
        if cfg.unmasked_weight > 0:
            terms |= {"unmasked_loss": "unmasked", "unmasked_acc": "unmasked"}
            loss_terms.append("unmasked_loss")
        if cfg.feature_penalty_weight > 0:
            terms["feature_penalty"] = "conv_values"
            loss_terms.append("feature_penalty")
        self.terms = terms | {"cluster_used_fraction": "batches", "cluster_max_share": "batches"}
        self.loss_terms = tuple(loss_terms)

    @classmethod
    def default_model(cls, model: Wav2Vec2Config) -> Wav2Vec2Config:
        # one value per input frame: the shape carried over from a spectral preset has 80
        return replace(preset_shape(model), feature_dim=1)

    @classmethod
    def build(cls, cfg: HuBERTConfig, model: Wav2Vec2Config) -> HuBERT:
        cfg.validate()
        return cls(build_wav2vec2(model), cfg)

    def audio_needs(self) -> AudioNeeds:
        # a plain function of the settings, not a bound method: data workers get no weights
        enc = self.encoder
        return AudioNeeds(corrupt=partial(hubert_corrupt, self.cfg, tuple(enc.conv_layers),
                                          enc.receptive_field))  # fmt: skip

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        scored, mask = batch[TARGETS] != IGNORE, batch[TIME_MASK]
        lengths = (~batch[PADDING_MASK]).sum(-1)
        frames = int(conv_output_lengths(lengths, self.encoder.conv_layers).sum())
        channels = self.encoder.conv_layers[-1][0]
        return {
            "masked": int((scored & mask).sum()),
            "unmasked": int((scored & ~mask).sum()),
            "frames": frames,
            "conv_values": frames * channels,
            "batches": 1,
        }

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        mask, labels = batch[TIME_MASK], batch[TARGETS]  # (B, T'), (B, T')
        out = self.encoder(batch[FEATURES], batch[PADDING_MASK], mask=mask)
        h = out["hidden"]  # (B, T', D)
        scored = labels != IGNORE
        masked = mask & scored
        proj = self.final_proj(h[masked])  # (M, final_dim)
        loss, hits = cluster_ce(proj, self.cluster_embed, labels[masked], cfg.temperature)
        result = {"masked_loss": loss, "masked_acc": hits}
        if cfg.unmasked_weight > 0:
            kept = ~mask & scored
            loss_u, hits_u = cluster_ce(self.final_proj(h[kept]), self.cluster_embed, labels[kept],
                                        cfg.temperature)  # fmt: skip
            result |= {"unmasked_loss": cfg.unmasked_weight * loss_u, "unmasked_acc": hits_u}
        if cfg.feature_penalty_weight > 0:
            penalty, _ = feature_penalty(out["conv_features"], ~out["padding_mask"])
            result["feature_penalty"] = cfg.feature_penalty_weight * penalty
        with torch.no_grad():  # what the model predicts on the masked frames: collapse monitor
            a = F.normalize(proj.float(), dim=-1)
            e = F.normalize(self.cluster_embed.float(), dim=-1)
            usage = cluster_usage((a @ e.t()).argmax(-1), cfg.n_clusters)  # (M, C) -> (M,)
        result["cluster_used_fraction"] = usage["cluster_used_fraction"].float()
        result["cluster_max_share"] = usage["cluster_max_share"].float()
        return result
