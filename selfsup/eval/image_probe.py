"""Frozen-feature evaluation of image backbones: features computed once with the backbone in
eval mode, a weighted kNN classifier, a linear probe with its own learning-rate sweep, and the
plots (t-SNE of the features, collapse monitors over pretraining).

The evaluation bugs users of solo-learn and lightly report are ruled out by construction here:
`extract_features` runs the backbone under no_grad with every module in eval mode (so neither
its weights nor its BatchNorm statistics move, dropout is off, and a feature does not depend on
the other images of its batch), restores each module's own mode afterwards, and the probes only
ever see the cached feature matrix; the kNN defaults are written down (k = 200, cosine,
temperature 0.1, as lightly reports them) and are arguments, not hidden state.

- kNN: the weighted vote of Wu et al. (arXiv:1805.01978, section 3.4, "weighted kNN": each of
  the k nearest training features by cosine similarity s votes for its class with weight
  exp(s / temperature)), as lightly's and solo-learn's kNN monitors compute it.
- Linear probe: softmax regression on standardised features, mini-batch AdamW with a cosine
  learning-rate decay, the lr picked on a held-out part of the training set, then refitted on
  the whole training set (see `linear_probe` for why Adam).

Legend: N images (N_train, N_test), H x W pixels, D feature width, C classes, K neighbours,
B rows of a chunk or mini-batch.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import ConfigError

KNN_K = 200  # lightly's kNN monitor (knn_k=200, knn_t=0.1); solo-learn's: k 20, T 0.07
KNN_TEMPERATURE = 0.1
# AdamW on standardised features: one grid fits any backbone (raw pixels picked its lowest
# point, 1e-3, when it started there: so it starts lower)
LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
EPOCHS = 30
BATCH_SIZE = 256


def _tensor(x, dtype: torch.dtype | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if dtype is None else x.to(dtype)
    if isinstance(x, np.ndarray) and not x.flags.writeable:  # the image cache is read-only
        x = np.array(x)
    return torch.as_tensor(x, dtype=dtype)


def _check_images(images) -> None:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3), got shape {tuple(images.shape)}")
    if images.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"images must be uint8, got {images.dtype}")


# ---------------------------------------------------------------------------------------------
# features


def _device(module) -> torch.device:
    if not isinstance(module, nn.Module):
        return torch.device("cpu")
    p = next(module.parameters(), None)
    if p is None:
        p = next(module.buffers(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def extract_features(
    encoder: nn.Module | Callable[[torch.Tensor], dict],
    images_uint8: np.ndarray | torch.Tensor,
    batch_size: int = 256,
    key: str = "pooled",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(N, D) float32 CPU features `encoder(images)[key]` of uint8 images (N, H, W, 3), fed to
    the encoder in batches as (B, 3, H, W) float32 in [0, 1].

    Every module of the encoder is in eval mode during the extraction and gets its own previous
    mode back afterwards (module by module, so a deliberately mixed state survives): BatchNorm
    uses and keeps its running statistics, dropout is off, so a feature is a function of its
    image alone, whatever batch it was computed in. No gradient is recorded. `device` defaults
    to the encoder's (its first parameter's or buffer's); `encoder` may also be any callable
    that takes the batch and returns a dict."""
    _check_images(images_uint8)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if len(images_uint8) == 0:
        raise ConfigError("no images to extract features from")
    device = torch.device(device) if device is not None else _device(encoder)
    modes = [(m, m.training) for m in encoder.modules()] if isinstance(encoder, nn.Module) else []
    for m, _ in modes:
        m.training = False  # what encoder.eval() does, without calling an overridden train()
    try:
        out = []
        for start in range(0, len(images_uint8), batch_size):
            # uint8 travels to the device (4x less than float), converted there
            batch = _tensor(images_uint8[start : start + batch_size]).to(device)  # (B, H, W, 3)
            x = batch.permute(0, 3, 1, 2).float().div_(255.0).contiguous()  # (B, 3, H, W)
            result = encoder(x)
            if key not in result:
                raise KeyError(f"the encoder returned {sorted(result)}, not {key!r}")
            out.append(result[key].float().cpu())  # (B, D)
    finally:
        for m, training in modes:
            m.training = training
    return torch.cat(out)  # (N, D)


