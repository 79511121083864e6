"""Realised masking statistics for a corpus and settings (`selfsup inspect-masking`)."""

from __future__ import annotations

import torch

from selfsup import IGNORE
from selfsup.config import RunConfig
from selfsup.corrupt.tokens import word_starts


def inspect_masking(cfg: RunConfig, n_batches: int = 50, encoding: str = "utf-8") -> dict:
    from selfsup.pretrain import prepare_data

    data = prepare_data(cfg, encoding, log=lambda s: None)
    tok = data.tokenizer
    masker = data.batches.masker
    n_real = n_chosen = n_mask = n_random = n_same = n_special_chosen = 0
    words = words_whole = words_partial = 0
    span_lengths: list[int] = []
    pair_pos = pair_n = 0
    for k in range(n_batches):
        b = data.batches[k]
        labels, ids = b["labels"], b["input_ids"]
        chosen = labels != IGNORE
        real = b["attention_mask"].bool()
        special = masker.special[torch.where(chosen, labels, ids)] | ~real
        n_real += int((real & ~special).sum())
        n_chosen += int(chosen.sum())
        n_special_chosen += int((chosen & special).sum())
        n_mask += int((chosen & (ids == tok.mask_id)).sum())
        n_same += int((chosen & (ids == labels)).sum())
        n_random += int((chosen & (ids != tok.mask_id) & (ids != labels)).sum())
        original = torch.where(chosen, labels, ids)
        starts = word_starts(original, masker.continuation) | special
        for row in range(ids.shape[0]):
            w = torch.cumsum(starts[row].long(), 0)
            for word in torch.unique(w[chosen[row]]):
                members = (w == word) & real[row]
                words += 1
                if bool(chosen[row][members].all()):
                    words_whole += 1
                else:
                    words_partial += 1
            c = chosen[row].tolist()
            run = 0
            for x in c + [False]:
                if x:
                    run += 1
                elif run:
                    span_lengths.append(run)
                    run = 0
        pair_pos += int(b["pair_labels"].sum())
        pair_n += int(b["pair_labels"].numel())
    spans = torch.tensor(span_lengths or [0], dtype=torch.float)
    c = max(n_chosen, 1)
    stats = {
        "batches": n_batches,
        "real_tokens": n_real,
        "chosen_rate": round(n_chosen / max(n_real, 1), 5),
        "target_mask_prob": cfg.mask.mask_prob,
        "mask_share": round(n_mask / c, 4),
        "random_share": round(n_random / c, 4),
        "unchanged_share": round(n_same / c, 4),
        "special_tokens_chosen": n_special_chosen,
        "chosen_words": words,
        "whole_word_share": round(words_whole / max(words, 1), 4),
        "mean_chosen_run_tokens": round(float(spans.mean()), 3),
        "max_chosen_run_tokens": int(spans.max()),
        "mode": "span" if cfg.mask.span else "whole-word" if cfg.mask.whole_word else "token",
    }
    if data.batches.builder.pair_task:
        stats[f"{data.batches.builder.pair_task}_positive_share"] = round(pair_pos / pair_n, 4)
    return stats
