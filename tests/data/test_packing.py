"""Packing: rows hold whole examples, positions restart, attention stays inside each example, and
a packed batch gives the same outputs, losses and gradients as the padded one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import pair_data

from selfsup.data.packing import collate_packed, pack_batch, pack_rows, unpack
from selfsup.data.text import collate
from selfsup.encoders.text import BertConfig, build_encoder
from selfsup.keys import IGNORE
from selfsup.objectives import OBJECTIVES
from selfsup.objectives.base import batch_loss
from selfsup.objectives.mlm import MLM

MLM_FAMILY = sorted(name for name, cls in OBJECTIVES.items() if issubclass(cls, MLM))


def _examples(lengths, seed=0, vocab=50):
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        ids = [2, *rng.integers(5, vocab, n - 2).tolist(), 3]
        cut = int(rng.integers(1, n))
        types = [0] * cut + [1] * (n - cut)
        out.append((ids, types, int(rng.integers(0, 2))))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_pack_rows_holds_every_example_once_within_max_len(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 65, 40).tolist()
    rows = pack_rows(lengths, 64)
    flat = sorted(i for row in rows for i in row)
    assert flat == list(range(40))
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)
    # first-fit decreasing never needs more rows than 11/9 OPT + 1, and OPT >= total / 64
    assert len(rows) <= 11 / 9 * np.ceil(sum(lengths) / 64) + 1
    assert pack_rows(lengths, 64) == rows  # deterministic


def test_pack_rows_rejects_an_example_longer_than_a_row():
    with pytest.raises(ValueError, match="does not fit"):
        pack_rows([10, 70], 64)


def test_collate_packed_layout():
    ex = _examples([30, 10, 20, 60, 5], seed=1)
    b = collate_packed(ex, pad_id=0, max_len=64)
    R, T = b["input_ids"].shape
    assert T <= 64 and R == len(pack_rows([len(e[0]) for e in ex], 64))
    assert int(b["attention_mask"].sum()) == sum(len(e[0]) for e in ex)
    assert (b["seq_ids"] >= 0).eq(b["attention_mask"].bool()).all()
    flat_ids = b["input_ids"].reshape(-1)
    flat_pos = b["position_ids"].reshape(-1)
    flat_types = b["token_type_ids"].reshape(-1)
    for i, (ids, types, label) in enumerate(ex):
        s = int(b["cls_index"][i])
        n = len(ids)
        assert flat_ids[s : s + n].tolist() == ids
        assert flat_types[s : s + n].tolist() == types
        assert flat_pos[s : s + n].tolist() == list(range(n))
        assert int(b["pair_labels"][i]) == label


def _tiny_encoder(seed=0):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, ffn_dim=64, max_len=64,
                      dropout=0.0, attn_dropout=0.0)  # fmt: skip
    return build_encoder(cfg).eval()


def test_packed_outputs_equal_padded_outputs():
    ex = _examples([30, 10, 20, 60, 5, 17, 3], seed=2)
    enc = _tiny_encoder()
    padded = collate(ex, pad_id=0)
    packed = collate_packed(ex, pad_id=0, max_len=64)
    with torch.no_grad():
        ref = enc(padded["input_ids"], padded["attention_mask"], padded["token_type_ids"])
        out = enc(
            packed["input_ids"], packed["attention_mask"], packed["token_type_ids"],
            packed["position_ids"], seq_ids=packed["seq_ids"], cls_index=packed["cls_index"],
        )  # fmt: skip
    assert len(packed["input_ids"]) < len(ex)  # it did pack
    for i, h in enumerate(unpack(out["hidden"], packed["seq_ids"], packed["cls_index"])):
        n = len(ex[i][0])
        assert h.shape[0] == n
        torch.testing.assert_close(h, ref["hidden"][i, :n], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["pooled"], ref["pooled"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("objective", MLM_FAMILY)
def test_packed_loss_and_gradients_equal_padded(objective):
    ex = _examples([40, 12, 25, 60, 7, 33], seed=3)
    rng = np.random.default_rng(4)
    labels = [[t if rng.random() < 0.3 and 0 < j < len(e[0]) - 1 else IGNORE
               for j, t in enumerate(e[0])] for e in ex]  # fmt: skip
    labels[0][1] = ex[0][0][1]  # at least one target
    padded = collate(ex, pad_id=0)
    padded["labels"] = collate([(lab, lab, 0) for lab in labels], pad_id=IGNORE)["input_ids"]
    packed = collate_packed(ex, pad_id=0, max_len=64)
    # the layout depends only on the lengths, so labels pack the same way
    packed["labels"] = collate_packed([(lab, lab, 0) for lab in labels], IGNORE, 64)["input_ids"]

    grads, losses = [], []
    for batch in (padded, packed):
        torch.manual_seed(0)
        model = OBJECTIVES[objective](_tiny_encoder(), 50)
        loss = batch_loss(model, batch)
        loss.backward()
        losses.append(loss.detach())
        grads.append(
            torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
        )
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def tiny_run_data(tmp_path_factory, texts, tiny_tokenizer):
    return pair_data(tmp_path_factory.mktemp("pack"), texts[:200], tiny_tokenizer, 64)


def test_pretrain_batches_pack_the_same_examples(tiny_run_data):
    from selfsup.data.text import PretrainBatches

    builder, masker, chunk_ids = tiny_run_data
    plain = PretrainBatches(builder, masker, chunk_ids, 16, seed=7)[3]
    packed = PretrainBatches(builder, masker, chunk_ids, 16, seed=7, pack=True)[3]
    assert len(packed["cls_index"]) == 16
    assert int(packed["attention_mask"].sum()) == int(plain["attention_mask"].sum())
    assert packed["input_ids"].numel() <= plain["input_ids"].numel()
    assert packed["pair_labels"].tolist() == plain["pair_labels"].tolist()
    # every example's [CLS] opens its block
    assert (packed["input_ids"].reshape(-1)[packed["cls_index"]] == builder.tok.cls_id).all()
    # masking comes before packing: the same tokens after masking and the same labels
    lengths = plain["attention_mask"].sum(1).tolist()
    for key in ("input_ids", "token_type_ids", "labels"):
        flat = packed[key].reshape(-1)
        for i, (start, n) in enumerate(zip(packed["cls_index"].tolist(), lengths, strict=True)):
            assert flat[start : start + n].tolist() == plain[key][i, :n].tolist(), (key, i)


@pytest.mark.parametrize("seed", range(3))
def test_pack_batch_equals_collate_packed_of_its_examples(seed):
    """The vectorised packing of a padded, masked batch == the per-example reference."""
    rng = np.random.default_rng(seed)
    ex = _examples(rng.integers(3, 40, 17).tolist(), seed=seed)
    labels = [[int(t) if rng.random() < 0.2 else IGNORE for t in ids] for ids, _, _ in ex]
    padded = collate(ex, pad_id=0)
    padded["labels"] = collate([(lab, lab, 0) for lab in labels], pad_id=IGNORE)["input_ids"]
    ours = pack_batch(padded, pad_id=0, max_len=48)
    ref = collate_packed(ex, pad_id=0, max_len=48, labels=labels)
    assert ours.keys() == ref.keys()
    for key in ref:
        assert torch.equal(ours[key], ref[key]), key
    assert len(ours["input_ids"]) < len(ex)  # it did pack