def pixel_features(images_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The `pixels` baseline: each image (H, W, 3) uint8 flattened to H * W * 3 float32 values
    in [0, 1] (in H, W, channel order): (N, H * W * 3)."""
    _check_images(images_uint8)
    x = _tensor(images_uint8)
    return x.reshape(len(x), -1).float().div_(255.0)  # (N, H*W*3)


# ---------------------------------------------------------------------------------------------
# kNN


def knn_predict(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    n_classes: int | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """(N_test,) long: the weighted kNN class of each test feature (Wu et al. arXiv:1805.01978,
    the kNN of lightly's and solo-learn's monitors): features L2-normalised, the k training
    features of highest cosine similarity s vote with weight exp(s / temperature) summed per
    class, the class with the largest sum wins; a tied sum goes to the lower class id.

    k larger than N_train is clamped to N_train (every training feature votes), as solo-learn
    does, rather than refused: a small labelled subset still gets its kNN score. Neighbours tied
    at the k-th similarity are picked by torch.topk (deterministic, unspecified order). The
    weights are computed as exp((s - s_max) / temperature), the same votes up to one factor per
    test row, so a small temperature cannot overflow. Test rows go `chunk` at a time, so memory
    is chunk x N_train; n_classes defaults to max(train_y) + 1."""
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if not temperature > 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    if chunk < 1:
        raise ConfigError(f"chunk must be at least 1, got {chunk}")
    train_f, test_f = _tensor(train_f), _tensor(test_f)
    train_y = _tensor(train_y).long().to(train_f.device)
    if train_f.ndim != 2 or test_f.ndim != 2 or train_f.shape[1] != test_f.shape[1]:
        raise ValueError(f"features must be (N, D) alike, got {tuple(train_f.shape)} and "
                         f"{tuple(test_f.shape)}")  # fmt: skip
    if len(train_y) != len(train_f) or len(train_f) == 0:
        raise ValueError(f"{len(train_f)} training features for {len(train_y)} labels")
    C = int(train_y.max()) + 1 if n_classes is None else n_classes
    if int(train_y.min()) < 0 or int(train_y.max()) >= C:
        raise ValueError(f"training labels must lie in [0, {C})")
    k = min(k, len(train_f))
    bank = F.normalize(train_f.float(), dim=1)  # (N_train, D)
    out = []
    for start in range(0, len(test_f), chunk):
        q = F.normalize(test_f[start : start + chunk].float().to(bank.device), dim=1)  # (B, D)
        sim, idx = (q @ bank.T).topk(k, dim=1)  # (B, K), descending
        weight = ((sim - sim[:, :1]) / temperature).exp()  # (B, K)
        votes = torch.zeros(len(q), C, dtype=weight.dtype, device=weight.device)
        votes.scatter_add_(1, train_y[idx], weight)  # (B, C)
        out.append(votes.argmax(1))  # argmax returns the first maximum: the lower class id
    return torch.cat(out).cpu() if out else torch.zeros(0, dtype=torch.long)


def knn_accuracy(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    n_classes: int | None = None,
    chunk: int = 1024,
) -> float:
    """The share of test features whose `knn_predict` class is their label."""
    pred = knn_predict(train_f, train_y, test_f, k, temperature, n_classes, chunk)
    test_y = _tensor(test_y).long().cpu()
    if len(test_y) != len(pred) or len(pred) == 0:
        raise ValueError(f"{len(pred)} test features for {len(test_y)} labels")
    return float((pred == test_y).double().mean())


# ---------------------------------------------------------------------------------------------
# linear probe


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Each tensor centred and scaled by the training rows' per-dimension mean and std (a
    constant dimension becomes 0)."""
    mean, std = train.mean(0), train.std(0, correction=0).clamp_min(1e-6)  # (D,)
    return [(x - mean) / std for x in (train, *others)]


def _softmax_regression_grads(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mean cross-entropy of logits x w^T + b against y, and its gradients with respect to
    w (C, D) and b (C,): d loss / d logits = (softmax - one_hot(y)) / B, written out rather
    than left to autograd, which costs more than the matmuls at these sizes."""
    logits = F.linear(x, w, b)  # (B, C)
    log_p = logits.log_softmax(1)
    loss = -log_p.gather(1, y[:, None]).mean()
    g = log_p.exp_()  # (B, C) softmax, then minus the one-hot, over B
    g[torch.arange(len(y), device=y.device), y] -= 1.0
    g /= len(y)
    return loss, g.T @ x, g.sum(0)  # (), (C, D), (C,)


def _fit_linear(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    lr: float,
    epochs: int,
    batch_size: int,
    weight_decay: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax regression weights (C, D) and bias (C,) fitted to standardised x (N, D): AdamW
    (torch's fused kernel on the CPU), lr decayed to 0 by a cosine over all steps, mini-batches
    in an order drawn from `generator`, initialised as nn.Linear is (uniform in +-1/sqrt(D))
    from the same generator."""
    N, D = x.shape
    bound = 1.0 / math.sqrt(D)
    rand = torch.rand(n_classes * D + n_classes, generator=generator) * 2 - 1
    # (C, D), nn.Linear's layout: its weight gradient (B, C)^T @ (B, D) is the fast matmul here
    w = (rand[: n_classes * D] * bound).reshape(n_classes, D).to(x.device)
    b = (rand[n_classes * D :] * bound).to(x.device)
    opt = torch.optim.AdamW([w, b], lr=lr, weight_decay=weight_decay, fused=True)
    total = epochs * math.ceil(N / batch_size)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(N, generator=generator).to(x.device)
        xs, ys = x[order], y[order]  # one gather per epoch, then contiguous slices
        for start in range(0, N, batch_size):
            _, w.grad, b.grad = _softmax_regression_grads(
                xs[start : start + batch_size], ys[start : start + batch_size], w, b
            )
            opt.param_groups[0]["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            opt.step()
            step += 1
    return w, b


def _accuracy(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> float:
    return float((F.linear(x, w, b).argmax(1) == y).double().mean())


def linear_probe(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    seed: int,
    lrs: Sequence[float] = LRS,
    epochs: int = EPOCHS,
    batch_size: int = BATCH_SIZE,
    weight_decay: float = 0.0,
    heldout_fraction: float = 0.1,
    n_classes: int | None = None,
) -> dict:
    """A linear classifier on frozen features, test data never used for any choice.

    1. The training rows are split (a permutation drawn from a generator seeded by `seed`) into
       a held-out part (`heldout_fraction`) and the rest; for each lr in `lrs` a classifier is
       fitted (from the same seeded init and batch order, so the sweep compares lrs alone) on
       the rest (features standardised by the rest's mean and std) and scored on the
       held-out part. The best held-out accuracy picks the lr (ties: the first in `lrs`).
    2. A classifier at that lr is fitted on the whole training set (standardised by its own
       mean and std, which are then applied to the test features) and scored on the test set.

    Fitting: softmax regression (cross-entropy), mini-batch AdamW for `epochs` epochs with the
    lr decayed to 0 by a cosine, init and batch order drawn from the seeded generator. Adam
    rather than SGD with momentum because its step is invariant to the scale of each feature,
    so one small lr grid fits every backbone (and the pixels), where SGD's good lr moves with
    the features' conditioning. With the decay it gets close to the convex optimum in a few
    tens of epochs: on 20,000 x 512 noisy clustered features, 30 epochs at lr 3e-3 to 3e-2 end
    within 0.002 nats of the full-batch L-BFGS optimum of the training loss, and the whole
    probe (5 lrs + refit) takes 16-26 s on one thread of a shared CPU. solo-learn and lightly
    use SGD (lr 0.1, cosine) because they train on augmented images for ~100 epochs; on
    cached features there are no augmentations to average over.
    weight_decay is AdamW's decoupled decay (0: none). n_classes defaults to max(train_y) + 1.

    Returns {"accuracy" (test), "lr" (picked), "sweep" {lr: held-out accuracy}, "seed",
    "train_accuracy" (the refitted classifier's on the whole training set), "seconds"}."""
    if not lrs or any(not lr > 0 for lr in lrs):
        raise ConfigError(f"lrs must be a non-empty list of positive learning rates, got {lrs}")
    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"epochs and batch_size must be positive, got {epochs}, {batch_size}")
    if not 0 < heldout_fraction < 1:
        raise ConfigError(f"heldout_fraction must lie in (0, 1), got {heldout_fraction}")
    if weight_decay < 0:
        raise ConfigError(f"weight_decay must be non-negative, got {weight_decay}")
    start = time.perf_counter()
    x, x_test = _tensor(train_f).float(), _tensor(test_f).float()
    y = _tensor(train_y).long().to(x.device)
    y_test = _tensor(test_y).long().to(x.device)
    x_test = x_test.to(x.device)
    if x.ndim != 2 or x_test.ndim != 2 or x.shape[1] != x_test.shape[1]:
        raise ValueError(f"features must be (N, D) alike, got {tuple(x.shape)} and "
                         f"{tuple(x_test.shape)}")  # fmt: skip
    if len(y) != len(x) or len(y_test) != len(x_test):
        raise ValueError("each feature matrix needs one label per row")
    N = len(x)
    n_held = max(1, round(heldout_fraction * N))
    if N - n_held < 1:
        raise ConfigError(f"{N} training rows are too few to hold {heldout_fraction:g} out")
    C = int(y.max()) + 1 if n_classes is None else n_classes
    if int(y.min()) < 0 or int(y.max()) >= C:
        raise ValueError(f"training labels must lie in [0, {C})")

    order = torch.randperm(N, generator=torch.Generator().manual_seed(seed)).to(x.device)
    held, fit = order[:n_held], order[n_held:]
    x_fit, x_held = _standardise(x[fit], x[held])
    sweep = {}
    for lr in lrs:
        g = torch.Generator().manual_seed(seed)  # every lr: the same init and batch order
        w, b = _fit_linear(x_fit, y[fit], C, lr, epochs, batch_size, weight_decay, g)
        sweep[float(lr)] = _accuracy(x_held, y[held], w, b)
    best = max(sweep, key=sweep.get)  # max keeps the first of equal values: ties -> first lr

    x_all, x_test = _standardise(x, x_test)
    g = torch.Generator().manual_seed(seed)
    w, b = _fit_linear(x_all, y, C, best, epochs, batch_size, weight_decay, g)
    return {
        "accuracy": _accuracy(x_test, y_test, w, b),
        "lr": best,
        "sweep": sweep,
        "seed": seed,
        "train_accuracy": _accuracy(x_all, y, w, b),
        "seconds": time.perf_counter() - start,
    }


# ---------------------------------------------------------------------------------------------
# both probes over seeds


def probe(
    features_train: torch.Tensor,
    y_train: torch.Tensor,
    features_test: torch.Tensor,
    y_test: torch.Tensor,
    method: str,
    seeds: Sequence[int] = (0, 1, 2),
    **kw,
) -> dict:
    """Test accuracy of `method` ("knn": knn_accuracy, "linear": linear_probe, `kw` going to
    it) as {"method", "mean", "std" (sample std over the runs, 0 for one), "spread" (max - min),
    "runs": [...]}. The linear probe runs once per seed (its split, init and batch order);
    kNN has no randomness, so it runs once, whatever the seeds, with std and spread 0
    ("deterministic": True says so)."""
    if method == "knn":
        k, temperature = kw.get("k", KNN_K), kw.get("temperature", KNN_TEMPERATURE)
        acc = knn_accuracy(features_train, y_train, features_test, y_test, **kw)
        runs = [{"accuracy": acc, "k": min(k, len(features_train)), "temperature": temperature}]
    elif method == "linear":
        if not seeds:
            raise ConfigError("the linear probe needs at least one seed")
        runs = [linear_probe(features_train, y_train, features_test, y_test, seed=s, **kw)
                for s in seeds]  # fmt: skip
    else:
        raise ConfigError(f"unknown probe method {method!r}; choose knn or linear")
    accs = [r["accuracy"] for r in runs]
    return {
        "method": method,
        "mean": statistics.fmean(accs),
        "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "spread": max(accs) - min(accs),
        "runs": runs,
        "deterministic": method == "knn",
    }


# ---------------------------------------------------------------------------------------------
# plots (matplotlib's Agg canvas on a Figure: no pyplot, no global backend switch)


def _save_png(fig, path: str | os.PathLike) -> Path:
    """Write `fig` as a PNG to `path` in one step: a temporary file beside it, then a rename,
    so a reader never sees half a file."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    FigureCanvasAgg(fig)
    try:
        with open(tmp, "wb") as f:
            fig.savefig(f, format="png", dpi=120)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _colours(n: int):
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](i / max(1, n - 1)) for i in range(n)]


def tsne_plot(
    features: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str] | None,
    path: str | os.PathLike,
    seed: int = 0,
    max_points: int = 2000,
    title: str = "",
    max_iter: int = 1000,
) -> Path:
    """A PNG scatter of a t-SNE map (van der Maaten and Hinton 2008; sklearn's TSNE, PCA init,
    perplexity 30 or (n - 1) / 3 when fewer points) of at most `max_points` features (N, D),
    a subsample drawn from a generator seeded by `seed` (which also seeds t-SNE), coloured by
    class with a legend of `classes` names (class ids when None). Returns the path."""
    from matplotlib.figure import Figure
    from sklearn.manifold import TSNE

    x = _tensor(features).float().cpu()
    y = _tensor(labels).long().cpu()
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"features (N, D) with N labels expected, got {tuple(x.shape)}, {len(y)}")
    if max_points < 5 or len(x) < 5:
        raise ConfigError(f"t-SNE needs at least 5 points, got {min(len(x), max_points)}")
    if len(x) > max_points:
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        keep = keep[:max_points].sort().values
        x, y = x[keep], y[keep]
    perplexity = min(30.0, (len(x) - 1) / 3)
    xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed,
              max_iter=max_iter).fit_transform(x.double().numpy())  # fmt: skip  # (N, 2)
    ids = sorted(set(y.tolist()))
    n_colours = len(classes) if classes else max(ids) + 1
    colours = _colours(n_colours)
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot()
    labels_np = y.numpy()
    for c in ids:
        pts = xy[labels_np == c]
        name = classes[c] if classes and c < len(classes) else str(c)
        ax.scatter(pts[:, 0], pts[:, 1], s=6, color=colours[c % n_colours], label=name)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"t-SNE of {len(x)} features")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2.5, fontsize=8,
              frameon=False)  # fmt: skip
    fig.tight_layout()
    return _save_png(fig, path)


def collapse_plot(
    metrics_rows: Sequence[Mapping] | Mapping[str, Sequence[Mapping]],
    path: str | os.PathLike,
    keys: Sequence[str] = ("embed_std", "embed_rank"),
    labels: Sequence[str] | None = None,
) -> Path:
    """A PNG with one panel per key in `keys` and one line per run: the key's value against
    "step" over a run's metrics rows (the dicts of its metrics.jsonl; rows without the key are
    skipped, as eval rows are in a train key's panel). `metrics_rows` is one run's rows, or
    {run name: rows} for several runs on one figure (the collapse experiments). The defaults
    are the image objectives' monitors of the compared embeddings (objectives/image_base.py:
    per-dimension std and effective rank; "feature_std", "feature_rank" are the backbone's).
    `labels` are the panels' y-axis titles (default: the keys). Returns the path."""
    from matplotlib.figure import Figure

    runs = dict(metrics_rows) if isinstance(metrics_rows, Mapping) else {"": metrics_rows}
    if not keys:
        raise ConfigError("collapse_plot needs at least one key")
    if labels is not None and len(labels) != len(keys):
        raise ConfigError(f"{len(labels)} labels for {len(keys)} keys")
    fig = Figure(figsize=(5 * len(keys), 4))
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    colours = _colours(len(runs))
    for ax, key, label in zip(axes, keys, labels or keys, strict=True):
        drawn = 0
        for (name, rows), colour in zip(runs.items(), colours, strict=True):
            pts = [(r["step"], float(r[key])) for r in rows
                   if r.get(key) is not None and "step" in r]  # fmt: skip
            if pts:
                steps, values = zip(*sorted(pts), strict=True)
                ax.plot(
                    steps,
                    values,
                    color=colour,
                    label=name or None,
                    linewidth=1.5,
                    marker="o",
                    markersize=3,
                )  # (a run of one point shows)
                drawn += 1
        if not drawn:
            raise ConfigError(f"no metrics row has {key!r} (and a step)")
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if any(runs):
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _save_png(fig, path)
