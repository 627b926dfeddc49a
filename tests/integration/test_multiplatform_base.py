"""The fixtures the engine-free and multi-platform tests stand on: the arm64 test base,
the multi-platform base in the session registry, the OCI layout and docker-archive of the
amd64 base, the ELF and index helpers, and an engine made unreachable."""

from __future__ import annotations

import gc
import hashlib
import io
import json
import tarfile
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import pytest
import requests.exceptions

if TYPE_CHECKING:
    from tests.integration.conftest import (
        ElfMachines,
        MultiPlatformBase,
        OciBaseLayout,
        ReadIndex,
        Resources,
    )

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MACHINE = "import platform; print(platform.machine())"


def registry_blob(reference: str, digest: str) -> bytes:
    registry, _, rest = reference.partition("/")
    repository = rest.rsplit(":", 1)[0]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{registry}/v2/{repository}/blobs/{digest}", timeout=60) as response:
        body: bytes = response.read()
        return body


def assert_config_matches(config: dict[str, Any], local: dict[str, Any]) -> None:
    """An OCI config written from the local image `local` (its `docker inspect` attrs)."""
    assert (config["os"], config["architecture"]) == (local["Os"], local["Architecture"])
    assert config["rootfs"]["diff_ids"] == local["RootFS"]["Layers"]
    assert config["config"]["Env"] == local["Config"]["Env"]
    assert config["config"]["Cmd"] == local["Config"]["Cmd"]


def test_arm64_base_says_arm64(docker_client: docker.DockerClient, base_image_arm64: str) -> None:
    attrs = docker_client.images.get(base_image_arm64).attrs
    assert (attrs["Os"], attrs["Architecture"]) == ("linux", "arm64")
    assert attrs["Config"]["Cmd"] == ["/usr/bin/python3"]
    assert (
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        in (attrs["Config"]["Env"])
    )


def test_index_names_both_platforms(
    multiplatform_base: MultiPlatformBase, read_index: ReadIndex
) -> None:
    index = read_index(multiplatform_base.reference)
    assert index.media_type == OCI_INDEX
    assert index.digest == multiplatform_base.index_digest
    assert index.manifests == {
        "linux/amd64": multiplatform_base.manifests["linux/amd64"],
        "linux/arm64/v8": multiplatform_base.manifests["linux/arm64"],
    }
    # skopeo, choosing by platform, reached each image's own config.
    assert index.configs["linux/arm64/v8"]["Architecture"] == "arm64"
    assert index.configs["linux/amd64"]["Architecture"] == "amd64"
    assert (
        multiplatform_base.manifests["linux/amd64"] != multiplatform_base.manifests["linux/arm64"]
    )


def test_configs_carry_the_local_images(
    docker_client: docker.DockerClient, multiplatform_base: MultiPlatformBase
) -> None:
    """Each pushed config has its local image's platform, layers (diff_ids), env and cmd."""
    for platform, image in multiplatform_base.images.items():
        body = registry_blob(multiplatform_base.reference, multiplatform_base.configs[platform])
        assert hashlib.sha256(body).hexdigest() == multiplatform_base.configs[platform][7:]
        assert_config_matches(json.loads(body), docker_client.images.get(image).attrs)


def test_arm64_image_from_the_registry_runs_under_emulation(
    docker_client: docker.DockerClient,
    multiplatform_base: MultiPlatformBase,
    resources: Resources,
) -> None:
    reference = resources.image(multiplatform_base.by_digest("linux/arm64"))
    image = docker_client.images.pull(reference)
    assert image.attrs["Architecture"] == "arm64"
    result = resources.run(reference, ["python3", "-c", MACHINE])
    assert (result.exit_code, result.output.strip().splitlines()[-1]) == (0, "aarch64")


def test_elf_machines_per_platform(
    multiplatform_base: MultiPlatformBase, elf_machines: ElfMachines
) -> None:
    arm64 = elf_machines(multiplatform_base.reference, platform="linux/arm64", under="/usr/bin")
    amd64 = elf_machines(multiplatform_base.by_digest("linux/amd64"), under="/usr/bin")
    # python3 is a symlink: the ELF file is the versioned interpreter.
    assert arm64["/usr/bin/python3.11"] == 0xB7
    assert amd64["/usr/bin/python3.11"] == 0x3E
    assert set(arm64.values()) == {0xB7}
    assert set(amd64.values()) == {0x3E}
    assert all(path.startswith("/usr/bin/") for path in arm64)


