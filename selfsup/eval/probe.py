"""Frozen-feature evaluation: a learnable softmax-weighted sum of a frozen upstream's layers
feeding a small head, as SUPERB evaluates speech representations (Yang et al. 2021,
arXiv:2105.01051, section 3: the upstream frozen, "the weighted sum of hidden states" of every
layer, weights softmax-normalised and learned with the downstream model).

Modality-free: everything here works on lists of per-example layer stacks, (L, T_i, D) float32
tensors (`extract` computes them once from a speech upstream; image or DNA probes can build them
their own way). The upstream is frozen, so its states are computed once and reused by every
head, learning rate and seed.

Three heads, one per kind of task:

    utterance   mean over the real frames, then linear (or an MLP): keyword spotting, speaker
                identification (SUPERB KS/SID: mean pooling + linear)
    frame       linear per frame: frame-level phone classification (labels IGNORE where unknown)
    ctc         linear (optionally after a small BiLSTM) to log-probabilities over blank = 0
                and the tokens, trained with CTC (Graves et al. 2006), decoded greedily: phone
                recognition (SUPERB PR: linear + CTC, scored by phone error rate)

Each layer is standardised by its training mean and std before the sum (not in SUPERB: it lets
one learning-rate grid fit every upstream; see Probe). `sweep` picks the learning rate on dev
(seed 0) and then reports the test metric over seeds.

Legend: N examples, B batch, L layers, T frames (after the upstream's stacking), D width,
C classes, V tokens including the blank, U target tokens.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from selfsup.data.audio import collate_frames
from selfsup.distributed import run_jobs
from selfsup.errors import ConfigError
from selfsup.keys import FEATURES, IGNORE, PADDING_MASK

BLANK = 0  # the CTC blank token; real tokens are 1..V-1
LRS = (1e-4, 1e-3, 1e-2)


# ---------------------------------------------------------------------------------------------
# states of a frozen upstream


def _device(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    if p is None:
        p = next(module.buffers(), None)
    return p.device if p is not None else torch.device("cpu")


def extract(
    upstream: nn.Module, frames: list[np.ndarray], batch_size: int = 32, pool: bool = False
) -> list[torch.Tensor]:
    """Every example's hidden states, (L, T'_i, D) float32 on the CPU, from an upstream with
    the encoder contract (forward(features (B, T, F), padding_mask (B, T)) -> {"all_hidden":
    [(B, T', D)] * L, "padding_mask": (B, T')}); the padding cut off with the returned mask.

    Computed once under no_grad, in batches of examples of similar length (sorted by length) so
    little of a batch is padding; the result is in the order of `frames`. `pool` keeps only
    the mean over each example's real frames, (L, 1, D): exact for an utterance head, since the
    weighted layer sum and the mean over time are both linear and so commute. Under torchrun
    the ranks share the batches (distributed.run_jobs) and each gets every example's states."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    device = _device(upstream)
    order = sorted(range(len(frames)), key=lambda i: len(frames[i]))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]

    @torch.no_grad()
    def encode(idx: list[int]) -> list[torch.Tensor]:
        batch = collate_frames([frames[i] for i in idx])
        result = upstream(batch[FEATURES].to(device), batch[PADDING_MASK].to(device))
        hidden = torch.stack(result["all_hidden"], dim=1).float().cpu()  # (B, L, T', D)
        lengths = (~result["padding_mask"]).sum(-1).cpu()  # (B,)
        states = [hidden[row, :, : int(n)] for row, n in enumerate(lengths)]  # (L, T'_i, D)
        return [h.mean(dim=1, keepdim=True) if pool else h.clone() for h in states]

    upstream.eval()
    out: list[torch.Tensor | None] = [None] * len(frames)
    # Under torchrun each rank encodes every W-th batch (the same batches as one process).
    for idx, states in zip(batches, run_jobs([partial(encode, b) for b in batches]), strict=True):
        for i, h in zip(idx, states, strict=True):
            out[i] = h
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# the probe: a weighted layer sum and a head


