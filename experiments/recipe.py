"""The representation recipe of issue 9: pretrain a mini model (4 x 256) for a wall-clock budget,
then fine-tune it on SST-2 (dev and the labelled test file) and EWT POS.

    python experiments/recipe.py pretrain NAME --minutes 15 -- --preset mini --objective mlm ...
    python experiments/recipe.py sst2 NAME --seeds 0 1 2 -- --epochs 3 --lr 1e-4
    python experiments/recipe.py pos NAME --seeds 0 1 2 -- --epochs 3 --lr 2e-4
    python experiments/recipe.py table -- --epochs 2 --lr 2e-4 --batch-size 64 --precision bf16

A budget of M minutes becomes a number of steps before the run: a 60-step probe of the same
settings measures steps/s (steps 20-60, after warm-up of the caches and allocator), and the run
gets M x 60 x steps/s steps with a 6% warm-up. The run checkpoints every 500 steps and a second
call resumes it (`selfsup pretrain --resume`), so no run depends on one working session. Each
result is one JSON line in experiments/results/recipe/results.jsonl (the CPU named in it); the
work folders (runs, fine-tuned models) go to $RECIPE_WORK (default ../recipe-work). While a probe
runs, $RECIPE_WORK/QUIET exists: start no other heavy job then.

The corpus is experiments/recipe_corpus.py's (deduplicated, no SST-2 text); make it first:
    python experiments/recipe_corpus.py ../shared/data $RECIPE_WORK/corpus.jsonl.gz
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("RECIPE_WORK", ROOT.parent / "recipe-work"))
RESULTS = ROOT / "experiments" / "results" / "recipe" / "results.jsonl"
DATA = Path(os.environ.get("SELFSUP_DATA", ROOT.parent / "shared" / "data"))
PROBE_STEPS = 60


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    return platform.processor() or "unknown CPU"


def sh(cmd: list[str], log: Path | None = None) -> None:
    """Run `cmd`, its output appended to `log` as it comes; exit with its tail if it fails."""
    print("+", " ".join(cmd), flush=True)
    log = log or WORK / "last-command.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = log.stat().st_size if log.exists() else 0
    with open(log, "a") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    if code:
        with open(log) as f:
            f.seek(start)
            sys.exit(f"command failed ({code}):\n{f.read()[-3000:]}")


def wait_for_quiet() -> None:
    """Wait while a test run or a benchmark is running (a probe is timed)."""
    busy = ["pgrep", "-f", "pytest|benchmarks/"]
    while subprocess.run(busy, capture_output=True).returncode == 0:
        time.sleep(5)


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]


def record(row: dict) -> None:
    """Append `row`, replacing an earlier row of the same run (a finished step run again)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    row = {"cpu": cpu(), "date": time.strftime("%Y-%m-%d %H:%M"), **row}
    key = lambda r: (r["kind"], r["name"], r.get("seed"), r["flags"])  # noqa: E731
    kept = [x for x in RESULTS.read_text().splitlines() if x] if RESULTS.exists() else []
    kept = [x for x in kept if key(json.loads(x)) != key(row)]
    RESULTS.write_text("".join(x + "\n" for x in [*kept, json.dumps(row)]))
    print(json.dumps(row), flush=True)


def flops_per_token(model: dict, seq: int, mask_prob: float) -> float:
    """Training FLOPs per real token: 3 x forward; forward = 2 x the encoder's non-embedding
    weights + attention over `seq` (QK^T and AV, 4 x seq x dim per layer) + the MLM head at the
    masked share (transform dim^2 + decoder dim x vocab)."""
    d, L, f, v = model["dim"], model["n_layers"], model["ffn_dim"], model["vocab_size"]
    per_layer = 4 * d * d + 2 * d * f
    forward = 2 * L * per_layer + 4 * L * seq * d + mask_prob * 2 * (d * d + d * v)
    return 3 * forward


