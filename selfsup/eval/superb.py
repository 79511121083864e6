"""SUPERB-style evaluation of a frozen speech upstream (Yang et al. 2021, arXiv:2105.01051): its
layers combined by a learnable softmax-weighted sum, one small downstream model per task, the
learning rate picked on dev, and the test metric reported as the median and spread over seeds
(or folds) on the small corpora at hand:

    ks        keyword spotting: FSDD spoken digits, 10 classes, leave-one-speaker-out over the 6
              folds of splits/fsdd.json (dev = another unseen speaker); per fold the lr is swept
              on dev and the best probe tested, so the folds take the place of seeds
    sid       speaker identification: timit-sample's sid split (16 speakers, 7 train / 3 test
              utterances each); dev = one non-sa train utterance per speaker for the sweep,
              then the probes are refitted on all of train, one per seed
    sid-fsdd  speaker identification on FSDD's official split (6 speakers); dev = 10% of each
              speaker's train files for the sweep, refitted on all of train
    pr-frame  frame-level phone classification over the 39 folded TIMIT phones (Lee & Hon 1989)
              on timit-sample's pr split (sweep on its 2 dev speakers, refit on all 12 train
              speakers), scored by frame accuracy
    pr-ctc    phone recognition: the same split, a CTC head over the folded phone sequence,
              scored by phone error rate (SUPERB PR's linear + CTC)
    classify  a user's own labelled files (`data`: a folder or manifest), a seeded 80/10/10
              split, by speaker when speakers are known (no speaker in two parts)

`pr` runs both pr tasks; `all` every task on the shared data (not classify).

KS and SID heads are SUPERB's mean pooling + linear; their states are mean-pooled once per
layer before training (exact: pooling and the layer sum are both linear). PR frame labels: each
upstream step takes the label of the sample it is centred on (the upstream's frame_centres): a
feature frame t covers the samples centred at t * hop_length (centred STFT frames); a stacked
step j of `stack` frames takes the label of its centre frame j * stack + stack // 2 (the last
real frame when that one is padding); a waveform encoder's frame t reads samples
[t * S, t * S + R) of its conv front end (stride S, receptive field R: 320 and 400 for
wav2vec 2.0) and is centred on t * S + R / 2. The label is the folded phone of the .phn segment
holding that sample (.phn offsets are 16 kHz samples); q (folded to nothing) and frames outside
every segment are IGNORE. CTC targets: each segment's phone folded, q dropped, then consecutive
duplicates merged (closures fold into sil, so "pcl p" -> "sil p" and "h# ... h#" stay sil);
silence is kept as a token and scored, as in the standard 39-phone TIMIT evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from selfsup import distributed
from selfsup.data.audio import AudioItem, list_audio, parse_name
from selfsup.data.features import cached_features
from selfsup.errors import ConfigError
from selfsup.eval.probe import (
    LRS,
    ProbeSet,
    Sweep,
    extract,
    mean_weights,
    summarise,
    sweep,
    sweeps,
)
from selfsup.eval.upstream import load_upstream
from selfsup.keys import IGNORE

SPLITS = Path(__file__).parent / "splits"
FSDD_PATTERN = "{label}_{speaker}_{index}"
PHN_RATE = 16000  # TIMIT .phn offsets are samples at 16 kHz
RESULTS, PLOT = "superb.json", "layer_weights.png"

# Probe training per task kind: fixed epochs and batch sizes (examples per batch; utterances
# for the frame and CTC heads). Utterance probes read pooled states and cost next to nothing;
# CTC needs more passes than frame classification to leave the all-blank output behind.
EPOCHS = {"utterance": 40, "frame": 20, "ctc": 40}
BATCH_SIZE = {"utterance": 32, "frame": 8, "ctc": 8}


@dataclass
class Settings:
    """How run_superb trains its probes and finds its data."""

    data_root: Path | None = None
    seeds: int = 3
    lrs: Sequence[float] = LRS
    epochs: int | None = None  # None: EPOCHS of the task's kind
    batch_size: int | None = None  # None: BATCH_SIZE of the task's kind
    cache_dir: str | Path | None = None
    log: Callable[[str], None] = print
    data: str | Path | None = None  # classify: a folder or a .csv/.tsv manifest
    pattern: str | None = None  # classify: file name fields, e.g. "{label}_{speaker}_{index}"
    label_column: str = "label"
    speaker_column: str = "speaker"
    ctc_lstm_dim: int = 0  # pr-ctc: 0 = SUPERB's linear head; > 0 a BiLSTM of that size first
    split_seed: int = 0
    folds: Sequence[int] | None = None  # ks: which of the 6 folds (None: all)
    memo: dict = field(default_factory=dict)  # states computed once per run_superb call

    def train_args(self, kind: str) -> dict:
        return {
            "epochs": self.epochs or EPOCHS[kind],
            "batch_size": self.batch_size or BATCH_SIZE[kind],
            "lrs": tuple(self.lrs),
        }


# ---------------------------------------------------------------------------------------------
# data


def _splits(name: str) -> dict:
    return json.loads((SPLITS / name).read_text())


def _corpus(settings: Settings, sub: str) -> Path:
    if settings.data_root is None:
        raise ConfigError(f"this task needs the data root holding {sub}/ (data_root)")
    folder = Path(settings.data_root) / sub
    if not folder.is_dir():
        raise ConfigError(f"data folder {folder} does not exist")
    return folder


def _states(upstream, settings: Settings, key: str, paths: list[str], pool: bool,
            untrimmed: bool = False):  # fmt: skip
    """{path: (L, T'_i, D) states} of `paths` (their features cached on disk, the states kept
    for the rest of the run), and {path: T_i feature frames}. `untrimmed`: whatever the
    upstream's trim_db, keep every sample, so that frame t starts at sample t * hop_length (the
    frame-labelled tasks align .phn offsets to it)."""
    memo_key = (key, pool)
    if memo_key not in settings.memo:
        items = [AudioItem(p) for p in paths]
        features = upstream.features
        if untrimmed:
            features = dataclasses.replace(features, trim_db=0.0)
        with distributed.main_first():  # rank 0 fills the feature cache, the others read it
            frames = cached_features(items, features, settings.cache_dir, settings.log)
        states = extract(upstream, frames, pool=pool)  # the ranks share the batches
        settings.memo[memo_key] = (
            dict(zip(paths, states, strict=True)),
            {p: len(f) for p, f in zip(paths, frames, strict=True)},
        )
    return settings.memo[memo_key]


def _fsdd_states(upstream, settings: Settings):
    root = _corpus(settings, "fsdd")
    split = _splits("fsdd.json")["official"]
    names = sorted(split["train"] + split["test"])
    paths = [str(root / n) for n in names]
    states, _ = _states(upstream, settings, "fsdd", paths, pool=True)
    return root, {n: states[p] for n, p in zip(names, paths, strict=True)}


def _fsdd_field(name: str, which: str) -> str:
    fields = parse_name(FSDD_PATTERN, Path(name).stem)
    if fields is None:
        raise ConfigError(f"FSDD file {name} is not named {FSDD_PATTERN}")
    return fields[which]


def _index(values: Sequence[str]) -> dict[str, int]:
    return {v: i for i, v in enumerate(sorted(set(values)))}


def _dev_part(groups: dict[str, list[str]], share: float, rng: np.random.Generator) -> set[str]:
    """At least one, else `share`, of each group's names, drawn from `rng`."""
    dev = set()
    for g in sorted(groups):
        names = sorted(groups[g])
        k = max(1, round(share * len(names)))
        dev.update(names[i] for i in rng.choice(len(names), size=k, replace=False))
    return dev


