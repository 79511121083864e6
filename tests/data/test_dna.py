"""DNA and protein data: FASTA / plain-sequence reading (gzip, multi-record, soft-masking,
ambiguity codes, invalid characters), the sequence tokenizers against plain definitions written
here (DNABERT's overlapping k-mers, side-by-side k-mers, base-4 ids), their round trip and their
save / load (selfsup and transformers), the seeded windows and the held-out region, and the
splice split's rules on a synthetic copy of the UCI layout."""

from __future__ import annotations

import gzip
import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
from helpers import shared

from selfsup.data.dna import (
    SequenceWindows,
    build_sequence_corpus,
    heldout_windows,
    read_sequences,
    resolve_sequence_files,
    split_by_position,
    window_lengths,
)
from selfsup.data.dna_tokenizer import DNA, PROTEIN, parse_name, sequence_tokenizer
from selfsup.data.tokenizer import SPECIALS, load_tokenizer
from selfsup.errors import ConfigError
from selfsup.eval import splice

NAMES = ["dna-base", "dna-kmer3", "dna-kmer4", "dna-kmer5", "dna-kmer6", "dna-kmer3-nonoverlap",
         "dna-kmer6-nonoverlap", "protein"]  # fmt: skip
RESIDUES = "ACDEFGHIKLMNPQRSTVWY"


def quiet(_):
    pass


def random_dna(n: int, rng: random.Random, letters: str = "ACGT") -> str:
    return "".join(rng.choice(letters) for _ in range(n))


# -- reading ----------------------------------------------------------------------------------


def test_fasta_records_gzip_soft_masking_and_ambiguity(tmp_path):
    path = tmp_path / "g.fa.gz"
    text = ">chr1 first\nACGTac\n\ngtNN\n;a comment\n>chr2\nAC GT\tRY\n>empty\n>chr3\nt\n"
    path.write_bytes(gzip.compress(text.encode()))
    from selfsup.data.dna import _Counts

    counts = _Counts()
    records = [(n, "".join("ACGTN"[c] for c in codes))
               for n, codes in read_sequences(path, DNA, counts)]  # fmt: skip
    assert records == [("chr1 first", "ACGTACGTNN"), ("chr2", "ACGTNN"), ("chr3", "T")]
    assert counts.lowercase == 5 and counts.ambiguous == 2  # a c g t and t; R Y (N is N)


def test_plain_sequence_file_is_one_sequence_a_line(tmp_path):
    path = tmp_path / "seqs.txt"
    path.write_text("ACGT\n\nggcc\nTTTT\n")
    got = ["".join("ACGTN"[c] for c in codes) for _, codes in read_sequences(path, DNA)]
    assert got == ["ACGT", "GGCC", "TTTT"]


@pytest.mark.parametrize(
    "line, col, ch", [("ACGTXA", 5, "X"), ("AC GT-A", 6, "-"), ("ACGU", 4, "U"), ("ACé", 3, "é")]
)
def test_invalid_character_names_file_line_column(tmp_path, line, col, ch):
    path = tmp_path / "bad.fa"
    path.write_text(f">r\nACGT\n{line}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        list(read_sequences(path, DNA))
    assert f"bad.fa:3:{col}: invalid character {ch!r}" in str(e.value)


def test_protein_alphabet_holds_the_extra_residues(tmp_path):
    path = tmp_path / "p.faa"
    path.write_text(">p\n" + RESIDUES.lower() + "XBZUO\n")
    ((_, codes),) = list(read_sequences(path, PROTEIN))
    assert "".join(PROTEIN.letters[c] for c in codes) == RESIDUES + "XBZUO"
    path.write_text(">p\nMKV*\n")
    with pytest.raises(ConfigError, match="invalid character '\\*'"):
        list(read_sequences(path, PROTEIN))


def test_empty_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "empty.fa").write_text("")
    with pytest.raises(ConfigError, match="no sequences"):
        build_sequence_corpus([str(tmp_path / "empty.fa")], DNA, str(tmp_path / "c"), log=quiet)
    with pytest.raises(ConfigError, match="needs --data"):
        resolve_sequence_files([])
    (tmp_path / "none").mkdir()
    with pytest.raises(ConfigError, match="holds no sequence files"):
        resolve_sequence_files([str(tmp_path / "none")])


