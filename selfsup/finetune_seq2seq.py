"""Seq2seq fine-tuning (`selfsup finetune --task seq2seq`): source text -> target text with an
encoder-decoder (a BART, MASS or T5 run, a transformers BART folder, or `scratch`), through the
same loop as everything else; dev is decoded (greedy, or `--beams`) after each epoch and
scored with ROUGE-1/2/L, BLEU and exact match (selfsup.eval.generation), the weights of the
best ROUGE-L kept.

Features: the source as `[CLS] source [SEP]` (cut to --max-len), the target as its tokens
then `[SEP]` (cut to --max-target-len), the decoder fed `[CLS]` + the target shifted right.
Cut sources and targets are counted in the log.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import torch

from selfsup.errors import ConfigError
from selfsup.finetune_common import BucketedBatches
from selfsup.objectives.seq2seq import Seq2SeqExample, Seq2SeqTask, collate_seq2seq

MAIN_METRIC = "rougeL"


def encode_pairs(tok, examples, max_len: int, max_target_len: int, log=print,
                 counts: dict | None = None) -> list:  # fmt: skip
    """Seq2SeqExample per example (targets None for unlabelled rows: an empty list); how many
    sources and targets were cut goes to `log` and, when given, into `counts`."""
    sources = tok.encode_plain([e.text for e in examples])
    targets = tok.encode_plain([e.label or "" for e in examples])
    out, cut_src, cut_tgt = [], 0, 0
    for src, tgt in zip(sources, targets, strict=True):
        if len(src) > max_len - 2:
            src, cut_src = src[: max_len - 2], cut_src + 1
        if len(tgt) > max_target_len - 1:
            tgt, cut_tgt = tgt[: max_target_len - 1], cut_tgt + 1
        target = [*tgt, tok.sep_id]
        out.append(Seq2SeqExample([tok.cls_id, *src, tok.sep_id], [tok.cls_id, *tgt], target))
    if counts is not None:
        counts.update(cut_sources=cut_src, cut_targets=cut_tgt)
    if cut_src or cut_tgt:
        log(f"cut {cut_src} sources to {max_len} tokens and {cut_tgt} targets to "
            f"{max_target_len} (of {len(examples)} examples)")  # fmt: skip
    return out


class PairBatches(BucketedBatches):
    """Padded source/target batches, bucketed by source + target length."""

    def __init__(self, examples: list[Seq2SeqExample], batch_size: int, pad_id: int, seed: int):
        lengths = np.array([len(e.source) + len(e.target) for e in examples])
        super().__init__(lengths, batch_size, seed)
        self.examples, self.pad_id = examples, pad_id

    def collate(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        return collate_seq2seq([self.examples[i] for i in idx], self.pad_id)


@torch.no_grad()
def decode_all(task: Seq2SeqTask, tok, examples: list[Seq2SeqExample], beams: int,
               max_new: int, batch_size: int = 32, bf16: bool = False) -> list[str]:  # fmt: skip
    """The decoded text of every example's source, in order (batches sorted by length)."""
    from selfsup.data.padding import pad_sequences
    from selfsup.generate import GenerateConfig, generate

    was = task.training
    task.eval()
    device = next(task.parameters()).device
    cfg = GenerateConfig(max_new_tokens=max_new, beams=beams)
    order = np.argsort([len(e.source) for e in examples], kind="stable")
    out: list[str] = [""] * len(examples)
    try:
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            src, mask = pad_sequences([examples[i].source for i in idx], tok.pad_id)
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                rows = generate(task.model, src.to(device), mask.long().to(device), tok.cls_id,
                                tok.sep_id, cfg)  # fmt: skip
            for i, row in zip(idx, rows, strict=True):
                out[i] = tok.decode(row)
    finally:
        task.train(was)
    return out


def init_seq2seq(cfg, log=print):
    """(Seq2SeqModel, tokenizer, Seq2SeqConfig) from an encoder-decoder run or BART folder, or
    fresh for `scratch` (--preset's shape with as many decoder layers, and --tokenizer)."""
    from dataclasses import asdict

    from selfsup.data.tokenizer import load_tokenizer
    from selfsup.encoders.seq2seq import Seq2SeqConfig, build_seq2seq
    from selfsup.models import load_model
    from selfsup.objectives.seq2seq import Seq2SeqObjective
    from selfsup.presets import preset

    if cfg.init != "scratch":
        loaded = load_model(cfg.init)
        if not isinstance(loaded.model, Seq2SeqObjective):
            raise ConfigError(
                f"{cfg.init} is an encoder-only model: seq2seq fine-tuning needs an "
                "encoder-decoder (a pretrain --objective bart|mass|t5 run or a BART folder)"
            )
        return loaded.model.model, loaded.tokenizer, loaded.config
    if cfg.tokenizer is None or cfg.preset is None:
        raise ConfigError("--init scratch needs --preset and --tokenizer")
    tok = load_tokenizer(cfg.tokenizer)
    shape = asdict(preset(cfg.preset).model)
    own = set(Seq2SeqConfig.__dataclass_fields__) - {"norm_eps"}  # BART's eps, not BERT's
    mcfg = Seq2SeqConfig(**{k: v for k, v in shape.items() if k in own})
    mcfg.vocab_size, mcfg.pad_id = tok.vocab_size, tok.pad_id
    torch.manual_seed(cfg.seed)
    return build_seq2seq(mcfg), tok, mcfg


