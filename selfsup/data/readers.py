"""Reading data files, for pretraining corpora (data/text.py) and fine-tuning tasks
(data/tasks.py) alike: rows of JSON lines, CSV/TSV tables and `datasets` folders as dicts, lines
and paragraphs of plain text.

    read_records("reviews.csv", require=("text",))   -> (line, {"text": ..., "label": ...}), ...
    read_records("hf:wikitext:train")                  -> (1, {"text": ...}), ...
    table_rows("train.tsv", "\\t", quoted=False)        -> (line, ["a", "b", "1"]), ...
    file_paragraphs("book.txt.gz")                     -> "First paragraph, lines joined.", ...

Every file may be compressed (.gz .bz2 .xz) or be a .zip holding one data file; its format is
the suffix under that (`data_suffix`: x.jsonl.gz -> .jsonl). Text is decoded strictly (UTF-8 by
default, a leading byte-order mark dropped) and read as a stream, so a corpus larger than memory
is fine. Every problem is a one-line ConfigError naming the file: a binary file, bytes that are
not the encoding (EncodingError, with the byte and its offset), a bad JSON line (file:line), a
missing column (MissingColumn), a damaged archive.

TSV comes in two dialects: GLUE's, split on tabs literally (its sentences hold unbalanced `"`
that CSV quoting would run across lines), and CSV quoting with tabs (`quoted=True`), which lets a
cell hold a whole multi-line document.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import csv
import gzip
import io
import json
import lzma
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from selfsup.errors import ConfigError

COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
JSON_SUFFIXES = (".jsonl", ".json")
TABLE_SUFFIXES = (".csv", ".tsv")
DATASET_FILES = ("dataset_dict.json", "state.json", "dataset_info.json")  # save_to_disk marks


class EncodingError(ConfigError):
    """Bytes of a file that are not valid in the encoding it is read with."""


class MissingColumn(ConfigError):
    """A column (a JSON field) that a row or a table's header lacks; `line` is None when the
    whole table or dataset lacks it."""

    def __init__(self, path: str | Path, line: int | None, column: str, columns: Sequence):
        self.path, self.line, self.column, self.columns = path, line, column, list(columns)
        where = f"line {line} of {path}" if line else str(path)
        have = ", ".join(str(c) for c in self.columns)
        super().__init__(f"{where} has no column {column!r}; its columns are: {have}")


# --------------------------------------------------------------------------------------------
# Opening files
# --------------------------------------------------------------------------------------------


def is_dataset(path: str | Path) -> bool:
    """A `hf:NAME[:SPLIT]` hub name or a folder written by `datasets`' save_to_disk."""
    if str(path).startswith("hf:"):
        return True
    p = Path(path)
    return p.is_dir() and any((p / f).is_file() for f in DATASET_FILES)


def data_suffix(path: str | Path) -> str:
    """The lower-case suffix of the data in `path`: under a compression suffix (x.jsonl.gz ->
    .jsonl; a bare x.gz -> ""), and for a .zip, that of the one data file inside."""
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        return suffixes[-2] if len(suffixes) > 1 else ""
    if suffixes and suffixes[-1] == ".zip":
        with read_errors(p), zipfile.ZipFile(p) as z:
            return Path(_zip_member(z, p)).suffix.lower()
    return suffixes[-1] if suffixes else ""


def _zip_member(z: zipfile.ZipFile, path: Path) -> str:
    names = [m for m in z.namelist() if not m.endswith("/") and not m.startswith("__MACOSX")]
    if len(names) != 1:
        raise ConfigError(f"{path} should hold exactly one data file, it holds {len(names)}")
    return names[0]


