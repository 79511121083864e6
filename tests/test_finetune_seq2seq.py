"""`finetune --task seq2seq` (text -> text) on an encoder-decoder, `evaluate` of its folder, and
classification from an encoder-decoder's encoder half; bad input in one line."""

import csv
import json

import pytest
from helpers import assert_clean_error, cli

WORDS = "river stone cloud apple north quiet paper glass tiger lemon iron music".split()


def write_pairs(path, n=160, empty_at=None):
    """A copy task: the target is the source's words in order (learnable in a few epochs)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["src", "tgt"])
        for i in range(n):
            words = [WORDS[(i * 7 + k * 3) % 12] for k in range(3 + i % 3)]
            w.writerow([" ".join(words), "" if i == empty_at else " ".join(words)])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from selfsup.cli import main

    folder = tmp_path_factory.mktemp("ft_s2s")
    docs = [" ".join(f"The {WORDS[(d + s) % 12]} saw the {WORDS[(d * s) % 12]}." for s in
                     range(6)) for d in range(50)]  # fmt: skip
    (folder / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    small = ["--vocab-size", "200", "--max-len", "48", "--batch-size", "8", "--precision",
             "fp32", "--set", "model.dim=32", "--set", "model.n_heads=2", "--set",
             "model.ffn_dim=64", "--no-progress", "--cache-dir", str(folder / "cache")]  # fmt: skip
    main(["pretrain", "--objective", "bart", "--data", str(folder / "docs.jsonl"), "--steps",
          "4", *small, "--out", str(folder / "bart")])  # fmt: skip
    main(["pretrain", "--objective", "mlm", "--data", str(folder / "docs.jsonl"), "--steps",
          "2", *small, "--out", str(folder / "mlm")])  # fmt: skip
    write_pairs(folder / "pairs.csv")
    return folder


FT = ["--task", "seq2seq", "--source-column", "src", "--target-column", "tgt", "--lr", "5e-3",
      "--batch-size", "16", "--max-target-len", "12"]  # fmt: skip


def test_one_file_holds_out_a_seeded_dev_share(folder, tmp_path, capsys):
    out = tmp_path / "ft"
    code, stdout, err = cli(capsys, "finetune", *FT, "--data", folder / "pairs.csv", "--init",
                            folder / "bart", "--epochs", "1", "--out", out)  # fmt: skip
    assert code == 0, err
    assert "dev: a seeded 10% of the rows" in stdout
    assert json.loads((out / "results.json").read_text())["dev"]["examples"] == 16


def test_seq2seq_finetune_learns_and_evaluate_gives_its_dev_scores(folder, tmp_path, capsys):
    out = tmp_path / "ft"
    write_pairs(tmp_path / "dev.csv", n=24)
    code, stdout, err = cli(capsys, "finetune", *FT, "--data", folder / "pairs.csv", "--init",
                            folder / "bart", "--epochs", "25", "--eval-every", "50", "--dev",
                            tmp_path / "dev.csv", "--out", out)  # fmt: skip
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert res["main_metric"] == "rougeL"
    first, best = res["history"][0], res["dev"]
    assert {"rouge1", "rouge2", "rougeL", "bleu", "exact_match"} <= set(best)
    assert best["rougeL"] > first["rougeL"] + 10  # the copy task is being learnt
    rows = [json.loads(x) for x in (out / "predictions-dev.jsonl").read_text().splitlines()]
    assert len(rows) == best["examples"] == 24
    assert {"source", "target", "prediction"} <= set(rows[0])
    code, stdout, err = cli(capsys, "evaluate", out, "--task", "seq2seq", "--data",
                            tmp_path / "dev.csv", "--source-column", "src", "--target-column",
                            "tgt", "--split", "dev")  # fmt: skip
    assert code == 0, err
    again = json.loads(stdout.strip().splitlines()[-1])
    assert again["rougeL"] == pytest.approx(best["rougeL"], abs=1e-6)


def test_scratch_seq2seq_needs_preset_and_tokenizer(folder, tmp_path, capsys):
    out = tmp_path / "scratch"
    code, _, err = cli(capsys, "finetune", *FT, "--data", folder / "pairs.csv", "--init",
                       "scratch", "--out", out)  # fmt: skip
    assert_clean_error(code, err, out, says="--preset and --tokenizer")
    code, _, err = cli(capsys, "finetune", *FT, "--data", folder / "pairs.csv", "--init",
                       "scratch", "--preset", "tiny", "--tokenizer", folder / "bart",
                       "--epochs", "1", "--out", out)  # fmt: skip
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["kind"] == "seq2seq"


@pytest.mark.parametrize(
    "case, says",
    [("empty", "has no target in 'tgt'"), ("encoder-only", "encoder-only"),
     ("column", "no column 'nope'")],
)  # fmt: skip
def test_bad_input_is_one_line(folder, tmp_path, capsys, case, says):
    data, init, extra = folder / "pairs.csv", folder / "bart", []
    if case == "empty":
        data = tmp_path / "empty.csv"
        write_pairs(data, empty_at=5)
    elif case == "encoder-only":
        init = folder / "mlm"
    else:
        extra = ["--source-column", "nope"]
    out = tmp_path / "ft"
    code, _, err = cli(capsys, "finetune", *FT, *extra, "--data", data, "--init", init,
                       "--out", out)  # fmt: skip
    assert_clean_error(code, err, out, says=says)


def test_classification_from_an_encoder_decoder_encoder(folder, tmp_path, capsys):
    data, dev = tmp_path / "labels.csv", tmp_path / "labels-dev.csv"
    for path, n in ((data, 120), (dev, 24)):
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for i in range(n):
                word = WORDS[i % 12]
                w.writerow([f"the {word} is here", "a" if i % 12 < 6 else "b"])
    out = tmp_path / "cls"
    code, _, err = cli(capsys, "finetune", "--task", "classify", "--data", data, "--dev", dev,
                       "--init", folder / "bart", "--epochs", "4", "--lr", "3e-3",
                       "--out", out)  # fmt: skip
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert json.loads((out / "config.json").read_text())["encoder"] == "seq2seq"
    code, stdout, err = cli(capsys, "evaluate", out, "--task", "classify", "--data", dev,
                            "--split", "dev")  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout.strip().splitlines()[-1])["accuracy"] == pytest.approx(
        res["dev"]["accuracy"]
    )
    code, _, err = cli(capsys, "export", out, "--format", "hf", "--out", tmp_path / "x")
    assert_clean_error(code, err, tmp_path / "x", says="not supported yet")


def test_predict_writes_the_decoded_text_per_line(folder, tmp_path, capsys):
    out = tmp_path / "ft"
    code, _, err = cli(capsys, "finetune", *FT, "--data", folder / "pairs.csv", "--init",
                       folder / "bart", "--epochs", "1", "--out", out)  # fmt: skip
    assert code == 0, err
    src = tmp_path / "in.txt"
    src.write_text("river stone cloud\napple north\n")
    code, stdout, err = cli(capsys, "predict", out, "--input", src, "--out", tmp_path / "p.jsonl")
    assert code == 0, err
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2] and all("prediction" in r for r in rows)
