from __future__ import annotations

import gzip
import http.server
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.unit.base.images import (
    Blobs,
    config_for,
    debian_layer,
    file,
    image,
    index_of,
    layer_tar,
    whiteout,
    write_layout,
)
from tests.unit.oci.samples import docker_save_tar

from pydeploy.base.platforms import Platform
from pydeploy.base.source import BaseSource, fetch_base, parse_base_source
from pydeploy.errors import BaseImageError, ConfigError
from pydeploy.oci.blobs import BlobStore, sha256_digest

AMD64 = Platform.parse("linux/amd64")
ARM64 = Platform.parse("linux/arm64")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("python:3.12-slim", BaseSource("registry", "docker.io/library/python:3.12-slim")),
        ("docker://team/base", BaseSource("registry", "docker.io/team/base:latest")),
        ("127.0.0.1:5000/base:1", BaseSource("registry", "127.0.0.1:5000/base:1")),
        ("oci:/tmp/layout", BaseSource("oci", "/tmp/layout")),
        ("oci:out/base:v1", BaseSource("oci", "out/base", "v1")),
        ("docker-archive:base.tar", BaseSource("docker-archive", "base.tar")),
    ],
)
def test_parse_base_source(text: str, expected: BaseSource) -> None:
    assert parse_base_source(text) == expected


def test_parse_refuses_bad_names() -> None:
    with pytest.raises(ConfigError, match="not a valid image reference"):
        parse_base_source("Bad Name")
    assert str(parse_base_source("oci:out/base:v1")) == "oci:out/base:v1"


def two_platforms(blobs: Blobs) -> tuple[bytes, bytes, bytes]:
    """An index of an amd64 and an arm64 image (their layers differ in one file)."""
    amd = image(blobs, [layer_tar(debian_layer())])
    arm_layer = [*debian_layer(), file("etc/hostname", b"arm\n")]
    arm = image(blobs, [layer_tar(arm_layer)], architecture="arm64", variant="v8")
    return index_of(blobs, {"linux/amd64": amd, "linux/arm64/v8": arm}), amd, arm


def test_layout_with_a_nested_index_picks_the_platform(tmp_path: Path) -> None:
    blobs = Blobs()
    index, _amd, arm = two_platforms(blobs)
    layout = write_layout(tmp_path / "layout", blobs, {"v1": index})
    store = BlobStore(tmp_path / "store")
    fetched = fetch_base(parse_base_source(f"oci:{layout}"), ARM64, store)
    assert fetched.manifest_digest == sha256_digest(arm)
    assert fetched.base.config["architecture"] == "arm64"
    assert fetched.facts.python.executable == "/usr/bin/python3.11"
    assert fetched.repo_digest == f"oci:{layout}@{sha256_digest(arm)}"
    (layer,) = fetched.base.layers or ()
    assert layer.compressed
    assert store.has(layer.digest)
    assert store.has(layer.diff_id)


def test_a_missing_platform_lists_those_present(tmp_path: Path) -> None:
    blobs = Blobs()
    index, _amd, _arm = two_platforms(blobs)
    layout = write_layout(tmp_path / "layout", blobs, {"v1": index})
    with pytest.raises(BaseImageError, match=r"no image for linux/s390x \(it has: linux/amd64, "
                       r"linux/arm64/v8\)"):  # fmt: skip
        fetch_base(parse_base_source(f"oci:{layout}"), Platform.parse("linux/s390x"),
                   BlobStore(tmp_path / "store"))  # fmt: skip


def test_a_single_manifest_is_checked_against_its_config(tmp_path: Path) -> None:
    blobs = Blobs()
    manifest = image(blobs, [layer_tar(debian_layer())])
    layout = write_layout(tmp_path / "layout", blobs, {"v1": manifest})
    store = BlobStore(tmp_path / "store")
    assert fetch_base(parse_base_source(f"oci:{layout}"), AMD64, store).base.diff_ids
    with pytest.raises(BaseImageError, match=r"no image for linux/arm64 \(it has: linux/amd64\)"):
        fetch_base(parse_base_source(f"oci:{layout}"), ARM64, store)


def test_a_ref_name_picks_among_the_layout_s_images(tmp_path: Path) -> None:
    blobs = Blobs()
    one = image(blobs, [layer_tar(debian_layer())])
    two = image(blobs, [layer_tar([*debian_layer(), file("etc/motd", b"two\n")])])
    layout = write_layout(tmp_path / "layout", blobs, {"one": one, "two": two})
    store = BlobStore(tmp_path / "store")
    fetched = fetch_base(parse_base_source(f"oci:{layout}:two"), AMD64, store)
    assert fetched.manifest_digest == sha256_digest(two)
    with pytest.raises(BaseImageError, match=r"no image named 'three' \(it has: one, two\)"):
        fetch_base(parse_base_source(f"oci:{layout}:three"), AMD64, store)


