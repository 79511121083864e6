"""The data cache: entries built once, atomically, and keyed on the inputs."""

from __future__ import annotations

import hashlib

import pytest

from selfsup.data.cache import build_once, cache_key, default_cache_dir, files_fingerprint


def test_built_once_then_reused(tmp_path):
    calls = []

    def build(tmp):
        calls.append(tmp)
        assert tmp.parent == tmp_path / "c" and tmp.name.startswith(".")  # hidden, beside it
        (tmp / "done").write_text("x")

    folder = tmp_path / "c" / "key"
    assert build_once(folder, build, "done") is False
    assert build_once(folder, build, "done") is True
    assert len(calls) == 1 and (folder / "done").read_text() == "x"
    assert [p.name for p in folder.parent.iterdir()] == ["key"]  # no temporary folder left


def test_a_failed_build_leaves_nothing(tmp_path):
    def build(tmp):
        (tmp / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        build_once(tmp_path / "c" / "key", build, "done")
    assert list((tmp_path / "c").iterdir()) == []


def test_the_first_finished_build_wins(tmp_path):
    folder = tmp_path / "c" / "key"

    def build(tmp):  # another process finishes the same entry meanwhile
        folder.mkdir()
        (folder / "done").write_text("theirs")
        (tmp / "done").write_text("ours")

    assert build_once(folder, build, "done") is False
    assert (folder / "done").read_text() == "theirs"
    assert [p.name for p in folder.parent.iterdir()] == ["key"]


def test_keys(tmp_path, monkeypatch):
    f = tmp_path / "a.txt"
    f.write_text("one")
    key = cache_key([f], 8192, True, "text", "utf-8", "v1")
    # the formula of the caches already on disk: sha256(fingerprint + "a|b|...")[:20]
    old = hashlib.sha256(files_fingerprint([f]).encode())
    old.update(b"8192|True|text|utf-8|v1")
    assert key == old.hexdigest()[:20]
    assert cache_key([f], 8192, False, "text", "utf-8", "v1") != key
    f.write_text("one two")  # a changed file is a new entry
    assert cache_key([f], 8192, True, "text", "utf-8", "v1") != key
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
