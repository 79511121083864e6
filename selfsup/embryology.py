"""What a run learned when: every saved checkpoint of a pretraining run, probed and plotted
against its step (`selfsup embryology RUN --probe pos --data ud-english-ewt`), after "Pretrained
Language Model Embryology: The Birth of ALBERT" (Chiang, Huang and Lee, arXiv:2010.02480), which
follows POS knowledge, masked-token prediction by part of speech and downstream skill through
pretraining. Save the checkpoints with `selfsup pretrain --save-schedule log`
(selfsup/snapshots.py).

For each saved set of weights (snapshots, checkpoints, final weights; selfsup.snapshots.
saved_weights), in step order:

- POS probe: a linear classifier of UPOS tags on the frozen encoder's states at `layer` (default
  the last), a word's vector being its FIRST sub-token's (as the tagging task labels words). It
  trains on a seeded sample of whole UD train sentences holding `train_words` words (those that
  fit the model's input) and is scored on a seeded sample of dev (`dev_words`);
  selfsup.eval.image_probe.linear_probe fits it (softmax regression on standardised features,
  AdamW, its lr chosen on 10% of the probe's training words).
- MLM accuracy by part of speech: in each sampled dev sentence a seeded `mask_prob` of the words
  (at least one) have all their sub-tokens replaced by [MASK] at once; a word is right when every
  one of its pieces is the model's top prediction. Reported per UPOS tag (and over all words).
  The same words are masked at every step. Words with an [UNK] piece are never masked.
  Only for objectives with an MLM head (`predict_masked`).
- Held-out pretraining metrics: the run's own held-out batches (rebuilt from its config and
  corpus, with the seeded corruption training evaluated on) through train.evaluate: the loss,
  MLM loss and accuracy, and NSP or SOP accuracy when the run has that head.

Output folder (default RUN/embryology): embryology.json (every number per step, updated after
each step, so an interrupted run of this command resumes where it stopped when the settings are
the same) and embryology.png (each measure against the step, log x-axis with 0 shown).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from selfsup.checkpoint import atomic_write_text, is_run, read_safetensors
from selfsup.data.tasks import UPOS, TaggedSentence, load_task
from selfsup.data.text import TextDataConfig
from selfsup.data.tokenizer import Tokenizer, load_tokenizer
from selfsup.embed import length_batches
from selfsup.encoders.seq2seq import Seq2SeqEncoder
from selfsup.errors import ConfigError
from selfsup.keys import INPUT_IDS
from selfsup.models import run_config
from selfsup.objectives import build_objective
from selfsup.predict import predict_batches
from selfsup.snapshots import SavedWeights, saved_weights

FORMAT = "selfsup-embryology"
BATCH_SIZE = 32
PROBES = ("pos",)
PLOT_TAGS = 8  # MLM accuracy lines drawn: the most frequent masked tags


@dataclass
class Encoded:
    """Sentences as model inputs: ids ([CLS] pieces [SEP]) per sentence, and per kept word its
    sentence, its pieces' positions and its tag index."""

    ids: list[list[int]]
    sentence: list[int]
    positions: list[list[int]]
    tags: list[int]


# --------------------------------------------------------------------------------------------
# data


def sample_words(
    tok: Tokenizer, sentences: list[TaggedSentence], words: int, seed: int, max_len: int
) -> Encoded:
    """Whole sentences in a seeded random order, encoded (encode_words), until the words that
    fit the model's input number at least `words` (all sentences when they hold fewer)."""
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    data = encode_words(tok, [sentences[i] for i in order], max_len)
    kept = np.bincount(np.array(data.sentence, dtype=np.int64), minlength=len(order))
    n = int(np.searchsorted(np.cumsum(kept), words)) + 1  # sentences needed
    return take_sentences(data, n)


def take_sentences(data: Encoded, n: int) -> Encoded:
    """The first n sentences of `data` and their words."""
    k = sum(1 for i in data.sentence if i < n)  # words are in sentence order
    return Encoded(data.ids[:n], data.sentence[:k], data.positions[:k], data.tags[:k])


