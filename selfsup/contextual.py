"""Contextual embeddings of one word across sentences (`selfsup contextual MODEL --word bank
--input sentences.txt`): BERT gives the same word a different vector in each context (Devlin
et al., arXiv:1810.04805; Ethayarajh, arXiv:1909.00512, measures how much), so "bank" beside a
river and "bank" holding money, or 苹果 the fruit and 苹果 the phone maker, should sit apart.

Matching is by whole words as the model's tokenizer cuts them (its normalizer, so case follows
the tokenizer: an uncased model matches "Bank" for "bank"; its pre-tokenizer, so punctuation
splits and every CJK character is a word of its own: 苹果 is the two words 苹 果, matched as a
run). `--word` may hold several words ("river bank"): they must occur in a row. The word's
vector in one occurrence is the mean of the hidden states of its sub-tokens (its WordPieces,
every piece of every word of the run) at the chosen layer (0: the embeddings, -1: the last).
Every occurrence is a row: a sentence holding the word twice gives two.

Input: one sentence a line (blank lines skipped), or `label<TAB>sentence` lines (every line
then has a label; a first line `label<TAB>sentence` or `label<TAB>text` is a header). With
labels, the summary says how much more alike the occurrences of one label are than those of
different labels.

Output folder (written whole or not at all): similarity.png (the cosine-similarity heatmap,
rows labelled by a shortened sentence), vectors.npy (N, D) float32, similarity.npy (N, N), and
occurrences.json (each occurrence: its sentence, line, label, pieces and nearest neighbours).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from selfsup.checkpoint import temp_folder
from selfsup.data.readers import read_lines
from selfsup.data.tokenizer import Tokenizer
from selfsup.embed import length_batches
from selfsup.errors import ConfigError
from selfsup.models import load_model
from selfsup.paths import check_out_folder
from selfsup.predict import predict_batches
from selfsup.text_plots import similarity_heatmap

BATCH_SIZE = 32
HEADERS = ({"label", "sentence"}, {"label", "text"})
LABEL_CHARS = 44  # characters of a sentence shown as a heatmap row label


@dataclass
class Occurrence:
    """One occurrence of the word: sentence `index` (0-based among the input's sentences),
    `positions` its sub-tokens in the model input ([CLS] = 0), `chars` its span in the
    sentence."""

    index: int
    nth: int  # 1 for the first occurrence in its sentence, 2 for the second, ...
    positions: list[int]
    chars: tuple[int, int]


# --------------------------------------------------------------------------------------------
# reading


def read_sentences(path: str | os.PathLike) -> tuple[list[str], list[str] | None, list[int]]:
    """(sentences, labels or None, line numbers) of a file of one sentence a line or of
    `label<TAB>sentence` lines; blank lines skipped."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no such input file: {path}")
    rows = [(n, line.strip()) for n, line in enumerate(read_lines(p), 1) if line.strip()]
    if not rows:
        raise ConfigError(f"{path} has no sentences")
    tabbed = ["\t" in line for _, line in rows]
    if any(tabbed) and not all(tabbed):
        n = rows[tabbed.index(not tabbed[0])][0]
        raise ConfigError(
            f"line {n} of {path}: some lines are label<TAB>sentence and others not; use one form"
        )
    if not tabbed[0]:
        return [s for _, s in rows], None, [n for n, _ in rows]
    pairs = [(n, *(x.strip() for x in line.split("\t", 1))) for n, line in rows]
    if {pairs[0][1].lower(), pairs[0][2].lower()} in HEADERS:
        pairs = pairs[1:]
    if not pairs:
        raise ConfigError(f"{path} has a header and no sentences")
    return [s for _, _, s in pairs], [lab for _, lab, _ in pairs], [n for n, _, _ in pairs]


# --------------------------------------------------------------------------------------------
# finding the word


def _normalize(tok: Tokenizer, text: str) -> str:
    norm = tok.tok.normalizer
    return (norm.normalize_str(text) if norm is not None else text).strip()


