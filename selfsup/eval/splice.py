"""The splice-junction task (UCI "Molecular Biology (Splice-junction Gene Sequences)", 3,190
primate windows of 60 bp, classes EI donor / IE acceptor / N neither): the committed split
(selfsup/eval/splits/splice.json) and the task folder `selfsup finetune --task classify` reads.

The split (`make_split`; experiments/make_splice_split.py writes the file). Rows are 0-based
indices of splice.tsv's data rows (instance names repeat, so they cannot identify a row):
  1. a sequence that occurs with two labels is dropped, every row of it (1 sequence, 2 rows);
  2. of a sequence that occurs several times with one label, the first row is kept (the others
     are `duplicates`): 3,005 distinct sequences of the 3,190 rows;
  3. rows holding an ambiguity code (D N S R: 15 rows) are dropped, so every method reads the
     same A/C/G/T input (the tokenizers would read them as N, the word mappings have no word);
  4. rows whose sequence occurs, on either strand, inside the chrX pretraining region
     (../pretrain-human-chrX: found by a scan of the region, checked against the 14 rows its
     splice_windows_in_this_region.tsv lists) are dropped: a model pretrained there has seen
     them;
  5. the rest are split per label (stratified): ordered by the SHA-256 of "seed:sequence", the
     first 10% are test, the next 10% dev, the others train (no RNG whose algorithm could change).
Not handled: near-duplicates (windows of one gene shifted by a base or two, as the UCI data has
next to some sites) may sit in different parts.

`write_task` writes train.tsv, dev.tsv and test.tsv (columns label, name, row, text). With
`words` each base becomes a word (A T C G -> four words, e.g. "a t c g", Kao & Lee's mapping
of DNA onto a text model's vocabulary, arXiv:2103.07162); with `reverse_complement` the
training rows are doubled by their reverse complements, labels kept (an augmentation that
teaches strand symmetry: the task's windows all read along the gene, so it may not help).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from selfsup.checkpoint import atomic_write_text
from selfsup.errors import ConfigError
from selfsup.paths import check_out_folder

SPLIT_FILE = "splice.json"
SOURCE = "splice.tsv"
REGION_LIST = "splice_windows_in_this_region.tsv"
LABELS = ("EI", "IE", "N")
BASES = "ATCG"  # the order `words` maps (A/T/C/G -> words[0..3])
COMPLEMENT = str.maketrans("ACGT", "TGCA")
DEV_SHARE = TEST_SHARE = 0.1


@dataclass(frozen=True)
class SpliceRow:
    row: int  # 0-based data row of splice.tsv
    label: str
    name: str
    sequence: str


def reverse_complement(seq: str) -> str:
    return seq.translate(COMPLEMENT)[::-1]


def read_splice(folder: str | Path) -> list[SpliceRow]:
    """The rows of splice.tsv (label, name, sequence; one header line) in `folder`."""
    path = Path(folder) / SOURCE if Path(folder).is_dir() else Path(folder)
    if not path.is_file():
        raise ConfigError(
            f"no {SOURCE} in {folder} (the UCI splice data, ../shared/data/dna/splice)"
        )
    lines = path.read_text().splitlines()
    if not lines or lines[0].split("\t") != ["label", "name", "sequence"]:
        raise ConfigError(f"{path} does not start with the header label<TAB>name<TAB>sequence")
    rows = []
    for i, line in enumerate(lines[1:]):
        parts = line.split("\t")
        if len(parts) != 3:
            raise ConfigError(f"{path}:{i + 2}: expected 3 tab-separated fields")
        rows.append(SpliceRow(i, parts[0].strip(), parts[1].strip(), parts[2].strip().upper()))
    return rows


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def region_occurrences(region: np.ndarray, sequences: list[str]) -> dict[str, list]:
    """{sequence: [(0-based offset, strand), ...]} of the sequences (A/C/G/T, all of one length)
    found in `region` (DNA codes A0 C1 G2 T3), on the + strand or as reverse complements. Scans
    hashes of every window of the region, a chunk at a time; every hit is checked."""
    if not sequences:
        return {}
    n = len(sequences[0])
    head = min(n, 31)  # 2 bits a base: 31 bases fit an int64
    code = {c: i for i, c in enumerate("ACGT")}
    powers = 4 ** np.arange(head - 1, -1, -1, dtype=np.int64)
    wanted: dict[int, list[tuple[str, str]]] = {}
    for s in sequences:
        for strand, form in (("+", s), ("-", reverse_complement(s))):
            h = int(np.array([code[c] for c in form[:head]], dtype=np.int64) @ powers)
            wanted.setdefault(h, []).append((s, strand, form))
    keys = np.array(sorted(wanted), dtype=np.int64)
    found: dict[str, list] = {}
    letters = np.frombuffer(b"ACGTN", dtype=np.uint8)
    step = 1 << 18
    for a in range(0, len(region) - n + 1, step):
        part = np.asarray(region[a : a + step + n - 1], dtype=np.int64)
        windows = np.lib.stride_tricks.sliding_window_view(part, head)[: len(part) - n + 1]
        hashes = windows @ powers
        for j in np.flatnonzero(np.isin(hashes, keys)).tolist():
            text = letters[np.asarray(region[a + j : a + j + n])].tobytes().decode()
            for s, strand, form in wanted[int(hashes[j])]:
                if text == form:
                    found.setdefault(s, []).append((a + j, strand))
    return found


def _region(region_folder: Path):
    """(codes, 1-based chromosome position of its first base, listed rows) of the pretraining
    region folder: its FASTA (header `chrX:START-END ...`) and REGION_LIST."""
    from selfsup.data.dna import read_sequences
    from selfsup.data.dna_tokenizer import DNA

    fastas = sorted(region_folder.glob("*.fa.gz")) + sorted(region_folder.glob("*.fa"))
    if len(fastas) != 1:
        raise ConfigError(f"{region_folder} should hold one FASTA file, it holds {len(fastas)}")
    ((header, codes),) = list(read_sequences(fastas[0], DNA))
    m = re.match(r"\S+:(\d+)-(\d+)", header)
    if m is None:
        raise ConfigError(f"{fastas[0]}: header {header!r} does not say chrom:start-end")
    listed = []
    lines = (region_folder / REGION_LIST).read_text().splitlines()
    for line in lines[1:]:
        label, name, pos, strand = line.split("\t")
        listed.append((label, name, int(pos), strand))
    return codes, int(m.group(1)), listed


def make_split(splice_folder: str | Path, region_folder: str | Path | None, seed: int = 0) -> dict:
    """The split of the module docstring, as the JSON object splits/splice.json holds."""
    splice_folder = Path(splice_folder)
    rows = read_splice(splice_folder)
    by_seq: dict[str, list[SpliceRow]] = {}
    for r in rows:
        by_seq.setdefault(r.sequence, []).append(r)
    conflicting, duplicates, ambiguous, kept = [], [], [], []
    for seq, group in by_seq.items():
        if len({r.label for r in group}) > 1:
            conflicting += [r.row for r in group]
            continue
        duplicates += [r.row for r in group[1:]]
        if set(seq) - set("ACGT"):
            ambiguous.append(group[0].row)
        else:
            kept.append(group[0])
    in_region: list[int] = []
    region_note = "no pretraining region given: nothing dropped for it"
    if region_folder is not None:
        codes, first_pos, listed = _region(Path(region_folder))
        hits = region_occurrences(codes, [r.sequence for r in kept])
        # a repeat may occur several times: every listed place must be among the hits, and
        # every row with a hit must be listed
        found = {(r.name, first_pos + pos, strand) for r in kept
                 for pos, strand in hits.get(r.sequence, [])}  # fmt: skip
        expected = {(name, pos, strand) for _, name, pos, strand in listed}
        names = {name for name, _, _ in found}
        if not expected <= found or names != {name for name, _, _ in expected}:
            raise ConfigError(
                f"the scan of the pretraining region found {len(names)} splice rows, "
                f"{REGION_LIST} lists {len(expected)}: {sorted(expected - found)[:3]}"
            )
        in_region = sorted(r.row for r in kept if r.sequence in hits)
        kept = [r for r in kept if r.sequence not in hits]
        region_note = (f"{len(in_region)} rows found in the region by a scan of both strands, "
                       f"as {REGION_LIST} lists them")  # fmt: skip
    parts: dict[str, list[int]] = {"train": [], "dev": [], "test": []}
    for label in LABELS:
        mine = sorted(
            (r for r in kept if r.label == label),
            key=lambda r: hashlib.sha256(f"{seed}:{r.sequence}".encode()).hexdigest(),
        )
        n_test, n_dev = round(TEST_SHARE * len(mine)), round(DEV_SHARE * len(mine))
        parts["test"] += [r.row for r in mine[:n_test]]
        parts["dev"] += [r.row for r in mine[n_test : n_test + n_dev]]
        parts["train"] += [r.row for r in mine[n_test + n_dev :]]
    label_of = {r.row: r.label for r in rows}
    counts = {p: {lab: sum(label_of[i] == lab for i in ids) for lab in LABELS}
              for p, ids in parts.items()}  # fmt: skip
    return {
        "dataset": "splice",
        "source": SOURCE,
        "sha256": sha256_of(splice_folder / SOURCE),
        "seed": seed,
        "note": (
            "rows: 0-based data rows of splice.tsv (after its header). Dropped: both rows of the "
            "sequence with conflicting labels; repeated rows of one sequence (the first kept); "
            "rows with ambiguity codes; rows inside the chrX pretraining region ("
            + region_note
            + "). The rest split per label by SHA-256 of 'seed:sequence': 10% test, 10% dev, "
            "80% train (selfsup/eval/splice.py)."
        ),
        "counts": counts,
        **{p: sorted(ids) for p, ids in parts.items()},
        "dropped": {
            "conflicting_labels": sorted(conflicting),
            "duplicates": sorted(duplicates),
            "ambiguity_codes": sorted(ambiguous),
            "in_pretraining_region": in_region,
        },
    }


def dump_split(split: dict) -> str:
    """The split as JSON, one line per list (small, and diffs stay readable)."""
    lines = ["{"]
    items = list(split.items())
    for i, (k, v) in enumerate(items):
        end = "," if i < len(items) - 1 else ""
        if isinstance(v, dict) and all(isinstance(x, list) for x in v.values()):
            inner = ",\n".join(f"  {json.dumps(a)}: {json.dumps(b)}" for a, b in v.items())
            lines.append(f" {json.dumps(k)}: {{\n{inner}\n }}{end}")
        else:
            lines.append(f" {json.dumps(k)}: {json.dumps(v)}{end}")
    return "\n".join(lines) + "\n}\n"


def committed_split() -> dict:
    return json.loads(files("selfsup").joinpath("eval/splits", SPLIT_FILE).read_text())


def parse_words(text: str | None) -> list[str] | None:
    """`--words a,t,c,g`: four distinct words for A, T, C, G (in that order)."""
    if text is None:
        return None
    words = [w.strip() for w in text.split(",")]
    if len(words) != 4 or not all(words) or len(set(words)) != 4:
        raise ConfigError(f"--words takes four distinct words for A,T,C,G, got {text!r}")
    if any(len(w.split()) != 1 for w in words):
        raise ConfigError(f"--words: a word cannot hold whitespace ({text!r})")
    return words


def write_task(
    splice_folder: str | Path,
    out: str | Path,
    words: list[str] | None = None,
    reverse_complement_train: bool = False,
    split: dict | None = None,
) -> dict:
    """Write train.tsv, dev.tsv and test.tsv of the split into the new folder `out`; returns
    the rows written per part."""
    splice_folder = Path(splice_folder)
    out = check_out_folder(out)
    split = split or committed_split()
    rows = read_splice(splice_folder)
    source = splice_folder / SOURCE if splice_folder.is_dir() else splice_folder
    if sha256_of(source) != split["sha256"]:
        raise ConfigError(f"{source} is not the file the split was made from (its SHA-256 differs)")
    mapping = dict(zip(BASES, words, strict=True)) if words else None

    def text(seq: str) -> str:
        return " ".join(mapping[b] for b in seq) if mapping else seq

    written = {}
    out.mkdir(parents=True, exist_ok=True)
    for part in ("train", "dev", "test"):
        lines = ["label\tname\trow\ttext"]
        for i in split[part]:
            r = rows[i]
            lines.append(f"{r.label}\t{r.name}\t{r.row}\t{text(r.sequence)}")
            if part == "train" and reverse_complement_train:
                rc = reverse_complement(r.sequence)
                lines.append(f"{r.label}\t{r.name}/rc\t{r.row}\t{text(rc)}")
        atomic_write_text(out / f"{part}.tsv", "\n".join(lines) + "\n")
        written[part] = len(lines) - 1
    return written
