"""Fine-tuning task data: read GLUE, SICK, CLUE (OCNLI, TNEWS', ChnSentiCorp, CMRC 2018), POS
(CoNLL-U), SQuAD-style QA and generic CSV/TSV/JSONL files into small example records, for
`selfsup finetune --task T --data P`.

    load_task("sst2", "glue/SST-2", "dev")          -> [TextExample(text, None, "1"), ...]
    load_task("pos", "ud-english-ewt", "train")     -> [TaggedSentence(words, tags), ...]
    load_task("squad", "dev-v1.1.json", "dev")      -> [QAExample(qid, context, ...), ...]
    load_task("classify", "reviews.csv", text_column="review", label_column="label")

`path` is a folder (the split's file is found by the task's default names in `TASKS`), a file,
or a Hugging Face `datasets` folder written by `save_to_disk` (GLUE column names, or the generic
`*_column` options). Files are opened, decompressed and parsed by selfsup.data.readers; this
module knows the tasks' layouts. Labels stay strings as written in the file ("0", "entailment");
regression labels are floats. `task_labels` gives the label order a classifier head should use.

Formats and the quirks handled here:
- GLUE TSVs are split on tabs literally, never with CSV quoting: sentences hold unbalanced `"`
  (MRPC, MNLI) that a CSV parser would run across lines. CSV files use normal CSV quoting.
- CoLA: GLUE's train/dev and the raw `in_domain_*.tsv` files have no header (source, label,
  original mark, sentence); GLUE's dev is in-domain + out-of-domain dev (527 + 516 = 1,043).
  test.tsv has a header (index, sentence) and no labels.
- MRPC: GLUE's train.tsv/dev.tsv when present; else the original Microsoft files. GLUE cuts its
  dev (408 pairs) out of msr_paraphrase_train.txt with mrpc_dev_ids.tsv; with that list in the
  folder the same split is rebuilt, without it train is all 4,076 training pairs and dev is
  msr_paraphrase_test.txt (1,725 pairs, the GLUE test pairs with their labels), i.e. the original
  MSRP protocol. The Microsoft files start with a UTF-8 BOM (the reader drops it).
- STS-B: score is a float 0-5. Split "test-labeled" reads the original STS Benchmark
  sts-test file with gold scores (no header: genre, file, year, id, score, s1, s2).
- SST-2: split "test-labeled" reads test-labeled.tsv (GLUE's test is unlabelled).
- MNLI: splits dev_matched / dev_mismatched ("dev" = matched), test_matched / test_mismatched.
- SICK: one file, split column SemEval_set (TRAIN / TRIAL / TEST; TRIAL serves as dev); `sick` is
  the 3-way entailment label, `sick-r` the 1-5 relatedness score.
- ChnSentiCorp (SophonPlus ChnSentiCorp_htl_all.csv, columns label,review): one file with no
  split, so dev is a seeded 10% holdout (`holdout=0.1, seed=0`; `holdout=None` gives all rows).
  The other SophonPlus files read through `classify` with `text_column="review"`; a .zip holding
  one CSV/TSV/JSONL (online_shopping_10_cats.zip) is read as that file, no unzip step needed.
  One review in each of ChnSentiCorp and online_shopping is an empty string; it is kept.
- OCNLI (CLUE; JSON lines sentence1, sentence2, label): train is train.10k.json, or train.3k.json
  with `train_size="3k"` (both official subsets of the 50k train); dev is dev.json; test.json is
  unlabelled. A row labelled "-" had no 3-of-5 majority among its annotators and has no gold
  label: it is dropped from every split and counted in `Examples.skipped` (dev: 50 of 3,000, so
  2,950 are scored, as in the OCNLI paper).
- TNEWS' as released in FewCLUE (JSON lines sentence, label, label_desc, keywords): 5 few-shot
  folds; train / dev are train_{fold}.json / dev_{fold}.json (240 titles each, `fold=0` by
  default, `fold="all"` for the *_few_all.json unions), test is test_public.json (2,010
  labelled, the test FewCLUE reports), test_private is test.json (unlabelled). Labels are the
  ids 100-116 (no 105, 111), written as JSON ints; they stay strings ("100") here.
- CoNLL-U: words are the FORM column; multiword-token lines ("1-2") and empty nodes ("1.1") are
  skipped, so words are syntactic words. Tags are UPOS, or any column with `tagset="xpos"` etc.
  Files not ending in .conllu are read as one "word ... tag" line per token (CoNLL-2003 style).
- QA: SQuAD v1.1 JSON (XQuAD and CMRC 2018 share it). Some CMRC 2018 answer_start values count
  UTF-16 code units (a character outside the BMP before the answer shifts them by one); those are
  repaired. CMRC 2018 dev's second/third answers are free text with answer_start -1. Following
  the SQuAD convention (BERT's run_squad.py), a training question whose first answer is not found
  at its answer_start is skipped and counted in `Examples.skipped` (also logged); evaluation
  splits keep every question, since the official metrics read answer texts only.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfsup.data.readers import (
    data_suffix,
    is_dataset,
    read_lines,
    read_records,
    read_text,
    table_rows,
)
from selfsup.errors import ConfigError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Examples
# --------------------------------------------------------------------------------------------


@dataclass
class TextExample:
    """One sentence or sentence pair; label is a string (classes) or a float (regression)."""

    text: str
    text_pair: str | None = None
    label: str | float | None = None


@dataclass
class TaggedSentence:
    words: list[str]
    tags: list[str]


@dataclass
class QAExample:
    """A SQuAD question; answers are [{"text": str, "answer_start": int}] (char offsets)."""

    qid: str
    context: str
    question: str
    answers: list[dict[str, Any]]
    title: str = ""


class Examples(list):
    """The examples of one split, plus `skipped`: how many were dropped while reading, and
    `skipped_what`: what they were, for a log line ("rows labelled '-' (no gold label)")."""

    def __init__(self, items: Iterable = (), skipped: int = 0, skipped_what: str = ""):
        super().__init__(items)
        self.skipped = skipped
        self.skipped_what = skipped_what


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------

UPOS = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
    "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
)  # fmt: skip
CONLLU_COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")
KINDS = ("classify", "pair-classify", "regress", "tag", "qa", "seq2seq")

Columns = tuple[str | int | None, str | int | None, str | int | None]  # text, text_pair, label


@dataclass(frozen=True)
class Task:
    """How to read one task. `files` maps a split to candidate file names in a folder, tried in
    order: a glob pattern, or a tuple of names read one after the other. `labels` fixes the
    class order (for GLUE, the ids of the HF `glue` datasets); None = from the training data.
    `metric` names the set to report: "accuracy", "mcc", "accuracy_f1" (F1 of label "1"),
    "pearson_spearman", "squad" (EM/F1) or "cmrc2018" (character EM/F1); GLUE tasks are scored
    by selfsup.eval.metrics.glue_metrics(task_name)."""

    kind: str
    metric: str
    labels: tuple[str, ...] | None
    files: dict[str, tuple[str | tuple[str, ...], ...]]
    columns: Columns = ("text", "text_pair", "label")
    raw_columns: Columns | None = None  # the same columns when the file has no header
    hf_columns: Columns | None = None  # names in a `datasets` GLUE export
    options: dict[str, Any] = field(default_factory=dict)  # defaults for load_task options
    # Labels that mark a row without a gold label (OCNLI "-"): dropped, counted in `skipped`.
    no_label: tuple[str, ...] = ()


def _tables() -> dict[str, tuple[str, ...]]:
    exts = ("tsv", "csv", "jsonl", "json", "zip")
    names = {"train": ("train",), "dev": ("dev", "validation", "valid"), "test": ("test",)}
    return {s: tuple(f"{n}.{e}" for n in ns for e in exts) for s, ns in names.items()}


def _glue(
    kind: str,
    metric: str,
    labels: tuple[str, ...] | None,
    columns: Columns,
    hf_columns: Columns,
    **files: tuple,
) -> Task:
    splits = {"train": ("train.tsv",), "dev": ("dev.tsv",), "test": ("test.tsv",)}
    return Task(kind, metric, labels, {**splits, **files}, columns, None, hf_columns)


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_CONLLU = {
    s: (f"*-ud-{s}.conllu", f"{s}.conllu", f"*{s}*.conllu") for s in ("train", "dev", "test")
}
_SQUAD_FILES = {"train": ("train-v1.1.json",), "dev": ("dev-v1.1.json",)}
_NLI3 = ("entailment", "neutral", "contradiction")
# TNEWS' class ids as its files write them (label_index2en2zh.json): 15 classes, no 105 or 111.
TNEWS_LABELS = tuple(str(i) for i in range(100, 117) if i not in (105, 111))
# Options whose value picks a file name: accepted values -> the part of the name they give.
FILE_CHOICES = {
    "fold": {**{str(k): str(k) for k in range(5)}, "all": "few_all"},
    "train_size": {"10k": "10k", "3k": "3k"},
}
_TABLE_OPTIONS = {"text_column", "text_pair_column", "label_column", "split_column", "holdout"}
_OPTIONS = {
    "classify": _TABLE_OPTIONS | {"seed"},
    "pair-classify": _TABLE_OPTIONS | {"seed"},
    "regress": _TABLE_OPTIONS | {"seed"},
    "tag": {"tagset"},
    "qa": {"skip_misaligned", "lang"},
    "seq2seq": _TABLE_OPTIONS | {"seed"},
}

TASKS: dict[str, Task] = {
    "cola": Task(
        "classify",
        "mcc",
        _BINARY,
        {
            "train": ("train.tsv", "raw/in_domain_train.tsv", "in_domain_train.tsv"),
            "dev": (
                "dev.tsv",
                ("raw/in_domain_dev.tsv", "raw/out_of_domain_dev.tsv"),
                ("in_domain_dev.tsv", "out_of_domain_dev.tsv"),
            ),
            "dev_in_domain": ("raw/in_domain_dev.tsv", "in_domain_dev.tsv"),
            "dev_out_of_domain": ("raw/out_of_domain_dev.tsv", "out_of_domain_dev.tsv"),
            "test": ("test.tsv",),
        },
        ("sentence", None, "label"),
        (3, None, 1),
        ("sentence", None, "label"),
    ),
    "sst2": _glue(
        "classify",
        "accuracy",
        _BINARY,
        ("sentence", None, "label"),
        ("sentence", None, "label"),
        **{"test-labeled": ("test-labeled.tsv",)},
    ),
    "mrpc": Task(
        "pair-classify",
        "accuracy_f1",
        _BINARY,
        {
            "train": ("train.tsv", "msr_paraphrase_train.txt"),
            "dev": ("dev.tsv", "msr_paraphrase_test.txt"),
            "test": ("test.tsv", "msr_paraphrase_test.txt"),
        },
        ("#1 String", "#2 String", "Quality"),
        None,
        ("sentence1", "sentence2", "label"),
    ),
    "qqp": _glue(
        "pair-classify",
        "accuracy_f1",
        _BINARY,
        ("question1", "question2", "is_duplicate"),
        ("question1", "question2", "label"),
    ),
    "stsb": Task(
        "regress",
        "pearson_spearman",
        None,
        {
            "train": ("train.tsv",),
            "dev": ("dev.tsv",),
            "test": ("test.tsv",),
            "test-labeled": ("original-sts-test-labeled.tsv",),
        },
        ("sentence1", "sentence2", "score"),
        (5, 6, 4),
        ("sentence1", "sentence2", "label"),
    ),
    "mnli": _glue(
        "pair-classify",
        "accuracy",
        _NLI3,
        ("sentence1", "sentence2", "gold_label"),
        ("premise", "hypothesis", "label"),
        dev=("dev_matched.tsv",),
        dev_matched=("dev_matched.tsv",),
        dev_mismatched=("dev_mismatched.tsv",),
        test=("test_matched.tsv",),
        test_matched=("test_matched.tsv",),
        test_mismatched=("test_mismatched.tsv",),
    ),
    "qnli": _glue(
        "pair-classify",
        "accuracy",
        _NLI2,
        ("question", "sentence", "label"),
        ("question", "sentence", "label"),
    ),
    "rte": _glue(
        "pair-classify",
        "accuracy",
        _NLI2,
        ("sentence1", "sentence2", "label"),
        ("sentence1", "sentence2", "label"),
    ),
    "wnli": _glue(
        "pair-classify",
        "accuracy",
        _BINARY,
        ("sentence1", "sentence2", "label"),
        ("sentence1", "sentence2", "label"),
    ),
    "sick": Task(
        "pair-classify",
        "accuracy",
        ("ENTAILMENT", "NEUTRAL", "CONTRADICTION"),
        {s: ("SICK.txt",) for s in ("train", "dev", "test")},
        ("sentence_A", "sentence_B", "entailment_label"),
        options={"split_column": "SemEval_set"},
    ),
    "sick-r": Task(
        "regress",
        "pearson_spearman",
        None,
        {s: ("SICK.txt",) for s in ("train", "dev", "test")},
        ("sentence_A", "sentence_B", "relatedness_score"),
        options={"split_column": "SemEval_set"},
    ),
    "chnsenticorp": Task(
        "classify",
        "accuracy",
        _BINARY,
        {s: ("ChnSentiCorp_htl_all.csv",) for s in ("train", "dev")},
        ("review", None, "label"),
        options={"holdout": 0.1, "seed": 0},
    ),
    "ocnli": Task(
        "pair-classify",
        "accuracy",
        _NLI3,
        {"train": ("train.{train_size}.json",), "dev": ("dev.json",), "test": ("test.json",)},
        ("sentence1", "sentence2", "label"),
        options={"train_size": "10k"},
        no_label=("-",),
    ),
    "tnews": Task(
        "classify",
        "accuracy",
        TNEWS_LABELS,
        {
            "train": ("train_{fold}.json",),
            "dev": ("dev_{fold}.json",),
            "test": ("test_public.json",),
            "test_public": ("test_public.json",),
            "test_private": ("test.json",),
        },
        ("sentence", None, "label"),
        options={"fold": 0},
    ),
    "pos": Task("tag", "accuracy", UPOS, _CONLLU, options={"tagset": "upos"}),
    "squad": Task("qa", "squad", None, _SQUAD_FILES),
    "xquad": Task(
        "qa",
        "squad",
        None,
        {s: ("xquad.{lang}.json",) for s in ("dev", "test")},
        options={"lang": "en"},
    ),
    "cmrc2018": Task(
        "qa",
        "cmrc2018",
        None,
        {s: (f"cmrc2018_{s}.json",) for s in ("train", "dev", "test", "trial")},
    ),
    # Generic readers: any CSV/TSV/JSONL (or .zip of one), CoNLL-U or SQuAD-format file.
    "classify": Task("classify", "accuracy", None, _tables(), ("text", None, "label")),
    "pair-classify": Task("pair-classify", "accuracy", None, _tables()),
    "regress": Task("regress", "pearson_spearman", None, _tables(), ("text", None, "label")),
    "tag": Task("tag", "accuracy", None, _CONLLU, options={"tagset": "upos"}),
    "qa": Task("qa", "squad", None, _SQUAD_FILES),
    # source text -> target text (the label column holds the target; --source-column and
    # --target-column name them)
    "seq2seq": Task("seq2seq", "rouge", None, _tables(), ("source", None, "target")),
}

# Our split names -> split names in a `datasets` DatasetDict.
HF_SPLITS = {
    "dev": ("validation", "validation_matched", "dev"),
    "dev_matched": ("validation_matched",),
    "dev_mismatched": ("validation_mismatched",),
    "test": ("test", "test_matched"),
}
# Values of a split column that mean each split (compared case-insensitively).
SPLIT_VALUES = {
    "train": ("train",),
    "dev": ("dev", "trial", "validation", "valid"),
    "test": ("test",),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_task(task: str, path: str | Path, split: str = "train", **options: Any) -> Examples:
    """Read one split of a task from a folder, a file or a `datasets` save_to_disk folder.

    Options (defaults from `TASKS[task].options`):
      text_column, text_pair_column, label_column: column names (or 0-based indices for a CSV/TSV
        without header) for classify / pair-classify / regress;
      split_column: keep rows whose value there names `split` (dev = dev/trial/validation);
      holdout, seed: for a file without splits, dev = a seeded `holdout` share of the rows and
        train = the rest;
      tagset: CoNLL-U column for tags ("upos", "xpos", ...);
      fold: tnews, the FewCLUE fold 0-4 (or "all") for train and dev;
      train_size: ocnli, "10k" or "3k" (the training subset);
      skip_misaligned: QA, drop questions whose first answer is not at its answer_start
        (default: on the train split only); lang: XQuAD language ("en", "zh", ...).
    """
    spec = get_task(task)
    allowed = _OPTIONS[spec.kind] | set(spec.options)
    unknown = set(options) - allowed
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(sorted(unknown))} for task {task!r}; "
            f"it takes: {', '.join(sorted(allowed))}"
        )
    opts = {**spec.options, **options}
    for name, choices in FILE_CHOICES.items():
        if name in opts:
            if str(opts[name]) not in choices:
                raise ConfigError(
                    f"{name} {opts[name]!r} for task {task!r} is not one of {', '.join(choices)}"
                )
            opts[name] = choices[str(opts[name])]
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"data path {path} does not exist")
    if is_dataset(path):
        if spec.kind not in ("classify", "pair-classify", "regress"):
            raise ConfigError(f"task {task!r} cannot read a `datasets` folder ({path})")
        records = _hf_records(path, split)
        columns = _columns(spec, spec.hf_columns or spec.columns, opts)
        return _text_examples(records, columns, spec, split, opts, str(path))

    if path.is_dir() and task == "mrpc" and split in ("train", "dev"):
        glue_split = _mrpc_glue_split(path, split)
        if glue_split is not None:
            return glue_split
    files = _find_files(task, spec, path, split, opts) if path.is_dir() else [path]

    if spec.kind == "qa":
        skip = opts.get("skip_misaligned")
        skip = split == "train" if skip is None else bool(skip)
        out = Examples()
        for f in files:
            part = read_squad(f, skip_misaligned=skip)
            out.extend(part)
            out.skipped += part.skipped
        return out
    if spec.kind == "tag":
        return Examples(ex for f in files for ex in read_tagged(f, opts.get("tagset", "upos")))
    out, test = Examples(), split.startswith("test")  # test files may come without labels
    for f in files:
        columns = _columns(spec, spec.columns, opts)
        records = _table_records(
            f, columns, spec.raw_columns, opts.get("split_column"), need_label=not test
        )
        part = _text_examples(records, columns, spec, split, opts, str(f))
        out.extend(part)
        out.skipped += part.skipped
        out.skipped_what = part.skipped_what or out.skipped_what
    if out.skipped:
        log.info("%s %s: skipped %d %s", task, split, out.skipped, out.skipped_what)
    return out


def task_labels(task: str, train: Sequence, **options: Any) -> list[str] | None:
    """The class (or tag) order for a head: the task's fixed list, else sorted from `train`;
    None for regression and QA."""
    spec = get_task(task)
    if spec.kind in ("regress", "qa", "seq2seq"):
        return None
    tagset = {**spec.options, **options}.get("tagset", "upos")
    if spec.labels is not None and (spec.kind != "tag" or tagset == "upos"):
        return list(spec.labels)
    return label_vocab(train)


def label_vocab(examples: Iterable[TextExample | TaggedSentence]) -> list[str]:
    """Sorted distinct labels (or tags) of `examples`; numeric labels sort as numbers."""
    labels = {lab for ex in examples for lab in _labels_of(ex) if lab is not None}
    if any(isinstance(lab, float) for lab in labels):
        raise ConfigError("regression targets (floats) have no label vocabulary")
    if all(lab.lstrip("-").isdigit() for lab in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def check_labels(
    train_labels: Iterable[str], examples: Iterable[TextExample | TaggedSentence]
) -> None:
    """Raise if `examples` (a dev/test split) hold a label or tag that training never saw."""
    known = set(train_labels)
    unseen = Counter(
        lab for ex in examples for lab in _labels_of(ex) if lab is not None and lab not in known
    )
    unseen = Counter({k: v for k, v in unseen.items() if not isinstance(k, float)})
    if unseen:
        shown = ", ".join(f"{lab!r} ({n}x)" for lab, n in unseen.most_common(5))
        raise ConfigError(
            f"evaluation data has label(s) that training never saw: {shown}; "
            f"training labels are {', '.join(sorted(map(str, known)))}"
        )


def _labels_of(ex: TextExample | TaggedSentence) -> list:
    return ex.tags if isinstance(ex, TaggedSentence) else [ex.label]


# --------------------------------------------------------------------------------------------
# Finding files
# --------------------------------------------------------------------------------------------


def _find_files(task: str, spec: Task, folder: Path, split: str, opts: dict) -> list[Path]:
    if split not in spec.files:
        raise ConfigError(
            f"task {task!r} has no split {split!r} in a folder; "
            f"its splits are {', '.join(spec.files)}"
        )
    looked = []
    for cand in spec.files[split]:
        names = cand if isinstance(cand, tuple) else (cand,)
        names = tuple(n.format(**opts) if "{" in n else n for n in names)
        looked.append(" + ".join(names))
        found = [_match(folder, n) for n in names]
        if all(found):
            return [f for group in found for f in group]
    have = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
    raise ConfigError(
        f"no {split} file for task {task!r} in {folder} (looked for {'; '.join(looked)}); "
        f"it holds: {have}"
    )


def _match(folder: Path, pattern: str) -> list[Path]:
    if not any(c in pattern for c in "*?["):
        return [folder / pattern] if (folder / pattern).is_file() else []
    hits = sorted(p for p in folder.glob(pattern) if p.is_file())
    if len(hits) > 1:
        names = ", ".join(p.name for p in hits)
        raise ConfigError(f"several files in {folder} match {pattern!r}: {names}; pass one file")
    return hits


def _mrpc_glue_split(folder: Path, split: str) -> Examples | None:
    """GLUE's MRPC train/dev: msr_paraphrase_train.txt cut by mrpc_dev_ids.tsv (id1<TAB>id2)."""
    ids_file, msr = folder / "mrpc_dev_ids.tsv", folder / "msr_paraphrase_train.txt"
    if (folder / f"{split}.tsv").exists() or not (ids_file.is_file() and msr.is_file()):
        return None
    dev_ids = {tuple(line.split("\t")[:2]) for line in read_lines(ids_file) if line.strip()}
    spec = TASKS["mrpc"]
    records = _table_records(msr, spec.columns, None, None, extra=("#1 ID", "#2 ID"))
    keep = [r for r in records if ((r["#1 ID"], r["#2 ID"]) in dev_ids) == (split == "dev")]
    return _text_examples(keep, spec.columns, spec, split, {}, str(msr))


