"""Issue 11's table: Mockingjay, TERA and APC pretrained here (at most 30 minutes each on the
2 CPU cores) against fbank, MFCC (with and without CMVN) and random-init upstreams, on a small
SUPERB (ks: FSDD leave-one-speaker-out folds; sid: timit-sample 16 speakers 7/3 and FSDD's
official split; pr: timit-sample phones, frame accuracy and CTC PER), 3 probe seeds.

    python experiments/speech_superb.py manifest          # the pretraining files (no test file)
    python experiments/speech_superb.py time mockingjay   # seconds per step, quiet machine
    python experiments/speech_superb.py pretrain mockingjay --steps N   (resumable: run again)
    python experiments/speech_superb.py superb fbank      # or a run name, or random:NAME
    python experiments/speech_superb.py all               # every missing step, in order
    python experiments/speech_superb.py table             # README table from results.jsonl

Pretraining data: every file in the "pretrain" lists of selfsup/eval/splits (FSDD's index 5-49
files of its 6 speakers, the timit-sample utterances in no test set of any task, yesno's train
files): 2,823 clips, 28 minutes of real speech; no synthetic speech. Work folder: $SPEECH_WORK
(default ../speech-work beside the repository); results: experiments/results/speech_superb/.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SELFSUP_DATA", ROOT.parent / "shared" / "data"))
WORK = Path(os.environ.get("SPEECH_WORK", ROOT.parent / "speech-work"))
RESULTS = ROOT / "experiments" / "results" / "speech_superb" / "results.jsonl"
SPLITS = ROOT / "selfsup" / "eval" / "splits"
PRESET = "mini"
BUDGET_S = 30 * 60
# Each objective's flags; APC uses its paper's GRU (3 layers of the preset's width).
OBJECTIVES = {
    "mockingjay": ["--objective", "mockingjay"],
    "tera": ["--objective", "tera"],
    "apc": ["--objective", "apc", "--set", "model.arch=gru"],
}
BASELINES = ["fbank", "mfcc", "fbank+cmvn", "mfcc+cmvn"]


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    return platform.processor()


def manifest() -> Path:
    out = WORK / "pretrain.csv"
    if out.exists():
        return out
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, folder in (("fsdd", "fsdd"), ("timit_sample", "timit-sample"), ("yesno", "yesno")):
        split = json.loads((SPLITS / f"{name}.json").read_text())
        rows += [DATA / folder / p for p in split["pretrain"]]
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path"])
        w.writerows([str(r)] for r in rows)
    tmp.replace(out)
    print(f"{len(rows)} pretraining files -> {out}")
    return out


def rows() -> list[dict]:
    if not RESULTS.exists():
        return []
    return [json.loads(r) for r in RESULTS.read_text().splitlines() if r.strip()]


def add_row(row: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps({"cpu": cpu(), "date": time.strftime("%Y-%m-%d"), **row}) + "\n")


def pretrain_cmd(name: str, steps: int, out: Path) -> list[str]:
    return [
        "selfsup", "pretrain", *OBJECTIVES[name], "--preset", PRESET, "--data", str(manifest()),
        "--steps", str(steps), "--save-every", "250", "--eval-every", "500", "--precision",
        "fp32", "--cache-dir", str(WORK / "cache"), "--out", str(out), "--no-progress",
    ]  # fmt: skip


def run(cmd: list[str], log: Path) -> None:
    print("+", " ".join(cmd), flush=True)
    with open(log, "a") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    if code:
        sys.exit(f"failed ({code}); see {log}")


def time_steps(name: str, steps: int = 400) -> float:
    """Seconds per optimizer step of the objective's recipe (a throwaway run; quiet machine)."""
    out = WORK / "timing" / name
    subprocess.run(["rm", "-rf", str(out)], check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    run(pretrain_cmd(name, steps, out) + ["--eval-every", "0"], out.parent / f"{name}.log")
    m = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in m if "elapsed_s" in r]
    a, b = train[0], train[-1]  # from step 10 on: no warm-up in the figure; 400 steps mix
    # the short FSDD batches with the long timit/yesno ones as a whole run does
    per_step = (b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"])
    print(f"{name}: {per_step:.3f} s/step -> {int(BUDGET_S / per_step)} steps in 30 minutes")
    return per_step


def pretrain(name: str, steps: int | None) -> None:
    out = WORK / "runs" / name
    if (out / "model.safetensors").exists():
        return
    plan = WORK / "runs" / f"{name}.plan.json"
    if steps is None:
        if not plan.exists():
            sys.exit(
                f"no step budget for {name}: run `time {name}` then `pretrain {name} --steps N`"
            )
        steps = json.loads(plan.read_text())["steps"]
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_text(json.dumps({"steps": steps}))
    log = WORK / "runs" / f"{name}.log"
    if (out / "config.json").exists():
        run(["selfsup", "pretrain", "--resume", str(out), "--no-progress"], log)
    else:
        run(pretrain_cmd(name, steps, out), log)
    summary = json.loads((out / "summary.json").read_text())
    metrics = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    elapsed = max(r.get("elapsed_s", 0) for r in metrics)
    add_row({"kind": "pretrain", "name": name, "flags": OBJECTIVES[name], "preset": PRESET,
             "steps": steps, "train_minutes": round(elapsed / 60, 1),
             "eval_l1": summary.get("eval_loss"), "clips": summary.get("clips")})  # fmt: skip


def superb(spec: str, seeds: int = 3) -> None:
    import torch

    from selfsup.eval.superb import run_superb

    torch.set_num_threads(1)  # the small probes run fastest on one thread

    if any(r["kind"] == "superb" and r["upstream"] == spec for r in rows()):
        return
    upstream = spec
    if spec in OBJECTIVES or spec.startswith("random:"):
        name = spec.removeprefix("random:")
        upstream = spec.replace(name, str(WORK / "runs" / name))
    out = WORK / "superb" / spec.replace(":", "-").replace("+", "-")
    t0 = time.perf_counter()
    report = run_superb(upstream, ["all"], DATA, out, seeds=seeds, cache_dir=WORK / "cache")
    tasks = {t: {k: v for k, v in r.items() if k in ("metric", "median", "spread", "values",
                                                      "lr", "unit", "layer_weights")}
             for t, r in report["tasks"].items()}  # fmt: skip
    add_row({"kind": "superb", "upstream": spec, "tasks": tasks,
             "minutes": round((time.perf_counter() - t0) / 60, 1)})  # fmt: skip


def table() -> str:
    from selfsup.eval.superb import format_table

    by = {r["upstream"]: {"tasks": r["tasks"]} for r in rows() if r["kind"] == "superb"}
    return format_table(by) if by else "(no results yet)"


def goals() -> str:
    """The issue's goal per pretrained upstream: beat its random-init twin and fbank on ks and
    pr by more than the spread. ks is compared fold by fold (the same held-out speaker on both
    sides), pr by medians against the larger of the two spreads."""
    by = {r["upstream"]: r["tasks"] for r in rows() if r["kind"] == "superb"}
    lines = ["| upstream | against | ks: folds won, mean gain (points) | pr-frame gain (spread) "
             "| pr-ctc PER gain (spread) |", "|---|---|---|---|---|"]  # fmt: skip
    for name in OBJECTIVES:
        for other in ("fbank", f"random:{name}"):
            if name not in by or other not in by:
                continue
            a, b = by[name], by[other]
            cells = [name, other]
            ka, kb = a["ks"]["values"], b["ks"]["values"]
            won = sum(x > y for x, y in zip(ka, kb, strict=True))
            gain = 100 * sum(x - y for x, y in zip(ka, kb, strict=True)) / len(ka)
            cells.append(f"{won}/{len(ka)}, {gain:+.1f}")
            for task, sign in (("pr-frame", 1), ("pr-ctc", -1)):
                d = 100 * sign * (a[task]["median"] - b[task]["median"])
                spread = 100 * max(a[task]["spread"], b[task]["spread"])
                cells.append(f"{d:+.1f} ({spread:.1f})" + (" yes" if d > spread else " no"))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["manifest", "time", "pretrain", "superb", "all", "table"])
    ap.add_argument("name", nargs="?")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    if args.step == "manifest":
        manifest()
    elif args.step == "time":
        steps = int(BUDGET_S / time_steps(args.name))
        plan = WORK / "runs" / f"{args.name}.plan.json"
        plan.parent.mkdir(parents=True, exist_ok=True)
        if not plan.exists():
            plan.write_text(json.dumps({"steps": steps}))
    elif args.step == "pretrain":
        pretrain(args.name, args.steps)
    elif args.step == "superb":
        superb(args.name, args.seeds)
    elif args.step == "table":
        print(table())
        print()
        print(goals())
    else:
        for name in OBJECTIVES:  # the three runs first: the probes are quick after them
            pretrain(name, None)
        for spec in [*BASELINES, *OBJECTIVES, *(f"random:{n}" for n in OBJECTIVES)]:
            superb(spec, args.seeds)
        print(table())


if __name__ == "__main__":
    main()
