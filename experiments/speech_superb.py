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

Part 2 (issue 12) adds wav2vec 2.0, CPC, wav2vec, vq-wav2vec (+ its units -> BERT, probed as
units:vq-wav2vec:units-bert) and HuBERT iterations 1 and 2, on the same pretraining files, the
same `mini` preset and the same 30-minute budget per run, timed the same way:

    python experiments/speech_superb.py time wav2vec2     # or cpc, wav2vec, vq-wav2vec, hubert1
    python experiments/speech_superb.py all part2         # runs, units, labels, probes, in order
    python experiments/speech_superb.py time units-bert   # once vq-wav2vec is trained
    python experiments/speech_superb.py clusters          # HuBERT's labels against phones

vq-wav2vec-linear (and its units-bert-linear, probed as units:vq-wav2vec-linear:units-bert-linear)
is vq-wav2vec with the paper's Gumbel schedule, 2 -> 0.5 linearly over the first 70% of the
run's steps, where the default per-step decay stays near 2 in a 30-minute run; both take the
steps of the run they vary (`pretrain vq-wav2vec-linear` once vq-wav2vec is timed).

Issue 13's DeLoRes (VICReg on two augmented views of the log-mel frames), timed like part 1:

    python experiments/speech_superb.py time delores
    python experiments/speech_superb.py all delores       # its run, then it and its random twin

The waveform objectives train on 2 s crops (data.max_frames=32000). Their step on 2 cores is
seconds, not tenths (README, speech part 2), so `time` times 60 steps, not 400, and where `mini`
fits fewer than 200 steps in 30 minutes it times `tiny` too and the run takes `tiny` (the plan
records the preset; the budget decides). HuBERT: `selfsup cluster mfcc --k 100` gives the
iteration-1 labels; iteration 2 clusters iteration 1's middle layer (2 of mini's 3) with k = 100
too (the paper's 500 is for 960 h; 28 minutes of speech at 50 Hz is about 84k frames, and 100
keeps several hundred frames per cluster). Each iteration is its own run with its own 30-minute
budget; iteration 2 takes iteration 1's timing (same model, k and data: the same step cost).
The units BERT is the text `mini` preset, timed and budgeted like the others. Random-init
twins: random:NAME for each waveform run; hubert2 is compared with random:hubert1 (the same
architecture) and the units upstream with random:vq-wav2vec (the units loader has no random
BERT). Goals (`table`): HuBERT 2 beats HuBERT 1 on pr; every pretrained upstream beats its
random twin on ks, fold by fold.

SPEECH_SMOKE=1 checks the commands in minutes: the `tiny` preset, every 60th manifest file, a
30-second budget (20 timed steps), k = 10, ks and pr-frame on 2 folds, 1 seed, 1 epoch; its
own work folder (../speech-work-smoke) and results file (in it), never the real table.
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
SMOKE = os.environ.get("SPEECH_SMOKE") == "1"
DATA = Path(os.environ.get("SELFSUP_DATA", ROOT.parent / "shared" / "data"))
WORK = Path(os.environ.get("SPEECH_WORK", ROOT.parent / ("speech-work-smoke" if SMOKE
                                                          else "speech-work")))  # fmt: skip
RESULTS = (WORK / "results.jsonl" if SMOKE
           else ROOT / "experiments" / "results" / "speech_superb" / "results.jsonl")  # fmt: skip
