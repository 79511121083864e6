"""Encoder-decoder throughput: selfsup's BART pretraining step and generation against
transformers' BartForConditionalGeneration of the same shape and weights, in one run.

    python benchmarks/seq2seq_throughput.py                       # tiny and mini, both lengths
    python benchmarks/seq2seq_throughput.py --sizes mini --repeats 3 --padded --write

Pretraining: both sides get the same corrupted examples (BART's default noise, selfsup's
corruption functions, on segments of the packaged Gutenberg corpus with a WordPiece vocabulary
trained on it) and do a full step: collate, forward, backward, clip to 1.0, AdamW.
transformers' side collates as its DataCollatorForSeq2Seq does (sources and labels padded to the
batch's longest, labels -100 on padding, decoder inputs by shift_tokens_right) and scores every
target position; selfsup packs the batch's examples into rows of its pack width (2 x 128) on
each side, as `pretrain --pack` does (`--padded` adds selfsup padded as transformers), and
scores the real target tokens only, with the output projection and cross-entropy fused
(losses.linear_ce). Both sides run without dropout.
"natural": segments of whole sentences (up to 128 tokens); "full": text cut into exactly
127-token pieces (+ EOS), so neither side pads targets.

Generation: sentences/s of greedy and 4-beam decoding of the same sources (32 new tokens at
most) by selfsup's `generate` and by transformers' `generate` on the same weights (the
exported layout), with the greedy outputs compared token for token.

Reported: real target tokens/s (median of repeats, the sides interleaved) and the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_name, versions, write_section  # noqa: E402  (benchmarks/machine.py, beside this script)

from selfsup.config import RunConfig  # noqa: E402
from selfsup.data.text import default_corpus, read_paragraphs  # noqa: E402
from selfsup.data.tokenizer import train_tokenizer  # noqa: E402
from selfsup.encoders.seq2seq import Seq2SeqConfig  # noqa: E402
from selfsup.generate import GenerateConfig, generate  # noqa: E402
from selfsup.interop.hf_bart import model_to_hf_config, special_ids, state_dict_to_hf  # noqa: E402
from selfsup.objectives import build_objective  # noqa: E402
from selfsup.objectives.base import batch_loss  # noqa: E402
from selfsup.objectives.seq2seq import collate_seq2seq, pack_seq2seq  # noqa: E402
from selfsup.presets.text import MODELS  # noqa: E402
from selfsup.train import param_groups  # noqa: E402

MAX_LEN = 128


def shape(size: str, vocab: int) -> Seq2SeqConfig:
    m = MODELS[size]
    return Seq2SeqConfig(vocab_size=vocab, dim=m.dim, n_layers=m.n_layers, n_heads=m.n_heads,
                         ffn_dim=m.ffn_dim, max_len=MAX_LEN + 2, dropout=0.0)  # fmt: skip


def make_examples(objective, tok, n: int, full: bool, seed: int = 0) -> list:
    """n corrupted examples (selfsup's Seq2SeqExample) from the packaged corpus."""
    rng = np.random.default_rng(seed)
    paras = [p for p in read_paragraphs([default_corpus()]) if len(p) > 200]
    ids = tok.encode_plain(paras[: 4 * n])
    examples = []
    if full:
        stream = np.concatenate([np.asarray(x, dtype=np.int64) for x in ids])
        for k in range(n):
            piece = stream[k * (MAX_LEN - 1) : (k + 1) * (MAX_LEN - 1)]
            examples.append(objective.example([piece], rng, tok, MAX_LEN + 2))
        return examples
    from selfsup.data.text import split_sentences

    for para in paras:
        sents = [np.asarray(x, dtype=np.int64) for x in tok.encode_plain(split_sentences(para))]
        chunk, total = [], 0
        for s in sents:
            if total + len(s) > MAX_LEN - 3 and chunk:
                break
            chunk.append(s[: MAX_LEN - 3])
            total += len(chunk[-1])
        examples.append(objective.example(chunk, rng, tok, MAX_LEN))
        if len(examples) == n:
            break
    return examples


class SelfsupSide:
    def __init__(self, cfg: Seq2SeqConfig, tok, bf16: bool, pack: bool = True):
        run = RunConfig()
        run.set_objective("bart")
        torch.manual_seed(0)
        self.model = build_objective(run.objective, cfg).train()
        self.opt = torch.optim.AdamW(param_groups(self.model, 0.01), lr=1e-4, fused=False)
        self.tok, self.bf16, self.pack = tok, bf16, pack
        self.name = "selfsup" if pack else "selfsup (padded)"

    def step(self, examples) -> int:
        batch = collate_seq2seq(examples, self.tok.pad_id)
        if self.pack:  # as `--pack` does: rows of the objective's pack width
            batch = pack_seq2seq(batch, self.tok.pad_id, self.model.pack_width(MAX_LEN))
        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            loss = batch_loss(self.model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return int((batch["labels"] >= 0).sum())


class HFSide:
    name = "transformers"

    def __init__(self, cfg: Seq2SeqConfig, tok, bf16: bool, weights: dict | None = None):
        import transformers

        hf_cfg = transformers.BartConfig(**model_to_hf_config(cfg, special_ids(tok)))
        torch.manual_seed(0)
        self.model = transformers.BartForConditionalGeneration(hf_cfg).train()
        if weights is not None:
            self.model.load_state_dict(weights, strict=False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.01)
        self.tok, self.bf16, self.start = tok, bf16, tok.cls_id
        from transformers.models.bart.modeling_bart import shift_tokens_right

        self.shift = shift_tokens_right

    def collate(self, examples):
        from selfsup.data.padding import pad_sequences

        src, mask = pad_sequences([e.source for e in examples], self.tok.pad_id)
        labels, _ = pad_sequences([e.target for e in examples], -100)
        dec = self.shift(labels, self.tok.pad_id, self.start)
        return src, mask.long(), dec, labels

    def step(self, examples) -> int:
        src, mask, dec, labels = self.collate(examples)
        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            loss = self.model(input_ids=src, attention_mask=mask, decoder_input_ids=dec,
                              labels=labels).loss  # fmt: skip
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return int((labels >= 0).sum())


def measure(sides, batches, warmup: int, repeats: int) -> dict:
    for side in sides:
        for b in batches[:warmup]:
            side.step(b)
    rates = {s.name: [] for s in sides}
    timed = batches[warmup:]
    for _ in range(repeats):
        for side in sides:  # interleaved, so drift hits both
            side.step(timed[0])  # untimed: the other side has just freed its memory
            t = time.perf_counter()
            n = sum(side.step(b) for b in timed)
            rates[side.name].append(n / (time.perf_counter() - t))
    return {name: statistics.median(r) for name, r in rates.items()}


@torch.no_grad()
def measure_generation(ours, hf, tok, examples, beams: int, repeats: int, batch: int = 16):
    """(selfsup sentences/s, transformers sentences/s, greedy outputs equal)."""
    from selfsup.data.padding import pad_sequences

    ours.eval()
    hf.eval()
    parts = [examples[i : i + batch] for i in range(0, len(examples), batch)]
    cfg = GenerateConfig(max_new_tokens=32, beams=beams)
    rates = {"selfsup": [], "transformers": []}
    same = True
    for _ in range(repeats):
        t = time.perf_counter()
        mine = []
        for part in parts:
            src, mask = pad_sequences([e.source for e in part], tok.pad_id)
            mine += generate(ours, src, mask.long(), tok.cls_id, tok.sep_id, cfg)
        rates["selfsup"].append(len(examples) / (time.perf_counter() - t))
        t = time.perf_counter()
        theirs = []
        for part in parts:
            src, mask = pad_sequences([e.source for e in part], tok.pad_id)
            out = hf.generate(input_ids=src, attention_mask=mask.long(), max_new_tokens=32,
                              num_beams=beams, do_sample=False, decoder_start_token_id=tok.cls_id,
                              eos_token_id=tok.sep_id, forced_eos_token_id=tok.sep_id,
                              pad_token_id=tok.pad_id)  # fmt: skip
            for row in out.tolist():
                row = row[1:]
                theirs.append(row[: row.index(tok.sep_id)] if tok.sep_id in row else row)
        rates["transformers"].append(len(examples) / (time.perf_counter() - t))
        same = same and mine == theirs
    return statistics.median(rates["selfsup"]), statistics.median(rates["transformers"]), same


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "mini"])
    p.add_argument("--scenarios", nargs="*", default=["natural", "full"],
                   help="none: generation only")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=6, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32"])
    p.add_argument("--generate", type=int, default=64, help="sources decoded (0: no generation)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--padded", action="store_true", help="also selfsup without packing")
    p.add_argument("--write", action="store_true", help="add the table to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = train_tokenizer(read_paragraphs([default_corpus()]), 8192, True)
    print(versions(), flush=True)
    rows, gen_rows = [], []
    n = args.batch_size * (args.warmup + args.steps)
    for size in args.sizes:
        cfg = shape(size, tok.vocab_size)
        for scenario in args.scenarios:
            maker = SelfsupSide(cfg, tok, False).model
            examples = make_examples(maker, tok, n, scenario == "full")
            batches = [examples[s : s + args.batch_size] for s in range(0, n, args.batch_size)]
            for precision in args.precisions:
                bf16 = precision == "bf16"
                sides = [HFSide(cfg, tok, bf16), SelfsupSide(cfg, tok, bf16)]
                if args.padded:
                    sides.append(SelfsupSide(cfg, tok, bf16, pack=False))
                res = measure(sides, batches, args.warmup, args.repeats)
                for side in sides[1:]:
                    row = {"size": size, "scenario": scenario, "precision": precision,
                           "mean_target": round(sum(len(e.target) for e in examples) / n, 1),
                           "side": side.name, "transformers": round(res["transformers"]),
                           "selfsup": round(res[side.name]),
                           "ratio": round(res[side.name] / res["transformers"], 2)}  # fmt: skip
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        if args.generate:
            ours = SelfsupSide(cfg, tok, False).model.model
            hf = HFSide(cfg, tok, False, state_dict_to_hf(ours.state_dict(), cfg)).model
            examples = make_examples(SelfsupSide(cfg, tok, False).model, tok, args.generate, False)
            for beams in (1, 4):
                a, b, same = measure_generation(ours, hf, tok, examples, beams, args.repeats)
                row = {"size": size, "beams": beams, "selfsup": round(a, 1),
                       "transformers": round(b, 1), "ratio": round(a / b, 2),
                       "same_output": same}  # fmt: skip
                gen_rows.append(row)
                print(json.dumps(row), flush=True)
    table = _table(rows, gen_rows, args)
    print(table)
    if args.write:
        head = f"## Encoder-decoder throughput (CPU: {cpu_name()})"
        write_section(head, "seq2seq_throughput.py", sys.argv[1:], versions(), table)


def _table(rows, gen_rows, args) -> str:
    lines = [
        f"batch {args.batch_size} examples, {args.steps} timed steps x {args.repeats} repeats "
        "(median); BART's default noise; dropout 0 on both sides.",
        "",
        "| size | text | precision | mean target | transformers target tok/s | side | "
        "selfsup | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['size']} | {r['scenario']} | {r['precision']} | "
                     f"{r['mean_target']} | {r['transformers']:,} | {r['side']} | "
                     f"{r['selfsup']:,} | {r['ratio']:.2f}x |")  # fmt: skip
    if gen_rows:
        lines += ["", "| size | decoding | transformers sentences/s | selfsup | ratio | "
                  "same greedy output |", "|---|---|---|---|---|---|"]  # fmt: skip
        for r in gen_rows:
            kind = "greedy" if r["beams"] == 1 else f"beam {r['beams']}"
            same = ("yes" if r["same_output"] else "NO") if r["beams"] == 1 else "-"
            lines.append(f"| {r['size']} | {kind} | {r['transformers']} | {r['selfsup']} | "
                         f"{r['ratio']:.2f}x | {same} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
