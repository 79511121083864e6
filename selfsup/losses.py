"""Losses as pure functions of tensors. Objectives apply them; models never own a loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.keys import IGNORE
from selfsup.layers.linear import linear, matmul
from selfsup.layers.quantize import code_perplexity


def masked_ce(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over the rows of (M, V) logits whose target is not IGNORE: their mean, or
    with `reduction="sum"` their sum (objectives return sums; the loop divides by the counts).

    With MLM the rows are already the masked positions only (BERT, arXiv:1810.04805, eq. in 3.1).
    Wide rows (the MLM vocabulary) go through _SoftmaxCrossEntropy, the same value and gradient
    as F.cross_entropy with half the passes over the (M, V) logits.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be mean or sum, got {reduction!r}")
    if logits.shape[-1] >= WIDE_ROWS and logits.requires_grad:
        return _SoftmaxCrossEntropy.apply(logits.float(), targets, reduction == "sum")
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE, reduction=reduction)


WIDE_ROWS = 1024  # classes from which the fused softmax cross-entropy pays off


class _SoftmaxCrossEntropy(torch.autograd.Function):
    """mean over kept rows of logsumexp(x) - x[target]; its gradient is softmax(x) - onehot.

    F.cross_entropy keeps log_softmax(x), then in backward zero-fills an (M, V) buffer for the
    NLL gradient and makes a third (M, V) tensor for the log-softmax gradient. Here forward keeps
    exp(x - max) only, and backward turns that buffer into the gradient in place: on CPU, with
    M = 279 masked tokens and V = 30,522, 22-27 ms against 45-50 ms for forward + backward.
    The buffer is consumed, so the graph can be run backward once (no retain_graph)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, summed: bool) -> torch.Tensor:
        keep = targets != IGNORE  # (M,)
        t = targets.clamp(min=0)[:, None]  # (M, 1)
        e, total, per_row = _exp_rows(logits, t)
        n = torch.ones((), dtype=logits.dtype) if summed else keep.sum().clamp(min=1)
        ctx.save_for_backward(e, total, t, keep, n)
        ctx.consumed = False
        return (per_row * keep).sum() / n

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if ctx.consumed:
            raise RuntimeError("masked_ce's fused backward runs once (no retain_graph)")
        ctx.consumed = True
        e, total, t, keep, n = ctx.saved_tensors
        return _softmax_minus_onehot_(e, total, t, keep * grad_out / n), None, None


def _exp_rows(logits: torch.Tensor, t: torch.Tensor, inplace: bool = False):
    """(exp(x - max), its row sums, logsumexp(x) - x[t]) for (M, V) logits, t (M, 1).
    `inplace` turns `logits` itself into exp(x - max) (no second (M, V) buffer)."""
    top = logits.amax(-1, keepdim=True)  # (M, 1)
    picked = logits.gather(1, t)  # (M, 1)
    e = (logits.sub_(top) if inplace else logits - top).exp_()  # (M, V)
    total = e.sum(-1, keepdim=True)  # (M, 1)
    return e, total, (total.log() + top - picked).squeeze(1)  # (M,)


def _softmax_minus_onehot_(e, total, t, row_scale) -> torch.Tensor:
    """(softmax(x) - onehot(t)) * row_scale per row, the cross-entropy's gradient, made in place
    in `e` (exp(x - max), from _exp_rows)."""
    grad = e.div_(total)  # softmax
    grad.scatter_add_(1, t, torch.full_like(t, -1, dtype=grad.dtype))  # - onehot
    return grad.mul_(row_scale[:, None].to(grad.dtype))


def hits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Number of rows whose target logit is the row's maximum (the argmax, but a tie for the top
    counts as a hit), IGNORE rows excluded. A max reduction instead of argmax: on CPU, argmax
    over (M, 30522) MLM logits cost 9 ms a step here, the max 1 ms. No host sync, so
    torch.compile need not break the graph here."""
    keep = targets != IGNORE
    target_logit = logits.gather(-1, targets.clamp(min=0)[:, None]).squeeze(-1)  # (M,)
    return ((target_logit >= logits.amax(-1)) & keep).sum().float()


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Share of `hits` among the rows not IGNORE; 0 when every row is IGNORE."""
    return hits(logits, targets) / (targets != IGNORE).sum().clamp(min=1)


