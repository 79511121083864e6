"""`selfsup probe`: how good a pretrained image backbone's frozen features are, by kNN and by a
linear probe on a labelled train/test split, against the `pixels` and `random:RUN` baselines.

The backbone runs in eval mode under no_grad (selfsup.eval.image_probe.extract_features), so
neither its weights nor its BatchNorm statistics move while it is probed: the evaluation bugs
users of other libraries hit (an unfrozen backbone, norm layers in train mode) cannot happen.
Sources:
    RUN          an image pretraining run folder: its backbone (the objective's encoder)
    random:RUN   the same backbone at its initialisation (the run's seed), untrained: what the
                 architecture alone gives; data-fitted buffers (iGPT's palette) are the run's
    pixels       the raw pixels, flattened
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from selfsup.checkpoint import atomic_write_text, is_run
from selfsup.config import modality_of
from selfsup.data.image import read_images
from selfsup.errors import ConfigError
from selfsup.eval.image_probe import extract_features, pixel_features, probe, tsne_plot
from selfsup.models import run_config, run_weights
from selfsup.objectives import build_objective, get_objective

METHODS = ("knn", "linear")


def load_source(source: str) -> torch.nn.Module | None:
    """The encoder `source` names (module docstring), in eval mode; None for pixels."""
    if source == "pixels":
        return None
    random = source.startswith("random:")
    path = Path(source.removeprefix("random:"))
    if not path.is_dir() or not is_run(path):
        raise ConfigError(f"{path} is not a selfsup run folder (or use pixels, random:RUN)")
    cfg = run_config(path)
    if modality_of(get_objective(cfg.objective.name)) != "image":
        raise ConfigError(f"{path} is a {cfg.objective.name} run, not an image run")
    torch.manual_seed(cfg.train.seed)  # the run's initial weights (random:RUN)
    objective = build_objective(cfg.objective, cfg.model)
    weights = run_weights(path)
    if random:
        fitted = getattr(objective, "data_buffers", ())
        objective.load_state_dict({k: weights[k] for k in fitted}, strict=False)
    else:
        objective.load_state_dict(weights)
    return objective.encoder.eval()


def features(encoder, images: np.ndarray, batch_size: int) -> torch.Tensor:
    if encoder is None:
        return pixel_features(images)
    return extract_features(encoder, images, batch_size=batch_size)


def run_probe(
    source: str,
    data: str,
    methods: tuple[str, ...] = METHODS,
    seeds: tuple[int, ...] = (0, 1, 2),
    test: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
    image_size: int = 32,
    batch_size: int = 256,
    knn_k: int = 200,
    knn_temperature: float = 0.1,
    tsne: str | None = None,
    out: str | None = None,
    cache_dir: str | None = None,
    log=print,
) -> dict:
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"unknown probe method {m!r}; choose from {', '.join(METHODS)}")
    encoder = load_source(source)
    train = read_images(data, split=train_split, image_size=image_size, cache_dir=cache_dir,
                        log=log)  # fmt: skip
    test_set = read_images(test or data, split=test_split if test is None else train_split,
                           image_size=image_size, cache_dir=cache_dir, log=log)  # fmt: skip
    if (train.labels < 0).any() or (test_set.labels < 0).any():
        raise ConfigError("probing needs labelled images (class folders) for train and test")
    if test is None and train.names == test_set.names:
        raise ConfigError(f"{data} has no separate {test_split!r} split: give --test PATH")
    if train.classes != test_set.classes:
        raise ConfigError(f"train classes {train.classes} differ from test's {test_set.classes}")
    t0 = time.perf_counter()
    f_train = features(encoder, train.images, batch_size)
    f_test = features(encoder, test_set.images, batch_size)
    log(f"features: {tuple(f_train.shape)} train, {tuple(f_test.shape)} test "
        f"({time.perf_counter() - t0:.1f} s)")  # fmt: skip
    y_train, y_test = torch.from_numpy(train.labels), torch.from_numpy(test_set.labels)
    report = {"source": source, "data": str(data), "train_images": len(y_train),
              "test_images": len(y_test), "feature_dim": int(f_train.shape[1])}  # fmt: skip
    for m in methods:
        kw = {"k": knn_k, "temperature": knn_temperature} if m == "knn" else {}
        r = probe(f_train, y_train, f_test, y_test, m, seeds=seeds, **kw)
        report[m] = r
        log(f"{m}: {100 * r['mean']:.2f} +- {100 * r['std']:.2f} % test accuracy "
            f"({len(r['runs'])} run{'s' if len(r['runs']) > 1 else ''})")  # fmt: skip
    if tsne:
        tsne_plot(f_test, y_test, test_set.classes, tsne, title=f"{source}: test features")
        report["tsne"] = str(tsne)
        log(f"t-SNE of the test features: {tsne}")
    if out:
        atomic_write_text(Path(out), json.dumps(report, indent=2))
    return report
