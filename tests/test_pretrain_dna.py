"""DNA (and protein) pretraining end to end on tiny synthetic genomes: `selfsup pretrain
--modality dna` makes a run whose tokenizer loads back by name, kill-and-resume is exact, the
run fine-tunes through `finetune --task classify` (its tokenizer applied to raw sequences) and
`dna-splice` writes the task files; bad input ends in one line and exit 2."""

from __future__ import annotations

import gzip
import json
import random

import pytest
import torch
from helpers import assert_clean_error, cli, pretrain_straight_and_resumed, shared
from safetensors.torch import load_file

from selfsup.data.dna_tokenizer import SequenceTokenizer
from selfsup.data.tokenizer import load_tokenizer
from selfsup.presets import preset

TIMING = {"tokens_per_s", "data_share", "elapsed_s"}
MOTIFS = {"yes": "GGTAAGT", "no": "TTTTTTT"}


def dna(n: int, rng: random.Random, letters: str = "ACGT") -> str:
    return "".join(rng.choice(letters) for _ in range(n))


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    """Two records, 12 kb in all, gzipped FASTA wrapped at 60 columns, partly soft-masked."""
    root = tmp_path_factory.mktemp("dna")
    rng = random.Random(0)
    text = ""
    for name, n in (("r1", 8000), ("r2", 4000)):
        seq = dna(n, rng)
        seq = seq[:100] + seq[100:400].lower() + seq[400:]
        text += f">{name}\n" + "".join(seq[i : i + 60] + "\n" for i in range(0, n, 60))
    path = root / "genome.fa.gz"
    path.write_bytes(gzip.compress(text.encode()))
    return path


@pytest.fixture(scope="module")
def classify_folder(tmp_path_factory):
    """train.tsv / dev.tsv of 60 bp sequences, labelled by the motif planted in the middle."""
    root = tmp_path_factory.mktemp("task")
    rng = random.Random(1)
    for part, n in (("train", 48), ("dev", 16)):
        lines = ["label\ttext"]
        for i in range(n):
            label = "yes" if i % 2 else "no"
            lines.append(f"{label}\t{dna(26, rng)}{MOTIFS[label]}{dna(27, rng)}")
        (root / f"{part}.tsv").write_text("\n".join(lines) + "\n")
    return root


