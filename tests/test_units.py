"""The units -> BERT pipeline (selfsup/units.py): `selfsup units` writes one line of units per
file (as many as the vq-wav2vec run's frames) and a companion JSON; the unit tokenizer takes
each unit as one token (no lower-casing, sentence splitting or WordPiece merges); `selfsup
pretrain --objective mlm --tokenizer units` trains a BERT on the lines; the pair is a speech
upstream."""

from __future__ import annotations

import json

import pytest
import soundfile
import torch
from helpers import assert_clean_error, cli, write_speech

from selfsup.data.audio import list_audio
from selfsup.data.text import TextDataConfig, build_corpus
from selfsup.data.tokenizer import SPECIALS, load_tokenizer, unit_tokenizer
from selfsup.errors import ConfigError
from selfsup.layers.conv_frontend import conv_output_lengths
from selfsup.units import dedup_units, load_units_upstream

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--set", "model.conv_channels=16,16,16,16,16", "--set", "model.dim=16",
        "--set", "data.max_frames=4000", "--set", "data.heldout_every=6"]  # fmt: skip
LAYERS = [(16, 10, 5), (16, 8, 4), (16, 4, 2), (16, 4, 2), (16, 4, 2)]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Clips, a vq-wav2vec run on them, their units (plain and merged), a BERT on the units."""
    root = tmp_path_factory.mktemp("units")
    clips = write_speech(root / "clips", n=12)
    soundfile.write(root / "clips" / "tiny.wav", torch.zeros(420).numpy(), 16000)  # no frame
    cache = str(root / "cache")

    def run(*argv):
        try:
            from selfsup.cli import main

            main([str(a) for a in argv])
        except SystemExit as e:
            assert e.code == 0

    run("pretrain", "--objective", "vq-wav2vec", "--data", clips, "--steps", "2", "--batch-size",
        "4", "--eval-every", "0", "--cache-dir", cache, "--out", root / "vq", "--no-progress",
        *TINY)  # fmt: skip
    run("units", root / "vq", "--data", clips, "--out", root / "units.txt", "--cache-dir", cache)
    run("units", root / "vq", "--data", clips, "--out", root / "merged.txt", "--dedup",
        "--cache-dir", cache)  # fmt: skip
    run("pretrain", "--objective", "mlm", "--data", root / "units.txt", "--tokenizer", "units",
        "--steps", "3", "--batch-size", "4", "--max-len", "16", "--eval-every", "3",
        "--cache-dir", cache, "--out", root / "bert", "--no-progress",
        "--set", "data.heldout_every=3")  # fmt: skip
    return root


def test_units_file_has_a_line_per_file_and_a_token_per_frame(pipeline):
    lines = (pipeline / "units.txt").read_text().splitlines()
    info = json.loads((pipeline / "units.json").read_text())
    files = [item.path for item in list_audio(pipeline / "clips")]
    assert info["files"] == files and len(lines) == len(files) == 13
    for path, line, frames in zip(files, lines, info["frames"], strict=True):
        wave, rate = soundfile.read(path)
        samples = len(wave) * 16000 // rate  # resampled to the run's 16 kHz
        assert abs(frames - int(conv_output_lengths(samples, LAYERS))) <= 1
        tokens = line.split()
        assert len(tokens) == frames
        codes = [[int(c) for c in t.split("_")] for t in tokens]  # g0_g1, each of V = 320
        assert all(len(c) == 2 and 0 <= min(c) and max(c) < 320 for c in codes)
    assert lines[files.index(str(pipeline / "clips" / "tiny.wav"))] == ""  # shorter than a frame
    assert info["frame_rate"] == 100.0 and info["vocab_size"] == 320**2
    assert info["units_used"] == len({t for line in lines for t in line.split()})
    assert info["run"] == str((pipeline / "vq").resolve()) and info["dedup"] is False
    assert info["tokens"] == info["frames"]


def test_dedup_merges_runs_of_a_unit(pipeline):
    plain = (pipeline / "units.txt").read_text().splitlines()
    merged = (pipeline / "merged.txt").read_text().splitlines()
    info = json.loads((pipeline / "merged.json").read_text())
    assert [dedup_units(p.split()) for p in plain] == [m.split() for m in merged]
    assert info["tokens"] == [len(m.split()) for m in merged] and info["dedup"] is True
    assert info["frames"] == json.loads((pipeline / "units.json").read_text())["frames"]
    assert sum(info["tokens"]) < sum(info["frames"])  # the synthetic tones repeat units
    assert all(a != b for m in merged for a, b in zip(m.split(), m.split()[1:], strict=False))


def test_units_need_a_run_with_a_quantizer(pipeline, tmp_path, capsys):
    cache = str(pipeline / "cache")
    code, _, err = cli(capsys, "pretrain", "--objective", "cpc", "--data", pipeline / "clips",
                       "--steps", "1", "--batch-size", "4", "--eval-every", "0", "--cache-dir",
                       cache, "--out", tmp_path / "cpc", "--no-progress", *TINY)  # fmt: skip
    assert code == 0, err
    out = tmp_path / "units.txt"
    code, _, err = cli(capsys, "units", tmp_path / "cpc", "--data", pipeline / "clips", "--out",
                       out, "--cache-dir", cache)  # fmt: skip
    assert_clean_error(code, err, out, "has no quantizer")
    assert not (tmp_path / "units.json").exists()


@pytest.mark.parametrize("where", ["folder", "json", "no parent", "not a run"])
def test_bad_units_arguments_are_one_line_errors(pipeline, tmp_path, capsys, where):
    run, out = pipeline / "vq", tmp_path / "units.txt"
    if where == "folder":
        out = tmp_path
    elif where == "json":
        out = tmp_path / "units.json"
    elif where == "no parent":
        out = tmp_path / "missing" / "units.txt"
    else:
        run = pipeline / "clips"
    code, _, err = cli(capsys, "units", run, "--data", pipeline / "clips", "--out", out)
    assert_clean_error(code, err, None)
    assert not (tmp_path / "units.txt").exists() and not (tmp_path / "units.json").exists()


# --------------------------------------------------------------------------------------------
# the unit tokenizer
# --------------------------------------------------------------------------------------------


def test_the_unit_tokenizer_takes_each_unit_as_one_token(tmp_path):
    lines = ["3_17 3_17 5_2 Ab_C", "5_2 10_300 3_17", "1.5 x"]
    tok = unit_tokenizer(lines)
    vocab = tok.tok.get_vocab()
    # specials, then by count (3_17 three times, 5_2 twice), ties in string order
    assert [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])] == [
        *SPECIALS, "3_17", "5_2", "1.5", "10_300", "Ab_C", "x"]  # fmt: skip
    ids = tok.encode_plain(["3_17 Ab_C ab_c 10_30 10_300 1.5. x"])[0]
    # no lower-casing (ab_c is unknown), no WordPiece pieces (10_30, a prefix of a unit, and
    # "1.5." are one [UNK] each), no punctuation splitting (1.5 is one unit)
    assert ids == [vocab["3_17"], vocab["Ab_C"], tok.unk_id, tok.unk_id, vocab["10_300"],
                   tok.unk_id, vocab["x"]]  # fmt: skip
    enc = tok(["3_17 5_2"])["input_ids"][0].tolist()
    assert enc == [tok.cls_id, vocab["3_17"], vocab["5_2"], tok.sep_id]
    assert tok.decode(enc) == "3_17 5_2"
    assert unit_tokenizer(lines, vocab_size=len(SPECIALS) + 2).vocab_size == 7  # the 2 commonest
    tok.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert again.units and not again.lowercase and again.tok.get_vocab() == vocab
    # transformers reads the saved folder with the same pipeline (tokenizer.json's)
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert hf("3_17 Ab_C 1.5")["input_ids"] == tok(["3_17 Ab_C 1.5"])["input_ids"][0].tolist()


def test_the_unit_tokenizer_refuses_special_token_text_and_empty_files():
    with pytest.raises(ConfigError, match=r"special token \[MASK\]"):
        unit_tokenizer(["1_2 [MASK] 3_4"])
    with pytest.raises(ConfigError, match="no units"):
        unit_tokenizer(["", "  "])


def test_each_line_of_a_unit_file_is_a_document_with_no_sentence_splitting(tmp_path):
    path = tmp_path / "units.txt"
    path.write_text("1_2 3_4. 5_6 7_8\n\n9_1 2_3! 4_5\n6_7\n")  # ". 5" would end a sentence
    tok = unit_tokenizer(path.read_text().splitlines())
    corpus = build_corpus([str(path)], tok, TextDataConfig(max_len=16),
                          cache_dir=str(tmp_path / "cache"), log=lambda _: None)  # fmt: skip
    assert len(corpus.doc_sents) - 1 == 3  # one document a non-blank line
    assert list(corpus.sent_offsets) == [0, 4, 7, 8]  # one sentence each: no splitting


# --------------------------------------------------------------------------------------------
# BERT on the units, and the pair as a speech upstream
# --------------------------------------------------------------------------------------------


def test_mlm_pretrains_on_the_units(pipeline):
    bert = pipeline / "bert"
    summary = json.loads((bert / "summary.json").read_text())
    assert summary["steps"] == 3 and 0 < summary["heldout_mlm_loss"] < float("inf")
    units = {t for line in (pipeline / "units.txt").read_text().splitlines() for t in line.split()}
    tok = load_tokenizer(bert)
    assert tok.units and set(tok.tok.get_vocab()) == units | set(SPECIALS)
    assert summary["vocab_size"] == len(units) + len(SPECIALS)
    cfg = json.loads((bert / "config.json").read_text())
    assert cfg["data"]["tokenizer"] == "units" and cfg["model"]["vocab_size"] == tok.vocab_size


def test_units_and_bert_are_a_speech_upstream(pipeline):
    upstream = load_units_upstream(f"units:{pipeline / 'vq'}:{pipeline / 'bert'}")
    assert upstream.n_layers == 3 and upstream.dim == 128  # embeddings + the tiny BERT's 2
    wave = torch.randn(2, 6000, 1)
    pad = torch.zeros(2, 6000, dtype=torch.bool)
    pad[1, 3000:] = True
    out = upstream(wave, pad)
    T = int(conv_output_lengths(6000, LAYERS))
    assert [h.shape for h in out["all_hidden"]] == [(2, T, 128)] * 3  # one step a frame
    assert out["padding_mask"].sum(1).tolist() == [0, T - int(conv_output_lengths(3000, LAYERS))]
    # windows of max_len - 2 = 14 units each; the clip alone gives its frames the same states
    alone = upstream(wave[1:, :3000], pad[1:, :3000])
    n = int(conv_output_lengths(3000, LAYERS))
    torch.testing.assert_close(alone["all_hidden"][-1][0], out["all_hidden"][-1][1, :n])
    assert upstream.frame_centres(6000)[0] == 232.5  # half the 465-sample receptive field
    with pytest.raises(ConfigError, match="units:VQRUN:BERTRUN"):
        load_units_upstream(f"units:{pipeline / 'vq'}")
    with pytest.raises(ConfigError, match="not a unit tokenizer|no quantizer"):
        load_units_upstream(f"units:{pipeline / 'bert'}:{pipeline / 'vq'}")


def test_load_upstream_hands_units_specs_to_the_units_upstream():
    from selfsup.eval.upstream import load_upstream

    with pytest.raises(ConfigError, match="units:VQRUN:BERTRUN"):
        load_upstream("units:only-one-part")
