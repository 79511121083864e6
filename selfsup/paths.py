"""Checks on the folders commands write into."""

from __future__ import annotations

import os
from pathlib import Path

from selfsup.errors import ConfigError


def check_out_folder(path: str | os.PathLike, hint: str = "") -> Path:
    """`path` as a Path when a command may write its folder there: absent, or an empty folder.
    A file or a folder with something inside is a ConfigError (`hint` ends its message, e.g.
    " (use --resume or another --out)"). Nothing is created."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--out {p} is a file, not a folder")
    if p.exists() and any(p.iterdir()):
        raise ConfigError(f"output folder {p} exists and is not empty{hint}")
    return p


def check_out_file(path: str | os.PathLike, example: str) -> Path:
    """`path` as a Path when a command may write its output file there (not a folder);
    `example` names such a file in the message."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{path} is a folder; --out takes a file name such as {example}")
    return p