# --------------------------------------------------------------------------------------------
# Tables: CSV / TSV / JSONL (any of them compressed or zipped) / datasets folders
# --------------------------------------------------------------------------------------------


def _columns(spec: Task, default: Columns, opts: dict) -> Columns:
    if spec.kind == "classify" and opts.get("text_pair_column") is not None:
        raise ConfigError("classify reads one text column; use pair-classify for text_pair_column")
    keys = ("text_column", "text_pair_column", "label_column")
    return tuple(opts.get(k, d) for k, d in zip(keys, default, strict=True))


def _table_records(
    path: Path,
    columns: Columns,
    raw_columns: Columns | None,
    split_column: str | int | None,
    extra: tuple[str, ...] = (),
    need_label: bool = True,
) -> list[dict]:
    """Rows of `path` as dicts holding the wanted columns (plus "_line", the file line).
    Without `need_label` a missing label column is allowed (an unlabelled test file)."""
    suffix = data_suffix(path)
    wanted = [c for c in (*columns, split_column, *extra) if c is not None]
    if suffix in (".jsonl", ".json"):
        return _json_records(path, wanted, None if need_label else columns[2])
    if suffix == ".csv":
        rows = list(table_rows(path, ",", quoted=True))
    elif suffix in (".tsv", ".txt"):
        # Literal tab split: GLUE sentences contain stray quotes that CSV quoting would mangle.
        rows = list(table_rows(path, "\t", quoted=False))
    else:
        raise ConfigError(f"{path}: unsupported file type {suffix!r} (use .csv, .tsv or .jsonl)")
    if not rows:
        raise ConfigError(f"{path} is empty")

    if all(isinstance(c, int) for c in wanted):
        header, body, names = None, rows, wanted
    elif any(isinstance(c, int) for c in wanted):
        raise ConfigError(f"columns for {path} mix names and indices: {wanted}")
    elif raw_columns is not None and columns[0] not in rows[0][1]:
        # A file without header (CoLA train/dev, original STS test): read by position.
        header, body = None, rows
        wanted = [c for c in raw_columns if c is not None]
        names = [c for c in columns if c is not None]
    else:
        header, body, names = [h.strip() for h in rows[0][1]], rows[1:], wanted
    if not body:
        raise ConfigError(f"{path} has a header but no rows")

    index = {}
    for name, col in zip(names, wanted, strict=True):
        if header is None:
            index[name] = col
        elif col in header:
            index[name] = header.index(col)
        elif need_label or col != columns[2]:
            raise ConfigError(f"{path} has no column {col!r}; its columns are: {', '.join(header)}")
    need = max(index.values()) + 1
    out = []
    for line, row in body:
        if len(row) < need:
            raise ConfigError(
                f"line {line} of {path} has {len(row)} fields, expected at least {need}"
            )
        out.append({"_line": line, **{name: row[i] for name, i in index.items()}})
    return out