def tiny_args(genome, out, *extra):
    return ["pretrain", "--modality", "dna", "--preset", "tiny", "--data", genome, "--steps", 4,
            "--batch-size", 8, "--max-len", 32, "--tokenizer", "dna-kmer3", "--eval-every", 2,
            "--save-every", 2, "--threads", 1, "--set", "data.heldout_bp=2000",
            "data.heldout_max=16", "--cache-dir", out.parent / "cache", "--out", out,
            "--no-progress", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def run(genome, tmp_path_factory):
    """A 4-step tiny run over the genome, made through the CLI."""
    from selfsup.cli import main

    out = tmp_path_factory.mktemp("runs") / "dna"
    main([str(a) for a in tiny_args(genome, out)])
    return out


def test_cli_run_folder(run):
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["objective"]["name"] == "dna-mlm" and cfg["objective"]["scheme"] == "leakfree"
    assert cfg["data"]["tokenizer"] == "dna-kmer3" and cfg["model"]["vocab_size"] == 69
    tok = load_tokenizer(run)
    assert isinstance(tok, SequenceTokenizer) and tok.name == "dna-kmer3"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["bases"] == 12000 and summary["heldout_bases"] == 2000
    assert summary["train_bases"] == 10000 and summary["window_bases"] == [5, 32]
    assert 0.0 <= summary["heldout_mlm_acc"] <= 1.0 and summary["heldout_windows"] == 16
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval_mlm_loss" in r] == [2, 4]


def cfg_factory(genome, tmp_path):
    def make():
        cfg = preset("tiny", "dna")
        cfg.data.paths = [str(genome)]
        cfg.data.tokenizer, cfg.data.max_len = "dna-kmer4", 40
        cfg.data.heldout_bp, cfg.data.heldout_max = 2000, 8
        cfg.data.cache_dir = str(tmp_path / "cache")
        cfg.train.steps, cfg.train.batch_size, cfg.train.warmup_steps = 6, 8, 1
        cfg.train.save_every, cfg.train.eval_every, cfg.train.log_every = 2, 3, 1
        return cfg

    return make


def test_kill_and_resume_is_exact(genome, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain_straight_and_resumed(cfg_factory(genome, tmp_path), tmp_path / "a",
                                      tmp_path / "b", 4)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    wa, wb = (load_file(tmp_path / r / "model.safetensors") for r in "ab")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    rows = [
        [{k: v for k, v in json.loads(x).items() if k not in TIMING}
         for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
        for r in "ab"
    ]  # fmt: skip
    assert rows[0] == rows[1] and len(rows[0]) > 6


@pytest.mark.parametrize("scheme", ["dnabert", "bert"])
def test_other_schemes_train(genome, tmp_path, capsys, scheme):
    out = tmp_path / scheme
    args = tiny_args(genome, out, "--set", f"objective.scheme={scheme}")
    args[args.index("--steps") + 1] = 2
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["objective"]["scheme"] == scheme


def test_finetune_classify_with_the_run_and_from_scratch(run, classify_folder, tmp_path, capsys):
    for name, init in (
        ("pre", ["--init", run]),
        ("scratch", ["--init", "scratch", "--tokenizer", run]),
    ):
        out = tmp_path / name
        code, stdout, err = cli(capsys, "finetune", "--task", "classify", "--data",
                                classify_folder, *init, "--out", out, "--epochs", 1,
                                "--batch-size", 16, "--max-len", 64)  # fmt: skip
        assert code == 0, err
        assert 0.0 <= json.loads(stdout.strip().splitlines()[-1])["accuracy"] <= 1.0
        tok = load_tokenizer(out / "tokenizer")
        assert isinstance(tok, SequenceTokenizer) and tok.name == "dna-kmer3"
        code, stdout, err = cli(capsys, "evaluate", out, "--task", "classify", "--data",
                                classify_folder, "--split", "dev")  # fmt: skip
        assert code == 0, err
        preds = (out / "predictions-classify-dev.jsonl").read_text().splitlines()
        assert len(preds) == 16


def test_protein_through_the_same_path(tmp_path, capsys):
    rng = random.Random(2)
    residues = "ACDEFGHIKLMNPQRSTVWY"
    fasta = tmp_path / "prot.faa"
    fasta.write_text("".join(f">p{i}\n{dna(300, rng, residues + 'XBZUO')}\n" for i in range(20)))
    out = tmp_path / "prot"
    code, _, err = cli(capsys, "pretrain", "--modality", "dna", "--tokenizer", "protein", "--data",
                       fasta, "--steps", 2, "--batch-size", 4, "--max-len", 48, "--threads", 1,
                       "--set", "data.heldout_bp=600", "--cache-dir", tmp_path / "cache",
                       "--out", out, "--no-progress")  # fmt: skip
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["vocab_size"] == 30
    task = tmp_path / "task"
    task.mkdir()
    for part in ("train", "dev"):
        lines = ["label\ttext"] + [f"{'ab'[i % 2]}\t{('W' * 5 if i % 2 else 'K' * 5)}"
                                   f"{dna(30, rng, residues)}" for i in range(12)]  # fmt: skip
        (task / f"{part}.tsv").write_text("\n".join(lines) + "\n")
    code, stdout, err = cli(capsys, "finetune", "--task", "classify", "--data", task, "--init",
                            out, "--out", tmp_path / "ft", "--epochs", 1)  # fmt: skip
    assert code == 0, err
    assert load_tokenizer(tmp_path / "ft").name == "protein"


@pytest.mark.data
def test_dna_splice_command_writes_the_task(tmp_path, capsys):
    folder = shared("dna/splice")
    out = tmp_path / "splice"
    code, stdout, err = cli(capsys, "dna-splice", "--data", folder, "--out", out, "--words",
                            "a,t,c,g")  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout) == {"out": str(out), "train": 2381, "dev": 297, "test": 297}
    row = (out / "dev.tsv").read_text().splitlines()[1].split("\t")
    assert set(row[3].split()) <= {"a", "t", "c", "g"} and len(row[3].split()) == 60
    code, _, err = cli(capsys, "dna-splice", "--data", folder, "--out", tmp_path / "x", "--words",
                       "a,t,c")  # fmt: skip
    assert_clean_error(code, err, tmp_path / "x", "four distinct words")


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, says",
    [(">r\nACGTACGT\nACGT7ACG\n", "bad.fa:3:5: invalid character '7'"),
     ("", "no sequences"),
     (">only a header\n", "no sequences")],
)  # fmt: skip
def test_bad_fasta_is_one_line(tmp_path, capsys, content, says):
    bad = tmp_path / "bad.fa"
    bad.write_text(content)
    out = tmp_path / "run"
    code, _, err = cli(capsys, *tiny_args(bad, out))
    assert_clean_error(code, err, out, says)


@pytest.mark.parametrize(
    "extra, says",
    [(["--tokenizer", "dna-kmer7"], "k must be 3 to 6"),
     (["--tokenizer", "dna-kmer2-nonoverlap"], "k must be 3 to 6"),
     (["--tokenizer", "bert-base"], "takes a sequence tokenizer by name"),
     (["--set", "data.heldout_bp=12000"], "leaves nothing to train on"),
     (["--set", "objective.span_tokens=4"], "at least 2k-1 = 5"),
     (["--set", "objective.scheme=random"], "unknown objective.scheme"),
     (["--whole-word"], "text masking"),
     (["--objective", "bart"], "is a text objective, not dna")],
)  # fmt: skip
def test_bad_settings_are_one_line(genome, tmp_path, capsys, extra, says):
    out = tmp_path / "run"
    code, _, err = cli(capsys, *tiny_args(genome, out), *extra)
    assert_clean_error(code, err, out, says)


def test_inspect_masking_says_it_does_not_cover_dna(genome, capsys):
    code, _, err = cli(capsys, "inspect-masking", "--objective", "dna-mlm", "--data", genome)
    assert_clean_error(code, err, None, "covers text and audio objectives")


def test_missing_data_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = cli(capsys, "pretrain", "--modality", "dna", "--steps", 2, "--out", out)
    assert_clean_error(code, err, out, "needs --data")


@pytest.mark.data
@pytest.mark.slow
def test_pretrain_on_the_shared_chrx(tmp_path, capsys):
    data = shared("dna/pretrain-human-chrX")
    out = tmp_path / "chrx"
    code, stdout, err = cli(capsys, "pretrain", "--modality", "dna", "--data", data, "--steps", 2,
                            "--batch-size", 4, "--threads", 1, "--set", "data.heldout_max=8",
                            "--cache-dir", tmp_path / "cache", "--out", out,
                            "--no-progress")  # fmt: skip
    assert code == 0, err
    s = json.loads((out / "summary.json").read_text())
    assert s["bases"] == 26_309_582 and s["heldout_bases"] == 1_000_000
