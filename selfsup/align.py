"""`selfsup align MODEL --data PARALLEL --langs en zh`: how a multilingual encoder keeps its
languages apart, and what moving one language's vectors by the difference of the languages'
means does.

The language mean (Liu et al., arXiv:2010.10041): the average of every token vector of the
language's texts at layer L ([CLS], [SEP] and padding left out); the difference vector from
language a to b is mean_b - mean_a. A text's vector is the average of its token vectors.
Three measurements, for each pair of languages named (fill-mask and QA: the first language
against each other):

1. Retrieval: for each text of language a, its nearest text of language b by cosine; the
   accuracy is the share that finds its own translation, before and after subtracting each
   language's mean from its vectors (centering: Libovický et al., arXiv:2004.05160). At every
   layer, and at L.
2. Fill-mask (needs an MLM head: a selfsup run): a seeded 15% of each source text's tokens are
   masked, and the model fills them with the difference vector (times `scale`) added at layer
   L to every position, and without; the report gives the share of the top-k answers written
   in the target language's script and in the source's, at the masked positions and at every
   other position (2010.10041's token translation), with examples.
3. QA (optional, `qa`: a `selfsup finetune --task qa` folder trained on the first language):
   EM/F1 on the other languages' questions with their vectors shifted toward the first
   language (its mean minus theirs, computed with the QA model's own encoder) and without.

"Layer L" is the output of block L (0: the embeddings; -1: the last block), where the vector
is added and the means are taken. PARALLEL is a folder of SQuAD-format files NAME.LANG.json
whose paragraphs are parallel (XQuAD: xquad.en.json, xquad.zh.json, ...; paragraph k of
article j in every file), such files given one by one, or a TSV/CSV whose header names the
languages, one parallel text per row. A script is read from Unicode character names (LATIN,
CJK, THAI, ...); a language's script is the most common one among its letters.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import unicodedata
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from selfsup.data.padding import pad_sequences
from selfsup.data.readers import data_suffix, read_text, table_rows
from selfsup.data.tasks import read_squad
from selfsup.data.tokenizer import Tokenizer
from selfsup.errors import ConfigError
from selfsup.keys import ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS
from selfsup.paths import check_out_folder
from selfsup.predict import predict_batches

MEASURES = ("retrieval", "fill-mask", "qa")
_SQUAD_NAME = re.compile(r".+\.([A-Za-z][A-Za-z0-9_-]{0,15})\.json")


# --------------------------------------------------------------------------------------------
# Parallel data
# --------------------------------------------------------------------------------------------


def read_parallel(data: list[str], langs: list[str]) -> dict[str, list[str]]:
    """{language: its texts} for `langs`, text i of every language a translation of the same
    text. A language the data lacks is a one-line error naming those it has."""
    files: dict[str, Path] = {}
    table: Path | None = None
    for raw in data:
        p = Path(raw)
        if not p.exists():
            raise ConfigError(f"no such file or folder: {raw}")
        if p.is_dir():
            found = {
                m.group(1): f for f in sorted(p.iterdir()) if (m := _SQUAD_NAME.fullmatch(f.name))
            }
            if not found:
                raise ConfigError(f"{p} holds no SQuAD files named NAME.LANG.json")
            files |= found
        elif data_suffix(p) in (".tsv", ".csv"):
            table = p
        elif m := _SQUAD_NAME.fullmatch(p.name):
            files[m.group(1)] = p
        else:
            raise ConfigError(f"{p}: expected NAME.LANG.json (SQuAD format) or a TSV/CSV file")
    if table is not None and (files or len(data) > 1):
        raise ConfigError("give one TSV/CSV of parallel texts, or SQuAD files, not both")
    texts = _table_texts(table) if table is not None else {}
    have = sorted(texts or files)
    missing = [lang for lang in langs if lang not in have]
    if missing:
        raise ConfigError(f"language {missing[0]} is not in the data (it has: {', '.join(have)})")
    if len(set(langs)) < 2:
        raise ConfigError("--langs needs two or more different languages")
    if table is None:
        texts = {lang: _squad_paragraphs(files[lang]) for lang in langs}
        keys = {lang: [k for k, _ in texts[lang]] for lang in langs}
        first = keys[langs[0]]
        for lang in langs[1:]:
            if keys[lang] != first:
                raise ConfigError(
                    f"{files[lang]} and {files[langs[0]]} are not parallel "
                    "(their articles or paragraphs differ)"
                )
        texts = {lang: [t for _, t in texts[lang]] for lang in langs}
    return {lang: texts[lang] for lang in langs}


def _squad_paragraphs(path: Path) -> list[tuple[tuple, str]]:
    """((article title or index, paragraph index), context) of a SQuAD file, in order."""
    try:
        data = json.loads(read_text(path))["data"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError(f"{path} is not SQuAD-format JSON") from None
    return [
        ((a.get("title", i), j), p["context"])
        for i, a in enumerate(data)
        for j, p in enumerate(a["paragraphs"])
    ]


def _table_texts(path: Path) -> dict[str, list[str]]:
    delimiter = "\t" if data_suffix(path) == ".tsv" else ","
    rows = [r for _, r in table_rows(path, delimiter)]
    if len(rows) < 2:
        raise ConfigError(f"{path} needs a header of language codes and parallel rows")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    bad = [i for i, r in enumerate(body, 2) if len(r) != len(header)]
    if bad:
        raise ConfigError(f"{path}:{bad[0]} has not one text per language of its header")
    return {lang: [r[i] for r in body] for i, lang in enumerate(header)}


# --------------------------------------------------------------------------------------------
# Vectors
# --------------------------------------------------------------------------------------------


def encode(tok: Tokenizer, texts: list[str], max_len: int) -> list[list[int]]:
    """[CLS] pieces [SEP], the first max_len - 2 pieces kept."""
    pieces = tok.encode_plain(texts)
    return [[tok.cls_id, *p[: max_len - 2], tok.sep_id] for p in pieces]


def _batches(ids: list[list[int]], tok: Tokenizer, batch_size: int):
    for s in range(0, len(ids), batch_size):
        input_ids, mask = pad_sequences(ids[s : s + batch_size], tok.pad_id)  # (B, T)
        yield (
            s,
            {
                INPUT_IDS: input_ids,
                ATTENTION_MASK: mask.long(),
                TOKEN_TYPE_IDS: torch.zeros_like(input_ids),
            },
        )


def text_token_mask(batch: dict, tok: Tokenizer) -> torch.Tensor:
    """(B, T) True on a text's own tokens: not [CLS], [SEP] or padding."""
    ids = batch[INPUT_IDS]
    return batch[ATTENTION_MASK].bool() & (ids != tok.cls_id) & (ids != tok.sep_id)


