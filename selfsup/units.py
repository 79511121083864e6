"""Discrete speech units and a BERT over them: vq-wav2vec's pipeline (Baevski et al.,
arXiv:1910.05453, 3.3 and 5.2): quantize speech with a vq-wav2vec run, write each utterance as
a line of unit tokens, pretrain a BERT on those lines as text, and probe its layers as speech
features.

    selfsup pretrain --objective vq-wav2vec --data clips/ --out runs/vq
    selfsup units runs/vq --data clips/ --out units.txt
    selfsup pretrain --objective mlm --data units.txt --tokenizer units --out runs/unit-bert
    selfsup superb units:runs/vq:runs/unit-bert --task ks ...   (`UnitsUpstream`)

A unit is one encoder frame's G codes joined by "_" (G = 2: "g0_g1", the paper's one token
per frame for the combined groups), so a unit file holds at most V^G distinct tokens; `--dedup`
merges runs of the same unit into one (the frame alignment is then lost: the companion JSON
keeps each file's frame count). The text pipeline reads such a file with the unit tokenizer
(data/tokenizer.py unit_tokenizer, `--tokenizer units`): one token per unit, no lower-casing,
no sentence splitting, no WordPiece merges, each line its own document.

`write_units` writes OUT (units.txt) and its companion OUT.json (units.json): the run, the files
in line order with their frame and token counts, the frame rate, the number of possible units
(V^G) and of units used.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from selfsup.checkpoint import atomic_write_text, is_run
from selfsup.data.audio import list_audio
from selfsup.data.features import cached_features
from selfsup.data.tokenizer import load_tokenizer
from selfsup.errors import ConfigError
from selfsup.eval.upstream_base import Upstream, normalises_over_time
from selfsup.layers.conv_frontend import conv_output_lengths
from selfsup.models import run_config, run_weights
from selfsup.objectives import build_objective
from selfsup.paths import check_out_file

UNITS_FORMAT = "selfsup-units"
WINDOW_SECONDS = 30.0  # a long file is quantized in windows of this length (exact: see units_of)


def unit_token(codes) -> str:
    """One frame's codes (G,) as its unit token: "g0_g1"."""
    return "_".join(str(int(c)) for c in codes)


def dedup_units(tokens: list[str]) -> list[str]:
    """`tokens` with each run of equal consecutive tokens merged into one."""
    return [t for i, t in enumerate(tokens) if i == 0 or t != tokens[i - 1]]


def load_quantizer_run(run: str | Path, seed: int = 0):
    """(the run's config, its encoder with weights, frozen, in eval mode) of a selfsup run whose
    encoder quantizes its frames (vq-wav2vec); a one-line error for any other run."""
    path = Path(run)
    if not path.is_dir() or not is_run(path):
        raise ConfigError(f"{run} is not a selfsup run folder")
    cfg = run_config(path)
    if getattr(cfg.model, "quantizer", "none") == "none":
        raise ConfigError(
            f"run {run} (objective {cfg.objective.name}) has no quantizer: units come from a "
            "vq-wav2vec run (selfsup pretrain --objective vq-wav2vec)"
        )
    torch.manual_seed(seed)
    objective = build_objective(cfg.objective, cfg.model)
    objective.load_state_dict(run_weights(path))
    return cfg, objective.encoder.eval().requires_grad_(False)