def test_a_folder_gives_its_fasta_files_not_its_notes(tmp_path):
    (tmp_path / "b.fa").write_text(">b\nAC\n")
    (tmp_path / "a.fasta.gz").write_bytes(gzip.compress(b">a\nGG\n"))
    (tmp_path / "SOURCE.txt").write_text("What: a genome, 2 records\n")
    assert [f.name for f in resolve_sequence_files([str(tmp_path)])] == ["a.fasta.gz", "b.fa"]


def test_corpus_cache_is_reused_and_counts_letters(tmp_path):
    path = tmp_path / "g.fa"
    path.write_text(">a\nAAAC\n>b\nggtn\n")
    corpus = build_sequence_corpus([str(path)], DNA, str(tmp_path / "c"), log=quiet)
    assert corpus.names == ["a", "b"] and corpus.offsets.tolist() == [0, 4, 8]
    assert corpus.meta["letters"] == {"A": 3, "C": 1, "G": 2, "T": 1, "N": 1}
    said = []
    again = build_sequence_corpus([str(path)], DNA, str(tmp_path / "c"), log=said.append)
    assert "cached" in said[0] and np.array_equal(again.codes, corpus.codes)
    copy = pickle.loads(pickle.dumps(corpus))  # as a data worker gets it: the map reopened
    assert isinstance(copy.codes, np.memmap) and np.array_equal(copy.codes, corpus.codes)


# -- tokenizers -------------------------------------------------------------------------------


def reference_tokens(name: str, seq: str) -> list[str]:
    """The tokens of `seq` by the definitions: DNABERT's k-mers starting at every base,
    side-by-side k-mers (the last piece shorter), single letters."""
    spec = parse_name(name)
    k = spec.k
    if spec.overlap:
        return [seq[i : i + k] for i in range(len(seq) - k + 1)] if len(seq) >= k else ["[UNK]"]
    return [seq[i : i + k] for i in range(0, len(seq), k)]


def reference_id(name: str, token: str) -> int:
    """A k-mer's id: the specials, then base-4 numbers of A=0 C=1 G=2 T=3 (DNABERT's
    itertools.product order), longer pieces first for non-overlapping k-mers."""
    spec = parse_name(name)
    if spec.k == 1:
        return len(SPECIALS) + spec.alphabet.letters.index(token)
    value = 0
    for ch in token:
        value = 4 * value + "ACGT".index(ch)
    offset = len(SPECIALS) + sum(4**m for m in range(len(token) + 1, spec.k + 1))
    return offset + value


@pytest.mark.parametrize("name", NAMES)
def test_ids_follow_the_definitions_and_round_trip(name):
    tok = sequence_tokenizer(name)
    rng = random.Random(0)
    letters = RESIDUES + "XBZUO" if name == "protein" else "ACGT"
    for n in [tok.k, tok.k + 1, 7, 60, 61, 130]:
        seq = random_dna(n, rng, letters)
        ids = tok(["" + seq], max_len=512)["input_ids"][0].tolist()
        assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
        expected = [reference_id(name, t) for t in reference_tokens(name, seq)]
        assert ids[1:-1] == expected
        assert tok.encode_plain([seq])[0] == expected
        assert tok.decode(ids) == seq  # the round trip


def test_vocabulary_sizes_and_dnabert_order():
    sizes = {n: sequence_tokenizer(n).vocab_size for n in NAMES}
    assert sizes["dna-base"] == 5 + 5 and sizes["protein"] == 5 + 25
    assert [sizes[f"dna-kmer{k}"] for k in (3, 4, 5, 6)] == [5 + 4**k for k in (3, 4, 5, 6)]
    assert sizes["dna-kmer6-nonoverlap"] == 5 + sum(4**m for m in range(1, 7))
    tok = sequence_tokenizer("dna-kmer6")  # DNABERT's vocab.txt: the specials, then AAAAAA ...
    vocab = tok.tok.get_vocab()
    assert [vocab[s] for s in SPECIALS] == [0, 1, 2, 3, 4]
    assert vocab["AAAAAA"] == 5 and vocab["AAAAAC"] == 6 and vocab["TTTTTT"] == 4100
    assert set(sequence_tokenizer("protein").spec.tokens()) == set(RESIDUES + "XBZU" + "O")


