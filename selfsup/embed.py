"""Contextual embeddings: sentence vectors (mean over real tokens, or [CLS]) or token vectors.

Mean pooling averages the last layer over the sentence's tokens, as sentence-transformers does for
all-MiniLM-L6-v2 (arXiv:1908.10084), optionally followed by L2 normalisation.

Speed on CPU comes from two things. Padding is never computed: sentences are tokenized in one
call, grouped by exact token length, and each batch holds sentences of one length, so no batch is
padded, attention runs without a mask and mean pooling is a plain mean. And the cores are used as
independent workers: on a CPU with N intra-op threads, N Python threads each run whole batches with
one intra-op thread (PyTorch releases the GIL inside its ops), so the small element-wise ops of
short sequences pay no thread synchronisation (selfsup.predict). Outputs come back in input order.

Files (`embed_file`): one row per input line, blank lines included (a blank line is embedded as
the empty sentence, `[CLS] [SEP]`), so row i is line i + 1. Sentence vectors are an (N, D)
float32 .npy; token vectors (`tokens` pooling) an .npz archive without pickled objects:
`vectors` (sum of T_i, D) float32, all sentences' token rows one after the other, and `offsets`
(N + 1,) int64, sentence i being vectors[offsets[i] : offsets[i + 1]] (`read_token_vectors`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.data.readers import read_records
from selfsup.data.tokenizer import Tokenizer
from selfsup.device import inference_bf16
from selfsup.encoders.text import BertEncoder
from selfsup.errors import ConfigError
from selfsup.models import load_model
from selfsup.paths import check_out_file
from selfsup.predict import default_workers, predict_batches

# Sentences per batch (of one token length). Not yet measured: compare 32/64/128 with
# `benchmarks/inference.py --selfsup-batch-size N` on an idle machine.
BATCH_SIZE = 64
TOKENIZE_CHUNK = 16_384  # sentences per tokenizer call: bounds the tokenizer's per-call memory


def tokenize(tok: Tokenizer, sentences: list[str], max_len: int) -> list[list[int]]:
    """[CLS] pieces [SEP] per sentence, keeping the first max_len - 2 pieces (as transformers
    truncates), unpadded."""
    encode = getattr(tok.tok, "encode_batch_fast", tok.tok.encode_batch)  # tokenizers < 0.20
    ids = []
    for s in range(0, len(sentences), TOKENIZE_CHUNK):
        enc = encode(sentences[s : s + TOKENIZE_CHUNK], add_special_tokens=False)
        ids += [[tok.cls_id, *e.ids[: max_len - 2], tok.sep_id] for e in enc]
    return ids


def length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Indices grouped by equal length, longest first, at most batch_size per group: no group
    needs padding."""
    order = np.argsort(-lengths, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(lengths[order])) + 1)
    return [g[s : s + batch_size] for g in groups for s in range(0, len(g), batch_size)]


def hidden_fn(encoder: BertEncoder, compile: bool = False) -> Callable:
    """input_ids (B, T) without padding -> last hidden states (B, T, D); skips the pooler.

    compile=True runs it through torch.compile (inductor) with dynamic shapes, so the many
    (B, T) shapes share one graph; the first call pays the compilation."""

    def hidden(input_ids: torch.Tensor) -> torch.Tensor:
        return encoder.transformer(encoder.embed(input_ids))  # (B, T, D)

    return torch.compile(hidden, dynamic=True) if compile else hidden


