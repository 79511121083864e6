"""`selfsup predict`: label new inputs with a fine-tuned folder (`selfsup finetune` output), one
JSON line per input row, in input order.

Inputs, by the kind of task the folder was fine-tuned for:
- classify, regress: a .txt file (every line is a row, blank lines too: they are the empty
  text), or a CSV/TSV/JSONL file with a text column (`text_column`);
- pair-classify: CSV/TSV/JSONL with `text_column` and `text_pair_column`;
- tag: a .txt file, each line's words split on whitespace (a blank line is a sentence of no
  words), or CSV/TSV/JSONL whose row has a "words" list (JSONL) or a text column, split;
- qa: JSONL (or CSV/TSV) rows with "question" and "context" (and an optional "id"), or a
  SQuAD-format JSON file ({"data": [{"paragraphs": [{"context", "qas"}]}]}).
A missing cell or a JSON null is the empty text. Columns default to those the model was
fine-tuned with (its --text-column / --text-pair-column), else "text" and "text_pair".

Output rows (JSON lines, UTF-8; "line" is the input line of the row, or its position in a JSON
array; SQuAD input has no "line"):
- classify, pair-classify: {"line", "label", "score", "top": [{"label", "score"}, ...]}: the
  softmax probabilities of the `top_k` most probable labels, most probable first ("label" and
  "score" are the first of them); with every label (the default) they sum to 1;
- regress: {"line", "value"};
- tag: {"line", "words", "tags"}, one tag per word; words beyond the model's max_len are cut
  from its input and get null tags (as does a word the tokenizer drops whole, e.g. a lone
  zero-width space);
- qa: {"line", "id", "answer", "start", "end", "score"}: answer == context[start:end] (character
  offsets into the context), score = start logit + end logit of the best span (start <= end, at
  most the fine-tuning's max_answer_len tokens) over all windows of a long context; a context
  with no tokens gives answer "" and nulls.

Truncation: texts longer than the model's max_len tokens are cut (classify/regress/pair) and
counted, as are tag sentences with cut words and QA questions cut to 64 tokens (contexts are
never cut: they are read in overlapping windows). The counts are logged and returned.

The output file is written only once every row is predicted (a temporary file renamed into
place), so bad input or an interruption leaves no half-written file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from selfsup.data.readers import data_suffix, read_lines, read_records, read_text
from selfsup.data.tasks import QAExample, TaggedSentence, TextExample, read_squad
from selfsup.errors import ConfigError
from selfsup.paths import check_out_file

CHUNK_BATCHES = 16  # batches featurised at once: bounds memory, paces the progress lines
MAX_QUERY_LEN = 64  # question tokens kept by finetune.encode_qa
TEXT_FILES = ("", ".txt")
ROW_FILES = (".csv", ".tsv", ".jsonl", ".json")


# --------------------------------------------------------------------------------------------
# Reading inputs
# --------------------------------------------------------------------------------------------


def read_inputs(
    path: str | Path, kind: str, text_column: str = "text", text_pair_column: str = "text_pair"
) -> tuple[list, list[dict]]:
    """(examples, row keys) for a kind of task: TextExample, TaggedSentence or QAExample per
    row, and the keys each output row starts with ({"line": n}, plus {"id"} for qa)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no such input file: {path}")
    suffix = data_suffix(p)
    if kind == "qa" and suffix == ".json" and _is_squad(p):
        examples = read_squad(p)
        return list(examples), [{"id": e.qid} for e in examples]
    if suffix in TEXT_FILES:
        if kind in ("pair-classify", "qa"):
            need = "text_pair" if kind == "pair-classify" else "question and context"
            raise ConfigError(f"a {kind} model needs {need} columns: give a .jsonl/.csv/.tsv file")
        lines = list(read_lines(p))
        rows = [(n, {text_column: line}) for n, line in enumerate(lines, 1)]
    elif suffix in ROW_FILES:
        need = {"qa": ("question", "context"), "pair-classify": (text_column, text_pair_column)}
        require = need.get(kind, () if kind == "tag" else (text_column,))
        rows = list(read_records(p, require=require))
    else:
        raise ConfigError(f"{path}: unsupported file type {suffix!r} (use .txt .csv .tsv .jsonl)")
    if not rows:
        raise ConfigError(f"{path} has no rows")
    examples, keys = [], []
    for n, row in rows:
        where = f"line {n} of {path}"
        if kind == "qa":
            qid = row.get("id")
            examples.append(QAExample(
                "" if qid is None else str(qid), _text(row, "context", where),
                _text(row, "question", where), [],
            ))  # fmt: skip
            keys.append({"line": n, "id": qid})
            continue
        keys.append({"line": n})
        if kind == "tag":
            words = row.get("words")
            if words is None:
                if text_column not in row:
                    raise ConfigError(f"{where} has neither a 'words' list nor {text_column!r}")
                words = _text(row, text_column, where).split()
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise ConfigError(f"{where}: 'words' is not a list of strings")
            examples.append(TaggedSentence(words, []))
        else:
            pair = _text(row, text_pair_column, where) if kind == "pair-classify" else None
            examples.append(TextExample(_text(row, text_column, where), pair))
    return examples, keys