def _json_records(path: Path, wanted: list, optional: Any) -> list[dict]:
    if any(isinstance(c, int) for c in wanted):
        raise ConfigError(f"{path} is JSON: name its columns, not positions")
    required = [c for c in wanted if c != optional]
    out = [
        {"_line": line, **{c: row[c] for c in wanted if c in row}}
        for line, row in read_records(path, require=required)
    ]
    if not out:
        raise ConfigError(f"{path} is empty")
    return out


def _hf_records(path: Path, split: str) -> list[dict]:
    rows = read_records(path, split=split, split_aliases=HF_SPLITS.get(split, ()))
    out = [{"_line": line, **row} for line, row in rows]
    if not out:
        raise ConfigError(f"{path} ({split}) is empty")
    return out


def _text_examples(
    records: list[dict],
    columns: Columns,
    spec: Task,
    split: str,
    opts: dict,
    where: str,
) -> Examples:
    text_col, pair_col, label_col = columns
    if spec.kind == "pair-classify" or (spec.kind == "regress" and pair_col is not None):
        if pair_col is None:
            raise ConfigError(f"task needs text_pair_column for {where}")
    else:
        pair_col = None
    if records and text_col not in records[0]:
        have = ", ".join(str(k) for k in records[0] if k != "_line")
        raise ConfigError(f"{where} has no column {text_col!r}; its columns are: {have}")
    if pair_col is not None and records and pair_col not in records[0]:
        have = ", ".join(str(k) for k in records[0] if k != "_line")
        raise ConfigError(f"{where} has no column {pair_col!r}; its columns are: {have}")

    split_col = opts.get("split_column")
    if split_col is not None:
        values = SPLIT_VALUES.get(split, (split,))
        records = [r for r in records if str(r[split_col]).strip().lower() in values]
        if not records:
            raise ConfigError(f"{where} has no rows whose {split_col!r} names split {split!r}")
    holdout = opts.get("holdout")
    if holdout is not None:
        records = _holdout(records, split, float(holdout), int(opts.get("seed", 0)), where)

    unlabelled = split.startswith("test")
    out = Examples()
    for r in records:
        if spec.no_label and str(r.get(label_col)).strip() in spec.no_label:
            out.skipped += 1
            out.skipped_what = _no_label_what(spec)
            continue
        label = _label(r.get(label_col), spec, r["_line"], where)
        if label is None and not unlabelled:
            if label_col not in r:
                have = ", ".join(str(k) for k in records[0] if k != "_line")
                raise ConfigError(f"{where} has no column {label_col!r}; its columns are: {have}")
            what = "target" if spec.kind == "seq2seq" else "label"
            raise ConfigError(f"row {r['_line']} of {where} has no {what} in {label_col!r}")
        pair = None if pair_col is None else str(r[pair_col])
        out.append(TextExample(str(r[text_col]), pair, label))
    return out


