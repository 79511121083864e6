"""fill_mask: the library side of `selfsup fill-mask`."""

from __future__ import annotations

import pytest
import torch

from selfsup.errors import ConfigError
from selfsup.fill_mask import fill_mask
from selfsup.models import load_model


def test_top_k_per_mask_equals_the_mlm_head(tiny_run):
    loaded = load_model(tiny_run)
    text = "the [MASK] sailor walked to the [MASK] ."
    results = fill_mask(loaded, text, top_k=3)
    assert results == fill_mask(tiny_run, text, top_k=3)  # a folder or a loaded model
    batch = loaded.tokenizer([text])
    with torch.no_grad():
        probs = loaded.model.predict_masked(batch, batch["input_ids"] == loaded.tokenizer.mask_id)
    probs = probs.exp()  # (2, V)
    assert len(results) == 2
    tok = loaded.tokenizer
    for res, p in zip(results, probs, strict=True):
        top = torch.topk(p, 3)
        assert [r["token"] for r in res] == [tok.decode_token(int(i)) for i in top.indices]
        assert [r["prob"] for r in res] == [round(float(v), 5) for v in top.values]


def test_bad_input(tiny_run):
    with pytest.raises(ConfigError, match="no \\[MASK\\]"):
        fill_mask(tiny_run, "no mask here")
    with pytest.raises(ConfigError, match="--top-k must be >= 1"):
        fill_mask(tiny_run, "a [MASK] .", top_k=0)
