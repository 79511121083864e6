"""What every image objective shares: its modality's configs, the backbone, an online linear
probe on detached features, and the collapse monitors.

- The online probe (solo-learn's and lightly's "online linear evaluation"): a linear classifier
  trained during pretraining on the backbone's pooled features of the first view, detached, so
  it follows how linearly separable the features are without touching the backbone. It exists
  when the data have labels (`probe_classes`, set by the image recipe from the data) and adds
  its loss to the training loss (its gradient reaches only its own weights).
- Monitors, each over a count of one per batch, of the whole batch (gathered across ranks):
  `embed_std` and `embed_rank` of the L2-normalised embeddings the loss compares (the
  projector's or predictor's output), `feature_std` and `feature_rank` of the backbone's pooled
  features. A collapsed method maps every image to one vector: std 0 and rank 1 (a healthy
  normalised embedding of width D has a std near 1/sqrt(D)).

Legend: B images, V views, C channels, H x W pixels, D width.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed
from selfsup.corrupt.views import make_views, view_recipes
from selfsup.data.image import ImageDataConfig, ImageNeeds
from selfsup.distributed import whole_batch
from selfsup.encoders.image import ImageConfig, build_image_encoder
from selfsup.errors import ConfigError
from selfsup.keys import IGNORE, IMAGES, LABELS, VIEWS
from selfsup.monitors import collapse_warnings, effective_rank, embedding_std
from selfsup.objectives.base import Objective

MONITOR_ROWS = 512  # monitors of at most this many rows (evenly spaced) of the whole batch


@dataclass
class ImageObjectiveConfig:
    """Settings every image objective has: its name, the views it trains on (a preset of
    selfsup.corrupt.views by name, and how many), and the online probe's classes (set from the
    data by the recipe; 0: no probe)."""

    name: str = ""
    views: str = "simclr"
    n_views: int = 2
    probe_classes: int = 0

    def validate(self) -> None:
        if self.n_views < 1:
            raise ConfigError(f"objective.n_views must be >= 1, got {self.n_views}")
        if self.probe_classes < 0:
            raise ConfigError(f"objective.probe_classes must be >= 0, got {self.probe_classes}")
        view_recipes(self.views, self.n_views)  # an unknown preset: a one-line error


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def first_row(n_local: int, training: bool) -> int:
    """The index of this rank's first row in the whole (gathered) batch."""
    if training and distributed.world_size() > 1:
        return distributed.rank() * n_local
    return 0


def views_corrupt(recipes, batch: dict, generator: torch.Generator) -> dict:
    """{IMAGES (B, C, H, W)} -> {VIEWS (B, V, C, H, W)}: the objective's augmented views."""
    out = {k: v for k, v in batch.items() if k != IMAGES}
    out[VIEWS] = make_views(batch[IMAGES], generator, recipes)
    return out


