"""The `selfsup` command line end to end on a small synthetic corpus: every kind of bad input
ends in one `selfsup: error: ...` line with exit code 2 and leaves no output behind, and every
command writes what it promises."""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_clean_error, cli

from selfsup.cli import COMMANDS, main

SUBJECTS = [
    "the old sailor", "a young doctor", "my sister", "the farmer", "our teacher", "the captain",
    "a quiet girl", "the merchant", "her brother", "the tired soldier", "the king", "a small child",
]  # fmt: skip
VERBS = [
    "walked to", "looked at", "painted", "remembered", "carried", "opened", "found", "watched",
    "cleaned", "visited", "described", "followed", "sold", "repaired",
]  # fmt: skip
OBJECTS = [
    "the river", "a wooden box", "the garden", "an empty house", "the bright window", "a map",
    "the market", "a broken clock", "the northern road", "the long letter", "a green field",
]  # fmt: skip
TAILS = [
    "in the morning", "before dinner", "after the storm", "with great care", "without a word",
    "under the grey sky", "near the bridge", "at midnight", "during the winter", "for two hours",
]  # fmt: skip


def sentence(rng: random.Random) -> str:
    kind = rng.random()
    s, v, o, t = (rng.choice(x) for x in (SUBJECTS, VERBS, OBJECTS, TAILS))
    if kind < 0.1:
        text = f"why had {s} {v.split()[0]} {o} {t}?"
    elif kind < 0.2:
        text = f'"{o} is gone," said {s}.'
    elif kind < 0.3:
        text = f"{s} {v} {rng.randint(2, 90)} times {t}!"
    else:
        text = f"{s} {v} {o} {t}."
    i = 1 if text[0] == '"' else 0
    return text[: i + 1].upper() + text[i + 1 :]


def documents(n_docs: int, n_sents: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(sentence(rng) for _ in range(n_sents)) for _ in range(n_docs)]


