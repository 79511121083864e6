"""The data cache: tokenizers trained on a corpus and tokenized corpora, each in a folder named by
a key of its inputs, so a second run with the same files and settings starts at once.

A folder is built in a hidden temporary sibling and renamed into place when complete: a crash
leaves no half-built entry, and of two processes building the same entry at once, the second to
finish keeps the first one's folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def default_cache_dir() -> Path:
    """$SELFSUP_CACHE, else $XDG_CACHE_HOME/selfsup, else ~/.cache/selfsup."""
    env = os.environ.get("SELFSUP_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "selfsup"


def files_fingerprint(files: list[Path]) -> str:
    """Identifies input files by path, size and modification time (hub names by name)."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat() if f.exists() else None
        h.update(f"{f.resolve() if st else f}|{st.st_size if st else 0}|".encode())
        h.update(f"{st.st_mtime_ns if st else 0};".encode())
    return h.hexdigest()


def cache_key(files: list[Path], *settings) -> str:
    """The name of a cache entry: the files' fingerprint and the settings (end them with a
    format version, raised whenever what is stored changes)."""
    text = files_fingerprint(files) + "|".join(str(s) for s in settings)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def build_once(folder: Path, build: Callable[[Path], None], ready: str) -> bool:
    """Make `folder` with `build(tmp)`, writing into an empty temporary folder that is then
    renamed to `folder`; unless `folder` already holds the file `ready` (a complete entry, which
    is reused). True when it was reused."""
    if (folder / ready).exists():
        return True
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        build(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first; keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return False