SPLITS = ROOT / "selfsup" / "eval" / "splits"
PRESET = "tiny" if SMOKE else "mini"
BUDGET_S = 30 if SMOKE else 30 * 60
MIN_STEPS = 200  # part 2: fewer than this in the budget on `mini` -> `tiny`
KMEANS_K = (10, 10) if SMOKE else (100, 100)  # HuBERT iterations 1 and 2
# Each objective's flags; APC uses its paper's GRU (3 layers of the preset's width).
OBJECTIVES = {
    "mockingjay": ["--objective", "mockingjay"],
    "tera": ["--objective", "tera"],
    "apc": ["--objective", "apc", "--set", "model.arch=gru"],
}
# Part 2: the waveform objectives on 2 s crops; HuBERT's labels and the units file are made
# by prepare() before their runs.
WAVE = ["--set", "data.max_frames=32000"]
LABELS = {"hubert1": WORK / "labels1", "hubert2": WORK / "labels2"}
# vq-wav2vec-linear's schedule (the docstring): run_flags() makes this 70% of the run's steps
ANNEAL = "objective.anneal_steps=ANNEAL"
PART2 = {
    "wav2vec2": ["--objective", "wav2vec2", *WAVE],
    "cpc": ["--objective", "cpc", *WAVE],
    "wav2vec": ["--objective", "wav2vec", *WAVE],
    "vq-wav2vec": ["--objective", "vq-wav2vec", *WAVE],
    "units-bert": ["--objective", "mlm", "--tokenizer", "units"],
    "vq-wav2vec-linear": ["--objective", "vq-wav2vec", *WAVE, "--set", ANNEAL],
    "units-bert-linear": ["--objective", "mlm", "--tokenizer", "units"],
    "hubert1": ["--objective", "hubert", "--labels", str(LABELS["hubert1"]), *WAVE],
    "hubert2": ["--objective", "hubert", "--labels", str(LABELS["hubert2"]), *WAVE],
}
# Issue 13's DeLoRes: VICReg's loss on two augmented views of the same clips' log-mel frames,
# the part-1 encoder mean-pooled (objectives/delores.py); timed and budgeted like part 1.
DELORES = {"delores": ["--modality", "audio", "--objective", "vicreg"]}
RUNS = {**OBJECTIVES, **PART2, **DELORES}
# Each units BERT and the vq-wav2vec run whose units it reads; as an upstream, units:SRC:BERT.
UNITS_FROM = {"units-bert": "vq-wav2vec", "units-bert-linear": "vq-wav2vec-linear"}
UNITS_SPECS = {bert: f"units:{src}:{bert}" for bert, src in UNITS_FROM.items()}
# no plans of their own: the same model, data and step cost as the run named
TIMED_AS = {"hubert2": "hubert1", "vq-wav2vec-linear": "vq-wav2vec",
            "units-bert-linear": "units-bert"}  # fmt: skip
# Each part-2 upstream against its random-init twin (see the docstring).
TWINS = {**{n: f"random:{n}" for n in ("wav2vec2", "cpc", "wav2vec", "vq-wav2vec", "hubert1")},
         "hubert2": "random:hubert1", "vq-wav2vec-linear": "random:vq-wav2vec",
         **{spec: "random:vq-wav2vec" for spec in UNITS_SPECS.values()},
         "delores": "random:delores"}  # fmt: skip
BASELINES = ["fbank", "mfcc", "fbank+cmvn", "mfcc+cmvn"]


def cpu() -> str:
    """The CPU's name, cores and the vector width PyTorch's kernels use: two CPUs both named
    "AMD EPYC" served these runs, one with avx512 (and native bf16), one with avx2 only; fp32
    speed differs too."""
    import torch

    vec = torch.backends.cpu.get_cpu_capability().lower().replace("default", "no avx2")
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores, {vec})"
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
    if SMOKE:
        rows = rows[::60]  # every corpus, a few dozen clips
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


def units_file(bert: str) -> Path:
    return WORK / f"units-{UNITS_FROM[bert]}" / "units.txt"


def run_flags(name: str, steps: int) -> list[str]:
    """The run's flags, ANNEAL's placeholder made 70% of its steps."""
    anneal = f"objective.anneal_steps={int(0.7 * steps)}"
    return [anneal if f == ANNEAL else f for f in RUNS[name]]


def pretrain_cmd(name: str, steps: int, out: Path, preset: str = PRESET) -> list[str]:
    data = units_file(name) if name in UNITS_FROM else manifest()
    return [
        "selfsup", "pretrain", *run_flags(name, steps), "--preset", preset, "--data", str(data),
        "--steps", str(steps), "--save-every", "250", "--eval-every", "500", "--precision",
        "fp32", "--cache-dir", str(WORK / "cache"), "--out", str(out), "--no-progress",
    ]  # fmt: skip


def run(cmd: list[str], log: Path) -> None:
    print("+", " ".join(cmd), flush=True)
    with open(log, "a") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    if code:
        sys.exit(f"failed ({code}); see {log}")


def run_dir(name: str) -> Path:
    return WORK / "runs" / name


def build_atomically(out: Path, cmd: list[str], log: Path) -> None:
    """Run `cmd`, which writes the folder given by its --out, into a temporary folder renamed
    to `out` once done, so an interrupted run is redone rather than read half-written."""
    if out.exists():
        return
    tmp = out.with_name(out.name + ".tmp")
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    run([str(tmp) if c == "OUT" else c for c in cmd], log)
    tmp.replace(out)


def middle_layer(run: Path) -> int:
    n_layers = json.loads((run / "config.json").read_text())["model"]["n_layers"]
    return (n_layers + 1) // 2  # HuBERT base re-clusters layer 6 of 12


