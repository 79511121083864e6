"""k-means for HuBERT's targets (arXiv:2106.07447, 3.2: k-means on MFCCs, 100 clusters, then on
the trained model's features, 500): Lloyd's algorithm, a streaming mini-batch variant for more
frames than fit in one pass, batched assignment, and centroids saved as .npy with a JSON note.

Features are (N, D) float tensors or numpy arrays (a np.memmap works: rows are read `chunk` at a
time, so millions of frames never need a second copy, nor an (N, k) distance matrix).
Randomness comes from an explicit torch.Generator.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from selfsup.errors import ConfigError

CHUNK = 65536  # rows whose distances to every centroid exist at once: (65536, k) floats


def _rows(x) -> torch.Tensor:
    """x as a float tensor without a copy where possible (numpy arrays and memmaps included)."""
    if isinstance(x, np.ndarray):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a read-only memmap: nothing writes
            x = torch.from_numpy(x)
    if x.ndim != 2:
        raise ConfigError(f"k-means needs (frames, dim) features, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ConfigError("k-means got no frames")
    return x if x.is_floating_point() else x.float()


def _check(x: torch.Tensor, centroids: torch.Tensor) -> None:
    if x.shape[1] != centroids.shape[1]:
        raise ConfigError(
            f"features have dim {x.shape[1]} but the centroids have dim {centroids.shape[1]}"
        )


def _nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = CHUNK):
    """(labels (N,) long, squared distances (N,) float64) of each row's nearest centroid."""
    c = centroids.to(x.dtype)
    c_sq = c.pow(2).sum(1)  # (k,)
    labels = torch.empty(x.shape[0], dtype=torch.long)
    dist = torch.empty(x.shape[0], dtype=torch.float64)
    for s in range(0, x.shape[0], chunk):
        xc = x[s : s + chunk]
        d = xc.pow(2).sum(1, keepdim=True) - 2 * xc @ c.t() + c_sq  # (C, k)
        best, labels[s : s + chunk] = d.min(1)
        dist[s : s + chunk] = best.clamp(min=0).double()
    return labels, dist


