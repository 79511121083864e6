"""The speech contrastive losses (CPC, wav2vec, wav2vec 2.0, HuBERT) against direct loops over
the papers' formulas in float64, wav2vec 2.0's against HF transformers' logits too, and the
negative sampler's guarantees."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.keys import IGNORE
from selfsup.losses import (
    cluster_ce,
    diversity_loss,
    feature_penalty,
    info_nce,
    sample_negatives,
    wav2vec2_contrastive,
    wav2vec_binary_loss,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def cos(a, b):
    return float(a @ b) / math.sqrt(float(a @ a) * float(b @ b))


def reference_info_nce(pred, candidates, temperature, cosine):
    """CPC eq. 4 one anchor at a time: -log f_0 / sum_j f_j, f_j = exp(score(z_j, pred))."""
    loss, hit = 0.0, 0
    for p, zs in zip(pred.double(), candidates.double(), strict=True):
        s = [(cos(z, p) if cosine else float(z @ p)) / temperature for z in zs]
        loss -= math.log(math.exp(s[0]) / sum(math.exp(v) for v in s))
        hit += all(s[0] > v for v in s[1:])
    return loss, hit


@pytest.mark.parametrize(("temperature", "cosine"), [(1.0, False), (0.1, True), (0.5, False)])
def test_info_nce_equals_cpc_formula(temperature, cosine):
    pred, candidates = randn(9, 6, seed=1) * 0.5, randn(9, 11, 6, seed=2)
    candidates[:4, 0] = pred[:4] * 3  # some positives that win, so hits are neither 0 nor N
    loss, hit = info_nce(pred, candidates, temperature=temperature, cosine=cosine)
    want_loss, want_hit = reference_info_nce(pred, candidates, temperature, cosine)
    assert 0 < want_hit < 9
    assert float(hit) == want_hit
    torch.testing.assert_close(loss.double(), torch.tensor(want_loss, dtype=torch.float64))
    # The targets + negatives form is the same call.
    loss2, hit2 = info_nce(pred, candidates[:, 0], candidates[:, 1:], temperature, cosine)
    assert torch.equal(loss2, loss) and torch.equal(hit2, hit)


def test_info_nce_gradient_equals_cross_entropy():
    pred = randn(5, 4, seed=3).requires_grad_()
    candidates = randn(5, 7, 4, seed=4).requires_grad_()
    loss, _ = info_nce(pred, candidates)
    logits = torch.einsum("nd,nkd->nk", pred, candidates)
    ref = F.cross_entropy(logits, torch.zeros(5, dtype=torch.long), reduction="sum")
    for a, b in zip(
        torch.autograd.grad(loss, (pred, candidates)),
        torch.autograd.grad(ref, (pred, candidates)),
        strict=True,
    ):
        torch.testing.assert_close(a, b)


def test_a_tie_is_no_hit():
    pred = torch.ones(3, 4)
    loss, hit = info_nce(pred, torch.ones(3, 5, 4))  # collapse: every candidate scores the same
    assert float(hit) == 0
    torch.testing.assert_close(loss, torch.tensor(3 * math.log(5)))


@pytest.mark.parametrize("weight", [None, 2.5])
def test_wav2vec_binary_loss_equals_eq_1(weight):
    pred, targets, negatives = randn(7, 5, seed=5), randn(7, 5, seed=6), randn(7, 10, 5, seed=7)
    loss, hit = wav2vec_binary_loss(pred, targets, negatives, negative_weight=weight)
    lam = 10 if weight is None else weight
    want, want_hit = 0.0, 0
    for h, z, zn in zip(pred.double(), targets.double(), negatives.double(), strict=True):
        neg = [math.log(1 / (1 + math.exp(float(n @ h)))) for n in zn]  # log sigma(-z~^T h)
        want -= math.log(1 / (1 + math.exp(-float(z @ h)))) + lam * sum(neg) / len(neg)
        want_hit += all(float(z @ h) > float(n @ h) for n in zn)
    torch.testing.assert_close(loss.double(), torch.tensor(want, dtype=torch.float64))
    assert float(hit) == want_hit


def reference_wav2vec2(context, targets, negatives, temperature):
    """eq. 3 per masked step: -log exp(sim(c, q) / k) / sum over q and the distractors that are
    not equal to q of exp(sim(c, q~) / k)."""
    loss, hit = 0.0, 0
    for c, q, qs in zip(context.double(), targets.double(), negatives.double(), strict=True):
        pos = cos(c, q) / temperature
        negs = [cos(c, n) / temperature for n in qs if not torch.equal(n, q)]
        loss -= math.log(math.exp(pos) / (math.exp(pos) + sum(math.exp(v) for v in negs)))
        hit += all(pos > v for v in negs)
    return loss, hit


def test_wav2vec2_contrastive_equals_eq_3_and_excludes_copies_of_the_target():
    context, targets, negatives = randn(8, 6, seed=8), randn(8, 6, seed=9), randn(8, 5, 6, seed=10)
    negatives[0, 2] = targets[0]  # the same code drawn as a distractor
    negatives[3, :] = targets[3]  # every distractor a copy: loss 0, a hit
    context[5] = targets[5]  # a perfect prediction
    loss, hit = wav2vec2_contrastive(context, targets, negatives)
    want_loss, want_hit = reference_wav2vec2(context, targets, negatives, 0.1)
    torch.testing.assert_close(loss.double(), torch.tensor(want_loss, dtype=torch.float64))
    assert float(hit) == want_hit
    # An explicit mask does the same; without exclusion the loss is larger.
    mask = (negatives == targets[:, None]).all(-1)
    assert mask.sum() == 6
    assert torch.equal(wav2vec2_contrastive(context, targets, negatives, mask)[0], loss)
    unmasked = wav2vec2_contrastive(context, targets, negatives, torch.zeros_like(mask))[0]
    assert unmasked > loss


def test_wav2vec2_contrastive_equals_hf_transformers():
    modeling = pytest.importorskip("transformers.models.wav2vec2.modeling_wav2vec2")
    B, T, K, D = 2, 9, 4, 8
    g = torch.Generator().manual_seed(11)
    context = torch.randn(B, T, D, generator=g, requires_grad=True)
    quantized = torch.randn(B, T, D, generator=g)
    quantized[0, 3] = quantized[0, 1]  # a repeated code, excluded as a negative
    mask = torch.rand(B, T, generator=g) < 0.6
    idx = sample_negatives(mask, K, g)  # (M, K)
    negatives = quantized.flatten(0, 1)[idx]  # (M, K, D)
    loss, _ = wav2vec2_contrastive(context[mask], quantized[mask], negatives)
    # HF's layout: targets (1, B, T, D), negatives (K, B, T, D), cross-entropy over masked steps.
    neg_full = torch.zeros(K, B, T, D)
    neg_full[:, mask] = negatives.transpose(0, 1)
    logits = modeling.Wav2Vec2ForPreTraining.compute_contrastive_logits(
        quantized[None], neg_full, context, 0.1
    )  # (K+1, B, T)
    neg_is_pos = (quantized == neg_full).all(-1)
    logits[1:][neg_is_pos] = float("-inf")
    logits = logits.transpose(0, 2).reshape(-1, K + 1)  # (T * B, K+1)
    target = ((1 - mask.long()) * -100).transpose(0, 1).flatten()
    ref = F.cross_entropy(logits.float(), target, reduction="sum")
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(
        torch.autograd.grad(loss, context)[0], torch.autograd.grad(ref, context)[0]
    )


def test_sample_negatives_draws_other_candidates_of_the_same_utterance():
    g = torch.Generator().manual_seed(12)
    mask = torch.rand(4, 50, generator=g) < 0.5
    mask[2] = False  # an utterance with no candidate
    mask[3] = False
    mask[3, 7] = True  # and one with a single candidate
    idx = sample_negatives(mask, 20, torch.Generator().manual_seed(0))
    anchors = mask.flatten().nonzero().squeeze(1)  # (M,)
    assert idx.shape == (len(anchors), 20)
    assert mask.flatten()[idx].all()  # only candidates
    assert torch.equal(idx // 50, (anchors // 50)[:, None].expand_as(idx))  # same utterance
    single = anchors == 3 * 50 + 7
    assert (idx[single] == 3 * 50 + 7).all()  # nothing else to draw: itself
    assert not (idx[~single] == anchors[~single, None]).any()  # otherwise never itself
    # Roughly uniform over the other candidates of row 0.
    row0 = anchors < 50
    counts = torch.bincount(idx[row0].flatten(), minlength=50)[mask[0]].double()
    expected = row0.sum() * 20 / (mask[0].sum() - 1)
    assert ((counts - expected).abs() < 5 * expected.sqrt()).all()
    assert torch.equal(idx, sample_negatives(mask, 20, torch.Generator().manual_seed(0)))
    assert not torch.equal(idx, sample_negatives(mask, 20, torch.Generator().manual_seed(1)))


def test_diversity_loss_equals_eq_4_perplexity_form():
    probs = randn(30, 2, 8, seed=13).mul(2).softmax(-1)
    mask = torch.arange(30) % 3 > 0
    want = 0.0
    for g in range(2):
        p = probs[mask, g].double().mean(0)
        want += math.exp(-sum(float(v) * math.log(float(v)) for v in p))
    torch.testing.assert_close(
        diversity_loss(probs, mask).double(), torch.tensor((16 - want) / 16, dtype=torch.float64)
    )
    assert float(diversity_loss(torch.full((5, 2, 8), 1 / 8))) == pytest.approx(0.0, abs=1e-6)
    one = F.one_hot(torch.zeros(5, 2, dtype=torch.long), 8).float()
    assert float(diversity_loss(one)) == pytest.approx(1 - 1 / 8)


def test_cluster_ce_equals_hubert_formula():
    projected, emb = randn(12, 5, seed=14), randn(7, 5, seed=15)
    labels = torch.randint(0, 7, (12,), generator=torch.Generator().manual_seed(16))
    labels[[1, 4]] = IGNORE
    labels[0] = int((F.normalize(projected[0], dim=0) @ F.normalize(emb, dim=1).T).argmax())
    loss, hit = cluster_ce(projected, emb, labels)
    want, want_hit = 0.0, 0
    for x, c in zip(projected.double(), labels.tolist(), strict=True):
        if c == IGNORE:
            continue
        s = [cos(x, e) / 0.1 for e in emb.double()]
        want -= math.log(math.exp(s[c]) / sum(math.exp(v) for v in s))
        want_hit += s[c] == max(s)
    torch.testing.assert_close(loss.double(), torch.tensor(want, dtype=torch.float64))
    assert float(hit) == want_hit >= 1


def test_feature_penalty_is_sum_of_squares_and_count():
    f = randn(2, 5, 3, seed=17)
    total, n = feature_penalty(f)
    assert n == 30
    torch.testing.assert_close(total / n, f.pow(2).mean())
    valid = torch.tensor([[True] * 5, [True] * 2 + [False] * 3])
    total, n = feature_penalty(f, valid)
    assert n == 21
    torch.testing.assert_close(total, f[0].pow(2).sum() + f[1, :2].pow(2).sum())
