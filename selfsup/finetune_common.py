"""What the fine-tuning recipes share (finetuning.py for the encoder tasks,
finetune_seq2seq.py for text -> text): reading the splits, batch order, JSON output,
dropout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from selfsup.errors import ConfigError
from selfsup.seeds import Stream, seed_for


def bucketed_order(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, bucket: int = 50
) -> list[np.ndarray]:
    """Shuffle, sort by length inside groups of `bucket` batches, cut into batches, shuffle the
    batches: little padding, still random."""
    perm = rng.permutation(len(lengths))
    batches = []
    group = batch_size * bucket
    for g in range(0, len(perm), group):
        part = perm[g : g + group]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[s : s + batch_size] for s in range(0, len(part), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def json_safe(obj):
    """`obj` with NaN/inf floats as None: a metric can be undefined (Pearson's r of constant
    predictions) and NaN is not JSON (strict readers refuse it)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def save_json(path: Path, obj) -> None:
    from selfsup.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, ensure_ascii=False))


def set_dropout(module: torch.nn.Module, p: float) -> None:
    """Set every dropout in the encoder (pretraining presets run without)."""
    from selfsup.layers.attention import CrossAttention, SelfAttention

    for m in module.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
        elif isinstance(m, SelfAttention | CrossAttention):
            m.attn_dropout = p


def training_splits(cfg, log=print):
    """load_splits, with at most --train-limit training examples (a seeded choice), and a
    one-line error when none are left."""
    train_ex, dev_ex = load_splits(cfg, log)
    if cfg.train_limit:
        rng = np.random.default_rng(seed_for(cfg.seed, Stream.TRAIN_LIMIT))
        keep = sorted(rng.permutation(len(train_ex))[: cfg.train_limit].tolist())
        train_ex = [train_ex[i] for i in keep]
    if not len(train_ex):
        raise ConfigError(f"no training examples for task {cfg.task} in {cfg.data}")
    return train_ex, dev_ex


def load_splits(cfg, log=print):
    """(train, dev) examples for a FinetuneConfig `cfg` (finetuning.py)."""
    from selfsup.data.tasks import get_task, load_task

    spec = get_task(cfg.task)
    if cfg.article_holdout:
        if spec.kind != "qa":
            raise ConfigError("--article-holdout is for QA tasks")
        split = "train" if "train" in spec.files else next(iter(spec.files))
        examples = load_task(cfg.task, cfg.data, split, **cfg.options)
        return split_by_article(examples, cfg.article_holdout, cfg.seed)
    options = dict(cfg.options)
    if cfg.dev is not None:
        dev_ex = load_task(cfg.task, cfg.dev, "dev" if Path(cfg.dev).is_dir() else "train",
                           **options)  # fmt: skip
        log(f"dev: {len(dev_ex)} rows of {cfg.dev}")
    elif _one_table_file(spec, cfg.data, options):
        # Both splits would read the same rows: score on a seeded share the model never sees.
        if not 0.0 < cfg.dev_fraction < 1.0:
            raise ConfigError(f"--dev-fraction must be in (0, 1), got {cfg.dev_fraction}")
        options |= {"holdout": cfg.dev_fraction, "seed": cfg.seed}
        dev_ex = load_task(cfg.task, cfg.data, "dev", **options)
        log(f"dev: a seeded {cfg.dev_fraction:.0%} of the rows of {cfg.data} ({len(dev_ex)} rows,"
            f" seed {cfg.seed}), held out of training (--dev FILE to score elsewhere)")  # fmt: skip
    else:
        dev_ex = load_task(cfg.task, cfg.data, "dev", **options)
    train_ex = load_task(cfg.task, cfg.data, "train", **options)
    what = "questions whose answer is not in the context"  # the QA readers' only skip
    if getattr(train_ex, "skipped", 0):
        log(f"skipped {train_ex.skipped} training {getattr(train_ex, 'skipped_what', '') or what}")
    if getattr(dev_ex, "skipped", 0) and getattr(dev_ex, "skipped_what", ""):
        log(f"skipped {dev_ex.skipped} dev {dev_ex.skipped_what}: {len(dev_ex)} scored")
    return train_ex, dev_ex