def test_case_ambiguity_and_short_sequences():
    tok = sequence_tokenizer("dna-kmer3")
    assert tok.encode_plain(["acgt"]) == tok.encode_plain(["ACGT"])
    got = tok.tok.encode("ACRTT", add_special_tokens=False).tokens
    assert got == ["[UNK]", "[UNK]", "[UNK]"]
    assert tok.encode_plain(["ACRTT"])[0] == [1, 1, 1]  # any k-mer holding N is [UNK]
    assert tok.encode_plain(["AC"])[0] == [tok.unk_id]  # shorter than k: one [UNK]
    # A C sit only in k-mers holding the R: lost; T T G are in the known TTG
    assert tok.decode(tok(["ACRTTG"])["input_ids"][0].tolist()) == "NNNTTG"
    base = sequence_tokenizer("dna-base")
    assert base.decode(base(["acRtN"])["input_ids"][0].tolist()) == "ACNTN"
    assert sequence_tokenizer("protein").decode(
        sequence_tokenizer("protein")(["mk9v"])["input_ids"][0].tolist()
    ) == "MKXV"  # fmt: skip
    # whitespace separates sequences: no k-mer spans it
    assert tok.encode_plain(["ACG TTA"])[0] == tok.encode_plain(["ACG"])[0] + tok.encode_plain(
        ["TTA"]
    )[0]  # fmt: skip


def test_encode_codes_equals_the_hf_pipeline_with_unknowns():
    rng = random.Random(1)
    for name in NAMES[:-1]:
        tok = sequence_tokenizer(name)
        for n in range(0, 40):
            seq = random_dna(n, rng, "ACGTN")
            hf = tok.tok.encode(seq, add_special_tokens=False).ids
            assert tok.encode_codes(tok.codes_of(seq)).tolist() == hf, (name, seq)


@pytest.mark.parametrize("name", ["dna-kmer6", "dna-kmer4-nonoverlap", "protein"])
def test_saved_with_a_run_and_loaded_back(tmp_path, name):
    tok = sequence_tokenizer(name)
    tok.save(tmp_path / "tokenizer", max_len=128)
    back = load_tokenizer(tmp_path)  # a run folder: its tokenizer/ is found
    assert type(back) is type(tok) and back.name == name
    seq = "MKVLAAGIW" if name == "protein" else "ACGTTGCAAGTC"
    assert back(["" + seq])["input_ids"].tolist() == tok([seq])["input_ids"].tolist()
    assert back.fingerprint() == tok.fingerprint()
    assert pickle.loads(pickle.dumps(tok)).encode_plain([seq]) == tok.encode_plain([seq])
    config = json.loads((tmp_path / "tokenizer" / "tokenizer_config.json").read_text())
    assert config["selfsup_sequence"] == name and config["model_max_length"] == 128


