"""`selfsup cluster`: k-means labels of audio frames, HuBERT's targets (arXiv:2106.07447, 3.2).

    selfsup cluster mfcc --data clips/ --k 100 --out labels1          # iteration 1
    selfsup pretrain --objective hubert --labels labels1 --data clips/ --out run1
    selfsup cluster run1 --layer 6 --data clips/ --k 500 --out labels2  # iteration 2

Sources:
    mfcc   13 MFCCs with deltas and delta-deltas (39 values) every 10 ms at 16 kHz, as the
           paper's first iteration (selfsup.data.features, read through its feature cache)
    fbank  80 log-mel filterbank energies every 10 ms, the same way
    RUN    a selfsup audio run, an HF wav2vec 2.0 / HuBERT folder, or random:RUN (the same
           architecture with random weights), as selfsup.eval.upstream loads them: the hidden
           states of layer `layer` (0 the Transformer's input, L the output of its L-th block),
           at the encoder's frame rate; a group-norm front end encodes each file alone, so
           no other file's padding reaches its frames

Fitting (selfsup.cluster, seeded by `seed`): with at most `sample` frames in the data, Lloyd's
k-means from k-means++ on all of them; with more, k-means++ on `sample` frames drawn at random,
then one pass of mini-batch k-means (StreamingKMeans, 10,000 frames a batch, as HuBERT's
MiniBatchKMeans) over every frame in a random order. The one set of centroids labels every file,
so training and held-out clips share them. The frames are held in memory.

The labels folder (selfsup/data/frame_labels.py) is built in a hidden temporary folder and
renamed into place once complete, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict

import numpy as np
import torch

from selfsup.checkpoint import temp_folder
from selfsup.cluster import (
    StreamingKMeans,
    assign,
    inertia,
    kmeans,
    kmeans_plusplus,
    save_centroids,
)
from selfsup.data.audio import collate_frames, list_audio
from selfsup.data.features import FeatureConfig, cached_features
from selfsup.data.frame_labels import CENTROIDS_FILE, FrameGeometry, write_labels
from selfsup.device import resolve_device
from selfsup.errors import ConfigError
from selfsup.keys import FEATURES, PADDING_MASK
from selfsup.monitors import cluster_usage, collapse_warnings
from selfsup.paths import check_out_folder

# HuBERT's first-iteration features: 39-dimensional MFCCs at 100 Hz (no normalisation).
MFCC_FEATURES = FeatureConfig(kind="mfcc", n_mfcc=13, deltas=2)
FEATURE_SOURCES = {"mfcc": MFCC_FEATURES, "fbank": FeatureConfig(kind="fbank")}
STREAM_BATCH = 10_000  # frames per mini-batch k-means update (HuBERT's batch_size)
ENCODE_BATCH = 16  # files per forward through a run's encoder


def fit_centroids(
    x: torch.Tensor, k: int, sample: int, generator: torch.Generator
) -> tuple[torch.Tensor, str]:
    """(k, D) centroids of the rows of x (N, D), as the module docstring says, and how they were
    fitted (a phrase for the log)."""
    N = x.shape[0]
    if k > N:
        raise ConfigError(f"--k {k} is larger than the {N} frames of the data: lower --k")
    if N <= sample:
        centroids, _ = kmeans(x, k, generator=generator)
        return centroids, f"Lloyd's k-means on all {N:,} frames"
    if sample < k:
        raise ConfigError(f"--sample {sample} frames cannot seed {k} clusters: raise --sample")
    picked = torch.randperm(N, generator=generator)[:sample].sort().values
    km = StreamingKMeans(k, generator, init=kmeans_plusplus(x[picked], k, generator))
    order = torch.randperm(N, generator=generator)
    for s in range(0, N, STREAM_BATCH):
        km.partial_fit(x[order[s : s + STREAM_BATCH]])
    how = f"k-means++ on {sample:,} sampled frames, then mini-batch k-means over all {N:,}"
    return km.centroids.to(x.dtype), how


def feature_frames(
    source: str, items: list, cache_dir: str | None, log
) -> tuple[list[np.ndarray], FrameGeometry, dict]:
    """The frames of a feature source (mfcc), their geometry and what the note records."""
    cfg = FEATURE_SOURCES[source]
    frames = cached_features(items, cfg, cache_dir, log=log)
    geometry = FrameGeometry(cfg.sample_rate, cfg.hop_length, 0.0)  # centred windows
    return frames, geometry, {"source": source, "layer": None, "features": asdict(cfg)}


def run_frames(
    source: str, layer: int, items: list, cache_dir: str | None, device: str, log
) -> tuple[list[np.ndarray], FrameGeometry, dict]:
    """Layer `layer`'s hidden states (T'_i, D) of each file under a run's encoder (or an HF
    wav2vec 2.0 / HuBERT folder's: any upstream selfsup.eval.upstream loads), their geometry
    (the upstream's frame stride and offset) and what the note records."""
    from selfsup.eval.upstream import load_upstream

    upstream = load_upstream(source)
    if not hasattr(upstream, "encoder"):
        raise ConfigError(f"{source}: a feature SOURCE is {' or '.join(FEATURE_SOURCES)}")
    n = upstream.n_layers
    if not -n <= layer < n:
        raise ConfigError(f"--layer {layer}: {source} has layers 0..{n - 1} (0: the "
                          "Transformer's input)")  # fmt: skip
    layer %= n
    features = upstream.features
    geometry = FrameGeometry(features.sample_rate, int(upstream.frame_stride_samples),
                             float(upstream.frame_offset_samples))  # fmt: skip
    dev = resolve_device(device)
    upstream.to(dev)
    inputs = cached_features(items, features, cache_dir, log=log)
    out: list[np.ndarray | None] = [None] * len(inputs)
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))  # little padding
    with torch.no_grad():
        for s in range(0, len(order), ENCODE_BATCH):
            idx = order[s : s + ENCODE_BATCH]
            batch = collate_frames([inputs[i] for i in idx])
            result = upstream(batch[FEATURES].to(dev), batch[PADDING_MASK].to(dev))
            hidden = result["all_hidden"][layer].float().cpu()  # (B, T', D)
            lengths = (~result["padding_mask"]).sum(-1).tolist()
            for row, (i, length) in enumerate(zip(idx, lengths, strict=True)):
                out[i] = hidden[row, :length].numpy()
    note = {"source": os.path.abspath(source.removeprefix("random:")), "layer": layer,
            "random_init": source.startswith("random:"), "features": asdict(features)}  # fmt: skip
    return out, geometry, note  # type: ignore[return-value]


