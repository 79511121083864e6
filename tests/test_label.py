"""`selfsup predict` (selfsup.label) for every kind of fine-tuned model: tiny models fine-tuned in
process for a step or two, then files of every input format predicted: one row per input row in
order (blank lines too), probabilities equal to the softmax of the model's own logits, a tag per
word, QA answers that are the context's characters, truncation counted, and bad input as one
`selfsup: error:` line that leaves no output file behind."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import pytest
import torch
from helpers import assert_clean_error, cli, strict_json

from selfsup.data.tasks import TextExample
from selfsup.finetuning import load_finetuned
from selfsup.label import predict_file

WORDS = "the a river stone light house garden music runs over quickly good bad".split()


def sentence(rng: random.Random, n: int | None = None) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n or rng.randint(3, 8)))


def write_csv(path: Path, header: tuple, rows: list[tuple]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def task_data(folder: Path, kind: str) -> Path:
    """train + dev files of 24 random rows for a kind of task (the models need not learn)."""
    folder.mkdir(parents=True)
    for split, seed in (("train", 0), ("dev", 1)):
        rng = random.Random(seed)
        if kind == "classify":
            rows = [(sentence(rng), rng.choice(["pos", "neg", "mixed"])) for _ in range(24)]
            write_csv(folder / f"{split}.csv", ("text", "label"), rows)
        elif kind == "pair-classify":
            rows = [(sentence(rng), sentence(rng), rng.choice("yn")) for _ in range(24)]
            write_csv(folder / f"{split}.csv", ("text", "text_pair", "label"), rows)
        elif kind == "regress":
            rows = [(sentence(rng), rng.random()) for _ in range(24)]
            write_csv(folder / f"{split}.csv", ("text", "label"), rows)
        elif kind == "tag":
            lines = []
            for _ in range(24):
                for i, w in enumerate(sentence(rng).split(), 1):
                    lines.append(
                        f"{i}\t{w}\t{w}\t{'NOUN' if len(w) > 3 else 'DET'}\t_\t_\t0\tx\t_\t_"
                    )
                lines.append("")
            (folder / f"{split}.conllu").write_text("\n".join(lines) + "\n")
        else:
            paras = []
            for q in range(24):
                y = rng.choice(WORDS)
                context = f"{sentence(rng)} . the answer is {y} . {sentence(rng)} ."
                start = context.index(f" is {y} .") + 4
                answers = [{"text": y, "answer_start": start}]
                qa = {"id": f"{split}-{q}", "question": "what is the answer ?", "answers": answers}
                paras.append({"context": context, "qas": [qa]})
            data = {"data": [{"title": "t", "paragraphs": paras}]}
            name = "train-v1.1.json" if split == "train" else "dev-v1.1.json"
            (folder / name).write_text(json.dumps(data))
    return folder


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, tiny_run):
    """kind -> a fine-tuned folder (one or two steps from the tiny run), built on first use."""
    import os

    folders: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("tuned")

    def get(kind: str) -> Path:
        if kind not in folders:
            threads, cache = torch.get_num_threads(), os.environ.get("SELFSUP_CACHE")
            torch.set_num_threads(1)
            os.environ["SELFSUP_CACHE"] = str(root / "cache")
            try:
                data, out = task_data(root / f"{kind}-data", kind), root / kind
                max_len = "48" if kind == "qa" else "32"
                argv = ["finetune", "--task", kind, "--data", data, "--init", tiny_run,
                        "--out", out, "--epochs", "1", "--batch-size", "16", "--max-len", max_len,
                        "--lr", "1e-3", "--device", "cpu"]  # fmt: skip
                from selfsup.cli import main

                main([str(a) for a in argv])
            finally:
                torch.set_num_threads(threads)
                if cache is None:
                    os.environ.pop("SELFSUP_CACHE", None)
                else:
                    os.environ["SELFSUP_CACHE"] = cache
            folders[kind] = out
        return folders[kind]

    return get


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def predict_cli(capsys, model, src, out, *flags) -> tuple[list[dict], str, str]:
    code, stdout, err = cli(capsys, "predict", model, "--input", src, "--out", out, *flags)
    assert code == 0, err
    rows = [strict_json(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return rows, stdout, err


def model_outputs(folder: Path, texts: list[str], pairs: list[str] | None = None):
    """The fine-tuned model's own outputs, one unpadded example at a time."""
    model, tok, config = load_finetuned(folder)
    out = []
    with torch.no_grad():
        for i, t in enumerate(texts):
            batch = tok([t], [pairs[i]] if pairs else None, max_len=config["max_len"])
            out.append(model.predict(batch)["logits"][0])
    return out, config


