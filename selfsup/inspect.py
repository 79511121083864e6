"""Realised masking statistics for a corpus and settings (`selfsup inspect-masking`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.config import RunConfig
from selfsup.corrupt.tokens import expected_span_words, word_bounds, word_starts
from selfsup.errors import ConfigError
from selfsup.keys import IGNORE


def inspect_masking(cfg: RunConfig, n_batches: int = 50, encoding: str = "utf-8") -> dict:
    """The realised statistics of the objective's corruption over `n_batches` batches."""
    from selfsup.config import modality_of
    from selfsup.inspect_audio import inspect_frames
    from selfsup.objectives import get_objective

    if n_batches < 1:
        raise ConfigError(f"the number of batches must be at least 1, got {n_batches}")
    inspectors = {"text": inspect_tokens, "audio": inspect_frames}
    modality = modality_of(get_objective(cfg.objective.name))
    if modality not in inspectors:
        raise ConfigError(f"inspect-masking covers text and audio objectives, not "
                          f"{cfg.objective.name} ({modality})")  # fmt: skip
    return inspectors[modality](cfg, n_batches, encoding)


def inspect_tokens(cfg: RunConfig, n_batches: int = 50, encoding: str = "utf-8") -> dict:
    from selfsup.pretraining import prepare_data

    data = prepare_data(cfg, encoding, log=lambda s: None)
    if data.batches.corrupt is None:  # an objective that builds its own examples
        return inspect_seq2seq(data, cfg, n_batches)
    tok = data.tokenizer
    masker, obj = data.batches.corrupt, cfg.objective
    n_real = n_chosen = n_mask = n_random = n_same = n_special_chosen = 0
    words = words_whole = run_words = 0
    run_lengths: list[torch.Tensor] = []
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
        bounds = word_bounds(word_starts(original, masker.continuation), special)  # (B, T)
        # Words numbered across the whole batch; a word is whole when all its real tokens are
        # chosen. Counted with bincount, not a Python loop over rows and words (8x slower).
        word = torch.cumsum(bounds.flatten().long(), 0) - 1
        size = torch.bincount(word, weights=real.flatten().double())
        hits = torch.bincount(word, weights=(chosen & real).flatten().double())
        words += int((hits > 0).sum())
        words_whole += int(((hits > 0) & (hits == size)).sum())
        # Runs of consecutive chosen tokens: +1/-1 steps of a row padded with False either side.
        edges = torch.diff(F.pad(chosen, (1, 1)).flatten().int()).nonzero().squeeze(1)
        run_lengths.append(edges[1::2] - edges[0::2])
        run_start = chosen & ~F.pad(chosen, (1, 0))[:, :-1]
        run_words += int((chosen & (bounds | run_start)).sum())
        pair_pos += int(b["pair_labels"].sum())
        pair_n += int(b["pair_labels"].numel())
    runs = torch.cat(run_lengths).float() if run_lengths else torch.zeros(0)
    n_runs = len(runs)
    c = max(n_chosen, 1)
    stats = {
        "batches": n_batches,
        "real_tokens": n_real,
        "chosen_rate": round(n_chosen / max(n_real, 1), 5),
        "target_mask_prob": cfg.objective.mask_prob,
        "mask_share": round(n_mask / c, 4),
        "random_share": round(n_random / c, 4),
        "unchanged_share": round(n_same / c, 4),
        "special_tokens_chosen": n_special_chosen,
        "chosen_words": words,
        "whole_word_share": round(words_whole / max(words, 1), 4),
        "mean_chosen_run_tokens": round(n_chosen / max(n_runs, 1), 3),
        "mean_chosen_run_words": round(run_words / max(n_runs, 1), 3),
        "max_chosen_run_tokens": int(runs.max()) if n_runs else 0,
        "mode": "span" if obj.span else "whole-word" if obj.whole_word else "token",
    }
    if cfg.objective.span:
        expected = expected_span_words(cfg.objective.span_p, cfg.objective.span_max)
        stats["expected_span_words"] = round(expected, 3)
    if data.batches.builder.pair_task:
        stats[f"{data.batches.builder.pair_task}_positive_share"] = round(pair_pos / pair_n, 4)
    return stats


def inspect_seq2seq(data, cfg: RunConfig, n_batches: int, show: int = 3) -> dict:
    """What an encoder-decoder objective's corruption did over `n_batches` training batches
    (the very examples training sees): the share of text corrupted, span lengths against
    their Poisson law (BART), sentences actually permuted, the target/source length ratio, and
    `show` corrupted/original pairs."""
    import math

    tok = data.tokenizer
    examples = [e for k in range(n_batches) for e in data.batches.examples(k)]
    infos = [e.info or {} for e in examples]
    text = sum(i.get("text_len", 0) for i in infos)
    src = sum(len(e.source) - 2 for e in examples)
    tgt = sum(len(e.target) for e in examples)
    name = cfg.objective.name
    stats: dict = {
        "objective": name, "batches": n_batches, "examples": len(examples), "text_tokens": text,
        "target_per_source_token": round(tgt / max(src, 1), 4),
    }  # fmt: skip
    if name == "bart":
        o = cfg.objective
        spans = [x for i in infos for x in i.get("spans", [])]
        multi = [i for i in infos if i.get("sentences", 0) >= 2]
        stats |= {
            "masked_share": round(sum(i["masked"] for i in infos) / max(text, 1), 4),
            "target_mask_prob": o.mask_prob,
            "deleted_share": round(sum(i["deleted"] for i in infos) / max(text, 1), 4),
            "spans": len(spans),
            "mean_span_tokens": round(sum(spans) / max(len(spans), 1), 3),
            "segments_with_2+_sentences": len(multi),
            "permuted_share": round(
                sum(i["order"] != sorted(i["order"]) for i in multi) / max(len(multi), 1), 4
            ),  # fmt: skip
            "rotated_share": round(sum(i["rotated"] > 0 for i in infos) / max(len(infos), 1), 4),
        }
        if o.infill and spans:
            lam = o.poisson_lambda
            poisson = [math.exp(-lam) * lam**j / math.factorial(j) for j in range(10)]
            hist = {}
            for k in range(11):
                seen = sum(x == k for x in spans) if k < 10 else sum(x >= 10 for x in spans)
                law = poisson[k] if k < 10 else 1 - sum(poisson)
                hist["10+" if k == 10 else str(k)] = [round(seen / len(spans), 4), round(law, 4)]
            stats["span_length_share_vs_poisson"] = hist
    elif name == "mass":
        frag = sum(i["fragment"] for i in infos)
        stats |= {
            "fragment_share": round(frag / max(text, 1), 4),
            "mask_share_in_fragment": round(sum(i["masked"] for i in infos) / max(frag, 1), 4),
            "unchanged_share_in_fragment": round(
                sum(i["unchanged"] for i in infos) / max(frag, 1), 4
            ),  # fmt: skip
        }
    elif name == "t5":
        noise = sum(i["noise"] for i in infos)
        n_spans = sum(i["spans"] for i in infos)
        stats |= {
            "noise_share": round(noise / max(text, 1), 4),
            "target_noise_density": cfg.objective.noise_density,
            "spans": n_spans,
            "mean_span_tokens": round(noise / max(n_spans, 1), 3),
            "full_length_share": round(
                sum(len(e.source) == cfg.data.max_len for e in examples) / max(len(examples), 1), 4
            ),  # fmt: skip
        }
    stats["pairs"] = [
        {"source": tok.decode(e.source), "target": tok.decode(e.target)} for e in examples[:show]
    ]
    return stats
