"""clinic.files.write_atomically: the mode asked for even over an existing looser file, all at once,
and nothing left behind."""

from __future__ import annotations

import os
import stat

import pytest

from clinic import files


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_existing_world_readable_file_is_made_private(tmp_path):
    path = tmp_path / "definitions.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    files.write_atomically(path, "password hashes")
    assert path.read_text() == "password hashes"
    assert _mode(path) == 0o600
    assert [found.name for found in tmp_path.iterdir()] == ["definitions.json"], "no temporary file left"


def test_a_new_file_gets_the_mode_asked_for_in_a_directory_made_for_it(tmp_path):
    path = tmp_path / "keys" / "jwks.json"
    files.write_atomically(path, "{}", 0o644)
    assert path.read_text() == "{}" and _mode(path) == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_one(tmp_path):
    path = tmp_path / "accounts.json"
    path.write_text("kept")
    with pytest.raises(UnicodeEncodeError):
        files.write_atomically(path, "\ud800")  # a lone surrogate: UTF-8 cannot encode it
    assert path.read_text() == "kept"
    assert [found.name for found in tmp_path.iterdir()] == ["accounts.json"]