class WeightedLayerSum(nn.Module):
    """SUPERB's featurizer (arXiv:2105.01051, section 3): sum_l softmax(w)_l h_l over the L
    layers, w initialised to zeros (the uniform average) and learned with the head."""

    def __init__(self, n_layers: int):
        super().__init__()
        if n_layers < 1:
            raise ConfigError(f"n_layers must be at least 1, got {n_layers}")
        self.logits = nn.Parameter(torch.zeros(n_layers))

    def weights(self) -> torch.Tensor:
        """(L,) the normalised layer weights (they sum to 1)."""
        return torch.softmax(self.logits, dim=0)

    def forward(self, states: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, L, T, D), or a list of L (B, T, D) tensors -> (B, T, D)."""
        if not isinstance(states, torch.Tensor):
            states = torch.stack(list(states), dim=1)  # (B, L, T, D)
        if states.shape[1] != len(self.logits):
            raise ValueError(f"{states.shape[1]} layers given, the probe has {len(self.logits)}")
        return torch.einsum("l,bltd->btd", self.weights().to(states.dtype), states)  # (B, T, D)


def mean_pool(x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, D): the mean over the real (not padding) frames."""
    keep = (~padding_mask).to(x.dtype)[..., None]  # (B, T, 1)
    return (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)


class UtteranceHead(nn.Module):
    """Mean over the real frames, then a linear layer (SUPERB KS/SID), or an MLP with one
    ReLU hidden layer of `hidden` units when hidden > 0."""

    def __init__(self, dim: int, n_classes: int, hidden: int = 0):
        super().__init__()
        if hidden > 0:
            mlp = [nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)]
            self.out = nn.Sequential(*mlp)
        else:
            self.out = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> dict:
        return {"logits": self.out(mean_pool(x, padding_mask))}  # (B, C)


class FrameHead(nn.Module):
    """A linear layer per frame (frame-level classification)."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.out = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> dict:
        return {"logits": self.out(x)}  # (B, T, C)


class CTCHead(nn.Module):
    """Log-probabilities over `n_tokens` (blank = 0 and the real tokens) per frame: a linear
    layer (SUPERB PR), after a 1-layer BiLSTM of `lstm_dim` units per direction when
    lstm_dim > 0. The LSTM reads packed sequences, so padding changes no real frame."""

    def __init__(self, dim: int, n_tokens: int, lstm_dim: int = 0):
        super().__init__()
        if n_tokens < 2:
            raise ConfigError(f"a CTC head needs the blank and at least one token, got {n_tokens}")
        self.lstm = None
        if lstm_dim > 0:
            self.lstm = nn.LSTM(dim, lstm_dim, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * lstm_dim if lstm_dim else dim, n_tokens)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> dict:
        lengths = (~padding_mask).sum(-1)  # (B,)
        if self.lstm is not None:
            packed = nn.utils.rnn.pack_padded_sequence(
                x, lengths.cpu().clamp_min(1), batch_first=True, enforce_sorted=False
            )
            x = nn.utils.rnn.pad_packed_sequence(
                self.lstm(packed)[0], batch_first=True, total_length=x.shape[1]
            )[0]  # (B, T, 2 * lstm_dim)
        return {"log_probs": F.log_softmax(self.out(x), dim=-1), "lengths": lengths}  # (B, T, V)


def layer_stats(states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std), each (L, 1, D), of every frame of every (L, T_i, D) example, layer by layer
    (std at least 1e-5, so dividing by it is safe)."""
    x = torch.cat([s.double() for s in states], dim=1)  # (L, sum T_i, D)
    mean, std = x.mean(1, keepdim=True), x.std(1, keepdim=True, correction=0)
    return mean.float(), std.clamp_min(1e-5).float()


