"""The harness itself. A container from the local base image reaches PyPI only when the
host's CA bundle is mounted (the TLS-intercepting proxy case pydeploy must handle), the
same command without it fails on the certificate, and what a test registers is removed."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import docker.errors
import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.conftest import Resources, WaitHttp

CA_IN_CONTAINER = "/etc/pydeploy-test/ca.crt"
# --retries 0: a certificate failure is final, and retrying it only slows the test down.
PIP_DOWNLOAD = [
    "python3", "-m", "pip", "download", "--no-deps", "--no-cache-dir",
    "--disable-pip-version-check", "--retries", "0", "--timeout", "60", "-d", "/tmp/x", "six",
]  # fmt: skip


def test_pip_download_succeeds_with_host_ca_mounted(
    base_image: str, ca_bundle: Path, resources: Resources
) -> None:
    result = resources.run(
        base_image,
        PIP_DOWNLOAD,
        volumes={str(ca_bundle): {"bind": CA_IN_CONTAINER, "mode": "ro"}},
        environment={"PIP_CERT": CA_IN_CONTAINER},
    )
    assert result.exit_code == 0, result.output
    assert "Saved /tmp/x/six-" in result.output, result.output


def test_pip_download_fails_without_host_ca(
    base_image: str, resources: Resources, tls_intercepted: bool
) -> None:
    if not tls_intercepted:
        pytest.skip("no TLS-intercepting proxy on this network: the stock CA bundle works")
    result = resources.run(base_image, PIP_DOWNLOAD)
    assert result.exit_code != 0, result.output
    assert "CERTIFICATE_VERIFY_FAILED" in result.output, result.output


def test_cleanup_removes_registered_containers_and_volumes(
    docker_client: docker.DockerClient, base_image: str, resources: Resources
) -> None:
    volume = resources.volume(docker_client.volumes.create(labels=resources.labels).name or "")
    container = resources.create(
        base_image, ["sleep", "600"], volumes={volume: {"bind": "/data", "mode": "rw"}}
    )
    container.start()  # a running container: removal must force it

    assert resources.cleanup() == []

    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container.id or "")
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(volume)


def test_wait_http_names_the_last_error(free_port: int, wait_http: WaitHttp) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="ConnectionRefusedError"):
        wait_http(f"http://127.0.0.1:{free_port}/", timeout=1)
    assert time.monotonic() - started < 10


def test_registry_answers_v2(registry: str, wait_http: WaitHttp) -> None:
    assert wait_http(f"http://{registry}/v2/", timeout=5).strip() == "{}"


def test_registry_belongs_to_this_session(registry: str) -> None:
    """Unless named in PYDEPLOY_TEST_REGISTRY, the registry is this session's own: one that
    just answers on 127.0.0.1:5000 belongs to someone else (another CI run stops its
    registry when it ends), and borrowing it failed this run's later registry tests."""
    if os.environ.get("PYDEPLOY_TEST_REGISTRY", "").strip():
        pytest.skip("PYDEPLOY_TEST_REGISTRY names the registry to use")
    assert registry != "127.0.0.1:5000"