def _is_squad(path: Path) -> bool:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError:
        return False  # JSON lines
    return isinstance(data, dict) and "data" in data


def _text(row: dict, column: str, where: str) -> str:
    value = row.get(column)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {column!r} is {type(value).__name__}, not a string")
    return value


# --------------------------------------------------------------------------------------------
# Predicting
# --------------------------------------------------------------------------------------------


def class_probabilities(
    model, feats, pad_id: int, batch_size: int, bf16: bool = False
) -> list[list[float]]:
    """Softmax probabilities (one list per feature, in feature order) of a classifier."""
    from selfsup.finetuning import eval_batches
    from selfsup.predict import predict_batches

    probs: list = [None] * len(feats)
    batches = eval_batches(feats, batch_size, pad_id, "classify")
    for idx, res in predict_batches(model, batches, bf16=bf16):
        p = torch.softmax(res["logits"].float(), -1).cpu().tolist()  # (B, C)
        for r, i in enumerate(idx):
            probs[i] = p[r]
    return probs


def truncated_texts(tok, examples, feats, max_len: int) -> int:
    """How many of the texts (pairs) were longer than max_len tokens: only features that fill
    max_len exactly can have been cut, and only those are encoded again in full."""
    full = [i for i, ids in enumerate(feats.ids) if len(ids) >= max_len]
    if not full:
        return 0
    tok.tok.no_truncation()
    inputs = [
        examples[i].text if examples[i].text_pair is None
        else (examples[i].text, examples[i].text_pair)
        for i in full
    ]  # fmt: skip
    return sum(len(e.ids) > max_len for e in tok.tok.encode_batch(inputs))


def tagged_words(tok, sentences, max_len: int) -> list[list[int]]:
    """Per sentence, the indices of the words that get a tag, in order: those with a first
    sub-token inside max_len (a word the tokenizer drops whole, such as a lone zero-width
    space, has none, so tags are placed by word index, never by count)."""
    tok.tok.enable_truncation(max_len)
    try:
        enc = tok.tok.encode_batch([s.words for s in sentences], is_pretokenized=True)
    finally:
        tok.tok.no_truncation()
    return [list(dict.fromkeys(w for w in e.word_ids if w is not None)) for e in enc]


def predict_rows(
    model,
    tok,
    config: dict,
    examples: list,
    batch_size: int = 64,
    top_k: int | None = None,
    log: Callable[[str], None] = print,
    progress_every: float = 5.0,
    bf16: bool = False,
) -> tuple[list[dict], dict]:
    """(one output dict per example, in order; counts) with a `load_finetuned` model. Counts:
    rows, max_len, truncated (inputs cut), and for tag cut_words, for qa windows. `bf16`: the
    forwards run under bf16 autocast."""
    from selfsup.finetuning import FinetuneConfig, make_features, predict

    kind, labels = config["kind"], config["labels"]
    if kind == "seq2seq":
        return _seq2seq_rows(model, tok, config, examples, batch_size, bf16)
    ft = config.get("finetune", {})
    cfg = FinetuneConfig("x", "x", "x", "x", doc_stride=ft.get("doc_stride", 128),
                         max_answer_len=ft.get("max_answer_len", 30))  # fmt: skip
    # As `selfsup evaluate`: tags use the whole position table, so fewer words are cut.
    max_len = config["model"]["max_len"] if kind == "tag" else config["max_len"]
    k = len(labels) if labels and top_k is None else min(top_k or 0, len(labels or []))
    chunk = batch_size * CHUNK_BATCHES
    counts = {"rows": len(examples), "max_len": max_len, "truncated": 0}
    if kind == "tag":
        counts["cut_words"] = 0
    if kind == "qa":
        counts["windows"] = 0
    rows: list[dict] = []
    start = last = time.monotonic()
    for c in range(0, len(examples), chunk):
        part = examples[c : c + chunk]
        if kind == "tag":  # a placeholder tag on every word marks the first sub-tokens to read
            part = [TaggedSentence(e.words, [labels[0]] * len(e.words)) for e in part]
        feats = make_features(kind, tok, part, max_len, labels, cfg)
        if kind in ("classify", "pair-classify"):
            counts["truncated"] += truncated_texts(tok, part, feats, max_len)
            for p in class_probabilities(model, feats, tok.pad_id, batch_size, bf16):
                top = sorted(range(len(p)), key=lambda j: -p[j])[:k]
                top = [{"label": labels[j], "score": p[j]} for j in top]
                rows.append({"label": top[0]["label"], "score": top[0]["score"], "top": top})
        elif kind == "regress":
            counts["truncated"] += truncated_texts(tok, part, feats, max_len)
            preds = predict(model, feats, kind, tok.pad_id, batch_size, bf16=bf16)
            rows += [{"value": v} for v in preds]
        elif kind == "tag":
            preds = predict(model, feats, kind, tok.pad_id, batch_size, bf16=bf16)
            starts = tagged_words(tok, part, max_len)
            for e, p, w in zip(part, preds, starts, strict=True):
                tags = [None] * len(e.words)
                for i, t in zip(w, p, strict=True):
                    tags[i] = labels[t]
                rows.append({"words": e.words, "tags": tags})
                cut = len(e.words) - (w[-1] + 1 if w else 0)  # past max_len
                counts["cut_words"] += cut
                counts["truncated"] += cut > 0
        else:
            best = predict(model, feats, kind, tok.pad_id, batch_size, cfg.max_answer_len, bf16)
            counts["windows"] += len(feats)
            questions = tok.encode_plain([e.question for e in part])
            counts["truncated"] += sum(len(q) > MAX_QUERY_LEN for q in questions)
            for i, e in enumerate(part):
                if i in best:
                    s, a, b = best[i]
                    rows.append({"answer": e.context[a:b], "start": a, "end": b, "score": s})
                else:
                    rows.append({"answer": "", "start": None, "end": None, "score": None})
        now = time.monotonic()
        done = c + len(part)
        if now - last >= progress_every and done < len(examples):
            last = now
            log(f"predict: {done:,}/{len(examples):,} rows ({100 * done / len(examples):.0f}%), "
                f"{done / (now - start):,.0f} rows/s")  # fmt: skip
    return rows, counts