def mse(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Squared error, mean or sum (regression fine-tuning, e.g. STS-B)."""
    return F.mse_loss(pred.float(), target.float(), reduction=reduction)


def span_ce(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
    valid: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Extractive QA loss: the average of the start and end cross-entropies over positions
    (BERT, arXiv:1810.04805, 4.2), mean or sum over examples. `valid` (B, T) excludes positions
    (question, padding) from the softmax by setting their logits to -inf."""
    if valid is not None:
        neg = torch.finfo(torch.float32).min
        start_logits = start_logits.float().masked_fill(~valid, neg)
        end_logits = end_logits.float().masked_fill(~valid, neg)
    ce_start = F.cross_entropy(start_logits.float(), start, reduction=reduction)
    return 0.5 * (ce_start + F.cross_entropy(end_logits.float(), end, reduction=reduction))


LINEAR_CE_CHUNK = 256  # rows of logits alive at once: (256, V) float32, ~8 MB for V = 8192


def linear_ce(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk: int = LINEAR_CE_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the cross-entropies, number of hits) of the logits h @ weight^T + bias against
    `targets`, IGNORE rows excluded, without the (M, V) logits ever existing whole: `chunk` rows
    at a time, the logits, their log-sum-exp, hits and the gradients of h, weight and bias are
    computed while the chunk is in cache (the loss is the end of the graph, so its gradients are
    known in the forward pass; backward scales them). h: (M, D), weight: (V, D), targets: (M,).

    The MLM head's decoder and loss: with 40% of 64 x 128 tokens masked, V = 8,192, the
    materialised (M, V) logits took eight memory-bound passes a step (each ~60-100 ms on the
    2-core machine here) around two small matmuls. Under bf16 autocast the matmuls run in bf16
    and the softmax in float32, as the unfused path did. Value and gradients equal
    masked_ce(h @ W^T + b, targets, "sum") and `hits` (tested)."""
    return _LinearCE.apply(h, weight, bias, targets, chunk)


class _LinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk):
        bf16 = torch.is_autocast_enabled(h.device.type) and (
            torch.get_autocast_dtype(h.device.type) == torch.bfloat16
        )
        dt = torch.bfloat16 if bf16 else h.dtype
        with torch.autocast(h.device.type, enabled=False):
            hc, wc = h.to(dt), weight.to(dt)
            bc = None if bias is None else bias.to(dt)
            need = ctx.needs_input_grad
            dh = torch.empty_like(hc) if need[0] else None
            dw = torch.zeros_like(weight, dtype=torch.float32) if need[1] else None
            db = torch.zeros(weight.shape[0], device=h.device) if need[2] else None
            loss = torch.zeros((), dtype=torch.float32, device=h.device)
            hit = torch.zeros((), dtype=torch.float32, device=h.device)
            for s in range(0, h.shape[0], chunk):
                x, t = hc[s : s + chunk], targets[s : s + chunk]
                logits = linear(x, wc, bc).float()  # (C, V), the unfused path's values
                keep = t != IGNORE
                tt = t.clamp(min=0)[:, None]
                hit += hits(logits, t)
                e, total, per_row = _exp_rows(logits, tt, inplace=True)
                loss += (per_row * keep).sum()
                if dh is None and dw is None and db is None:
                    continue
                g = _softmax_minus_onehot_(e, total, tt, keep)
                gd = g.to(dt)
                # Both products on oneDNN where linear is; the weight's gradient computed as
                # (D, V) and transposed back: AMD EPYC here, C = 256, V = 8192, D = 128:
                # dh 2.1 ms against MKL's 4.0, dw 2.3 ms against 4.1 (4.8 computed as (V, D)).
                if dh is not None:
                    dh[s : s + chunk] = matmul(gd, wc)  # (C, D)
                if dw is not None:
                    dw += matmul(x.t(), gd).t().float()  # (D, V) -> (V, D)
                if db is not None:
                    db += g.sum(0)
        ctx.save_for_backward(*(x for x in (dh, dw, db) if x is not None))
        ctx.have = (dh is not None, dw is not None, db is not None)
        ctx.dtypes = (h.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(hit)
        return loss, hit

    @staticmethod
    def backward(ctx, grad_loss, grad_hit):
        saved = list(ctx.saved_tensors)
        out = []
        for have, dtype in zip(ctx.have, ctx.dtypes, strict=True):
            out.append(saved.pop(0).mul(grad_loss).to(dtype) if have else None)
        return (*out, None, None)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of |pred - target| over the values `mask` selects: the reconstruction loss of
    Mockingjay (arXiv:1910.12638) and TERA (arXiv:2007.06028) before the loop divides it by the
    number of scored values. pred, target: (B, T, F); mask: bool, (B, T, F) (TERA's frame_mask)
    or (B, T) (whole frames, every channel scored). Only the selected values are computed."""
    return (pred[mask].float() - target[mask].float()).abs().sum()


def l1_sum(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Sum of |pred - target| over every value of the `valid` frames (B, T) bool, True on real
    frames (~padding_mask), all values when None: for objectives that score every real frame
    (each frame contributes F values to the count the loop divides by)."""
    if valid is None:
        return (pred.float() - target.float()).abs().sum()
    return masked_l1(pred, target, valid)


# Contrastive and quantization losses for speech (CPC, wav2vec, vq-wav2vec, wav2vec 2.0, HuBERT).
# Legend: N anchors (masked or predicted frames), K negatives, D feature width, G codebook groups,
# V entries per group, C clusters, B utterances, T frames.


def info_nce(
    pred: torch.Tensor,
    candidates: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: float = 1.0,
    cosine: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CPC's InfoNCE (arXiv:1807.03748, eq. 4) summed over N anchors, and its top-1 hits; the
    loop divides both by N.

    pred (N, D) is the prediction W_k c_t; candidates (N, K+1, D) holds the positive z_{t+k} at
    index 0 and K negatives after it, or, with `negatives` (N, K, D) given, candidates is the
    positives (N, D). The score is CPC's log-bilinear f = exp(z^T W_k c_t / temperature)
    (temperature 1 in the paper); `cosine=True` scores cos(z, W_k c_t) / temperature instead.
    Per anchor the loss is -log(f_positive / sum of f over the K+1 candidates), a (K+1)-way
    cross-entropy with the positive as the class. A hit is an anchor whose positive scores
    strictly above every negative (a tie, as under collapse, is a miss). Scores are in float32.
    """
    return _ranked_ce(_scores(pred, _stack(candidates, negatives), temperature, cosine))


def wav2vec_binary_loss(
    pred: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    negative_weight: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """wav2vec's contrastive loss (arXiv:1904.05862, eq. 1) summed over N anchors, and the
    anchors whose positive scores above all their negatives; the loop divides both by N.

    Per anchor -[log sigma(z^T h_k(c_i)) + lambda E_{z~} log sigma(-z~^T h_k(c_i))], with pred
    (N, D) = h_k(c_i), targets (N, D) = z_{i+k}, negatives (N, K, D) the distractors z~, whose
    mean over K estimates the expectation. lambda = `negative_weight`, K by default (the paper
    sets lambda to the number of negatives, 10). The paper's sum over steps k = 1..12 is a sum
    over rows: stack every (i, k) pair as one anchor.
    """
    pred, targets, negatives = pred.float(), targets.float(), negatives.float()
    positive = (pred * targets).sum(-1)  # (N,)
    negative = torch.einsum("nd,nkd->nk", pred, negatives)  # (N, K)
    weight = negatives.shape[1] if negative_weight is None else negative_weight
    per_anchor = F.logsigmoid(positive) + weight * F.logsigmoid(-negative).mean(-1)  # (N,)
    return -per_anchor.sum(), _ranked_hits(torch.cat([positive[:, None], negative], 1))


def info_nce_scores(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`info_nce` from scores: (sum over the N rows of -log softmax(row)[0], top-1 hits) for
    scores (N, K+1), the positive's first (z^T W_k c_t / temperature in CPC). For objectives
    that score their candidates without gathering (N, K, D) negatives; the same value as
    `info_nce` of the vectors behind the scores (tested)."""
    return _ranked_ce(scores.float())


def wav2vec_binary_scores(
    scores: torch.Tensor, negative_weight: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`wav2vec_binary_loss` from scores (N, K+1) = z^T h_k(c_i), the positive's first: the sum
    over rows of -[log sigma(s_0) + lambda mean_j log sigma(-s_j)] (lambda = K by default), and
    the rows whose positive scores above all negatives. The same value as `wav2vec_binary_loss`
    of the vectors behind the scores (tested)."""
    scores = scores.float()
    weight = scores.shape[1] - 1 if negative_weight is None else negative_weight
    negative = F.logsigmoid(-scores[:, 1:]).mean(-1) if scores.shape[1] > 1 else 0.0
    per_anchor = F.logsigmoid(scores[:, 0]) + weight * negative  # (N,)
    return -per_anchor.sum(), _ranked_hits(scores)


def wav2vec2_contrastive(
    context: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    negative_is_target: torch.Tensor | None = None,
    temperature: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """wav2vec 2.0's contrastive loss (arXiv:2006.11477, eq. 3) summed over the M masked
    positions, and their top-1 hits; the loop divides both by M.

    context (M, D) is the Transformer output c_t, targets (M, D) the quantized q_t, negatives
    (M, K, D) the K distractors (K = 100, temperature kappa = 0.1 in the paper); the score is
    cos(c_t, q) / temperature and the loss a (K+1)-way cross-entropy with q_t first. A
    distractor equal to its target (`negative_is_target` (M, K) bool; by default computed as
    exact equality of the vectors, as the paper's implementation does: the same code drawn twice)
    is excluded by setting its score to -inf. The negatives come from the same batch (see
    `sample_negatives`), so the objective is batch-level."""
    if negative_is_target is None:
        negative_is_target = (negatives == targets[:, None]).all(-1)  # (M, K)
    scores = _scores(context, _stack(targets, negatives), temperature, cosine=True)  # (M, K+1)
    negative = scores[:, 1:].masked_fill(negative_is_target, float("-inf"))
    return _ranked_ce(torch.cat([scores[:, :1], negative], 1))


def wav2vec2_contrastive_by_utterance(
    context: torch.Tensor,
    quantized: torch.Tensor,
    anchors: torch.Tensor,
    negatives: torch.Tensor,
    negative_is_target: torch.Tensor | None = None,
    temperature: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`wav2vec2_contrastive` with the distractors given by position instead of as vectors:
    the same sum over the M anchors and hits, without the (M, K, D) copy of their vectors.

    context (B, T, D) c_t and quantized (B, T, D) q_t are padded utterances; anchors (B, T)
    bool the M scored frames, in the row-major order of `x[anchors]`; negatives (M, K) long the
    frame (0..T-1) of each anchor's K distractors, in the anchor's own utterance (as wav2vec
    2.0 draws them, see `sample_negatives`). The cosine of every pair of frames of an utterance
    is one (B, T, T) batched product, from which the positive and the distractors are read.
    `negative_is_target` (M, K) bool excludes distractors (score -inf); by default those whose
    quantized vector equals the target's exactly, as `wav2vec2_contrastive` does."""
    b, t = anchors.nonzero(as_tuple=True)  # (M,) utterance and frame of each anchor
    negatives = negatives.long()
    if negative_is_target is None:
        negative_is_target = (quantized[b[:, None], negatives] == quantized[b, t][:, None]).all(-1)
    c = F.normalize(context.float(), dim=-1, eps=1e-8)
    q = F.normalize(quantized.float(), dim=-1, eps=1e-8)
    sim = torch.bmm(c, q.transpose(1, 2)) / temperature  # (B, T, T) cos(c_t, q_j) / kappa
    positive = sim[b, t, t]  # (M,)
    negative = sim[b[:, None], t[:, None], negatives].masked_fill(negative_is_target, float("-inf"))
    return _ranked_ce(torch.cat([positive[:, None], negative], 1))  # (M, K+1) scores


def sample_negatives(
    candidates: torch.Tensor, n_negatives: int, generator: torch.Generator
) -> torch.Tensor:
    """(M, K) long: for each of the M candidate positions of `candidates` (B, T) bool, in the
    row-major order of `x[candidates]`, K = `n_negatives` flat indices into the B * T frames of
    distractors drawn uniformly, with replacement, from the OTHER candidate positions of the
    same utterance (wav2vec 2.0, arXiv:2006.11477, 3.2: K = 100 from the other masked time
    steps). Gather them with `x.flatten(0, 1)[idx]` -> (M, K, D). For every real frame as a
    candidate (CPC, wav2vec), pass `~padding_mask`. An utterance with a single candidate has no
    other to draw: its negatives are the position itself, which `wav2vec2_contrastive` excludes
    as equal to the target (its loss is then 0). All randomness comes from `generator`.
    """
    B, T = candidates.shape
    flat = candidates.reshape(-1).nonzero().squeeze(1)  # (M,) grouped by utterance
    per_row = candidates.sum(1)  # (B,)
    start = (per_row.cumsum(0) - per_row)[flat // T]  # (M,) where the utterance's run begins
    rank = torch.arange(flat.numel(), device=flat.device) - start  # (M,) own place in the run
    others = (per_row[flat // T] - 1)[:, None]  # (M, 1)
    u = torch.rand(
        flat.numel(), n_negatives, generator=generator, dtype=torch.float64, device=generator.device
    ).to(flat.device)
    r = torch.minimum((u * others).long(), (others - 1).clamp(min=0))  # (M, K) in [0, others)
    j = torch.where(others > 0, r + (r >= rank[:, None]).long(), rank[:, None])  # skip itself
    return flat[start[:, None] + j]


def diversity_loss(probs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """wav2vec 2.0's diversity loss (arXiv:2006.11477, eq. 4, in the perplexity form of its
    implementation): (G V - sum_g exp(H(p_g))) / (G V), where p_g is the soft-max distribution
    over group g's V entries (no Gumbel noise) averaged over the N rows of probs (N, G, V), or
    over the rows `mask` (N,) bool selects. 0 when every entry is used equally, 1 - 1/V with one.

    Batch-level: the value depends on the whole batch's mean distribution, not a sum over rows.
    The paper's implementation multiplies it by the number of masked positions (its sample size)
    before dividing by that count, i.e. it is added as a mean (weight 0.1); an objective that
    returns sums does the same, or declares a count of 1."""
    G, V = probs.shape[-2:]
    return (G * V - code_perplexity(probs, mask).sum()) / (G * V)


def cluster_ce(
    projected: torch.Tensor,
    cluster_embeddings: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """HuBERT's prediction loss (arXiv:2106.07447, eq. 2-3) summed over the N rows whose label
    is not IGNORE, and their hits (`hits`); the loop divides both by that number.

    p(c | x) = exp(cos(A o_t, e_c) / temperature) / sum_c' exp(cos(A o_t, e_c') / temperature),
    with projected (N, D) = A o_t, cluster_embeddings (C, D) the learned e_c and labels (N,) the
    k-means cluster of each frame (temperature 0.1 in the paper)."""
    a = F.normalize(projected.float(), dim=-1, eps=1e-8)
    e = F.normalize(cluster_embeddings.float(), dim=-1, eps=1e-8)
    logits = a @ e.t() / temperature  # (N, C)
    return masked_ce(logits, labels, reduction="sum"), hits(logits, labels)


def feature_penalty(
    features: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """wav2vec 2.0's L2 penalty on the conv encoder's output (arXiv:2006.11477, 4.2; weight 10
    in its implementation): (sum of squares of the values, their number). features (B, T, C);
    `valid` (B, T) bool keeps only real frames (every value when None, as the implementation
    does). The count depends on the conv's output length, so it comes back with the sum."""
    x = features if valid is None else features[valid]
    return x.float().pow(2).sum(), x.numel()


def _stack(candidates: torch.Tensor, negatives: torch.Tensor | None) -> torch.Tensor:
    """(N, K+1, D) candidates, the positive first."""
    if negatives is None:
        return candidates
    return torch.cat([candidates[:, None], negatives], 1)


def _scores(
    pred: torch.Tensor, candidates: torch.Tensor, temperature: float, cosine: bool
) -> torch.Tensor:
    """(N, K+1) float32 scores of each anchor against its candidates."""
    pred, candidates = pred.float(), candidates.float()
    if cosine:
        return F.cosine_similarity(pred[:, None], candidates, dim=-1, eps=1e-8) / temperature
    return torch.einsum("nd,nkd->nk", pred, candidates) / temperature


def _ranked_ce(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over rows of -log softmax(scores)[0], hits) for (N, K+1) scores, positive first."""
    return (torch.logsumexp(scores, -1) - scores[:, 0]).sum(), _ranked_hits(scores)


def _ranked_hits(scores: torch.Tensor) -> torch.Tensor:
    """Rows of (N, K+1) scores whose positive (column 0) is strictly above every negative."""
    scores = scores.detach()
    if scores.shape[1] == 1:
        return torch.tensor(float(scores.shape[0]), device=scores.device)
    return (scores[:, 0] > scores[:, 1:].amax(-1)).sum().float()


# --------------------------------------------------------------------------------------------
# image self-supervision
# Legend: N anchor rows (images) of this process, M candidate rows (every rank's images
# gathered, M = N in one process), V views per image, D embedding width.
# Scores are computed in float32 (float64 inputs stay float64, for the tests).
# --------------------------------------------------------------------------------------------


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x in float32 at least (bf16/fp16 activations are widened; float64 stays float64)."""
    return x if x.dtype == torch.float64 else x.float()


def nt_xent(
    anchors: torch.Tensor,
    candidates: torch.Tensor | None = None,
    first: int = 0,
    temperature: float = 0.5,
) -> torch.Tensor:
    """SimCLR's NT-Xent (arXiv:2002.05709, eq. 1; temperature 0.5, the value its appendix B.9
    finds best on CIFAR-10), summed over the N * V anchors; the objective divides by N * V.

    anchors (N, V, D) are the projections of V >= 2 views of N images; they are rows
    first .. first + N - 1 of candidates (M, V, D) (by default candidates = anchors, first = 0:
    one process; under DDP the candidates are every rank's projections gathered with their
    gradient, `distributed.gather_with_grad`, and `first` is this rank's offset). Embeddings are
    L2-normalised here and scored by cos / temperature. Positives are defined by index: for
    anchor (i, v) they are the other views u != v of candidate row first + i, the negatives
    every view of every other row, and the anchor itself is excluded.

    With V > 2 views the -log term is averaged over the anchor's V - 1 positives, each
    positive's softmax taken over all M V - 1 other candidates (the other positives included):
        l(i, v) = -1/(V-1) sum_{u != v} log( e^{s(iv, iu)} / sum_{(j, w) != (i, v)} e^{s(iv, jw)} )
    (the multi-positive form L_out of SupCon, arXiv:2004.11362, eq. 2, with the image's views as
    its positives; solo-learn's choice). For V = 2 it is exactly eq. 1, the mean over the 2N
    anchors of which is SimCLR's loss (lightly's NTXentLoss is that mean: this sum / (N V))."""
    if candidates is None:
        candidates, first = anchors, 0
    N, V, D = anchors.shape
    M = candidates.shape[0]
    if V < 2 or candidates.shape[1:] != (V, D) or not 0 <= first <= M - N:
        raise ValueError(
            f"nt_xent needs anchors (N, V >= 2, D) that are rows {first}.. of candidates "
            f"(M, V, D); got {tuple(anchors.shape)} and {tuple(candidates.shape)}"
        )
    a = F.normalize(_wide(anchors), dim=-1).reshape(N * V, D)
    c = F.normalize(_wide(candidates), dim=-1).reshape(M * V, D)
    logits = a @ c.t() / temperature  # (N V, M V)
    anchor = torch.arange(N * V, device=a.device)
    itself = torch.zeros_like(logits, dtype=torch.bool)
    itself[anchor, first * V + anchor] = True  # anchor (i, v) is candidate (first + i, v)
    log_prob = logits.masked_fill(itself, float("-inf")).log_softmax(-1)  # (N V, M V)
    own = log_prob.view(N * V, M, V)[anchor, first + anchor // V]  # (N V, V): row i's views
    positives = own.masked_fill(itself.view(N * V, M, V)[anchor, first + anchor // V], 0.0)
    return -positives.sum() / (V - 1)


def byol(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's loss (arXiv:2006.07733, eq. 2) summed over rows: ||p/|p| - z/|z|||^2
    = 2 - 2 cos(p, z) for the online prediction p (N, D) and the target projection z (N, D).
    z is used as given: the caller passes the target network's output, already computed without
    gradient (the target is updated by EMA, never by this loss). The paper symmetrises by
    swapping the views; the objective adds both pairs. Values in [0, 4]."""
    p = F.normalize(_wide(p), dim=-1)
    z = F.normalize(_wide(z), dim=-1)
    return (2 - 2 * (p * z).sum(-1)).sum()


def simsiam(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, stopgrad(z)) (arXiv:2011.10566, eq. 1 and 3) summed over rows:
    -cos(p, z) for the prediction p (N, D) of one view and the projection z (N, D) of the
    other. The stop-gradient is applied here (z.detach()): z never receives a gradient from
    this loss, the point of the method. The paper's symmetric loss is 1/2 D(p1, z2) +
    1/2 D(p2, z1); the objective adds both pairs. Values in [-1, 1] per row."""
    p = F.normalize(_wide(p), dim=-1)
    z = F.normalize(_wide(z.detach()), dim=-1)
    return -(p * z).sum()


def barlow_twins(
    z1: torch.Tensor, z2: torch.Tensor, offdiag_weight: float = 0.0051, eps: float = 1e-5
) -> torch.Tensor:
    """Barlow Twins' loss (arXiv:2103.03230, eq. 1; lambda = 0.0051 = `offdiag_weight`):
        C = z1n^T z2n / N,   L = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2,
    z1, z2 (N, D) the two views' projections, each standardised over the batch per dimension
    (mean 0, std 1 with the biased variance and eps = 1e-5, as the BatchNorm1d(affine=False) of
    the paper's implementation; Algorithm 1 writes z.std(0)).

    Batch-level: z1, z2 must be the whole batch (under DDP gathered with gradient, so the
    statistics are the global batch's; the authors' code instead standardises per GPU and
    all-reduces C). Returns the whole-batch value (not a sum over rows): an objective declares
    a count of 1 per rank. lightly's BarlowTwinsLoss is the same value (lambda 5e-3 there)."""
    z1, z2 = _wide(z1), _wide(z2)
    N, D = z1.shape

    def standardise(z: torch.Tensor) -> torch.Tensor:
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)

    c = standardise(z1).t() @ standardise(z2) / N  # (D, D)
    on_diag = (1 - torch.diagonal(c)).pow(2).sum()
    eye = torch.eye(D, dtype=torch.bool, device=c.device)
    return on_diag + offdiag_weight * c.pow(2).masked_fill(eye, 0.0).sum()


def vicreg_terms(
    z1: torch.Tensor, z2: torch.Tensor, var_target: float = 1.0, eps: float = 1e-4
) -> dict[str, torch.Tensor]:
    """VICReg's three terms (arXiv:2105.04906, eqs. 1-5; gamma = `var_target` = 1,
    epsilon = 1e-4) for the projections z1, z2 (N, D) of two views, as named pure functions:

    - "invariance": s(Z, Z') = mean squared difference over the N * D values (F.mse_loss, as
      the authors' code; eq. 5 writes 1/N sum_i ||z_i - z'_i||^2, D times this; the weight 25
      was tuned on the mean);
    - "variance": v(Z) + v(Z'), v(Z) = 1/D sum_j max(0, gamma - sqrt(Var(z^j) + eps)) with the
      unbiased variance over the batch (eq. 1). Summed over both branches as eq. 6 writes it;
      the authors' code and lightly average them (half this), so var_weight 25 here weighs the
      variance twice as much as 25 there;
    - "covariance": c(Z) + c(Z'), c(Z) = 1/D sum_{i != j} C(Z)_ij^2 with
      C(Z) = 1/(N-1) sum_n (z_n - mean)(z_n - mean)^T (eqs. 3-4).

    Batch-level: z1, z2 are the whole batch (gathered with gradient under DDP); the values are
    whole-batch values, not sums over rows."""
    z1, z2 = _wide(z1), _wide(z2)

    def variance(z: torch.Tensor) -> torch.Tensor:
        return F.relu(var_target - torch.sqrt(z.var(0) + eps)).mean()

    def covariance(z: torch.Tensor) -> torch.Tensor:
        N, D = z.shape
        z = z - z.mean(0)
        cov = z.t() @ z / (N - 1)  # (D, D)
        eye = torch.eye(D, dtype=torch.bool, device=z.device)
        return cov.pow(2).masked_fill(eye, 0.0).sum() / D

    return {
        "invariance": F.mse_loss(z1, z2),
        "variance": variance(z1) + variance(z2),
        "covariance": covariance(z1) + covariance(z2),
    }


def vicreg(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
) -> torch.Tensor:
    """VICReg's loss (arXiv:2105.04906, eq. 6; lambda = mu = 25, nu = 1):
    sim_weight * invariance + var_weight * variance + cov_weight * covariance, the terms of
    `vicreg_terms` (whole-batch value)."""
    t = vicreg_terms(z1, z2)
    return sim_weight * t["invariance"] + var_weight * t["variance"] + cov_weight * t["covariance"]