@contextlib.contextmanager
def read_errors(path: str | Path, encoding: str = "utf-8") -> Iterator[None]:
    """Turn decoding, I/O and format errors while reading `path` into one-line ConfigErrors."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise EncodingError(
            f"{path} is not valid {encoding} (byte {e.object[e.start]:#x} at offset {e.start})"
        ) from None
    except (OSError, EOFError, lzma.LZMAError, zlib.error, zipfile.BadZipFile, csv.Error) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None


@contextlib.contextmanager
def open_text(path: str | Path, encoding: str = "utf-8", newline: str | None = None):
    """`path` as a text stream: decompressed, or the one data file of a .zip; decoded strictly,
    without a leading UTF-8 byte-order mark. A file with NUL bytes at its start is refused as
    binary. Wrap the reading in `read_errors` (the readers below do)."""
    p = Path(path)
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise ConfigError(f"unknown encoding {encoding!r}") from None
    if codec == "utf-8":
        encoding = "utf-8-sig"  # the same text, less a byte-order mark (Microsoft's MRPC files)
    with contextlib.ExitStack() as stack:
        suffix = p.suffix.lower()
        if suffix in COMPRESSED:
            raw = stack.enter_context(COMPRESSED[suffix](p, "rb"))
        elif suffix == ".zip":
            z = stack.enter_context(zipfile.ZipFile(p))
            raw = stack.enter_context(z.open(_zip_member(z, p)))
        else:
            raw = stack.enter_context(open(p, "rb"))
        if b"\x00" in raw.peek(8192)[:8192]:
            raise ConfigError(f"{p} looks like a binary file, not text")
        yield stack.enter_context(
            io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline=newline)
        )


# --------------------------------------------------------------------------------------------
# Text: whole, lines, paragraphs
# --------------------------------------------------------------------------------------------


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """The whole decoded text of a file."""
    with read_errors(path, encoding), open_text(path, encoding) as fh:
        return fh.read()


def read_lines(path: str | Path, encoding: str = "utf-8") -> Iterator[str]:
    """The lines of a file, without their line ends (\\n, \\r\\n or \\r)."""
    with read_errors(path, encoding), open_text(path, encoding) as fh:
        for line in fh:
            yield line[:-1] if line.endswith("\n") else line


def paragraphs(lines) -> Iterator[str]:
    """Paragraphs of an iterable of lines: runs of non-blank lines, stripped and joined with one
    space (wrapped lines become one paragraph); blank lines separate them."""
    buf: list[str] = []
    for line in lines:
        line = line.strip()
        if line:
            buf.append(line)
        elif buf:
            yield " ".join(buf)
            buf = []
    if buf:
        yield " ".join(buf)


def file_paragraphs(path: str | Path, encoding: str = "utf-8") -> Iterator[str]:
    """The paragraphs of a plain-text file, read as a stream."""
    with read_errors(path, encoding), open_text(path, encoding) as fh:
        yield from paragraphs(fh)


# --------------------------------------------------------------------------------------------
# Rows: JSON lines, tables, datasets
# --------------------------------------------------------------------------------------------


def json_rows(path: str | Path, encoding: str = "utf-8") -> Iterator[tuple[int, Any]]:
    """(line, value) of a JSON-lines file (blank lines skipped), or (position, element) of a
    file holding one JSON array."""
    with read_errors(path, encoding), open_text(path, encoding) as fh:
        first = True
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if first and line.lstrip().startswith("["):  # one JSON array, not JSON lines
                try:
                    values = json.loads(line + fh.read())
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{path} is not valid JSON: {e}") from None
                yield from enumerate(values, 1)
                return
            first = False
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError:
                raise ConfigError(f"{path}:{n} is not a JSON line") from None


def table_rows(
    path: str | Path, delimiter: str = ",", quoted: bool = True, encoding: str = "utf-8"
) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of each non-empty row of a CSV/TSV file, header included. `quoted`: CSV
    quoting (a row then ends on the line given); else lines split on `delimiter` literally."""
    with read_errors(path, encoding), open_text(path, encoding, "" if quoted else None) as fh:
        if quoted:
            csv.field_size_limit(2**31 - 1)  # a whole document per cell; the default is 128 KiB
            reader = csv.reader(fh, delimiter=delimiter)
            for row in reader:
                if row:
                    yield reader.line_num, row
            return
        for n, line in enumerate(fh, 1):
            line = line[:-1] if line.endswith("\n") else line
            if line:
                yield n, line.split(delimiter)


def read_records(
    path: str | Path,
    encoding: str = "utf-8",
    require: Sequence[str] = (),
    quoted_tsv: bool = False,
    split: str | None = None,
    split_aliases: Sequence[str] = (),
) -> Iterator[tuple[int, dict]]:
    """(line, row as a dict) of a JSON-lines file (each line an object), a CSV/TSV file with a
    header, or a `datasets` folder / `hf:NAME[:SPLIT]` name (line = row number).

    require: columns every row must have (MissingColumn otherwise; checked on the header of a
    table or dataset before any row, so an empty table still says so). quoted_tsv: read .tsv with
    CSV quoting (else GLUE's literal tabs). split, split_aliases: see `load_dataset_split`."""
    if is_dataset(path):
        yield from _dataset_records(path, require, split, split_aliases)
        return
    suffix = data_suffix(path)
    if suffix in JSON_SUFFIXES:
        for n, row in json_rows(path, encoding):
            if not isinstance(row, dict):
                raise ConfigError(f"line {n} of {path} is not a JSON object")
            for c in require:
                if c not in row:
                    raise MissingColumn(path, n, c, row)
            yield n, row
    elif suffix in TABLE_SUFFIXES:
        tsv = suffix == ".tsv"
        rows = table_rows(path, "\t" if tsv else ",", quoted_tsv or not tsv, encoding)
        _, header = next(rows, (0, []))
        header = [h.strip() for h in header]
        for c in require:
            if c not in header:
                raise MissingColumn(path, None, c, header)
        for n, row in rows:
            yield n, {h: row[i] if i < len(row) else None for i, h in enumerate(header)}
    else:
        raise ConfigError(f"{path}: unsupported file type {suffix!r} (use .csv, .tsv or .jsonl)")


def load_dataset_split(ref: str | Path, split: str | None = None, aliases: Sequence[str] = ()):
    """The `datasets.Dataset` of `hf:NAME[:SPLIT]` (default split: `split`, else "train") or of a
    save_to_disk folder. A folder holding several splits gives `split` or the first of its
    `aliases` it has (an error if none); with no `split`, "train", else its first split."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"reading {ref} needs the `datasets` package") from None
    if str(ref).startswith("hf:"):
        name, _, hub_split = str(ref)[3:].partition(":")
        return datasets.load_dataset(name, split=hub_split or split or "train")
    ds = datasets.load_from_disk(str(ref))
    if not isinstance(ds, datasets.DatasetDict):
        return ds
    if split is None:
        return ds["train"] if "train" in ds else next(iter(ds.values()))
    names = [n for n in (split, *aliases) if n in ds]
    if not names:
        raise ConfigError(f"{ref} has no split for {split!r}; its splits are: {', '.join(ds)}")
    return ds[names[0]]


def _dataset_records(ref, require, split, aliases) -> Iterator[tuple[int, dict]]:
    ds = load_dataset_split(ref, split, aliases)
    for c in require:
        if c not in ds.column_names:
            raise MissingColumn(ref, None, c, ds.column_names)
    n = 0
    for batch in ds.iter(batch_size=1024):  # columns of 1024 rows: far faster than row by row
        columns = list(batch.items())
        for i in range(len(columns[0][1]) if columns else 0):
            n += 1
            yield n, {c: values[i] for c, values in columns}
