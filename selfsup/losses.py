"""Losses as pure functions of tensors. Objectives apply them; models never own a loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.keys import IGNORE
from selfsup.layers.linear import linear, matmul


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
