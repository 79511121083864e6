"""Fill-mask: the most likely tokens at each [MASK] of a text, from a model with an MLM head
(`selfsup fill-mask MODEL TEXT`)."""

from __future__ import annotations

import os

import torch

from selfsup.errors import ConfigError
from selfsup.keys import INPUT_IDS
from selfsup.models import Loaded, load_model
from selfsup.predict import predict_batches


def fill_mask(model: str | os.PathLike | Loaded, text: str, top_k: int = 5) -> list[list[dict]]:
    """For each [MASK] of `text`, in order, the `top_k` most likely tokens, most likely first:
    [{"token": "night", "prob": 0.41237}, ...] (probabilities rounded to 5 decimals). `model` is
    a model folder (a selfsup run or a HF BERT folder with an MLM head) or a loaded one."""
    loaded = model if isinstance(model, Loaded) else load_model(model)
    name = "the model" if isinstance(model, Loaded) else model
    if loaded.model is None:
        raise ConfigError(f"{name} has no MLM head (it is an encoder only); cannot fill masks")
    tok, mlm = loaded.tokenizer, loaded.model
    batch = tok([text], max_len=loaded.config.max_len)
    if not bool((batch[INPUT_IDS] == tok.mask_id).any()):
        if "[MASK]" in text:
            raise ConfigError(f"the [MASK] is beyond the model's {loaded.config.max_len} tokens")
        raise ConfigError("the text has no [MASK] token")
    if top_k < 1:
        raise ConfigError("--top-k must be >= 1")

    def forward(b: dict[str, torch.Tensor]) -> torch.Tensor:
        return mlm.predict_masked(b, b[INPUT_IDS] == tok.mask_id)  # (M, V) log-probabilities

    ((_, logp),) = predict_batches(mlm, [(None, batch)], forward)
    top = torch.topk(logp.exp(), min(top_k, logp.shape[1]), dim=-1)  # (M, k)
    return [
        [{"token": tok.decode_token(int(i)), "prob": round(float(p), 5)}
         for p, i in zip(ps, ids, strict=True)]
        for ps, ids in zip(top.values, top.indices, strict=True)
    ]  # fmt: skip