def assign(x, centroids: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """(N,) long: the nearest centroid (Euclidean) of each row of x (N, D), `chunk` rows at a
    time. HuBERT's frame labels."""
    x = _rows(x)
    _check(x, centroids)
    return _nearest(x, centroids, chunk)[0]


def inertia(x, centroids: torch.Tensor, chunk: int = CHUNK) -> float:
    """Sum over rows of the squared distance to the nearest centroid (k-means' objective),
    computed as ||x - c||^2 directly, not through the expansion the assignment uses."""
    x = _rows(x)
    _check(x, centroids)
    return _inertia(x, centroids, _nearest(x, centroids, chunk)[0], chunk)


def _inertia(x, centroids, labels, chunk=CHUNK) -> float:
    c = centroids.to(x.dtype)
    total = 0.0
    for s in range(0, x.shape[0], chunk):
        total += float((x[s : s + chunk] - c[labels[s : s + chunk]]).double().pow(2).sum())
    return total


def kmeans_plusplus(x, k: int, generator: torch.Generator) -> torch.Tensor:
    """(k, D) initial centroids by greedy k-means++ (Arthur and Vassilvitskii 2007, with
    2 + floor(ln k) candidates per step, keeping the one that lowers the objective most): the
    first a uniform row, each next drawn with probability proportional to the squared distance
    to the nearest centroid chosen so far. Costs O(k log k) passes over x: run it on a sample."""
    x = _rows(x)
    N = x.shape[0]
    if k > N:
        raise ConfigError(f"k-means: k={k} clusters but only {N} frames")
    trials = 2 + int(math.log(k))
    xd = x.double()
    x_sq = xd.pow(2).sum(1)  # (N,)

    def sq_dist(rows: torch.Tensor) -> torch.Tensor:  # (R, N) from the rows picked to every x
        p = xd[rows]
        return (x_sq[None] - 2 * p @ xd.t() + p.pow(2).sum(1, keepdim=True)).clamp(min=0)

    first = int(torch.randint(N, (1,), generator=generator))
    chosen = [first]
    closest = sq_dist(torch.tensor([first]))[0]  # (N,)
    for _ in range(1, k):
        u = torch.rand(trials, generator=generator, dtype=torch.float64) * closest.sum()
        cand = torch.searchsorted(closest.cumsum(0), u).clamp(max=N - 1)  # (trials,)
        d = torch.minimum(closest[None], sq_dist(cand))  # (trials, N)
        best = int(d.sum(1).argmin())
        chosen.append(int(cand[best]))
        closest = d[best]
    return x[torch.tensor(chosen)].clone()


def kmeans(
    x,
    k: int,
    init: torch.Tensor | str = "k-means++",
    iters: int = 300,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
    chunk: int = CHUNK,
) -> tuple[torch.Tensor, float]:
    """Lloyd's k-means on x (N, D): (centroids (k, D) in x's dtype, inertia).

    init: (k, D) centroids, or "k-means++" drawn from `generator`. Stops after `iters` rounds,
    when no label changes, or when the squared centroid shift summed over centroids is at most
    tol times the mean per-dimension variance of x (scikit-learn's rule and defaults, so with
    the same initial centroids the result equals sklearn.cluster.KMeans(n_init=1,
    algorithm="lloyd")). A cluster left empty takes the row farthest from its centroid, as in
    scikit-learn. Labels: `assign(x, centroids)`."""
    x = _rows(x)
    N, D = x.shape
    if k > N:
        raise ConfigError(f"k-means: k={k} clusters but only {N} frames")
    if isinstance(init, str):
        if init != "k-means++":
            raise ConfigError(f"k-means init must be 'k-means++' or a (k, D) tensor, got {init!r}")
        if generator is None:
            raise ConfigError("k-means++ initialisation needs a generator")
        centroids = kmeans_plusplus(x, k, generator)
    else:
        centroids = torch.as_tensor(init).to(x.dtype).clone()
        if centroids.shape != (k, D):
            raise ConfigError(f"k-means init has shape {tuple(centroids.shape)}, not ({k}, {D})")
    mean, sq = torch.zeros(D, dtype=torch.float64), torch.zeros(D, dtype=torch.float64)
    for s in range(0, N, chunk):
        mean += x[s : s + chunk].double().sum(0)
        sq += x[s : s + chunk].double().pow(2).sum(0)
    tol_abs = tol * float((sq / N - (mean / N) ** 2).mean())
    previous = None
    for _ in range(iters):
        labels, dist = _nearest(x, centroids, chunk)
        updated = _means(x, labels, dist, centroids, chunk)
        shift = float((updated - centroids).double().pow(2).sum())
        centroids = updated
        if previous is not None and torch.equal(labels, previous):
            break
        if shift <= tol_abs:
            break
        previous = labels
    labels, _ = _nearest(x, centroids, chunk)
    return centroids, _inertia(x, centroids, labels, chunk)


def _means(x, labels, dist, centroids, chunk=CHUNK) -> torch.Tensor:
    """Each cluster's mean; an empty cluster takes the farthest row instead (moved out of its
    own cluster's sum), farthest first."""
    k = centroids.shape[0]
    sums = torch.zeros(k, x.shape[1], dtype=torch.float64)
    for s in range(0, x.shape[0], chunk):
        sums.index_add_(0, labels[s : s + chunk], x[s : s + chunk].double())
    counts = torch.bincount(labels, minlength=k).double()
    empty = (counts == 0).nonzero().squeeze(1)
    if len(empty):
        far = dist.topk(len(empty)).indices
        for j, i in zip(empty.tolist(), far.tolist(), strict=True):
            sums[labels[i]] -= x[i].double()
            counts[labels[i]] -= 1
            sums[j], counts[j] = x[i].double(), 1
    return (sums / counts.clamp(min=1)[:, None]).to(x.dtype)


class StreamingKMeans:
    """Mini-batch k-means (Sculley 2010, the update of scikit-learn's MiniBatchKMeans without
    its random reassignment, as HuBERT ran it with reassignment_ratio=0): `partial_fit(batch)`
    assigns the batch to the current centroids, then moves each centroid to the mean of every
    row it has been given so far, i.e. a per-row learning rate 1 / count. The first batch
    initialises the centroids by k-means++ (from `generator`) unless `init` (k, D) is given.
    Centroids and counts are float64."""

    def __init__(self, k: int, generator: torch.Generator, init: torch.Tensor | None = None):
        self.k, self.generator = k, generator
        self.centroids = None if init is None else torch.as_tensor(init).double().clone()
        if self.centroids is not None and self.centroids.shape[0] != k:
            raise ConfigError(f"init has {self.centroids.shape[0]} centroids, not k={k}")
        self.counts = torch.zeros(k, dtype=torch.float64)

    def partial_fit(self, batch) -> StreamingKMeans:
        x = _rows(batch).double()
        if self.centroids is None:
            self.centroids = kmeans_plusplus(x, self.k, self.generator)
        _check(x, self.centroids)
        labels, _ = _nearest(x, self.centroids)
        n = torch.bincount(labels, minlength=self.k).double()  # (k,)
        sums = torch.zeros_like(self.centroids).index_add_(0, labels, x)  # (k, D)
        self.counts += n
        hit = n > 0
        step = (sums[hit] - n[hit, None] * self.centroids[hit]) / self.counts[hit, None]
        self.centroids[hit] += step
        return self


def save_centroids(path: str | Path, centroids: torch.Tensor, settings: dict | None = None) -> Path:
    """Write centroids (k, D) to `path` (.npy, no pickle) and, beside it with .json, their k, dim,
    dtype and `settings` (features, layer, iterations, seed: whatever made them). Returns the
    .npy path."""
    path = Path(path)
    c = centroids.detach().cpu().numpy()
    with open(path, "wb") as f:
        np.save(f, c, allow_pickle=False)
    info = {
        "k": int(c.shape[0]),
        "dim": int(c.shape[1]),
        "dtype": str(c.dtype),
        "settings": settings or {},
    }
    path.with_suffix(".json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return path


def load_centroids(path: str | Path, dim: int | None = None) -> tuple[torch.Tensor, dict]:
    """(centroids (k, D), the JSON note beside them, {} without one) from `save_centroids`'s
    files; ConfigError when missing, unreadable, not matching their note, or not `dim` wide."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no centroids file {path}")
    try:
        c = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ConfigError(f"{path} is not a centroids .npy file ({e})") from None
    note = path.with_suffix(".json")
    info = json.loads(note.read_text()) if note.is_file() else {}
    if c.ndim != 2:
        raise ConfigError(f"centroids in {path} have shape {c.shape}, not (k, dim)")
    if info and (info.get("k"), info.get("dim")) != c.shape:
        raise ConfigError(
            f"centroids in {path} have shape {c.shape} but {note.name} says "
            f"k={info.get('k')}, dim={info.get('dim')}"
        )
    if dim is not None and c.shape[1] != dim:
        raise ConfigError(f"centroids in {path} have dim {c.shape[1]}, the features {dim}")
    return torch.from_numpy(c), info