def test_not_a_layout(tmp_path: Path) -> None:
    with pytest.raises(BaseImageError, match=r"is not a usable OCI image layout: .* no oci-layout"):
        fetch_base(parse_base_source(f"oci:{tmp_path}"), AMD64, BlobStore(tmp_path / "store"))


def test_a_corrupt_blob_is_never_cached(tmp_path: Path) -> None:
    blobs = Blobs()
    manifest = image(blobs, [layer_tar(debian_layer())])
    layer_digest = json.loads(manifest)["layers"][0]["digest"]
    layout = write_layout(tmp_path / "layout", blobs, {"v1": manifest})
    damaged = layout / "blobs" / "sha256" / layer_digest.removeprefix("sha256:")
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"!")
    store = BlobStore(tmp_path / "store")
    with pytest.raises(BaseImageError, match=f"the blob {layer_digest} .* does not match"):
        fetch_base(parse_base_source(f"oci:{layout}"), AMD64, store)
    assert not store.has(layer_digest)
    assert not [p for p in (tmp_path / "store" / "sha256").iterdir()
                if p.name == layer_digest.removeprefix("sha256:")]  # fmt: skip


def test_docker_archive(tmp_path: Path) -> None:
    archive = tmp_path / "base.tar"
    archive.write_bytes(docker_save_tar([layer_tar(debian_layer())]))
    store = BlobStore(tmp_path / "store")
    notes: list[str] = []
    fetched = fetch_base(parse_base_source(f"docker-archive:{archive}"), AMD64, store, notes.append)
    assert fetched.facts.libc == ("glibc", "2.36")
    assert fetched.repo_digest == ""
    assert (
        fetch_base(parse_base_source(f"docker-archive:{archive}"), AMD64, store, notes.append)
        == fetched
    )
    assert notes == [f"reading {archive}"]  # the unchanged file is not read again
    os.utime(archive, ns=(0, 0))
    fetch_base(parse_base_source(f"docker-archive:{archive}"), AMD64, store, notes.append)
    assert notes == [f"reading {archive}"] * 2
    with pytest.raises(BaseImageError, match=r"no image for linux/arm64 \(it has: linux/amd64\)"):
        fetch_base(parse_base_source(f"docker-archive:{archive}"), ARM64, store)
    with pytest.raises(BaseImageError, match="cannot be read"):
        fetch_base(parse_base_source(f"docker-archive:{tmp_path}/none.tar"), AMD64, store)


# --------------------------------------------------------------------------- registry


class Served:
    """What an in-process registry serves, and the requests it answered."""

    def __init__(self) -> None:
        self.paths: dict[str, tuple[str, bytes]] = {}
        self.requests: list[str] = []
        self.address = ""
        self.challenge = ""  # a WWW-Authenticate to answer every request with (401)


@pytest.fixture
def served() -> Iterator[Served]:
    record = Served()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            record.requests.append(self.path)
            if record.challenge:
                self.send_response(401)
                self.send_header("WWW-Authenticate", record.challenge)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            content_type, body = record.paths.get(self.path, ("", b""))
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", content_type or "application/json")
            payload = body or b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}'
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    record.address = f"127.0.0.1:{server.server_address[1]}"
    yield record
    server.shutdown()
    server.server_close()


def serve(served: Served, repository: str, tag: str, top: bytes, blobs: Blobs) -> None:
    kind = json.loads(top)["mediaType"]
    served.paths[f"/v2/{repository}/manifests/{tag}"] = (kind, top)
    for digest, data in blobs.items():
        served.paths[f"/v2/{repository}/manifests/{digest}"] = (kind, data)
        served.paths[f"/v2/{repository}/blobs/{digest}"] = ("application/octet-stream", data)


def test_registry_index_cold_then_warm(served: Served, tmp_path: Path) -> None:
    blobs = Blobs()
    index, amd, _arm = two_platforms(blobs)
    serve(served, "team/base", "1", index, blobs)
    store = BlobStore(tmp_path / "store")
    source = parse_base_source(f"{served.address}/team/base:1")
    cold = fetch_base(source, AMD64, store)
    assert cold.repo_digest == f"{served.address}/team/base@{sha256_digest(index)}"
    assert cold.manifest_digest == sha256_digest(amd)
    assert sum("/blobs/" in r for r in served.requests) == 2  # amd64's config and layer
    served.requests.clear()
    warm = fetch_base(source, AMD64, store)
    assert served.requests == ["/v2/team/base/manifests/1"]  # the tag, looked up every time
    assert warm == cold


