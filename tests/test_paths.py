"""check_out_folder: the one check of a command's output folder."""

from __future__ import annotations

import pytest

from selfsup.errors import ConfigError
from selfsup.paths import check_out_folder


def test_absent_or_empty_folders_pass(tmp_path):
    assert check_out_folder(str(tmp_path / "new")) == tmp_path / "new"
    assert not (tmp_path / "new").exists()  # nothing is created
    (tmp_path / "empty").mkdir()
    assert check_out_folder(tmp_path / "empty") == tmp_path / "empty"


def test_files_and_full_folders_are_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="--out .*f is a file, not a folder"):
        check_out_folder(tmp_path / "f")
    with pytest.raises(ConfigError, match=r"exists and is not empty \(use --resume\)$"):
        check_out_folder(tmp_path, " (use --resume)")