@torch.no_grad()
def units_of(encoder: nn.Module, wave: np.ndarray, window_seconds: float, rate: int) -> np.ndarray:
    """(T', G) int64 codes of one utterance's (T, 1) samples. A file longer than the window is
    read in windows of whole frames that overlap by the receptive field, so every frame reads
    the samples it would read in one pass; the frames are the same as one pass's wherever the
    conv front end normalises each frame alone (conv_norm="layer"); a "group" front end
    normalises over each window instead of the whole file."""
    layers, S, R = encoder.conv_layers, encoder.frame_stride, encoder.receptive_field
    x = torch.tensor(np.asarray(wave), dtype=torch.float32).reshape(-1)  # a copy (of a memmap)
    n = int(conv_output_lengths(len(x), layers))
    step = max(1, int(window_seconds * rate) // S) * S
    device = next(encoder.parameters()).device
    parts = []
    for s in range(0, max(len(x), 1), step):
        if s and len(x) - s < R:
            break
        piece = x[s : s + step + R - S].to(device)[None]  # (1, samples)
        parts.append(encoder.units(piece)["codes"][0].cpu())  # (frames, G)
    codes = torch.cat(parts)[:n] if n else torch.zeros(0, encoder.quantizer.n_groups)
    return codes.long().numpy()


def write_units(
    run: str | Path,
    data: list[str],
    out: str | Path,
    dedup: bool = False,
    cache_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Write every audio file of `data` (folders or manifests) as one line of units of the
    vq-wav2vec `run` to `out`, and the companion JSON beside it (the module docstring); returns
    that JSON's content. Nothing is written when anything fails."""
    out = check_out_file(out, "units.txt")
    if out.suffix.lower() == ".json":
        raise ConfigError(f"--out {out} is the companion's name: give the units a .txt name")
    if not out.parent.is_dir():
        raise ConfigError(f"the folder of --out {out} does not exist")
    cfg, encoder = load_quantizer_run(run)
    items = [item for p in data for item in list_audio(p)]
    if not items:
        raise ConfigError("no audio files found in " + ", ".join(map(str, data)))
    features = cfg.data.features
    frames = cached_features(items, features, cache_dir, log=log)
    lines, n_frames, n_tokens, used = [], [], [], set()
    for wave in frames:
        tokens = [unit_token(c) for c in units_of(encoder, wave, WINDOW_SECONDS,
                                                   features.sample_rate)]  # fmt: skip
        used.update(tokens)
        n_frames.append(len(tokens))
        tokens = dedup_units(tokens) if dedup else tokens
        n_tokens.append(len(tokens))
        lines.append(" ".join(tokens))
    q = encoder.quantizer
    info = {
        "format": UNITS_FORMAT,
        "run": str(Path(run).resolve()),
        "objective": cfg.objective.name,
        "quantizer": cfg.model.quantizer,
        "n_groups": q.n_groups,
        "n_entries": q.n_entries,
        "vocab_size": q.n_entries**q.n_groups,  # possible units
        "units_used": len(used),
        "token": "_".join(f"g{g}" for g in range(q.n_groups)),
        "frame_rate": features.sample_rate / encoder.frame_stride,
        "frame_stride_samples": encoder.frame_stride,
        "receptive_field_samples": encoder.receptive_field,
        "sample_rate": features.sample_rate,
        "dedup": dedup,
        "files": [item.path for item in items],
        "frames": n_frames,
        "tokens": n_tokens,
    }
    companion = companion_path(out)
    atomic_write_text(companion, json.dumps(info, indent=2))
    atomic_write_text(out, "".join(line + "\n" for line in lines))
    log(
        f"units: {len(lines)} files, {sum(n_frames):,} frames at {info['frame_rate']:g} Hz, "
        f"{sum(n_tokens):,} tokens{' (runs merged)' if dedup else ''}, {len(used):,} of "
        f"{info['vocab_size']:,} possible units used -> {out} (+ {companion.name})"
    )
    return info


def companion_path(out: Path) -> Path:
    """units.txt -> units.json (units -> units.json)."""
    return out.with_suffix(".json") if out.suffix else out.with_name(out.name + ".json")


class UnitsUpstream(Upstream):
    """A BERT pretrained on units, as a speech upstream (`units:VQRUN:BERTRUN`): the vq-wav2vec
    run quantizes each frame (argmax codes), each frame's unit becomes its token id in the
    BERT's unit vocabulary ([UNK] for a unit it never saw), and the BERT reads them framed as
    [CLS] units [SEP], in windows of its max_len - 2 units; every layer's output (the
    embeddings first) at each unit is one step, so the steps are the vq-wav2vec frames, no
    units merged. Frozen."""

    def __init__(self, vq_encoder: nn.Module, features, tokenizer, bert: nn.Module, name: str):
        super().__init__()
        if not getattr(tokenizer, "units", False):
            raise ConfigError(f"{name}: the BERT run's tokenizer is not a unit tokenizer "
                              "(pretrain it with --tokenizer units)")  # fmt: skip
        self.vq = vq_encoder.eval().requires_grad_(False)
        self.bert = bert.eval().requires_grad_(False)
        self._set_geometry(features, 1, vq_encoder.conv_layers)  # the vq-wav2vec frames
        self.name, self.dim, self.feature_dim = name, bert.dim, 1
        self.per_example = normalises_over_time(vq_encoder)
        self.n_layers = len(bert.transformer.blocks) + 1
        self.cls_id, self.sep_id = tokenizer.cls_id, tokenizer.sep_id
        self.pad_id = tokenizer.pad_id
        q = vq_encoder.quantizer
        self.n_entries = q.n_entries
        # combined code (sum_g code_g V^(G-1-g)) -> token id
        table = torch.full((q.n_entries**q.n_groups,), tokenizer.unk_id, dtype=torch.long)
        for token, i in tokenizer.tok.get_vocab().items():
            parts = token.split("_")
            if len(parts) == q.n_groups and all(p.isdigit() for p in parts):
                codes = [int(p) for p in parts]
                if all(c < q.n_entries for c in codes):
                    table[self._combine(torch.tensor(codes))] = i
        self.register_buffer("table", table, persistent=False)

    def _combine(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., G) codes -> (...) one index per frame."""
        out = torch.zeros(codes.shape[:-1], dtype=torch.long, device=codes.device)
        for g in range(codes.shape[-1]):
            out = out * self.n_entries + codes[..., g]
        return out

    def _units(self, features: torch.Tensor, padding_mask: torch.Tensor) -> dict:
        """The vq run's codes; each example alone when its front end normalises over time
        (group norm), so a clip's units never depend on the batch's padding."""
        if not (self.per_example and bool(padding_mask.any())):
            return self.vq.units(features, padding_mask)
        T = int(conv_output_lengths(max(features.shape[1], self.vq.receptive_field),
                                    self.conv_layers))  # fmt: skip
        G = self.vq.quantizer.n_groups
        codes = torch.zeros(len(features), T, G, dtype=torch.long, device=features.device)
        pad = torch.ones(len(features), T, dtype=torch.bool, device=features.device)
        for i, n in enumerate((~padding_mask).sum(1).tolist()):
            one = self.vq.units(features[i : i + 1, :n])
            m = min(T, one["codes"].shape[1])
            codes[i, :m], pad[i, :m] = one["codes"][0, :m], one["padding_mask"][0, :m]
        return {"codes": codes, "padding_mask": pad}

    @torch.no_grad()
    def forward(self, features: torch.Tensor, padding_mask: torch.Tensor) -> dict:
        units = self._units(features, padding_mask)
        pad = units["padding_mask"]  # (B, T')
        ids = self.table[self._combine(units["codes"])]  # (B, T')
        window = self.bert.max_len - 2
        layers: list[list[torch.Tensor]] = [[] for _ in range(self.n_layers)]
        for s in range(0, max(ids.shape[1], 1), window):
            part, real = ids[:, s : s + window], ~pad[:, s : s + window]
            B, W = part.shape
            n = real.sum(1)  # (B,) real units here (padding comes last)
            x = torch.full((B, W + 2), self.pad_id, dtype=torch.long, device=ids.device)
            x[:, 0] = self.cls_id
            x[:, 1 : W + 1] = torch.where(real, part, self.pad_id)
            x[torch.arange(B), n + 1] = self.sep_id
            keep = torch.arange(W + 2, device=ids.device)[None] <= (n + 1)[:, None]
            out = self.bert(x, keep.long(), return_all=True)
            for layer, h in zip(layers, out["all_hidden"], strict=True):
                layer.append(h[:, 1 : W + 1])  # (B, W, D): the units, without [CLS] / [SEP]
        return {"all_hidden": [torch.cat(h, 1) for h in layers], "padding_mask": pad}

    def train(self, mode: bool = True):  # frozen: dropout stays off
        return super().train(False)


def load_units_upstream(spec: str) -> UnitsUpstream:
    """`units:VQRUN:BERTRUN`: the vq-wav2vec run VQRUN and the BERT run BERTRUN pretrained on
    its units (`selfsup pretrain --objective mlm --tokenizer units`), as a `UnitsUpstream`."""
    from selfsup.models import load_model

    parts = spec.removeprefix("units:").split(":")
    if not spec.startswith("units:") or len(parts) != 2 or not all(parts):
        raise ConfigError(f"upstream {spec!r}: write units:VQRUN:BERTRUN")
    vq_run, bert_run = parts
    cfg, encoder = load_quantizer_run(vq_run)
    loaded = load_model(bert_run)
    features = cfg.data.features
    return UnitsUpstream(encoder, features, load_tokenizer(bert_run), loaded.encoder, spec)
