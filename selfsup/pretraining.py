"""The pretraining recipe: config -> tokenizer -> cached corpus -> batches -> objective -> loop.

Everything that can fail on bad input (paths, corpus, settings) is checked before the run folder
is created, so a failed start never leaves a half-written run behind.

Under torchrun every rank runs this recipe; rank 0 alone trains the tokenizer and fills the data
cache (the others wait, then read them) and writes the run folder.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from selfsup import distributed
from selfsup.checkpoint import (
    RUN_FORMAT,
    atomic_write_text,
    is_run,
    latest_checkpoint,
)
from selfsup.config import RunConfig, modality_of
from selfsup.data import multilingual
from selfsup.data.text import (
    PairBuilder,
    PretrainBatches,
    SegmentBuilder,
    TextNeeds,
    chunk_sentences,
    make_chunks,
    make_token_chunks,
    split_chunks,
    token_chunk_sentences,
    unigram_baseline,
    unit_lines,
)
from selfsup.data.text_source import text_source
from selfsup.data.tokenizer import UNITS, Tokenizer, load_tokenizer, unit_tokenizer
from selfsup.device import resolve_precision
from selfsup.errors import ConfigError
from selfsup.models import run_config
from selfsup.objectives import build_objective, get_objective
from selfsup.paths import check_out_folder
from selfsup.prepared import Prepared
from selfsup.pretraining_audio import prepare_audio
from selfsup.pretraining_dna import prepare_dna
from selfsup.pretraining_image import prepare_image
from selfsup.seeds import HELDOUT_OFFSET
from selfsup.train import evaluate, lr_factor, train

# The settings a resumed run may change: none changes what its checkpoint holds. train.steps
# stretches (or shortens) the schedule; the others say where, how fast and how often it saves
# and evaluates. Any other change is refused: the checkpoint was trained under the saved values.
RESUMABLE = (
    "train.steps", "train.fsdp", "train.device", "train.threads", "train.compile",
    "train.save_every", "train.save_schedule", "train.eval_every", "data.num_workers",
)  # fmt: skip


@dataclass
class PretrainData:
    tokenizer: Tokenizer
    batches: PretrainBatches
    eval_batches: list[dict]
    baseline_acc: float  # most-frequent-token accuracy on the held-out masked targets
    stats: dict


def tokenizer_for(cfg: RunConfig, encoding: str, log=print) -> Tokenizer:
    """The given tokenizer, or one trained on the corpus (cached by corpus + settings), with the
    special tokens the objective adds (T5's sentinels; a run's own tokenizer has them)."""
    extra = get_objective(cfg.objective.name).extra_tokens(cfg.objective)
    return _base_tokenizer(cfg, encoding, log).with_specials(extra)


def _base_tokenizer(cfg: RunConfig, encoding: str, log) -> Tokenizer:
    if cfg.data.tokenizer == UNITS:  # discrete units: the vocabulary of the unit files
        tok = unit_tokenizer(unit_lines(cfg.data.paths, encoding), cfg.model.vocab_size)
        log(f"tokenizer: {tok.vocab_size} unit tokens (specials included), one per unit")
        return tok
    if cfg.data.tokenizer:
        return load_tokenizer(cfg.data.tokenizer)
    return text_source(cfg.data.paths).cached_tokenizer(cfg.data, cfg.model.vocab_size, encoding,
                                                        log)  # fmt: skip


def tokenizer_from_files(
    paths: list[str],
    out: str | os.PathLike,
    vocab_size: int = 8192,
    lowercase: bool = True,
    text_field: str = "text",
    encoding: str = "utf-8",
    lang_alpha: float = multilingual.DEFAULT_ALPHA,
) -> Tokenizer:
    """Train a WordPiece tokenizer on text files (any the pretraining data reads) and save it
    into the new folder `out` (`selfsup tokenizer`); LANG=PATH files train the multilingual one
    (data/multilingual.py), each language weighted by `lang_alpha`."""
    folder = check_out_folder(out)
    if vocab_size < 16:
        raise ConfigError(f"vocab size {vocab_size} is too small")
    tok = text_source(paths).train_tokenizer(vocab_size, lowercase, text_field, encoding,
                                             lang_alpha)  # fmt: skip
    tok.save(folder)
    return tok


def prepare_data(
    cfg: RunConfig,
    encoding: str = "utf-8",
    log=print,
    tok: Tokenizer | None = None,
    needs: TextNeeds | None = None,
) -> PretrainData:
    """The run's batches, held-out batches and baseline, as the objective's `needs` say (by
    default: what the objective of `cfg` asks of the data, with the run's tokenizer)."""
    tok = tok or tokenizer_for(cfg, encoding, log)
    if needs is None:
        model_cfg = replace(cfg.model, vocab_size=tok.vocab_size, pad_id=tok.pad_id)
        needs = build_objective(cfg.objective, model_cfg).text_needs(tok, cfg.data.max_len)
    if needs.examples is not None and needs.pack is None and cfg.data.pack:
        raise ConfigError(f"--pack is not supported by objective {cfg.objective.name} yet")
    source = text_source(cfg.data.paths)  # plain files, or LANG=PATH files
    corpus = source.corpus(tok, cfg.data, encoding, log)
    if needs.cut_sentences:
        chunks = make_token_chunks(corpus, needs.segment_len or cfg.data.max_len - 3)
    else:
        chunks = make_chunks(corpus, cfg.data.max_len, needs.segment_len)
    train_ids, held_ids = split_chunks(len(chunks), cfg.data.heldout_every, cfg.data.heldout_max)
    if len(train_ids) < 2:
        raise ConfigError("the corpus is too small: it makes fewer than 2 training sequences")
    if needs.examples is not None:
        sentences = token_chunk_sentences if needs.cut_sentences else chunk_sentences
        builder = SegmentBuilder(corpus, chunks, tok, cfg.data.max_len, needs.examples,
                                 needs.collate, needs.pack, sentences)  # fmt: skip
    else:
        builder = PairBuilder(corpus, chunks, tok, cfg.data.max_len, needs.pair_task)
    corrupt = needs.corrupt
    seed = cfg.train.seed
    batches, source_stats = source.batches(builder, corrupt, chunks, train_ids,
                                           cfg.train.batch_size, seed, cfg.data, log)  # fmt: skip
    eval_batches, baseline = [], float("nan")
    if len(held_ids):
        # Each held-out chunk exactly once (a batch index past the end would wrap around).
        parts = [held_ids[s : s + 64] for s in range(0, len(held_ids), 64)]
        held_seed = seed + HELDOUT_OFFSET
        eval_batches = [
            PretrainBatches(builder, corrupt, ids, len(ids), held_seed, shuffle=False)[k]
            for k, ids in enumerate(parts)
        ]
        counts = unigram_baseline(corpus, train_ids, chunks, tok.vocab_size, tok.special_ids,
                                  needs.cut_sentences)  # fmt: skip
        top = int(np.argmax(counts))
        targets = torch.cat([b["labels"][b["labels"] >= 0] for b in eval_batches])
        baseline = float((targets == top).float().mean()) if len(targets) else float("nan")
    stats = {
        "documents": len(corpus.doc_sents) - 1,
        "sentences": len(corpus.sent_offsets) - 1,
        "tokens": corpus.n_tokens,
        "train_sequences": int(len(train_ids)),
        "heldout_sequences": int(len(held_ids)),
        "vocab_size": tok.vocab_size,
        **source_stats,
    }
    return PretrainData(tok, batches, eval_batches, baseline, stats)


def saved_config(out: Path) -> RunConfig:
    """The config a run folder was trained with (to resume it)."""
    if not is_run(out):
        raise ConfigError(f"cannot resume: {out} is not a selfsup run folder")
    return run_config(out)


def resume_changes(saved: RunConfig, wanted: RunConfig) -> dict[str, tuple]:
    """{"section.key": (saved, wanted)} for each setting `wanted` changes; a ConfigError naming
    them when any is outside RESUMABLE."""
    a, b = _flat(saved.to_dict()), _flat(wanted.to_dict())
    changed = {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}
    refused = [f"{k} ({old!r} -> {new!r})" for k, (old, new) in changed.items()
               if k not in RESUMABLE]  # fmt: skip
    if refused:
        raise ConfigError(
            f"a resumed run keeps the settings it was trained with; cannot change "
            f"{', '.join(refused)} (a resume may change only {', '.join(RESUMABLE)}; "
            "start a new run for the others)"
        )
    return changed


def _flat(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flat(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return flat


def pretrain(
    cfg: RunConfig | None,
    out: Path,
    resume: bool = False,
    encoding: str = "utf-8",
    progress: bool = True,
    log=print,
) -> dict:
    """Pretrain per `cfg` into the run folder `out`.

    With `resume`, training continues from the run's latest checkpoint, with any number of
    processes, under its saved config: `cfg` is None (the saved config as it is) or the saved
    config with changes to RESUMABLE settings only (others are a ConfigError naming them). The
    changes are recorded in the run's config.json; a changed train.steps recomputes the schedule
    for the new length, so the run is no longer bitwise equal to an uninterrupted one.

    Launched by torchrun, this process joins the process group first (and leaves it at the end).
    """
    changed: dict[str, tuple] = {}
    if resume:
        saved = saved_config(out)
        changed = resume_changes(saved, cfg) if cfg is not None else {}
        cfg = cfg if cfg is not None else saved
    device = distributed.setup(cfg.train.device)  # one process: no process group
    try:
        return _pretrain(cfg, out, resume, encoding, progress, log, changed, device)
    finally:
        distributed.teardown()


def _prepare_text(cfg: RunConfig, out: Path, resume: bool, encoding: str, log) -> Prepared:
    """Text: the tokenizer (the run's own when resuming), the model sized to it, the corpus."""
    tokenizer_setting = cfg.data.tokenizer
    if resume and cfg.data.tokenizer in (None, "", UNITS):
        cfg.data.tokenizer = str(out / "tokenizer")  # the run's own, even if the cache is gone
    with distributed.main_first():  # no two ranks train the tokenizer or write the cache
        tok = tokenizer_for(cfg, encoding, log)
    cfg.model.vocab_size = tok.vocab_size
    cfg.model.pad_id = tok.pad_id
    record = {"format": RUN_FORMAT, **cfg.to_dict()}  # the run's config.json
    record["data"]["tokenizer"] = tokenizer_setting
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
    model = build_objective(cfg.objective, cfg.model)
    with distributed.main_first():
        data = prepare_data(cfg, encoding, log, tok, model.text_needs(tok, cfg.data.max_len))

    def save(folder: Path) -> None:
        if not resume:
            data.tokenizer.save(folder / "tokenizer")

    def summarise(final: dict, minutes: float, folder: Path) -> dict:
        b = data.baseline_acc
        summary = {
            "steps": cfg.train.steps,
            "minutes": round(minutes, 2),
            "heldout_mlm_acc": final.get("eval_mlm_acc"),
            "heldout_mlm_loss": final.get("eval_mlm_loss"),
            "unigram_baseline_acc": round(b, 5) if math.isfinite(b) else None,  # NaN: no JSON
            **{k: v for k, v in final.items() if k.startswith("eval_") and "mlm" not in k},
            **data.stats,
        }
        if final.get("eval_mlm_acc") is not None:
            acc, loss = final["eval_mlm_acc"], final["eval_mlm_loss"]
            log(
                f"held-out MLM accuracy {acc:.4f} (loss {loss:.3f}) "
                f"vs unigram baseline {b:.4f}; {minutes:.1f} min; run in {folder}"
            )
        return summary

    s = data.stats
    log(
        f"data: {s['documents']} documents, {s['tokens']:,} tokens, {s['train_sequences']:,} "
        f"training / {s['heldout_sequences']:,} held-out sequences of up to {cfg.data.max_len}"
    )
    return Prepared(model, data.batches, data.eval_batches, s, record, save, summarise)


def _pretrain(cfg, out, resume, encoding, progress, log, changed, device) -> dict:
    main = distributed.is_main()
    if not main:
        log, progress = distributed.quiet, False
    if not resume:
        check_out_folder(out, " (use --resume or another --out)")
    cfg.validate()
    _check_run_settings(cfg)
    # Resolved once, here, so config.json records the precision the run trains in; a resumed
    # run's config holds it already (and its checkpoint's wins in train()).
    asked = cfg.train.precision
    cfg.train.precision, why = resolve_precision(asked, device)
    if resume and asked != "auto":
        why = "the run's own"
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    prepare = RECIPES[modality_of(get_objective(cfg.objective.name))]
    prep = prepare(cfg, out, resume, encoding, log)
    if cfg.train.init and not resume:  # a new run from a folder's weights (pretrain --init)
        from selfsup.pretraining_init import init_weights

        init_weights(prep.model, cfg, log)
    model = prep.model.to(device)
    if cfg.train.compile:
        model.compile(dynamic=True)  # in place, so state_dict keys and checkpoints are unchanged

    created = not out.exists()
    if main:
        out.mkdir(parents=True, exist_ok=True)
    try:
        if main:
            prep.save(out)
        if (changed or not resume) and main:
            atomic_write_text(out / "config.json", json.dumps(prep.record, indent=2))
        if changed:
            _log_changes(changed, cfg, out, log)
        log(f"precision {cfg.train.precision} ({why})")
        final, minutes = _train(cfg, model, prep, out, resume, progress, log)
    except BaseException as e:
        kept = latest_checkpoint(out) is not None
        if main and created and not kept:  # nothing to resume: no run
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(e, KeyboardInterrupt):
            log(f"interrupted; continue with: selfsup pretrain --resume {out}" if kept else
                "interrupted before the first step: nothing was trained"
                + (", no run folder kept" if created else ""))  # fmt: skip
        raise
    summary = prep.summarise(final, minutes, out)
    if final and main:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def _train(cfg: RunConfig, model, data: Prepared, out: Path, resume, progress, log):
    n_params = sum(p.numel() for p in model.parameters())
    # a model config may say its own shape (an image ResNet: its stages), else layers x width
    describe = getattr(cfg.model, "describe", None)
    shape = describe() if describe else f"{cfg.model.n_layers} layers x {cfg.model.dim}"
    log(
        f"model: preset {cfg.preset}, {shape}, "
        f"{n_params / 1e6:.2f}M parameters; objective {cfg.objective.name}; "
        f"{cfg.train.steps} steps of {cfg.train.batch_size} x {cfg.train.grad_accum}"
    )
    if distributed.active():
        world = distributed.world_size()
        log(
            f"distributed: {world} processes ({'FSDP2' if cfg.train.fsdp else 'DDP'}), "
            f"{cfg.train.batch_size // world} examples of each batch per process"
        )
    bf16 = cfg.train.precision == "bf16"
    t0 = time.perf_counter()
    final = train(
        model,
        data.batches,
        cfg.train,
        out,
        (lambda m: evaluate(m, data.eval_batches, bf16)) if data.eval_batches else None,
        resume=resume,
        num_workers=cfg.data.num_workers,
        log=log,
        progress=progress,
    )
    return final, (time.perf_counter() - t0) / 60


def _log_changes(changed: dict[str, tuple], cfg: RunConfig, out: Path, log) -> None:
    shown = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
    log(f"resume: {shown} (recorded in {out / 'config.json'})")
    if "train.steps" not in changed:
        return
    old, new = changed["train.steps"]
    ckpt = latest_checkpoint(out)
    done = int(ckpt.name.removeprefix("step_")) if ckpt is not None else 0  # folders: step_N
    t = cfg.train

    def lr(step: int, total: int) -> float:
        return t.lr * lr_factor(step, t.warmup_steps, total, t.schedule, t.min_lr_ratio)

    log(
        f"resume: the {t.schedule} schedule is recomputed for {new} steps and continues at step "
        f"{done} (learning rate {lr(done, old):.3g} under {old} steps, {lr(done, new):.3g} now); "
        "the result is no longer bitwise equal to an uninterrupted run"
    )


def _check_run_settings(cfg: RunConfig) -> None:
    """Settings that would otherwise fail only once the run folder exists (the data section
    checks its own in its validate())."""
    t = cfg.train
    lowest = {
        "train.warmup_steps": (t.warmup_steps, 0), "train.log_every": (t.log_every, 1),
        "train.threads": (t.threads, 0),
    }  # fmt: skip
    for name, (value, low) in lowest.items():
        if value < low:
            raise ConfigError(f"{name} must be >= {low}, got {value}")
    world = distributed.world_size()
    if t.batch_size % world:
        raise ConfigError(
            f"batch size {t.batch_size} is not divisible by the {world} processes: each takes an "
            "equal share of every batch"
        )
    if len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas):
        raise ConfigError(f"train.betas must be two numbers in [0, 1), got {t.betas}")


# Each modality's recipe: (cfg, run folder, resume, encoding, log) -> Prepared.
RECIPES = {
    "text": _prepare_text, "audio": prepare_audio, "image": prepare_image, "dna": prepare_dna,
}  # fmt: skip