class Probe(nn.Module):
    """WeightedLayerSum over the upstream's layers, then a head; with `mean` and `std` ((L, 1,
    D), from the training states: layer_stats) each layer is standardised first.

    The standardisation is not in SUPERB's featurizer: it is a fixed affine map, so it changes
    nothing a linear head can express, but it lets one learning-rate grid fit upstreams whose
    layers differ in scale by orders of magnitude (log-mel energies around -10, LayerNorm'd
    Transformer layers around 1), and keeps a layer's learned weight from standing in for its
    scale."""

    def __init__(self, n_layers: int, head: nn.Module, mean=None, std=None):
        super().__init__()
        self.layers, self.head = WeightedLayerSum(n_layers), head
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, states: torch.Tensor, padding_mask: torch.Tensor) -> dict:
        if self.mean is not None:  # padding frames change too: heads only read real frames
            states = (states - self.mean) / self.std  # (B, L, T, D)
        return self.head(self.layers(states), padding_mask)


# ---------------------------------------------------------------------------------------------
# losses, decoding and metrics (pure functions)


def classify_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled positions: (B, C) with (B,), or (B, T, C) with
    (B, T) where IGNORE marks unlabelled frames (padding included)."""
    return F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=IGNORE)


def ctc_loss(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
) -> torch.Tensor:
    """CTC (Graves et al. 2006) of (B, T, V) log-probabilities with blank = 0 against the
    concatenated (sum U_i,) targets: each sequence's negative log-likelihood divided by its
    target length, averaged over the batch (torch's "mean"). An impossible alignment (more
    tokens than frames allow) scores zero instead of infinity."""
    return F.ctc_loss(
        log_probs.transpose(0, 1),
        targets,
        lengths,
        target_lengths,
        blank=BLANK,
        reduction="mean",
        zero_infinity=True,
    )


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best-path CTC decoding of (B, T, V) log-probabilities: the most likely token per real
    frame, repeats collapsed, then blanks dropped (so a blank separates two equal tokens)."""
    best = log_probs.argmax(-1).cpu()  # (B, T)
    out = []
    for row, n in zip(best.tolist(), lengths.tolist(), strict=True):
        seq, prev = [], None
        for tok in row[: int(n)]:
            if tok != prev and tok != BLANK:
                seq.append(tok)
            prev = tok
        out.append(seq)
    return out


def levenshtein(a: Sequence, b: Sequence) -> int:
    """The edit distance between two sequences: the fewest substitutions, insertions and
    deletions that turn `a` into `b` (dynamic programming, one row at a time)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def error_rate(hypotheses: Sequence[Sequence], references: Sequence[Sequence]) -> float:
    """Total edit distance / total reference length (the phone or word error rate, pooled over
    the utterances rather than averaged per utterance)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    total = sum(len(r) for r in references)
    if total == 0:
        raise ValueError("the references hold no tokens")
    return sum(levenshtein(h, r) for h, r in zip(hypotheses, references, strict=True)) / total


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of labelled positions (label != IGNORE) predicted right."""
    keep = labels != IGNORE
    if not bool(keep.any()):
        raise ValueError("no labelled positions to score")
    return float((predictions[keep] == labels[keep]).double().mean())


# ---------------------------------------------------------------------------------------------
# one kind of task: its head, batch targets, loss and metric


@dataclass(frozen=True)
class Kind:
    """A kind of probe task: the head it builds and the metric it reports."""

    head: type
    metric: str  # "acc" or "per"
    higher_is_better: bool


KINDS = {
    "utterance": Kind(UtteranceHead, "acc", True),
    "frame": Kind(FrameHead, "acc", True),
    "ctc": Kind(CTCHead, "per", False),
}


def _kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ConfigError(f"unknown probe kind {kind!r}: choose from {', '.join(KINDS)}")
    return KINDS[kind]


@dataclass
class ProbeSet:
    """Examples for a probe: `states` (L, T_i, D) per example and `targets` per example: a class
    index (utterance), a (T_i,) label tensor with IGNORE where unknown (frame), or a token
    sequence over 1..V-1 (ctc)."""

    states: list[torch.Tensor]
    targets: list

    def __post_init__(self):
        if len(self.states) != len(self.targets):
            raise ValueError(f"{len(self.states)} examples but {len(self.targets)} targets")
        if not self.states:
            raise ConfigError("a probe split holds no examples")

    def __len__(self) -> int:
        return len(self.states)

    def subset(self, idx: Sequence[int]) -> ProbeSet:
        return ProbeSet([self.states[i] for i in idx], [self.targets[i] for i in idx])


def collate_states(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, T_i, D) tensors -> ((B, L, T, D) zero-padded, (B, T) padding mask, True on padding)."""
    L, _, D = states[0].shape
    lengths = torch.tensor([s.shape[1] for s in states])
    T = int(lengths.max())
    x = states[0].new_zeros(len(states), L, T, D)  # (B, L, T, D)
    for row, s in zip(x, states, strict=True):
        row[:, : s.shape[1]] = s
    return x, torch.arange(T)[None] >= lengths[:, None]


