"""bf16 against fp32 for the forward-only commands, on SST-2 dev, in one process: `embed` with
all-MiniLM-L6-v2 (sentences/s, the largest difference of the normalised vectors, the lowest
cosine) and, given a fine-tuned SST-2 folder, `predict` (rows/s, the largest probability
difference, labels that flip, accuracy of each).

    python benchmarks/bf16_inference.py --finetuned ft/sst2           # + --no-write to only print

Both precisions run the same code (`selfsup.embed.embed_sentences`, `selfsup.label.predict_rows`)
with `bf16` on or off, once to warm up and then `--repeats` times interleaved; the median time is
reported. bf16 needs a CPU with native bf16 (avx512_bf16 or AMX): elsewhere it is refused.
Results, machine and command go to benchmarks/RESULTS.md (a section this script replaces).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from inference import MAX_LEN, default_model, machine, read_sst2, write_results
from machine import cpu_name

from selfsup.device import bf16_reason
from selfsup.embed import embed_sentences, hidden_fn
from selfsup.models import load_model

ROOT = Path(__file__).resolve().parent
START, END = (f"<!-- bf16_inference.py, {cpu_name()}: {w} -->" for w in ("start", "end"))


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def sst2_labels(path: str) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [ln.rsplit("\t", 1)[1].strip() for ln in lines[1:] if ln.strip()]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=default_model(), help="all-MiniLM-L6-v2 folder")
    p.add_argument("--finetuned", default=None, help="a `selfsup finetune --task sst2` folder")
    p.add_argument("--data", default=str(ROOT.parent.parent / "shared/data/glue/SST-2/dev.tsv"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if bf16_reason(torch.device("cpu")) is None:
        sys.exit("this CPU has no native bf16 (avx512_bf16 or AMX): nothing to compare")
    torch.set_num_threads(args.threads)
    sentences = read_sst2(args.data)
    rows = ["| command | model | fp32 /s | bf16 /s | bf16 speed-up | largest difference | "
            "other |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    if args.model:
        loaded = load_model(args.model)
        hidden = hidden_fn(loaded.encoder)
        res = {}
        for bf16 in (False, True, False, True):  # interleaved pairs: the medians see both
            t, v = timed(lambda b=bf16: embed_sentences(
                loaded.encoder, loaded.tokenizer, sentences, "mean", 64, MAX_LEN, True, hidden,
                bf16=b), max(1, args.repeats // 2))  # fmt: skip
            res.setdefault(bf16, []).append((t, v))
        t32 = statistics.median(t for t, _ in res[False])
        t16 = statistics.median(t for t, _ in res[True])
        a, b = res[False][0][1], res[True][0][1]
        cos = float((a * b).sum(1).min())  # both normalised
        rows.append(
            f"| embed | all-MiniLM-L6-v2 | {len(sentences) / t32:.0f} | {len(sentences) / t16:.0f}"
            f" | {t32 / t16:.2f}x | {np.abs(a - b).max():.2e} (vector element) | lowest cosine "
            f"{cos:.5f} |"
        )
    if args.finetuned:
        from selfsup.data.tasks import TextExample
        from selfsup.label import predict_rows

        ft = load_model(args.finetuned)
        if ft.source != "finetuned":
            sys.exit(f"{args.finetuned} is not a `selfsup finetune` folder")
        net, tok, config = ft.task, ft.tokenizer, ft.task_config
        examples = [TextExample(s) for s in sentences]
        gold = sst2_labels(args.data)
        out = {}
        for bf16 in (False, True):
            t, (pred, _) = timed(lambda b=bf16: predict_rows(
                net, tok, config, examples, 64, None, log=lambda s: None, bf16=b),
                args.repeats)  # fmt: skip
            out[bf16] = (t, pred)
        (t32, p32), (t16, p16) = out[False], out[True]

        def probs(rows):
            return np.array([[t["score"] for t in sorted(r["top"], key=lambda t: t["label"])]
                             for r in rows])  # fmt: skip

        diff = float(np.abs(probs(p32) - probs(p16)).max())
        flips = sum(a["label"] != b["label"] for a, b in zip(p32, p16, strict=True))
        acc = {k: np.mean([r["label"] == g for r, g in zip(v[1], gold, strict=True)])
               for k, v in out.items()}  # fmt: skip
        rows.append(
            f"| predict | {Path(args.finetuned).name} (SST-2) | {len(sentences) / t32:.0f} | "
            f"{len(sentences) / t16:.0f} | {t32 / t16:.2f}x | {diff:.2e} (probability) | "
            f"{flips} labels flip; accuracy fp32 {acc[False]:.4f}, bf16 {acc[True]:.4f} |"
        )
    command = "python benchmarks/bf16_inference.py " + " ".join(sys.argv[1:] if argv is None
                                                                else argv)  # fmt: skip
    lines = [
        "## Inference in bf16 against fp32: SST-2 dev (CPU)",
        "",
        f"{len(sentences)} sentences, {args.threads} threads, median of the timed runs after one "
        "warm-up each.",
        f"Machine: {machine()}.",
        f"Command: `{command.strip()}`",
        "",
        *rows,
    ]  # fmt: skip
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_results(text, START, END)


if __name__ == "__main__":
    main()
