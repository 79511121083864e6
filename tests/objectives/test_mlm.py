"""The MLM objectives' tied embedding: the sparse lookup gradient (which the objectives ask
for) gives the same dense gradient as the dense lookup."""

from __future__ import annotations

import pytest
import torch

from selfsup.encoders.text import BertConfig, build_encoder
from selfsup.keys import IGNORE
from selfsup.objectives import OBJECTIVES
from selfsup.objectives.base import batch_loss
from selfsup.objectives.mlm import MLM

MLM_FAMILY = sorted(name for name, cls in OBJECTIVES.items() if issubclass(cls, MLM))


def forcing(forward, **forced):
    """forward with some keyword arguments overridden, whatever the caller passes."""
    return lambda *args, **kwargs: forward(*args, **(kwargs | forced))


@pytest.mark.parametrize("objective", MLM_FAMILY)
def test_tied_embedding_gradient_is_dense_and_equals_the_dense_lookup(objective):
    cfg = BertConfig(vocab_size=60, dim=16, n_layers=1, n_heads=2, ffn_dim=32, max_len=32,
                      dropout=0.0, attn_dropout=0.0)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 60, (3, 12), generator=g)
    labels = torch.full((3, 12), IGNORE)
    labels[:, 3] = input_ids[:, 3]
    batch = {"input_ids": input_ids, "labels": labels, "pair_labels": torch.tensor([0, 1, 0])}
    grads = []
    for sparse in (True, False):
        torch.manual_seed(0)
        model = OBJECTIVES[objective](build_encoder(cfg), cfg.vocab_size)
        model.encoder.forward = forcing(model.encoder.forward, sparse_grad=sparse)
        batch_loss(model, batch).backward()
        grad = model.encoder.embed.tokens.weight.grad
        assert grad.layout == torch.strided  # what the optimizers and clipping expect
        grads.append(grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_the_lookup_alone_gives_a_sparse_gradient_only_when_asked():
    cfg = BertConfig(vocab_size=60, dim=16, n_layers=1, n_heads=2, ffn_dim=32, max_len=32)
    encoder = build_encoder(cfg)
    ids = torch.randint(5, 60, (2, 7))
    for sparse in (True, False):
        encoder.zero_grad(set_to_none=True)
        encoder(ids, sparse_grad=sparse)["hidden"].sum().backward()
        assert encoder.embed.tokens.weight.grad.is_sparse == sparse