def _no_label_what(spec: Task) -> str:
    return f"rows labelled {' or '.join(map(repr, spec.no_label))} (no gold label)"


def _label(value: Any, spec: Task, line: int, where: str) -> str | float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if spec.kind == "seq2seq":  # a text: kept whole (an empty one is no target)
        return str(value)
    if spec.kind == "regress":
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"row {line} of {where}: target {value!r} is not a number") from None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:  # HF GLUE test splits mark missing labels with -1
            return None
        if spec.labels is not None and str(value) in spec.labels:  # TNEWS' 102 is label "102"
            return str(value)
        if spec.labels is not None:  # HF ClassLabel id -> the label as GLUE's TSVs write it
            if value >= len(spec.labels):
                raise ConfigError(f"row {line} of {where}: label id {value} is out of range")
            return spec.labels[value]
    label = str(value).strip()
    if spec.labels is not None and label not in spec.labels:
        raise ConfigError(
            f"row {line} of {where}: label {label!r} is not one of {', '.join(spec.labels)}"
        )
    return label


def _holdout(records: list, split: str, share: float, seed: int, where: str) -> list:
    if not 0.0 < share < 1.0:
        raise ConfigError(f"holdout must be in (0, 1), got {share}")
    if split not in ("train", "dev"):
        raise ConfigError(f"{where} has no {split} split; with holdout only train and dev exist")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = set(order[: round(share * len(records))])
    return [r for i, r in enumerate(records) if (i in held) == (split == "dev")]