def test_oci_layout_of_the_base(
    docker_client: docker.DockerClient, oci_base_layout: OciBaseLayout
) -> None:
    layout = oci_base_layout.path
    assert json.loads((layout / "oci-layout").read_text(encoding="utf-8")) == {
        "imageLayoutVersion": "1.0.0"
    }
    index = json.loads((layout / "index.json").read_text(encoding="utf-8"))
    (entry,) = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == oci_base_layout.tag
    assert entry["digest"] == oci_base_layout.manifest_digest
    config = (layout / "blobs" / "sha256" / oci_base_layout.config_digest[7:]).read_bytes()
    assert hashlib.sha256(config).hexdigest() == oci_base_layout.config_digest[7:]
    assert_config_matches(json.loads(config), docker_client.images.get(oci_base_layout.image).attrs)


def test_docker_archive_of_the_base(
    docker_client: docker.DockerClient, base_image: str, docker_archive_base: Path
) -> None:
    with tarfile.open(docker_archive_base) as archive:
        member = archive.extractfile("manifest.json")
        assert member is not None
        (manifest,) = json.load(member)
    assert manifest["RepoTags"] == [base_image]
    image_id = str(docker_client.images.get(base_image).id)
    assert manifest["Config"] == image_id.removeprefix("sha256:") + ".json"


def test_unreachable_engine_does_not_answer(unreachable_engine: str) -> None:
    assert unreachable_engine.startswith("unix:///")
    assert not Path(unreachable_engine.removeprefix("unix://")).exists()
    # The failed connection's socket is left to the collector: release it here, where its
    # ResourceWarning is expected (filterwarnings=error would pin it on a later test).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with pytest.raises((docker.errors.DockerException, requests.exceptions.ConnectionError)):
            docker.DockerClient(base_url=unreachable_engine, timeout=5).ping()
        gc.collect()


def _elf_header(machine: int) -> bytes:
    """The first bytes of a little-endian 64-bit ELF file for `machine`."""
    return (
        b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x03\x00" + machine.to_bytes(2, "little") + bytes(8)
    )


def _layer(entries: list[tarfile.TarInfo], contents: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info in entries:
            data = contents.get(info.name)
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def _push_blob(registry: str, repository: str, body: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    start = urllib.request.Request(
        f"http://{registry}/v2/{repository}/blobs/uploads/", data=b"", method="POST"
    )
    with opener.open(start, timeout=60) as response:
        location = urllib.parse.urljoin(f"http://{registry}/", response.headers["Location"])
    separator = "&" if "?" in location else "?"
    finish = urllib.request.Request(
        f"{location}{separator}digest={digest}",
        data=body,
        method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )
    with opener.open(finish, timeout=60):
        return digest


def test_elf_machines_applies_layers_in_order(registry: str, elf_machines: ElfMachines) -> None:
    """Whiteouts and opaque directories hide lower files, a hard link has its target's
    machine, symbolic links and non-ELF files are left out."""
    x86, arm = _elf_header(0x3E), _elf_header(0xB7)
    lower = _layer(
        [_entry("opt/"), _entry("opt/a.so"), _entry("opt/b.so"), _entry("opt/dir/c.so"),
         _entry("opt/text"), _entry("usr/d.so")],
        {"opt/a.so": x86, "opt/b.so": arm, "opt/dir/c.so": x86, "opt/text": b"x" * 40,
         "usr/d.so": arm},
    )  # fmt: skip
    upper = _layer(
        [_entry("opt/.wh.a.so"), _entry("opt/dir/.wh..wh..opq"), _entry("opt/dir/e.so"),
         _entry("opt/link.so", tarfile.LNKTYPE, "opt/b.so"),
         _entry("opt/sym.so", tarfile.SYMTYPE, "b.so")],
        {"opt/.wh.a.so": b"", "opt/dir/.wh..wh..opq": b"", "opt/dir/e.so": arm},
    )  # fmt: skip
    repository = "pydeploy-test/elf-layers"
    config = json.dumps({"architecture": "arm64", "os": "linux", "rootfs": {}}).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _push_blob(registry, repository, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": _push_blob(registry, repository, layer),
                "size": len(layer),
            }
            for layer in (lower, upper)
        ],
    }
    request = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/t",
        data=json.dumps(manifest).encode(),
        method="PUT",
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=60):
        pass
    reference = f"{registry}/{repository}:t"
    assert elf_machines(reference, under="/opt") == {
        "/opt/b.so": 0xB7,
        "/opt/dir/e.so": 0xB7,
        "/opt/link.so": 0xB7,
    }
    assert elf_machines(reference)["/usr/d.so"] == 0xB7
