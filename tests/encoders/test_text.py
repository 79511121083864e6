"""BertEncoder: padding never changes the real positions; shapes and the [CLS] pooler."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.encoders.text import build_encoder
from selfsup.presets import preset

ATOL = 1e-5
LENGTHS = [9, 5, 12, 1]


@pytest.fixture(scope="module")
def encoder(perturb):
    cfg = preset("tiny").model
    cfg.vocab_size, cfg.max_len = 300, 64
    torch.manual_seed(0)
    return perturb(build_encoder(cfg)).eval()


@pytest.fixture(scope="module")
def batch():
    """Padded batch of different lengths, both segments, random ids; T = max(LENGTHS)."""
    g = torch.Generator().manual_seed(0)
    T = max(LENGTHS)
    ids = torch.zeros(len(LENGTHS), T, dtype=torch.long)
    for i, n in enumerate(LENGTHS):
        ids[i, :n] = torch.randint(5, 300, (n,), generator=g)
    mask = (torch.arange(T)[None] < torch.tensor(LENGTHS)[:, None]).long()
    types = ((torch.arange(T)[None] >= 3) & mask.bool()).long()
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@torch.no_grad()
def test_extra_padding_changes_nothing(encoder, batch):
    keep = batch["attention_mask"].bool()
    a = encoder(**batch)
    # Padding ids are random junk, not [PAD]: only the mask may keep them out.
    junk = {k: F.pad(v, (0, 7), value=7 if k == "input_ids" else 0) for k, v in batch.items()}
    b = encoder(**junk)
    assert b["hidden"].shape[1] == a["hidden"].shape[1] + 7
    assert max_diff(a["hidden"][keep], b["hidden"][:, : keep.shape[1]][keep]) < ATOL
    assert max_diff(a["pooled"], b["pooled"]) < ATOL


@torch.no_grad()
def test_alone_equals_inside_padded_batch(encoder, batch):
    out = encoder(**batch)
    for i, n in enumerate(LENGTHS):
        one = {k: v[i : i + 1, :n] for k, v in batch.items()}
        alone = encoder(**one)
        assert max_diff(alone["hidden"][0], out["hidden"][i, :n]) < ATOL
        assert max_diff(alone["pooled"][0], out["pooled"][i]) < ATOL
        # No mask at all means no padding.
        unmasked = encoder(one["input_ids"], None, one["token_type_ids"])
        assert max_diff(unmasked["hidden"], alone["hidden"]) < ATOL


@torch.no_grad()
def test_mask_is_actually_applied(encoder, batch):
    """Without the mask, padded rows would change: the invariance tests are not vacuous."""
    keep = batch["attention_mask"].bool()
    masked = encoder(**batch)["hidden"]
    unmasked = encoder(batch["input_ids"], None, batch["token_type_ids"])["hidden"]
    assert max_diff(masked[keep], unmasked[keep]) > 1e-3
    assert max_diff(masked[0, :9], unmasked[0, :9]) > 1e-3


@torch.no_grad()
def test_shapes_pooler_and_token_types(encoder, batch):
    B, T = batch["input_ids"].shape
    out = encoder(**batch, return_all=True)
    assert out["hidden"].shape == (B, T, encoder.dim) and out["pooled"].shape == (B, encoder.dim)
    assert len(out["all_hidden"]) == len(encoder.transformer.blocks) + 1
    assert torch.equal(out["all_hidden"][-1], out["hidden"])
    assert torch.allclose(out["pooled"], torch.tanh(encoder.pooler(out["hidden"][:, 0])))
    # Omitted token types mean segment 0; real segment ids do matter.
    zeros = encoder(
        batch["input_ids"], batch["attention_mask"], torch.zeros_like(batch["input_ids"])
    )
    none = encoder(batch["input_ids"], batch["attention_mask"])
    assert max_diff(zeros["hidden"], none["hidden"]) < ATOL
    assert max_diff(zeros["hidden"], out["hidden"]) > 1e-3


def test_too_long_is_an_error(encoder):
    with pytest.raises(ValueError, match="max_len"):
        encoder(torch.zeros(1, encoder.max_len + 1, dtype=torch.long))


def test_output_contract_carries_the_padding_mask():
    from selfsup.encoders.text import BertConfig, build_encoder

    enc = build_encoder(BertConfig(vocab_size=30, dim=16, n_layers=2, n_heads=2, ffn_dim=32,
                                   max_len=16))  # fmt: skip
    ids = torch.randint(5, 30, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    out = enc(ids, mask, return_all=True)
    assert out["padding_mask"].tolist() == (mask == 0).tolist()
    assert len(out["all_hidden"]) == 3 and out["all_hidden"][-1] is out["hidden"]
    seq_ids = torch.tensor([[0, 0, 1, 1, 1, -1], [0, 0, 0, -1, -1, -1]])  # two rows, packed
    assert enc(ids, seq_ids=seq_ids)["padding_mask"].tolist() == (seq_ids < 0).tolist()
    assert not enc(ids)["padding_mask"].any()
