"""Built-in benchmarks over fine-tuning: `selfsup glue` and `selfsup clue` (every GLUE / CLUE
task found, several seeds, median and spread, the average of the medians) and `selfsup compare`
(several inits, same settings and seeds, a table and a PNG of the dev metric over training).

    run_glue("runs/base", "glue_data", "out/glue", seeds=[0, 1, 2], epochs=3, lr=2e-5)
    run_clue("runs/zh", ["shared/data/clue", "shared/data/cmrc2018"], "out/clue", fold=0)
    run_compare(["runs/a", "runs/b"], "sst2", "glue_data/SST-2", "out/cmp", seeds=[0, 1])

Keyword settings are FinetuneConfig fields (epochs, lr, batch_size, max_len, preset, tokenizer,
train_limit, device, options, ...), the same for every run.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from selfsup.errors import ConfigError
from selfsup.paths import check_out_folder

GLUE_FOLDERS = {
    "cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B",
    "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI",
}  # fmt: skip
# CLUE tasks -> the folder names they are found under (the first is the shared data's name).
CLUE_FOLDERS = {
    "ocnli": ("ocnli",),
    "tnews": ("tnews-fewclue", "tnews"),
    "chnsenticorp": ("chinese-sentiment", "chnsenticorp"),
    "cmrc2018": ("cmrc2018",),
}


def _spread(values: list[float]) -> dict:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def run_glue(
    init: str,
    data: str,
    out: str,
    tasks: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    log=print,
    **settings,
) -> dict:
    """Fine-tune `init` on every GLUE task of `tasks` (default: all) whose folder (CoLA, SST-2,
    ...) is in `data`, once per seed; write glue.json and glue.md (medians, spread, the GLUE
    average of the medians) into `out`."""
    from selfsup.eval.metrics import glue_score
    from selfsup.finetune import json_safe

    root = Path(data)
    if not root.is_dir():
        raise ConfigError(f"GLUE folder not found: {data}")
    wanted = list(tasks or GLUE_FOLDERS)
    unknown = [t for t in wanted if t not in GLUE_FOLDERS]
    if unknown:
        raise ConfigError(f"unknown GLUE task(s) {', '.join(unknown)}")
    found = {t: root / GLUE_FOLDERS[t] for t in wanted if (root / GLUE_FOLDERS[t]).is_dir()}
    if not found:
        raise ConfigError(f"no GLUE task folders ({', '.join(GLUE_FOLDERS.values())}) in {root}")
    out_dir = check_out_folder(out)
    seeds = list(seeds)
    rows = {task: _seeds(task, folder, init, out_dir, seeds, log, settings)
            for task, folder in found.items()}  # fmt: skip
    scores = glue_score({t: {r["metric"]: r["median"]} for t, r in rows.items()})
    table = _glue_table(rows, scores["glue"])
    log(table)
    result = {"init": init, "seeds": seeds, "tasks": rows, "glue": scores["glue"]}
    (out_dir / "glue.json").write_text(json.dumps(json_safe(result), indent=2))
    (out_dir / "glue.md").write_text(table + "\n")
    return result


def _seeds(task: str, folder: Path, init: str, out_dir: Path, seeds: list, log, settings) -> dict:
    """Fine-tune `init` on `task` once per seed into out_dir/task/seedN: the dev main metric's
    spread and values."""
    from selfsup.finetune import FinetuneConfig, finetune

    metric, values = None, []
    for seed in seeds:
        run = out_dir / task / f"seed{seed}"
        log(f"{task} seed {seed}: fine-tuning {init} -> {run}")
        cfg = FinetuneConfig(task, str(folder), init, str(run), seed=seed, **settings)
        res = finetune(cfg, log=lambda s: None)
        metric = res["main_metric"]
        values.append(res["dev"][metric])
        log(f"{task} seed {seed}: {metric} = {values[-1]:.4f}")
    return {"metric": metric, **_spread(values), "values": values}


def _glue_table(rows: dict, average: float) -> str:
    lines = [
        "| task | metric | median | min | max | std | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, r in rows.items():
        lines.append(
            f"| {task} | {r['metric']} | {100 * r['median']:.1f} | {100 * r['min']:.1f} | "
            f"{100 * r['max']:.1f} | {100 * r['std']:.1f} | {r['n']} |"
        )
    lines.append(f"| **GLUE average** (of medians) | | {100 * average:.1f} | | | | |")
    return "\n".join(lines)


def run_clue(
    init: str,
    data: str | Sequence[str],
    out: str,
    tasks: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    fold: int | str = 0,
    train_size: str = "10k",
    log=print,
    **settings,
) -> dict:
    """Fine-tune `init` on every CLUE task of `tasks` (default: all of CLUE_FOLDERS) found in
    `data`, once per seed; write clue.json and clue.md (medians, spread, the average of the
    medians, in %) into `out`. `data` is one or more folders, each a task folder itself
    (ocnli/, tnews-fewclue/, chinese-sentiment/, cmrc2018/) or a folder holding some. TNEWS' is
    FewCLUE's: train and dev are fold `fold` (240 titles each), not CLUE's 53k; OCNLI trains on
    train.`train_size`.json. A task found but without a train and dev split (the shared
    cmrc2018/ has dev and trial only) is left out with a log line, or is an error when `tasks`
    names it."""
    from selfsup.data.tasks import FILE_CHOICES, load_task
    from selfsup.finetune import json_safe

    for flag, name, value in (
        ("--fold", "fold", fold),
        ("--ocnli-train", "train_size", train_size),
    ):
        if str(value) not in FILE_CHOICES[name]:
            raise ConfigError(f"{flag} {value} is not one of {', '.join(FILE_CHOICES[name])}")
    roots = [Path(d) for d in ([data] if isinstance(data, str | Path) else data)]
    for root in roots:
        if not root.is_dir():
            raise ConfigError(f"CLUE folder not found: {root}")
    unknown = [t for t in tasks or () if t not in CLUE_FOLDERS]
    if unknown:
        raise ConfigError(
            f"unknown CLUE task(s) {', '.join(unknown)}; known: {', '.join(CLUE_FOLDERS)}"
        )
    found: dict[str, Path] = {}
    for root in roots:
        for task, names in CLUE_FOLDERS.items():
            here = (
                [root] if root.name in names else [root / n for n in names if (root / n).is_dir()]
            )
            for folder in here:
                if task in found and found[task] != folder:
                    raise ConfigError(f"task {task} found twice: {found[task]} and {folder}")
                found[task] = folder
    wanted = list(tasks or CLUE_FOLDERS)
    found = {t: found[t] for t in wanted if t in found}
    missing = [t for t in tasks or () if t not in found]
    if missing or not found:
        names = ", ".join(n[0] for t, n in CLUE_FOLDERS.items() if t in (missing or wanted))
        raise ConfigError(f"no CLUE task folders ({names}) in {', '.join(map(str, roots))}")
    options = {"tnews": {"fold": fold}, "ocnli": {"train_size": train_size}}
    shared_options = settings.pop("options", {})
    described = {}
    for task, folder in list(found.items()):
        opts = {**shared_options, **options.get(task, {})}
        try:
            split = {s: load_task(task, folder, s, **opts) for s in ("train", "dev")}
        except ConfigError as e:
            if tasks:
                raise
            log(f"{task}: left out ({e})")
            del found[task]
            continue
        described[task] = _describe(task, opts, split["train"], split["dev"])
    if not found:
        raise ConfigError(f"no CLUE task in {', '.join(map(str, roots))} has a train and dev split")
    out_dir = check_out_folder(out)
    seeds = list(seeds)
    rows = {}
    for task, folder in found.items():
        opts = {**shared_options, **options.get(task, {})}
        row = _seeds(task, folder, init, out_dir, seeds, log, {**settings, "options": opts})
        rows[task] = {**row, "data": described[task]}
    average = statistics.mean(_percent(r["metric"], r["median"]) for r in rows.values())
    table = _clue_table(rows, average)
    log(table)
    result = {"init": init, "seeds": seeds, "tasks": rows, "clue": average}
    (out_dir / "clue.json").write_text(json.dumps(json_safe(result), indent=2))
    (out_dir / "clue.md").write_text(table + "\n")
    return result


def _describe(task: str, opts: dict, train, dev) -> str:
    """What a CLUE row was trained and scored on, for the table."""
    what = f"{len(train):,} train / {len(dev):,} dev"
    if task == "tnews":
        what = f"FewCLUE fold {opts['fold']}: {what} (not CLUE's 53k train)"
    elif task == "ocnli":
        what = f"train.{opts['train_size']}: {what}"
    elif task == "chnsenticorp":
        what += " (a seeded 10% hold-out)"
    if train.skipped or dev.skipped:
        why = train.skipped_what or dev.skipped_what
        what += f"; skipped {train.skipped} train + {dev.skipped} dev {why}"
    return what


def _percent(metric: str, value: float) -> float:
    """QA metrics (exact_match, f1) are percentages already; accuracy and the rest are shares."""
    return value if metric in ("exact_match", "f1") else 100 * value


def _clue_table(rows: dict, average: float) -> str:
    lines = [
        "| task | data | metric | median | min | max | std | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, r in rows.items():
        pct = [f"{_percent(r['metric'], r[k]):.1f}" for k in ("median", "min", "max", "std")]
        lines.append(f"| {task} | {r['data']} | {r['metric']} | {' | '.join(pct)} | {r['n']} |")
    lines.append(f"| **CLUE average** (of medians) | | | {average:.1f} | | | | |")
    return "\n".join(lines)


def run_compare(
    inits: Sequence[str],
    task: str,
    data: str,
    out: str,
    seeds: Sequence[int] = (0, 1, 2),
    log=print,
    **settings,
) -> dict:
    """Fine-tune each of `inits` on `task` with the same settings and seeds; write compare.json
    (per-init spread, the per-seed gain of the first init over the last, dev curves),
    compare.md and compare.png into `out`."""
    from selfsup.finetune import FinetuneConfig, finetune, json_safe

    inits, seeds = list(inits), list(seeds)
    if len(inits) < 2:
        raise ConfigError("compare needs at least two --init values")
    if len(set(inits)) < len(inits):  # results are keyed by init
        raise ConfigError("compare got the same --init twice")
    out_dir = check_out_folder(out)
    results: dict[str, list[dict]] = {}
    for n, init in enumerate(inits):
        name = f"{n}-{Path(init).name or init}"
        for seed in seeds:
            run = out_dir / name / f"seed{seed}"
            log(f"{task} seed {seed}: fine-tuning {init} -> {run}")
            cfg = FinetuneConfig(task, data, init, str(run), seed=seed, **settings)
            res = finetune(cfg, log=lambda s: None)
            results.setdefault(init, []).append(res)
            log(f"{init} seed {seed}: {res['main_metric']} = {res['dev'][res['main_metric']]:.4f}")
    metric = next(iter(results.values()))[0]["main_metric"]
    summary = {
        init: {**_spread([r["dev"][metric] for r in rs]), "values": [r["dev"][metric] for r in rs]}
        for init, rs in results.items()
    }
    base = summary[inits[-1]]
    lines = [
        f"task {task}, metric {metric}, seeds {seeds}",
        "| init | median | min | max | std | gain vs last (median) |",
        "|---|---|---|---|---|---|",
    ]
    for init, s in summary.items():
        gain = s["median"] - base["median"]
        lines.append(
            f"| {init} | {s['median']:.4f} | {s['min']:.4f} | {s['max']:.4f} | {s['std']:.4f} "
            f"| {gain:+.4f} |"
        )
    paired = [a - b for a, b in zip(summary[inits[0]]["values"], base["values"], strict=True)]
    lines.append(
        f"per-seed gain of {inits[0]} over {inits[-1]}: "
        + ", ".join(f"{g:+.4f}" for g in paired)
        + f" (median {statistics.median(paired):+.4f}, min {min(paired):+.4f}, "
        f"max {max(paired):+.4f})"
    )
    table = "\n".join(lines)
    log(table)
    _plot(results, metric, out_dir / "compare.png", task)
    report = {"task": task, "metric": metric, "summary": summary, "paired_gain": paired,
              "history": {k: [r["history"] for r in v] for k, v in results.items()}}  # fmt: skip
    (out_dir / "compare.json").write_text(json.dumps(json_safe(report), indent=2))
    (out_dir / "compare.md").write_text(table + "\n")
    return report


def _plot(results: dict, metric: str, path: Path, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for init, runs in results.items():
        for i, r in enumerate(runs):
            steps = [h["step"] for h in r["history"]]
            vals = [h[metric] for h in r["history"]]
            ax.plot(steps, vals, marker="o", alpha=0.8, color=f"C{list(results).index(init)}",
                    label=init if i == 0 else None)  # fmt: skip
    ax.set_xlabel("training step")
    ax.set_ylabel(f"dev {metric}")
    ax.set_title(f"{task}: dev {metric} during fine-tuning (one line per seed)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