def pretrain(name: str, minutes: float, flags: list[str]) -> None:
    run, plan_file = WORK / "runs" / name, WORK / "runs" / f"{name}.plan.json"
    corpus = WORK / "corpus.jsonl.gz"
    if not corpus.exists():
        sys.exit(f"no corpus at {corpus}: run experiments/recipe_corpus.py first")
    base = ["selfsup", "pretrain", "--data", str(corpus), "--no-progress", *flags]
    if plan_file.exists():
        plan = json.loads(plan_file.read_text())
    else:
        probe = WORK / "probe" / name
        shutil.rmtree(probe, ignore_errors=True)
        quiet = WORK / "QUIET"  # a timed step: other jobs wait while this file exists
        quiet.write_text(f"probe {name}\n")
        wait_for_quiet()
        try:
            sh([*base, "--steps", str(PROBE_STEPS), "--warmup-steps", "10", "--eval-every", "0",
                "--save-every", "0", "--set", "train.log_every=10",
                "--out", str(probe)])  # fmt: skip
        finally:
            quiet.unlink(missing_ok=True)
        rows = {r["step"]: r for r in metrics(probe) if "elapsed_s" in r}
        sps = (PROBE_STEPS - 20) / (rows[PROBE_STEPS]["elapsed_s"] - rows[20]["elapsed_s"])
        steps = int(minutes * 60 * sps)
        plan = {"name": name, "minutes": minutes, "flags": flags, "probe_steps_per_s": sps,
                "steps": steps, "warmup": max(10, round(0.06 * steps)), "cpu": cpu()}  # fmt: skip
        shutil.rmtree(probe, ignore_errors=True)
        WORK.joinpath("runs").mkdir(parents=True, exist_ok=True)
        plan_file.write_text(json.dumps(plan, indent=1))
    steps = plan["steps"]
    log = WORK / "runs" / f"{name}.log"
    if (run / "summary.json").exists():
        print(f"{name}: already done")
    elif (run / "checkpoints").exists() and any((run / "checkpoints").iterdir()):
        sh(["selfsup", "pretrain", "--resume", str(run), "--no-progress"], log)
    else:
        shutil.rmtree(run, ignore_errors=True)
        sh([*base, "--steps", str(steps), "--warmup-steps", str(plan["warmup"]),
            "--save-every", "500", "--eval-every", str(max(100, steps // 4)),
            "--out", str(run)], log)  # fmt: skip
    cfg = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    train_rows = [r for r in metrics(run) if "tokens_per_s" in r]
    # tokens trained: each process's average rate x its time, summed over resumed pieces
    tokens, prev = 0.0, None
    for r in train_rows:
        if prev is not None and r["elapsed_s"] < prev["elapsed_s"]:  # a resumed piece began
            tokens += prev["tokens_per_s"] * prev["elapsed_s"]
        prev = r
    tokens += prev["tokens_per_s"] * prev["elapsed_s"]
    seq, mask = cfg["data"]["max_len"], cfg["objective"].get("mask_prob", 0.15)
    record({
        "kind": "pretrain", "name": name, "minutes_budget": minutes, "flags": flags,
        "steps": steps, "minutes": summary.get("minutes"),
        "precision": cfg["train"].get("precision"), "tokens_trained": round(tokens),
        "flops": round(tokens * flops_per_token(cfg["model"], seq, mask)),
        "heldout_mlm_acc": summary.get("heldout_mlm_acc"),
        "unigram_baseline_acc": summary.get("unigram_baseline_acc"),
        "corpus_tokens": summary.get("tokens"),
        **({"note": plan["note"]} if plan.get("note") else {}),
    })  # fmt: skip


def finetune(task: str, name: str, seeds: list[int], flags: list[str]) -> None:
    init = "scratch" if name == "scratch" else str(WORK / "runs" / name)
    folder = {"sst2": DATA / "glue" / "SST-2", "pos": DATA / "ud-english-ewt"}[task]
    test_split = {"sst2": "test-labeled", "pos": "test"}[task]
    tag = "-".join(f.lstrip("-") for f in flags).replace("/", "_") or "default"
    for seed in seeds:
        out = WORK / "ft" / f"{name}-{task}-{tag}-s{seed}"
        log = WORK / "ft" / f"{out.name}.log"
        if not (out / "results.json").exists():
            shutil.rmtree(out, ignore_errors=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            sh(["selfsup", "finetune", "--task", task, "--data", str(folder), "--init", init,
                "--seed", str(seed), "--out", str(out), *flags], log)  # fmt: skip
            (out / "minutes.txt").write_text(f"{(time.time() - t0) / 60:.2f}\n")
        res = json.loads((out / "results.json").read_text())
        ev = subprocess.run(
            ["selfsup", "evaluate", str(out), "--task", task, "--data", str(folder),
             "--split", test_split], capture_output=True, text=True, check=True,
        )  # fmt: skip
        test = json.loads(ev.stdout.strip().splitlines()[-1])
        record({
            "kind": task, "name": name, "seed": seed, "flags": flags,
            "dev": res["dev"], "kept_step": res.get("kept_step"), "test": test,
            "minutes": float((out / "minutes.txt").read_text()),
        })  # fmt: skip


def table(ft_flags: list[str] | None = None) -> None:
    """A markdown table: one row per pretraining run, with its SST-2 fine-tunings (`ft_flags`
    only, when given: the screening recipe) as dev / test accuracy, median over seeds."""
    rows = [json.loads(x) for x in RESULTS.read_text().splitlines() if x]
    runs = {r["name"]: r for r in rows if r["kind"] == "pretrain"}
    print("| run | settings | steps | tokens | PFLOP | held-out MLM acc | SST-2 dev | SST-2 test "
          "| fine-tunings |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in runs.items():
        ft = [x for x in rows if x["kind"] == "sst2" and x["name"] == name
              and (ft_flags is None or x["flags"] == ft_flags)]  # fmt: skip
        dev = [x["dev"]["accuracy"] for x in ft]
        test = [x["test"]["accuracy"] for x in ft]
        med = lambda v: f"{100 * sorted(v)[len(v) // 2]:.1f}" if v else "-"  # noqa: E731
        note = f"; {r['note']}" if r.get("note") else ""
        print(f"| {name} | {' '.join(r['flags'])} ({r['precision']}{note}) | {r['steps']} | "
              f"{r['tokens_trained'] / 1e6:.1f}M | {r['flops'] / 1e15:.2f} | "
              f"{r['heldout_mlm_acc']:.3f} | {med(dev)} | {med(test)} | {len(ft)} |")  # fmt: skip


def main() -> None:
    argv = sys.argv[1:]
    rest = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("pretrain", "sst2", "pos", "table"))
    ap.add_argument("name", nargs="?")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args(argv)
    if args.what == "table":
        table(rest or None)
    elif args.what == "pretrain":
        pretrain(args.name, args.minutes, rest)
    else:
        finetune(args.what, args.name, args.seeds, rest)


if __name__ == "__main__":
    main()
