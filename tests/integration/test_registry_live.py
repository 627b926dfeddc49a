"""Push to and fetch from Debian's real `docker-registry` (distribution 2.x), started per
test on a free loopback port: blobs skipped on a second push, an interrupted push resumed,
htpasswd auth refusing and accepting credentials, a registry that is down, and skopeo (an
independent client) reading both the pushed image and an OCI layout."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from pydeploy.errors import PublishError, RegistryAuthError
from pydeploy.oci.blobs import BlobStore, sha256_digest
from pydeploy.oci.config import ImageSettings, build_config, rfc3339
from pydeploy.oci.entries import FileEntry
from pydeploy.oci.image import Image
from pydeploy.oci.layer import build_layer
from pydeploy.oci.layout import write_oci_layout
from pydeploy.plan import references
from pydeploy.publish import registry

if TYPE_CHECKING:
    from tests.integration.conftest import Resources

USER, PASSWORD = "pusher", "correct-horse-battery"
FASTAPI = Path(__file__).resolve().parents[2] / "examples" / "fastapi-app"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def require(tool: str, fix: str) -> str:
    """The tool's path; a missing tool skips locally and fails under CI."""
    path = shutil.which(tool)
    if path is None:
        if in_ci():
            pytest.fail(f"{tool} is not installed; under CI this is a failure. Fix: {fix}")
        pytest.skip(f"{tool} is not installed. To run this test: {fix}")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


StartRegistry = Callable[..., str]