def assert_same_top(rows: list[dict], ref: list[dict]) -> None:
    """The same labels in the same order with the same probabilities (to float rounding)."""
    assert [[t["label"] for t in r["top"]] for r in rows] == [
        [t["label"] for t in r["top"]] for r in ref
    ]
    got = [t["score"] for r in rows for t in r["top"]]
    assert got == pytest.approx([t["score"] for r in ref for t in r["top"]], abs=1e-6)


# --------------------------------------------------------------------------------------------
# Classification, pairs, regression
# --------------------------------------------------------------------------------------------

LINES = ["the river runs good", "", "bad stone light", "   ", "music", "garden over the house"]


def test_classify_txt_keeps_every_line_and_gives_the_softmax(tuned, tmp_path, capsys):
    model = tuned("classify")
    src = tmp_path / "in.txt"
    src.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    rows, stdout, _ = predict_cli(capsys, model, src, tmp_path / "p.jsonl")
    assert [r["line"] for r in rows] == list(range(1, len(LINES) + 1))  # blank lines are rows
    logits, config = model_outputs(model, LINES)
    for r, lg in zip(rows, logits, strict=True):
        assert set(r) == {"line", "label", "score", "top"}
        assert len(r["top"]) == len(config["labels"]) == 3
        assert math.isclose(sum(t["score"] for t in r["top"]), 1.0, rel_tol=1e-6)
        scores = [t["score"] for t in r["top"]]
        assert scores == sorted(scores, reverse=True)
        assert (r["label"], r["score"]) == (r["top"][0]["label"], r["top"][0]["score"])
        want = torch.softmax(lg, -1).tolist()
        for t in r["top"]:
            assert t["score"] == pytest.approx(want[config["labels"].index(t["label"])], abs=1e-5)
    assert f"predicted {len(LINES)} rows (classify)" in stdout
    assert "nothing truncated" in stdout
    # Blank and whitespace-only lines are the empty text: the same prediction.
    assert_same_top(rows[1:2], rows[3:4])


def test_csv_jsonl_tsv_and_txt_agree_and_top_k(tuned, tmp_path, capsys):
    model = tuned("classify")
    (tmp_path / "in.txt").write_text("\n".join(LINES) + "\n")
    write_csv(tmp_path / "in.csv", ("id", "body"), [(i, t) for i, t in enumerate(LINES)])
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in LINES))
    ref, _, _ = predict_cli(capsys, model, tmp_path / "in.txt", tmp_path / "txt.jsonl")
    for name in ("in.csv", "in.jsonl"):
        rows, _, _ = predict_cli(capsys, model, tmp_path / name, tmp_path / f"{name}.out",
                                 "--text-column", "body", "--batch-size", "2")  # fmt: skip
        assert_same_top(rows, ref)
        assert len(rows) == len(LINES)
    rows, _, _ = predict_cli(capsys, model, tmp_path / "in.jsonl", tmp_path / "k.jsonl",
                             "--text-column", "body", "--top-k", "1")  # fmt: skip
    assert [len(r["top"]) for r in rows] == [1] * len(LINES)
    assert [r["label"] for r in rows] == [r["label"] for r in ref]


def test_truncation_is_counted(tuned, tmp_path, capsys):
    model = tuned("classify")  # fine-tuned with --max-len 32
    long = " ".join(["river"] * 40)
    exact = " ".join(["river"] * 30)  # [CLS] + 30 + [SEP] = 32 tokens: fits, not truncated
    src = tmp_path / "in.txt"
    src.write_text(f"good\n{long}\n{exact}\n{long} bad\n")
    rows, stdout, err = predict_cli(capsys, model, src, tmp_path / "p.jsonl")
    assert len(rows) == 4
    assert "2 of 4 inputs longer than 32 tokens were truncated" in stdout
    assert "2 of 4 inputs" in err  # logged too