def write_corpus(folder: Path) -> list[Path]:
    """24 JSON-lines documents and one plain-text story of 4 paragraphs: ~400 sentences."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = documents(24, 14, seed=0)
    jsonl = folder / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(docs)))
    story = folder / "story.txt"
    story.write_text("\n\n".join(documents(4, 20, seed=1)) + "\n")
    return [jsonl, story]


# Small, fast settings shared by every pretraining call.
FAST = ["--preset", "tiny", "--max-len", "32", "--vocab-size", "300", "--batch-size", "8"]
FAST += ["--threads", "1", "--no-progress"]


def cli_process(tmp_path: Path, *argv) -> tuple[int, str, str]:
    """Run `python -m selfsup argv` as a real process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SELFSUP_CACHE": str(tmp_path / "cache")}
    p = subprocess.run(
        [sys.executable, "-m", "selfsup", *map(str, argv)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    return p.returncode, p.stdout, p.stderr


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity (not JSON; other tools choke on them)."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))


pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus):
    """runs(objective) -> a run folder pretrained for 20 steps (trained once per module)."""
    root = tmp_path_factory.mktemp("runs")
    made: dict[str, Path] = {}

    def get(objective: str) -> Path:
        if objective not in made:
            out = root / objective.replace("+", "-")
            main(["pretrain", *FAST, "--objective", objective, "--steps", "20", "--seed", "1",
                  "--data", *map(str, corpus), "--cache-dir", str(root / "cache"),
                  "--out", str(out)])  # fmt: skip
            made[objective] = out
        return made[objective]

    threads = torch.get_num_threads()
    yield get
    torch.set_num_threads(threads)


@pytest.fixture
def sentences(tmp_path) -> Path:
    f = tmp_path / "sentences.txt"
    f.write_text("The old sailor walked to the river.\n\nA quiet girl opened the box.\nWhy?\n")
    return f


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


LATIN1 = "Le café était fermé. Un garçon naïf attendait près de la fenêtre.\n".encode("latin-1")
BAD_FILES = {
    "empty.txt": b"",
    "blank.txt": b"  \n\n\t \n \n",
    "binary.txt": b"PK\x03\x04\x00\x00\x08" * 50,
    "latin1.txt": LATIN1,
}

# case -> (argv, words the message must hold); {tmp} holds BAD_FILES, {run} is a trained run,
# {out} must never be created. A pretrain without --data/--resume gets good data and settings
# first, so only the setting under test is bad.
BAD = {
    "missing data path": ("pretrain --data {tmp}/nope.txt --out {out}", "no such file"),
    "empty file": ("pretrain --data {tmp}/empty.txt --out {out}", "empty"),
    "whitespace only": ("pretrain --data {tmp}/blank.txt --out {out}", "empty"),
    "binary file": ("pretrain --data {tmp}/binary.txt --out {out}", "binary"),
    "latin-1 file": ("pretrain --data {tmp}/latin1.txt --out {out}", "--encoding latin-1"),
    "latin-1 tokenizer": ("tokenizer --input {tmp}/latin1.txt --out {out}", "--encoding"),
    "empty tokenizer input": ("tokenizer --input {tmp}/blank.txt --out {out}", "empty"),
    "fill-mask not a run": ('fill-mask {tmp} "a [MASK] ."', "neither"),
    "export not a run": ("export {tmp} --out {out}", "neither"),
    "embed not a run": ("embed {tmp} --input {run}/config.json --out {out}/x.npy", "neither"),
    "resume not a run": ("pretrain --resume {tmp} --no-progress", "not a selfsup run"),
    "unknown preset": ("pretrain --preset huge --out {out}", "unknown preset"),
    "unknown flag": ("pretrain --learning-rate 1 --out {out}", "unrecognized arguments"),
    "unknown --set key": ("pretrain --set train.warmup=5 --out {out}", "unknown option"),
    "bad --set value": ("pretrain --set train.betas=0.9 --out {out}", "betas"),
    "max-len past positions": ("pretrain --max-len 1024 --out {out}", "position table (512)"),
    "log_every 0": ("pretrain --set train.log_every=0 --out {out}", "log_every"),
    "out is a file": ("pretrain --out {run}/config.json", "is a file"),
    "export out is a file": ("export {run} --out {run}/config.json", "is a file"),
    "embed out is a folder": ("embed {run} --input {run}/config.json --out {run}", "is a folder"),
    "embed max-len": ("embed {run} --input {run}/config.json --out {out}/x.npy --max-len -1",
                      "--max-len"),
    "embed workers 0": ("embed {run} --input {run}/config.json --out {out}/x.npy --workers 0",
                        "--workers"),
    "fill-mask no mask": ('fill-mask {run} "no mask here"', "no [MASK]"),
    "unknown device": ("pretrain --device tpu --out {out}", "unknown device"),
    "fill-mask mask cut off": ('fill-mask {run} "' + "word " * 600 + '[MASK] ."', "beyond"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line(case, tmp_path, capsys, runs, corpus):
    for name, data in BAD_FILES.items():
        (tmp_path / name).write_bytes(data)
    template, says = BAD[case]
    out = tmp_path / "out"
    argv = [a.format(tmp=tmp_path, run=runs("mlm+nsp"), out=out) for a in shlex.split(template)]
    if argv[0] == "pretrain" and "--data" not in argv and "--resume" not in argv:
        argv = [argv[0], *FAST, "--steps", "5", "--data", *corpus, *argv[1:]]
    code, _, err = cli(capsys, *argv)
    assert_clean_error(code, err, out, says)


@pytest.mark.parametrize(
    "argv",
    [
        ["pretrain", "--data", "latin1.txt", "--out", "out"],
        ["fill-mask", ".", "a [MASK] ."],
        ["pretrain", "--bogus", "--out", "out"],
    ],
    ids=["latin-1", "not a run", "unknown flag"],
)
def test_bad_input_in_a_real_process(argv, tmp_path):
    (tmp_path / "latin1.txt").write_bytes(LATIN1)
    code, _, err = cli_process(tmp_path, *argv)
    assert_clean_error(code, err, tmp_path / "out")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line(tmp_path, capsys, corpus):
    out = tmp_path / "out"
    code, _, err = cli(capsys, "pretrain", *FAST, "--data", *corpus, "--device", "cuda",
                       "--out", str(out))  # fmt: skip
    assert_clean_error(code, err, out, "no CUDA GPU")


def test_diverging_run_is_one_line(tmp_path, capsys, corpus):
    out = tmp_path / "run"
    code, _, err = cli(capsys, "pretrain", *FAST, "--data", *corpus, "--steps", "20", "--lr",
                       "1e30", "--set", "train.clip_norm=0", "--out", out)  # fmt: skip
    assert code == 1 and "Traceback" not in err
    assert err.strip().startswith("selfsup: error: loss became nan") and len(err.splitlines()) == 1
    assert not out.exists()  # no checkpoint yet: nothing worth keeping


def test_latin1_works_with_encoding(tmp_path, capsys):
    text = "\n\n".join(documents(6, 30, seed=5)).replace("house", "maison fermée à clé")
    src = tmp_path / "latin1.txt"
    src.write_bytes(text.encode("latin-1"))
    out = tmp_path / "run"
    args = ["pretrain", *FAST, "--data", src, "--steps", "2", "--out", out]
    code, _, err = cli(capsys, *args)
    assert_clean_error(code, err, out, "latin-1")
    code, _, err = cli(capsys, *args, "--encoding", "latin-1")
    assert code == 0, err
    assert (out / "model.safetensors").exists()
    vocab = (out / "tokenizer" / "vocab.txt").read_text(encoding="utf-8").split()
    assert "maison" in vocab and "fermee" in vocab  # decoded (and accents stripped), not mojibake


# --------------------------------------------------------------------------------------------
# Pretraining
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["mlm", "mlm+nsp", "mlm+sop"])
def test_pretrain_writes_the_run_layout(objective, runs):
    run = runs(objective)
    config = strict_json((run / "config.json").read_text())
    assert config["format"] == "selfsup-run" and config["objective"]["name"] == objective
    assert config["model"]["vocab_size"] == len(
        (run / "tokenizer" / "vocab.txt").read_text().split()
    )
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        assert (run / "tokenizer" / name).is_file()
    latest = (run / "checkpoints" / "LATEST").read_text().strip()
    assert latest == "step_00000020"
    assert {p.name for p in (run / "checkpoints" / latest).iterdir()} == {
        "model.safetensors",
        "trainer.safetensors",
        "trainer.json",
        "manifest.json",
    }
    assert (run / "model.safetensors").is_file()

    rows = [strict_json(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [10, 20]
    assert all(math.isfinite(r["loss"]) for r in train_rows)
    pair = {"mlm": None, "mlm+nsp": "nsp", "mlm+sop": "sop"}[objective]
    if pair:
        assert f"{pair}_loss" in train_rows[-1] and f"{pair}_acc" in train_rows[-1]
        assert train_rows[-1]["loss"] == pytest.approx(
            train_rows[-1]["mlm_loss"] + train_rows[-1][f"{pair}_loss"], abs=1e-4
        )
    summary = strict_json((run / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["documents"] == 25
    assert summary["train_sequences"] > 100 and summary["heldout_sequences"] > 0
    assert 0 <= summary["heldout_mlm_acc"] <= 1


def test_second_pretrain_uses_the_cache(tmp_path, capsys, corpus):
    args = ["pretrain", *FAST, "--data", *corpus, "--steps", "2", "--cache-dir", tmp_path / "c"]
    code, first, err = cli(capsys, *args, "--out", tmp_path / "a")
    assert code == 0, err
    assert "trained WordPiece" in first and "data: tokenized" in first
    code, second, err = cli(capsys, *args, "--out", tmp_path / "b")
    assert code == 0, err
    assert "tokenizer: using cached" in second and "data: using cached" in second
    assert not (tmp_path / "cache").exists()  # --cache-dir wins over SELFSUP_CACHE
    a, b = (json.loads((tmp_path / r / "config.json").read_text()) for r in "ab")
    assert a == b


def test_reads_csv_gz_and_folders(tmp_path, capsys):
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    docs = documents(9, 16, seed=3)
    with open(folder / "a.csv", "w", newline="") as f:  # 3 rows: 3 documents
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows([i, d] for i, d in enumerate(docs[:3]))
    with gzip.open(folder / "sub" / "b.jsonl.gz", "wt") as f:  # 4 documents (+ an empty one)
        f.writelines(json.dumps({"text": d}) + "\n" for d in [*docs[3:7], ""])
    with gzip.open(folder / "c.txt.gz", "wt") as f:  # a text file is one document
        f.write("\n\n".join(docs[7:]))
    (folder / "notes.bin").write_bytes(b"\x00\x01")  # not a text suffix: skipped
    out = tmp_path / "run"
    code, _, err = cli(capsys, "pretrain", *FAST, "--data", folder, "--steps", "2", "--out", out)
    assert code == 0, err
    summary = strict_json((out / "summary.json").read_text())
    assert summary["documents"] == 3 + 4 + 1
    assert summary["sentences"] == 9 * 16
    # Too small for a held-out set: no baseline, and still valid JSON (null, not NaN).
    assert summary["heldout_sequences"] == 0 and summary["unigram_baseline_acc"] is None


def test_resume_of_a_finished_run_extends_it(tmp_path, capsys, corpus):
    out = tmp_path / "run"
    args = ["pretrain", *FAST, "--data", *corpus, "--save-every", "3", "--out", out]
    assert cli(capsys, *args, "--steps", "4")[0] == 0
    code, stdout, _ = cli(capsys, "pretrain", "--resume", out, "--no-progress")
    assert code == 0 and "already trained for 4 steps" in stdout
    shutil.rmtree(tmp_path / "cache")  # the run's own tokenizer is used, not a new one
    code, stdout, err = cli(capsys, "pretrain", "--resume", out, "--steps", "6", "--no-progress")
    assert code == 0, err
    assert "resumed from step_00000004" in stdout and "trained WordPiece" not in stdout
    assert (out / "checkpoints" / "LATEST").read_text() == "step_00000006"
    assert json.loads((out / "summary.json").read_text())["steps"] == 6


# --------------------------------------------------------------------------------------------
# Using a run: fill-mask, export, embed; training a tokenizer
# --------------------------------------------------------------------------------------------


def test_fill_mask_prints_top_k(runs, capsys):
    code, out, err = cli(capsys, "fill-mask", runs("mlm"), "the old sailor [MASK] the river .",
                         "--top-k", "4")  # fmt: skip
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 4
    probs = [float(line.split()[0]) for line in lines]
    assert probs == sorted(probs, reverse=True) and all(0 < p <= 1 for p in probs)
    assert all(len(line.split()) == 2 for line in lines)  # probability, token


def test_fill_mask_json(runs, capsys):
    text = "the [MASK] sailor walked to the [MASK] ."
    code, out, err = cli(capsys, "fill-mask", runs("mlm+nsp"), text, "--json", "--top-k", "7")
    assert code == 0, err
    result = strict_json(out)
    assert result["text"] == text and len(result["masks"]) == 2
    for preds in result["masks"]:
        probs = [p["prob"] for p in preds]
        assert len(preds) == 7 and all(isinstance(p["token"], str) for p in preds)
        assert probs == sorted(probs, reverse=True)
        assert 0 < sum(probs) <= 1 + 1e-6


def test_export_writes_an_hf_folder(runs, tmp_path, capsys, sentences):
    run, out = runs("mlm+nsp"), tmp_path / "hf"
    code, _, err = cli(capsys, "export", run, "--format", "hf", "--out", out)
    assert code == 0, err
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        assert (out / name).is_file()
    cfg = json.loads((out / "config.json").read_text())
    run_cfg = json.loads((run / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["vocab_size"] == run_cfg["model"]["vocab_size"]
    assert len((out / "vocab.txt").read_text().split()) == cfg["vocab_size"]
    # The exported folder embeds exactly like the run it came from.
    vecs = []
    for model in (run, out):
        npy = tmp_path / f"{model.name}.npy"
        assert cli(capsys, "embed", model, "--input", sentences, "--out", npy)[0] == 0
        vecs.append(np.load(npy))
    np.testing.assert_allclose(vecs[0], vecs[1], atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_embed_writes_n_by_dim(pooling, runs, tmp_path, capsys, sentences):
    out = tmp_path / "vec" / f"{pooling}.npy"
    code, stdout, err = cli(capsys, "embed", runs("mlm"), "--input", sentences, "--out", out,
                            "--pooling", pooling, "--normalize")  # fmt: skip
    assert code == 0, err
    x = np.load(out)
    assert x.shape == (4, 128) and x.dtype == np.float32  # a row per line, the blank one too
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    assert "embedded 4 sentences" in stdout
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary left over


def test_embed_tokens(runs, tmp_path, capsys, sentences):
    from selfsup.embed import read_token_vectors

    out = tmp_path / "tok.npz"
    code, _, err = cli(capsys, "embed", runs("mlm"), "--input", sentences, "--out", out,
                       "--pooling", "tokens")  # fmt: skip
    assert code == 0, err
    x = read_token_vectors(out)  # plain arrays: nothing to unpickle
    assert len(x) == 4 and all(v.ndim == 2 and v.shape[1] == 128 for v in x)
    assert x[1].shape[0] == 2  # the blank line: [CLS] [SEP]
    assert x[3].shape[0] == 4  # [CLS] why ? [SEP]
    assert x[0].shape[0] > x[3].shape[0]


def test_tokenizer_command(corpus, tmp_path, capsys):
    out = tmp_path / "tok"
    code, stdout, err = cli(capsys, "tokenizer", "--input", *corpus, "--vocab-size", "200",
                            "--out", out)  # fmt: skip
    assert code == 0, err
    vocab = (out / "vocab.txt").read_text().split()
    assert 100 < len(vocab) <= 200 and vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert json.loads((out / "tokenizer.json").read_text())["model"]["type"] == "WordPiece"
    assert "sailor" in vocab
    assert f"{len(vocab)} tokens" in stdout
    # The folder is not empty any more: a second call refuses to overwrite it.
    code, _, err = cli(capsys, "tokenizer", "--input", *corpus, "--out", out)
    assert_clean_error(code, err, None, "not empty")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_help_has_an_example(command, capsys):
    code, out, _ = cli(capsys, command, "--help")
    assert code == 0
    assert re.search(r"^examples?:", out, re.M) and "selfsup " in out.split("example")[-1]