def _batch_targets(kind: str, targets: list, T: int) -> dict:
    if kind == "utterance":
        return {"labels": torch.as_tensor(targets, dtype=torch.long)}  # (B,)
    if kind == "frame":
        labels = torch.full((len(targets), T), IGNORE, dtype=torch.long)  # (B, T)
        for row, t in zip(labels, targets, strict=True):
            row[: len(t)] = torch.as_tensor(t, dtype=torch.long)
        return {"labels": labels}
    flat = [int(tok) for t in targets for tok in t]
    return {
        "targets": torch.tensor(flat, dtype=torch.long),
        "target_lengths": torch.tensor([len(t) for t in targets]),
    }


def _loss(kind: str, out: dict, batch: dict) -> torch.Tensor:
    if kind == "ctc":
        return ctc_loss(out["log_probs"], out["lengths"], batch["targets"], batch["target_lengths"])
    return classify_loss(out["logits"], batch["labels"])


def _check(kind: str, data: ProbeSet, n_classes: int) -> None:
    for s, t in zip(data.states, data.targets, strict=True):
        if s.ndim != 3:
            raise ValueError(f"states must be (L, T, D), got shape {tuple(s.shape)}")
        if kind == "frame" and len(t) != s.shape[1]:
            raise ValueError(f"{len(t)} frame labels for {s.shape[1]} frames")
        if kind == "ctc" and any(not 0 < int(tok) < n_classes for tok in t):
            raise ValueError(f"CTC tokens must be in 1..{n_classes - 1} (0 is the blank)")


def build_probe(
    kind: str, n_layers: int, dim: int, n_classes: int, mean=None, std=None, **head_args
) -> Probe:
    """The probe of a task kind: WeightedLayerSum(n_layers) and the kind's head (for "ctc",
    n_classes counts the blank), standardising each layer by `mean` and `std` when given."""
    return Probe(n_layers, _kind(kind).head(dim, n_classes, **head_args), mean, std)


def predict(kind: str, probe: Probe, data: ProbeSet, batch_size: int = 64) -> list:
    """The probe's predictions: a class per example, a (T_i,) tensor of classes per example, or
    a greedy-decoded token list per example."""
    probe.eval()
    order = sorted(range(len(data)), key=lambda i: data.states[i].shape[1])
    out: list = [None] * len(data)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x, pad = collate_states([data.states[i] for i in idx])
            result = probe(x, pad)
            if kind == "ctc":
                preds = greedy_decode(result["log_probs"], result["lengths"])
            elif kind == "frame":
                best = result["logits"].argmax(-1)  # (B, T)
                preds = [best[r, : data.states[i].shape[1]] for r, i in enumerate(idx)]
            else:
                preds = result["logits"].argmax(-1).tolist()
            for i, p in zip(idx, preds, strict=True):
                out[i] = p
    return out


def evaluate(kind: str, probe: Probe, data: ProbeSet, batch_size: int = 64) -> float:
    """The kind's metric on `data`: accuracy (utterance: per example; frame: per labelled frame)
    or the phone error rate (ctc: total edit distance / total reference length)."""
    preds = predict(kind, probe, data, batch_size)
    if kind == "ctc":
        return error_rate(preds, [[int(t) for t in ref] for ref in data.targets])
    if kind == "frame":
        return accuracy(torch.cat(preds), torch.cat([torch.as_tensor(t) for t in data.targets]))
    return accuracy(torch.tensor(preds), torch.as_tensor(data.targets))


