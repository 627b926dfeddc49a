"""File entries: path rules, and entries read from tar streams and host directories."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from tests.unit.oci.samples import layer_bytes, make_tar, read_tar, tar_info, venv_archive

from pydeploy.errors import BuildError
from pydeploy.oci.blobs import BlobStore
from pydeploy.oci.entries import FileEntry, entries_from_dir, entries_from_tar
from pydeploy.oci.layer import build_layer


@pytest.mark.parametrize("path", ["../etc/passwd", "a/../../b", "", "/"])
def test_escaping_or_empty_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="invalid path"):
        FileEntry(path, "dir", 0o755)


def test_paths_are_normalized() -> None:
    assert FileEntry("/./opt//venv/", "dir", 0o755).path == "opt/venv"


def test_entries_from_tar_rewrites_prefix_and_normalizes(tmp_path: Path) -> None:
    entries = entries_from_tar(
        venv_archive(),
        strip_prefix="venv",
        dest_prefix="opt/venv",
        spool_dir=tmp_path / "spool",
        small_file_limit=10,
    )
    by_path = {e.path: e for e in entries}
    assert set(by_path) == {
        "opt/venv",
        "opt/venv/bin",
        "opt/venv/bin/python",
        "opt/venv/bin/tool",
        "opt/venv/lib/mod.py",
        "opt/venv/lib/same.py",
    }
    assert by_path["opt/venv"].mode == 0o755
    assert by_path["opt/venv/bin"].mode == 0o755
    assert by_path["opt/venv/bin/python"].mode == 0o777
    assert by_path["opt/venv/bin/python"].linkname == "/usr/bin/python3"
    assert by_path["opt/venv/bin/tool"].mode == 0o755  # setuid dropped, exec kept
    assert by_path["opt/venv/bin/tool"].data == b"#!\n"
    spooled = by_path["opt/venv/lib/mod.py"]
    assert spooled.mode == 0o644
    assert spooled.source is not None
    assert spooled.source.parent == tmp_path / "spool"
    assert spooled.source.read_bytes() == b"x" * 100
    assert by_path["opt/venv/lib/same.py"].linkname == "opt/venv/lib/mod.py"
    assert all((e.uid, e.gid) == (0, 0) for e in entries)


def test_entries_from_tar_feed_a_layer(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    entries = entries_from_tar(
        venv_archive(), strip_prefix="venv", dest_prefix="opt/venv", spool_dir=tmp_path / "s"
    )
    layer = build_layer(entries, store=store, epoch=0, role="dependencies")
    members = {m.name: m for m in read_tar(layer_bytes(store, layer))}
    assert members["opt"].isdir()
    assert members["opt/venv/lib/mod.py"].isreg()
    assert members["opt/venv/lib/same.py"].islnk()
    assert all((m.uid, m.gid, m.mtime) == (0, 0, 0) for m in members.values())


def test_entries_from_tar_custom_owner_and_policy(tmp_path: Path) -> None:
    entries = entries_from_tar(
        venv_archive(),
        strip_prefix="venv",
        dest_prefix="opt/venv",
        spool_dir=tmp_path,
        uid=10001,
        gid=10001,
        mode_policy=lambda kind, _mode: 0o700 if kind == "dir" else 0o600,
    )
    dirs = [e for e in entries if e.kind == "dir"]
    assert dirs
    assert all(e.mode == 0o700 and e.uid == 10001 for e in dirs)


def test_entries_from_tar_refuses_foreign_and_special_entries(tmp_path: Path) -> None:
    outside = make_tar([(tar_info("etc/passwd", tarfile.REGTYPE, 0o644, size=1), b"x")])
    with pytest.raises(BuildError, match="outside 'venv'"):
        entries_from_tar(outside, strip_prefix="venv", dest_prefix="opt", spool_dir=tmp_path)
    fifo = make_tar([(tar_info("venv/pipe", tarfile.FIFOTYPE, 0o644), None)])
    with pytest.raises(BuildError, match="device or FIFO"):
        entries_from_tar(fifo, strip_prefix="venv", dest_prefix="opt", spool_dir=tmp_path)


def test_entries_from_dir(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / "pkg").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref\n")
    (root / "pkg" / "__init__.py").write_text("")
    script = root / "manage.py"
    script.write_text("#!/usr/bin/env python3\n")
    script.chmod(0o700)
    secret = root / ".env"
    secret.write_text("KEY=1\n")
    (root / "current").symlink_to("pkg")

    def include(rel: str, is_dir: bool) -> bool:
        return rel.split("/", maxsplit=1)[0] not in {".git", ".env"}

    entries = entries_from_dir(root, "app", include=include)
    by_path = {e.path: e for e in entries}
    assert set(by_path) == {"app", "app/pkg", "app/pkg/__init__.py", "app/manage.py", "app/current"}
    assert by_path["app/manage.py"].mode == 0o755
    assert by_path["app/pkg/__init__.py"].mode == 0o644
    assert by_path["app/current"].kind == "symlink"
    assert by_path["app/current"].linkname == "pkg"
    assert by_path["app/pkg"].mode == 0o755
