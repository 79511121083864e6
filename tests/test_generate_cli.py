"""`selfsup generate` on BART and MASS runs: the greedy decoder's output, MASS's fragment
written back into its input, files in and out, and bad input as one-line errors."""

import json

import pytest
from helpers import assert_clean_error, cli

from selfsup.generate import GenerateConfig, generate, generate_text
from selfsup.models import load_model

SMALL = ["--set", "model.dim=32", "--set", "model.n_heads=2", "--set", "model.ffn_dim=64",
         "--set", "model.n_layers=1", "--vocab-size", "300", "--max-len", "48",
         "--batch-size", "8", "--precision", "fp32", "--no-progress"]  # fmt: skip


def text(n=40):
    words = "river stone cloud apple north quiet paper glass tiger lemon iron music".split()
    return [
        " ".join(f"The {words[(d + s) % 12]} saw the {words[(d * s) % 12]}." for s in range(5))
        for d in range(n)
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen")
    corpus = folder / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in text()))
    out = {}
    for objective in ("bart", "mass", "mlm"):
        out[objective] = folder / objective
        args = ["pretrain", "--objective", objective, "--data", corpus, "--steps", "4",
                "--cache-dir", folder / "cache", *SMALL, "--out", out[objective]]  # fmt: skip
        code = cli_quiet(args)
        assert code == 0
    return out


def cli_quiet(args):
    from selfsup.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return e.code
    return 0


def test_bart_output_is_the_greedy_decoding(runs, capsys):
    texts = ["the [MASK] saw the river .", "The stone saw the cloud."]
    code, out, err = cli(capsys, "generate", runs["bart"], *texts, "--json",
                         "--max-new-tokens", "12")  # fmt: skip
    assert code == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["input"] for r in rows] == ["the [MASK] saw the river .", "The stone saw the cloud."]
    loaded = load_model(runs["bart"])
    tok = loaded.tokenizer
    batch = tok(["the [MASK] saw the river .", "The stone saw the cloud."])
    want = generate(loaded.model.model, batch["input_ids"], batch["attention_mask"], tok.cls_id,
                    tok.sep_id, GenerateConfig(max_new_tokens=12))  # fmt: skip
    assert [r["written"] for r in rows] == [tok.decode(w) for w in want]
    assert all(r["output"] == r["written"] for r in rows)  # BART writes the whole text


def test_mass_writes_the_fragment_back_into_its_input(runs):
    loaded = load_model(runs["mass"])
    tok = loaded.tokenizer
    src = "the river saw [MASK] [MASK] [MASK] stone ."
    (row,) = generate_text(loaded, [src])
    written = tok.encode_plain([row["written"]])[0]
    assert len(written) == 3  # exactly the fragment's length, no EOS
    plain = tok.encode_plain(["the river saw stone ."])[0]
    assert tok.encode_plain([row["output"]])[0] == [*plain[:3], *written, *plain[3:]]
    with pytest.raises(Exception, match="has none"):
        generate_text(loaded, ["no masks here"])


def test_file_in_jsonl_out_and_truncation(runs, tmp_path, capsys):
    src = tmp_path / "in.txt"
    long = " ".join(["river"] * 600)
    src.write_text(f"the [MASK] saw .\n{long}\n")
    out = tmp_path / "gen.jsonl"
    code, stdout, err = cli(capsys, "generate", runs["bart"], "--file", src, "--out", out,
                            "--beams", "2", "--max-new-tokens", "6")  # fmt: skip
    assert code == 0, err
    assert "1 of 2 inputs were longer than the model's 512 positions" in err
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 2 and rows[1]["input"] == long


@pytest.mark.parametrize(
    "args, says",
    [
        (["{mlm}", "x"], "encoder-only"),
        (["{bart}"], "give texts or --file"),
        (["{bart}", "x", "--beams", "0"], "beams"),
        (["{bart}", "x", "--beams", "2", "--sample"], "sampling with beams"),
        (["{bart}", "--file", "/nonexistent.txt"], "no such file"),
        (["/nonexistent-run", "x"], "no such model folder"),
    ],
)
def test_bad_input_is_one_line(runs, capsys, args, says):
    argv = [a.format(**{k: str(v) for k, v in runs.items()}) for a in args]
    code, _, err = cli(capsys, "generate", *argv)
    assert_clean_error(code, err, says=says)


def test_sampling_is_seeded(runs, capsys):
    base = ["generate", runs["bart"], "the [MASK] saw .", "--sample", "--max-new-tokens", "8"]
    a = cli(capsys, *base, "--seed", "1")[1]
    b = cli(capsys, *base, "--seed", "1")[1]
    assert a == b  # (that other seeds sample differently is tested in test_generate)