def read_phn(path: str | Path) -> list[tuple[int, int, str]]:
    """The (start, end, phone) segments of a TIMIT .phn file (sample offsets, end exclusive)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"phone alignment {p} does not exist")
    segments = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise ConfigError(f"{p}, line {n}: expected 'start end phone', got {line!r}")
        try:
            segments.append((int(parts[0]), int(parts[1]), parts[2]))
        except ValueError:
            raise ConfigError(f"{p}, line {n}: start and end must be integers") from None
    return segments


def frame_labels(
    segments: Sequence[tuple[int, int, int]],
    n_frames: int,
    hop_length: int,
    sample_rate: int,
    stack: int = 1,
    phn_rate: int = PHN_RATE,
) -> np.ndarray:
    """(ceil(n_frames / stack),) int64 labels of a spectral upstream's steps from (start, end,
    label) segments in samples at `phn_rate` (end exclusive; label IGNORE for phones to skip):
    step j covers frames j * stack .. j * stack + stack - 1 and takes the label of its centre
    frame j * stack + stack // 2 (clamped to the last frame), and feature frame t is centred on
    sample t * hop_length at `sample_rate`. Steps outside every segment are IGNORE. (An
    upstream's `frame_centres` gives these centres, and a waveform encoder's: labels_at.)"""
    if n_frames < 1 or stack < 1:
        raise ValueError(f"need n_frames >= 1 and stack >= 1, got {n_frames}, {stack}")
    steps = -(-n_frames // stack)
    centre = np.minimum(np.arange(steps) * stack + stack // 2, n_frames - 1)  # frame index
    return labels_at(segments, centre * hop_length, sample_rate, phn_rate)


def labels_at(
    segments: Sequence[tuple[int, int, int]],
    centres: np.ndarray,
    sample_rate: int,
    phn_rate: int = PHN_RATE,
) -> np.ndarray:
    """(len(centres),) int64: the label of the (start, end, label) segment (samples at
    `phn_rate`, end exclusive) holding each centre (samples at `sample_rate`); IGNORE where
    no segment does."""
    at = np.asarray(centres, dtype=np.float64) * (phn_rate / sample_rate)  # in .phn units
    labels = np.full(len(at), IGNORE, dtype=np.int64)
    for start, end, label in segments:
        labels[(at >= start) & (at < end)] = label
    return labels


def phone_sequence(segments: Sequence[tuple[int, int, str]], fold: dict) -> list[str]:
    """The folded phone sequence of .phn segments: each phone mapped by `fold` (61 -> 39), the
    ones folded to None (q) dropped, then consecutive duplicates merged."""
    out: list[str] = []
    for _, _, phone in segments:
        if phone not in fold:
            raise ConfigError(f"phone {phone!r} is not in the 61-phone TIMIT set")
        folded = fold[phone]
        if folded is not None and (not out or out[-1] != folded):
            out.append(folded)
    return out


# ---------------------------------------------------------------------------------------------
# tasks: each returns {result name: result}


def _seeded(kind: str, n_classes: int, fit, dev, test, refit, settings: Settings, **head):
    """The lr sweep on (fit, dev), then settings.seeds probes trained on `refit`, tested."""
    args = settings.train_args(kind)
    r = sweep(kind, fit, dev, test, n_classes, seeds=settings.seeds, refit=refit, **args, **head)
    sizes = {"n_classes": n_classes, "n_train": len(refit), "n_test": len(test)}
    training = {"epochs": args["epochs"], "batch_size": args["batch_size"]}
    return {**r, "unit": "seeds", **sizes, **training}


def _ks(upstream, settings: Settings) -> dict:
    _, states = _fsdd_states(upstream, settings)
    folds, args = _splits("fsdd.json")["folds"], settings.train_args("utterance")
    chosen = list(range(len(folds)) if settings.folds is None else settings.folds)
    if not chosen or any(not 0 <= k < len(folds) for k in chosen):
        raise ConfigError(f"ks folds must be among 0..{len(folds) - 1}, got {chosen}")

    def part(names):
        return ProbeSet([states[n] for n in names], [int(_fsdd_field(n, "label")) for n in names])

    # Every fold's sweep at once: under torchrun the ranks share all (fold, lr) probes.
    runs = sweeps([Sweep("utterance", *(part(folds[k][p]) for p in ("train", "dev", "test")), 10,
                         args["lrs"], 1, epochs=args["epochs"], batch_size=args["batch_size"])
                   for k in chosen])  # fmt: skip
    for k, r in zip(chosen, runs, strict=True):
        settings.log(f"ks fold {k} (test speaker {folds[k]['test_speaker']}): lr {r['lr']:g}, "
                     f"acc {r['values'][0]:.3f}")  # fmt: skip
    ks = {"metric": "acc", "higher_is_better": True, "unit": "folds", "folds": chosen,
          "test_speakers": [folds[k]["test_speaker"] for k in chosen],
          **summarise([r["values"][0] for r in runs]),
          "lr": [r["lr"] for r in runs], "dev": [r["dev"] for r in runs],
          "layer_weights": mean_weights([r["layer_weights"] for r in runs]),
          "layer_weights_all": [r["layer_weights"] for r in runs],
          "n_classes": 10, "n_train": len(folds[0]["train"]), "n_test": len(folds[0]["test"]),
          "epochs": args["epochs"], "batch_size": args["batch_size"]}  # fmt: skip
    return {"ks": ks}


def _by_group(names: list[str], group: Callable[[str], str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n in names:
        out.setdefault(group(n), []).append(n)
    return out


def _sid_fsdd(upstream, settings: Settings) -> dict:
    _, states = _fsdd_states(upstream, settings)
    split = _splits("fsdd.json")["official"]
    speaker = _index([_fsdd_field(n, "speaker") for n in split["train"]])

    def part(names):
        labels = [speaker[_fsdd_field(n, "speaker")] for n in names]
        return ProbeSet([states[n] for n in names], labels)

    groups = _by_group(split["train"], lambda n: _fsdd_field(n, "speaker"))
    dev = _dev_part(groups, 0.1, np.random.default_rng(settings.split_seed))
    fit = [n for n in split["train"] if n not in dev]
    r = _seeded("utterance", len(speaker), part(fit), part(sorted(dev)), part(split["test"]),
                part(split["train"]), settings)  # fmt: skip
    return {"sid-fsdd": r}


def _timit_paths(settings: Settings, names: list[str]) -> dict[str, str]:
    root = _corpus(settings, "timit-sample")
    return {n: str(root / n) for n in names}


def _timit_speaker(name: str) -> str:
    return name.split("/")[0]


def _sid(upstream, settings: Settings) -> dict:
    split = _splits("timit_sample.json")["sid"]
    names = sorted(split["train"] + split["test"])
    paths = _timit_paths(settings, names)
    states, _ = _states(upstream, settings, "timit-sid", [paths[n] for n in names], pool=True)
    speaker = _index([_timit_speaker(n) for n in names])

    def part(ns):
        return ProbeSet([states[paths[n]] for n in ns], [speaker[_timit_speaker(n)] for n in ns])

    # dev: one si/sx train utterance per speaker (sa1/sa2 are the same two sentences for all)
    not_sa = [n for n in split["train"] if not Path(n).stem.startswith("sa")]
    rng = np.random.default_rng(settings.split_seed)
    dev = _dev_part(_by_group(not_sa, _timit_speaker), 0.0, rng)
    fit = [n for n in split["train"] if n not in dev]
    r = _seeded("utterance", len(speaker), part(fit), part(sorted(dev)), part(split["test"]),
                part(split["train"]), settings)  # fmt: skip
    return {"sid": r}


def _pr_parts(upstream, settings: Settings, targets: str) -> tuple[int, list[ProbeSet]]:
    """(classes, [fit, dev, test, refit]) of the pr split: frame labels over the 39 phones
    (`targets` "frame") or phone token sequences over 1..39, 0 the blank ("ctc")."""
    splits = _splits("timit_sample.json")
    split, fold = splits["pr"], splits["fold39"]
    phones = sorted({p for p in fold.values() if p is not None})  # the 39 classes
    index = {p: i for i, p in enumerate(phones)}
    names = sorted(set(split["train"]) | set(split["test"]))
    paths = _timit_paths(settings, names)
    states, n_frames = _states(
        upstream, settings, "timit-pr", [paths[n] for n in names], False, untrimmed=True
    )
    cfg = upstream.features
    labels = {}
    for n in names:
        segments = read_phn(Path(paths[n]).with_suffix(".phn"))
        if targets == "ctc":
            labels[n] = [index[p] + 1 for p in phone_sequence(segments, fold)]
            continue
        segments = [(a, b, IGNORE if fold.get(p) is None else index[fold[p]])
                    for a, b, p in segments]  # fmt: skip
        # each step's centre: frame_labels' for spectral frames, t * S + R / 2 for a conv
        # front end over the samples (selfsup.eval.upstream)
        frames = labels_at(segments, upstream.frame_centres(n_frames[paths[n]]), cfg.sample_rate)
        if len(frames) != states[paths[n]].shape[1]:
            raise ConfigError(f"{n}: {len(frames)} frame labels for "
                              f"{states[paths[n]].shape[1]} upstream steps")  # fmt: skip
        labels[n] = torch.from_numpy(frames)
    dev = set(split["dev"])
    groups = ([n for n in split["train"] if n not in dev], split["dev"], split["test"],
              split["train"])  # fmt: skip
    parts = [ProbeSet([states[paths[n]] for n in g], [labels[n] for n in g]) for g in groups]
    return len(phones) + (targets == "ctc"), parts


def _pr_frame(upstream, settings: Settings) -> dict:
    n_classes, parts = _pr_parts(upstream, settings, "frame")
    return {"pr-frame": _seeded("frame", n_classes, *parts, settings)}


def _pr_ctc(upstream, settings: Settings) -> dict:
    n_classes, parts = _pr_parts(upstream, settings, "ctc")
    r = _seeded("ctc", n_classes, *parts, settings, lstm_dim=settings.ctc_lstm_dim)
    return {"pr-ctc": {**r, "lstm_dim": settings.ctc_lstm_dim, "silence": "kept"}}


def split_items(
    items: list[AudioItem], seed: int = 0, shares=(0.8, 0.1, 0.1)
) -> tuple[list[int], list[int], list[int], str]:
    """(train, dev, test) indices of `items` and how they were split ("speaker" or "file"): by
    speaker when every item has one, there are at least 3 and the label is not the speaker
    (speaker identification has to hear every speaker in training): speakers in a seeded
    order fill test, then dev, until each holds its share of the files, the rest is train;
    otherwise a seeded shuffle of the files cut at the shares."""
    rng = np.random.default_rng(seed)
    n = len(items)
    speakers = [it.speaker for it in items]
    by_speaker = (
        all(s is not None for s in speakers)
        and len(set(speakers)) >= 3
        and any(it.label != it.speaker for it in items)
    )
    if by_speaker:
        names = sorted(set(speakers))
        order = [names[i] for i in rng.permutation(len(names))]
        count = {s: speakers.count(s) for s in names}
        parts: list[list[str]] = [[], []]  # test, dev speakers
        k = 0
        for part, share in zip(parts, (shares[2], shares[1]), strict=True):
            while k < len(order) - 1 and sum(count[s] for s in part) < share * n:
                part.append(order[k])
                k += 1
        test_s, dev_s = set(parts[0]), set(parts[1])
        test = [i for i, s in enumerate(speakers) if s in test_s]
        dev = [i for i, s in enumerate(speakers) if s in dev_s]
        train = [i for i, s in enumerate(speakers) if s not in test_s | dev_s]
        how = "speaker"
    else:
        perm = rng.permutation(n).tolist()
        n_test, n_dev = round(shares[2] * n), round(shares[1] * n)
        test, dev, train = perm[:n_test], perm[n_test : n_test + n_dev], perm[n_test + n_dev :]
        how = "file"
    if not train or not dev or not test:
        raise ConfigError(
            f"{n} files cannot be split {'/'.join(str(round(100 * s)) for s in shares)} "
            f"by {how} with every part non-empty: give more files (or speakers)"
        )
    return sorted(train), sorted(dev), sorted(test), how


def _classify(upstream, settings: Settings) -> dict:
    if settings.data is None:
        raise ConfigError("task classify needs data: a folder or a .csv/.tsv manifest")
    items = list_audio(
        settings.data, settings.label_column, settings.speaker_column, pattern=settings.pattern
    )
    unlabelled = [it.path for it in items if it.label is None]
    if unlabelled:
        raise ConfigError(
            f"{len(unlabelled)} files have no {settings.label_column!r} label, "
            f"e.g. {unlabelled[0]} (give a pattern or a manifest column)"
        )
    classes = _index([it.label for it in items])
    if len(classes) < 2:
        raise ConfigError(f"classify needs at least 2 labels, found {len(classes)}")
    train, dev, test, how = split_items(items, settings.split_seed)
    paths = [it.path for it in items]
    states, _ = _states(upstream, settings, f"classify:{settings.data}", paths, pool=True)
    data = ProbeSet([states[p] for p in paths], [classes[it.label] for it in items])
    r = _seeded("utterance", len(classes), data.subset(train), data.subset(dev),
                data.subset(test), data.subset(train + dev), settings)  # fmt: skip
    return {"classify": {**r, "split": how, "classes": sorted(classes), "n_dev": len(dev)}}


TASKS = {
    "ks": _ks,
    "sid": _sid,
    "sid-fsdd": _sid_fsdd,
    "pr-frame": _pr_frame,
    "pr-ctc": _pr_ctc,
    "classify": _classify,
}
ALIASES = {"pr": ("pr-frame", "pr-ctc"), "all": ("ks", "sid", "sid-fsdd", "pr-frame", "pr-ctc")}
NEEDS = {
    "ks": "fsdd",
    "sid-fsdd": "fsdd",
    "sid": "timit-sample",
    "pr-frame": "timit-sample",
    "pr-ctc": "timit-sample",
}


def expand_tasks(tasks: Sequence[str]) -> list[str]:
    """Task names with the aliases (pr, all) expanded, in order, without repeats; an unknown
    name is a ConfigError."""
    out: list[str] = []
    for t in tasks:
        names = ALIASES.get(t, (t,))
        for name in names:
            if name not in TASKS:
                known = ", ".join([*TASKS, *ALIASES])
                raise ConfigError(f"unknown SUPERB task {t!r}: choose from {known}")
            if name not in out:
                out.append(name)
    if not out:
        raise ConfigError("no SUPERB task given")
    return out


# ---------------------------------------------------------------------------------------------
# running, saving, reporting


def _public(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "probe"}


def plot_layer_weights(results: dict, path: Path, title: str = "") -> None:
    """The mean layer weights of every task, one line per task, into the PNG `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for task, r in results.items():
        w = r["layer_weights"]
        ax.plot(range(len(w)), w, marker="o", label=task)
    n = max(len(r["layer_weights"]) for r in results.values())
    ax.set_xticks(range(n))
    ax.set_xlabel("layer (0: the features or the run's input projection)")
    ax.set_ylabel("softmax layer weight")
    ax.set_ylim(0.0, 1.05)
    ax.set_title(title or "learned layer weights (mean over seeds / folds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_superb(
    upstream_spec: str,
    tasks: Sequence[str],
    data_root: str | Path | None = None,
    out: str | Path | None = None,
    seeds: int = 3,
    lrs: Sequence[float] = LRS,
    epochs: int | None = None,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
    batch_size: int | None = None,
    data: str | Path | None = None,
    pattern: str | None = None,
    label_column: str = "label",
    speaker_column: str = "speaker",
    ctc_lstm_dim: int = 0,
    folds: Sequence[int] | None = None,
    upstream_seed: int = 0,
) -> dict:
    """Evaluate the upstream `upstream_spec` (see selfsup.eval.upstream) on `tasks` (TASKS or
    ALIASES names): features computed through the feature cache at the upstream's own settings
    (8 kHz FSDD resampled to its rate), hidden states extracted once, then per task a
    learning-rate sweep over `lrs` on dev and `seeds` seeds at the best one (KS: the 6 folds).

    Returns {"upstream", "n_layers", "dim", "stack", "frame_stride_samples",
    "frame_offset_samples", "sample_rate", "seconds", "tasks": {task: {"metric"
    ("acc" or "per"), "median", "spread", "values" (per seed or fold), "unit", "lr", "dev",
    "layer_weights" (mean), "layer_weights_all", ...}}}; with `out`, also writes it to
    out/superb.json and the layer weights to out/layer_weights.png.

    Under torchrun the processes share the work: each encodes its share of the batches and
    fits its share of the probes (distributed.run_jobs); every one gets all the results, so the
    report is one process's (wall-clock seconds aside); rank 0 alone logs and writes."""
    names = expand_tasks(tasks)
    settings = Settings(
        data_root=Path(data_root) if data_root is not None else None,
        seeds=seeds,
        lrs=tuple(lrs),
        epochs=epochs,
        batch_size=batch_size,
        cache_dir=cache_dir,
        log=log,
        data=data,
        pattern=pattern,
        label_column=label_column,
        speaker_column=speaker_column,
        ctc_lstm_dim=ctc_lstm_dim,
        folds=folds,
    )
    if seeds < 1:
        raise ConfigError(f"seeds must be at least 1, got {seeds}")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    for name in names:  # missing data fails before the upstream loads
        if name in NEEDS:
            _corpus(settings, NEEDS[name])
        if name == "classify" and data is None:
            raise ConfigError("task classify needs data: a folder or a .csv/.tsv manifest")
    distributed.setup()  # under torchrun: the ranks share the extraction and the probe fits
    try:
        if not distributed.is_main():
            settings.log = distributed.quiet
        return _run(upstream_spec, names, settings, out, upstream_seed)
    finally:
        distributed.teardown()


def _run(upstream_spec: str, names: list[str], settings: Settings, out, upstream_seed) -> dict:
    log = settings.log
    start = time.perf_counter()
    upstream = load_upstream(upstream_spec, seed=upstream_seed)
    results: dict = {}
    for name in names:
        t0 = time.perf_counter()
        for task, r in TASKS[name](upstream, settings).items():
            results[task] = {**_public(r), "seconds": round(time.perf_counter() - t0, 2)}
            log(
                f"superb {upstream_spec} {task}: {r['metric']} median {r['median']:.4f} "
                f"spread {r['spread']:.4f} over {len(r['values'])} {r.get('unit', 'seeds')}"
            )
    report = {
        "upstream": upstream_spec,
        "n_layers": upstream.n_layers,
        "dim": upstream.dim,
        "stack": upstream.stack,
        # where step j is centred: j * stride + offset samples at the features' sample rate
        "frame_stride_samples": upstream.frame_stride_samples,
        "frame_offset_samples": upstream.frame_offset_samples,
        "sample_rate": upstream.features.sample_rate,
        "seconds": round(time.perf_counter() - start, 2),
        "tasks": results,
    }
    if out is not None and distributed.is_main():
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RESULTS).write_text(json.dumps(report, indent=1) + "\n")
        plot_layer_weights(results, folder / PLOT, f"{upstream_spec}: learned layer weights")
    return report


def format_table(results_by_upstream: dict) -> str:
    """A Markdown table of run_superb reports {upstream name: report}: a row per upstream, a
    column per task, cells "median (spread)" in percent (accuracy, or PER where lower is
    better)."""
    tasks: list[str] = []
    for report in results_by_upstream.values():
        for t in report["tasks"]:
            if t not in tasks:
                tasks.append(t)
    metric = {}
    for report in results_by_upstream.values():
        for t, r in report["tasks"].items():
            metric.setdefault(t, "PER % (lower is better)" if r["metric"] == "per" else "acc %")
    head = ["upstream", *(f"{t} {metric[t]}" for t in tasks)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, report in results_by_upstream.items():
        cells = [str(name)]
        for t in tasks:
            r = report["tasks"].get(t)
            cells.append("-" if r is None else f"{100 * r['median']:.1f} ({100 * r['spread']:.1f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