def test_pair_classify_and_regress(tuned, tmp_path, capsys):
    pairs = [("the river runs", "a stone"), ("", "music"), ("good house", "")]
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"text": a, "text_pair": b}) + "\n" for a, b in pairs))
    rows, _, _ = predict_cli(capsys, tuned("pair-classify"), src, tmp_path / "p.jsonl")
    logits, _ = model_outputs(tuned("pair-classify"), [a for a, _ in pairs], [b for _, b in pairs])
    assert len(rows) == 3 and [r["line"] for r in rows] == [1, 2, 3]
    for r, lg in zip(rows, logits, strict=True):
        assert r["score"] == pytest.approx(torch.softmax(lg, -1).max().item(), abs=1e-5)
    # Regression: the model's own output, from a CSV with a short row (an empty text).
    src = tmp_path / "reg.csv"
    src.write_text("text,other\nthe river,1\ngood good good,2\n\n,3\n")
    rows, _, _ = predict_cli(capsys, tuned("regress"), src, tmp_path / "r.jsonl")
    logits, _ = model_outputs(tuned("regress"), ["the river", "good good good", ""])
    assert [set(r) for r in rows] == [{"line", "value"}] * 3
    assert [r["line"] for r in rows] == [2, 3, 5]
    assert [r["value"] for r in rows] == pytest.approx([x.item() for x in logits], abs=1e-5)


# --------------------------------------------------------------------------------------------
# Tagging
# --------------------------------------------------------------------------------------------


def test_tag_gives_one_tag_per_word(tuned, tmp_path, capsys):
    model = tuned("tag")
    _, _, config = load_finetuned(model)
    long = " ".join(["garden"] * 80)  # the tiny run's position table holds 64 tokens
    lines = ["the river runs over", "", "Straße naïve music", long, "a"]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows, stdout, _ = predict_cli(capsys, model, src, tmp_path / "t.jsonl")
    assert [r["words"] for r in rows] == [ln.split() for ln in lines]
    assert all(len(r["tags"]) == len(r["words"]) for r in rows)
    assert rows[1]["tags"] == []
    assert all(t in config["labels"] for r in rows for t in r["tags"] if t is not None)
    _, tok, _ = load_finetuned(model)
    kept = 62 // len(tok.encode_plain(["garden"])[0])  # [CLS] + 62 pieces + [SEP] = 64 tokens
    assert None not in rows[3]["tags"][:kept] and rows[3]["tags"][kept:] == [None] * (80 - kept)
    assert f"1 of 5 sentences longer than 64 tokens: {80 - kept} words cut" in stdout
    assert None not in [t for r in rows[:3] + rows[4:] for t in r["tags"]]
    # JSONL with word lists gives the same tags; a word with no tokens (a zero-width space) gets
    # null and the words after it keep their own tags: the model sees "the river runs".
    extra = [["the", "river", "runs"], ["the", "\u200b", "river", "runs"]]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"words": w}) + "\n" for w in [ln.split() for ln in lines]
                           + extra))  # fmt: skip
    again, stdout, _ = predict_cli(capsys, model, src, tmp_path / "t2.jsonl")
    assert [r["tags"] for r in again[:5]] == [r["tags"] for r in rows]
    plain, dropped = again[5]["tags"], again[6]["tags"]
    assert dropped == [plain[0], None, plain[1], plain[2]]
    assert f"1 of 7 sentences longer than 64 tokens: {80 - kept} words cut" in stdout


# --------------------------------------------------------------------------------------------
# Extractive QA
# --------------------------------------------------------------------------------------------


def test_qa_answers_are_context_spans(tuned, tmp_path, capsys):
    model = tuned("qa")
    rng = random.Random(3)
    items = [
        {"id": "a", "question": "what is the answer ?", "context": "the answer is Café ."},
        {
            "question": "where ?",
            "context": " ".join(sentence(rng, 12) for _ in range(8)),
        },  # windows
        {"id": 7, "question": "what ?", "context": ""},  # no context tokens: no answer
        {"id": "z", "question": "what is it ?", "context": "Straße 天安门 在 北京 ."},
    ]
    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items))
    rows, _, _ = predict_cli(capsys, model, src, tmp_path / "a.jsonl")
    assert [r["id"] for r in rows] == ["a", None, 7, "z"]
    assert [r["line"] for r in rows] == [1, 2, 3, 4]
    for r, x in zip(rows, items, strict=True):
        assert set(r) == {"line", "id", "answer", "start", "end", "score"}
        if r["start"] is None:
            assert r["answer"] == "" and r["score"] is None
        else:
            assert 0 <= r["start"] < r["end"] <= len(x["context"])
            assert r["answer"] == x["context"][r["start"] : r["end"]] != ""
            assert isinstance(r["score"], float)
    assert rows[2]["start"] is None
    # A SQuAD-format file: every question, in file order, with its id.
    squad = tmp_path / "dev.json"
    squad.write_text((model.parent / "qa-data" / "dev-v1.1.json").read_text())
    rows, stdout, _ = predict_cli(capsys, model, squad, tmp_path / "s.jsonl")
    data = json.loads(squad.read_text())["data"][0]["paragraphs"]
    assert [r["id"] for r in rows] == [p["qas"][0]["id"] for p in data]
    for r, p in zip(rows, data, strict=True):
        assert "line" not in r and r["answer"] == p["context"][r["start"] : r["end"]]
    assert "predicted 24 rows (qa)" in stdout


