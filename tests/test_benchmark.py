"""Built-in benchmarks: `selfsup compare` (several inits, same seeds: table, JSON with paired
gains, PNG), `selfsup glue` and `selfsup clue` (every GLUE / CLUE folder found, several seeds:
median and spread per task, average of the medians), on tiny synthetic tasks and tiny models."""

from __future__ import annotations

import csv
import json
import random
import statistics
from pathlib import Path

import pytest
from helpers import cli, strict_json

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
    ],
    ids=["one init", "same init twice", "no task folders", "missing folder", "unknown task",
         "clue: no task folders", "clue: missing folder", "clue: unknown task",
         "clue: task without train", "clue: bad fold"],
)  # fmt: skip
def test_bad_input_is_one_line(argv, says, tmp_path, capsys, tiny_run):
    data = write_classify(tmp_path / "data", 8, 4)
    clue = write_clue(tmp_path / "clue", 4)
    out = tmp_path / "out"
    argv = [a.format(run=tiny_run, data=data, out=out, tmp=tmp_path, clue=clue) for a in argv]
    code, _, err = cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("selfsup: error: ") and says in lines[0], lines[0]
    assert not out.exists()
