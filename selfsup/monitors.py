"""Collapse monitors for self-supervised training, as pure functions of tensors, and
`collapse_warnings`, which turns their values into readable one-line warnings.

A codebook can collapse onto a few entries (wav2vec 2.0 adds a diversity loss against it), a
contrastive or predictive objective can map every input to one vector or a low-dimensional
subspace (the embeddings' spread and effective rank show it), k-means targets can put most frames
in one cluster, and a contrastive task can be trivial (the positive leaks through). Each monitor
returns a dict whose keys `collapse_warnings` reads, so they merge into one:
`collapse_warnings({**codebook_usage(codes, 320), **embedding_stats(h)})`.

Legend: N rows (frames, examples), G codebook groups, V entries per group, D embedding width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.keys import IGNORE
from selfsup.layers.quantize import code_perplexity

# The thresholds collapse_warnings uses. A healthy codebook uses most of its entries (wav2vec 2.0
# reports a perplexity in the hundreds for V = 320); a collapsed one a handful.
PERPLEXITY_FRACTION = 0.1  # code perplexity below 10% of the entries per group
IN_USE_FRACTION = 0.1  # fewer than 10% of the entries used at least once in the batch
MIN_STD = 0.01  # per-dimension standard deviation, averaged over dims, below 0.01 ...
STD_FRACTION = 0.1  # ... or below 10% of its value at initialisation, when that is given
RANK_FRACTION = 0.02  # effective rank below 2% of the dims ...
MIN_RANK = 2.0  # ... or below 2 (one direction)
TRIVIAL_ACC = 0.99  # contrastive accuracy at least 99% ...
TRIVIAL_LOSS = 0.01  # ... with the mean loss below 0.01: the task is too easy to teach anything
MAX_CLUSTER_SHARE = 0.5  # one cluster holds more than half of the frames
CLUSTER_USED_FRACTION = 0.1  # fewer than 10% of the clusters have any frame


def codebook_usage(codes: torch.Tensor, n_entries: int) -> dict:
    """For codes (N, G) long (a quantizer's "codes"): "code_perplexity" (G,), the exp of the
    entropy of each group's code histogram (V when every entry is used equally, 1 with one),
    "codes_in_use" (G,), the entries used at least once, and "n_entries" V."""
    one_hot = F.one_hot(codes, n_entries)  # (N, G, V)
    return {
        "code_perplexity": code_perplexity(one_hot),
        "codes_in_use": (one_hot.sum(0) > 0).sum(-1),
        "n_entries": n_entries,
    }


def embedding_std(x: torch.Tensor) -> torch.Tensor:
    """The standard deviation over rows of each dimension of x (N, D) (population, so one row
    gives 0), averaged over the dimensions; 0 when every row is the same vector."""
    return x.float().std(0, correction=0).mean()


def effective_rank(x: torch.Tensor) -> torch.Tensor:
    """Roy and Vetterli's effective rank (2007) of x (N, D): exp of the entropy of its singular
    values normalised to sum to 1 (x is not centred, as in RankMe, arXiv:2210.02885). 1 for a
    rank-one matrix (every row a multiple of one vector), min(N, D) for orthogonal rows of equal
    norm, 0 for a zero matrix."""
    s = torch.linalg.svdvals(x.double())
    if float(s.sum()) == 0:
        return torch.zeros((), dtype=torch.float64)
    p = s / s.sum()
    return torch.exp(-torch.special.xlogy(p, p).sum())


def embedding_stats(x: torch.Tensor) -> dict:
    """ "embedding_std", "effective_rank" and "dim" of embeddings x (N, D)."""
    return {
        "embedding_std": embedding_std(x),
        "effective_rank": effective_rank(x),
        "dim": x.shape[-1],
    }


def moment_stats(total: torch.Tensor, gram: torch.Tensor, n: torch.Tensor | float) -> dict:
    """`embedding_stats` of N rows x (N, D) from their moments: total (D,) the sum of the rows,
    gram (D, D) x^T x and n = N. Moments add over shards (ranks, batches), so the statistics of
    rows spread over ranks come from summed moments, without gathering the rows. The singular
    values of x are the square roots of gram's eigenvalues."""
    n = torch.as_tensor(n, dtype=torch.float64).clamp(min=1)
    total, gram = total.double(), gram.double()
    var = (gram.diagonal() / n - (total / n) ** 2).clamp(min=0)  # population variance per dim
    s = torch.linalg.eigvalsh(gram).clamp(min=0).sqrt()
    rank = torch.zeros((), dtype=torch.float64)
    if float(s.sum()) > 0:
        p = s / s.sum()
        rank = torch.exp(-torch.special.xlogy(p, p).sum())
    return {"embedding_std": var.sqrt().mean(), "effective_rank": rank, "dim": gram.shape[-1]}


def cluster_usage(labels: torch.Tensor, k: int) -> dict:
    """For cluster labels (N,) in [0, k) (IGNORE skipped): "cluster_used_fraction", the share of
    the k clusters with at least one frame, and "cluster_max_share", the largest cluster's share
    of the frames."""
    labels = labels[labels != IGNORE]
    counts = torch.bincount(labels, minlength=k).double()
    return {
        "cluster_used_fraction": (counts > 0).double().mean(),
        "cluster_max_share": counts.max() / counts.sum().clamp(min=1),
    }


def collapse_warnings(metrics: dict) -> list[str]:
    """One readable line per sign of collapse in `metrics`, [] when none; the keys it reads,
    each optional, and the thresholds (module constants):

    - "code_perplexity", "codes_in_use" (per group, with "n_entries" V): perplexity below
      PERPLEXITY_FRACTION * V, or fewer than IN_USE_FRACTION * V entries in use; with
      "code_frames" N (the frames the statistics were counted over), V is min(V, N), since N
      frames can use at most N entries;
    - "embedding_std": below MIN_STD, or below STD_FRACTION * "initial_embedding_std" if given;
    - "effective_rank" (with "dim"): below max(MIN_RANK, RANK_FRACTION * dim);
    - "contrastive_acc" and "contrastive_loss" (means): accuracy at least TRIVIAL_ACC with the
      loss below TRIVIAL_LOSS, a trivial task (the positive leaks, or the negatives are too easy);
    - "cluster_max_share" above MAX_CLUSTER_SHARE, "cluster_used_fraction" below
      CLUSTER_USED_FRACTION.
    Values may be numbers or tensors; per-group values one per group."""
    out = []
    V = metrics.get("n_entries")
    if V is not None:
        # N frames use at most N entries: a small held-out batch is judged against that bound
        frames = metrics.get("code_frames")
        bound = V if frames is None else min(V, max(1, int(_float(frames))))
        of = f"{V} entries" if bound == V else f"{V} entries, {bound} frames"
        for g, p in enumerate(_floats(metrics.get("code_perplexity"))):
            if p < PERPLEXITY_FRACTION * bound:
                out.append(
                    f"codebook group {g}: perplexity {p:.1f} of {of} "
                    f"(< {PERPLEXITY_FRACTION:.0%}): the codes are collapsing"
                )
        for g, n in enumerate(_floats(metrics.get("codes_in_use"))):
            if n < IN_USE_FRACTION * bound:
                out.append(
                    f"codebook group {g}: {n:.0f} of {of} in use "
                    f"(< {IN_USE_FRACTION:.0%}): the codebook is collapsing"
                )
    if "embedding_std" in metrics:
        std = _float(metrics["embedding_std"])
        initial = metrics.get("initial_embedding_std")
        if std < MIN_STD:
            out.append(
                f"embedding std {std:.2g} (< {MIN_STD}): the embeddings are collapsing "
                "to a constant"
            )
        elif initial is not None and std < STD_FRACTION * _float(initial):
            out.append(
                f"embedding std {std:.2g}, {std / _float(initial):.1%} of its initial "
                f"{_float(initial):.2g} (< {STD_FRACTION:.0%}): the embeddings are "
                "collapsing"
            )
    if "effective_rank" in metrics:
        rank = _float(metrics["effective_rank"])
        dim = metrics.get("dim")
        floor = MIN_RANK if dim is None else max(MIN_RANK, RANK_FRACTION * dim)
        if rank < floor:
            of = "" if dim is None else f" of {dim} dims"
            out.append(
                f"embedding effective rank {rank:.2f}{of} (< {floor:.3g}): dimensional collapse"
            )
    if "contrastive_acc" in metrics and "contrastive_loss" in metrics:
        acc, loss = _float(metrics["contrastive_acc"]), _float(metrics["contrastive_loss"])
        if acc >= TRIVIAL_ACC and loss < TRIVIAL_LOSS:
            out.append(
                f"contrastive accuracy {acc:.3f} with loss {loss:.2g}: the task is "
                "trivial (a leaking positive or too easy negatives?)"
            )
    if "cluster_max_share" in metrics:
        share = _float(metrics["cluster_max_share"])
        if share > MAX_CLUSTER_SHARE:
            out.append(
                f"one cluster holds {share:.0%} of the frames "
                f"(> {MAX_CLUSTER_SHARE:.0%}): the targets are collapsing"
            )
    if "cluster_used_fraction" in metrics:
        used = _float(metrics["cluster_used_fraction"])
        if used < CLUSTER_USED_FRACTION:
            out.append(
                f"only {used:.1%} of the clusters have frames (< {CLUSTER_USED_FRACTION:.0%})"
            )
    return out


def _float(v) -> float:
    return float(v.item() if isinstance(v, torch.Tensor) else v)


def _floats(v) -> list[float]:
    """Per-group values as floats ([] for None, one value for a scalar)."""
    if v is None:
        return []
    if isinstance(v, torch.Tensor):
        return [float(x) for x in v.reshape(-1).tolist()]
    if isinstance(v, int | float):
        return [float(v)]
    return [float(x) for x in v]