def prepare(name: str) -> None:
    """The inputs a part-2 run reads besides the manifest: HuBERT's labels, the units file."""
    cache = ["--cache-dir", str(WORK / "cache")]
    log = WORK / "runs" / f"{name}.log"
    if name == "hubert1":
        cmd = ["selfsup", "cluster", "mfcc", "--data", str(manifest()), "--k", str(KMEANS_K[0]),
               "--out", "OUT", *cache]  # fmt: skip
        build_atomically(LABELS[name], cmd, log)
    elif name == "hubert2" or name in UNITS_FROM:
        before = "hubert1" if name == "hubert2" else UNITS_FROM[name]
        if not (run_dir(before) / "model.safetensors").exists():
            sys.exit(f"{name} needs the {before} run: `pretrain {before}` first")
        if name == "hubert2":
            cmd = ["selfsup", "cluster", str(run_dir(before)), "--layer",
                   str(middle_layer(run_dir(before))), "--data", str(manifest()), "--k",
                   str(KMEANS_K[1]), "--out", "OUT", "--device", "cpu", *cache]  # fmt: skip
            build_atomically(LABELS[name], cmd, log)
        else:
            units = units_file(name)
            tmp = WORK / "units.tmp" / units.name
            cmd = ["selfsup", "units", str(run_dir(before)), "--data", str(manifest()), "--out",
                   str(tmp), *cache]  # fmt: skip
            if not units.parent.exists():
                subprocess.run(["rm", "-rf", str(tmp.parent)], check=True)
                tmp.parent.mkdir(parents=True)
                run(cmd, log)
                tmp.parent.replace(units.parent)