def embed_sentences(
    encoder: BertEncoder,
    tok: Tokenizer,
    sentences: list[str],
    pooling: str = "mean",
    batch_size: int = BATCH_SIZE,
    max_len: int | None = None,
    normalize: bool = False,
    hidden: Callable | None = None,
    workers: int | None = None,
    bf16: bool = False,
) -> list[np.ndarray] | np.ndarray:
    """(N, D) float32 for mean/cls pooling (L2-normalised if `normalize`); a list of (T_i, D)
    arrays for `tokens`. `hidden` replaces hidden_fn(encoder), e.g. a compiled one. `workers`
    batches run at once (default: default_workers); 1 runs them one by one on all threads.
    `bf16`: the encoder runs under bf16 autocast (the vectors are still float32)."""
    if pooling not in ("mean", "cls", "tokens"):
        raise ValueError(f"pooling must be mean, cls or tokens, not {pooling!r}")
    hidden = hidden or hidden_fn(encoder)
    device = next(encoder.parameters()).device
    max_len = min(max_len or encoder.max_len, encoder.max_len)
    ids = tokenize(tok, sentences, max_len)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    if pooling == "tokens":
        out: list | np.ndarray = [None] * len(sentences)
    else:
        out = np.empty((len(sentences), encoder.dim), dtype=np.float32)

    def encode(input_ids: torch.Tensor) -> torch.Tensor:
        h = hidden(input_ids)  # (B, T, D)
        if pooling == "tokens":
            return h.float().cpu()
        vecs = h.mean(1) if pooling == "mean" else h[:, 0]  # (B, D)
        if normalize:
            vecs = F.normalize(vecs, p=2, dim=1)
        return vecs.float().cpu()

    groups = length_batches(lengths, batch_size)
    batches = ((idx, torch.tensor([ids[i] for i in idx])) for idx in groups)  # (B, T), one length
    workers = min(default_workers(device) if workers is None else workers, len(groups))
    for idx, result in predict_batches(encoder, batches, encode, workers, bf16):
        if pooling == "tokens":
            for j, i in enumerate(idx):
                out[i] = result[j].numpy()
        else:
            out[idx] = result.numpy()
    return out


def sentence_transformers_settings(folder: str | os.PathLike) -> dict:
    """Pooling, normalisation and max length declared by a sentence-transformers folder
    (modules.json, 1_Pooling/config.json, sentence_bert_config.json); {} for other folders."""
    p = Path(folder)
    settings: dict = {}
    try:
        modules = json.loads((p / "modules.json").read_text())
    except (OSError, json.JSONDecodeError):
        return settings
    types = {m.get("type", "").rsplit(".", 1)[-1]: m.get("path", "") for m in modules}
    settings["normalize"] = "Normalize" in types
    if "Pooling" in types:
        pool = json.loads((p / types["Pooling"] / "config.json").read_text())
        on = [k[len("pooling_mode_") :] for k, v in pool.items() if k.startswith("pooling_mode_")
              and v is True]  # fmt: skip
        if isinstance(pool.get("pooling_mode"), str):  # newer sentence-transformers configs
            on = [pool["pooling_mode"]]
        mode = "+".join(on) or "none"
        settings["pooling"] = {"mean_tokens": "mean", "cls_token": "cls"}.get(mode, mode)
    sbert = p / "sentence_bert_config.json"
    if sbert.exists() and json.loads(sbert.read_text()).get("max_seq_length"):
        settings["max_len"] = int(json.loads(sbert.read_text())["max_seq_length"])
    return settings


def embed_file(
    model: str,
    input_path: str,
    out_path: str,
    pooling: str | None = None,
    batch_size: int | None = None,
    max_len: int | None = None,
    normalize: bool | None = None,
    compile: bool = False,
    workers: int | None = None,
    precision: str = "fp32",
    plot: str | None = None,
    label_column: str | None = None,
    text_column: str | None = None,
):
    """Embed one sentence per line, blank lines too, to a .npy file (an .npz of vectors and
    offsets for `tokens`; see the module docstring). pooling, max_len and normalize left as None
    follow the model folder's sentence-transformers settings when it has them (all-MiniLM-L6-v2:
    mean, 256, normalised), else mean pooling, the model's max_len, no normalisation.
    `precision`: fp32 (the default) | bf16 | auto, of the encoder's forwards.

    With `text_column` or `label_column`, the input is a table (CSV/TSV with a header, JSON
    lines) and row i of the output is its row i. `plot`: also a PNG t-SNE map of the sentence
    vectors, coloured by `label_column` (selfsup.text_plots.plot_sentence_map)."""
    labels = None
    if label_column is not None or text_column is not None:
        sentences, labels = read_table_sentences(input_path, text_column or "text", label_column)
    else:
        sentences = read_lines_to_embed(input_path)  # row i of the output is line i + 1
    if plot is not None:
        if Path(plot).suffix.lower() != ".png" or Path(plot).is_dir():
            raise ConfigError(f"--plot takes a .png file name, not {plot}")
        if pooling == "tokens":
            raise ConfigError("--plot maps sentence vectors: not with --pooling tokens")
        if len(sentences) < 5:
            raise ConfigError(f"--plot needs at least 5 sentences, {input_path} has "
                              f"{len(sentences)}")  # fmt: skip
    batch_size = BATCH_SIZE if batch_size is None else batch_size
    if batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if workers is not None and workers < 1:
        raise ConfigError("--workers must be >= 1")
    if max_len is not None and max_len < 2:
        raise ConfigError("--max-len must be >= 2 (room for [CLS] and [SEP])")
    out = check_out_file(out_path, "vectors.npy")
    loaded = load_model(model)
    st = sentence_transformers_settings(model)
    pooling = pooling or st.get("pooling", "mean")
    if pooling not in ("mean", "cls", "tokens"):
        raise ConfigError(f"{model} asks for {pooling} pooling; pass --pooling mean|cls|tokens")
    if pooling == "tokens" and out.suffix != ".npz":
        raise ConfigError(f"--pooling tokens writes an .npz archive; name --out {out.stem}.npz")
    normalize = st.get("normalize", False) if normalize is None else normalize
    vecs = embed_sentences(
        loaded.encoder,
        loaded.tokenizer,
        sentences,
        pooling,
        batch_size,
        max_len or st.get("max_len"),
        normalize,
        hidden_fn(loaded.encoder, compile),
        workers,
        inference_bf16(precision, next(loaded.encoder.parameters()).device),
    )
    if pooling == "tokens":
        write_arrays(out, out_path, token_arrays(vecs, loaded.config.dim))
    else:
        write_arrays(out, out_path, vecs)
    if plot is not None:
        from selfsup.text_plots import plot_sentence_map

        by = f", coloured by {label_column}" if label_column else ""
        plot_sentence_map(vecs, labels, plot, f"t-SNE of {len(vecs)} sentence vectors{by}")
    shape = vecs.shape if pooling != "tokens" else (len(vecs), "T", loaded.config.dim)
    return len(sentences), shape


