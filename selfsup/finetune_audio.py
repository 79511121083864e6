"""`selfsup finetune --task audio-classify`: a speech encoder fine-tuned end to end to label whole
utterances (spoken words, speakers, a user's own classes), on the one training loop.

    files + labels -> train/dev/test -> features (cached) -> global CMVN -> length-bucketed
    batches of whole clips -> AudioClassification (encoder, mean over frames, linear) -> train
    -> dev accuracy each epoch, the best weights kept -> test accuracy -> the output folder

Data: a folder of .wav/.flac/.ogg files or a CSV/TSV manifest (selfsup.data.audio.list_audio).
Labels come from a manifest's `label_column`, or from the file names through `pattern` (e.g.
"{label}_{speaker}_{index}"); so do speakers (`speaker_column`). The files are cut 80/10/10 into
train/dev/test by `selfsup.eval.superb.split_items` with seed SPLIT_SEED: by speaker when every
file has one (no speaker in two parts), by file otherwise. The cut does not move with --seed, so
runs of several seeds, and `superb --task classify`, score the same test files. With `dev` (a
folder or manifest of its own) those files are dev, and the dev part of the cut trains too.

Init: a speech run (its encoder, feature settings and global CMVN statistics, as pretrained;
spectral or waveform), a HuggingFace wav2vec 2.0 / HuBERT folder (its encoder, reading the
waveform as its preprocessor_config.json says), `random:RUN` / `random:HF_FOLDER` (that
architecture and those features with random weights: what the pretraining adds), or `scratch`
with a preset of selfsup/presets/audio.py MODELS (log-mel features, global CMVN from the
training files). A waveform encoder's conv front end stays frozen (option freeze_frontend), as
wav2vec 2.0 (arXiv:2006.11477) and HuBERT (arXiv:2106.07447) fine-tune.

Clips: whole, up to `max_frames` input frames (default MAX_SECONDS = 10 s of them: 1000 frames
at the 10 ms hop, 160000 samples for a waveform encoder at 16 kHz; and at most what a
Transformer run's max_len holds); a longer clip is read from its start, the same way in
training, evaluation and prediction (as pretraining's held-out clips).

The output folder (the text recipe's layout): config.json ("format": "selfsup-finetuned",
"kind": "audio-classify", the labels, "encoder" (an ENCODERS name) with its config as
"model", "features" and "feature_stats"), model.safetensors with its manifest.json,
results.json (dev, test, history) and metrics.jsonl. A failure or an interrupt leaves no
folder behind.
"""

from __future__ import annotations

import json
import math
import shutil
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch

from selfsup import distributed
from selfsup.data.audio import AudioItem, collate_frames, list_audio
from selfsup.data.features import FeatureConfig, cached_features, cmvn, global_stats
from selfsup.encoders.audio import AudioConfig, build_audio_encoder
from selfsup.encoders.conv_context import ConvContextConfig, build_conv_context
from selfsup.encoders.wav2vec2 import Wav2Vec2Config, build_wav2vec2
from selfsup.errors import ConfigError
from selfsup.finetune_common import (
    BucketedBatches,
    EarlyStop,
    append_eval_row,
    check_loop_settings,
    loop_config,
    save_json,
    set_dropout,
    steps_of,
)
from selfsup.keys import IGNORE, LABELS
from selfsup.models import AUDIO_CLASSIFY, FINETUNE_FORMAT, FINETUNE_VERSION
from selfsup.objectives.supervised_audio import AudioClassification
from selfsup.paths import check_out_file, check_out_folder
from selfsup.seeds import Stream, seed_for

