"""The base image without an engine: the test base pushed to the session's registry with
skopeo (an independent client), copied to an OCI layout and `docker save`d, then fetched
by pydeploy from each and its facts read from its layers. The engine only makes the
copies; checked against what `docker image inspect` says."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tests.integration.conftest import unavailable

from pydeploy.base.platforms import Platform
from pydeploy.base.source import FetchedBase, fetch_base, parse_base_source
from pydeploy.errors import BaseImageError
from pydeploy.oci.blobs import BlobStore

if TYPE_CHECKING:
    import docker

AMD64 = Platform.parse("linux/amd64")


def skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        unavailable("skopeo is not installed", "apt-get install -y skopeo (or run .ci/test)")
    return path


def copy(source: str, dest: str) -> None:
    subprocess.run(
        [skopeo(), "copy", "--quiet", "--dest-tls-verify=false", source, dest],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip


def check_facts(fetched: FetchedBase, diff_ids: list[str]) -> None:
    """What the test base (debootstrap bookworm, python3 from Debian) really holds."""
    assert fetched.base.diff_ids == diff_ids
    facts = fetched.facts
    assert facts.python.executable == "/usr/bin/python3.11"
    assert facts.python.version.startswith("3.11.")
    assert facts.python.site_packages == "lib/python3.11/site-packages"
    assert facts.libc == ("glibc", "2.36")
    assert facts.passwd.startswith(b"root:x:0:0:")
    assert b"\nnogroup:" in facts.group


@pytest.fixture(scope="module")
def inspected(docker_client: docker.DockerClient, base_image: str) -> list[str]:
    attrs = docker_client.images.get(base_image).attrs
    layers: list[str] = attrs["RootFS"]["Layers"]
    return layers


def test_from_the_registry_cold_then_warm(
    registry: str, base_image: str, inspected: list[str], tmp_path: Path
) -> None:
    repository = f"{registry}/pydeploy-test/base-fetch"
    tag = uuid.uuid4().hex[:12]
    copy(f"docker-daemon:{base_image}", f"docker://{repository}:{tag}")
    store = BlobStore(tmp_path / "store")
    source = parse_base_source(f"{repository}:{tag}")
    notes: list[str] = []
    cold = fetch_base(source, AMD64, store, notes.append)
    check_facts(cold, inspected)
    assert cold.repo_digest.startswith(f"{repository}@sha256:")
    assert len(notes) == len(inspected)  # one line per layer fetched
    stored = sorted(p.name for p in (tmp_path / "store" / "sha256").iterdir())
    warm = fetch_base(source, AMD64, store, notes.append)
    assert warm == cold
    assert len(notes) == len(inspected)  # nothing fetched again
    assert sorted(p.name for p in (tmp_path / "store" / "sha256").iterdir()) == stored
    inspect = subprocess.run(
        [skopeo(), "inspect", "--tls-verify=false", f"docker://{repository}:{tag}"],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cold.repo_digest.endswith(json.loads(inspect.stdout)["Digest"])
    with pytest.raises(BaseImageError, match="has no image for linux/arm64"):
        fetch_base(source, Platform.parse("linux/arm64"), store)


def test_from_an_oci_layout_and_a_docker_archive(
    docker_client: docker.DockerClient, base_image: str, inspected: list[str], tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    copy(f"docker-daemon:{base_image}", f"oci:{layout}:base")
    store = BlobStore(tmp_path / "store")
    check_facts(fetch_base(parse_base_source(f"oci:{layout}:base"), AMD64, store), inspected)
    archive = tmp_path / "base.tar"
    with archive.open("wb") as out:
        for chunk in docker_client.images.get(base_image).save(named=True):
            out.write(chunk)
    fetched = fetch_base(parse_base_source(f"docker-archive:{archive}"), AMD64, store)
    check_facts(fetched, inspected)
    assert fetched.base.image_id == docker_client.images.get(base_image).id
