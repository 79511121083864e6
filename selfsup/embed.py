"""Contextual embeddings: sentence vectors (mean over real tokens, or [CLS]) or token vectors.

Mean pooling averages the last layer over non-padding tokens, as sentence-transformers does for
all-MiniLM-L6-v2. Batches are sorted by length so little compute goes to padding; outputs come
back in input order.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from selfsup.checkpoint import load_model
from selfsup.config import ConfigError
from selfsup.data.tokenizer import Tokenizer
from selfsup.encoders.text import BertEncoder


@torch.no_grad()
def embed_sentences(
    encoder: BertEncoder,
    tok: Tokenizer,
    sentences: list[str],
    pooling: str = "mean",
    batch_size: int = 64,
    max_len: int | None = None,
) -> list[np.ndarray] | np.ndarray:
    """(N, D) float32 for mean/cls pooling; a list of (T_i, D) arrays for `tokens`."""
    encoder.eval()
    max_len = min(max_len or encoder.max_len, encoder.max_len)
    lengths = [len(ids) for ids in tok.encode_plain(sentences)]
    order = np.argsort(lengths, kind="stable")
    out: list = [None] * len(sentences)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        batch = tok([sentences[i] for i in idx], max_len=max_len)
        h = encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])["hidden"]
        m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        if pooling == "mean":
            vecs = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        elif pooling == "cls":
            vecs = h[:, 0]
        else:
            vecs = [h[j, : int(batch["attention_mask"][j].sum())] for j in range(len(idx))]
        for j, i in enumerate(idx):
            out[i] = vecs[j].float().numpy()
    if pooling == "tokens":
        return out
    return np.stack(out) if out else np.zeros((0, encoder.dim), dtype=np.float32)


def embed_file(
    model: str,
    input_path: str,
    out_path: str,
    pooling: str = "mean",
    batch_size: int = 64,
    max_len: int | None = None,
    normalize: bool = False,
):
    src = Path(input_path)
    if not src.is_file():
        raise ConfigError(f"no such input file: {input_path}")
    try:
        lines = [ln.strip() for ln in src.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise ConfigError(f"{input_path} is not valid UTF-8 text") from None
    sentences = [ln for ln in lines if ln]
    if not sentences:
        raise ConfigError(f"{input_path} has no sentences")
    if batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if max_len is not None and max_len < 2:
        raise ConfigError("--max-len must be >= 2 (room for [CLS] and [SEP])")
    out = Path(out_path)
    if out.is_dir():
        raise ConfigError(f"{out_path} is a folder; --out takes a file name such as vectors.npy")
    loaded = load_model(model)
    vecs = embed_sentences(
        loaded.encoder, loaded.tokenizer, sentences, pooling, batch_size, max_len
    )
    if pooling == "tokens":
        arr = np.empty(len(vecs), dtype=object)
        arr[:] = vecs
    else:
        arr = vecs
        if normalize:
            arr = arr / np.linalg.norm(arr, axis=1, keepdims=True).clip(min=1e-12)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot write {out_path}: {e.strerror}") from None
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".npy")
    os.close(fd)
    np.save(tmp, arr, allow_pickle=pooling == "tokens")
    os.replace(tmp, out)
    shape = arr.shape if pooling != "tokens" else (len(arr), "T", loaded.config.dim)
    return len(sentences), shape
