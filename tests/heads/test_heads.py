"""The heads, against their definitions written out here: BERT's MLM head (dense, GELU,
LayerNorm, then the tied input embedding as decoder, plus its own bias), the span head's two
vectors, and the classification and tagging heads."""

from __future__ import annotations

import math

import torch

from selfsup.heads.classify import ClassifyHead
from selfsup.heads.mlm import MLMHead
from selfsup.heads.span import SpanHead
from selfsup.heads.tag import TagHead


def perturbed(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return module


def test_mlm_head_is_transform_then_tied_decoder():
    D, V, M = 8, 20, 5
    head = perturbed(MLMHead(D, V, norm_eps=1e-12))
    h = torch.randn(M, D)
    emb = torch.randn(V, D, requires_grad=True)
    ours = head(h, emb)
    x = h @ head.dense.weight.T + head.dense.bias
    x = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))  # exact GELU
    mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    x = (x - mu) / torch.sqrt(var + 1e-12) * head.norm.weight + head.norm.bias
    want = x @ emb.T + head.bias
    torch.testing.assert_close(ours, want, atol=1e-5, rtol=1e-5)
    ours.sum().backward()
    assert emb.grad is not None and float(emb.grad.abs().sum()) > 0  # the tie gets a gradient
    assert {n for n, _ in head.named_parameters()} == {
        "dense.weight",
        "dense.bias",
        "norm.weight",
        "norm.bias",
        "bias",
    }  # fmt: skip  (no decoder weight of its own)


def test_span_head_dots_two_vectors_with_every_token():
    head = perturbed(SpanHead(6))
    h = torch.randn(2, 7, 6)
    start, end = head(h)
    w, b = head.proj.weight, head.proj.bias
    torch.testing.assert_close(start, h @ w[0] + b[0])
    torch.testing.assert_close(end, h @ w[1] + b[1])


def test_classify_and_tag_heads_are_linear_maps_with_dropout_only_in_training():
    cls, tag = perturbed(ClassifyHead(6, 3, dropout=0.5)), perturbed(TagHead(6, 4, dropout=0.5))
    x = torch.randn(5, 6)
    for head in (cls, tag):
        head.eval()
        torch.testing.assert_close(head(x), x @ head.proj.weight.T + head.proj.bias)
        head.train()
        torch.manual_seed(0)
        assert not torch.allclose(head(x), x @ head.proj.weight.T + head.proj.bias)
    assert tag(torch.randn(2, 7, 6)).shape == (2, 7, 4)
