"""Image self-supervision on CIFAR-10 (issue 13): every method pretrained on the 20k-image
subset of ../shared/data/cifar10 for the same wall-clock budget on this machine, then probed by
kNN and a linear probe (3 probe seeds) on the 10k test images, against raw pixels and the
untrained backbone; and the lecture's collapse claims as four short runs with their monitors.

    python experiments/image_ssl.py all                 # calibrate, pretrain, probe; resumable
    python experiments/image_ssl.py pretrain simclr     # one step of one method
    python experiments/image_ssl.py collapse            # the four collapse runs and their plot
    python experiments/image_ssl.py twins               # the pixel Transformers untrained
    python experiments/image_ssl.py table               # the table (and the plot)

The budget: each method's steps are BUDGET_S divided by its own seconds per step, measured once
(`calibrate`, 12 steps on the quiet machine, recorded with the CPU); the runs are then step
counts, so they resume in chunks across sessions (`--save-every`) and give the same run whatever
else the machine does later. Results: one JSON line per measurement in
experiments/results/image_ssl/results.jsonl; work folders under $IMAGE_WORK (default
../image-work).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from ledger import Ledger, sh

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("IMAGE_WORK", ROOT.parent / "image-work"))
RESULTS = Path(os.environ.get("IMAGE_RESULTS", ROOT / "experiments" / "results" / "image_ssl"
                              / "results.jsonl"))  # fmt: skip
DATA = Path(os.environ.get("SELFSUP_DATA", ROOT.parent / "shared" / "data"))
CIFAR = DATA / "cifar10" / "cifar10-jpeg-subset.zip"
SMOKE = os.environ.get("IMAGE_SMOKE") == "1"  # minutes: a tiny budget, kNN only
BUDGET_S = 60 if SMOKE else 30 * 60
COLLAPSE_STEPS = 6 if SMOKE else 300
COMMON = ["--modality", "image", "--preset", "tiny" if SMOKE else "mini", "--data", str(CIFAR),
          "--precision", "auto", "--threads", "2", "--no-progress"]  # fmt: skip
# in the order they run: the four methods with published anchors first
METHODS: dict[str, list[str]] = {
    "simclr": ["--objective", "simclr"],
    "byol": ["--objective", "byol"],
    "vicreg": ["--objective", "vicreg"],
    "barlow": ["--objective", "barlow"],
    "simsiam": ["--objective", "simsiam"],
    "rotation": ["--objective", "rotation"],
    "relpatch": ["--objective", "relpatch"],
    # a Transformer over 256 positions: at batch 256 a step took 12-15 s here (147 steps in the
    # budget), at batch 64 0.8 s (over 2,000 steps, ~7 epochs)
    "pixels-masked": ["--objective", "pixels", "--batch-size", "64"],
    "pixels-next": ["--objective", "pixels", "--set", "objective.mode=next", "--batch-size", "64"],
}
# The lecture's claims (all at COLLAPSE_STEPS): positives alone collapse; BYOL's predictor and
# slow target avoid it; BYOL without its predictor collapses; VICReg's variance term alone (with
# invariance, no covariance) is enough.
COLLAPSE: dict[str, list[str]] = {
    "positives only": ["--objective", "vicreg", "--set", "objective.var_weight=0", "--set",
                       "objective.cov_weight=0"],
    "byol": ["--objective", "byol"],
    "byol, no predictor": ["--objective", "byol", "--set", "objective.predictor_layers=0"],
    "vicreg, variance + invariance": ["--objective", "vicreg", "--set", "objective.cov_weight=0"],
}  # fmt: skip
# solo-learn's README, ResNet-18, 1,000 epochs on the full lossless 50k CIFAR-10 train set,
# online linear top-1 (as ../shared/data/cifar10/SOURCE.txt records them): not comparable
# budgets, listed for scale.
ANCHORS = {"simclr": 90.74, "byol": 92.58, "barlow": 92.10, "vicreg": 92.07}
# methods whose backbone is not the `random` row's ResNet: each gets its own untrained twin
TWINS = ("pixels-masked", "pixels-next")
SEEDS = (0,) if SMOKE else (0, 1, 2)


LEDGER = Ledger(RESULTS)
rows, found, record = LEDGER.rows, LEDGER.found, LEDGER.record


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def calibrate(name: str) -> int:
    """The method's steps for BUDGET_S: seconds per step over steps 3..12 of a short run."""
    if (r := found("calibrate", name)) is not None:
        return r["steps"]
    out = WORK / "calibrate" / name
    shutil.rmtree(out, ignore_errors=True)
    sh(["selfsup", "pretrain", *COMMON, *METHODS[name], "--steps", 12, "--warmup-steps", 1,
        "--eval-every", 0, "--save-every", 0, "--set", "train.log_every=1", "--out", out],
       WORK / "calibrate" / f"{name}.log")  # fmt: skip
    train = [r for r in metrics(out) if "elapsed_s" in r]
    per_step = (train[-1]["elapsed_s"] - train[1]["elapsed_s"]) / (len(train) - 2)
    steps = max(10, int(BUDGET_S / per_step))
    record({"kind": "calibrate", "name": name, "s_per_step": round(per_step, 3),
            "steps": steps, "budget_s": BUDGET_S})  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    return steps


