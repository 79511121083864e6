"""Built-in benchmarks over fine-tuning: `selfsup glue` (every GLUE task found, several seeds,
median and spread, GLUE average) and `selfsup compare` (several inits, same settings and seeds,
a table and a PNG of the dev metric over training)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from selfsup.errors import ConfigError

GLUE_FOLDERS = {
    "cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B",
    "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI",
}  # fmt: skip


def _spread(values: list[float]) -> dict:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def _out_folder(out: str) -> Path:
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if p.exists() and any(p.iterdir()):
        raise ConfigError(f"output folder {out} exists and is not empty")
    return p


def run_glue(args, log=print) -> dict:
    from selfsup.eval.metrics import glue_score
    from selfsup.finetune import FinetuneConfig, finetune, json_safe

    root = Path(args.data)
    if not root.is_dir():
        raise ConfigError(f"GLUE folder not found: {args.data}")
    wanted = args.tasks or list(GLUE_FOLDERS)
    unknown = [t for t in wanted if t not in GLUE_FOLDERS]
    if unknown:
        raise ConfigError(f"unknown GLUE task(s) {', '.join(unknown)}")
    found = {t: root / GLUE_FOLDERS[t] for t in wanted if (root / GLUE_FOLDERS[t]).is_dir()}
    if not found:
        raise ConfigError(f"no GLUE task folders ({', '.join(GLUE_FOLDERS.values())}) in {root}")
    out = _out_folder(args.out)
    rows = {}
    for task, folder in found.items():
        metric, values = None, []
        for seed in args.seeds:
            cfg = FinetuneConfig(
                task=task, data=str(folder), init=args.init, out=str(out / task / f"seed{seed}"),
                epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, max_len=args.max_len,
                seed=seed, preset=args.preset, tokenizer=args.tokenizer,
                train_limit=args.train_limit, device=getattr(args, "device", "auto"),
            )  # fmt: skip
            res = finetune(cfg, log=lambda s: None)
            metric = res["main_metric"]
            values.append(res["dev"][metric])
            log(f"{task} seed {seed}: {metric} = {values[-1]:.4f}")
        rows[task] = {"metric": metric, **_spread(values), "values": values}
    scores = glue_score({t: {r["metric"]: r["median"]} for t, r in rows.items()})
    table = _glue_table(rows, scores["glue"])
    log(table)
    result = {"init": args.init, "seeds": args.seeds, "tasks": rows, "glue": scores["glue"]}
    (out / "glue.json").write_text(json.dumps(json_safe(result), indent=2))
    (out / "glue.md").write_text(table + "\n")
    return result


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


def run_compare(args, log=print) -> dict:
    from selfsup.cli import _finetune_config
    from selfsup.finetune import finetune, json_safe

    if len(args.init) < 2:
        raise ConfigError("compare needs at least two --init values")
    if len(set(args.init)) < len(args.init):  # results are keyed by init
        raise ConfigError("compare got the same --init twice")
    out = _out_folder(args.out)
    results: dict[str, list[dict]] = {}
    for n, init in enumerate(args.init):
        name = f"{n}-{Path(init).name or init}"
        for seed in args.seeds:
            res = finetune(_finetune_config(args, init, seed, str(out / name / f"seed{seed}")),
                           log=lambda s: None)  # fmt: skip
            results.setdefault(init, []).append(res)
            log(f"{init} seed {seed}: {res['main_metric']} = {res['dev'][res['main_metric']]:.4f}")
    metric = next(iter(results.values()))[0]["main_metric"]
    summary = {
        init: {**_spread([r["dev"][metric] for r in rs]), "values": [r["dev"][metric] for r in rs]}
        for init, rs in results.items()
    }
    base = summary[args.init[-1]]
    lines = [
        f"task {args.task}, metric {metric}, seeds {args.seeds}",
        "| init | median | min | max | std | gain vs last (median) |",
        "|---|---|---|---|---|---|",
    ]
    for init, s in summary.items():
        gain = s["median"] - base["median"]
        lines.append(
            f"| {init} | {s['median']:.4f} | {s['min']:.4f} | {s['max']:.4f} | {s['std']:.4f} "
            f"| {gain:+.4f} |"
        )
    paired = [a - b for a, b in zip(summary[args.init[0]]["values"], base["values"], strict=True)]
    lines.append(
        f"per-seed gain of {args.init[0]} over {args.init[-1]}: "
        + ", ".join(f"{g:+.4f}" for g in paired)
        + f" (median {statistics.median(paired):+.4f}, min {min(paired):+.4f}, "
        f"max {max(paired):+.4f})"
    )
    table = "\n".join(lines)
    log(table)
    _plot(results, metric, out / "compare.png", args.task)
    report = {"task": args.task, "metric": metric, "summary": summary, "paired_gain": paired,
              "history": {k: [r["history"] for r in v] for k, v in results.items()}}  # fmt: skip
    (out / "compare.json").write_text(json.dumps(json_safe(report), indent=2))
    (out / "compare.md").write_text(table + "\n")
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
