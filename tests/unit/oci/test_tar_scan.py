"""Reading tars by their headers alone (oci.tar.TarScanner) and the one-pass `docker save`
scan of a build that needs no base blobs (oci.archive.scan_docker_save). Real tar bytes,
written by `tarfile` in each of its formats and by pydeploy's own encoder."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
from tests.unit.oci.samples import base_layer_tars, docker_save_tar, synthetic_image

from pydeploy.errors import BaseImageError, BuildError, PublishError
from pydeploy.layers import assemble
from pydeploy.oci.archive import (
    cached_base_config,
    remember_base_config,
    scan_docker_save,
    write_docker_archive,
)
from pydeploy.oci.blobs import BlobStore, sha256_digest
from pydeploy.oci.image import Image
from pydeploy.oci.tar import TarMember, TarScanner

LONG = "usr/share/" + "d" * 120 + "/file-with-a-long-name.txt"


def written_tar(fmt: int) -> bytes:
    """A tar with every kind the scan meets: long names and links, a large id, a hard
    link, a setuid file, a device."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", **extra: object) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.size = kind, mode, len(data)
            for key, value in extra.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data) if data else None)

        add("usr", tarfile.DIRTYPE, 0o755)
        add("usr/bin/su", tarfile.REGTYPE, 0o4755, b"su" * 700, uid=0, gid=0)
        add("usr/bin/newgrp", tarfile.LNKTYPE, 0o4755, linkname="usr/bin/su")
        add(LONG, tarfile.REGTYPE, 0o644, b"x" * 513, uid=70_000_000, gid=5)
        add("usr/lib/long-link", tarfile.SYMTYPE, 0o777, linkname=LONG)
        add("dev/null", tarfile.CHRTYPE, 0o666)
    return buffer.getvalue()


def expected_members(data: bytes) -> list[tuple[str, str, int, int, int, int, str]]:
    kinds = {tarfile.REGTYPE: "file", tarfile.LNKTYPE: "hardlink", tarfile.SYMTYPE: "symlink",
             tarfile.DIRTYPE: "dir"}  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [
            (m.name, kinds.get(m.type, "other"), m.mode, m.uid, m.gid, m.size, m.linkname)
            for m in tar
        ]


def scanned(members: list[TarMember]) -> list[tuple[str, str, int, int, int, int, str]]:
    return [(m.name.rstrip("/"), m.kind, m.mode, m.uid, m.gid, m.size, m.linkname) for m in members]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_the_scanner_reads_what_tarfile_reads(fmt: int) -> None:
    data = written_tar(fmt)
    seekable = list(TarScanner(io.BytesIO(data)))
    assert scanned(seekable) == expected_members(data)
    # A stream that cannot seek (a socket) gives the same, its data read past instead.
    assert scanned(list(TarScanner(io.BufferedReader(_Raw(data))))) == scanned(seekable)


