"""The DNA (and protein) pretraining recipe: sequence files -> codes (cached) -> the tokenizer
named by data.tokenizer -> random windows, masked by the objective's scheme -> MLM; the shared
part of `selfsup pretrain` (selfsup/pretraining.py) does the rest.

Under torchrun rank 0 alone reads the files into the cache (the others wait, then read it).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from selfsup import distributed
from selfsup.checkpoint import RUN_FORMAT
from selfsup.data.dna import (
    SequenceWindows,
    build_sequence_corpus,
    describe,
    heldout_batches,
    heldout_windows,
    split_by_position,
    token_counts,
    window_lengths,
)
from selfsup.data.dna_tokenizer import sequence_tokenizer
from selfsup.errors import ConfigError
from selfsup.objectives import build_objective
from selfsup.prepared import Prepared
from selfsup.seeds import HELDOUT_OFFSET


def prepare_dna(cfg, out: Path, resume: bool, encoding: str, log) -> Prepared:
    d = cfg.data
    tok = sequence_tokenizer(d.tokenizer)
    if resume and (out / "tokenizer").is_dir():
        from selfsup.data.tokenizer import load_tokenizer

        own = load_tokenizer(out / "tokenizer")
        if getattr(own, "name", None) != tok.name:
            raise ConfigError(f"{out / 'tokenizer'} is not the run's tokenizer {tok.name}")
    cfg.model.vocab_size, cfg.model.pad_id = tok.vocab_size, tok.pad_id
    cfg.model.validate()
    d.validate(cfg.model)
    with distributed.main_first():  # no two ranks write the cache
        corpus = build_sequence_corpus(d.paths, tok.alphabet, d.cache_dir, encoding, log)
    log(f"data: {describe(corpus)}")
    train_iv, held_iv = split_by_position(corpus.offsets, d.heldout_bp)
    lengths = window_lengths(tok, d.max_len, d.min_bp)
    record = {"format": RUN_FORMAT, **cfg.to_dict()}
    seed = cfg.train.seed
    torch.manual_seed(seed)  # the same initial weights on every rank
    model = build_objective(cfg.objective, cfg.model)
    masker = model.masker(tok)
    batches = SequenceWindows(corpus, train_iv, tok, cfg.train.batch_size, seed, lengths,
                              d.short_prob, masker)  # fmt: skip
    windows = heldout_windows(held_iv, lengths[1], lengths[0], d.heldout_max)
    eval_batches = heldout_batches(corpus, windows, tok, masker, seed + HELDOUT_OFFSET)
    baseline = float("nan")
    if eval_batches:  # the most frequent training token, scored on the held-out targets
        counts = token_counts(corpus, train_iv, tok)
        counts[tok.special_ids] = 0
        top = int(np.argmax(counts))
        targets = torch.cat([b["labels"][b["labels"] >= 0] for b in eval_batches])
        baseline = float((targets == top).float().mean()) if len(targets) else float("nan")
    n_train = int((train_iv[:, 1] - train_iv[:, 0]).sum())
    stats = {
        "records": len(corpus.names),
        "bases": corpus.n_bases,
        "train_bases": n_train,
        "heldout_bases": corpus.n_bases - n_train,
        "heldout_windows": len(windows),
        "window_bases": list(lengths),
        "tokenizer": tok.name,
        "vocab_size": tok.vocab_size,
        "masking": cfg.objective.scheme,
    }

    def save(folder: Path) -> None:
        if not resume:
            tok.save(folder / "tokenizer", cfg.model.max_len)

    def summarise(final: dict, minutes: float, folder: Path) -> dict:
        summary = {
            "steps": cfg.train.steps,
            "minutes": round(minutes, 2),
            "heldout_mlm_acc": final.get("eval_mlm_acc"),
            "heldout_mlm_loss": final.get("eval_mlm_loss"),
            "most_frequent_token_acc": round(baseline, 5) if math.isfinite(baseline) else None,
            **stats,
        }
        if final.get("eval_mlm_acc") is not None:
            acc, loss = final["eval_mlm_acc"], final["eval_mlm_loss"]
            log(f"held-out MLM accuracy {acc:.4f} (loss {loss:.3f}) vs most frequent token "
                f"{baseline:.4f}; {minutes:.1f} min; run in {folder}")  # fmt: skip
        return summary

    held = f"{stats['heldout_bases']:,} held out (the last {d.heldout_bp:,} bases)"
    log(f"data: {n_train:,} training bases, {held}; windows of {lengths[0]}-{lengths[1]} bases "
        f"({tok.name}, {tok.vocab_size} tokens), masking {cfg.objective.scheme}")  # fmt: skip
    return Prepared(model, batches, eval_batches, stats, record, save, summarise)