MAX_SECONDS = 10.0  # of input frames per clip by default; a longer clip is read from its start
MAX_FRAMES = 1000  # MAX_SECONDS of spectral frames at a 10 ms hop
SPLIT_SEED = 0  # the train/dev/test cut of --data: the same for every --seed (and for superb)
OPTIONS = {  # cfg.options of this task (the CLI fills them), with their defaults
    "label_column": "label", "speaker_column": "speaker", "pattern": None,
    "max_frames": None,  # None: MAX_SECONDS of the features' frames
    "cache_dir": None,
    "freeze_frontend": True,  # a waveform encoder's conv front end is not trained
}  # fmt: skip
# The encoder kinds of a fine-tuned folder's config.json: its model config and builder.
ENCODERS = {
    "audio": (AudioConfig, build_audio_encoder),  # spectral: Mockingjay, TERA, APC
    "wav2vec2": (Wav2Vec2Config, build_wav2vec2),  # wav2vec 2.0, HuBERT, HF folders
    "conv_context": (ConvContextConfig, build_conv_context),  # CPC, wav2vec, vq-wav2vec
}


def audio_options(options: dict) -> dict:
    """OPTIONS updated with `options`; a ConfigError for one this task does not read."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}: not an option of {AUDIO_CLASSIFY}")
    opts = {**OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    if opts["max_frames"] is not None:
        if isinstance(opts["max_frames"], bool) or not isinstance(opts["max_frames"], int):
            raise ConfigError(f"--max-frames must be an integer, got {opts['max_frames']!r}")
        if opts["max_frames"] < 1:
            raise ConfigError(f"--max-frames must be positive, got {opts['max_frames']}")
    if not isinstance(opts["freeze_frontend"], bool):
        raise ConfigError(f"freeze_frontend must be true or false, got {opts['freeze_frontend']!r}")
    return opts


def clip_limit(max_frames: int | None, features: FeatureConfig, mcfg) -> int:
    """Input frames per clip: `max_frames`, or MAX_SECONDS of the features' frames (1000 at a
    10 ms hop, 160000 samples of a 16 kHz wave), and at most what a Transformer run's
    max_len * stack holds (a waveform encoder has no such limit)."""
    limit = round(MAX_SECONDS * features.frame_rate) if max_frames is None else max_frames
    max_len = getattr(mcfg, "max_len", None)
    if max_len is not None:
        limit = min(limit, max_len * getattr(mcfg, "stack", 1))
    return limit


# --------------------------------------------------------------------------------------------
# Files and labels
# --------------------------------------------------------------------------------------------


def labelled_items(source: str, opts: dict) -> list[AudioItem]:
    """The files of a folder or manifest, every one with a label (else a ConfigError)."""
    items = list_audio(source, opts["label_column"], opts["speaker_column"],
                       pattern=opts["pattern"])  # fmt: skip
    unlabelled = [it.path for it in items if it.label is None]
    if unlabelled:
        how = (f"the pattern {opts['pattern']!r} has no {{{opts['label_column']}}} field"
               if opts["pattern"] else "give --pattern, e.g. '{label}_{speaker}_{index}', "
               "or a manifest with that column")  # fmt: skip
        raise ConfigError(
            f"{len(unlabelled)} of {len(items)} files of {source} have no "
            f"{opts['label_column']!r} label, e.g. {unlabelled[0]} ({how})"
        )
    return items


def split_parts(items: list[AudioItem], split: str) -> list[int]:
    """Indices of `split` (train, dev, test: SPLIT_SEED's cut; all: every file) of `items`."""
    from selfsup.eval.superb import split_items

    if split == "all":
        return list(range(len(items)))
    if split not in ("train", "dev", "test"):
        raise ConfigError(f"--split for {AUDIO_CLASSIFY} is train, dev, test or all, not {split!r}")
    train, dev, test, _ = split_items(items, SPLIT_SEED)
    return {"train": train, "dev": dev, "test": test}[split]


def check_known(items: list[AudioItem], labels: list[str], source: str) -> None:
    known = set(labels)
    new = sorted({it.label for it in items if it.label not in known})
    if new:
        raise ConfigError(f"{source} has labels the model does not know: {', '.join(new[:5])} "
                          f"(it knows {', '.join(labels[:10])})")  # fmt: skip


# --------------------------------------------------------------------------------------------
# Features and batches
# --------------------------------------------------------------------------------------------


def clip_frames(
    frames: list[np.ndarray], features: FeatureConfig, stats, max_frames: int
) -> list[np.ndarray]:
    """(T_i, F) float32 clips from features `frames`: the first `max_frames` frames, with
    global CMVN by `stats` (mean, std) when the features use it."""
    if features.cmvn == "global":
        mean, std = stats
        return [cmvn(f[:max_frames], mean, std) for f in frames]
    return [f[:max_frames] for f in frames]


def clip_batch(frames: list[np.ndarray], idx, labels: list[int] | None = None) -> dict:
    """{"features": (B, T, F), "padding_mask": (B, T)} of clips `idx`, and their `labels`."""
    batch = collate_frames([frames[i] for i in idx])
    if labels is not None:
        batch[LABELS] = torch.tensor([labels[i] for i in idx], dtype=torch.long)  # (B,)
    return batch


class ClipBatches(BucketedBatches):
    """Training batches of whole clips, length-bucketed in a seeded order per epoch: global
    batch k is a pure function of (seed, k), and `shard` cuts it for the ranks under torchrun."""

    def __init__(self, frames: list[np.ndarray], labels: list[int], batch_size: int, seed: int):
        super().__init__(np.array([len(f) for f in frames]), batch_size, seed)
        self.frames, self.labels = frames, labels

    def collate(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        return clip_batch(self.frames, idx, self.labels)

    def shard(self, k: int, rank: int, world_size: int) -> dict[str, torch.Tensor]:
        """Rank `rank`'s clips of global batch k: the batch cut into `world_size` runs as even
        as they go (a last batch of an epoch is smaller), padded to their own longest clip.
        A rank left without a clip gets the batch's first one labelled IGNORE: it adds nothing
        to the loss or to the examples counted, and the rank still runs the step DDP needs."""
        idx = self.indices(k)
        part = np.array_split(idx, world_size)[rank]
        if len(part):
            return self.collate(part)
        batch = self.collate(idx[:1])
        batch[LABELS] = torch.full_like(batch[LABELS], IGNORE)
        return batch


def clip_probabilities(
    model: AudioClassification, frames: list[np.ndarray], batch_size: int = 32, bf16=False
) -> np.ndarray:
    """(N, C) softmax probabilities of the clips, in their order (batches by length; one clip
    at a time for an encoder that normalises over time, e.g. wav2vec 2.0 base's GroupNorm front
    end, whose clips padding would change)."""
    from selfsup.eval.upstream import normalises_over_time
    from selfsup.predict import predict_batches

    if normalises_over_time(model.encoder):
        batch_size = 1
    order = np.argsort([len(f) for f in frames], kind="stable")
    batches = ((order[s : s + batch_size], clip_batch(frames, order[s : s + batch_size]))
               for s in range(0, len(order), batch_size))  # fmt: skip
    probs = np.zeros((len(frames), model.head.proj.out_features), dtype=np.float32)
    for idx, res in predict_batches(model, batches, bf16=bf16):
        probs[idx] = torch.softmax(res["logits"].float(), -1).cpu().numpy()
    return probs


def accuracy(probs: np.ndarray, gold: list[int]) -> dict:
    if not len(gold):
        return {}
    return {"accuracy": float(np.mean(probs.argmax(1) == np.asarray(gold))), "clips": len(gold)}


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def init_audio_encoder(cfg):
    """(encoder, model config, FeatureConfig, global CMVN stats or None) of --init: a speech run
    or random:RUN (the run's features and statistics), an HF wav2vec 2.0 / HuBERT folder or
    random:HF_FOLDER (the waveform as its preprocessor reads it), or scratch with a preset
    (log-mel with global CMVN, whose statistics the recipe computes on the training files:
    None here)."""
    from selfsup.checkpoint import is_run
    from selfsup.eval.upstream import load_hf_encoder, load_upstream
    from selfsup.models import run_config
    from selfsup.presets.audio import MODELS

    if cfg.init == "scratch":
        if cfg.preset not in MODELS:
            raise ConfigError(f"--init scratch needs --preset, one of {', '.join(MODELS)} for "
                              f"{AUDIO_CLASSIFY} (got {cfg.preset!r})")  # fmt: skip
        features = FeatureConfig(cmvn="global")  # the speech presets' features
        mcfg = deepcopy(MODELS[cfg.preset])
        mcfg.feature_dim = features.dim
        mcfg.validate()
        torch.manual_seed(cfg.seed)
        return build_audio_encoder(mcfg), mcfg, features, None
    path = Path(cfg.init.removeprefix("random:"))
    if path.is_dir() and not is_run(path) and (path / "config.json").is_file():
        # a HuggingFace folder: wav2vec2 or hubert, else a one-line error naming its type
        encoder, mcfg, features = load_hf_encoder(path, cfg.init.startswith("random:"), cfg.seed)
        return encoder, mcfg, features, None
    if not (path.is_dir() and is_run(path)):
        raise ConfigError(f"--init {cfg.init}: give a speech run folder, an HF wav2vec2 / hubert "
                          "folder, random:RUN or scratch (with --preset)")  # fmt: skip
    run = run_config(path)
    if not hasattr(run.data, "features") or encoder_kind(run.model) is None:
        raise ConfigError(
            f"--init {cfg.init} is not a speech run (objective {run.objective.name}): "
            f"{AUDIO_CLASSIFY} fine-tunes speech encoders"
        )
    upstream = load_upstream(cfg.init, seed=cfg.seed)  # the weights, or random ones (seeded)
    stats = None if upstream.mean is None else (upstream.mean.numpy(), upstream.std.numpy())
    return upstream.encoder, run.model, run.data.features, stats


def encoder_kind(mcfg) -> str | None:
    """The ENCODERS name of a model config (None: an encoder this recipe cannot rebuild)."""
    return next((name for name, (cls, _) in ENCODERS.items() if type(mcfg) is cls), None)


def load_audio_classifier(path: str | Path) -> tuple[AudioClassification, dict]:
    """(model in eval mode, config dict) of a fine-tuned speech classifier's folder."""
    from selfsup.checkpoint import load_weights
    from selfsup.models import read_finetuned_config

    config = read_finetuned_config(path)
    if config.get("kind") != AUDIO_CLASSIFY:
        raise ConfigError(f"{path} was fine-tuned for {config.get('task')}, not {AUDIO_CLASSIFY}")
    kind = config.get("encoder", "audio")
    if kind not in ENCODERS:
        raise ConfigError(f"{Path(path) / 'config.json'}: unknown encoder {kind!r} (this selfsup "
                          f"reads {', '.join(ENCODERS)})")  # fmt: skip
    model_cls, build = ENCODERS[kind]
    try:  # JSON holds the conv front end's tuples as lists
        mcfg = model_cls(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in config["model"].items()})  # fmt: skip
        mcfg.validate()
        FeatureConfig(**config["features"]).validate()
        n_labels = len(config["labels"])
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{Path(path) / 'config.json'}: bad or missing section ({e})") from None
    model = AudioClassification(build(mcfg), n_labels, 0.0)
    model.load_state_dict(load_weights(Path(path)))  # checks the folder's manifest
    return model.eval(), config


def _folder_frames(config: dict, items: list[AudioItem], cache_dir, log) -> list[np.ndarray]:
    stats = config.get("feature_stats")
    if stats is not None:
        stats = (np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32))
    features = FeatureConfig(**config["features"])
    raw = cached_features(items, features, cache_dir, log)
    return clip_frames(raw, features, stats, config["max_frames"])