def finetune_seq2seq(cfg, log=print, progress: bool = False) -> dict:
    """`finetune` for a seq2seq task (FinetuneConfig `cfg`); returns results.json's dict."""
    from selfsup.device import resolve_device, resolve_precision
    from selfsup.eval.generation import generation_metrics
    from selfsup.finetune_common import loop_config, save_json, set_dropout, training_splits
    from selfsup.models import FINETUNE_FORMAT, FINETUNE_VERSION
    from selfsup.paths import check_out_folder
    from selfsup.train import train

    out = check_out_folder(cfg.out)
    for name in ("epochs", "lr", "batch_size", "max_len", "max_target_len", "beams"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ConfigError(f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")
    if cfg.class_weights is not None:
        raise ConfigError("--class-weights is for classification tasks, not seq2seq")
    train_ex, dev_ex = training_splits(cfg, log)
    net, tok, mcfg = init_seq2seq(cfg, log)
    max_len = min(cfg.max_len, mcfg.max_len)
    max_target = min(cfg.max_target_len, mcfg.max_len)
    torch.manual_seed(cfg.seed)
    model = Seq2SeqTask(net, cfg.label_smoothing)
    set_dropout(model, cfg.dropout)
    device = resolve_device(cfg.device)
    precision, why = resolve_precision(cfg.precision, device)
    bf16 = precision == "bf16"
    model.to(device)
    train_feats = encode_pairs(tok, train_ex, max_len, max_target, log)
    dev_feats = encode_pairs(tok, dev_ex, max_len, max_target, log)
    references = [e.label for e in dev_ex]
    batches = PairBatches(train_feats, cfg.batch_size, tok.pad_id, cfg.seed)
    steps = max(1, round(cfg.epochs * batches.per_epoch))
    history: list[dict] = []
    kept: dict = {}
    best = {"value": -math.inf, "index": None}
    predictions: dict = {}

    def eval_fn(m) -> dict:
        preds = decode_all(m, tok, dev_feats, cfg.beams, max_target, bf16=bf16)
        res = generation_metrics(preds, references)
        history.append({"step": len(history), **res})
        value = res.get(MAIN_METRIC, math.nan)
        better = math.isfinite(value) and value > best["value"]
        if better:
            best.update(value=value, index=len(history) - 1)
        # kept: the best so far (the last one until any is finite), every one with keep=last
        if better or best["index"] is None or cfg.keep == "last":
            snapshot = {k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()}
            kept.update(index=len(history) - 1, weights=snapshot)
            predictions["dev"] = preds
        return {MAIN_METRIC: value}

    tcfg = loop_config(cfg, steps, batches.per_epoch, precision)
    out.mkdir(parents=True, exist_ok=True)
    log(f"{cfg.task}: {len(train_ex)} train / {len(dev_ex)} dev pairs, {steps} steps of "
        f"{cfg.batch_size}; init {cfg.init}; precision {precision}"
        + ("" if why == "as asked" else f" ({why})"))  # fmt: skip
    try:
        tok.save(out / "tokenizer", mcfg.max_len)
        train(model, batches, tcfg, out, eval_fn=eval_fn, log=log, progress=progress)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    from selfsup.checkpoint import atomic_write_text, save_final

    last = len(history) - 1
    if kept and kept["index"] != last:
        save_final(out, kept["weights"])
    dev = history[kept["index"]] if kept else {}
    config = {
        "format": FINETUNE_FORMAT, "version": FINETUNE_VERSION, "task": cfg.task,
        "kind": "seq2seq", "labels": None, "model": mcfg.__dict__, "encoder": "seq2seq",
        "max_len": max_len, "max_target_len": max_target, "init": cfg.init,
        "finetune": dict(cfg.__dict__),
    }  # fmt: skip
    save_json(out / "config.json", config)
    rows = [{"source": e.text, "target": e.label, "prediction": p}
            for e, p in zip(dev_ex, predictions.get("dev", []), strict=False)]  # fmt: skip
    import json

    atomic_write_text(out / "predictions-dev.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))  # fmt: skip
    for i, h in enumerate(history):
        h["step"] = min(steps, (i + 1) * tcfg.eval_every)
    result = {
        "task": cfg.task, "init": cfg.init, "seed": cfg.seed, "dev": dev,
        "main_metric": MAIN_METRIC, "kept_step": dev.get("step"), "history": history,
    }  # fmt: skip
    save_json(out / "results.json", result)
    return result


def evaluate_seq2seq(path, model, tok, config, examples, beams: int | None, bf16: bool,
                     log=print) -> dict:  # fmt: skip
    """Decode `examples` with a fine-tuned seq2seq folder, score them, write predictions."""
    import json

    from selfsup.checkpoint import atomic_write_text
    from selfsup.eval.generation import generation_metrics

    beams = beams or config["finetune"].get("beams", 1)
    max_target = config.get("max_target_len", 64)
    feats = encode_pairs(tok, examples, config["max_len"], max_target, log)
    preds = decode_all(model, tok, feats, beams, max_target, bf16=bf16)
    labelled = [(p, e.label) for p, e in zip(preds, examples, strict=True) if e.label]
    metrics = generation_metrics([p for p, _ in labelled], [r for _, r in labelled]) \
        if labelled else {}  # fmt: skip
    rows = [{"source": e.text, "target": e.label, "prediction": p}
            for e, p in zip(examples, preds, strict=True)]  # fmt: skip
    out = Path(path) / "predictions-seq2seq.jsonl"
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    log(f"wrote {len(rows)} predictions to {out}")
    return metrics
