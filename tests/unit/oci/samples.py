"""Sample entries, layers, images and archives shared by the oci tests."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

from pydeploy.oci.blobs import BlobStore, sha256_digest
from pydeploy.oci.config import ImageSettings, build_config, rfc3339
from pydeploy.oci.entries import FileEntry
from pydeploy.oci.image import Image
from pydeploy.oci.layer import Layer, build_layer

EPOCH = 1_700_000_000
LONG_NAME = "deep/" + "/".join(["segment-" + "x" * 40] * 5) + "/file.txt"
UNICODE_NAME = "app/données/résumé-日本語.txt"


def sample_entries() -> list[FileEntry]:
    return [
        FileEntry("app/main.py", "file", 0o644, data=b"print('hi')\n"),
        FileEntry("app/bin/run", "file", 0o755, data=b"#!/bin/sh\nexec true\n"),
        FileEntry("app/link", "symlink", 0o777, linkname="main.py"),
        FileEntry(LONG_NAME, "file", 0o644, data=b"long\n"),
        FileEntry(UNICODE_NAME, "file", 0o644, data="é\n".encode()),
        FileEntry("app/abs", "symlink", 0o777, linkname="/" + "t" * 150),
        FileEntry("srv/data", "dir", 0o755, uid=1000, gid=1000),
    ]


def sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def read_tar(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        return archive.getmembers()


def layer_bytes(store: BlobStore, layer: Layer) -> bytes:
    return store.path(layer.diff_id).read_bytes()


def make_tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    buffer.seek(0)
    return buffer


def tar_info(
    name: str, kind: bytes, mode: int, *, size: int = 0, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.uid, info.gid, info.uname, info.gname, info.mtime = 1234, 1234, "builder", "builder", 99
    return info


def venv_archive() -> io.BytesIO:
    big = b"x" * 100
    return make_tar(
        [
            (tar_info("venv", tarfile.DIRTYPE, 0o700), None),
            (tar_info("venv/bin", tarfile.DIRTYPE, 0o775), None),
            (tar_info("venv/bin/python", tarfile.SYMTYPE, 0o755, link="/usr/bin/python3"), None),
            (tar_info("venv/bin/tool", tarfile.REGTYPE, 0o4711, size=3), b"#!\n"),
            (tar_info("venv/lib/mod.py", tarfile.REGTYPE, 0o600, size=100), big),
            (tar_info("venv/lib/same.py", tarfile.LNKTYPE, 0o600, link="venv/lib/mod.py"), None),
        ]
    )


def two_layers(store: BlobStore) -> list[Layer]:
    return [
        build_layer(
            [FileEntry("opt/venv/x", "file", 0o644, data=b"x")],
            store=store,
            epoch=EPOCH,
            role="dependencies",
        ),
        build_layer(sample_entries(), store=store, epoch=EPOCH, role="app"),
    ]


def synthetic_image(store: BlobStore, architecture: str = "amd64", variant: str = "") -> Image:
    layers = two_layers(store)
    base = {"architecture": architecture, "os": "linux", "config": {}}
    if variant:
        base["variant"] = variant
    config = build_config(
        base,
        [],
        [],
        layers,
        ImageSettings(
            user="10001",
            env={"PATH": "/usr/bin"},
            entrypoint=["/bin/true"],
            cmd=None,
            workdir="/",
            exposed_ports=[],
            labels={},
            stop_signal="SIGTERM",
            healthcheck=None,
            created=rfc3339(0),
        ),
    )
    return Image.from_config(store, config, layers)


def docker_save_tar(layers: list[bytes], *, oci_style: bool = False, repeat: bool = False) -> bytes:
    """A `docker save` stream: legacy (`<id>/layer.tar`, repeated layers as symlinks) or
    the newer OCI-style (`blobs/sha256/<hex>`)."""
    diff_ids = [sha256_digest(data) for data in layers]
    if repeat:
        diff_ids.append(diff_ids[0])
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "x"} for _ in diff_ids],
        }
    ).encode()
    files: list[tuple[str, bytes | str]] = []
    if oci_style:
        config_name = f"blobs/sha256/{sha256_digest(config)[7:]}"
        files.append((config_name, config))
        names = [f"blobs/sha256/{d[7:]}" for d in diff_ids]
        files.extend((f"blobs/sha256/{sha256_digest(data)[7:]}", data) for data in layers)
    else:
        config_name = f"{sha256_digest(config)[7:]}.json"
        names = [f"layer{i}/layer.tar" for i in range(len(diff_ids))]
        files.extend((f"layer{i}/layer.tar", data) for i, data in enumerate(layers))
        if repeat:
            files.append((names[-1], "../layer0/layer.tar"))
        files.append((config_name, config))
    manifest = [{"Config": config_name, "RepoTags": ["base:1"], "Layers": names}]
    files.append(("manifest.json", json.dumps(manifest).encode()))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in files:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                archive.addfile(info)
            else:
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def base_layer_tars(tmp_path: Path) -> list[bytes]:
    store = BlobStore(tmp_path / "scratch")
    small = build_layer(sample_entries(), store=store, epoch=0, role="x")
    big_file = tmp_path / "big"
    big_file.write_bytes(os.urandom(1_200_000))  # over the in-memory limit
    big = build_layer([FileEntry("big", "file", 0o644, source=big_file)], store=store,
                          epoch=0, role="x")  # fmt: skip
    return [store.path(small.diff_id).read_bytes(), store.path(big.diff_id).read_bytes()]
