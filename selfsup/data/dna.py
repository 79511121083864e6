"""DNA and protein pretraining data: FASTA and plain-sequence corpora -> integer codes (cached
on disk) -> seeded random windows (DNABERT's 5-510 bp, arXiv:2008.07200) -> tokens -> batches;
a held-out region by position.

Files (each may be .gz .bz2 .xz or a .zip of one; a folder gives its FASTA files, sorted, or
when it has none its plain sequence files):
    FASTA (.fa .fasta .fna .ffn .faa .fas .seq, or any file whose first non-blank line starts
        with ">"): one record per ">" header, its sequence lines joined (multi-record files are
        fine); blank lines and ";" comment lines are skipped;
    plain sequence (.txt, or no suffix): one sequence a line (DNABERT's pretraining files).
Spaces and tabs inside a line are dropped. Lower case (soft-masked repeats) is read as upper
case and counted.

Invalid characters: an error. A DNA corpus holds A C G T, N and the IUPAC ambiguity codes
R Y S W K M B D H V (each read as N, counted and logged); a protein corpus the 20 amino acids,
X, B, Z, U, O. Anything else (a digit, "-", "*", "U" in DNA, a non-ASCII letter) stops the
run with a one-line error naming the file, line, column and character: a corpus that holds
it is not what it claims to be. (The tokenizers, which also read fine-tuning text, read such
characters as N / X instead: data/dna_tokenizer.py.)

Windows: example j of batch k is a pure function of (seed, k, j): its length is the longest
window that fits data.max_len tokens, or (with probability short_prob) uniform from min_bp to
that; its start uniform over the training bases (a window never crosses a record's end nor the
held-out boundary). The held-out region is the last heldout_bp bases of the corpus (records in
file order; by default the last 1 Mb), tiled by windows of the longest length (at most
heldout_max, evenly spaced) for evaluation: no training window touches a held-out base.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from selfsup.data.cache import build_once, cache_key, default_cache_dir
from selfsup.data.dna_tokenizer import (
    ALPHABETS,
    Alphabet,
    SequenceTokenizer,
    is_sequence_name,
    parse_name,
)
from selfsup.data.padding import pad_sequences
from selfsup.data.readers import data_suffix, read_lines
from selfsup.data.text import TextDataConfig
from selfsup.errors import ConfigError
from selfsup.keys import ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS
from selfsup.seeds import Stream, seed_for

FASTA_SUFFIXES = {".fa", ".fasta", ".fna", ".ffn", ".faa", ".fas", ".seq"}
PLAIN_SUFFIXES = {".txt", ".text", ""}
CACHE_FORMAT = "sequences-v1"  # raise whenever what a cache entry stores changes
INVALID = 255  # code of a byte that is not in the alphabet (nor an ambiguity code)


@dataclass
class DNADataConfig(TextDataConfig):
    """The `data` section of a DNA (or protein) run: sequence files, the tokenizer by name, the
    window lengths and the held-out region. Of the text fields, paths, max_len (tokens per
    window, [CLS] and [SEP] included), tokenizer, heldout_max, num_workers and cache_dir apply;
    lowercase, text_field and heldout_every do not (a sequence is read as it is, held out by
    position)."""

    tokenizer: str | None = "dna-kmer6"  # dna-base | dna-kmer{3..6}[-nonoverlap] | protein
    min_bp: int = 5  # the shortest window (DNABERT: 5 bp; at least k for k-mers)
    short_prob: float = 0.5  # share of windows of a random length (the others are the longest)
    heldout_bp: int = 1_000_000  # the last bases of the corpus, held out (0: none)

    def validate(self, model) -> None:
        if self.max_len > model.max_len:
            raise ConfigError(
                f"max_len {self.max_len} is beyond the model's position table ({model.max_len})"
            )
        if self.max_len < 3:
            raise ConfigError(f"max_len must be at least 3 ([CLS], a token, [SEP]), got "
                              f"{self.max_len}")  # fmt: skip
        if not is_sequence_name(self.tokenizer):
            raise ConfigError(
                f"a DNA run takes a sequence tokenizer by name (data.tokenizer), not "
                f"{self.tokenizer!r}: dna-base, dna-kmer3 .. dna-kmer6, dna-kmerK-nonoverlap, "
                "protein"
            )
        parse_name(self.tokenizer)
        if self.pack:
            raise ConfigError("--pack is not supported for sequence windows")
        lowest = {"min_bp": 1, "heldout_bp": 0, "heldout_max": 0, "num_workers": 0}
        for name, low in lowest.items():
            if getattr(self, name) < low:
                raise ConfigError(f"data.{name} must be >= {low}, got {getattr(self, name)}")
        if not 0.0 <= self.short_prob <= 1.0:
            raise ConfigError(f"data.short_prob must be in [0, 1], got {self.short_prob}")


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def resolve_sequence_files(paths: list[str]) -> list[Path]:
    """Files and folders (searched for sequence files, sorted); a one-line error for a missing
    path, a folder without sequence files, or no paths at all."""
    if not paths:
        raise ConfigError("a DNA run needs --data: FASTA files (.fa .fasta, .gz too) or files of "
                          "one sequence a line")  # fmt: skip
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise ConfigError(f"no such file or folder: {raw}")
        if p.is_dir():
            listed = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            # its FASTA files; only a folder without any is read as plain sequence files (so a
            # README or SOURCE.txt beside a genome is not read as sequence)
            found = [f for f in listed if data_suffix(f) in FASTA_SUFFIXES]
            found = found or [f for f in listed if data_suffix(f) in PLAIN_SUFFIXES]
            if not found:
                raise ConfigError(f"folder {raw} holds no sequence files (.fa .fasta .txt, .gz)")
            files.extend(found)
        else:
            files.append(p)
    return files


def _tables(alphabet: Alphabet) -> tuple[np.ndarray, np.ndarray]:
    """(256,) uint8 codes of each byte (INVALID outside the alphabet and its ambiguity codes) and
    (256,) bool marks of the ambiguity codes, both cases."""
    codes = np.full(256, INVALID, dtype=np.uint8)
    ambiguous = np.zeros(256, dtype=bool)
    for i, c in enumerate(alphabet.letters):
        codes[ord(c)] = codes[ord(c.lower())] = i
    for c in alphabet.ambiguous:
        codes[ord(c)] = codes[ord(c.lower())] = alphabet.unknown_code
        ambiguous[ord(c)] = ambiguous[ord(c.lower())] = True
    return codes, ambiguous


def _is_fasta(path: Path, encoding: str) -> bool:
    if data_suffix(path) in FASTA_SUFFIXES:
        return True
    for line in read_lines(path, encoding):
        if line.strip():
            return line.lstrip().startswith(">")
    return False


@dataclass
class _Counts:
    lowercase: int = 0
    ambiguous: int = 0


def read_sequences(path: Path, alphabet: Alphabet, counts: _Counts | None = None,
                   encoding: str = "utf-8"):  # fmt: skip
    """Yield (name, codes) for each record of one file (uint8 codes of `alphabet.letters`);
    empty records are skipped. A character outside the alphabet is a one-line error."""
    counts = counts if counts is not None else _Counts()
    table, ambiguous = _tables(alphabet)
    fasta = _is_fasta(path, encoding)
    name, parts = None, []

    def record():
        return name, (np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8))

    for i, line in enumerate(read_lines(path, encoding), 1):
        if fasta and line.startswith(">"):
            if parts:
                yield record()
            name, parts = line[1:].strip() or f"record{i}", []
            continue
        if fasta and line.startswith(";"):
            continue
        text = "".join(line.split())
        if not text:
            continue
        raw = text.encode("ascii", errors="replace")
        b = np.frombuffer(raw, dtype=np.uint8)
        c = table[b]
        bad = np.flatnonzero(c == INVALID)
        if len(bad):
            col = _column(line, int(bad[0]))
            ch = line[col - 1]
            raise ConfigError(
                f"{path}:{i}:{col}: invalid character {ch!r} in a {alphabet.name} sequence "
                f"(allowed: {_allowed(alphabet)}, either case)"
            )
        counts.lowercase += int(((b >= 97) & (b <= 122)).sum())
        counts.ambiguous += int(ambiguous[b].sum())
        if fasta:
            if name is None:
                raise ConfigError(f"{path}:{i}: sequence before the first '>' header")
            parts.append(c)
        else:
            yield f"line{i}", c
    if parts:
        yield record()


def _column(line: str, index: int) -> int:
    """The 1-based column in `line` of the `index`-th non-whitespace character."""
    seen = -1
    for col, ch in enumerate(line, 1):
        if not ch.isspace():
            seen += 1
            if seen == index:
                return col
    return len(line)


def _allowed(alphabet: Alphabet) -> str:
    if alphabet.ambiguous:
        return (f"{' '.join(alphabet.kmer_letters)}, {alphabet.unknown} and the IUPAC codes "
                f"{' '.join(alphabet.ambiguous)} (read as {alphabet.unknown})")  # fmt: skip
    return " ".join(alphabet.letters)


# --------------------------------------------------------------------------------------------
# The cached corpus
# --------------------------------------------------------------------------------------------


@dataclass
class SequenceCorpus:
    """A corpus as codes: `codes` (N,) uint8 (memory-mapped) of all records one after the
    other, `offsets` (R+1,) the start of each record, `names` the records' names."""

    folder: Path
    codes: np.ndarray
    offsets: np.ndarray
    names: list[str]
    meta: dict

    @property
    def n_bases(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict:  # data workers reopen the memory map, not copy the codes
        return {**self.__dict__, "codes": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.codes = np.memmap(self.folder / "codes.bin", dtype=np.uint8, mode="r")


def build_sequence_corpus(paths: list[str], alphabet: Alphabet, cache_dir: str | None = None,
                          encoding: str = "utf-8", log=print) -> SequenceCorpus:  # fmt: skip
    """Read the files into a cache folder of codes (or open the existing one)."""
    files = resolve_sequence_files(paths)
    key = cache_key(files, alphabet.name, encoding, CACHE_FORMAT)
    folder = Path(cache_dir or default_cache_dir()) / "sequences" / key

    def build(tmp: Path) -> None:
        t0 = time.perf_counter()
        counts, names, lengths = _Counts(), [], []
        with open(tmp / "codes.bin", "wb") as f:
            for path in files:
                for name, codes in read_sequences(path, alphabet, counts, encoding):
                    if len(codes):
                        f.write(codes.tobytes())
                        names.append(name)
                        lengths.append(len(codes))
        if not lengths:
            raise ConfigError(f"no sequences in {', '.join(map(str, files))}")
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        np.save(tmp / "offsets.npy", offsets)
        codes = np.fromfile(tmp / "codes.bin", dtype=np.uint8)
        per_letter = np.bincount(codes, minlength=len(alphabet.letters))
        meta = {
            "alphabet": alphabet.name, "records": len(lengths), "bases": int(offsets[-1]),
            "letters": {c: int(n) for c, n in zip(alphabet.letters, per_letter, strict=True)},
            "lowercase": counts.lowercase, "ambiguous": counts.ambiguous,
            "files": [str(p) for p in files],
        }  # fmt: skip
        (tmp / "names.json").write_text(json.dumps(names))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        log(f"data: read {len(lengths):,} records, {int(offsets[-1]):,} bases in "
            f"{time.perf_counter() - t0:.1f}s")  # fmt: skip

    if build_once(folder, build, "meta.json"):
        log(f"data: using cached sequences in {folder}")
    return open_sequence_corpus(folder)


def open_sequence_corpus(folder: Path) -> SequenceCorpus:
    meta = json.loads((folder / "meta.json").read_text())
    return SequenceCorpus(
        folder,
        np.memmap(folder / "codes.bin", dtype=np.uint8, mode="r"),
        np.load(folder / "offsets.npy"),
        json.loads((folder / "names.json").read_text()),
        meta,
    )


def describe(corpus: SequenceCorpus) -> str:
    """One line on what the corpus holds: records, bases, letter shares, case and ambiguity."""
    m = corpus.meta
    total = max(1, m["bases"])
    shares = " ".join(f"{c} {100 * n / total:.1f}%" for c, n in m["letters"].items() if n)
    what = "bases" if m["alphabet"] == "dna" else "residues"
    unknown = ALPHABETS[m["alphabet"]].unknown
    return (f"{m['records']:,} records, {m['bases']:,} {what} ({shares}); {m['lowercase']:,} "
            f"lower-case (soft-masked) read as upper case; {m['ambiguous']:,} ambiguity codes "
            f"read as {unknown}")  # fmt: skip


# --------------------------------------------------------------------------------------------
# Regions and windows
# --------------------------------------------------------------------------------------------


def split_by_position(offsets: np.ndarray, heldout_bp: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held) intervals, (I, 2) int64 [start, end) rows: the records cut at the start of
    the last `heldout_bp` bases. A one-line error when that leaves nothing to train on."""
    total = int(offsets[-1])
    if heldout_bp >= total:
        raise ConfigError(
            f"the corpus has {total:,} bases: data.heldout_bp={heldout_bp:,} leaves nothing to "
            "train on (lower it, or 0 for no held-out region)"
        )
    cut = total - heldout_bp
    train, held = [], []
    for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
        if a < cut:
            train.append((a, min(b, cut)))
        if b > cut:
            held.append((max(a, cut), b))
    as_array = lambda rows: np.asarray(rows, dtype=np.int64).reshape(-1, 2)  # noqa: E731
    return as_array(train), as_array(held)


def window_lengths(tok: SequenceTokenizer, max_len: int, min_bp: int) -> tuple[int, int]:
    """(shortest, longest) window in bases: the longest fills max_len tokens ([CLS] and [SEP]
    included); the shortest is min_bp, at least k for k-mers (one whole k-mer)."""
    longest = tok.spec.max_bases(max_len - 2)
    shortest = min(max(min_bp, tok.k if tok.overlap else 1), longest)
    return shortest, longest


class SequenceWindows(torch.utils.data.Dataset):
    """Batch k of random windows over `intervals` (see the module docstring), a pure function of
    (seed, k): window lengths and starts from the example streams, the corruption (`corrupt`,
    the objective's masking) from the batch's stream. Rows are [CLS] tokens [SEP], padded."""

    def __init__(self, corpus: SequenceCorpus, intervals: np.ndarray, tok: SequenceTokenizer,
                 batch_size: int, seed: int, lengths: tuple[int, int], short_prob: float,
                 corrupt=None):  # fmt: skip
        self.corpus, self.intervals, self.tok = corpus, intervals, tok
        self.batch_size, self.seed, self.corrupt = batch_size, seed, corrupt
        self.shortest, self.longest = lengths
        self.short_prob = short_prob
        sizes = intervals[:, 1] - intervals[:, 0]
        self.cum = np.cumsum(sizes)  # (I,) bases up to the end of each interval
        if not len(sizes) or self.cum[-1] <= 0:
            raise ConfigError("no training bases left for windows")

    def __len__(self) -> int:  # batches of the longest windows that cover the bases once
        return max(1, int(self.cum[-1]) // (self.longest * self.batch_size))

    def window(self, pos: int) -> tuple[int, int]:
        """(start, length) in corpus coordinates of the example at flat position `pos`."""
        rng = np.random.default_rng(seed_for(self.seed, Stream.EXAMPLE, pos))
        length = self.longest
        if rng.random() < self.short_prob:
            length = int(rng.integers(self.shortest, self.longest + 1))
        p = int(rng.integers(0, int(self.cum[-1])))
        i = int(np.searchsorted(self.cum, p, side="right"))
        a, b = (int(x) for x in self.intervals[i])
        length = min(length, b - a)
        start = a + p - (int(self.cum[i - 1]) if i else 0)
        return min(start, b - length), length

    def ids(self, start: int, length: int) -> list[int]:
        tok = self.tok
        body = tok.encode_codes(self.corpus.codes[start : start + length])
        return [tok.cls_id, *body.tolist(), tok.sep_id]

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        B = self.batch_size
        rows = [self.ids(*self.window(k * B + j)) for j in range(B)]
        batch = collate_ids(rows, self.tok.pad_id)
        if self.corrupt is not None:
            g = torch.Generator().manual_seed(seed_for(self.seed, Stream.CORRUPT, k))
            batch = self.corrupt(batch, g)
        return batch


def collate_ids(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    input_ids, mask = pad_sequences(rows, pad_id)  # (B, T)
    return {
        INPUT_IDS: input_ids,
        TOKEN_TYPE_IDS: torch.zeros_like(input_ids),
        ATTENTION_MASK: mask.long(),
    }


def heldout_windows(intervals: np.ndarray, longest: int, shortest: int,
                    at_most: int) -> list[tuple[int, int]]:  # fmt: skip
    """(start, length) windows tiling the held-out intervals, of `longest` bases (an interval's
    last piece shorter, kept when it has `shortest`); at most `at_most`, evenly spaced."""
    out = []
    for a, b in intervals.tolist():
        for s in range(a, b, longest):
            n = min(longest, b - s)
            if n >= shortest:
                out.append((s, n))
    if len(out) > at_most:
        keep = np.unique(np.linspace(0, len(out) - 1, at_most).round().astype(int))
        out = [out[i] for i in keep]
    return out


def heldout_batches(corpus: SequenceCorpus, windows: list[tuple[int, int]], tok, corrupt,
                    seed: int, batch_size: int = 64) -> list[dict]:  # fmt: skip
    """The held-out windows as masked batches, each masked with its own seeded generator."""
    out = []
    for n, s in enumerate(range(0, len(windows), batch_size)):
        rows = []
        for start, length in windows[s : s + batch_size]:
            body = tok.encode_codes(corpus.codes[start : start + length])
            rows.append([tok.cls_id, *body.tolist(), tok.sep_id])
        batch = collate_ids(rows, tok.pad_id)
        g = torch.Generator().manual_seed(seed_for(seed, Stream.CORRUPT, n))
        out.append(corrupt(batch, g) if corrupt is not None else batch)
    return out


def token_counts(corpus: SequenceCorpus, intervals: np.ndarray, tok: SequenceTokenizer,
                 chunk: int = 1 << 20) -> np.ndarray:  # fmt: skip
    """(V,) how often each token occurs in the intervals (read in chunks), for the
    most-frequent-token baseline."""
    counts = np.zeros(tok.vocab_size, dtype=np.int64)
    step = chunk - chunk % tok.k if not tok.overlap else chunk
    for a, b in intervals.tolist():
        for s in range(a, b, step):
            e = min(b, s + step + (tok.k - 1 if tok.overlap else 0))
            ids = tok.encode_codes(corpus.codes[s:e])
            counts += np.bincount(ids, minlength=tok.vocab_size)
    return counts