class _Raw(io.RawIOBase):
    """A non-seekable stream handing out at most 777 bytes per read."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        size = min(len(buffer), 777, len(self._data))
        buffer[:size] = self._data[:size]
        self._data = self._data[size:]
        return size


def test_the_scanner_gives_a_members_data_and_skips_what_is_unread() -> None:
    data = written_tar(tarfile.PAX_FORMAT)
    scanner = TarScanner(io.BufferedReader(_Raw(data)))
    contents = {}
    for member in scanner:
        if member.name == "usr/bin/su":
            contents[member.name] = scanner.read(3) + scanner.read()
    assert contents == {"usr/bin/su": b"su" * 700}


def test_pydeploy_s_own_layers_scan_back(tmp_path: Path) -> None:
    # The encoder's PAX headers (long and non-ASCII names) read back as written.
    image = synthetic_image(BlobStore(tmp_path))
    for layer in image.layers:
        raw = image.store.path(layer.diff_id).read_bytes()
        assert scanned(list(TarScanner(io.BytesIO(raw)))) == expected_members(raw)


def test_damaged_and_truncated_tars_fail() -> None:
    data = bytearray(written_tar(tarfile.PAX_FORMAT))
    with pytest.raises(BuildError, match="truncated"):
        list(TarScanner(io.BufferedReader(_Raw(bytes(data[:1500])))))
    data[0] ^= 1  # the first header's name: its checksum no longer matches
    with pytest.raises(BuildError, match="checksum"):
        list(TarScanner(io.BytesIO(bytes(data))))


@pytest.mark.parametrize(("oci_style", "repeat"), [(False, False), (False, True), (True, False)])
def test_scan_docker_save_reads_config_and_every_layer_in_order(
    tmp_path: Path, oci_style: bool, repeat: bool
) -> None:
    tars = base_layer_tars(tmp_path)  # one small layer, one over the in-memory limit
    saved = docker_save_tar(tars, oci_style=oci_style, repeat=repeat)
    chunks = (saved[i : i + 4096] for i in range(0, len(saved), 4096))
    base, scans = scan_docker_save(chunks, assemble.scan_layer)
    expected = [sha256_digest(t) for t in tars] + ([sha256_digest(tars[0])] if repeat else [])
    assert base.layers is None
    assert base.diff_ids == expected
    layer_tars = [*tars, *(tars[:1] if repeat else [])]
    assert [[name for name, _ in scan] for scan in scans] == [
        [name.rstrip("/") for name, *_ in expected_members(t)] for t in layer_tars
    ]


def test_scan_docker_save_reads_gzipped_layers(tmp_path: Path) -> None:
    tars = base_layer_tars(tmp_path)
    plain = docker_save_tar(tars)
    with tarfile.open(fileobj=io.BytesIO(plain)) as archive:
        members = [(m, archive.extractfile(m)) for m in archive]
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as out:
            for member, handle in members:
                data = handle.read() if handle else b""
                if member.name.endswith("layer.tar"):
                    data = gzip.compress(data, mtime=0)
                    member.size = len(data)
                out.addfile(member, io.BytesIO(data) if handle else None)
    _, scans = scan_docker_save(io.BytesIO(buffer.getvalue()), assemble.scan_layer)
    assert [len(scan) for scan in scans] == [len(expected_members(t)) for t in tars]


def test_scan_docker_save_refuses_what_it_does_not_understand(tmp_path: Path) -> None:
    saved = docker_save_tar(base_layer_tars(tmp_path))
    with tarfile.open(fileobj=io.BytesIO(saved)) as archive:
        kept = [(m, archive.extractfile(m)) for m in archive if not m.name.endswith("layer.tar")]
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as out:
            for member, handle in kept:
                out.addfile(member, handle)
    with pytest.raises(BaseImageError, match="lacks its layer file"):
        scan_docker_save(io.BytesIO(buffer.getvalue()), assemble.scan_layer)
    with pytest.raises(BaseImageError, match="not in a format"):
        scan_docker_save(io.BytesIO(bytes(1024)), assemble.scan_layer)


def test_the_base_config_is_cached_by_image_id(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    saved = docker_save_tar(base_layer_tars(tmp_path))
    base, _ = scan_docker_save(io.BytesIO(saved), assemble.scan_layer)
    assert cached_base_config(store, base.image_id) is None
    remember_base_config(store, base)
    assert cached_base_config(store, base.image_id) == base
    assert cached_base_config(BlobStore(tmp_path / "other"), base.image_id) is None
    store.path(base.image_id).unlink()  # the config blob pruned: a miss, not an error
    assert cached_base_config(store, base.image_id) is None


def test_an_image_without_base_blobs_loads_only_over_its_base(tmp_path: Path) -> None:
    full = synthetic_image(BlobStore(tmp_path))
    base_ids = [sha256_digest(b"base layer")]
    config = json.loads(full.config)
    config["rootfs"]["diff_ids"] = [*base_ids, *config["rootfs"]["diff_ids"]]
    config_bytes = json.dumps(config).encode()
    full.store.put_bytes(config_bytes)
    image = Image(full.store, config_bytes, None, full.layers)
    assert image.base_diff_ids == base_ids
    buffer = io.BytesIO()
    write_docker_archive(buffer, image, ["demo:1"], omit_diff_ids=base_ids)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as archive:
        manifest_file = archive.extractfile("manifest.json")
        assert manifest_file is not None
        [manifest] = json.load(manifest_file)
        assert manifest["Layers"] == [f"{d.removeprefix('sha256:')}/layer.tar"
                                      for d in image.diff_ids]  # fmt: skip
        assert len([n for n in archive.getnames() if n.endswith("layer.tar")]) == 2
    # An engine that lost the base meanwhile: said so, not an archive docker cannot load.
    with pytest.raises(PublishError, match="no longer has the base image's layer"):
        write_docker_archive(io.BytesIO(), image, ["demo:1"])