def cluster_audio(
    source: str,
    data: list[str],
    k: int,
    out: str | os.PathLike,
    layer: int | None = None,
    sample: int = 100_000,
    seed: int = 0,
    cache_dir: str | None = None,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> dict:
    """Fit k-means to the frames of `source` over the audio files of `data` and write the labels
    folder `out` (see the module docstring); returns its note (labels.json)."""
    folder = check_out_folder(out)
    if k < 2:
        raise ConfigError(f"--k must be at least 2, got {k}")
    if sample < 1:
        raise ConfigError(f"--sample must be positive, got {sample}")
    if not data:
        raise ConfigError("cluster needs --data: folders of audio files or manifests")
    is_features = source in FEATURE_SOURCES
    if is_features and layer is not None:
        raise ConfigError(f"--layer is for a run SOURCE, not {source}")
    if not is_features and layer is None:
        raise ConfigError(f"give --layer L: which layer of {source} to cluster")
    items = [item for p in data for item in list_audio(p)]
    t0 = time.perf_counter()
    if is_features:
        frames, geometry, note = feature_frames(source, items, cache_dir, log)
    else:
        frames, geometry, note = run_frames(source, layer, items, cache_dir, device, log)
    x = torch.from_numpy(np.concatenate(frames).astype(np.float32, copy=False))  # (N, D)
    g = torch.Generator().manual_seed(seed)
    centroids, how = fit_centroids(x, k, sample, g)
    labels = [assign(f, centroids).numpy().astype(np.int32) for f in frames]
    every = torch.from_numpy(np.concatenate(labels).astype(np.int64))
    usage = cluster_usage(every, k)
    counts = np.bincount(every.numpy(), minlength=k)
    p = counts / counts.sum()
    perplexity = float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))
    info = {
        "k": k,
        **note,
        "sample_rate": geometry.sample_rate,
        "hop": geometry.hop,
        "offset": geometry.offset,
        "frame_rate": geometry.frame_rate,
        "trim_db": float(note["features"].get("trim_db", 0.0)),
        "files": len(items),
        "frames": int(x.shape[0]),
        "dim": int(x.shape[1]),
        "fit": {
            "method": how,
            "sample": sample,
            "seed": seed,
            "inertia_per_frame": inertia(x, centroids) / x.shape[0],
        },  # fmt: skip
        "usage": {
            "clusters_used": int((counts > 0).sum()),
            "used_fraction": float(usage["cluster_used_fraction"]),
            "max_share": float(usage["cluster_max_share"]),
            "perplexity": perplexity,
        },
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(folder.parent, folder.name)
    try:
        settings = {"source": info["source"], "layer": info["layer"], "fit": how, "seed": seed}
        save_centroids(tmp / CENTROIDS_FILE, centroids.float(), settings)
        write_labels(tmp, [i.path for i in items], labels, info)
        if folder.exists():
            folder.rmdir()  # empty (check_out_folder): replaced by the finished folder
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    u = info["usage"]
    what = source if layer is None else f"{source} layer {info['layer']}"
    log(
        f"clustered {info['frames']:,} frames of {info['dim']} values from {len(items)} files "
        f"({what}, {geometry.frame_rate:g} Hz) into k={k}: {how}; "
        f"{time.perf_counter() - t0:.1f}s"
    )
    log(
        f"cluster usage: {u['clusters_used']} of {k} clusters used, the largest holds "
        f"{u['max_share']:.1%} of the frames, perplexity {u['perplexity']:.1f}; "
        f"labels in {folder}"
    )
    for warning in collapse_warnings(usage):
        log(f"warning: {warning}")
    return info