def encode_words(tok: Tokenizer, sentences: list[TaggedSentence], max_len: int) -> Encoded:
    """[CLS] pieces [SEP] of each sentence's words (cut at max_len); the words whose pieces
    all fit, with their UPOS index (words tagged outside UPOS are left out)."""
    tag_index = {t: i for i, t in enumerate(UPOS)}
    enc = tok.tok.encode_batch([s.words for s in sentences], is_pretokenized=True,
                               add_special_tokens=False)  # fmt: skip
    out = Encoded([], [], [], [])
    for i, (s, e) in enumerate(zip(sentences, enc, strict=True)):
        out.ids.append([tok.cls_id, *e.ids[: max_len - 2], tok.sep_id])
        pieces: dict[int, list[int]] = {}
        for t, w in enumerate(e.word_ids):
            if w is not None:
                pieces.setdefault(w, []).append(t + 1)  # +1: [CLS]
        for w in sorted(pieces):
            if pieces[w][-1] <= max_len - 2 and s.tags[w] in tag_index:
                out.sentence.append(i)
                out.positions.append(pieces[w])
                out.tags.append(tag_index[s.tags[w]])
    return out


def mask_words(
    data: Encoded, tok: Tokenizer, mask_prob: float, seed: int
) -> tuple[list[list[int]], list[int]]:
    """Inputs with a seeded `mask_prob` of each sentence's words (at least one) masked whole,
    and which words (indices into data's words) were masked. Words with an [UNK] piece are
    never chosen."""
    g = random.Random(seed)
    by_sentence: dict[int, list[int]] = {}
    for w, i in enumerate(data.sentence):
        if all(data.ids[i][p] != tok.unk_id for p in data.positions[w]):
            by_sentence.setdefault(i, []).append(w)
    ids = [list(x) for x in data.ids]
    chosen = []
    for i in sorted(by_sentence):
        words = by_sentence[i]
        pick = [w for w in words if g.random() < mask_prob] or [g.choice(words)]
        for w in pick:
            for p in data.positions[w]:
                ids[i][p] = tok.mask_id
        chosen += pick
    return ids, sorted(chosen)


# --------------------------------------------------------------------------------------------
# measures at one step


def _batches(ids: list[list[int]], batch_size: int):
    """(sentence indices, (B, T) ids) of equal-length sentences: no padding."""
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    for idx in length_batches(lengths, batch_size):
        yield idx.tolist(), torch.tensor([ids[i] for i in idx])


def word_features(
    encoder: torch.nn.Module, data: Encoded, layer: int, batch_size: int = BATCH_SIZE
) -> torch.Tensor:
    """(words, D): each word's first sub-token state at `layer` (0: embeddings, -1: last)."""

    def forward(input_ids: torch.Tensor) -> torch.Tensor:
        return encoder(input_ids, return_all=True)["all_hidden"][layer].float().cpu()

    states: dict[int, torch.Tensor] = {}
    for idx, hidden in predict_batches(encoder, _batches(data.ids, batch_size), forward):
        for row, i in enumerate(idx):
            states[i] = hidden[row]
    pairs = zip(data.sentence, data.positions, strict=True)
    return torch.stack([states[i][p[0]] for i, p in pairs])  # (words, D)


def probe_accuracy(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    dev_f: torch.Tensor,
    dev_y: torch.Tensor,
    seed: int = 0,
    n_classes: int = len(UPOS),
) -> dict:
    """The linear probe's dev accuracy (selfsup.eval.image_probe.linear_probe)."""
    from selfsup.eval.image_probe import linear_probe

    r = linear_probe(train_f, train_y, dev_f, dev_y, seed=seed, n_classes=n_classes)
    return {"accuracy": r["accuracy"], "train_accuracy": r["train_accuracy"], "lr": r["lr"]}


