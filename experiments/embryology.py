"""BERT embryology here (issue 14; Chiang, Huang and Lee, arXiv:2010.02480): one 60-minute text
pretraining run (the mini preset, MLM + SOP as ALBERT's, on the packaged Gutenberg corpus) that
keeps its weights on a log-spaced schedule of steps (`--save-schedule log`: 0, 1, 2, 3, 4, 6, 8,
12, ...), then `selfsup embryology` on every saved step: a linear UPOS probe, MLM accuracy per
part of speech on UD English-EWT dev, SOP accuracy and held-out MLM loss, against the step.

    python experiments/embryology.py all          # calibrate, pretrain, embryology; resumable
    python experiments/embryology.py calibrate    # seconds per step -> the run's steps
    python experiments/embryology.py pretrain     # the run (resumes from its last checkpoint)
    python experiments/embryology.py probe        # embryology on the saved steps

The budget: the run's steps are BUDGET_S over the seconds per step measured once (`calibrate`,
12 steps, recorded with the CPU), so the run is a step count: it resumes in chunks across
sessions (`--save-every`) and is the same run whatever else the machine does later. The
embryology command itself resumes too (it keeps the steps it measured in its JSON).

Results: experiments/results/embryology/ (results.jsonl, one row per measurement with the CPU;
embryology.json and embryology.png, copied from the run). Work folders under $EMBRYO_WORK
(default ../embryology-work). EMBRYO_SMOKE=1 runs every step in minutes (the tiny preset, a
30-second budget, small probe samples) with its work and results under ../embryology-smoke
unless EMBRYO_WORK / EMBRYO_RESULTS say otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from ledger import Ledger, sh

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SELFSUP_DATA", ROOT.parent / "shared" / "data"))
UD = DATA / "ud-english-ewt"
SMOKE = os.environ.get("EMBRYO_SMOKE") == "1"
_DEFAULT_WORK = ROOT.parent / ("embryology-smoke" if SMOKE else "embryology-work")
WORK = Path(os.environ.get("EMBRYO_WORK", _DEFAULT_WORK))
_DEFAULT_RESULTS = WORK / "results" if SMOKE else ROOT / "experiments" / "results" / "embryology"
RESULTS = Path(os.environ.get("EMBRYO_RESULTS", _DEFAULT_RESULTS))
BUDGET_S = 30 if SMOKE else 60 * 60
PRESET = "tiny" if SMOKE else "mini"
# mini: BERT-Mini (4 x 256), batch 64, lr 1e-3 (selfsup/presets/text.py); sequences of 128
COMMON = ["--preset", PRESET, "--objective", "mlm+sop", "--max-len", "128", "--precision",
          "auto", "--threads", "2", "--no-progress"]  # fmt: skip
SAVE_EVERY = 50 if SMOKE else 200  # checkpoints to resume from (the schedule's are separate)
PROBE = ["--train-words", "1000", "--dev-words", "300"] if SMOKE else []  # else 20k / 5k


def selfsup(*args) -> list:
    return [sys.executable, "-m", "selfsup", *args]


LEDGER = Ledger(RESULTS / "results.jsonl", key=("kind",), smoke=SMOKE)
rows, found, record = LEDGER.rows, LEDGER.found, LEDGER.record


def calibrate() -> int:
    """The run's steps for BUDGET_S: seconds per step over steps 3..12 of a short run."""
    if (r := found("calibrate")) is not None:
        return r["steps"]
    out = WORK / "calibrate"
    shutil.rmtree(out, ignore_errors=True)
    sh(selfsup("pretrain", *COMMON, "--steps", 12, "--warmup-steps", 1, "--eval-every", 0,
               "--save-every", 0, "--set", "train.log_every=1", "--out", out),
       WORK / "calibrate.log")  # fmt: skip
    train = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in train if "elapsed_s" in r]
    per_step = (train[-1]["elapsed_s"] - train[1]["elapsed_s"]) / (len(train) - 2)
    steps = max(20, int(BUDGET_S / per_step))
    record({"kind": "calibrate", "preset": PRESET, "s_per_step": round(per_step, 3),
            "steps": steps, "budget_s": BUDGET_S})  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    return steps


def pretrain(steps: int) -> Path:
    run = WORK / "run"
    log = WORK / "run.log"
    t0 = time.time()
    if not (run / "summary.json").exists():
        if (run / "checkpoints").exists():
            sh(selfsup("pretrain", "--resume", run, "--no-progress"), log)
        else:
            shutil.rmtree(run, ignore_errors=True)
            warmup = max(1, min(500, steps // 10))
            sh(selfsup("pretrain", *COMMON, "--steps", steps, "--warmup-steps", warmup,
                       "--save-every", SAVE_EVERY, "--save-schedule", "log", "--eval-every",
                       max(10, steps // 20), "--out", run), log)  # fmt: skip
    if found("pretrain") is None:
        summary = json.loads((run / "summary.json").read_text())
        record({"kind": "pretrain", "flags": COMMON, "steps": steps,
                "minutes_this_call": round((time.time() - t0) / 60, 1), **summary})  # fmt: skip
        shutil.copy(run / "config.json", RESULTS / "pretrain-config.json")
    return run


def probe(run: Path) -> None:
    out = WORK / "embryology"
    # one thread: the probes' small matrix products run fastest on one (and on a busy machine)
    sh(selfsup("embryology", run, "--probe", "pos", "--data", UD, "--out", out, "--threads", 1,
               *PROBE), WORK / "embryology.log")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in ("embryology.json", "embryology.png"):
        shutil.copy(out / name, RESULTS / name)
    report = json.loads((out / "embryology.json").read_text())
    first, last = report["steps"][0], report["steps"][-1]
    record({"kind": "embryology", "steps": [r["step"] for r in report["steps"]],
            "pos_probe_acc": {"first": first["pos_probe_acc"], "last": last["pos_probe_acc"]},
            "mlm_word_acc": {"first": first.get("mlm_word_acc"),
                             "last": last.get("mlm_word_acc")},
            "majority_tag_acc": report["baselines"]["majority_dev_accuracy"],
            "minutes": round(sum(r["seconds"] for r in report["steps"]) / 60, 1)})  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["all", "calibrate", "pretrain", "probe"])
    args = ap.parse_args()
    if not UD.is_dir():
        sys.exit(f"{UD} is absent (set SELFSUP_DATA to the shared data folder)")
    if args.step == "probe":  # the run as it is (its saved steps so far)
        probe(WORK / "run")
        return
    steps = calibrate()
    if args.step in ("all", "pretrain"):
        run = pretrain(steps)
    if args.step == "all":
        probe(run)


if __name__ == "__main__":
    main()