@pytest.fixture
def start_registry(tmp_path: Path) -> Iterator[StartRegistry]:
    """Start `docker-registry serve` (optionally behind htpasswd) and return host:port;
    every registry started is stopped at teardown."""
    binary = require("docker-registry", "apt-get install -y docker-registry")
    procs: list[subprocess.Popen[bytes]] = []

    def start(htpasswd: Path | None = None) -> str:
        root = tmp_path / f"registry-{len(procs)}"
        root.mkdir()
        address = f"127.0.0.1:{free_port()}"
        auth = (
            f"auth:\n  htpasswd:\n    realm: pydeploy-test\n    path: {htpasswd}\n"
            if htpasswd
            else ""
        )
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
            f"http:\n  addr: {address}\n{auth}",
            encoding="utf-8",
        )
        log = (root / "registry.log").open("wb")
        procs.append(
            subprocess.Popen(
                [binary, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                status = requests.get(f"http://{address}/v2/", timeout=2).status_code
            except requests.ConnectionError:
                status = 0
            if status in {200, 401}:
                return address
            if time.monotonic() > deadline or procs[-1].poll() is not None:
                tail = (root / "registry.log").read_text(errors="replace")[-800:]
                pytest.fail(f"docker-registry did not start on {address}:\n{tail}")
            time.sleep(0.1)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(autouse=True)
def _isolated_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read the machine's Docker config or credentials from the environment."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.delenv("PYDEPLOY_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("PYDEPLOY_REGISTRY_PASSWORD", raising=False)


def synthetic_image(store: BlobStore, salt: str) -> Image:
    payload = os.urandom(256 * 1024)  # incompressible, so the layer has a real size
    layers = [
        build_layer(
            [FileEntry("opt/data/blob.bin", "file", 0o644, data=payload)],
            store=store,
            epoch=0,
            role="dependencies",
        ),
        build_layer(
            [FileEntry("app/main.py", "file", 0o644, data=f"print({salt!r})\n".encode())],
            store=store,
            epoch=0,
            role="app",
        ),
    ]
    config = build_config(
        {"architecture": "amd64", "os": "linux", "config": {}},
        [],
        [],
        layers,
        ImageSettings(
            user="10001",
            env={"PATH": "/usr/bin:/bin"},
            entrypoint=["/usr/bin/python3"],
            cmd=["/app/main.py"],
            workdir="/app",
            exposed_ports=["8000"],
            labels={"org.opencontainers.image.title": salt},
            stop_signal="SIGTERM",
            healthcheck=None,
            created=rfc3339(0),
        ),
    )
    return Image.from_config(store, config, layers)


def blob_digests(image: Image) -> list[str]:
    return [*(layer.digest for layer in image.layers), image.config_digest]


def test_push_skips_existing_blobs_and_reads_back(
    start_registry: StartRegistry, tmp_path: Path
) -> None:
    address = start_registry()
    image = synthetic_image(BlobStore(tmp_path / "store"), "push")
    ref = f"{address}/team/app:1.0"
    first: list[registry.PushEvent] = []
    assert registry.push(image, ref, progress=first.append) == image.manifest_digest
    uploaded = [e.digest for e in first if e.kind == "uploaded"]
    assert sorted(uploaded) == sorted(blob_digests(image))  # in parallel: any order
    second: list[registry.PushEvent] = []
    registry.push(image, ref, progress=second.append)
    assert sorted((e.kind, e.digest) for e in second[:-1]) == sorted(
        ("exists", d) for d in blob_digests(image)
    )
    assert (second[-1].kind, second[-1].digest) == ("manifest", image.manifest_digest)
    fetched = registry.fetch_manifest(ref)
    assert fetched.data == image.manifest
    assert fetched.digest == image.manifest_digest
    assert fetched.media_type == "application/vnd.oci.image.manifest.v1+json"
    by_digest = registry.fetch_manifest(f"{address}/team/app@{image.manifest_digest}")
    assert by_digest.data == image.manifest
    for digest in blob_digests(image):
        dest = tmp_path / "pulled" / digest.removeprefix("sha256:")
        size = registry.fetch_blob(ref, digest, dest)
        assert sha256_digest(dest.read_bytes()) == digest
        assert dest.read_bytes() == image.store.path(digest).read_bytes()
        assert size == dest.stat().st_size


def test_interrupted_push_resumes(start_registry: StartRegistry, tmp_path: Path) -> None:
    address = start_registry()
    image = synthetic_image(BlobStore(tmp_path / "store"), "resume")
    ref = references.parse_reference(f"{address}/team/resume:1")
    # An earlier run got as far as the first layer, then died.
    first = image.layers[0]
    with registry.RegistryClient(ref, push=True) as client:
        client.upload_blob(
            first.digest, first.size, lambda: image.store.path(first.digest).read_bytes()
        )
    with pytest.raises(PublishError, match="HTTP 404"):
        registry.fetch_manifest(ref)
    events: list[registry.PushEvent] = []
    registry.push(image, ref, progress=events.append)
    kinds = {e.digest: e.kind for e in events if e.kind in {"exists", "uploaded"}}
    assert kinds == {
        first.digest: "exists",
        image.layers[1].digest: "uploaded",
        image.config_digest: "uploaded",
    }
    assert registry.fetch_manifest(ref).digest == image.manifest_digest


def make_htpasswd(path: Path) -> Path:
    """A bcrypt htpasswd file (the only hash distribution accepts), made by Apache's tool."""
    tool = require("htpasswd", "apt-get install -y apache2-utils")
    line = subprocess.run(
        [tool, "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True
    ).stdout.strip()
    path.write_text(line + "\n", encoding="utf-8")
    return path


def test_htpasswd_registry_checks_credentials(
    start_registry: StartRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = start_registry(htpasswd=make_htpasswd(tmp_path / "htpasswd"))
    image = synthetic_image(BlobStore(tmp_path / "store"), "auth")
    ref = f"{address}/private/app:1"
    with pytest.raises(RegistryAuthError, match="none were found"):
        registry.push(image, ref)
    monkeypatch.setenv("PYDEPLOY_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("PYDEPLOY_REGISTRY_PASSWORD", "wrong-" + PASSWORD)
    with pytest.raises(RegistryAuthError) as refused:
        registry.push(image, ref)
    assert address in refused.value.message
    assert "PYDEPLOY_REGISTRY_PASSWORD" in refused.value.message
    assert PASSWORD not in refused.value.message
    monkeypatch.setenv("PYDEPLOY_REGISTRY_PASSWORD", PASSWORD)
    assert registry.push(image, ref) == image.manifest_digest
    assert registry.fetch_manifest(ref).data == image.manifest


def test_docker_config_credentials_reach_the_registry(
    start_registry: StartRegistry, tmp_path: Path
) -> None:
    address = start_registry(htpasswd=make_htpasswd(tmp_path / "htpasswd"))
    image = synthetic_image(BlobStore(tmp_path / "store"), "config-auth")
    config_dir = Path(os.environ["DOCKER_CONFIG"])
    config_dir.mkdir(parents=True)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (config_dir / "config.json").write_text(json.dumps({"auths": {address: {"auth": token}}}))
    assert registry.push(image, f"{address}/private/cfg:1") == image.manifest_digest


def test_registry_not_running(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    image = synthetic_image(BlobStore(tmp_path / "store"), "down")
    with pytest.raises(PublishError, match="is unreachable") as caught:
        registry.push(image, f"{address}/team/app:1")
    assert "is it running?" in caught.value.message
    # Loopback registries get plain HTTP already; the insecure-registry hint would mislead.
    assert "PYDEPLOY_INSECURE_REGISTRIES" not in caught.value.message


def test_skopeo_reads_the_pushed_image_and_the_oci_layout(
    start_registry: StartRegistry, tmp_path: Path
) -> None:
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        pytest.skip("skopeo is not installed (optional cross-check: apt-get install -y skopeo)")
    address = start_registry()
    image = synthetic_image(BlobStore(tmp_path / "store"), "skopeo")
    registry.push(image, f"{address}/team/app:1.0")
    layout = tmp_path / "layout"
    write_oci_layout(layout, image, "1.0")
    expected_layers = [layer.digest for layer in image.layers]
    for source in (f"docker://{address}/team/app:1.0", f"oci:{layout}:1.0"):
        result = subprocess.run(
            [skopeo, "inspect", "--tls-verify=false", source],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        assert info["Digest"] == image.manifest_digest
        assert info["Layers"] == expected_layers
        assert info["Labels"] == {"org.opencontainers.image.title": "skopeo"}
        config = subprocess.run(
            [skopeo, "inspect", "--tls-verify=false", "--config", "--raw", source],
            capture_output=True,
            check=True,
            timeout=120,
        ).stdout
        assert config == image.config


def stored_bytes(address_root: Path) -> int:
    """What the registry's storage holds in blobs: its growth is what a push uploaded."""
    blobs = address_root / "data" / "docker" / "registry" / "v2" / "blobs"
    return sum(path.stat().st_size for path in blobs.rglob("*") if path.is_file())


def test_adding_a_dependency_uploads_only_the_layers_it_changed(
    start_registry: StartRegistry, tmp_path: Path, base_image: str, resources: Resources
) -> None:
    """Through a real registry's storage: a small dependency added to the FastAPI example
    re-uploads one dependency group (and the app layer, which holds pyproject.toml), not
    the venv; a code-only change uploads the app layer, config and manifest."""
    address = start_registry()
    project = tmp_path / "fastapi-app"
    shutil.copytree(FASTAPI, project)
    cache = tmp_path / "cache"

    def build(tag: str) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "pydeploy", "build", str(project), "--base", base_image,
             "--network", "host", "--tag", f"{address}/team/deps:{tag}", "--output", "registry",
             "--json"],
            capture_output=True, text=True, check=False, timeout=900,
            env={**os.environ, "PYDEPLOY_CACHE_DIR": str(cache)},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
        result: dict[str, Any] = json.loads(proc.stdout)
        if not result["dependencies"]["cached"] and tag != "1":
            resources.volume(result["dependencies"]["volume"])  # this test's own venv
        return result

    def layers(result: dict[str, Any]) -> dict[str, tuple[str, int]]:
        return {la["role"]: (la["digest"], la["size"]) for la in result["layers"]}

    first = build("1")
    before = stored_bytes(tmp_path / "registry-0")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('["fastapi>=0.110"]', '["fastapi>=0.110", "itsdangerous"]')
    )
    second = build("2")
    grown = stored_bytes(tmp_path / "registry-0") - before
    assert any(p.startswith("itsdangerous==") for p in second["dependencies"]["pins"])
    old, new = layers(first), layers(second)
    changed = sorted(role for role in new if old.get(role) != new[role])
    assert len([r for r in changed if r.startswith("dependencies-group-")]) == 1, changed
    assert set(changed) - {"app"} <= {r for r in changed if r.startswith("dependencies-group-")}
    deps_total = sum(size for role, (_d, size) in new.items() if role.startswith("dependencies-"))
    changed_bytes = sum(new[role][1] for role in changed)
    # The changed layers, the config and the manifest; far from the whole venv.
    assert changed_bytes <= grown <= changed_bytes + 64 * 1024
    assert grown < deps_total / 2

    (project / "main.py").write_text((project / "main.py").read_text() + "\nX = 1\n")
    third = build("3")
    grown = stored_bytes(tmp_path / "registry-0") - before - grown
    changed = sorted(
        role for role in layers(third) if layers(second).get(role) != layers(third)[role]
    )
    assert changed == ["app"]
    assert grown <= layers(third)["app"][1] + 64 * 1024