def mlm_by_tag(
    objective: torch.nn.Module,
    data: Encoded,
    masked_ids: list[list[int]],
    chosen: list[int],
    batch_size: int = BATCH_SIZE,
) -> dict:
    """Whole-word MLM accuracy of the chosen (masked) words, overall and per UPOS tag."""
    by_sentence: dict[int, list[int]] = {}
    for w in chosen:
        by_sentence.setdefault(data.sentence[w], []).append(w)
    sentences = sorted(by_sentence)
    lengths = np.array([len(masked_ids[i]) for i in sentences], dtype=np.int64)

    def batches():
        for idx in length_batches(lengths, batch_size):
            rows = [sentences[j] for j in idx]
            ids = torch.tensor([masked_ids[i] for i in rows])  # (B, T)
            where = torch.zeros(ids.shape, dtype=torch.bool)
            for b, i in enumerate(rows):
                for w in by_sentence[i]:
                    where[b, data.positions[w]] = True
            yield rows, {INPUT_IDS: ids, "positions": where}

    def forward(batch: dict) -> torch.Tensor:  # (M,) top predictions, row-major order
        return objective.predict_masked(batch, batch["positions"]).argmax(-1).cpu()

    hits, counts = Counter(), Counter()
    for rows, top in predict_batches(objective, batches(), forward):
        k = 0
        for i in rows:  # words in position order: the row-major order of the masked positions
            for w in sorted(by_sentence[i], key=lambda w: data.positions[w][0]):
                n = len(data.positions[w])
                truth = torch.tensor([data.ids[i][p] for p in data.positions[w]])
                tag = UPOS[data.tags[w]]
                counts[tag] += 1
                hits[tag] += bool((top[k : k + n] == truth).all())
                k += n
    return {
        "word_accuracy": sum(hits.values()) / max(1, sum(counts.values())),
        "by_upos": {t: hits[t] / counts[t] for t in UPOS if counts[t]},
    }


# --------------------------------------------------------------------------------------------
# the command


def embryology(
    run: str,
    data: str,
    out: str | None = None,
    probe: str = "pos",
    layer: int = -1,
    train_words: int = 20_000,
    dev_words: int = 5_000,
    mask_prob: float = 0.15,
    seed: int = 0,
    heldout: bool = True,
    batch_size: int = BATCH_SIZE,
    log: Callable[[str], None] = print,
) -> dict:
    """`selfsup embryology`: see the module docstring. Returns the report (embryology.json)."""
    if probe not in PROBES:
        raise ConfigError(f"unknown probe {probe!r}; choose {', '.join(PROBES)}")
    if train_words < 10 or dev_words < 10:
        raise ConfigError("--train-words and --dev-words must be at least 10")
    if not 0 < mask_prob < 1:
        raise ConfigError(f"--mask-prob must lie in (0, 1), got {mask_prob}")
    if batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    run_dir = Path(run)
    if not run_dir.is_dir():
        raise ConfigError(f"no such run folder: {run}")
    if not is_run(run_dir):
        raise ConfigError(f"{run} is not a selfsup run folder (no config.json of a run)")
    cfg = run_config(run_dir)
    if not isinstance(cfg.data, TextDataConfig):
        raise ConfigError(f"{run} is a {cfg.objective.name} run: embryology probes text runs")
    saved = saved_weights(run_dir, log)
    if not saved:
        raise ConfigError(
            f"run {run} has no saved weights (no snapshots, checkpoints or final weights): "
            "pretrain with --save-schedule log"
        )
    train = load_task("pos", data, "train")
    dev = load_task("pos", data, "dev")
    tok = load_tokenizer(run_dir / "tokenizer")
    objective = build_objective(cfg.objective, cfg.model)
    encoder = _encoder_of(objective)
    n_layers = len(_states(encoder, tok)) - 1
    if not -(n_layers + 1) <= layer <= n_layers:
        raise ConfigError(f"--layer {layer} is not a layer of {run} (0 = the embeddings, "
                          f"1..{n_layers} the layers, -1 the last)")  # fmt: skip
    max_len = min(cfg.data.max_len, cfg.model.max_len)
    probe_train = sample_words(tok, train, train_words, seed, max_len)
    probe_dev = sample_words(tok, dev, dev_words, seed + 1, max_len)
    if len(probe_train.tags) < 10 or len(probe_dev.tags) < 10:
        raise ConfigError(f"{data}: fewer than 10 tagged words fit the model's input")
    has_mlm = hasattr(objective, "predict_masked")
    masked, chosen = mask_words(probe_dev, tok, mask_prob, seed) if has_mlm else ([], [])
    eval_batches = _heldout_batches(cfg, tok, objective, log) if heldout else []
    out_dir = Path(out) if out else run_dir / "embryology"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot write {out_dir}: {e.strerror}") from None

    majority = Counter(probe_train.tags).most_common(1)[0][0]
    settings = {
        "probe": probe, "data": str(Path(data).resolve()), "layer": layer % (n_layers + 1),
        "train_words": train_words, "dev_words": dev_words, "mask_prob": mask_prob,
        "seed": seed, "heldout": heldout, "max_len": max_len,
    }  # fmt: skip
    report = {
        "format": FORMAT, "version": 1, "run": str(run_dir), "objective": cfg.objective.name,
        "settings": settings, "layers": n_layers,
        "word_vector": "first sub-token",
        "probe": {"train_words": len(probe_train.tags), "dev_words": len(probe_dev.tags),
                  "classes": list(UPOS)},
        "mlm_masking": (f"{mask_prob:g} of each dev sentence's words (at least one), all their "
                        "pieces [MASK]; a word is right when every piece is the top prediction")
        if has_mlm else None,
        "mlm_masked_words": dict(Counter(UPOS[probe_dev.tags[w]] for w in chosen)),
        "baselines": {"majority_tag": UPOS[majority], "majority_dev_accuracy":
                      float(np.mean(np.array(probe_dev.tags) == majority))},
        "steps": [],
    }  # fmt: skip
    done = _previous_steps(out_dir / "embryology.json", settings)
    train_y, dev_y = torch.tensor(probe_train.tags), torch.tensor(probe_dev.tags)
    for w in saved:
        row = done.get(w.step)
        if row is None:
            row = _measure(w, run_dir, objective, encoder, layer, probe_train, probe_dev,
                           train_y, dev_y, masked, chosen, eval_batches, seed,
                           batch_size)  # fmt: skip
            log(_row_line(row))
        report["steps"].append(row)
        atomic_write_text(out_dir / "embryology.json", json.dumps(report, indent=1) + "\n")
    plot_embryology(report, out_dir / "embryology.png")
    log(f"wrote {out_dir / 'embryology.json'} and {out_dir / 'embryology.png'} "
        f"({len(report['steps'])} steps)")  # fmt: skip
    return report


