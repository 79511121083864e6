"""Realised frame and band masking statistics of an audio objective's batches
(`selfsup inspect-masking --objective mockingjay|tera|wav2vec2 --data ...`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from selfsup.config import RunConfig
from selfsup.corrupt.frames import frame_stats
from selfsup.errors import ConfigError
from selfsup.keys import FEATURES, FRAME_MASK, PADDING_MASK, TARGETS, TIME_MASK
from selfsup.layers.conv_frontend import downsample_padding_mask
from selfsup.pretraining_audio import prepare_audio


def inspect_frames(cfg: RunConfig, n_batches: int = 50, encoding: str = "utf-8") -> dict:
    """Over `n_batches` training batches: the share of real frames whose every value is scored
    (time masking) against objective.mask_prob, the lengths of runs of masked frames, the
    per-utterance action shares (zeroed / random frames / kept, against 80/10/10), and for
    TERA the frequency bands (utterances with one, mean width) and the noised share."""
    batches = prepare_audio(cfg, Path("."), False, encoding, log=lambda s: None).batches
    if batches.corrupt is None:
        raise ConfigError(f"objective {cfg.objective.name} corrupts no frames: nothing to inspect")
    if TIME_MASK in batches[0]:  # a waveform encoder's mask over its frames (wav2vec 2.0)
        return inspect_time_mask(cfg, batches, n_batches)
    real = masked = utterances = 0
    runs: Counter = Counter()
    actions: Counter = Counter()
    banded = band_width = noised = 0
    for k in range(n_batches):
        b = batches[k]
        if FRAME_MASK not in b:  # e.g. a waveform objective's mask over encoder frames
            raise ConfigError(f"inspect-masking reports the frame masks of spectral objectives "
                              f"(mockingjay, tera); {cfg.objective.name} masks none")  # fmt: skip
        pad, mask = b[PADDING_MASK], b[FRAME_MASK]
        x, t = b[FEATURES], b[TARGETS]
        # A noised utterance (TERA) has every value scored: it is counted apart, and its time
        # and band masking (hidden under the noise) are left out of the other statistics.
        noisy = torch.tensor([bool(mask[i][~pad[i]].all()) and not torch.equal(x[i], t[i])
                              for i in range(len(pad))])  # fmt: skip
        noised += int(noisy.sum())
        utterances += len(pad)
        keep = ~noisy
        pad, mask, x, t = pad[keep], mask[keep], x[keep], t[keep]
        band = (mask | pad[..., None]).all(1)  # (B, F): channels scored on every real frame
        time = (mask | band[:, None, :]).all(-1) & ~pad  # (B, T): frames scored on every channel
        time &= ~band.all(-1, keepdim=True)  # an utterance banded whole tells nothing of time
        s = frame_stats(time, pad)
        real += int((~pad).sum())
        masked += int(time.sum())
        runs.update(s["run_lengths"])
        for i in range(len(pad)):
            if time[i].any():
                outside = ~band[i]
                xi, ti = x[i][time[i]][:, outside], t[i][time[i]][:, outside]
                action = "zeroed" if bool((xi == 0).all()) else "kept" if torch.equal(xi, ti) else (
                    "random")  # fmt: skip
                actions[action] += 1
            if band[i].any() and not band[i].all():
                banded += 1
                band_width += int(band[i].sum())
    n_act = max(sum(actions.values()), 1)
    stats = {
        "batches": n_batches,
        "utterances": utterances,
        "real_frames": real,
        "time_masked_rate": round(masked / max(real, 1), 5),
        "target_mask_prob": getattr(cfg.objective, "mask_prob", None),
        "run_lengths": dict(sorted(runs.items())),
        "zeroed_share": round(actions["zeroed"] / n_act, 4),
        "random_share": round(actions["random"] / n_act, 4),
        "kept_share": round(actions["kept"] / n_act, 4),
    }
    if hasattr(cfg.objective, "frequency"):  # TERA
        stats["banded_utterances"] = round(banded / max(utterances - noised, 1), 4)  # of unnoised
        stats["mean_band_channels"] = round(band_width / max(banded, 1), 2)
        stats["noised_utterances"] = round(noised / max(utterances, 1), 4)
    return stats


def inspect_time_mask(cfg: RunConfig, batches, n_batches: int) -> dict:
    """A mask over a waveform encoder's frames (`time_mask`, wav2vec 2.0 and HuBERT: spans
    starting at a share `mask_prob` of the frames, overlapping), over `n_batches` batches: the
    share of real encoder frames masked, of utterances with a masked frame, and the lengths of
    the masked runs (touching or overlapping spans count as one run)."""
    real = masked = utterances = touched = 0
    runs: Counter = Counter()
    for k in range(n_batches):
        b = batches[k]
        mask = b[TIME_MASK]  # (B, T')
        pad = downsample_padding_mask(b[PADDING_MASK], cfg.model.conv_layers, mask.shape[1])
        s = frame_stats(mask, pad)
        real += int((~pad).sum())
        masked += int((mask & ~pad).sum())
        utterances += len(mask)
        touched += int(mask.any(1).sum())
        runs.update(s["run_lengths"])
    return {
        "batches": n_batches,
        "utterances": utterances,
        "real_frames": real,
        "time_masked_rate": round(masked / max(real, 1), 5),
        "masked_utterances": round(touched / max(utterances, 1), 4),
        "target_mask_prob": getattr(cfg.objective, "mask_prob", None),  # of span starts
        "span": getattr(cfg.objective, "span", None),
        "run_lengths": dict(sorted(runs.items())),
    }