def layer_vectors(
    encoder, tok: Tokenizer, texts: list[str], max_len: int, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray, int]:
    """At every layer (0: the embeddings ... n_layers): each text's mean token vector
    (n_layers + 1, N, D), the sum of all token vectors (n_layers + 1, D) and the number of
    tokens summed. A text with no tokens of its own has a zero vector."""
    ids = encode(tok, texts, max_len)

    def forward(batch):
        out = encoder(
            batch[INPUT_IDS], batch[ATTENTION_MASK], batch[TOKEN_TYPE_IDS], return_all=True
        )
        keep = text_token_mask(batch, tok).unsqueeze(-1).float()  # (B, T, 1)
        states = torch.stack(out["all_hidden"]).float()  # (L+1, B, T, D)
        sums = (states * keep).sum(2)  # (L+1, B, D)
        return sums, keep.sum(1).squeeze(-1)  # (L+1, B, D), (B,)

    means, total, count = [], None, 0
    for _, (sums, n) in predict_batches(encoder, _batches(ids, tok, batch_size), forward):
        s = sums.double()
        total = s.sum(1) if total is None else total + s.sum(1)
        count += int(n.sum())
        means.append((s / n.clamp(min=1)[None, :, None].double()).numpy())
    return np.concatenate(means, axis=1), total.numpy(), count