def _measure(w: SavedWeights, run_dir, objective, encoder, layer, probe_train, probe_dev,
             train_y, dev_y, masked, chosen, eval_batches, seed, batch_size) -> dict:  # fmt: skip
    from selfsup.train import evaluate

    t0 = time.perf_counter()
    try:
        objective.load_state_dict(read_safetensors(w.path))
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"the weights of {w.path} do not fit the run's model: {first}") from None
    objective.eval()
    row: dict = {"step": w.step, "source": str(w.path.parent.relative_to(run_dir)) or ".",
                 "kind": w.kind}  # fmt: skip
    f_train = word_features(encoder, probe_train, layer, batch_size)
    f_dev = word_features(encoder, probe_dev, layer, batch_size)
    p = probe_accuracy(f_train, train_y, f_dev, dev_y, seed)
    row["pos_probe_acc"] = round(p["accuracy"], 5)
    row["pos_probe_train_acc"] = round(p["train_accuracy"], 5)
    row["pos_probe_lr"] = p["lr"]
    if chosen:
        m = mlm_by_tag(objective, probe_dev, masked, chosen, batch_size)
        row["mlm_word_acc"] = round(m["word_accuracy"], 5)
        row["mlm_acc_by_upos"] = {t: round(v, 5) for t, v in m["by_upos"].items()}
    if eval_batches:
        ev = evaluate(objective, eval_batches)
        row["heldout"] = {k: round(v, 5) for k, v in ev.items() if math.isfinite(v)}
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def _row_line(row: dict) -> str:
    parts = [f"step {row['step']:>7}", f"POS probe {row['pos_probe_acc']:.4f}"]
    if "mlm_word_acc" in row:
        parts.append(f"MLM words {row['mlm_word_acc']:.4f}")
    for k, v in row.get("heldout", {}).items():
        if k in ("mlm_loss", "nsp_acc", "sop_acc"):
            parts.append(f"held-out {k} {v:.4f}")
    return "  ".join(parts) + f"  ({row['seconds']:.1f}s)"


def _encoder_of(objective: torch.nn.Module) -> torch.nn.Module:
    encoder = getattr(objective, "encoder", None)
    if encoder is None and hasattr(objective, "model"):  # an encoder-decoder: its encoder half
        encoder = Seq2SeqEncoder.of(objective.model)
    if encoder is None:
        raise ConfigError("this run's objective has no text encoder to probe")
    return encoder


def _states(encoder: torch.nn.Module, tok: Tokenizer) -> list:
    ids = torch.tensor([[tok.cls_id, tok.sep_id]])

    def forward(x: torch.Tensor) -> list:
        return encoder(x, return_all=True)["all_hidden"]

    ((_, states),) = predict_batches(encoder, [(None, ids)], forward)
    return states