# --------------------------------------------------------------------------------------------
# The recipe
# --------------------------------------------------------------------------------------------


def _check_settings(cfg) -> None:
    check_loop_settings(cfg)
    if cfg.class_weights is not None or cfg.article_holdout:
        raise ConfigError(f"--class-weights and --article-holdout do not apply to {AUDIO_CLASSIFY}")


def finetune_audio(cfg, log=print, progress: bool = False) -> dict:
    """Fine-tune a speech encoder on labelled clips (FinetuneConfig `cfg`, its audio options in
    cfg.options: see OPTIONS); returns {"dev": metrics, "test": metrics, "history": ...}.

    Launched by torchrun, a data-parallel run (DDP) equal to one process on the same global
    batches: each process trains on its share of every batch (ClipBatches.shard), evaluates
    dev with the same weights as the others (so all stop together), and rank 0 alone fills the
    feature cache, logs and writes the folder."""
    device = distributed.setup(cfg.device)  # one process: no process group
    try:
        return _finetune_audio(cfg, device, log, progress)
    finally:
        distributed.teardown()


def _finetune_audio(cfg, device: torch.device, log, progress: bool) -> dict:
    from selfsup.checkpoint import save_final
    from selfsup.device import resolve_precision
    from selfsup.eval.superb import split_items
    from selfsup.train import train

    main = distributed.is_main()
    if not main:
        log, progress = distributed.quiet, False
    out = check_out_folder(cfg.out)
    _check_settings(cfg)
    opts = audio_options(cfg.options)
    items = labelled_items(cfg.data, opts)
    labels = sorted({it.label for it in items})
    if len(labels) < 2:
        raise ConfigError(f"{AUDIO_CLASSIFY} needs at least 2 labels; {cfg.data} has "
                          f"{len(labels)} ({labels[0]!r})")  # fmt: skip
    train_ids, dev_ids, test_ids, how = split_items(items, SPLIT_SEED)
    dev_items = [items[i] for i in dev_ids]
    if cfg.dev is not None:  # its own files are dev; the cut's dev part trains
        train_ids, dev_items = sorted(train_ids + dev_ids), labelled_items(cfg.dev, opts)
        check_known(dev_items, labels, cfg.dev)
    if cfg.train_limit:
        rng = np.random.default_rng(seed_for(cfg.seed, Stream.TRAIN_LIMIT))
        train_ids = sorted(rng.permutation(train_ids)[: cfg.train_limit].tolist())
    untrained = sorted(set(labels) - {items[i].label for i in train_ids})
    if untrained:
        log(f"no training file has the label(s) {', '.join(untrained)}")

    encoder, mcfg, features, stats = init_audio_encoder(cfg)
    max_frames = clip_limit(opts["max_frames"], features, mcfg)
    with distributed.main_first():  # rank 0 fills the feature cache, the others read it
        raw = cached_features(items, features, opts["cache_dir"], log)
    if features.cmvn == "global" and stats is None:  # from the training clips, as pretraining
        stats = global_stats([raw[i] for i in train_ids])
        log(f"global CMVN statistics from the {len(train_ids)} training files")
    index = {lab: i for i, lab in enumerate(labels)}
    frames = clip_frames(raw, features, stats, max_frames)
    gold = [index[it.label] for it in items]
    dev_frames = [frames[i] for i in dev_ids]
    if cfg.dev is not None:
        with distributed.main_first():
            raw_dev = cached_features(dev_items, features, opts["cache_dir"], log)
        dev_frames = clip_frames(raw_dev, features, stats, max_frames)
    dev_gold = [index[it.label] for it in dev_items]

    torch.manual_seed(cfg.seed)
    model = AudioClassification(encoder, len(labels), cfg.dropout)
    set_dropout(model.encoder, cfg.dropout)
    frontend = getattr(model.encoder, "frontend", None)
    if features.kind == "wave" and frontend is not None and opts["freeze_frontend"]:
        frontend.requires_grad_(False)  # as wav2vec 2.0 and HuBERT fine-tune
    precision, why = resolve_precision(cfg.precision, device)
    bf16 = precision == "bf16"
    model.to(device)
    batches = ClipBatches([frames[i] for i in train_ids], [gold[i] for i in train_ids],
                          cfg.batch_size, cfg.seed)  # fmt: skip
    steps = max(1, round(cfg.epochs * batches.per_epoch))
    history: list[dict] = []
    kept: dict = {}  # the evaluation whose weights the folder keeps (a CPU copy)
    best = {"value": -math.inf, "index": None, "since": 0}

    def eval_fn(m) -> dict:
        value = accuracy(clip_probabilities(m, dev_frames, bf16=bf16), dev_gold)["accuracy"]
        history.append({"step": len(history), "accuracy": value})
        better = value > best["value"]
        if better:
            best.update(value=value, index=len(history) - 1, since=0)
        else:
            best["since"] += 1
        if cfg.keep == "last" or better:
            snapshot = {k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()}
            kept.update(index=len(history) - 1, weights=snapshot)
        if cfg.patience and best["since"] >= cfg.patience:
            raise EarlyStop({"accuracy": value})
        return {"accuracy": value}

    tcfg = loop_config(cfg, steps, batches.per_epoch, precision)
    log(f"{AUDIO_CLASSIFY}: {len(labels)} labels, {len(train_ids)} train / {len(dev_items)} dev"
        f" / {len(test_ids)} test clips (split by {how}), {steps} steps of {cfg.batch_size}; "
        f"init {cfg.init}; precision {precision}"
        + ("" if why == "as asked" else f" ({why})"))  # fmt: skip
    if distributed.active():
        log(f"distributed: {distributed.world_size()} processes (DDP), each training on its "
            "share of every batch")  # fmt: skip
    if main:
        out.mkdir(parents=True, exist_ok=True)
    try:
        stopped = {}
        try:
            train(model, batches, tcfg, out, eval_fn=eval_fn, log=log, progress=progress)
        except EarlyStop as stop:  # train could not write the stopping evaluation's row
            stopped["stopped_early_at"] = min(steps, len(history) * tcfg.eval_every)
            if main:
                append_eval_row(out / "metrics.jsonl", stopped["stopped_early_at"], stop.metrics)
            log(f"stopped early at step {stopped['stopped_early_at']}: dev accuracy did not "
                f"improve on {best['value']:.4f} for {cfg.patience} evaluations")  # fmt: skip
        steps_of(history, lambda i: min(steps, (i + 1) * tcfg.eval_every))
        model.load_state_dict(kept["weights"])
        # train wrote other (or no) weights
        if main and (stopped or kept["index"] != len(history) - 1):
            save_final(out, kept["weights"])
        dev = {**history[kept["index"]], "clips": len(dev_gold)}
        test = accuracy(clip_probabilities(model, [frames[i] for i in test_ids], bf16=bf16),
                        [gold[i] for i in test_ids])  # fmt: skip
        mean, std = stats if stats is not None else (None, None)
        result = {"task": AUDIO_CLASSIFY, "init": cfg.init, "seed": cfg.seed, "dev": dev,
                  "test": test, "main_metric": "accuracy", "kept": cfg.keep,
                  "kept_step": dev["step"], "split": how, "n_train": len(train_ids),
                  **stopped, "history": history}  # fmt: skip
        if main:  # every rank computed the same result; rank 0 writes it
            save_json(out / "config.json", {
                "format": FINETUNE_FORMAT, "version": FINETUNE_VERSION, "task": AUDIO_CLASSIFY,
                "kind": AUDIO_CLASSIFY, "labels": labels,
                "encoder": encoder_kind(mcfg), "model": mcfg.__dict__,
                "features": features.__dict__,
                "feature_stats": None if mean is None else {"mean": np.asarray(mean).tolist(),
                                                             "std": np.asarray(std).tolist()},
                "max_frames": max_frames, "init": cfg.init, "split": how, "split_seed": SPLIT_SEED,
                "finetune": dict(cfg.__dict__),
            })  # fmt: skip
            save_json(out / "results.json", result)
    except BaseException:  # an error or an interrupt: no half-written folder
        if main:
            shutil.rmtree(out, ignore_errors=True)
        raise
    log(f"dev accuracy {dev['accuracy']:.4f} (step {dev['step']}), test accuracy "
        f"{test.get('accuracy', math.nan):.4f} -> {out}")  # fmt: skip
    return result