def query_words(tok: Tokenizer, word: str) -> list[str]:
    """The words of `word` as the tokenizer's normalizer and pre-tokenizer cut them."""
    text = _normalize(tok, word)
    pre = tok.tok.pre_tokenizer
    words = [w for w, _ in pre.pre_tokenize_str(text)] if pre is not None else text.split()
    if not words:
        raise ConfigError(f"--word {word!r} holds no word")
    return words


def find_occurrences(
    tok: Tokenizer, sentences: list[str], word: str, max_len: int
) -> tuple[list[list[int]], list[Occurrence], int]:
    """The model inputs ([CLS] pieces [SEP], at most max_len), every whole-word occurrence of
    `word`, and how many occurrences were cut off by max_len (left out)."""
    query = query_words(tok, word)
    k = len(query)
    inputs, found, cut = [], [], 0
    encodings = tok.tok.encode_batch(sentences, add_special_tokens=False)  # with offsets
    for i, (sentence, enc) in enumerate(zip(sentences, encodings, strict=True)):
        inputs.append([tok.cls_id, *enc.ids[: max_len - 2], tok.sep_id])
        spans: dict[int, list[int]] = {}  # word -> its tokens
        for t, w in enumerate(enc.word_ids):
            if w is not None:
                spans.setdefault(w, []).append(t)
        order = sorted(spans)
        # each word's text, normalised as the query was (offsets point into the raw sentence)
        bounds = [(enc.offsets[spans[w][0]][0], enc.offsets[spans[w][-1]][1]) for w in order]
        texts = [_normalize(tok, sentence[a:b]) for a, b in bounds]
        nth = 0
        for j in range(len(order) - k + 1):
            if texts[j : j + k] != query:
                continue
            tokens = [t for w in order[j : j + k] for t in spans[w]]
            if tokens[-1] >= max_len - 2:
                cut += 1
                continue
            nth += 1
            chars = (enc.offsets[tokens[0]][0], enc.offsets[tokens[-1]][1])
            found.append(Occurrence(i, nth, [t + 1 for t in tokens], chars))  # +1: [CLS]
    return inputs, found, cut


# --------------------------------------------------------------------------------------------
# vectors


def contextual_vectors(
    encoder: torch.nn.Module,
    inputs: list[list[int]],
    occurrences: list[Occurrence],
    layer: int = -1,
    batch_size: int = BATCH_SIZE,
) -> np.ndarray:
    """(N, D) float32: for each occurrence, the mean over its sub-tokens of the hidden states
    at `layer` (0: embeddings, 1..L the layers, -1 the last) of its sentence, each sentence
    run alone (sentences batched only with others of their length: no padding)."""
    wanted = sorted({o.index for o in occurrences})
    lengths = np.array([len(inputs[i]) for i in wanted], dtype=np.int64)
    groups = [[wanted[g] for g in idx] for idx in length_batches(lengths, batch_size)]
    batches = ((idx, torch.tensor([inputs[i] for i in idx])) for idx in groups)  # (B, T)

    def forward(input_ids: torch.Tensor) -> torch.Tensor:
        return encoder(input_ids, return_all=True)["all_hidden"][layer].float().cpu()  # (B,T,D)

    states: dict[int, torch.Tensor] = {}
    for idx, hidden in predict_batches(encoder, batches, forward):
        for row, i in enumerate(idx):
            states[i] = hidden[row]
    vecs = [states[o.index][o.positions].mean(0) for o in occurrences]  # (D,) each
    return torch.stack(vecs).numpy().astype(np.float32, copy=False)


def count_layers(encoder: torch.nn.Module, tok: Tokenizer) -> int:
    """The encoder's layers, L: its "all_hidden" holds L + 1 states (the embeddings first)."""
    ids = torch.tensor([[tok.cls_id, tok.sep_id]])

    def forward(x: torch.Tensor) -> int:
        return len(encoder(x, return_all=True)["all_hidden"])

    ((_, n),) = predict_batches(encoder, [(None, ids)], forward)
    return n - 1