class ImageObjective(Objective):
    """The image contract on top of objectives/base.py. Subclasses set `own_terms` (their
    values -> counts) and `own_loss_terms`, call `super().__init__(encoder, cfg)`, and return
    `{**their values, **self.probe_terms(h, batch), **self.monitors(z, h)}` from forward."""

    modality = "image"
    model_config = ImageConfig
    data_config = ImageDataConfig
    work = "images"
    own_terms: dict[str, str] = {}
    own_loss_terms: tuple[str, ...] = ()

    def __init__(self, encoder: nn.Module, cfg):
        super().__init__()
        self.cfg, self.encoder = cfg, encoder
        self.probe = nn.Linear(encoder.dim, cfg.probe_classes) if cfg.probe_classes else None
        monitors = {k: "batches" for k in ("embed_std", "embed_rank", "feature_std",
                                           "feature_rank")}  # fmt: skip
        probe = {"probe_loss": "labelled", "probe_acc": "labelled"} if self.probe else {}
        self.terms = {**self.own_terms, **probe, **monitors}
        self.loss_terms = (*self.own_loss_terms, *(("probe_loss",) if self.probe else ()))

    @classmethod
    def build(cls, cfg, model: ImageConfig):
        cfg.validate()
        return cls(build_image_encoder(model), cfg)

    @property
    def batch_level(self) -> bool:
        # BatchNorm normalises over the batch: a step is batch-level (no --grad-accum)
        return has_batchnorm(self)

    def image_needs(self) -> ImageNeeds:
        # a plain function of the settings, not a bound method: data workers get no weights
        recipes = view_recipes(self.cfg.views, self.cfg.n_views)
        return ImageNeeds(corrupt=partial(views_corrupt, recipes))

    def prepare(self, images, generator: torch.Generator) -> None:
        """Called by the recipe with the training images (N, H, W, 3) uint8 before training
        and before a resumed run's weights are loaded (iGPT's palette); nothing by default."""

    def set_total_steps(self, steps: int) -> None:
        """Called by the recipe with the run's steps (BYOL's schedule of its target's rate)."""

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        B = next(iter(batch.values())).shape[0]  # every tensor holds the batch's images first
        labelled = int((batch[LABELS] != IGNORE).sum()) if LABELS in batch else 0
        return {"images": B, "labelled": labelled, "batches": 1, **self.own_counts(batch)}

    def own_counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        return {}

    def encode_views(self, views: torch.Tensor) -> torch.Tensor:
        """(B, V, C, H, W) -> the backbone's pooled features (B, V, D), all views in one pass."""
        B, V = views.shape[:2]
        h = self.encoder(views.flatten(0, 1))["pooled"]  # (B * V, D)
        return h.reshape(B, V, -1)

    def probe_terms(self, h: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict:
        """The online probe's summed CE and hits on features h (B, D), detached."""
        if self.probe is None:
            return {}
        labels = batch.get(LABELS)
        if labels is None:  # unlabelled batches (held out from an unlabelled folder)
            zero = h.new_zeros((), dtype=torch.float32)
            return {"probe_loss": zero, "probe_acc": zero}
        logits = self.probe(h.detach()).float()
        keep = labels != IGNORE
        loss = F.cross_entropy(logits[keep], labels[keep], reduction="sum")
        acc = (logits[keep].argmax(-1) == labels[keep]).sum().float()
        return {"probe_loss": loss, "probe_acc": acc}

    @torch.no_grad()
    def monitors(self, z: torch.Tensor | None, h: torch.Tensor) -> dict[str, torch.Tensor]:
        """Collapse monitors of the whole batch (module docstring): z (N, D') the compared
        embeddings (None: the features'), h (N, D) the backbone's pooled features."""
        out = {}
        for prefix, x in (("embed", h if z is None else z), ("feature", h)):
            x = whole_batch(x.detach().float(), self.training)
            x = x[:: max(1, -(-x.shape[0] // MONITOR_ROWS))]
            if prefix == "embed":
                x = F.normalize(x, dim=-1)
            out[f"{prefix}_std"] = embedding_std(x)
            out[f"{prefix}_rank"] = effective_rank(x).float()
        return out

    def warnings(self, metrics: dict) -> list[str]:
        """One-line collapse warnings for held-out means (selfsup.monitors.collapse_warnings)."""
        means = {k.removeprefix("eval_"): v for k, v in metrics.items()}
        out = []
        for prefix in ("embed", "feature"):
            if f"{prefix}_rank" not in means:
                continue
            found = collapse_warnings({"embedding_std": means[f"{prefix}_std"],
                                       "effective_rank": means[f"{prefix}_rank"],
                                       "dim": self.embed_dim if prefix == "embed"
                                       else self.encoder.dim})  # fmt: skip
            out += [f"{'embeddings' if prefix == 'embed' else 'backbone features'}: {w}"
                    for w in found]  # fmt: skip
        return out

    @property
    def embed_dim(self) -> int:
        """The width of the compared embeddings: the projector's, else the backbone's."""
        return getattr(self.cfg, "proj_dim", self.encoder.dim)
