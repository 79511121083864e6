"""Built-in benchmarks over fine-tuning: `selfsup glue` and `selfsup clue` (every GLUE / CLUE
task found, several seeds, median and spread, the average of the medians) and `selfsup compare`
(several inits, same settings and seeds, a table and a PNG of the dev metric over training).

    run_glue("runs/base", "glue_data", "out/glue", seeds=[0, 1, 2], epochs=3, lr=2e-5)
    run_clue("runs/zh", ["shared/data/clue", "shared/data/cmrc2018"], "out/clue", fold=0)
    run_compare(["runs/a", "runs/b"], "sst2", "glue_data/SST-2", "out/cmp", seeds=[0, 1])

Keyword settings are FinetuneConfig fields (epochs, lr, batch_size, max_len, preset, tokenizer,
train_limit, device, options, ...), the same for every run.

Every init is checked before anything is fine-tuned or written (it loads, or is `scratch` with a
tokenizer and an architecture). The output folder is one run folder per task (or init) and seed,
plus plan.json (what was asked) written first: a benchmark stopped in the middle keeps its
finished runs, and the same command run again resumes it, reusing every run folder that has a
results.json and redoing the others. A folder planned with other settings is refused (unless no
run in it finished: it is then started over).
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
from collections import Counter
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
    from selfsup.finetuning import json_safe

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
    check_inits([init], settings)
    seeds = list(seeds)
    plan = {"command": "glue", "init": init, "data": data, "tasks": list(found), "seeds": seeds,
            "settings": _plan_settings(settings)}  # fmt: skip
    out_dir = start_out_folder(out, plan, [Path(t) / f"seed{s}" for t in found for s in seeds], log)
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
    metric, values = None, []
    for seed in seeds:
        res = _run_one(task, str(folder), init, out_dir, out_dir / task / f"seed{seed}", seed,
                       log, settings)  # fmt: skip
        metric = res["main_metric"]
        values.append(res["dev"][metric])
        log(f"{task} seed {seed}: {metric} = {values[-1]:.4f}")
    return {"metric": metric, **_spread(values), "values": values}


def _run_one(
    task: str, data: str, init: str, out_dir: Path, run: Path, seed: int, log, settings: dict
) -> dict:
    """The results of fine-tuning `init` on `task` with `seed` into `run`: read from its
    results.json when an earlier call finished it, else fine-tuned now. A failure says which runs
    are kept and how to go on."""
    from selfsup.finetuning import FinetuneConfig, finetune

    done = finished(run)
    if done is not None:
        log(f"{task} seed {seed}: {init} already done in {run} (kept)")
        return done
    if run.exists():  # killed or interrupted before the end (an error removes its folder)
        log(f"{task} seed {seed}: removing the unfinished {run}")
        shutil.rmtree(run)
    log(f"{task} seed {seed}: fine-tuning {init} -> {run}")
    cfg = FinetuneConfig(task=task, data=data, init=init, out=str(run), seed=seed, **settings)
    try:
        return finetune(cfg, log=lambda s: None)
    except BaseException as e:
        n = sum(1 for r in out_dir.glob("*/seed*") if finished(r) is not None)
        hint = (
            f"{n} finished run(s) are kept in {out_dir}; the same command again resumes there "
            f"(finished runs are not redone), or remove {out_dir} to start over"
        )
        if n == 0 and not run.exists():  # nothing kept (an error removes its run folder)
            (out_dir / "plan.json").unlink(missing_ok=True)
            for folder in (run.parent, out_dir):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            hint = f"nothing was kept in {out_dir}"
        if isinstance(e, ConfigError):
            raise ConfigError(f"{task} seed {seed}, init {init}: {e} ({hint})") from None
        log(f"{task} seed {seed}: {init} stopped: {hint}")
        raise


def finished(run: Path) -> dict | None:
    """The results of a run folder that fine-tuned to the end, else None (no results.json, or
    one written on Ctrl-C)."""
    try:
        res = json.loads((run / "results.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return res if isinstance(res, dict) and not res.get("interrupted") else None


def check_inits(inits: Sequence[str], settings: dict) -> None:
    """Check, before anything is fine-tuned or written, that every init can be used: a folder
    selfsup loads (a run, a fine-tuned or a HF BERT folder), or `scratch` with a tokenizer and
    an architecture (`preset`, or a run as `tokenizer`). A ConfigError naming the init if not."""
    from selfsup.finetuning import FinetuneConfig, init_encoder

    arch = {k: settings[k] for k in ("preset", "tokenizer") if k in settings}
    for init in inits:
        cfg = FinetuneConfig(task="classify", data="", init=init, out="", **arch)
        try:
            init_encoder(cfg, log=lambda s: None)  # loads (and drops) the weights: checks them
        except ConfigError as e:
            msg = str(e)
            raise ConfigError(msg if init in msg else f"--init {init}: {msg}") from None


def start_out_folder(out: str, plan: dict, runs: Sequence[Path], log) -> Path:
    """The output folder of a benchmark doing `plan` through the run folders `runs` (relative):
    a new or empty folder gets plan.json; a folder with the same plan.json is resumed; one with
    another plan is refused when some run in it finished, else started over."""
    from selfsup.finetuning import json_safe

    p = Path(out)
    plan = json.loads(json.dumps(json_safe(plan)))  # as it reads back (tuples -> lists)
    plan_file = p / "plan.json"
    if plan_file.is_file():
        old = json.loads(plan_file.read_text())
        done = [r for r in runs if finished(p / r) is not None]
        differ = [k for k in sorted(set(old) | set(plan)) if old.get(k) != plan.get(k)]
        if differ and done:
            raise ConfigError(
                f"{p} holds a benchmark with other settings ({', '.join(differ)} differ; "
                f"{len(done)} run(s) finished): use another --out, or remove {p}"
            )
        if not differ:
            log(f"resuming {p}: {len(done)} of {len(runs)} runs finished, kept")
            return p
        log(f"{p}: no run of its earlier plan finished; starting over")
        for r in {Path(r).parts[0] for r in runs} | {Path(r).parts[0] for r in _planned(old)}:
            shutil.rmtree(p / r, ignore_errors=True)
        plan_file.unlink()
    check_out_folder(p, " (use another --out)")
    p.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps(plan, indent=2) + "\n")
    return p


def _plan_settings(settings: dict) -> dict:
    """The settings a resumed benchmark must share with its start (the device may change)."""
    return {k: v for k, v in settings.items() if k != "device"}


def _planned(plan: dict) -> list[str]:
    """The top-level run folders of an earlier plan.json (tasks, or inits' folder names)."""
    return list(plan.get("tasks") or plan.get("folders") or [])


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
    from selfsup.finetuning import json_safe

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
    check_inits([init], settings)
    seeds = list(seeds)
    plan = {"command": "clue", "init": init, "data": [str(r) for r in roots],
            "tasks": list(found), "seeds": seeds, "fold": str(fold), "train_size": train_size,
            "settings": _plan_settings({**settings, "options": shared_options})}  # fmt: skip
    out_dir = start_out_folder(out, plan, [Path(t) / f"seed{s}" for t in found for s in seeds], log)
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
    (per-init spread, the per-seed gain of the first init over the last, dev curves, the
    majority-class dev accuracy of classification tasks), compare.md and compare.png into `out`.
    An init is a path or "scratch", or NAME=PATH to label it NAME in the table and the plot
    (default label: the folder's name, with its parents when names clash or it is "model")."""
    from selfsup.finetuning import json_safe

    named = [_split_init(i) for i in inits]
    paths = [path for _, path in named]
    seeds = list(seeds)
    if len(paths) < 2:
        raise ConfigError("compare needs at least two --init values")
    if len(set(paths)) < len(paths):  # results are keyed by init
        raise ConfigError("compare got the same --init twice")
    labels = dict(zip(paths, _labels(named), strict=True))
    if len(set(labels.values())) < len(labels):
        raise ConfigError(f"compare got the same label twice: {', '.join(labels.values())}")
    check_inits(paths, settings)
    folders = {init: f"{n}-{labels[init].replace('/', '-')}" for n, init in enumerate(paths)}
    plan = {"command": "compare", "inits": paths, "labels": labels, "task": task, "data": data,
            "seeds": seeds, "settings": _plan_settings(settings),
            "folders": list(folders.values())}  # fmt: skip
    runs = [Path(f) / f"seed{s}" for f in folders.values() for s in seeds]
    out_dir = start_out_folder(out, plan, runs, log)
    results: dict[str, list[dict]] = {}
    for init in paths:
        for seed in seeds:
            run = out_dir / folders[init] / f"seed{seed}"
            res = _run_one(task, data, init, out_dir, run, seed, log, settings)
            results.setdefault(init, []).append(res)
            log(f"{init} seed {seed}: {res['main_metric']} = {res['dev'][res['main_metric']]:.4f}")
    metric = next(iter(results.values()))[0]["main_metric"]
    summary = {
        init: {**_spread([r["dev"][metric] for r in rs]), "values": [r["dev"][metric] for r in rs]}
        for init, rs in results.items()
    }
    majority = majority_baseline(task, data, seeds, settings) if metric == "accuracy" else None
    base = summary[paths[-1]]
    lines = [
        f"task {task}, metric {metric}, seeds {seeds}",
        *(f"- {labels[i]}: {i}" for i in paths),
        "",
        "| init | median | min | max | std | gain vs last (median) |",
        "|---|---|---|---|---|---|",
    ]
    for init, s in summary.items():
        gain = s["median"] - base["median"]
        lines.append(
            f"| {labels[init]} | {s['median']:.4f} | {s['min']:.4f} | {s['max']:.4f} "
            f"| {s['std']:.4f} | {gain:+.4f} |"
        )
    if majority:
        lines.append(f"| majority class (dev) | {majority['accuracy']:.4f} | | | | |")
    paired = [a - b for a, b in zip(summary[paths[0]]["values"], base["values"], strict=True)]
    lines.append(
        f"per-seed gain of {labels[paths[0]]} over {labels[paths[-1]]}: "
        + ", ".join(f"{g:+.4f}" for g in paired)
        + f" (median {statistics.median(paired):+.4f}, min {min(paired):+.4f}, "
        f"max {max(paired):+.4f})"
    )
    table = "\n".join(lines)
    log(table)
    draw_compare(compare_plot_data(results, labels, metric, task, majority),
                 out_dir / "compare.png")  # fmt: skip
    report = {"task": task, "metric": metric, "labels": labels, "summary": summary,
              "paired_gain": paired, "majority_baseline": majority,
              "history": {k: [r["history"] for r in v] for k, v in results.items()}}  # fmt: skip
    (out_dir / "compare.json").write_text(json.dumps(json_safe(report), indent=2))
    (out_dir / "compare.md").write_text(table + "\n")
    return report


_LABEL = re.compile(r"[\w.+-]+")


def _split_init(spec: str) -> tuple[str | None, str]:
    """(label or None, path) of a --init value: PATH, scratch, or NAME=PATH (a path that exists
    is taken whole, even with a '=' in it)."""
    spec = str(spec)
    if "=" not in spec or Path(spec).exists():
        return None, spec
    name, path = spec.split("=", 1)
    if not _LABEL.fullmatch(name) or not path:
        raise ConfigError(
            f"--init {spec}: expected PATH or NAME=PATH with NAME of letters, digits, . _ + -"
        )
    return name, path


def _labels(named: Sequence[tuple[str | None, str]]) -> list[str]:
    """Short labels: the given name, else the folder's name with as many parent folders as make
    it unique (at least one for a folder called "model", as packaged HF models are)."""
    parts = [Path(p).parts or (p,) for _, p in named]
    depth = [2 if ps[-1] == "model" and len(ps) > 1 else 1 for ps in parts]

    def label(i: int) -> str:
        return named[i][0] or "/".join(parts[i][-depth[i] :])

    while True:
        seen = Counter(label(i) for i in range(len(named)))
        clash = [i for i in range(len(named)) if not named[i][0] and seen[label(i)] > 1
                 and depth[i] < len(parts[i])]  # fmt: skip
        if not clash:
            return [label(i) for i in range(len(named))]
        for i in clash:
            depth[i] += 1


def majority_baseline(task: str, data: str, seeds: Sequence[int], settings: dict) -> dict | None:
    """The dev accuracy of always answering the most frequent dev label, for classification
    tasks: {"label", "accuracy", "per_seed"} (a seeded dev split can differ between seeds; the
    accuracy is the median over them), or None for other tasks or when the dev labels cannot
    be read."""
    from selfsup.data.tasks import get_task
    from selfsup.finetuning import FinetuneConfig, load_splits

    if get_task(task).kind not in ("classify", "pair-classify"):
        return None
    per_seed = {}
    for seed in seeds:
        cfg = FinetuneConfig(task=task, data=data, init="scratch", out="", seed=seed, **settings)
        try:
            _, dev = load_splits(cfg, log=lambda s: None)
        except (ConfigError, OSError):
            return None
        gold = [e.label for e in dev if getattr(e, "label", None) is not None]
        if not gold:
            return None
        label, count = Counter(gold).most_common(1)[0]
        per_seed[seed] = {"label": label, "accuracy": count / len(gold)}
    best = {v["label"] for v in per_seed.values()}
    return {
        "label": best.pop() if len(best) == 1 else None,
        "accuracy": statistics.median(v["accuracy"] for v in per_seed.values()),
        "per_seed": per_seed,
    }


def compare_plot_data(
    results: dict[str, list[dict]], labels: dict[str, str], metric: str, task: str,
    majority: dict | None = None,
) -> dict:  # fmt: skip
    """What compare.png draws: per init (in order, colour C0, C1, ...) its label, one series per
    seed (seed, steps, values) and the median over seeds at the steps all seeds evaluated; the
    majority-class line (or None); axis labels and title."""
    inits = []
    for n, (init, runs) in enumerate(results.items()):
        seeds = [{"seed": r.get("seed", i), "steps": [h["step"] for h in r["history"]],
                  "values": [h.get(metric) for h in r["history"]]}
                 for i, r in enumerate(runs)]  # fmt: skip
        common = sorted(set.intersection(*(set(s["steps"]) for s in seeds))) if seeds else []
        at = [dict(zip(s["steps"], s["values"], strict=True)) for s in seeds]
        median = [statistics.median(a[step] for a in at) for step in common]
        inits.append({"init": init, "label": labels.get(init, init), "color": f"C{n % 10}",
                      "seeds": seeds, "median": {"steps": common, "values": median}})  # fmt: skip
    baseline = None
    if majority:
        what = f" ({majority['label']})" if majority.get("label") is not None else ""
        baseline = {"value": majority["accuracy"],
                    "label": f"majority class{what}: {majority['accuracy']:.3f}"}  # fmt: skip
    return {
        "inits": inits,
        "baseline": baseline,
        "xlabel": "training step",
        "ylabel": f"dev {metric}",
        "title": f"{task}: dev {metric} during fine-tuning (thin: seeds, bold: median)",
    }


def draw_compare(plot: dict, path: Path) -> None:
    """Draw `compare_plot_data`'s output into the PNG `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = "os^vD<>p"
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for series in plot["inits"]:
        ends: dict[tuple, list[str]] = {}  # seeds ending on the same point share one label
        for k, s in enumerate(series["seeds"]):  # thin, see-through: identical curves still show
            ax.plot(s["steps"], s["values"], color=series["color"], lw=1, alpha=0.4,
                    marker=markers[k % len(markers)], ms=4, mfc="none")  # fmt: skip
            if s["steps"]:
                ends.setdefault((s["steps"][-1], s["values"][-1]), []).append(f"s{s['seed']}")
        for xy, names in ends.items():
            ax.annotate(",".join(names), xy, fontsize=7, color=series["color"], alpha=0.8,
                        xytext=(3, 0), textcoords="offset points")  # fmt: skip
        m = series["median"]
        n = len(series["seeds"])
        ax.plot(m["steps"], m["values"], color=series["color"], lw=2.5,
                label=f"{series['label']} (median of {n} seed{'s' * (n != 1)})")  # fmt: skip
    if plot["baseline"]:
        ax.axhline(plot["baseline"]["value"], color="0.3", ls="--", lw=1.2,
                   label=plot["baseline"]["label"])  # fmt: skip
    ax.set_xlabel(plot["xlabel"])
    ax.set_ylabel(plot["ylabel"])
    ax.set_title(plot["title"], fontsize=10)
    ax.margins(x=0.08)  # room for the seed labels at the right end
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
