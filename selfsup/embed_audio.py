"""`selfsup embed` for speech: a vector per audio file (mean over its frames of one layer), or
every frame's vector (`--pooling frames`), from a selfsup audio run, an HF wav2vec 2.0 / HuBERT
folder (random:... for either) or a feature baseline (selfsup.eval.upstream).

Output: `.npy`, the (N, D) vectors, row i the i-th file as `list_audio` lists them (sorted
paths for a folder, a manifest's order); or `.npz` with `vectors`, `paths` (the files, in row
order) and, for frames, `offsets` (file i is vectors[offsets[i]:offsets[i + 1]]) and `times`
(each frame's centre, in seconds from the start of its file: a spectral frame t at
t * hop_length, a waveform encoder's frame t at t * stride + receptive_field / 2 samples, after
the silence the upstream trims, if any). Written to a temporary file and renamed, so a failure
leaves no partial output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from selfsup.checkpoint import is_run
from selfsup.data.audio import list_audio, load_audio, resample
from selfsup.data.features import cached_features, trimmed_range
from selfsup.embed import write_arrays
from selfsup.errors import ConfigError
from selfsup.eval.upstream import BASELINES, load_upstream
from selfsup.paths import check_out_file

POOLINGS = ("mean", "frames")


def is_audio_model(path: str) -> bool:
    """Whether `path` names a speech upstream: a feature baseline, an audio run folder or a
    HuggingFace wav2vec 2.0 / HuBERT folder (random:... too)."""
    from selfsup.models import is_hf_speech, run_config

    if path in BASELINES or path.startswith("random:"):
        return True
    p = Path(path)
    if is_hf_speech(p):
        return True
    if not (p.is_dir() and is_run(p)):
        return False
    return hasattr(run_config(p).data, "features")


def frame_times(upstream, items, frames: list[np.ndarray]) -> list[np.ndarray]:
    """Each file's (T'_i,) frame centres in seconds from the file's start: the upstream's
    frame_centres shifted by the samples its features trimmed off the front (the files are
    read again only when the upstream trims)."""
    cfg = upstream.features
    out = []
    for item, f in zip(items, frames, strict=True):
        start = 0
        if cfg.trim_db > 0:
            wave, rate = load_audio(item.path)
            start, _ = trimmed_range(resample(wave, rate, cfg.sample_rate), cfg)
        out.append((start + upstream.frame_centres(len(f))) / cfg.sample_rate)
    return out


@torch.no_grad()
def embed_audio_file(
    model: str,
    source: str,
    out_path: str,
    pooling: str | None = None,
    batch_size: int | None = None,
    layer: int = -1,
    cache_dir: str | None = None,
    log=print,
) -> tuple[int, tuple]:
    pooling = pooling or "mean"
    if pooling not in POOLINGS:
        raise ConfigError(f"audio embeddings pool by {' or '.join(POOLINGS)}, not {pooling!r}")
    out = check_out_file(out_path, "vectors.npy")
    if out.suffix not in (".npy", ".npz"):
        raise ConfigError(f"--out {out_path}: name an .npy or .npz file")
    if pooling == "frames" and out.suffix != ".npz":
        raise ConfigError(f"--pooling frames writes an .npz archive; name --out {out.stem}.npz")
    batch_size = batch_size or 16
    if batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    upstream = load_upstream(model)
    if not -upstream.n_layers <= layer < upstream.n_layers:
        raise ConfigError(f"--layer {layer}: {model} has layers 0..{upstream.n_layers - 1}")
    items = list_audio(source)
    frames = cached_features(items, upstream.features, cache_dir, log=log)
    order = np.argsort([len(f) for f in frames], kind="stable")  # batches of similar length
    vectors: list[np.ndarray | None] = [None] * len(frames)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        clips = [torch.from_numpy(np.array(frames[i])) for i in idx]
        T = max(len(c) for c in clips)
        x = torch.zeros(len(clips), T, clips[0].shape[1])
        pad = torch.ones(len(clips), T, dtype=torch.bool)
        for j, c in enumerate(clips):
            x[j, : len(c)], pad[j, : len(c)] = c, False
        r = upstream(x, pad)
        h, hpad = r["all_hidden"][layer], r["padding_mask"]  # (B, T', D), (B, T')
        for j, i in enumerate(idx):
            v = h[j][~hpad[j]].float()
            if not len(v):  # shorter than what one frame reads: a mean would be NaN
                raise ConfigError(f"{items[i].path} is too short for one frame of {model}")
            vectors[i] = (v.mean(0) if pooling == "mean" else v).numpy()
    if pooling == "mean":
        arrays = {"vectors": np.stack(vectors).astype(np.float32)}
    else:
        offsets = np.zeros(len(vectors) + 1, dtype=np.int64)
        np.cumsum([len(v) for v in vectors], out=offsets[1:])
        times = frame_times(upstream, items, frames)
        for item, v, t in zip(items, vectors, times, strict=True):
            if len(v) != len(t):  # the upstream's frame description disagrees with its output
                raise ConfigError(f"{item.path}: {len(v)} frames from {model}, whose frame "
                                  f"description gives {len(t)}")  # fmt: skip
        arrays = {"vectors": np.concatenate(vectors).astype(np.float32), "offsets": offsets,
                  "times": np.concatenate(times)}  # fmt: skip
    arrays["paths"] = np.array([str(it.path) for it in items])  # unicode, not objects
    write_arrays(out, out_path, arrays if out.suffix == ".npz" else arrays["vectors"])
    return len(items), arrays["vectors"].shape