def test_transformers_reads_the_saved_kmers_as_dnabert_input(tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = sequence_tokenizer("dna-kmer6")
    tok.save(tmp_path)
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    seq = "ACGTTGCAAGTCAGT"
    kmers = " ".join(seq[i : i + 6] for i in range(len(seq) - 5))  # DNABERT's input format
    assert hf(kmers)["input_ids"] == tok([seq])["input_ids"][0].tolist()


def test_a_changed_vocabulary_is_refused(tmp_path):
    sequence_tokenizer("dna-kmer3").save(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["selfsup_sequence"] = "dna-kmer4"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="does not hold the vocabulary"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize(
    "name, says",
    [("dna-kmer2", "k must be 3 to 6"), ("dna-kmer7", "k must be 3 to 6"),
     ("dna-kmer7-nonoverlap", "k must be 3 to 6"), ("dna-codons", "unknown sequence tokenizer")],
)  # fmt: skip
def test_bad_tokenizer_names(name, says):
    with pytest.raises(ConfigError, match=says):
        sequence_tokenizer(name)


# -- windows and the held-out region ----------------------------------------------------------


@pytest.fixture
def corpus(tmp_path):
    rng = random.Random(2)
    recs = [random_dna(n, rng) for n in (3000, 500, 4000)]
    path = tmp_path / "g.fa"
    path.write_text("".join(f">r{i}\n{s}\n" for i, s in enumerate(recs)))
    return build_sequence_corpus([str(path)], DNA, str(tmp_path / "c"), log=quiet), recs


def test_held_out_region_is_the_last_bases_by_position(corpus):
    c, _ = corpus
    train, held = split_by_position(c.offsets, 4500)
    assert train.tolist() == [[0, 3000]]
    assert held.tolist() == [[3000, 3500], [3500, 7500]]
    with pytest.raises(ConfigError, match="leaves nothing to train on"):
        split_by_position(c.offsets, 7500)
    none_held = split_by_position(c.offsets, 0)[1]
    assert len(none_held) == 0


def test_windows_are_seeded_inside_training_records_and_sized(corpus):
    c, recs = corpus
    tok = sequence_tokenizer("dna-kmer6")
    train, held = split_by_position(c.offsets, 1000)  # held out: the last 1,000 of r2
    lo, hi = window_lengths(tok, 64, 5)
    assert (lo, hi) == (6, 67)  # 62 k-mers of 6 bases: 67 bases; at least one k-mer
    w = SequenceWindows(c, train, tok, 16, seed=7, lengths=(lo, hi), short_prob=0.5)
    windows = [w.window(i) for i in range(4000)]
    assert windows == [SequenceWindows(c, train, tok, 16, 7, (lo, hi), 0.5).window(i)
                       for i in range(4000)]  # fmt: skip
    other = [SequenceWindows(c, train, tok, 16, 8, (lo, hi), 0.5).window(i) for i in range(50)]
    assert other != windows[:50]
    ends = [3000, 3500, 6500]  # record ends, the last cut at the held-out start
    starts = [0, 3000, 3500]
    for s, n in windows:
        assert lo <= n <= hi
        r = max(i for i in range(3) if starts[i] <= s)
        assert s + n <= ends[r]  # never across a record end nor into the held-out region
    longest = np.mean([n == hi for _, n in windows])
    assert abs(longest - 0.5) < 0.04  # short_prob 0.5 (a random length is rarely the longest)
    batch = w[3]
    row = batch["input_ids"][0][batch["attention_mask"][0] == 1].tolist()
    s, n = w.window(3 * 16)
    flat = "".join(recs)
    assert tok.decode(row) == flat[s : s + n]
    held_w = heldout_windows(held, hi, lo, at_most=8)
    assert len(held_w) == 8 and all(6500 <= s and s + n <= 7500 for s, n in held_w)


def test_windows_fit_the_tokens_of_each_tokenizer():
    for name, tokens in [("dna-kmer6", 130), ("dna-kmer3-nonoverlap", 60), ("dna-base", 30)]:
        tok = sequence_tokenizer(name)
        _, hi = window_lengths(tok, tokens + 2, 5)
        assert len(tok.encode_plain(["A" * hi])[0]) == tokens
        assert len(tok.encode_plain(["A" * (hi + 1)])[0]) == tokens + 1


# -- the splice split -------------------------------------------------------------------------


def write_splice(folder: Path, rows: list[tuple[str, str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["label\tname\tsequence", *("\t".join(r) for r in rows)]
    (folder / "splice.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def fake_splice(tmp_path):
    """40 rows per class of 60 bp, plus a duplicate, a conflicting pair, an ambiguity code and
    a row (with its reverse complement listed) inside a synthetic pretraining region."""
    rng = random.Random(3)
    rows = [
        (lab, f"{lab}-{i}", random_dna(60, rng)) for lab in ("EI", "IE", "N") for i in range(40)
    ]
    inside = random_dna(60, rng)
    rows += [
        ("EI", "EI-dup", rows[0][2]),  # a duplicate of row 0: dropped, row 0 kept
        ("IE", "X-1", "A" * 60), ("N", "X-2", "A" * 60),  # conflicting labels: both dropped
        ("N", "N-amb", random_dna(30, rng) + "R" + random_dna(29, rng)),  # ambiguity: dropped
        ("N", "N-in", inside),
    ]  # fmt: skip
    folder = write_splice(tmp_path / "splice", rows)
    region = tmp_path / "region"
    region.mkdir()
    genome = random_dna(5000, rng)
    genome = genome[:1000] + splice.reverse_complement(inside) + genome[1060:]
    (region / "GRCh37_chrX_101-5100.fa").write_text(f">chrX:101-5100 test\n{genome}\n")
    (region / splice.REGION_LIST).write_text("label\tname\tchrX_pos_1based\tstrand\n"
                                            "N\tN-in\t1101\t-\n")  # fmt: skip
    return folder, region, rows


def test_splice_split_rules(fake_splice):
    folder, region, rows = fake_splice
    s = splice.make_split(folder, region, seed=0)
    d = s["dropped"]
    assert d["duplicates"] == [120] and d["conflicting_labels"] == [121, 122]
    assert d["ambiguity_codes"] == [123] and d["in_pretraining_region"] == [124]
    parts = [set(s[p]) for p in ("train", "dev", "test")]
    assert sum(map(len, parts)) == 120 and not (parts[0] & parts[1] or parts[1] & parts[2])
    assert s["counts"]["test"] == {"EI": 4, "IE": 4, "N": 4}  # 10% of each class
    assert s["counts"]["dev"] == {"EI": 4, "IE": 4, "N": 4}
    assert splice.make_split(folder, region, seed=0) == s  # deterministic
    assert splice.make_split(folder, region, seed=1)["test"] != s["test"]


def test_a_listed_region_row_that_is_not_there_is_refused(fake_splice):
    folder, region, _ = fake_splice
    (region / splice.REGION_LIST).write_text("label\tname\tchrX_pos_1based\tstrand\n"
                                            "N\tN-in\t1102\t-\n")  # fmt: skip
    with pytest.raises(ConfigError, match="scan of the pretraining region"):
        splice.make_split(folder, region)


def test_task_files_words_and_reverse_complement(fake_splice, tmp_path):
    folder, region, rows = fake_splice
    s = splice.make_split(folder, region)
    written = splice.write_task(folder, tmp_path / "t", ["a", "t", "c", "g"], True, split=s)
    assert written == {"train": 2 * len(s["train"]), "dev": 12, "test": 12}
    lines = (tmp_path / "t" / "train.tsv").read_text().splitlines()
    assert lines[0] == "label\tname\trow\ttext"
    label, name, row, text = lines[1].split("\t")
    seq = rows[int(row)][2]
    assert text == " ".join({"A": "a", "T": "t", "C": "c", "G": "g"}[b] for b in seq)
    rc = lines[2].split("\t")[3].replace(" ", "").upper()
    assert name + "/rc" == lines[2].split("\t")[1]
    assert rc == seq[::-1].translate(str.maketrans("ACGT", "TGCA"))
    (folder / "splice.tsv").write_text((folder / "splice.tsv").read_text() + "N\tx\t" + "A" * 60)
    with pytest.raises(ConfigError, match="not the file the split was made from"):
        splice.write_task(folder, tmp_path / "u", split=s)


def test_committed_split_is_disjoint_and_counted():
    s = splice.committed_split()
    parts = {p: set(s[p]) for p in ("train", "dev", "test")}
    dropped = set().union(*map(set, s["dropped"].values()))
    assert sum(map(len, parts.values())) == 2975  # 3,190 - 184 - 2 - 15 - 14
    assert not (parts["train"] & parts["dev"] or parts["train"] & parts["test"])
    assert not dropped & set().union(*parts.values())
    assert {k: len(v) for k, v in s["dropped"].items()} == {
        "conflicting_labels": 2, "duplicates": 184, "ambiguity_codes": 15,
        "in_pretraining_region": 14,
    }  # fmt: skip
    assert {p: sum(c.values()) for p, c in s["counts"].items()} == {
        "train": 2381, "dev": 297, "test": 297,
    }  # fmt: skip


@pytest.mark.data
def test_committed_split_rows_on_the_shared_data():
    folder = shared("dna/splice")
    s = splice.committed_split()
    rows = splice.read_splice(folder)
    assert splice.sha256_of(folder / "splice.tsv") == s["sha256"] and len(rows) == 3190
    kept = [rows[i] for p in ("train", "dev", "test") for i in s[p]]
    assert len({r.sequence for r in kept}) == len(kept)  # no sequence twice
    assert all(set(r.sequence) <= set("ACGT") for r in kept)
    for p, c in s["counts"].items():
        assert c == {lab: sum(rows[i].label == lab for i in s[p]) for lab in splice.LABELS}
    listed = (shared("dna/pretrain-human-chrX") / splice.REGION_LIST).read_text().splitlines()
    names = {line.split("\t")[1] for line in listed[1:]}
    assert {rows[i].name for i in s["dropped"]["in_pretraining_region"]} == names


@pytest.mark.data
@pytest.mark.slow
def test_the_script_rule_gives_the_committed_split():
    dna = shared("dna")
    assert splice.make_split(dna / "splice", dna / "pretrain-human-chrX", 0) == (
        splice.committed_split()
    )
