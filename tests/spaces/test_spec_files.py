"""A file a spec names is read by the server only when it is a regular file of bounded size."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from archsearch.spaces import SpecError
from archsearch.spaces._files import read_text


def test_a_regular_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text("{}")
    assert read_text(tmp_path / "t.json", "table", 10) == "{}"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("missing", "not found"),
        ("folder", "is a folder"),
        ("fifo", "not a regular file"),
        ("/dev/zero", "not a regular file"),
        ("big", "is 11 bytes; at most 10 are read"),
        ("latin1", "not UTF-8"),
    ],
)
def test_what_is_not_read_is_named(tmp_path: Path, name: str, says: str) -> None:
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")  # opening it for reading must not wait for a writer
    (tmp_path / "big").write_text("x" * 11)
    (tmp_path / "latin1").write_bytes(b"caf\xe9")
    path = name if name.startswith("/") else tmp_path / name
    with pytest.raises(SpecError) as e:
        read_text(path, "table", 10, "pass a table")
    assert e.value.field == "table" and says in str(e.value) and "pass a table" in str(e.value)
