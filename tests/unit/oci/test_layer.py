"""Deterministic layers: the tar encoder's bytes, the entry order, the gzip, and the
Layer record. Read back with independent readers (tarfile, gzip, GNU tar)."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from tests.unit.oci.samples import (
    EPOCH,
    LONG_NAME,
    UNICODE_NAME,
    layer_bytes,
    read_tar,
    sample_entries,
    sha256_file,
)

from pydeploy.oci.blobs import BlobStore
from pydeploy.oci.entries import FileEntry
from pydeploy.oci.layer import build_layer


def test_same_entries_give_identical_bytes_in_separate_stores(tmp_path: Path) -> None:
    first, second = BlobStore(tmp_path / "a"), BlobStore(tmp_path / "b")
    one = build_layer(sample_entries(), store=first, epoch=EPOCH, role="app")
    two = build_layer(sample_entries(), store=second, epoch=EPOCH, role="app")
    assert one == two
    assert first.path(one.digest).read_bytes() == second.path(two.digest).read_bytes()
    assert sha256_file(first.path(one.diff_id)) == one.diff_id
    assert sha256_file(first.path(one.digest)) == one.digest
    assert first.size(one.digest) == one.size
    assert first.size(one.diff_id) == one.uncompressed_size


def test_input_order_does_not_matter(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    shuffled = sample_entries()
    shuffled = shuffled[3:] + shuffled[:3][::-1]
    assert build_layer(shuffled, store=store, epoch=EPOCH, role="app") == build_layer(
        sample_entries(), store=store, epoch=EPOCH, role="app"
    )


def test_epoch_changes_diff_id(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    a = build_layer(sample_entries(), store=store, epoch=EPOCH, role="app")
    b = build_layer(sample_entries(), store=store, epoch=EPOCH + 1, role="app")
    assert a.diff_id != b.diff_id


def test_tar_headers_are_fixed_sorted_and_complete(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    layer = build_layer(sample_entries(), store=store, epoch=EPOCH, role="app")
    members = read_tar(layer_bytes(store, layer))
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.encode())
    # parents were added as root-owned 0755 directories
    for parent in ("app", "app/bin", "app/données", "deep", "srv"):
        info = members[names.index(parent)]
        assert info.isdir()
        assert (info.mode, info.uid, info.gid) == (0o755, 0, 0)
    for info in members:
        assert info.mtime == EPOCH
        assert (info.uname, info.gname) == ("", "")
        assert not set(info.pax_headers) & {"atime", "ctime", "mtime"}
    srv = members[names.index("srv/data")]
    assert (srv.uid, srv.gid) == (1000, 1000)
    run = members[names.index("app/bin/run")]
    assert run.mode == 0o755
    link = members[names.index("app/link")]
    assert link.issym()
    assert link.linkname == "main.py"


def test_long_and_non_ascii_paths_round_trip(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    layer = build_layer(sample_entries(), store=store, epoch=EPOCH, role="app")
    data = layer_bytes(store, layer)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        names = archive.getnames()
        assert LONG_NAME in names
        assert UNICODE_NAME in names
        extracted = archive.extractfile(UNICODE_NAME)
        assert extracted is not None
        assert extracted.read() == "é\n".encode()
        assert archive.getmember("app/abs").linkname == "/" + "t" * 150
    # GNU tar, an independent reader, agrees on the names.
    if shutil.which("tar"):
        listed = subprocess.run(
            ["tar", "-tf", "-"], input=data, capture_output=True, check=True
        ).stdout.decode()
        assert LONG_NAME in listed.splitlines()
        assert UNICODE_NAME in listed.splitlines()


def test_gzip_is_deterministic_and_decompresses_to_the_tar(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    layer = build_layer(sample_entries(), store=store, epoch=EPOCH, role="app")
    compressed = store.path(layer.digest).read_bytes()
    # magic, deflate, no flags (no file name), mtime 0, OS "unknown"
    assert compressed[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    assert gzip.decompress(compressed) == layer_bytes(store, layer)
    assert layer.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"


def test_host_file_content_is_streamed(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 9000)
    store = BlobStore(tmp_path / "store")
    layer = build_layer(
        [FileEntry("data/big.bin", "file", 0o600, source=big)],
        store=store,
        epoch=0,
        role="data",
    )
    with tarfile.open(store.path(layer.diff_id)) as archive:
        extracted = archive.extractfile("data/big.bin")
        assert extracted is not None
        assert extracted.read() == big.read_bytes()


def test_hard_link_before_its_target_gets_the_content(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    entries = [
        FileEntry("z/target", "file", 0o644, data=b"shared"),
        FileEntry("a/link", "hardlink", 0o644, linkname="z/target"),
    ]
    layer = build_layer(entries, store=store, epoch=0, role="app")
    members = {m.name: m for m in read_tar(layer_bytes(store, layer))}
    assert members["a/link"].isreg()
    assert members["a/link"].size == 6
    assert members["z/target"].islnk()
    assert members["z/target"].linkname == "a/link"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            [
                FileEntry("a", "file", 0o644, data=b"1"),
                FileEntry("a", "file", 0o644, data=b"2"),
            ],
            "two different entries",
        ),
        (
            [
                FileEntry("a", "file", 0o644, data=b"1"),
                FileEntry("a/b", "file", 0o644, data=b"2"),
            ],
            "not a directory",
        ),
        ([FileEntry("a", "hardlink", 0o644, linkname="missing")], "not a regular file"),
    ],
)
def test_inconsistent_entries_are_refused(
    tmp_path: Path, entries: list[FileEntry], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_layer(entries, store=BlobStore(tmp_path), epoch=0, role="app")