# ---------------------------------------------------------------------------------------------
# training


def train_probe(
    kind: str,
    train: ProbeSet,
    n_classes: int,
    lr: float,
    dev: ProbeSet | None = None,
    test: ProbeSet | None = None,
    epochs: int = 20,
    batch_size: int = 32,
    seed: int = 0,
    weight_decay: float = 0.0,
    standardize: bool = True,
    log: Callable[[str], None] | None = None,
    **head_args,
) -> dict:
    """Train a probe of `kind` on frozen states: AdamW (weight_decay 0 = Adam) at a constant
    `lr` for a fixed number of epochs, batches in a random order from a torch.Generator seeded
    by `seed`; the probe is initialised under torch.manual_seed(seed) inside fork_rng, so the
    global generator is left as it was. `standardize` normalises each layer by the training
    states' mean and std (see Probe). `head_args` go to the head (hidden, lstm_dim).

    Returns {"probe", "metric", "dev", "test" (None when the split is not given),
    "layer_weights" (L,), "losses" (mean loss per epoch), "lr", "seed", "seconds"}."""
    spec = _kind(kind)
    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"epochs and batch_size must be positive, got {epochs}, {batch_size}")
    _check(kind, train, n_classes)
    L, _, D = train.states[0].shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        stats = layer_stats(train.states) if standardize else (None, None)
        probe = build_probe(kind, L, D, n_classes, *stats, **head_args)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    start, losses = time.perf_counter(), []
    for epoch in range(epochs):
        probe.train()
        order = torch.randperm(len(train), generator=g).tolist()
        total, steps = 0.0, 0
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            x, pad = collate_states([train.states[i] for i in idx])
            batch = _batch_targets(kind, [train.targets[i] for i in idx], x.shape[2])
            loss = _loss(kind, probe(x, pad), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1
        losses.append(total / steps)
        if log is not None:
            log(f"probe {kind} lr {lr:g} seed {seed} epoch {epoch + 1}: loss {losses[-1]:.4f}")
    result = {
        "probe": probe,
        "metric": spec.metric,
        "dev": None if dev is None else evaluate(kind, probe, dev),
        "test": None if test is None else evaluate(kind, probe, test),
        "layer_weights": probe.layers.weights().detach().tolist(),
        "losses": losses,
        "lr": lr,
        "seed": seed,
    }
    result["seconds"] = time.perf_counter() - start
    return result


def summarise(values: Sequence[float]) -> dict:
    """{"median", "spread" (max - min), "values"} of per-seed or per-fold results."""
    values = [float(v) for v in values]
    return {
        "median": statistics.median(values),
        "spread": max(values) - min(values),
        "values": values,
    }


def mean_weights(weights: Sequence[Sequence[float]]) -> list[float]:
    """The mean of several probes' layer weights, layer by layer."""
    return np.mean(np.asarray(weights, dtype=np.float64), axis=0).tolist()


@dataclass
class Sweep:
    """One learning-rate search and its seeds: the arguments of `sweep`."""

    kind: str
    train: ProbeSet
    dev: ProbeSet
    test: ProbeSet
    n_classes: int
    lrs: Sequence[float] = LRS
    seeds: int = 3
    refit: ProbeSet | None = None
    epochs: int = 20
    batch_size: int = 32
    log: Callable[[str], None] | None = None
    head_args: dict = field(default_factory=dict)

    def fit(self, data: ProbeSet, lr: float, seed: int, dev=None, test=None) -> dict:
        """One probe's dev and test metrics and layer weights (not the probe: under torchrun
        the result travels to the other ranks)."""
        r = train_probe(self.kind, data, self.n_classes, lr, dev=dev, test=test,
                        epochs=self.epochs, batch_size=self.batch_size, seed=seed, log=self.log,
                        **self.head_args)  # fmt: skip
        return {k: r[k] for k in ("dev", "test", "layer_weights")}


def sweep(
    kind: str,
    train: ProbeSet,
    dev: ProbeSet,
    test: ProbeSet,
    n_classes: int,
    lrs: Sequence[float] = LRS,
    seeds: int = 3,
    refit: ProbeSet | None = None,
    epochs: int = 20,
    batch_size: int = 32,
    log: Callable[[str], None] | None = None,
    **head_args,
) -> dict:
    """SUPERB-style learning-rate search, then seeds: one probe per lr in `lrs` trained on
    `train` (seed 0) and scored on `dev`; at the best lr, `seeds` probes (seeds 0..seeds-1)
    trained on `refit` (default `train`, when seed 0 is the sweep's own probe) and scored on
    `test`. Returns {"metric", "higher_is_better", "lr", "dev" {lr: dev metric}, "median",
    "spread", "values" (test per seed), "layer_weights" (mean over the seeds),
    "layer_weights_all" (per seed), "sweep_layer_weights" {lr: weights}}. Under torchrun the
    ranks share the probes (see `sweeps`)."""
    return sweeps([Sweep(kind, train, dev, test, n_classes, tuple(lrs), seeds, refit, epochs,
                         batch_size, log, head_args)])[0]  # fmt: skip


def sweeps(problems: Sequence[Sweep]) -> list[dict]:
    """`sweep` of each problem (the same results as one after another), its probes trained in
    two rounds of independent fits that the ranks share under torchrun (distributed.run_jobs):
    every (problem, lr), then every (problem, seed) at the problem's best lr. Without a refit
    split seed 0 is the sweep's own probe, so the first round scores test too (every lr's; only
    the best one's is reported)."""
    for s in problems:
        _kind(s.kind)
        if s.seeds < 1:
            raise ConfigError(f"seeds must be at least 1, got {s.seeds}")
        if not s.lrs:
            raise ConfigError("the learning-rate sweep needs at least one lr")
    # round 1: each lr on train (seed 0); without a refit split, this probe is seed 0's
    first = [(p, lr) for p, s in enumerate(problems) for lr in s.lrs]
    jobs = []
    for p, lr in first:
        s = problems[p]
        jobs.append(partial(s.fit, s.train, lr, 0, s.dev, s.test if s.refit is None else None))
    tried: list[dict] = [{} for _ in problems]  # per problem {lr: fit}
    for (p, lr), fit in zip(first, run_jobs(jobs), strict=True):
        tried[p][lr] = fit
    best = []
    for s, t in zip(problems, tried, strict=True):
        sign = 1.0 if _kind(s.kind).higher_is_better else -1.0
        best.append(max(s.lrs, key=lambda lr: sign * t[lr]["dev"]))  # ties: the first lr
    # round 2: the other seeds at the best lr, on refit (default train), scored on test
    runs = [[tried[p][best[p]]] if s.refit is None else [] for p, s in enumerate(problems)]
    second = [(p, seed) for p, s in enumerate(problems)
              for seed in range(1 if s.refit is None else 0, s.seeds)]  # fmt: skip
    jobs = []
    for p, seed in second:
        s = problems[p]
        data = s.train if s.refit is None else s.refit
        jobs.append(partial(s.fit, data, best[p], seed, test=s.test))
    for (p, _), fit in zip(second, run_jobs(jobs), strict=True):
        runs[p].append(fit)
    return [
        {
            "metric": _kind(s.kind).metric,
            "higher_is_better": _kind(s.kind).higher_is_better,
            "lr": b,
            "dev": {f"{lr:g}": t[lr]["dev"] for lr in s.lrs},
            **summarise([r["test"] for r in rs]),
            "layer_weights": mean_weights([r["layer_weights"] for r in rs]),
            "layer_weights_all": [r["layer_weights"] for r in rs],
            "sweep_layer_weights": {f"{lr:g}": t[lr]["layer_weights"] for lr in s.lrs},
        }
        for s, t, b, rs in zip(problems, tried, best, runs, strict=True)
    ]