def language_means(vectors: dict[str, tuple]) -> dict[str, np.ndarray]:
    """{language: (n_layers + 1, D) mean of all its token vectors}."""
    out = {}
    for lang, (_, total, count) in vectors.items():
        if count == 0:
            raise ConfigError(f"the {lang} texts hold no tokens")
        out[lang] = total / count
    return out


def retrieval_accuracy(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows of `a` whose nearest row of `b` by cosine similarity is the same row."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float(np.mean(np.argmax(a @ b.T, axis=1) == np.arange(len(a))))


def resolve_layer(layer: int, n_layers: int) -> int:
    if not -(n_layers + 1) <= layer <= n_layers:
        raise ConfigError(
            f"--layer {layer} is not a layer of this {n_layers}-layer model "
            f"(0 .. {n_layers}, or -1 for the last)"
        )
    return layer % (n_layers + 1)


@contextmanager
def shifted(encoder, layer: int, vector: torch.Tensor | None) -> Iterator[None]:
    """Inside the block, `vector` (D,) is added to every position of the output of block
    `layer` of `encoder` (0: of the embeddings); None adds nothing."""
    if vector is None:
        yield
        return
    module = encoder.embed if layer == 0 else encoder.transformer.blocks[layer - 1]
    handle = module.register_forward_hook(lambda m, args, out: out + vector.to(out))
    try:
        yield
    finally:
        handle.remove()


# --------------------------------------------------------------------------------------------
# Scripts
# --------------------------------------------------------------------------------------------


def script_of(token: str) -> str | None:
    """The script of a token's letters (the first word of their Unicode names: LATIN, CJK,
    THAI, DEVANAGARI...), "MIXED" when they differ, None when it has no letters."""
    scripts = {
        unicodedata.name(c, "UNKNOWN").split()[0]
        for c in token.removeprefix("##")
        if unicodedata.category(c).startswith("L")
    }
    if not scripts:
        return None
    return scripts.pop() if len(scripts) == 1 else "MIXED"


def main_script(texts: list[str]) -> str | None:
    counts = Counter(script_of(c) for t in texts for c in t)
    counts.pop(None, None)
    return counts.most_common(1)[0][0] if counts else None


# --------------------------------------------------------------------------------------------
# Fill-mask with the difference vector
# --------------------------------------------------------------------------------------------


def mask_positions(ids: list[list[int]], tok: Tokenizer, prob: float, seed: int) -> list:
    """For each text, the seeded positions to mask: `prob` of its own tokens, at least one."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for row in ids:
        inner = torch.arange(1, len(row) - 1)
        if not len(inner):
            out.append([])
            continue
        n = max(1, round(prob * len(inner)))
        out.append(sorted(inner[torch.randperm(len(inner), generator=g)[:n]].tolist()))
    return out


def fill_mask_shift(
    mlm,
    tok: Tokenizer,
    texts: list[str],
    shift: torch.Tensor,
    layer: int,
    src: str,
    tgt: str,
    scripts: dict[str, str | None],
    max_len: int,
    top_k: int = 5,
    mask_prob: float = 0.15,
    seed: int = 0,
    n_examples: int = 3,
    batch_size: int = 4,
) -> dict:
    """Fill-mask over `texts` (language `src`) with and without `shift` at `layer`: the shares
    of top-k answers in each language's script, at masked and at unmasked positions. Batches
    are small: every position of a text gets full-vocabulary log-probabilities."""
    ids = encode(tok, texts, max_len)
    where = mask_positions(ids, tok, mask_prob, seed)
    masked = [
        [tok.mask_id if j in set(w) else t for j, t in enumerate(row)]
        for row, w in zip(ids, where, strict=True)
    ]
    encoder = mlm.encoder

    def forward(batch):
        real = text_token_mask(batch, tok)
        logp = mlm.predict_masked(batch, real)  # (M, V): every text position
        logp[:, tok.special_ids] = -torch.inf  # answers are words ([UNK] would read as Latin)
        return torch.topk(logp, top_k, dim=-1).indices, real

    def run(vector):
        rows = []
        with shifted(encoder, layer, vector):
            for _s, (top, real) in predict_batches(mlm, _batches(masked, tok, batch_size), forward):
                k = 0
                for b in range(real.shape[0]):
                    n = int(real[b].sum())
                    rows.append(top[k : k + n].tolist())  # positions 1 .. n of text s + b
                    k += n
        return rows

    before, after = run(None), run(shift)
    report = {
        "source": src,
        "target": tgt,
        "source_script": scripts[src],
        "target_script": scripts[tgt],
        "same_script": scripts[src] == scripts[tgt],
    }
    for name, rows in (("without_shift", before), ("with_shift", after)):
        shares = {}
        for part in ("masked", "unmasked"):
            answers = [
                tok.decode_token(t)
                for row, w in zip(rows, where, strict=True)
                for j, tops in enumerate(row, 1)
                if (j in w) == (part == "masked")
                for t in tops
            ]
            got = Counter(script_of(a) for a in answers)
            n = max(1, len(answers))
            shares[part] = {
                "answers": len(answers),
                "target_script": got[scripts[tgt]] / n,
                "source_script": got[scripts[src]] / n,
            }
        report[name] = shares
    report["examples"] = [
        {
            "text": tok.decode(ids[i][1:-1])[:300],
            "masks": [
                {
                    "token": tok.decode_token(ids[i][j]),
                    "without_shift": [tok.decode_token(t) for t in before[i][j - 1][:3]],
                    "with_shift": [tok.decode_token(t) for t in after[i][j - 1][:3]],
                }
                for j in where[i][:4]
            ],
        }
        for i in range(min(n_examples, len(ids)))
    ]
    return report


# --------------------------------------------------------------------------------------------
# QA with the shift
# --------------------------------------------------------------------------------------------


def qa_shift_layer(layer: int, n_layers: int) -> int:
    """The block after which QA's shift enters: `layer`, except the last block, one below it
    (a span head is linear, so a vector added to every position of the last block's output adds
    one constant to every position's start logit and one to every end logit: no answer moves)."""
    return min(layer, n_layers - 1)


def qa_shift(
    qa_path: str,
    files: dict[str, Path],
    parallel: dict[str, list[str]],
    layer: int,
    max_len: int,
    scale: float = 1.0,
    log=print,
) -> dict:
    """EM/F1 of a fine-tuned QA folder on each language's questions (files: {language: SQuAD
    file}), each language after the first with and without its vectors shifted toward the
    first language's mean (means from the QA model's own encoder over `parallel`)."""
    from selfsup.finetuning import FinetuneConfig, make_features, predict, score
    from selfsup.models import load_finetuned

    model, tok, config = load_finetuned(qa_path)
    if config.get("kind") != "qa":
        raise ConfigError(f"{qa_path} was fine-tuned for {config.get('kind')}, not qa")
    encoder = model.encoder
    _check_encoder(encoder, qa_path)
    n_layers = len(encoder.transformer.blocks)
    asked = resolve_layer(layer, n_layers)
    layer = qa_shift_layer(asked, n_layers)
    if layer != asked:
        log(
            f"qa: the shift is measured after block {layer}: after the last block it adds the "
            "same start and end logit to every position and cannot change an answer"
        )
    vectors = {
        lang: layer_vectors(encoder, tok, texts, max_len) for lang, texts in parallel.items()
    }
    means = language_means(vectors)
    first = next(iter(files))
    ft = config["finetune"]
    cfg = FinetuneConfig(
        "qa",
        "",
        "x",
        "x",
        doc_stride=ft.get("doc_stride", 128),
        max_answer_len=ft.get("max_answer_len", 30),
    )
    out = {}
    for lang, f in files.items():
        examples = read_squad(f)
        feats = make_features("qa", tok, examples, config["max_len"], None, cfg)
        shift = None if lang == first else scale * (means[first][layer] - means[lang][layer])
        row = {}
        for name, vector in (("without_shift", None), ("with_shift", shift)):
            if name == "with_shift" and vector is None:
                continue
            v = None if vector is None else torch.tensor(vector, dtype=torch.float32)
            with shifted(encoder, layer, v):
                preds = predict(model, feats, "qa", tok.pad_id, max_answer_len=cfg.max_answer_len)
            row[name] = score("qa", "qa", examples, feats, preds, None)
        out[lang] = {"layer": layer, **row}
        log(f"qa {lang}: " + ", ".join(f"{k} F1 {v['f1']:.1f}" for k, v in row.items()))
    return out


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def _check_encoder(encoder, name) -> None:
    if not (hasattr(encoder, "embed") and hasattr(getattr(encoder, "transformer", None), "blocks")):
        raise ConfigError(f"{name}: align takes a BERT text encoder")


def align(
    model: str | os.PathLike,
    data: list[str],
    langs: list[str],
    layer: int = -1,
    out: str | os.PathLike | None = None,
    measures: tuple[str, ...] = ("retrieval", "fill-mask"),
    max_len: int = 256,
    top_k: int = 5,
    scale: float = 1.0,
    mask_prob: float = 0.15,
    fill_texts: int = 100,
    seed: int = 0,
    qa: str | None = None,
    qa_data: list[str] | None = None,
    plot: str = "pca",
    batch_size: int = 32,
    log=print,
) -> dict:
    """The report of the three measurements (module docstring); with `out`, a new folder with
    align.json, means.safetensors (each language's mean at every layer, and the differences
    from the first language at L) and clusters.png. Every check runs before any output."""
    from selfsup.models import load_model

    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise ConfigError(f"unknown measurement {unknown[0]}; use {', '.join(MEASURES)}")
    if "qa" in measures and not qa:
        raise ConfigError(
            "the qa measurement needs --qa FOLDER (a `selfsup finetune --task qa` folder)"
        )
    if qa and "qa" not in measures:
        measures = (*measures, "qa")
    if plot not in ("pca", "tsne", "none"):
        raise ConfigError(f"--plot must be pca, tsne or none, got {plot!r}")
    for name, value, low in (
        ("--max-len", max_len, 4),
        ("--top-k", top_k, 1),
        ("--batch-size", batch_size, 1),
    ):
        if value < low:
            raise ConfigError(f"{name} must be >= {low}, got {value}")
    if not 0.0 < mask_prob < 1.0:
        raise ConfigError(f"--mask-prob must be in (0, 1), got {mask_prob}")
    if out is not None:
        out = check_out_folder(out)
    parallel = read_parallel(data, langs)
    qa_files = _qa_files(qa_data or data, langs) if "qa" in measures else None
    loaded = load_model(model)
    encoder, tok = loaded.encoder, loaded.tokenizer
    _check_encoder(encoder, model)
    mlm = loaded.model
    if "fill-mask" in measures and not hasattr(mlm, "predict_masked"):
        raise ConfigError(
            f"{model} has no MLM head, which the fill-mask measurement needs (a "
            "selfsup run has one); --measure retrieval runs without it"
        )
    n_layers = len(encoder.transformer.blocks)
    at = resolve_layer(layer, n_layers)
    max_len = min(max_len, loaded.config.max_len)
    n = len(parallel[langs[0]])
    log(f"align: {len(langs)} languages x {n} parallel texts, layer {at} of {n_layers}")

    vectors = {
        lang: layer_vectors(encoder, tok, texts, max_len, batch_size)
        for lang, texts in parallel.items()
    }
    means = language_means(vectors)
    scripts = {lang: main_script(texts) for lang, texts in parallel.items()}
    report: dict = {
        "model": str(model),
        "data": [str(d) for d in data],
        "languages": list(langs),
        "layer": at,
        "n_layers": n_layers,
        "texts": n,
        "max_len": max_len,
        "scripts": scripts,
        "mean_norm": {lang: float(np.linalg.norm(m[at])) for lang, m in means.items()},
        "difference_norm": {
            f"{langs[0]}->{b}": _norm(means[b][at] - means[langs[0]][at]) for b in langs[1:]
        },
    }
    if "retrieval" in measures:
        report["retrieval"] = _retrieval(vectors, means, langs, at)
        for pair, r in report["retrieval"]["at_layer"].items():
            log(
                f"retrieval {pair}: {100 * r['raw']:.1f}% -> {100 * r['centered']:.1f}% "
                "after subtracting the language means"
            )
    if "fill-mask" in measures:
        fills = []
        for src, tgt in [(langs[0], b) for b in langs[1:]] + [(b, langs[0]) for b in langs[1:]]:
            shift = torch.tensor(scale * (means[tgt][at] - means[src][at]), dtype=torch.float32)
            fills.append(
                fill_mask_shift(
                    mlm,
                    tok,
                    parallel[src][:fill_texts],
                    shift,
                    at,
                    src,
                    tgt,
                    scripts,
                    max_len,
                    top_k,
                    mask_prob,
                    seed,
                )
            )
            f = fills[-1]
            log(
                f"fill-mask {src}->{tgt}: top-{top_k} answers in the {tgt} script "
                f"{100 * f['without_shift']['masked']['target_script']:.1f}% -> "
                f"{100 * f['with_shift']['masked']['target_script']:.1f}% with the shift"
            )
        report["fill_mask"] = {
            "top_k": top_k,
            "scale": scale,
            "mask_prob": mask_prob,
            "pairs": fills,
        }
    if "qa" in measures:
        report["qa"] = {
            "model": str(qa),
            "scale": scale,
            "languages": qa_shift(qa, qa_files, parallel, at, max_len, scale, log),
        }
    if out is not None:
        _write(out, report, vectors, means, langs, at, plot, seed)
        log(f"wrote {out / 'align.json'}")
    return report


def _norm(x: np.ndarray) -> float:
    return float(np.linalg.norm(x))


def _qa_files(data: list[str], langs: list[str]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for raw in data:
        p = Path(raw)
        if p.is_dir():
            files |= {
                m.group(1): f for f in sorted(p.iterdir()) if (m := _SQUAD_NAME.fullmatch(f.name))
            }
        elif m := _SQUAD_NAME.fullmatch(p.name):
            files[m.group(1)] = p
    missing = [lang for lang in langs if lang not in files]
    if missing:
        raise ConfigError(
            f"the qa measurement needs SQuAD questions in {missing[0]} "
            "(--qa-data: files or a folder named NAME.LANG.json)"
        )
    return {lang: files[lang] for lang in langs}


def _retrieval(vectors, means, langs, at) -> dict:
    n_states = vectors[langs[0]][0].shape[0]
    pairs = [(a, b) for a in langs for b in langs if a != b]
    by_layer = []
    for layer in range(n_states):
        row = {}
        for a, b in pairs:
            va, vb = vectors[a][0][layer], vectors[b][0][layer]
            row[f"{a}->{b}"] = {
                "raw": retrieval_accuracy(va, vb),
                "centered": retrieval_accuracy(va - means[a][layer], vb - means[b][layer]),
            }
        by_layer.append(row)
    chance = 1 / len(vectors[langs[0]][0][0])
    return {"chance": chance, "at_layer": by_layer[at], "by_layer": by_layer}


def _write(out: Path, report: dict, vectors, means, langs, at, plot, seed) -> None:
    from safetensors.numpy import save

    from selfsup.checkpoint import temp_folder

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(out.parent, out.name)
    try:
        tensors = {f"mean.{lang}": m.astype(np.float32) for lang, m in means.items()}
        tensors |= {
            f"difference.{langs[0]}->{b}": (means[b][at] - means[langs[0]][at]).astype(np.float32)
            for b in langs[1:]
        }
        # bytes written as any file (the user's umask), not save_file's 0600
        (tmp / "means.safetensors").write_bytes(save(tensors, metadata={"layer": str(at)}))
        if plot != "none":
            cluster_plot(
                {lang: v[0][at] for lang, v in vectors.items()},
                {lang: m[at] for lang, m in means.items()},
                tmp / "clusters.png",
                plot,
                seed,
                f"layer {at}",
            )
            report["plot"] = str(out / "clusters.png")
        (tmp / "align.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
        if out.exists():
            out.rmdir()  # check_out_folder let it through: empty
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cluster_plot(
    vectors: dict[str, np.ndarray],
    means: dict[str, np.ndarray],
    path: Path,
    method: str = "pca",
    seed: int = 0,
    title: str = "",
) -> None:
    """Two panels: the texts' vectors in 2-D (PCA, or t-SNE) coloured by language, as they
    are and after subtracting each language's mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs = list(vectors)
    colours = language_colours(len(langs))
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, centered in zip(axes, (False, True), strict=True):
        x = np.concatenate([vectors[lang] - (means[lang] if centered else 0) for lang in langs])
        xy = _project(x, method, seed)
        start = 0
        for lang, colour in zip(langs, colours, strict=True):
            k = len(vectors[lang])
            ax.scatter(xy[start : start + k, 0], xy[start : start + k, 1], s=8, label=lang,
                       color=colour)  # fmt: skip
            start += k
        ax.set_title(
            ("centered (language means subtracted)" if centered else "raw")
            + (f", {title}" if title else "")
        )
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(markerscale=2, fontsize=8)
    fig.suptitle(f"text vectors by language ({method.upper()})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def language_colours(n: int) -> list[tuple]:
    """n distinct RGBA colours: matplotlib's tab10 up to 10 languages, tab20 up to 20 (the
    default cycle repeats after 10, so 12 XQuAD languages would share colours), then hsv."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["hsv"](i / n) for i in range(n)]


def _project(x: np.ndarray, method: str, seed: int) -> np.ndarray:
    x = x - x.mean(0)
    if method == "tsne" and len(x) > 5:
        from sklearn.manifold import TSNE

        return TSNE(
            2, perplexity=min(30.0, (len(x) - 1) / 3), random_state=seed, init="pca"
        ).fit_transform(x)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    xy = u[:, :2] * s[:2]
    return xy if xy.shape[1] == 2 else np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))


def format_report(report: dict) -> str:
    """A few readable lines of an align report."""
    lines = [
        f"{report['texts']} parallel texts, layer {report['layer']} of "
        f"{report['n_layers']}; scripts: "
        + ", ".join(f"{k} {v}" for k, v in report["scripts"].items())
    ]
    if "retrieval" in report:
        r = report["retrieval"]
        lines.append(f"retrieval accuracy (chance {100 * r['chance']:.1f}%): raw -> centered")
        for pair, v in r["at_layer"].items():
            lines.append(f"  {pair:12s} {100 * v['raw']:5.1f}% -> {100 * v['centered']:5.1f}%")
    if "fill_mask" in report:
        k = report["fill_mask"]["top_k"]
        lines.append(f"fill-mask: top-{k} answers in the target script, without -> with shift")
        for f in report["fill_mask"]["pairs"]:
            a, b = f["without_shift"], f["with_shift"]
            note = " (same script)" if f["same_script"] else ""
            lines.append(
                f"  {f['source']}->{f['target']}{note}: masked "
                f"{100 * a['masked']['target_script']:.1f}% -> "
                f"{100 * b['masked']['target_script']:.1f}%, other positions "
                f"{100 * a['unmasked']['target_script']:.1f}% -> "
                f"{100 * b['unmasked']['target_script']:.1f}%"
            )
    if "qa" in report:
        lines.append("qa F1: without -> with shift")
        for lang, row in report["qa"]["languages"].items():
            w = row.get("with_shift")
            shown = f" -> {w['f1']:.1f}" if w else ""
            lines.append(f"  {lang}: {row['without_shift']['f1']:.1f}{shown}")
    return "\n".join(lines)
