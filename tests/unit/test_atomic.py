"""The one atomic-write helper: all or nothing, and no temp file left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from pydeploy import atomic


def test_write_text_replaces_the_file_with_the_given_mode(tmp_path: Path) -> None:
    dest = tmp_path / "doc.json"
    dest.write_text("old", encoding="utf-8")
    atomic.write_text(dest, "new\r\n", mode=0o640)
    assert dest.read_bytes() == b"new\r\n"  # no newline translation
    assert dest.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    dest = tmp_path / "archive.tar"
    dest.write_bytes(b"old")

    def interrupted() -> None:
        with atomic.replacing(dest) as handle:
            handle.write(b"half of the new")
            assert any(p.name.startswith(atomic.TEMP_PREFIX) for p in tmp_path.iterdir())
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        interrupted()
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["archive.tar"]


def test_a_missing_directory_is_an_oserror_not_a_partial_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic.write_bytes(tmp_path / "absent" / "file", b"x")
    assert list(tmp_path.iterdir()) == []
