"""A small-scale replication of BART's Table 1 (Lewis et al., arXiv:1910.13461): one tiny
encoder-decoder (2 + 2 layers of 128) pretrained with each of eight denoising objectives on the
same encoder-input token budget, then compared on
(a) held-out reconstruction: teacher-forced token accuracy on its own noise, and on one common
    probe for all (text infilling of 15% of the tokens in Poisson(3) spans, no permutation, no
    random replacement), with greedy exact match of whole segments on that probe;
(b) generation: SICK's entailment pairs, premise -> hypothesis (selfsup finetune --task
    seq2seq), ROUGE-L on SICK's test pairs, 3 fine-tuning seeds;
(c) understanding: SST-2 from the encoder (selfsup finetune --task sst2), accuracy on the
    labelled test file, 3 seeds.

    python experiments/bart_ablation.py all                # every step, resumable
    python experiments/bart_ablation.py pretrain infilling # one step of one objective
    python experiments/bart_ablation.py table              # the table and the plot

Each step is skipped when its result is recorded, and a pretraining run that stopped part-way
resumes from its last checkpoint (`selfsup pretrain --resume`), so the ablation runs in chunks
across sessions. Results: one JSON line per measurement in
experiments/results/bart_ablation/results.jsonl (the CPU named in each); work folders under
$ABLATION_WORK (default ../ablation-work). The corpus is experiments/recipe_corpus.py's (the
public-domain corpora of ../shared/data, deduplicated, no SST-2 text); it is made on first use.

The budget: every objective reads the same number of encoder-input tokens (BUDGET), so a run's
steps are BUDGET / (its mean source tokens per batch), measured on its first 20 batches (token
deletion and T5 make shorter sources, so those runs take more steps). FLOPs are estimated as
6 x parameters x tokens per side plus the output projection on the target tokens.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("ABLATION_WORK", ROOT.parent / "ablation-work"))
RESULTS = ROOT / "experiments" / "results" / "bart_ablation" / "results.jsonl"
DATA = Path(os.environ.get("SELFSUP_DATA", ROOT.parent / "shared" / "data"))

BUDGET = 5_000_000  # encoder-input tokens per objective
# A smoke run of every step in minutes (ABLATION_SMOKE=1, with its own ABLATION_WORK and
# ABLATION_RESULTS): a tiny budget and 200 training examples per fine-tuning.
SMOKE = os.environ.get("ABLATION_SMOKE") == "1"
if SMOKE:
    BUDGET = 40_000
RESULTS = Path(os.environ.get("ABLATION_RESULTS", RESULTS))
MAX_LEN, BATCH, LR, SEEDS = 128, 32, 1e-3, (0, 1, 2)
COMMON = ["--preset", "tiny", "--max-len", str(MAX_LEN), "--batch-size", str(BATCH),
          "--lr", str(LR), "--pack", "--precision", "fp32"]  # fmt: skip
NO_BART = ["--set", "objective.mask_prob=0", "--set", "objective.permute=0"]
OBJECTIVES: dict[str, list[str]] = {
    # BART's noises one at a time (30% of the tokens where a rate applies), then the paper's best
    "masking": ["--objective", "bart", "--set", "objective.infill=false", "--set",
                "objective.permute=0"],
    "deletion": ["--objective", "bart", *NO_BART, "--set", "objective.delete_prob=0.3"],
    "infilling": ["--objective", "bart", "--set", "objective.permute=0"],
    "permutation": ["--objective", "bart", "--set", "objective.mask_prob=0"],
    "rotation": ["--objective", "bart", *NO_BART, "--set", "objective.rotate=1"],
    "infilling+permutation": ["--objective", "bart"],
    "mass": ["--objective", "mass"],
    "t5": ["--objective", "t5"],
}  # fmt: skip
PROBE = {"mask_prob": 0.15, "infill": True, "random_prob": 0.0, "permute": 0.0, "rotate": 0.0,
         "delete_prob": 0.0}  # fmt: skip
SICK_FLAGS = ["--epochs", "6", "--lr", "5e-4", "--batch-size", "32", "--max-target-len", "64"]
SST2_FLAGS = ["--epochs", "2", "--lr", "5e-4", "--batch-size", "64"]
if SMOKE:
    SICK_FLAGS, SST2_FLAGS = [*SICK_FLAGS, "--train-limit", "200"], [*SST2_FLAGS, "--train-limit",
                                                                      "200"]  # fmt: skip


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    return "unknown CPU"


def sh(cmd: list[str], log: Path) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = log.stat().st_size if log.exists() else 0
    with open(log, "a") as f:
        code = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT).returncode
    if code:
        with open(log) as f:
            f.seek(start)
            sys.exit(f"command failed ({code}):\n{f.read()[-3000:]}")


def rows() -> list[dict]:
    if not RESULTS.exists():
        return []
    return [json.loads(x) for x in RESULTS.read_text().splitlines() if x.strip()]


def done(kind: str, name: str, seed: int | None = None) -> bool:
    return any(r["kind"] == kind and r["name"] == name and r.get("seed") == seed for r in rows())


def record(row: dict) -> None:
    """Append a result (replacing an earlier one of the same kind, name and seed)."""
    row = {"cpu": cpu(), "date": time.strftime("%Y-%m-%d"), **row}
    key = (row["kind"], row["name"], row.get("seed"))
    kept = [r for r in rows() if (r["kind"], r["name"], r.get("seed")) != key]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("".join(json.dumps(r) + "\n" for r in [*kept, row]))
    print(json.dumps(row), flush=True)


def corpus() -> Path:
    path = WORK / "corpus.jsonl.gz"
    if not path.exists():
        sh([sys.executable, ROOT / "experiments" / "recipe_corpus.py", DATA, path],
           WORK / "corpus.log")  # fmt: skip
    return path


def run_config(name: str):
    """The RunConfig that `selfsup pretrain COMMON OBJECTIVES[name]` makes (for planning)."""
    from selfsup.cli import _run_config, build_parser

    args = build_parser().parse_args(["pretrain", "--data", str(corpus()), *COMMON,
                                      *OBJECTIVES[name], "--out", "unused"])  # fmt: skip
    return _run_config(args)


def plan(name: str) -> dict:
    """Steps for BUDGET encoder-input tokens, and the mean tokens per batch on each side."""
    from selfsup.keys import ATTENTION_MASK, IGNORE, LABELS
    from selfsup.pretraining import prepare_data

    path = WORK / "runs" / f"{name}.plan.json"
    if path.exists():
        return json.loads(path.read_text())
    cfg = run_config(name)
    cfg.data.cache_dir = str(WORK / "cache")
    cfg.data.pack = False  # counting real tokens: the layout does not matter
    data = prepare_data(cfg, log=lambda _: None)
    src = tgt = 0
    for k in range(20):
        b = data.batches[k]
        src += int(b[ATTENTION_MASK].sum())
        tgt += int((b[LABELS] != IGNORE).sum())
    src, tgt = src / 20, tgt / 20
    p = {"steps": math.ceil(BUDGET / src), "source_per_batch": src, "target_per_batch": tgt}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(p))
    return p


def flops(run: Path, p: dict) -> float:
    """6 x parameters x tokens on each side + the tied output projection on the targets."""
    from safetensors import safe_open

    enc = dec = 0
    with safe_open(str(run / "model.safetensors"), "pt") as f:
        for key in f.keys():
            n = math.prod(f.get_slice(key).get_shape())
            if ".encoder." in f".{key}":
                enc += n
            elif ".decoder." in f".{key}":
                dec += n
            elif key.endswith("tokens.weight"):
                out = n
    src, tgt = p["steps"] * p["source_per_batch"], p["steps"] * p["target_per_batch"]
    return 6 * (enc * src + (dec + out) * tgt)


def pretrain(name: str) -> None:
    if done("pretrain", name):
        return
    p = plan(name)
    run = WORK / "runs" / name
    log = WORK / "runs" / f"{name}.log"
    t0 = time.time()
    if (run / "checkpoints" / "LATEST").exists() and not (run / "summary.json").exists():
        sh(["selfsup", "pretrain", "--resume", run, "--no-progress"], log)
    elif not (run / "summary.json").exists():
        shutil.rmtree(run, ignore_errors=True)
        warm = max(10, round(0.06 * p["steps"]))
        sh(["selfsup", "pretrain", "--data", corpus(), *COMMON, *OBJECTIVES[name],
            "--steps", p["steps"], "--warmup-steps", warm, "--save-every", 250,
            "--eval-every", max(100, p["steps"] // 4), "--cache-dir", WORK / "cache",
            "--no-progress", "--out", run], log)  # fmt: skip
    summary = json.loads((run / "summary.json").read_text())
    record({"kind": "pretrain", "name": name, "flags": OBJECTIVES[name], "steps": p["steps"],
            "source_tokens": round(p["steps"] * p["source_per_batch"]),
            "target_tokens": round(p["steps"] * p["target_per_batch"]),
            "tflop": round(flops(run, p) / 1e12, 1), "own_noise_acc": summary.get("eval_s2s_acc"),
            "minutes_this_call": round((time.time() - t0) / 60, 1)})  # fmt: skip


def probe(name: str, n_generate: int = 128) -> None:
    """The common probe: BART text infilling at 15% on the held-out segments."""
    import torch

    from selfsup.generate import GenerateConfig, generate
    from selfsup.keys import ATTENTION_MASK, IGNORE, INPUT_IDS, LABELS
    from selfsup.models import load_model
    from selfsup.objectives import build_objective
    from selfsup.pretraining import prepare_data

    if done("probe", name):
        return
    run = WORK / "runs" / name
    loaded = load_model(run)
    cfg = run_config(name)
    cfg.data.cache_dir = str(WORK / "cache")
    cfg.data.pack = False
    cfg.set_objective("bart")
    for k, v in PROBE.items():
        setattr(cfg.objective, k, v)
    data = prepare_data(cfg, log=lambda _: None, tok=loaded.tokenizer)
    probe_obj = build_objective(cfg.objective, loaded.config)
    probe_obj.model = loaded.model.model  # the run's encoder-decoder, scored on the probe
    probe_obj.eval()
    tok = loaded.tokenizer
    hits = total = exact = seen = 0
    with torch.no_grad():
        for b in data.eval_batches:
            out = probe_obj(b)
            hits += float(out["s2s_acc"])
            total += int((b[LABELS] != IGNORE).sum())
            if seen < n_generate:
                gen = GenerateConfig(max_new_tokens=MAX_LEN + 1)
                written = generate(probe_obj.model, b[INPUT_IDS], b[ATTENTION_MASK], tok.cls_id,
                                   tok.sep_id, gen)  # fmt: skip
                for row, w in zip(b[LABELS], written, strict=True):
                    if seen == n_generate:
                        break
                    target = row[row != IGNORE].tolist()[:-1]  # without the EOS
                    exact += int(w == target)
                    seen += 1
    record({"kind": "probe", "name": name, "probe": PROBE, "token_acc": round(hits / total, 4),
            "targets": total, "exact_match": round(exact / max(seen, 1), 4),
            "generated": seen})  # fmt: skip


def sick_folder() -> Path:
    """SICK's entailment pairs (premise -> hypothesis) as train/dev/test JSONL, by its
    SemEval_set column (TRAIN / TRIAL / TEST)."""
    out = WORK / "sick-entailment"
    if (out / "test.jsonl").exists():
        return out
    split = {"TRAIN": "train", "TRIAL": "dev", "TEST": "test"}
    lines = (DATA / "sick" / "SICK.txt").read_text(encoding="utf-8").splitlines()
    head = lines[0].split("\t")
    col = {k: head.index(k) for k in ("sentence_A", "sentence_B", "entailment_label",
                                      "SemEval_set")}  # fmt: skip
    parts: dict[str, list[str]] = {v: [] for v in split.values()}
    for line in lines[1:]:
        f = line.split("\t")
        if f[col["entailment_label"]] == "ENTAILMENT":
            row = {"source": f[col["sentence_A"]], "target": f[col["sentence_B"]]}
            parts[split[f[col["SemEval_set"]]]].append(json.dumps(row))
    out.mkdir(parents=True, exist_ok=True)
    for s, items in parts.items():
        (out / f"{s}.jsonl").write_text("".join(x + "\n" for x in items))
    return out


def finetune(task: str, name: str, seed: int) -> None:
    if done(task, name, seed):
        return
    run = WORK / "runs" / name
    out = WORK / "ft" / f"{name}-{task}-s{seed}"
    log = WORK / "ft" / f"{out.name}.log"
    if task == "sick":
        folder, flags, test_split = sick_folder(), SICK_FLAGS, "test"
        cmd = ["--task", "seq2seq", "--data", folder]
    else:
        folder, flags, test_split = DATA / "glue" / "SST-2", SST2_FLAGS, "test-labeled"
        cmd = ["--task", "sst2", "--data", folder]
    if not (out / "results.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        sh(["selfsup", "finetune", *cmd, "--init", run, "--seed", seed, "--out", out, *flags],
           log)  # fmt: skip
        (out / "minutes.txt").write_text(f"{(time.time() - t0) / 60:.2f}\n")
    res = json.loads((out / "results.json").read_text())
    ev = subprocess.run(["selfsup", "evaluate", str(out), *map(str, cmd), "--split", test_split],
                        capture_output=True, text=True, check=True)  # fmt: skip
    test = json.loads(ev.stdout.strip().splitlines()[-1])
    record({"kind": task, "name": name, "seed": seed, "flags": flags, "dev": res["dev"],
            "test": test, "minutes": float((out / "minutes.txt").read_text())})  # fmt: skip


def metric(r: dict) -> float:
    """The number a fine-tuning row is compared by: ROUGE-L (SICK; selfsup reports ROUGE in
    percent) or accuracy (SST-2, a fraction), both in percent."""
    t = r["test"]
    return t["rougeL"] if r["kind"] == "sick" else 100 * t["accuracy"]


def table() -> str:
    import statistics

    by = {}
    for r in rows():
        by.setdefault((r["kind"], r["name"]), []).append(r)

    def ft(kind, name):
        got = sorted(metric(r) for r in by.get((kind, name), []))
        if not got:
            return "-"
        spread = f" ({got[0]:.1f}-{got[-1]:.1f})" if len(got) > 1 else ""
        return f"{statistics.median(got):.1f}{spread} n={len(got)}"

    lines = [
        f"Tiny encoder-decoder (2 + 2 x 128), {BUDGET / 1e6:.0f}M encoder-input tokens each, "
        f"batch {BATCH}, max length {MAX_LEN}, lr {LR}. Fine-tuning: median (min-max) of seeds.",
        "",
        "| objective | steps | TFLOP | own-noise acc | probe acc | probe EM | SICK ROUGE-L | "
        "SST-2 acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in OBJECTIVES:
        pre = by.get(("pretrain", name), [{}])[0]
        pr = by.get(("probe", name), [{}])[0]

        def num(d, k, fmt):
            return format(d[k], fmt) if d.get(k) is not None else "-"

        if "pflop" in pre:  # rows recorded before the TFLOP field
            pre = {**pre, "tflop": 1000 * pre["pflop"]}
        lines.append(f"| {name} | {num(pre, 'steps', ',')} | {num(pre, 'tflop', '.1f')} | "
                     f"{num(pre, 'own_noise_acc', '.3f')} | {num(pr, 'token_acc', '.3f')} | "
                     f"{num(pr, 'exact_match', '.3f')} | {ft('sick', name)} | "
                     f"{ft('sst2', name)} |")  # fmt: skip
    return "\n".join(lines)


def plot() -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in OBJECTIVES if any(r["name"] == n and r["kind"] in ("sick", "sst2")
                                          for r in rows())]  # fmt: skip
    if not names:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind, label in ((axes[0], "sick", "SICK ROUGE-L (test)"),
                            (axes[1], "sst2", "SST-2 accuracy (test)")):  # fmt: skip
        for i, n in enumerate(names):
            vals = [metric(r) for r in rows() if r["kind"] == kind and r["name"] == n]
            jitter = random.Random(i).uniform
            ax.scatter([i + jitter(-0.1, 0.1) for _ in vals], vals, s=18, color="C0")
            if vals:
                ax.plot([i - 0.25, i + 0.25], [sorted(vals)[len(vals) // 2]] * 2, color="C3")
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("BART Table 1 at small scale: each dot a fine-tuning seed, red the median")
    fig.tight_layout()
    path = RESULTS.parent / "ablation.png"
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["all", "pretrain", "probe", "sick", "sst2", "table"])
    ap.add_argument("name", nargs="?", choices=list(OBJECTIVES))
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    args = ap.parse_args()
    names = [args.name] if args.name else list(OBJECTIVES)
    if args.step == "table":
        print(table())
        print(plot() or "(no fine-tuning yet: no plot)")
        return
    steps = ["pretrain", "probe", "sick", "sst2"] if args.step == "all" else [args.step]
    for name in names:  # objective by objective: each finishes before the next starts
        for step in steps:
            if step == "pretrain":
                pretrain(name)
            elif step == "probe":
                probe(name)
            else:
                for seed in args.seeds:
                    finetune(step, name, seed)


if __name__ == "__main__":
    main()
