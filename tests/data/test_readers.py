"""The one reader layer (selfsup.data.readers): every container (plain, .gz, .bz2, .xz, a .zip of
one file) gives the same rows; JSON lines and arrays, CSV, both TSV dialects, datasets folders;
and the one-line errors."""

from __future__ import annotations

import bz2
import gzip
import lzma
import zipfile
from pathlib import Path

import pytest

from selfsup.data.readers import (
    MissingColumn,
    data_suffix,
    file_paragraphs,
    json_rows,
    read_lines,
    read_records,
    table_rows,
)
from selfsup.errors import ConfigError

CSV = 'text,label\n"two\nlines, quoted",pos\nplain,neg\n'


def containers(folder: Path, name: str, text: str) -> list[Path]:
    """`text` written as name, name.gz, name.bz2, name.xz and a .zip holding name."""
    data = text.encode()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    for suffix, opener in ((".gz", gzip.open), (".bz2", bz2.open), (".xz", lzma.open)):
        with opener(folder / (name + suffix), "wb") as f:
            f.write(data)
    with zipfile.ZipFile(folder / (name + ".zip"), "w") as z:
        z.writestr(f"inner/{name}", data)
    return [folder / n for n in (name, f"{name}.gz", f"{name}.bz2", f"{name}.xz", f"{name}.zip")]


def test_every_container_gives_the_same_rows(tmp_path):
    want = [
        (3, {"text": "two\nlines, quoted", "label": "pos"}),  # a row's line is where it ends
        (4, {"text": "plain", "label": "neg"}),
    ]
    for path in containers(tmp_path, "t.csv", CSV):
        assert data_suffix(path) == ".csv"
        assert list(read_records(path, require=("text",))) == want, path.name


def test_json_lines_and_arrays(tmp_path):
    lines = tmp_path / "a.jsonl"
    lines.write_text('{"text": "a"}\n\n{"text": "b"}\n')
    array = tmp_path / "b.json"
    array.write_text('\n  [{"text": "a"},\n {"text": "b"}]\n')
    assert list(json_rows(lines)) == [(1, {"text": "a"}), (3, {"text": "b"})]
    assert [r for _, r in read_records(array)] == [{"text": "a"}, {"text": "b"}]


def test_tsv_dialects(tmp_path):
    f = tmp_path / "t.tsv"
    f.write_text('text\tlabel\nHe said "go.\t1\n"x\ty"\t0\n')
    literal = list(table_rows(f, "\t", quoted=False))  # GLUE: quotes are text
    assert literal[1:] == [(2, ['He said "go.', "1"]), (3, ['"x', 'y"', "0"])]
    quoted = [r for _, r in read_records(f, quoted_tsv=True)]  # CSV quoting: one cell "x\ty"
    assert quoted[-1] == {"text": "x\ty", "label": "0"}


def test_byte_order_mark_and_line_ends_are_dropped(tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes("\ufeffone\r\ntwo\rthree\n\nfour".encode())
    assert list(read_lines(f)) == ["one", "two", "three", "", "four"]
    assert list(file_paragraphs(f)) == ["one two three", "four"]
    (tmp_path / "h.csv").write_bytes("\ufefftext\nx\n".encode())
    assert list(read_records(tmp_path / "h.csv", require=("text",))) == [(2, {"text": "x"})]


def test_missing_columns_are_named(tmp_path):
    (tmp_path / "h.csv").write_text("body\n")  # a header alone still says what it lacks
    with pytest.raises(MissingColumn, match="h.csv has no column 'text'; its columns are: body"):
        list(read_records(tmp_path / "h.csv", require=("text",)))
    (tmp_path / "j.jsonl").write_text('{"text": "a"}\n{"body": "b"}\n')
    with pytest.raises(MissingColumn, match="line 2 of .*j.jsonl has no column 'text'") as e:
        list(read_records(tmp_path / "j.jsonl", require=("text",)))
    assert (e.value.line, e.value.columns) == (2, ["body"])


@pytest.mark.parametrize(
    "name, data, says",
    [
        ("bad.jsonl", b'{"a": 1}\n{oops\n', "bad.jsonl:2 is not a JSON line"),
        ("list.jsonl", b"[1, 2]\n", "line 1 of .*list.jsonl is not a JSON object"),
        ("late.csv", b"text\n" + b"ok\n" * 5000 + b"caf\xe9\n", "not valid utf-8 .byte 0xe9"),
        ("nul.csv", b"text\na\x00b\n", "binary"),
        ("bad.csv.gz", b"not gzip", "cannot read"),
        ("bad.csv.zip", b"not a zip", "cannot read"),
        ("x.parquet", b"PAR1", "unsupported file type '.parquet'"),
    ],
)
def test_errors_are_one_line_config_errors(tmp_path, name, data, says):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ConfigError, match=says):
        list(read_records(tmp_path / name))


def test_unknown_encoding(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    with pytest.raises(ConfigError, match="unknown encoding 'klingon'"):
        list(read_lines(tmp_path / "a.txt", "klingon"))


def test_datasets_folders(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"text": [f"t{i}" for i in range(2500)], "label": list(range(2500))}  # > one chunk
    datasets.DatasetDict(
        {"validation": datasets.Dataset.from_dict(rows), "test": datasets.Dataset.from_dict(rows)}
    ).save_to_disk(str(tmp_path / "dd"))
    got = list(read_records(tmp_path / "dd", split="dev", split_aliases=("validation",)))
    assert got[0] == (1, {"text": "t0", "label": 0})
    assert got[-1] == (2500, {"text": "t2499", "label": 2499})
    assert len(list(read_records(tmp_path / "dd"))) == 2500  # no split asked: the first one
    with pytest.raises(ConfigError, match="no split for 'train'; its splits are: validation, test"):
        list(read_records(tmp_path / "dd", split="train"))
    with pytest.raises(MissingColumn, match="no column 'body'"):
        list(read_records(tmp_path / "dd", require=("body",)))