def _seq2seq_rows(model, tok, config, examples, batch_size, bf16):
    """A seq2seq folder's rows: {"prediction": the decoded text}, greedy or with the
    fine-tuning's beams."""
    from selfsup.finetune_seq2seq import decode_all, encode_pairs

    max_len, max_target = config["max_len"], config.get("max_target_len", 64)
    cut: dict = {}
    feats = encode_pairs(tok, examples, max_len, max_target, log=lambda _: None, counts=cut)
    beams = config.get("finetune", {}).get("beams", 1)
    preds = decode_all(model, tok, feats, beams, max_target, batch_size, bf16)
    counts = {"rows": len(examples), "max_len": max_len, "truncated": cut["cut_sources"]}
    return [{"prediction": p} for p in preds], counts


def truncation_note(kind: str, counts: dict) -> str:
    """One line saying what was cut (empty when nothing was)."""
    n, t = counts["rows"], counts["truncated"]
    if not t:
        return ""
    if kind == "tag":
        return (f"{t} of {n} sentences longer than {counts['max_len']} tokens: "
                f"{counts['cut_words']} words cut (tagged null)")  # fmt: skip
    if kind == "qa":
        return f"{t} of {n} questions longer than {MAX_QUERY_LEN} tokens were cut"
    return f"{t} of {n} inputs longer than {counts['max_len']} tokens were truncated"


def predict_file(
    model: str,
    input_path: str,
    out_path: str,
    batch_size: int = 64,
    top_k: int | None = None,
    device: str = "auto",
    text_column: str | None = None,
    text_pair_column: str | None = None,
    log: Callable[[str], None] = print,
    progress_every: float = 5.0,
    precision: str = "fp32",
) -> dict:
    """Predict every row of `input_path` with the fine-tuned folder `model`; write JSON lines to
    `out_path` (see the module docstring for inputs and rows). Returns the counts of
    predict_rows plus "kind" and "note" (the truncation line, "" when nothing was cut).
    `precision`: fp32 (the default) | bf16 | auto, of the forwards."""
    from selfsup.checkpoint import atomic_write_text
    from selfsup.device import inference_bf16, resolve_device
    from selfsup.finetuning import json_safe, load_finetuned

    if batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if top_k is not None and top_k < 1:
        raise ConfigError("--top-k must be >= 1")
    out = check_out_file(out_path, "pred.jsonl")
    if out.exists() and Path(input_path).exists() and out.samefile(input_path):
        raise ConfigError("--out is the --input file")
    torch_device = resolve_device(device)
    bf16 = inference_bf16(precision, torch_device)
    net, tok, config = load_finetuned(model)
    kind = config["kind"]
    opts = config.get("finetune", {}).get("options", {})
    text_column = text_column or opts.get("text_column") or "text"
    text_pair_column = text_pair_column or opts.get("text_pair_column") or "text_pair"
    examples, keys = read_inputs(input_path, kind, text_column, text_pair_column)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot write {out_path}: {e.strerror}") from None
    net.to(torch_device)
    log(f"predict: {len(examples):,} rows of {input_path} with a {kind} model "
        f"({config['task']}) on {torch_device}{' in bf16' if bf16 else ''}")  # fmt: skip
    rows, counts = predict_rows(net, tok, config, examples, batch_size, top_k, log,
                                progress_every, bf16)  # fmt: skip
    note = truncation_note(kind, counts)
    if note:
        log(f"predict: {note}")
    text = "".join(
        json.dumps(json_safe({**key, **row}), ensure_ascii=False) + "\n"
        for key, row in zip(keys, rows, strict=True)
    )
    atomic_write_text(out, text)
    return {"kind": kind, **counts, "note": note}