# --------------------------------------------------------------------------------------------
# Progress, atomic output, bad input
# --------------------------------------------------------------------------------------------


def test_progress_lines_and_rows_in_order_across_chunks(tuned, tmp_path):
    model = tuned("classify")
    rng = random.Random(0)
    lines = [sentence(rng, rng.randint(1, 12)) if i % 7 else "" for i in range(70)]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n")
    logs: list[str] = []
    res = predict_file(str(model), str(src), str(tmp_path / "p.jsonl"), batch_size=2,
                       log=logs.append, progress_every=0)  # fmt: skip
    assert res["rows"] == 70 and res["truncated"] == 0
    progress = [m for m in logs if "rows/s" in m]
    assert progress and "32/70 rows" in progress[0]  # chunks of 16 batches of 2
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    one, _, _ = predict_rows_of(model, tmp_path, lines)
    assert_same_top(rows, one)


def predict_rows_of(model, tmp_path, lines):
    src = tmp_path / "one.txt"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "one.jsonl"
    predict_file(str(model), str(src), str(out), batch_size=64, log=lambda m: None)
    return [json.loads(x) for x in out.read_text().splitlines()], src, out


# case -> (model kind, input file name, its content or None, flags, words the message holds)
BAD = {
    "missing input": ("classify", "in.txt", None, [], "no such input file"),
    "not a fine-tuned folder": ("run", "in.txt", "x\n", [], "not a fine-tuned model folder"),
    "pairs from txt": ("pair-classify", "in.txt", "a\n", [], "text_pair"),
    "qa from txt": ("qa", "in.txt", "a\n", [], "question and context"),
    "qa without context": ("qa", "in.jsonl", '{"question": "q"}\n', [], "no column 'context'"),
    "missing column": ("classify", "in.jsonl", '{"body": "q"}\n', [], "no column 'text'"),
    "bad json line": ("classify", "in.jsonl", '{"text": "a"}\n{"text": \n', [], "not a JSON line"),
    "number as text": ("classify", "in.jsonl", '{"text": 3}\n', [], "not a string"),
    "words not strings": ("tag", "in.jsonl", '{"words": [1, 2]}\n', [], "list of strings"),
    "empty file": ("classify", "in.txt", "", [], "has no rows"),
    "binary file": ("classify", "in.txt", "\x00\x01\x02", [], "binary"),
    "unknown type": ("classify", "in.parquet", "a\n", [], "unsupported file type"),
    "top-k 0": ("classify", "in.txt", "a\n", ["--top-k", "0"], "--top-k"),
    "batch-size 0": ("classify", "in.txt", "a\n", ["--batch-size", "0"], "--batch-size"),
    "unknown device": ("classify", "in.txt", "a\n", ["--device", "tpu"], "unknown device"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_writes_nothing(case, tuned, tiny_run, tmp_path, capsys):
    kind, name, content, flags, says = BAD[case]
    model = tiny_run if kind == "run" else tuned(kind)
    src = tmp_path / name
    if content is not None:
        src.write_text(content)
    out = tmp_path / "out" / "p.jsonl"
    code, _, err = cli(capsys, "predict", model, "--input", src, "--out", out, *flags)
    assert_clean_error(code, err, out.parent, says)


def test_failed_run_keeps_the_old_output_and_success_leaves_no_temporary(tuned, tmp_path, capsys):
    model = tuned("classify")
    out = tmp_path / "o" / "p.jsonl"
    out.parent.mkdir()
    out.write_text("old\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"nope": 1}\n')
    code, _, err = cli(capsys, "predict", model, "--input", bad, "--out", out)
    assert_clean_error(code, err, None, "line 2")
    assert out.read_text() == "old\n"
    good = tmp_path / "good.txt"
    good.write_text("a\nb\n")
    rows, _, _ = predict_cli(capsys, model, good, out)
    assert len(rows) == 2 and [p.name for p in out.parent.iterdir()] == ["p.jsonl"]
    code, _, err = cli(capsys, "predict", model, "--input", good, "--out", out.parent)
    assert_clean_error(code, err, None, "is a folder")
    code, _, err = cli(capsys, "predict", model, "--input", good, "--out", good)
    assert_clean_error(code, err, None, "is the --input file")
    assert good.read_text() == "a\nb\n"


# --------------------------------------------------------------------------------------------
# bf16 forwards (--precision)
# --------------------------------------------------------------------------------------------


def bf16_flags(monkeypatch, native: bool) -> None:
    """The CPU's bf16 flags as the test says (bf16 autocast itself runs on any CPU, emulated)."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)


def test_predict_batches_in_bf16_returns_fp32_close_to_fp32(tuned):
    from selfsup.finetuning import eval_batches, make_features
    from selfsup.predict import predict_batches

    model, tok, config = load_finetuned(tuned("classify"))
    labels = config["labels"]
    examples = [TextExample(t, label=labels[0]) for t in LINES]
    feats = make_features("classify", tok, examples, 32, labels, None)
    batches = list(eval_batches(feats, 4, tok.pad_id, "classify"))
    fp32 = [r["logits"] for _, r in predict_batches(model, batches)]
    bf16 = [r["logits"] for _, r in predict_batches(model, batches, bf16=True)]
    for a, b in zip(fp32, bf16, strict=True):
        assert b.dtype == torch.float32
        assert not torch.equal(a, b)  # the forward did run in bf16
        assert torch.allclose(a, b, atol=0.05, rtol=0.05)


def test_predict_and_evaluate_in_bf16(monkeypatch, tuned, tmp_path, capsys):
    bf16_flags(monkeypatch, native=True)
    model, src = tuned("classify"), tmp_path / "in.txt"
    src.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    ref, _, _ = predict_cli(capsys, model, src, tmp_path / "fp32.jsonl")
    rows, _, err = predict_cli(capsys, model, src, tmp_path / "bf16.jsonl", "--precision", "bf16")
    assert "in bf16" in err
    assert [r["line"] for r in rows] == [r["line"] for r in ref]
    got = [t["score"] for r in rows for t in sorted(r["top"], key=lambda t: t["label"])]
    want = [t["score"] for r in ref for t in sorted(r["top"], key=lambda t: t["label"])]
    assert got == pytest.approx(want, abs=0.02)
    assert got != want  # not the fp32 path again


def test_bf16_forwards_without_the_hardware_are_one_line(monkeypatch, tuned, tmp_path, capsys):
    bf16_flags(monkeypatch, native=False)
    src = tmp_path / "in.txt"
    src.write_text("good\n", encoding="utf-8")
    out = tmp_path / "p.jsonl"
    code, _, err = cli(capsys, "predict", tuned("classify"), "--input", src, "--out", out,
                       "--precision", "bf16")  # fmt: skip
    assert_clean_error(code, err, out, "bf16 was requested but this CPU has no native bf16")
    vec = tmp_path / "v.npy"
    code, _, err = cli(capsys, "embed", tuned("classify"), "--input", src, "--out", vec,
                       "--precision", "bf16")  # fmt: skip
    assert_clean_error(code, err, vec, "bf16 was requested but this CPU has no native bf16")


def test_embed_in_bf16_is_float32_and_close(monkeypatch, tiny_run, tmp_path, capsys):
    import numpy as np

    bf16_flags(monkeypatch, native=True)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    vecs = {}
    for p in ("fp32", "bf16"):
        out = tmp_path / f"{p}.npy"
        code, _, err = cli(capsys, "embed", tiny_run, "--input", src, "--out", out,
                           "--precision", p)  # fmt: skip
        assert code == 0, err
        vecs[p] = np.load(out)
    assert vecs["bf16"].dtype == np.float32 and vecs["bf16"].shape == vecs["fp32"].shape
    a, b = vecs["fp32"], vecs["bf16"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99
    assert not np.array_equal(a, b)


def test_finetune_in_bf16_records_it(monkeypatch, tiny_run, tmp_path, capsys):
    bf16_flags(monkeypatch, native=True)
    data, out = task_data(tmp_path / "data", "classify"), tmp_path / "ft"
    code, stdout, err = cli(capsys, "finetune", "--task", "classify", "--data", data, "--init",
                            tiny_run, "--out", out, "--epochs", "1", "--batch-size", "16",
                            "--max-len", "32", "--precision", "bf16")  # fmt: skip
    assert code == 0, err
    assert "precision bf16" in stdout + err
    config = json.loads((out / "config.json").read_text())
    assert config["finetune"]["precision"] == "bf16"