# --------------------------------------------------------------------------------------------
# Tagging: CoNLL-U and "word ... tag" lines
# --------------------------------------------------------------------------------------------


def read_tagged(path: str | Path, tagset: str = "upos") -> list[TaggedSentence]:
    """Sentences of a .conllu file (tags from column `tagset`) or of a file with one
    "word ... tag" line per token and blank lines between sentences."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data file {path} does not exist")
    if path.suffix.lower() == ".conllu":
        return read_conllu(path, tagset)
    sents, words, tags = [], [], []
    for i, line in enumerate(read_lines(path), 1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                sents.append(TaggedSentence(words, tags))
                words, tags = [], []
            continue
        if len(fields) < 2:
            raise ConfigError(f"line {i} of {path} should be 'word tag', got {line!r}")
        words.append(fields[0])
        tags.append(fields[-1])
    if words:
        sents.append(TaggedSentence(words, tags))
    if not sents:
        raise ConfigError(f"{path} is empty")
    return sents


def read_conllu(path: str | Path, tagset: str = "upos") -> list[TaggedSentence]:
    """Words (FORM) and tags of every sentence; multiword tokens and empty nodes skipped."""
    path = Path(path)
    if tagset not in CONLLU_COLUMNS[2:]:
        raise ConfigError(
            f"tagset {tagset!r} is not a CoNLL-U column; use one of {', '.join(CONLLU_COLUMNS[2:])}"
        )
    col = CONLLU_COLUMNS.index(tagset)
    sents, words, tags = [], [], []
    for i, line in enumerate(read_lines(path), 1):
        if not line.strip():
            if words:
                sents.append(TaggedSentence(words, tags))
                words, tags = [], []
            continue
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            raise ConfigError(f"line {i} of {path} has {len(fields)} fields, CoNLL-U has 10")
        if "-" in fields[0] or "." in fields[0]:  # multiword token "1-2" / empty node "1.1"
            continue
        words.append(fields[1])
        tags.append(fields[col])
    if words:
        sents.append(TaggedSentence(words, tags))
    if not sents:
        raise ConfigError(f"{path} is empty")
    if all(t == "_" for s in sents for t in s.tags):
        raise ConfigError(f"{path} has no {tagset.upper()} tags ('_' everywhere)")
    return sents


# --------------------------------------------------------------------------------------------
# QA: SQuAD v1.1 JSON (XQuAD, CMRC 2018)
# --------------------------------------------------------------------------------------------


def read_squad(path: str | Path, skip_misaligned: bool = False) -> Examples:
    """Questions of a SQuAD-format file. With `skip_misaligned`, a question whose first answer
    is not at its answer_start (or that has no answer) is dropped and counted in `.skipped`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data file {path} does not exist")
    text = read_text(path)
    if not text.strip():
        raise ConfigError(f"{path} is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ConfigError(f"{path} is not SQuAD-format JSON (no top-level 'data' list)")
    out, repaired, misaligned = Examples(), 0, 0
    for article in data["data"]:
        for para in article["paragraphs"]:
            context = para["context"]
            for qa in para["qas"]:
                answers, ok = [], []
                for a in qa.get("answers", []):
                    start, found, fixed = _align(context, a["text"], int(a["answer_start"]))
                    answers.append({"text": a["text"], "answer_start": start})
                    ok.append(found)
                    repaired += fixed
                first_ok = bool(ok) and ok[0]
                misaligned += not first_ok
                if skip_misaligned and not first_ok:
                    out.skipped += 1
                    continue
                out.append(
                    QAExample(
                        str(qa["id"]), context, qa["question"], answers, article.get("title", "")
                    )
                )
    if not out:
        raise ConfigError(f"{path} has no usable questions")
    if repaired:
        log.info("%s: %d answer_start values counted UTF-16 units; repaired", path, repaired)
    if out.skipped:
        log.warning(
            "%s: skipped %d questions whose answer is not found at answer_start", path, out.skipped
        )
    elif misaligned:
        log.info("%s: %d questions' first answer is not at answer_start (kept)", path, misaligned)
    return out


def _align(context: str, answer: str, start: int) -> tuple[int, bool, bool]:
    """(start, found, repaired): `start` as a Python index when the file counted UTF-16 units."""
    if start >= 0 and context[start : start + len(answer)] == answer:
        return start, True, False
    if start > 0:
        units = context.encode("utf-16-le")[: 2 * start]
        fixed = len(units.decode("utf-16-le", errors="ignore"))
        if fixed != start and context[fixed : fixed + len(answer)] == answer:
            return fixed, True, True
    return start, False, False