def test_registry_missing_tag_and_unreachable(served: Served, tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    with pytest.raises(BaseImageError, match=r"has no tag '2' in team/base") as caught:
        fetch_base(parse_base_source(f"{served.address}/team/base:2"), AMD64, store)
    assert "skopeo list-tags" in caught.value.message
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BaseImageError, match=r"cannot be fetched: registry .* is unreachable"):
        fetch_base(parse_base_source(f"127.0.0.1:{port}/team/base:1"), AMD64, store)


def test_registry_corrupt_layer_is_not_stored(served: Served, tmp_path: Path) -> None:
    blobs = Blobs()
    manifest = image(blobs, [layer_tar(debian_layer())])
    serve(served, "team/base", "1", manifest, blobs)
    layer = json.loads(manifest)["layers"][0]["digest"]
    kind, data = served.paths[f"/v2/team/base/blobs/{layer}"]
    served.paths[f"/v2/team/base/blobs/{layer}"] = (kind, data[:-1] + b"!")
    store = BlobStore(tmp_path / "store")
    with pytest.raises(BaseImageError, match="does not match its digest; nothing of it was cached"):
        fetch_base(parse_base_source(f"{served.address}/team/base:1"), AMD64, store)
    assert not store.has(layer)


def test_registry_that_wants_credentials(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("PYDEPLOY_REGISTRY_USERNAME", raising=False)
    served.challenge = 'Basic realm="test"'
    with pytest.raises(BaseImageError, match=r"requires credentials .* none were found") as caught:
        fetch_base(parse_base_source(f"{served.address}/team/base:1"), AMD64,
                   BlobStore(tmp_path / "store"))  # fmt: skip
    assert "docker login" in caught.value.message


def layout_with_layer(tmp_path: Path, media_type: str, data: bytes, diff_id: str) -> Path:
    blobs = Blobs()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   **blobs.add(config_for([diff_id]))},
        "layers": [{"mediaType": media_type, **blobs.add(data)}],
    }  # fmt: skip
    data = json.dumps(manifest).encode()
    blobs.add(data)
    return write_layout(tmp_path / "layout", blobs, {"v1": data})


def test_plain_tar_layers_under_docker_media_types(tmp_path: Path) -> None:
    tar = layer_tar(debian_layer())
    layout = layout_with_layer(tmp_path, "application/vnd.docker.image.rootfs.diff.tar", tar,
                               sha256_digest(tar))  # fmt: skip
    fetched = fetch_base(parse_base_source(f"oci:{layout}"), AMD64, BlobStore(tmp_path / "s"))
    (layer,) = fetched.base.layers or ()
    assert not layer.compressed
    assert fetched.facts.python.version == "3.11.2"


@pytest.mark.parametrize(
    ("media_type", "data", "error"),
    [
        ("application/vnd.oci.image.layer.v1.tar+zstd", b"\x28\xb5\x2f\xfd", "a layer of type"),
        ("application/vnd.oci.image.layer.v1.tar+gzip", b"not gzip", "unpacks to nothing"),
        ("application/vnd.oci.image.layer.v1.tar+gzip", gzip.compress(b"other", mtime=0),
         "not to its diff ID"),
    ],
)  # fmt: skip
def test_unreadable_layers(tmp_path: Path, media_type: str, data: bytes, error: str) -> None:
    diff_id = sha256_digest(layer_tar(debian_layer()))
    layout = layout_with_layer(tmp_path, media_type, data, diff_id)
    with pytest.raises(BaseImageError, match=error):
        fetch_base(parse_base_source(f"oci:{layout}"), AMD64, BlobStore(tmp_path / "s"))


def test_layers_keep_their_order_when_fetched_in_parallel(served: Served, tmp_path: Path) -> None:
    blobs = Blobs()
    tars = [
        layer_tar(debian_layer()),
        layer_tar([file("etc/motd", b"one\n")]),
        layer_tar([whiteout("etc/passwd"), file("etc/passwd", b"app:x:1:1::/:/bin/sh\n")]),
        layer_tar([file("etc/motd", b"three\n")]),
    ]
    serve(served, "team/base", "1", image(blobs, tars), blobs)
    notes: list[str] = []
    fetched = fetch_base(parse_base_source(f"{served.address}/team/base:1"), AMD64,
                         BlobStore(tmp_path / "store"), notes.append)  # fmt: skip
    assert fetched.base.diff_ids == [sha256_digest(tar) for tar in tars]
    assert [layer.diff_id for layer in fetched.base.layers or ()] == fetched.base.diff_ids
    assert len(notes) == len(tars)
    assert fetched.facts.passwd == b"app:x:1:1::/:/bin/sh\n"
