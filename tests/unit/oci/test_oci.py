"""Deterministic layers, config/manifest, the blob store, base import and output writers.

No engine: tar and JSON outputs are parsed back with independent readers (tarfile, gzip,
GNU tar, json) and every digest is recomputed from the bytes on disk."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pydeploy.errors import BaseImageError, BuildError, PublishError
from pydeploy.oci import image as oci
from pydeploy.oci.blobs import BlobCorruptError, BlobStore, digest_hex, sha256_digest

EPOCH = 1_700_000_000
LONG_NAME = "deep/" + "/".join(["segment-" + "x" * 40] * 5) + "/file.txt"
UNICODE_NAME = "app/données/résumé-日本語.txt"


def sample_entries() -> list[oci.FileEntry]:
    return [
        oci.FileEntry("app/main.py", "file", 0o644, data=b"print('hi')\n"),
        oci.FileEntry("app/bin/run", "file", 0o755, data=b"#!/bin/sh\nexec true\n"),
        oci.FileEntry("app/link", "symlink", 0o777, linkname="main.py"),
        oci.FileEntry(LONG_NAME, "file", 0o644, data=b"long\n"),
        oci.FileEntry(UNICODE_NAME, "file", 0o644, data="é\n".encode()),
        oci.FileEntry("app/abs", "symlink", 0o777, linkname="/" + "t" * 150),
        oci.FileEntry("srv/data", "dir", 0o755, uid=1000, gid=1000),
    ]


def sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def read_tar(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        return archive.getmembers()


def layer_bytes(store: BlobStore, layer: oci.Layer) -> bytes:
    return store.path(layer.diff_id).read_bytes()


# --------------------------------------------------------------------------- layers


def test_same_entries_give_identical_bytes_in_separate_stores(tmp_path: Path) -> None:
    first, second = BlobStore(tmp_path / "a"), BlobStore(tmp_path / "b")
    one = oci.build_layer(sample_entries(), store=first, epoch=EPOCH, role="app")
    two = oci.build_layer(sample_entries(), store=second, epoch=EPOCH, role="app")
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
    assert oci.build_layer(shuffled, store=store, epoch=EPOCH, role="app") == oci.build_layer(
        sample_entries(), store=store, epoch=EPOCH, role="app"
    )


def test_epoch_changes_diff_id(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    a = oci.build_layer(sample_entries(), store=store, epoch=EPOCH, role="app")
    b = oci.build_layer(sample_entries(), store=store, epoch=EPOCH + 1, role="app")
    assert a.diff_id != b.diff_id


def test_tar_headers_are_fixed_sorted_and_complete(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    layer = oci.build_layer(sample_entries(), store=store, epoch=EPOCH, role="app")
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
    layer = oci.build_layer(sample_entries(), store=store, epoch=EPOCH, role="app")
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
    layer = oci.build_layer(sample_entries(), store=store, epoch=EPOCH, role="app")
    compressed = store.path(layer.digest).read_bytes()
    # magic, deflate, no flags (no file name), mtime 0, OS "unknown"
    assert compressed[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    assert gzip.decompress(compressed) == layer_bytes(store, layer)
    assert layer.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"


def test_host_file_content_is_streamed(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 9000)
    store = BlobStore(tmp_path / "store")
    layer = oci.build_layer(
        [oci.FileEntry("data/big.bin", "file", 0o600, source=big)],
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
        oci.FileEntry("z/target", "file", 0o644, data=b"shared"),
        oci.FileEntry("a/link", "hardlink", 0o644, linkname="z/target"),
    ]
    layer = oci.build_layer(entries, store=store, epoch=0, role="app")
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
                oci.FileEntry("a", "file", 0o644, data=b"1"),
                oci.FileEntry("a", "file", 0o644, data=b"2"),
            ],
            "two different entries",
        ),
        (
            [
                oci.FileEntry("a", "file", 0o644, data=b"1"),
                oci.FileEntry("a/b", "file", 0o644, data=b"2"),
            ],
            "not a directory",
        ),
        ([oci.FileEntry("a", "hardlink", 0o644, linkname="missing")], "not a regular file"),
    ],
)
def test_inconsistent_entries_are_refused(
    tmp_path: Path, entries: list[oci.FileEntry], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        oci.build_layer(entries, store=BlobStore(tmp_path), epoch=0, role="app")


@pytest.mark.parametrize("path", ["../etc/passwd", "a/../../b", "", "/"])
def test_escaping_or_empty_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="invalid path"):
        oci.FileEntry(path, "dir", 0o755)


def test_paths_are_normalized() -> None:
    assert oci.FileEntry("/./opt//venv/", "dir", 0o755).path == "opt/venv"


# --------------------------------------------------------------------------- entries


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


def test_entries_from_tar_rewrites_prefix_and_normalizes(tmp_path: Path) -> None:
    entries = oci.entries_from_tar(
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
    entries = oci.entries_from_tar(
        venv_archive(), strip_prefix="venv", dest_prefix="opt/venv", spool_dir=tmp_path / "s"
    )
    layer = oci.build_layer(entries, store=store, epoch=0, role="dependencies")
    members = {m.name: m for m in read_tar(layer_bytes(store, layer))}
    assert members["opt"].isdir()
    assert members["opt/venv/lib/mod.py"].isreg()
    assert members["opt/venv/lib/same.py"].islnk()
    assert all((m.uid, m.gid, m.mtime) == (0, 0, 0) for m in members.values())


def test_entries_from_tar_custom_owner_and_policy(tmp_path: Path) -> None:
    entries = oci.entries_from_tar(
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
        oci.entries_from_tar(outside, strip_prefix="venv", dest_prefix="opt", spool_dir=tmp_path)
    fifo = make_tar([(tar_info("venv/pipe", tarfile.FIFOTYPE, 0o644), None)])
    with pytest.raises(BuildError, match="device or FIFO"):
        oci.entries_from_tar(fifo, strip_prefix="venv", dest_prefix="opt", spool_dir=tmp_path)


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

    entries = oci.entries_from_dir(root, "app", include=include)
    by_path = {e.path: e for e in entries}
    assert set(by_path) == {"app", "app/pkg", "app/pkg/__init__.py", "app/manage.py", "app/current"}
    assert by_path["app/manage.py"].mode == 0o755
    assert by_path["app/pkg/__init__.py"].mode == 0o644
    assert by_path["app/current"].kind == "symlink"
    assert by_path["app/current"].linkname == "pkg"
    assert by_path["app/pkg"].mode == 0o755


# --------------------------------------------------------------------------- config and manifest

BASE_CONFIG: dict[str, Any] = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
        "Cmd": ["/usr/bin/python3"],
        "Hostname": "",
        "OnBuild": None,
        "Labels": {"base": "yes"},
    },
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]},
    "history": [{"created": "2020-01-01T00:00:00Z", "created_by": "import"}],
}


def config_for(layers: list[oci.Layer], **overrides: Any) -> bytes:
    settings: dict[str, Any] = {
        "user": "10001",
        "env": {"PATH": "/opt/venv/bin:/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "A": "1"},
        "entrypoint": ["/opt/venv/bin/python", "-m", "launcher"],
        "cmd": None,
        "workdir": "/app",
        "exposed_ports": ["8000"],
        "labels": {"org.opencontainers.image.title": "demo", "b": "2"},
        "stop_signal": "SIGTERM",
        "healthcheck": {
            "Test": ["CMD", "/opt/venv/bin/python", "-m", "health"],
            "Interval": 30_000_000_000,
            "Timeout": 5_000_000_000,
            "StartPeriod": 10_000_000_000,
            "Retries": 3,
        },
        "created": oci.rfc3339(EPOCH),
    }
    settings.update(overrides)
    return oci.build_config(
        BASE_CONFIG,
        BASE_CONFIG["rootfs"]["diff_ids"],
        BASE_CONFIG["history"],
        layers,
        **settings,
    )


def two_layers(store: BlobStore) -> list[oci.Layer]:
    return [
        oci.build_layer(
            [oci.FileEntry("opt/venv/x", "file", 0o644, data=b"x")],
            store=store,
            epoch=EPOCH,
            role="dependencies",
        ),
        oci.build_layer(sample_entries(), store=store, epoch=EPOCH, role="app"),
    ]


def test_config_is_canonical_and_complete(tmp_path: Path) -> None:
    layers = two_layers(BlobStore(tmp_path))
    data = config_for(layers)
    document = json.loads(data)
    assert data == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    runtime = document["config"]
    assert runtime["Env"] == [
        "PATH=/opt/venv/bin:/usr/bin:/bin",
        "LANG=C.UTF-8",
        "A=1",
        "PYTHONUNBUFFERED=1",
    ]
    assert "Cmd" not in runtime  # the base's Cmd would become arguments of our entrypoint
    assert "Hostname" not in runtime
    assert "OnBuild" not in runtime
    assert runtime["User"] == "10001"
    assert runtime["ExposedPorts"] == {"8000/tcp": {}}
    assert runtime["Labels"] == {"base": "yes", "org.opencontainers.image.title": "demo", "b": "2"}
    assert runtime["StopSignal"] == "SIGTERM"
    assert runtime["Healthcheck"]["Retries"] == 3
    assert document["created"] == "2023-11-14T22:13:20Z"
    assert document["rootfs"]["diff_ids"] == [
        "sha256:" + "1" * 64,
        layers[0].diff_id,
        layers[1].diff_id,
    ]
    assert document["history"][1:] == [
        {"created": "2023-11-14T22:13:20Z", "created_by": "pydeploy: dependencies"},
        {"created": "2023-11-14T22:13:20Z", "created_by": "pydeploy: app"},
    ]
    assert (document["architecture"], document["os"]) == ("amd64", "linux")


def test_config_digest_does_not_depend_on_mapping_order(tmp_path: Path) -> None:
    layers = two_layers(BlobStore(tmp_path))
    a = config_for(layers)
    b = config_for(
        layers,
        env={"A": "1", "PYTHONUNBUFFERED": "1", "PATH": "/opt/venv/bin:/usr/bin:/bin"},
        labels={"b": "2", "org.opencontainers.image.title": "demo"},
    )
    assert sha256_digest(a) == sha256_digest(b)
    assert sha256_digest(config_for(layers, user="10002")) != sha256_digest(a)


def test_manifest_shape(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    layers = two_layers(store)
    config = config_for(layers)
    manifest = oci.build_manifest(sha256_digest(config), len(config), layers)
    document = json.loads(manifest)
    assert manifest == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    assert document["schemaVersion"] == 2
    assert document["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert document["config"] == {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": sha256_digest(config),
        "size": len(config),
    }
    assert [la["digest"] for la in document["layers"]] == [la.digest for la in layers]
    assert {la["mediaType"] for la in document["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    }


def synthetic_image(store: BlobStore) -> oci.Image:
    layers = two_layers(store)
    base = {"architecture": "amd64", "os": "linux", "config": {}}
    config = oci.build_config(
        base, [], [], layers,
        user="10001", env={"PATH": "/usr/bin"}, entrypoint=["/bin/true"], cmd=None,
        workdir="/", exposed_ports=[], labels={}, stop_signal="SIGTERM", healthcheck=None,
        created=oci.rfc3339(0),
    )  # fmt: skip
    return oci.Image.from_config(store, config, layers)


def test_image_ties_digests_together(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    image = synthetic_image(store)
    assert image.image_id == sha256_digest(image.config)
    assert image.manifest_digest == sha256_digest(image.manifest)
    assert store.read_bytes(image.image_id) == image.config
    assert store.read_bytes(image.manifest_digest) == image.manifest
    again = synthetic_image(BlobStore(tmp_path / "again"))
    assert (again.image_id, again.manifest_digest) == (image.image_id, image.manifest_digest)


def test_image_refuses_layers_that_do_not_match_the_config(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    image = synthetic_image(store)
    with pytest.raises(ValueError, match="diff_ids"):
        oci.Image.from_config(store, image.config, list(image.layers[:1]))


# --------------------------------------------------------------------------- writers


def test_oci_layout_is_valid_and_complete(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    image = synthetic_image(store)
    dest = tmp_path / "out" / "layout"
    oci.write_oci_layout(dest, image, "demo:1.0")
    assert json.loads((dest / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((dest / "index.json").read_text())
    assert index["schemaVersion"] == 2
    [entry] = index["manifests"]
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "demo:1.0"}

    def blob(descriptor: dict[str, Any]) -> bytes:
        path: Path = dest / "blobs" / "sha256" / descriptor["digest"].removeprefix("sha256:")
        data = path.read_bytes()
        assert sha256_digest(data) == descriptor["digest"]
        assert len(data) == descriptor["size"]
        return data

    manifest = json.loads(blob(entry))
    config = json.loads(blob(manifest["config"]))
    diff_ids = [sha256_digest(gzip.decompress(blob(la))) for la in manifest["layers"]]
    assert diff_ids == config["rootfs"]["diff_ids"]
    stored = sorted(p.name for p in (dest / "blobs" / "sha256").iterdir())
    assert len(stored) == 2 + len(manifest["layers"])
    assert [p.name for p in dest.parent.iterdir()] == ["layout"]  # no temp leftovers


def test_oci_layout_replaces_a_layout_but_not_other_directories(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    image = synthetic_image(store)
    dest = tmp_path / "layout"
    oci.write_oci_layout(dest, image, "one")
    oci.write_oci_layout(dest, image, "two")
    index = json.loads((dest / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "two"
    other = tmp_path / "docs"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(PublishError, match="not an OCI image layout"):
        oci.write_oci_layout(other, image, "x")
    assert (other / "keep.txt").read_text() == "mine"


def test_docker_archive_shape(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    image = synthetic_image(store)
    dest = tmp_path / "image.tar"
    omitted = image.layers[0].diff_id
    oci.write_docker_archive(dest, image, ["demo:1.0"], omit_diff_ids={omitted})
    with tarfile.open(dest) as archive:
        names = archive.getnames()
        manifest_file = archive.extractfile("manifest.json")
        assert manifest_file is not None
        [manifest] = json.load(manifest_file)
        config_file = archive.extractfile(manifest["Config"])
        assert config_file is not None
        assert config_file.read() == image.config
        layer_paths = [f"{la.diff_id.removeprefix('sha256:')}/layer.tar" for la in image.layers]
        assert manifest == {
            "Config": image.image_id.removeprefix("sha256:") + ".json",
            "RepoTags": ["demo:1.0"],
            "Layers": layer_paths,
        }
        assert layer_paths[0] not in names
        included = archive.extractfile(layer_paths[1])
        assert included is not None
        assert sha256_digest(included.read()) == image.layers[1].diff_id


def test_docker_archive_to_a_stream_and_from_gzip_only(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    image = synthetic_image(store)
    for layer in image.layers:
        store.path(layer.diff_id).unlink()  # only the gzip is left: decompressed on the fly
    buffer = io.BytesIO()
    oci.write_docker_archive(buffer, image, [])
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as archive:
        for layer in image.layers:
            extracted = archive.extractfile(f"{layer.diff_id.removeprefix('sha256:')}/layer.tar")
            assert extracted is not None
            assert sha256_digest(extracted.read()) == layer.diff_id


def test_writers_leave_nothing_when_they_fail_midway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(tmp_path / "store")
    image = synthetic_image(store)
    out = tmp_path / "out"
    out.mkdir()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("shutil.copyfileobj", broken)
    monkeypatch.setattr("shutil.copyfile", broken)
    monkeypatch.setattr(oci, "open_uncompressed", broken)
    with pytest.raises(PublishError, match="No space left on device"):
        oci.write_docker_archive(out / "image.tar", image, ["demo:1"])
    with pytest.raises(PublishError, match="No space left on device"):
        oci.write_oci_layout(out / "layout", image, "demo")
    assert list(out.iterdir()) == []


def test_unwritable_destination_names_the_path(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    image = synthetic_image(store)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # A regular file where a directory is needed fails for root too (unlike chmod).
    writers: list[Callable[[], None]] = [
        lambda: oci.write_docker_archive(blocker / "image.tar", image, []),
        lambda: oci.write_oci_layout(blocker / "layout", image, "x"),
    ]
    for write in writers:
        with pytest.raises(PublishError) as caught:
            write()
        assert str(blocker) in caught.value.message
        assert "writable" in caught.value.message


def test_missing_cached_blob_is_a_publish_error(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    image = synthetic_image(store)
    store.path(image.layers[1].digest).unlink()
    with pytest.raises(PublishError, match="build cache"):
        oci.write_oci_layout(tmp_path / "layout", image, "x")
    assert not (tmp_path / "layout").exists()


# --------------------------------------------------------------------------- blob store


def test_blob_writer_discards_interrupted_blobs(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)

    def interrupted_write() -> None:
        with store.writer() as sink:
            sink.write(b"half a blob")
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted_write()
    assert list((tmp_path / "sha256").iterdir()) == []
    with store.writer() as sink:
        sink.write(b"whole")
    assert store.has(sha256_digest(b"whole"))
    assert [p.name for p in (tmp_path / "sha256").iterdir()] == [
        sha256_digest(b"whole").removeprefix("sha256:")
    ]


def test_blob_store_verifies_on_request(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    blob = store.put_bytes(b"payload")
    source = tmp_path / "file"
    source.write_bytes(b"payload")
    assert store.put_file(source) == blob
    store.verify(blob.digest)
    store.path(blob.digest).write_bytes(b"tampered")
    with pytest.raises(BlobCorruptError):
        store.verify(blob.digest)
    with pytest.raises(BlobCorruptError), store.open(blob.digest, verify=True):
        pass
    with pytest.raises(ValueError, match="not a sha256 digest"):
        store.path("sha256:../../etc/passwd")


# --------------------------------------------------------------------------- base import


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
    small = oci.build_layer(sample_entries(), store=store, epoch=0, role="x")
    big_file = tmp_path / "big"
    big_file.write_bytes(os.urandom(1_200_000))  # over the in-memory limit
    big = oci.build_layer([oci.FileEntry("big", "file", 0o644, source=big_file)], store=store,
                          epoch=0, role="x")  # fmt: skip
    return [store.path(small.diff_id).read_bytes(), store.path(big.diff_id).read_bytes()]


@pytest.mark.parametrize(("oci_style", "repeat"), [(False, False), (False, True), (True, False)])
def test_import_docker_save(tmp_path: Path, oci_style: bool, repeat: bool) -> None:
    tars = base_layer_tars(tmp_path)
    saved = docker_save_tar(tars, oci_style=oci_style, repeat=repeat)
    store = BlobStore(tmp_path / "store")
    base = oci.import_docker_save(io.BytesIO(saved), store)
    expected = [sha256_digest(t) for t in tars] + ([sha256_digest(tars[0])] if repeat else [])
    assert base.diff_ids == expected
    for layer in base.layers:
        assert (
            gzip.decompress(store.path(layer.digest).read_bytes())
            == store.path(layer.diff_id).read_bytes()
        )
        assert layer.size == store.size(layer.digest)
    assert base.config["config"]["Env"] == ["PATH=/usr/bin"]
    assert oci.cached_base(store, base.image_id) == base
    assert oci.cached_base(BlobStore(tmp_path / "other"), base.image_id) is None


def test_cached_base_reads_index_entries_written_without_a_role(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    base = oci.import_docker_save(io.BytesIO(docker_save_tar(base_layer_tars(tmp_path))), store)
    key = digest_hex(base.image_id)
    assert store.read_index("docker-save", key) == {"layers": [la.to_doc() for la in base.layers]}
    # The shape earlier versions wrote: a warm cache must stay warm.
    old = [{k: v for k, v in la.to_doc().items() if k != "role"} for la in base.layers]
    store.write_index("docker-save", key, {"layers": old})
    assert oci.cached_base(store, base.image_id) == base
    store.write_index("docker-save", key, {"layers": [{**old[0], "size": "many"}]})
    assert oci.cached_base(store, base.image_id) is None


def test_import_docker_save_accepts_gzipped_layers(tmp_path: Path) -> None:
    tars = base_layer_tars(tmp_path)[:1]
    saved = docker_save_tar([gzip.compress(tars[0])])
    # rewrite the config so its diff_id is that of the uncompressed tar
    with tarfile.open(fileobj=io.BytesIO(saved)) as archive:
        files = {m.name: archive.extractfile(m) for m in archive.getmembers()}
        contents = {k: f.read() for k, f in files.items() if f is not None}
    manifest = json.loads(contents["manifest.json"])[0]
    config = json.loads(contents[manifest["Config"]])
    config["rootfs"]["diff_ids"] = [sha256_digest(tars[0])]
    contents[manifest["Config"]] = json.dumps(config).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    base = oci.import_docker_save(buffer, BlobStore(tmp_path / "store"))
    assert base.diff_ids == [sha256_digest(tars[0])]


def test_import_docker_save_detects_damage(tmp_path: Path) -> None:
    tars = base_layer_tars(tmp_path)
    saved = docker_save_tar(tars)
    damaged = saved.replace(tars[0][600:700], b"\0" * 100, 1)
    with pytest.raises(BaseImageError, match="damaged"):
        oci.import_docker_save(io.BytesIO(damaged), BlobStore(tmp_path / "store"))
    with pytest.raises(BaseImageError, match="not in a format"):
        oci.import_docker_save(io.BytesIO(make_tar([]).getvalue()), BlobStore(tmp_path / "s2"))


def test_assemble_image_on_an_imported_base(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    base = oci.import_docker_save(io.BytesIO(docker_save_tar(base_layer_tars(tmp_path))), store)
    app = oci.build_layer(sample_entries(), store=store, epoch=EPOCH, role="app")
    image = oci.assemble_image(
        store, base, [app], epoch=EPOCH, user="10001", env={"PATH": "/usr/bin"},
        entrypoint=["/bin/true"],
    )  # fmt: skip
    assert image.base_layer_count == 2
    assert image.own_layers == (app,)
    config = json.loads(image.config)
    assert config["rootfs"]["diff_ids"] == [*base.diff_ids, app.diff_id]
    assert len(config["history"]) == 3
    manifest = json.loads(image.manifest)
    assert [la["digest"] for la in manifest["layers"]] == [la.digest for la in image.layers]


def test_chunk_iterators_are_accepted_as_streams(tmp_path: Path) -> None:
    """The docker SDK hands out generators of chunks (`image.save()`, `get_archive()`)."""
    saved = docker_save_tar(base_layer_tars(tmp_path))
    chunks = (saved[i : i + 1000] for i in range(0, len(saved), 1000))
    base = oci.import_docker_save(chunks, BlobStore(tmp_path / "store"))
    assert len(base.layers) == 2
    archive = venv_archive().getvalue()
    entries = oci.entries_from_tar(
        iter([archive[:7], b"", archive[7:]]),
        strip_prefix="venv",
        dest_prefix="opt/venv",
        spool_dir=tmp_path / "spool",
    )
    assert len(entries) == 6