def read_table_sentences(
    path: str | os.PathLike, text_column: str, label_column: str | None
) -> tuple[list[str], list[str] | None]:
    """The text (and label) column of every row of a CSV/TSV file with a header or a JSON-lines
    file (`selfsup embed --label-column`)."""
    if not Path(path).is_file():
        raise ConfigError(f"no such input file: {path}")
    need = (text_column,) if label_column is None else (text_column, label_column)
    texts, labels = [], []
    for _, row in read_records(path, require=need):
        texts.append(str(row[text_column] or "").strip())
        if label_column is not None:
            labels.append("" if row[label_column] is None else str(row[label_column]).strip())
    if not texts:
        raise ConfigError(f"{path} has no rows")
    return texts, labels if label_column is not None else None


def read_lines_to_embed(input_path: str) -> list[str]:
    """The stripped lines of a UTF-8 text file, blank ones too (a one-line error when it is
    missing, not UTF-8 or blank)."""
    src = Path(input_path)
    if not src.is_file():
        raise ConfigError(f"no such input file: {input_path}")
    try:
        lines = [ln.strip() for ln in src.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise ConfigError(f"{input_path} is not valid UTF-8 text") from None
    if not any(lines):
        raise ConfigError(f"{input_path} has no sentences")
    return lines


def write_arrays(out: Path, out_path: str, arrays: np.ndarray | dict[str, np.ndarray]) -> None:
    """Save one array (.npy) or named arrays (.npz) to `out` through a temporary file renamed
    into place, so a failure leaves no partial output; a one-line error when the folder cannot
    be made."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot write {out_path}: {e.strerror}") from None
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=out.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(arrays, dict):
                np.savez(f, **arrays)
            else:
                np.save(f, arrays, allow_pickle=False)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def token_arrays(vecs: list[np.ndarray], dim: int) -> dict[str, np.ndarray]:
    """Token vectors of N sentences as two plain arrays: `vectors` (sum T_i, D), every
    sentence's rows in input order, and `offsets` (N + 1,), sentence i being
    vectors[offsets[i] : offsets[i + 1]]."""
    offsets = np.zeros(len(vecs) + 1, dtype=np.int64)
    np.cumsum([len(v) for v in vecs], out=offsets[1:])
    flat = np.concatenate(vecs) if vecs else np.zeros((0, dim), dtype=np.float32)
    return {"vectors": flat.astype(np.float32, copy=False), "offsets": offsets}


def read_token_vectors(path: str | os.PathLike) -> list[np.ndarray]:
    """The (T_i, D) token vectors per sentence of an `embed --pooling tokens` .npz file (read
    without unpickling anything)."""
    with np.load(path, allow_pickle=False) as z:
        vectors, offsets = z["vectors"], z["offsets"]
    return [vectors[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