def cosine_matrix(x: np.ndarray) -> np.ndarray:
    """(N, N) cosine similarities of the rows of x (a zero row: similarity 0)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norms == 0, 1.0, norms)
    return (unit @ unit.T).astype(np.float32)


def label_similarity(sim: np.ndarray, labels: list[str]) -> dict:
    """Mean cosine similarity over pairs of distinct occurrences with the same label
    ("within") and with different labels ("across"), per label, and how many occurrences have
    a nearest neighbour (another occurrence) of their own label."""
    lab = np.array(labels)
    n = len(lab)
    same = lab[:, None] == lab[None, :]
    off = ~np.eye(n, dtype=bool)
    within = sim[same & off]
    across = sim[~same]
    per = {}
    for name in sorted(set(labels)):
        m = lab == name
        block = sim[np.ix_(m, m)][~np.eye(int(m.sum()), dtype=bool)]
        per[name] = {"count": int(m.sum()),
                     "within": round(float(block.mean()), 4) if block.size else None}  # fmt: skip
    nearest = np.where(off, sim, -np.inf).argmax(1) if n > 1 else np.zeros(n, dtype=int)
    result = {
        "within": round(float(within.mean()), 4) if within.size else None,
        "across": round(float(across.mean()), 4) if across.size else None,
        "by_label": per,
        "nearest_same_label": int((lab[nearest] == lab).sum()) if n > 1 else 0,
        "occurrences": n,
    }
    if result["within"] is not None and result["across"] is not None:
        result["gap"] = round(result["within"] - result["across"], 4)
    return result


# --------------------------------------------------------------------------------------------
# the command


def contextual(
    model: str,
    word: str,
    input_path: str,
    out: str | None = None,
    layer: int = -1,
    top_k: int = 3,
    batch_size: int = BATCH_SIZE,
    log: Callable[[str], None] = print,
) -> dict:
    """`selfsup contextual`: see the module docstring. Returns the summary (also in
    occurrences.json)."""
    if top_k < 1:
        raise ConfigError("--top-k must be >= 1")
    if batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    out_dir = check_out_folder(out or default_out(word))
    sentences, labels, lines = read_sentences(input_path)
    loaded = load_model(model)
    encoder, tok = loaded.encoder, loaded.tokenizer
    n_layers = count_layers(encoder, tok)
    if not -(n_layers + 1) <= layer <= n_layers:
        raise ConfigError(f"--layer {layer} is not a layer of {model} (0 = the embeddings, "
                          f"1..{n_layers} the layers, -1 the last)")  # fmt: skip
    inputs, occ, cut = find_occurrences(tok, sentences, word, encoder.max_len)
    if not occ:
        beyond = f" ({cut} beyond the model's {encoder.max_len} tokens)" if cut else ""
        raise ConfigError(f"the word {word!r} occurs in none of the {len(sentences)} sentences "
                          f"of {input_path}{beyond}")  # fmt: skip
    vecs = contextual_vectors(encoder, inputs, occ, layer, batch_size)
    sim = cosine_matrix(vecs)
    pieces = [[tok.decode_token(inputs[o.index][p]) for p in o.positions] for o in occ]
    unknown = sum(all(p == "[UNK]" for p in ps) for ps in pieces)
    layer_no = layer % (n_layers + 1)
    rows = []
    for r, o in enumerate(occ):
        order = [j for j in np.argsort(-sim[r], kind="stable") if j != r][:top_k]
        rows.append({
            "row": r, "sentence_index": o.index, "line": lines[o.index],
            "sentence": sentences[o.index], "occurrence": o.nth, "chars": list(o.chars),
            **({"label": labels[o.index]} if labels is not None else {}),
            "pieces": pieces[r],
            "neighbours": [{"row": int(j), "similarity": round(float(sim[r, j]), 4),
                            "sentence": sentences[occ[j].index],
                            **({"label": labels[occ[j].index]} if labels is not None else {})}
                           for j in order],
        })  # fmt: skip
    summary = {
        "model": str(model), "word": word, "words": query_words(tok, word),
        "input": str(input_path), "sentences": len(sentences),
        "sentences_with_word": len({o.index for o in occ}), "occurrences": len(occ),
        "cut_by_max_len": cut, "unknown_occurrences": unknown,
        "layer": layer_no, "layers": n_layers, "dim": int(vecs.shape[1]),
        "mean_similarity": round(float(sim[~np.eye(len(occ), dtype=bool)].mean()), 4)
        if len(occ) > 1 else None,
    }  # fmt: skip
    occ_labels = [labels[o.index] for o in occ] if labels is not None else None
    if occ_labels is not None:
        summary["labels"] = label_similarity(sim, occ_labels)
    row_labels = [_row_label(sentences[o.index], o.chars, occ_labels[r] if occ_labels else None)
                  for r, o in enumerate(occ)]  # fmt: skip
    name = "/".join(Path(model).resolve().parts[-2:])
    title = f"{word!r}: cosine similarity at layer {layer_no} of {n_layers}\n{name}"

    def write(folder: Path) -> None:
        np.save(folder / "vectors.npy", vecs, allow_pickle=False)
        np.save(folder / "similarity.npy", sim, allow_pickle=False)
        text = json.dumps({**summary, "rows": rows}, ensure_ascii=False, indent=1)
        (folder / "occurrences.json").write_text(text + "\n", encoding="utf-8")
        similarity_heatmap(sim, row_labels, folder / "similarity.png", title)

    write_folder(out_dir, write)
    for line in summary_lines(summary, pieces, out_dir):
        log(line)
    return summary


def default_out(word: str) -> str:
    return "contextual-" + (re.sub(r"[^\w-]+", "_", word).strip("_") or "word")


def summary_lines(s: dict, pieces: list[list[str]], out: Path) -> list[str]:
    shown = ", ".join(dict.fromkeys(" ".join(p) for p in pieces))
    lines = [
        f"{s['word']!r}: {s['occurrences']} occurrences in {s['sentences_with_word']} of "
        f"{s['sentences']} sentences; layer {s['layer']} of {s['layers']}; pieces: {shown}"
    ]
    if s["cut_by_max_len"]:
        lines.append(
            f"warning: {s['cut_by_max_len']} occurrences lie beyond the model's "
            "max_len and were left out"
        )
    if s["unknown_occurrences"]:
        lines.append(
            f"warning: {s['unknown_occurrences']} occurrences are [UNK] to this "
            "tokenizer: their vectors are those of [UNK] in context"
        )
    if s["mean_similarity"] is not None:
        lines.append(f"mean cosine similarity between occurrences: {s['mean_similarity']:.3f}")
    lab = s.get("labels")
    if lab and lab["within"] is not None:
        across = f"{lab['across']:.3f}" if lab["across"] is not None else "-"
        gap = f" (gap {lab['gap']:+.3f})" if "gap" in lab else ""
        lines.append(
            f"within-label mean similarity {lab['within']:.3f}, across labels "
            f"{across}{gap}; nearest neighbour of the same label for "
            f"{lab['nearest_same_label']} of {lab['occurrences']}"
        )
        lines.append("by label: " + ", ".join(
            f"{k} {v['within']:.3f} ({v['count']})" if v["within"] is not None
            else f"{k} - ({v['count']})" for k, v in lab["by_label"].items()))  # fmt: skip
    lines.append(f"wrote {out}/: similarity.png, vectors.npy, similarity.npy, occurrences.json")
    return lines


def write_folder(out: Path, write: Callable[[Path], None]) -> None:
    """Build the folder `out` (absent or empty) in a hidden temporary folder beside it, then
    rename it into place: a failure leaves nothing behind."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_folder(out.parent, out.name)
    except OSError as e:
        raise ConfigError(f"cannot write {out}: {e.strerror}") from None
    try:
        write(tmp)
        if out.exists():
            out.rmdir()  # empty (check_out_folder)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _row_label(sentence: str, chars: tuple[int, int], label: str | None) -> str:
    """The sentence around the word, at most LABEL_CHARS characters, the word in [brackets]."""
    a, b = chars
    room = max(0, LABEL_CHARS - (b - a) - 2)
    left = sentence[max(0, a - room // 2) : a]
    right = sentence[b : b + room - len(left)]
    text = ("…" if a - len(left) > 0 else "") + left + "[" + sentence[a:b] + "]" + right
    text += "…" if b + len(right) < len(sentence) else ""
    return f"{label}: {text}" if label is not None else text