def run_dir(name: str, kind: str = "pretrain") -> Path:
    """The run folder: the table's under runs/, the collapse runs' under collapse/ (a shared
    folder once let the 300-step collapse BYOL run stand in for the table's BYOL)."""
    return WORK / ("runs" if kind == "pretrain" else kind) / name.replace(" ", "_").replace(",", "")


def pretrain(name: str, flags: list[str], steps: int, kind: str = "pretrain") -> Path:
    run = run_dir(name, kind)
    if found(kind, name) is not None:
        return run
    log = run.parent / f"{run.name}.log"
    t0 = time.time()
    if (run / "checkpoints").exists() and not (run / "summary.json").exists():
        sh(["selfsup", "pretrain", "--resume", run, "--no-progress"], log)
    elif not (run / "summary.json").exists():
        shutil.rmtree(run, ignore_errors=True)
        sh(["selfsup", "pretrain", *COMMON, *flags, "--steps", steps, "--save-every", 100,
            "--eval-every", max(10, steps // 10), "--out", run], log)  # fmt: skip
    done = json.loads((run / "config.json").read_text())["train"]["steps"]
    if done != steps:
        raise SystemExit(f"{run} was trained for {done} steps, not {steps}: move it away")
    summary = json.loads((run / "summary.json").read_text())
    record({"kind": kind, "name": name, "flags": flags, "steps": steps,
            "minutes_this_call": round((time.time() - t0) / 60, 1),
            **{k: v for k, v in summary.items() if k.startswith("eval_")}})  # fmt: skip
    return run


def probe(name: str, source: str) -> None:
    if found("probe", name) is not None:
        return
    out = WORK / "probes" / f"{name.replace(':', '_')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    methods = ["knn"] if SMOKE else ["knn", "linear"]
    sh(["selfsup", "probe", source, "--data", CIFAR, "--method", *methods, "--seeds", *SEEDS,
        "--threads", 2, "--out", out], WORK / "probes" / f"{out.stem}.log")  # fmt: skip
    report = json.loads(out.read_text())
    record({"kind": "probe", "name": name, **{m: report[m] for m in methods}})


def twin(name: str) -> None:
    """`random (NAME)`: NAME's own backbone untrained, its baseline when the backbone is not the
    ResNet of the `random` row (the pixel-sequence Transformer). random:RUN takes the weights
    from the run's seed and only the data-fitted buffers (the colour palette) from the run,
    so a 2-step run of the same recipe serves as RUN."""
    label = f"random ({name})"
    if found("probe", label) is not None:
        return
    run = WORK / "twins" / name
    if not (run / "summary.json").exists():
        shutil.rmtree(run, ignore_errors=True)
        log = run.parent / f"{name}.log"
        sh(["selfsup", "pretrain", *COMMON, *METHODS[name], "--steps", 2, "--warmup-steps", 1,
            "--eval-every", 0, "--save-every", 0, "--out", run], log)  # fmt: skip
    probe(label, f"random:{run}")


def collapse() -> None:
    runs = {n: pretrain(n, f, COLLAPSE_STEPS, "collapse") for n, f in COLLAPSE.items()}
    from selfsup.eval.image_probe import collapse_plot

    # the training rows (every log_every steps: the monitors are logged terms), denser than evals
    train = {n: [r for r in metrics(run) if "embed_std" in r] for n, run in runs.items()}
    path = RESULTS.parent / "collapse.png"
    collapse_plot(train, path, keys=("embed_std", "embed_rank"))
    print(path)


def table() -> str:
    lines = ["| method | steps | kNN top-1 | linear top-1 (3 seeds) | 1,000-epoch anchor |",
             "|---|---|---|---|---|"]  # fmt: skip
    names = ["pixels", *METHODS, "random", *(f"random ({n})" for n in TWINS)]
    for name in names:
        p = found("probe", name)
        pre = found("pretrain", name)
        if p is None:
            continue

        def pct(m, p=p):
            r = p.get(m)
            return "-" if r is None else f"{100 * r['mean']:.1f} +- {100 * r['std']:.1f}"

        steps = f"{pre['steps']:,}" if pre else "-"
        anchor = f"{ANCHORS[name]:.1f}" if name in ANCHORS else ""
        lines.append(f"| {name} | {steps} | {pct('knn')} | {pct('linear')} | {anchor} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["all", "calibrate", "pretrain", "probe", "collapse", "twins",
                                     "table"])  # fmt: skip
    ap.add_argument("name", nargs="?", choices=list(METHODS))
    args = ap.parse_args()
    if args.step == "table":
        print(table())
        return
    if args.step == "collapse":
        collapse()
        return
    if args.step == "twins":
        for name in TWINS:
            twin(name)
        return
    names = [args.name] if args.name else list(METHODS)
    if args.step in ("all", "probe") and args.name is None:
        probe("pixels", "pixels")
    for name in names:
        if args.step in ("all", "calibrate", "pretrain"):
            steps = calibrate(name)
        if args.step in ("all", "pretrain"):
            pretrain(name, METHODS[name], steps)
        if args.step in ("all", "probe"):
            probe(name, str(run_dir(name)))
        if name == "simclr" and args.step in ("all", "probe"):
            probe("random", f"random:{run_dir('simclr')}")
    if args.step == "all" and args.name is None:
        for name in TWINS:
            twin(name)
        collapse()
        print(table())


if __name__ == "__main__":
    main()