def _one_table_file(spec, data: str, options: dict) -> bool:
    """Whether train and dev would both be all rows of one file: a CSV/TSV/JSONL task given a
    single file, without a split column or holdout of its own."""
    table = spec.kind in ("classify", "pair-classify", "regress", "seq2seq")
    own = options.get("split_column") is not None or spec.options.get("holdout") is not None
    return table and Path(data).is_file() and not own and "holdout" not in options


def split_by_article(examples, holdout: float, seed: int):
    """Split QA examples by article title: no article is in both parts."""
    if not 0.0 < holdout < 1.0:
        raise ConfigError("--article-holdout must be in (0, 1)")
    titles = sorted({e.title for e in examples})
    if len(titles) < 2:
        raise ConfigError("the QA file has fewer than 2 articles; cannot split by article")
    rng = np.random.default_rng(seed_for(seed, Stream.ARTICLE_SPLIT))
    n_dev = max(1, round(holdout * len(titles)))
    dev_titles = set(rng.permutation(titles)[:n_dev].tolist())
    return [e for e in examples if e.title not in dev_titles], [
        e for e in examples if e.title in dev_titles
    ]


class BucketedBatches(torch.utils.data.Dataset):
    """Fine-tuning batches: micro-batch k is a pure function of (seed, k) (the contract of the
    pretraining batches), each epoch a fresh `bucketed_order` of the examples by `lengths`.
    Subclasses say how a batch of example indices is collated (`collate`)."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.per_epoch = math.ceil(len(lengths) / batch_size)
        self._epoch: tuple[int, list] | None = None

    def __len__(self) -> int:
        return self.per_epoch

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        return self.collate(self.indices(k))

    def indices(self, k: int) -> np.ndarray:
        """The examples of micro-batch k."""
        epoch, j = divmod(k, self.per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            rng = np.random.default_rng(seed_for(self.seed, Stream.FINETUNE_ORDER, epoch))
            self._epoch = (epoch, bucketed_order(self.lengths, self.batch_size, rng))
        return self._epoch[1][j]

    def collate(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def check_loop_settings(cfg, positive: tuple[str, ...] = ("epochs", "lr", "batch_size")) -> None:
    """The training flags every fine-tuning recipe with dev evaluations reads: `positive` ones
    above 0, --train-limit, --eval-every and --patience at least 0, --keep best or last."""
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    for name in ("train_limit", "eval_every", "patience"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0")
    if cfg.keep not in ("best", "last"):
        raise ConfigError(f"--keep must be best or last, got {cfg.keep!r}")


def loop_config(cfg, steps: int, per_epoch: int, precision: str):
    """The TrainConfig of a fine-tuning run (FinetuneConfig `cfg`): AdamW (0.9, 0.999, 1e-8),
    linear warm-up over warmup_ratio of the steps then linear decay, clipping at 1.0, no
    checkpoints, dev evaluation every --eval-every steps (default once per epoch)."""
    from selfsup.config import TrainConfig

    return TrainConfig(
        steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
        betas=(0.9, 0.999), eps=1e-8, warmup_steps=round(cfg.warmup_ratio * steps),
        schedule="linear", clip_norm=1.0, seed=cfg.seed, save_every=0,
        eval_every=cfg.eval_every or per_epoch, log_every=max(1, min(50, steps // 20)),
        precision=precision,
    )  # fmt: skip


class EarlyStop(Exception):
    """Raised by the evaluation that used up --patience: it ends `train` early (the loop has
    no other way out), and the recipe writes what `train` would have."""

    def __init__(self, metrics: dict):
        super().__init__("early stop")
        self.metrics = metrics


def steps_of(history: list[dict], step_of) -> None:
    """Number each dev evaluation of `history` by the step it ran at (step_of(i))."""
    for i, h in enumerate(history):
        h["step"] = step_of(i)


def append_eval_row(path: Path, step: int, metrics: dict) -> None:
    """The eval row of metrics.jsonl the loop writes after each evaluation (the stopping
    evaluation raised before it could)."""
    row = {"step": step, **{f"eval_{k}": round(v, 5) for k, v in metrics.items()}}
    with open(path, "a") as f:
        f.write(json.dumps(json_safe(row)) + "\n")