# --------------------------------------------------------------------------------------------
# Evaluation and prediction with a fine-tuned folder
# --------------------------------------------------------------------------------------------


def evaluate_audio(
    path: str,
    data: str,
    split: str = "test",
    options: dict | None = None,
    log=print,
    device: str = "auto",
    precision: str = "fp32",
) -> dict:
    """Accuracy of a fine-tuned speech classifier on `split` of `data` (train, dev, test: the
    fine-tuning's cut, the same files when `data` is its --data, though with a separate --dev
    the cut's dev part was trained on; all: every file); writes
    predictions-audio-classify-SPLIT.jsonl into the folder. Options default to the
    fine-tuning's (its pattern and columns)."""
    from selfsup.checkpoint import atomic_write_text
    from selfsup.device import inference_bf16, resolve_device

    model, config = load_audio_classifier(path)
    opts = audio_options({**config["finetune"].get("options", {}), **(options or {})})
    items = labelled_items(data, opts)
    part = split_parts(items, split)
    chosen = [items[i] for i in part]
    labels = config["labels"]
    check_known(chosen, labels, data)
    torch_device = resolve_device(device)
    model.to(torch_device)
    frames = _folder_frames(config, items, opts["cache_dir"], log)
    frames = [frames[i] for i in part]
    probs = clip_probabilities(model, frames, bf16=inference_bf16(precision, torch_device))
    index = {lab: i for i, lab in enumerate(labels)}
    metrics = accuracy(probs, [index[it.label] for it in chosen])
    rows = [{"path": it.path, "label": it.label, "prediction": labels[int(p.argmax())],
             "score": float(p.max())} for it, p in zip(chosen, probs, strict=True)]  # fmt: skip
    out = Path(path) / f"predictions-{AUDIO_CLASSIFY}-{split}.jsonl"
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    log(f"wrote {len(rows)} predictions to {out}")
    return metrics