def _heldout_batches(cfg, tok: Tokenizer, objective, log) -> list[dict]:
    """The run's held-out batches, as its training evaluated on them."""
    from selfsup.pretraining import prepare_data

    try:
        data = prepare_data(cfg, tok=tok, needs=objective.text_needs(tok, cfg.data.max_len),
                            log=lambda s: None)  # fmt: skip
    except ConfigError as e:
        raise ConfigError(f"cannot rebuild the run's held-out data ({e}); pass --no-heldout "
                          "to skip the held-out metrics") from None  # fmt: skip
    if not data.eval_batches:
        log("warning: the run has no held-out data: no held-out metrics")
    return data.eval_batches


def _previous_steps(path: Path, settings: dict) -> dict[int, dict]:
    """Rows of an earlier embryology.json written with the same settings, by step."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(old, dict) or old.get("format") != FORMAT or old.get("settings") != settings:
        return {}
    return {r["step"]: r for r in old.get("steps", []) if isinstance(r, dict) and "step" in r}


# --------------------------------------------------------------------------------------------
# the plot


def plot_embryology(report: dict, path: Path) -> Path:
    """Four panels against the step (symlog x-axis, so step 0 shows): POS probe accuracy (the
    majority-tag baseline dashed), MLM accuracy by part of speech (the most frequent masked
    tags, and all words), held-out MLM loss, NSP/SOP accuracy (chance dashed)."""
    from matplotlib.figure import Figure

    from selfsup.eval.image_probe import _colours, _save_png

    rows = report["steps"]
    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(11, 8))
    axes = fig.subplots(2, 2).ravel()

    ax = axes[0]
    ax.plot(steps, [r["pos_probe_acc"] for r in rows], "o-", color="C0", label="dev accuracy")
    ax.axhline(report["baselines"]["majority_dev_accuracy"], ls="--", color="grey",
               label=f"majority tag ({report['baselines']['majority_tag']})")  # fmt: skip
    ax.set_title(f"linear POS probe (layer {report['settings']['layer']}, first sub-token)")
    ax.set_ylabel("UPOS accuracy")
    ax.legend(fontsize=8)

    ax = axes[1]
    counts = Counter(report.get("mlm_masked_words") or {})
    tags = [t for t, _ in counts.most_common(PLOT_TAGS)]
    if any("mlm_word_acc" in r for r in rows):
        colours = _colours(max(1, len(tags)))
        for c, t in zip(colours, tags, strict=True):
            ys = [r.get("mlm_acc_by_upos", {}).get(t, float("nan")) for r in rows]
            ax.plot(steps, ys, ".-", color=c, lw=1, label=f"{t} ({counts[t]})")
        ax.plot(steps, [r.get("mlm_word_acc", float("nan")) for r in rows], "k-", lw=2.2,
                label="all words")  # fmt: skip
        ax.legend(fontsize=7, ncol=2)
    else:
        ax.text(0.5, 0.5, "no MLM head", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("masked-word accuracy by part of speech (UD dev)")
    ax.set_ylabel("whole-word accuracy")

    ax = axes[2]
    held = [r.get("heldout", {}) for r in rows]
    key = "mlm_loss" if any("mlm_loss" in h for h in held) else "loss"
    if any(key in h for h in held):
        ax.plot(steps, [h.get(key, float("nan")) for h in held], "o-", color="C3")
    else:
        ax.text(0.5, 0.5, "no held-out data", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"held-out {key.replace('_', ' ')} (the run's own held-out batches)")
    ax.set_ylabel(key)

    ax = axes[3]
    pair = next((k for k in ("nsp_acc", "sop_acc") if any(k in h for h in held)), None)
    if pair:
        ax.plot(steps, [h.get(pair, float("nan")) for h in held], "o-", color="C2")
        ax.axhline(0.5, ls="--", color="grey", label="chance")
        ax.legend(fontsize=8)
        ax.set_title(f"held-out {pair.split('_')[0].upper()} accuracy")
    else:
        ax.text(0.5, 0.5, "no NSP/SOP head", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("sentence-pair head")
    ax.set_ylabel("accuracy")

    for ax in axes:
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=0)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(f"embryology of {report['run']} ({report['objective']})", fontsize=11)
    fig.tight_layout()
    return _save_png(fig, path)