def time_steps(name: str, steps: int, preset: str = PRESET) -> float:
    """Seconds per optimizer step of the objective's recipe (a throwaway run; quiet machine)."""
    prepare(name)
    out = WORK / "timing" / name
    subprocess.run(["rm", "-rf", str(out)], check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = pretrain_cmd(name, steps, out, preset) + ["--eval-every", "0"]
    run(cmd, out.parent / f"{name}.log")
    m = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in m if "elapsed_s" in r]
    a, b = train[0], train[-1]  # from step 10 on: no warm-up in the figure; 400 steps mix
    # the short FSDD batches with the long timit/yesno ones as a whole run does
    per_step = (b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"])
    print(f"{name} ({preset}): {per_step:.3f} s/step -> {int(BUDGET_S / per_step)} steps "
          f"in {BUDGET_S / 60:g} minutes")  # fmt: skip
    return per_step


def time_plan(name: str) -> None:
    """Write the run's plan (steps in the budget, preset) from a timing, unless it has one."""
    # part 1 and the units BERT: 400 steps (tenths of a second each); waveforms: 60 (seconds)
    spectral = name in OBJECTIVES or name in DELORES or name in UNITS_FROM
    steps = 20 if SMOKE else 400 if spectral else 60
    preset = PRESET
    per_step = time_steps(name, steps, preset)
    if name in PART2 and BUDGET_S / per_step < MIN_STEPS and not SMOKE:
        preset = "tiny"
        per_step = time_steps(name, steps, preset)
    plan = WORK / "runs" / f"{name}.plan.json"
    if not plan.exists():
        plan.write_text(json.dumps({"steps": int(BUDGET_S / per_step), "preset": preset}))


def pretrain(name: str, steps: int | None) -> None:
    out = run_dir(name)
    if (out / "model.safetensors").exists():
        return
    plan = WORK / "runs" / f"{name}.plan.json"
    timed = WORK / "runs" / f"{TIMED_AS.get(name, name)}.plan.json"
    preset = PRESET
    if plan.exists() or (steps is None and timed.exists()):
        saved = json.loads((plan if plan.exists() else timed).read_text())
        preset = saved.get("preset", PRESET)
        steps = steps or saved["steps"]
    if steps is None:
        sys.exit(f"no step budget for {name}: run `time {name}` then `pretrain {name} --steps N`")
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_text(json.dumps({"steps": steps, "preset": preset}))
    prepare(name)
    log = WORK / "runs" / f"{name}.log"
    if (out / "config.json").exists():
        run(["selfsup", "pretrain", "--resume", str(out), "--steps", str(steps),
             "--no-progress"], log)  # fmt: skip
    else:
        run(pretrain_cmd(name, steps, out, preset), log)
    summary = json.loads((out / "summary.json").read_text())
    metrics = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    elapsed = max(r.get("elapsed_s", 0) for r in metrics)
    add_row({"kind": "pretrain", "name": name, "flags": run_flags(name, steps), "preset": preset,
             "steps": steps, "train_minutes": round(elapsed / 60, 1),
             "eval_l1": summary.get("eval_loss"), "clips": summary.get("clips")})  # fmt: skip


def superb(spec: str, seeds: int = 3) -> None:
    import torch

    from selfsup.eval.superb import run_superb

    torch.set_num_threads(1)  # the small probes run fastest on one thread

    if any(r["kind"] == "superb" and r["upstream"] == spec for r in rows()):
        return
    upstream = spec
    if spec.startswith("units:"):
        upstream = "units:" + ":".join(str(run_dir(n)) for n in spec.split(":")[1:])
    elif spec in RUNS or spec.startswith("random:"):
        name = spec.removeprefix("random:")
        upstream = spec.replace(name, str(run_dir(name)))
    out = WORK / "superb" / spec.replace(":", "-").replace("+", "-")
    t0 = time.perf_counter()
    # the smoke mode checks the wiring only: two ks folds and frame phones, one short probe
    smoke = {"seeds": 1, "epochs": 1, "folds": [0, 1]} if SMOKE else {"seeds": seeds}
    tasks = ["ks", "pr-frame"] if SMOKE else ["all"]
    report = run_superb(upstream, tasks, DATA, out, cache_dir=WORK / "cache", **smoke)
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
    return "\n".join(lines) + "\n\n" + goals_part2(by)


def ks_folds(a: dict, b: dict) -> str:
    """ks fold by fold (the same held-out speaker on both sides): "won/folds, mean gain",
    "yes" where `a` wins most folds and gains on average."""
    ka, kb = a["ks"]["values"], b["ks"]["values"]
    won = sum(x > y for x, y in zip(ka, kb, strict=True))
    gain = 100 * sum(x - y for x, y in zip(ka, kb, strict=True)) / len(ka)
    return f"{won}/{len(ka)}, {gain:+.1f}" + (" yes" if 2 * won > len(ka) and gain > 0 else " no")


def goals_part2(by: dict) -> str:
    """Issue 12's goals: every part-2 upstream beats its random-init twin on ks (fold by fold);
    HuBERT iteration 2 beats iteration 1 on pr (medians, by more than the larger spread)."""
    lines = ["| upstream | random twin | ks: folds won, mean gain (points) |", "|---|---|---|"]
    for name, twin in TWINS.items():
        if name in by and twin in by:
            lines.append(f"| {name} | {twin} | {ks_folds(by[name], by[twin])} |")
    if "hubert1" in by and "hubert2" in by:
        lines += ["", "| HuBERT 2 against 1 | gain (spread) |", "|---|---|"]
        for task, sign in (("pr-frame", 1), ("pr-ctc", -1)):
            a, b = by["hubert2"].get(task), by["hubert1"].get(task)
            if a and b:
                d = 100 * sign * (a["median"] - b["median"])
                spread = 100 * max(a["spread"], b["spread"])
                lines.append(f"| {task} | {d:+.1f} ({spread:.1f})" +
                             (" yes |" if d > spread else " no |"))  # fmt: skip
    return "\n".join(lines)


def cluster_quality(name: str, folder: Path) -> dict:
    """HuBERT's measures of a labelling against phones (arXiv:2106.07447, its cluster-quality
    analysis): phone purity (the share of frames whose cluster's most common phone is theirs),
    cluster purity (the same, phone -> cluster) and PNMI = I(phone; cluster) / H(phone), over
    the frames of the timit-sample files in the labels (the pretraining files; their .phn
    alignments, 39 folded phones, q and unaligned frames left out). A frame's phone is the one
    holding its centre, t * hop + offset samples (the labels' own frame grid)."""
    import numpy as np
    from sklearn.metrics import mutual_info_score

    from selfsup.eval.superb import labels_at, read_phn
    from selfsup.keys import IGNORE

    meta = json.loads((folder / "labels.json").read_text())
    fold = json.loads((SPLITS / "timit_sample.json").read_text())["fold39"]
    index = {p: i for i, p in enumerate(sorted({p for p in fold.values() if p is not None}))}
    y, clusters, files = [], [], 0
    for line in (folder / "labels.tsv").read_text().splitlines():
        path, _, ids = line.partition("\t")
        if "timit-sample" not in path:
            continue
        files += 1
        ids = np.array(ids.split(), dtype=np.int64)
        segments = [(a, b, IGNORE if fold.get(p) is None else index[fold[p]])
                    for a, b, p in read_phn(Path(path).with_suffix(".phn"))]  # fmt: skip
        at = labels_at(segments, np.arange(len(ids)) * meta["hop"] + meta["offset"],
                       meta["sample_rate"])  # fmt: skip
        y += at[at != IGNORE].tolist()
        clusters += ids[at != IGNORE].tolist()
    if not y:
        sys.exit(f"{folder} holds no timit-sample frames")
    joint = np.zeros((len(index), meta["k"]))
    np.add.at(joint, (y, clusters), 1)
    n = joint.sum()
    p_y = joint.sum(1) / n
    h_y = float(-(p_y[p_y > 0] * np.log(p_y[p_y > 0])).sum())
    return {"kind": "cluster_quality", "labels": name, "source": meta["source"],
            "layer": meta["layer"], "k": meta["k"], "frames": int(n),
            "files": files, "phone_purity": round(float(joint.max(0).sum() / n), 4),
            "cluster_purity": round(float(joint.max(1).sum() / n), 4),
            "pnmi": round(mutual_info_score(y, clusters) / h_y, 4)}  # fmt: skip


def clusters() -> None:
    """cluster_quality of HuBERT's two label sets and of every layer of the iteration-1 run
    (the middle one is labels2's; the others clustered here as labels2 was), one row each."""
    h1 = run_dir("hubert1")
    if not (h1 / "model.safetensors").exists():
        sys.exit("clusters needs the hubert1 run: `pretrain hubert1` first")
    folders = dict(LABELS)
    for layer in range(1, json.loads((h1 / "config.json").read_text())["model"]["n_layers"] + 1):
        if layer != middle_layer(h1):
            out = WORK / f"labels-hubert1-layer{layer}"
            cmd = ["selfsup", "cluster", str(h1), "--layer", str(layer), "--data",
                   str(manifest()), "--k", str(KMEANS_K[1]), "--out", "OUT", "--device", "cpu",
                   "--cache-dir", str(WORK / "cache")]  # fmt: skip
            build_atomically(out, cmd, WORK / "runs" / "clusters.log")
            folders[f"hubert1-layer{layer}"] = out
    done = {r["labels"] for r in rows() if r["kind"] == "cluster_quality"}
    for name, folder in folders.items():
        if (folder / "labels.tsv").exists() and name not in done:
            add_row(cluster_quality(name, folder))
    print("| clustered from | targets of | frames | phone purity | cluster purity | PNMI |")
    print("|---|---|---|---|---|---|")
    for r in rows():
        if r["kind"] == "cluster_quality":
            src = "MFCC" if r["layer"] is None else f"hubert1 layer {r['layer']}"
            used = r["labels"] if r["labels"] in LABELS else "-"
            print(
                f"| {src} (k={r['k']}) | {used} | {r['frames']:,} | "
                f"{r['phone_purity']:.3f} | {r['cluster_purity']:.3f} | {r['pnmi']:.3f} |"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "step", choices=["manifest", "time", "pretrain", "superb", "all", "table", "clusters"]
    )
    ap.add_argument("name", nargs="?")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    if args.step == "manifest":
        manifest()
    elif args.step == "time":
        (WORK / "runs").mkdir(parents=True, exist_ok=True)
        time_plan(args.name)
    elif args.step == "pretrain":
        pretrain(args.name, args.steps)
    elif args.step == "superb":
        superb(args.name, args.seeds)
    elif args.step == "clusters":  # HuBERT's labels against timit-sample's phones
        clusters()
    elif args.step == "table":
        print(table())
        print()
        print(goals())
    elif args.name == "delores":  # issue 13's DeLoRes row: its run, then it and its twin
        pretrain("delores", None)
        for spec in ("delores", "random:delores"):
            superb(spec, args.seeds)
        print(table())
    else:  # all [part1|part2]: both parts by default
        if args.name in (None, "part1"):
            for name in OBJECTIVES:  # the three runs first: the probes are quick after them
                pretrain(name, None)
            for spec in [*BASELINES, *OBJECTIVES, *(f"random:{n}" for n in OBJECTIVES)]:
                superb(spec, args.seeds)
        if args.name in (None, "part2"):
            for name in PART2:  # in dependency order: vq-wav2vec, then its units BERT, ...
                pretrain(name, None)
            specs = [UNITS_SPECS.get(n, n) for n in PART2]
            for spec in [*specs, *dict.fromkeys(TWINS.values())]:
                superb(spec, args.seeds)
        print(table())


if __name__ == "__main__":
    main()