def predict_audio_file(
    path: str,
    source: str,
    out_path: str,
    batch_size: int = 32,
    top_k: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    cache_dir: str | None = None,
    log=print,
) -> dict:
    """Label every file of a folder or manifest with a fine-tuned speech classifier: one JSON
    line per file, in list_audio's order, {"path", "label", "score", "top": [{"label",
    "score"}, ...]} (the text classifiers' rows, with the path for the line): softmax
    probabilities of the `top_k` most probable labels (default all, summing to 1), most
    probable first. The file is written once every clip is labelled."""
    from selfsup.checkpoint import atomic_write_text
    from selfsup.device import inference_bf16, resolve_device

    if batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if top_k is not None and top_k < 1:
        raise ConfigError("--top-k must be >= 1")
    out = check_out_file(out_path, "pred.jsonl")
    model, config = load_audio_classifier(path)
    items = list_audio(source)
    torch_device = resolve_device(device)
    model.to(torch_device)
    frames = _folder_frames(config, items, cache_dir, log)
    probs = clip_probabilities(model, frames, batch_size, inference_bf16(precision, torch_device))
    labels = config["labels"]
    rows = []
    for it, p in zip(items, probs, strict=True):
        top = [{"label": labels[j], "score": float(p[j])} for j in np.argsort(-p, kind="stable")]
        top = top[:top_k] if top_k else top
        rows.append({"path": it.path, "label": top[0]["label"], "score": top[0]["score"],
                     "top": top})  # fmt: skip
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot write {out_path}: {e.strerror}") from None
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    log(f"predict: {len(rows)} files of {source} -> {out}")
    return {"rows": len(rows), "kind": AUDIO_CLASSIFY}
