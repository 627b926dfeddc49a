"""Podman as the engine (issue 15): `pydeploy build` against Podman's Docker-compatible
API service (the `podman_engine` fixture: a private `podman system service`), the image
run through that same API with host networking, and HTTP answered on loopback.

Every build gets a host cache of this module alone, so nothing built through the shared
Docker engine (the app check's verdict, the shared-library scan) stands in for work that
Podman must do itself.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import PodmanEngine, RunPydeploy, WaitHttp

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO_ROOT / "examples"
TEST_LABELS = {"pydeploy.test": "1"}
START_TIMEOUT = 45.0  # image start to first 200 on a loaded 2-core machine


@pytest.fixture(scope="module")
def podman_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("podman-cache")


def _build(
    run_pydeploy: RunPydeploy, podman: PodmanEngine, cache: Path, project: Path, tag: str
) -> dict[str, Any]:
    """`pydeploy build PROJECT --json` with DOCKER_HOST at Podman: the result document."""
    env = {**os.environ, "DOCKER_HOST": podman.host, "PYDEPLOY_CACHE_DIR": str(cache)}
    proc = run_pydeploy(
        "build", str(project), "--base", podman.base_image, "--network", "host",
        "--tag", tag, "--json", cwd=REPO_ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, f"build against Podman failed:\n{proc.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(proc.stdout)
    assert tag in result["tags"]
    return result


def _serve(podman: PodmanEngine, tag: str, port: int, wait_http: WaitHttp) -> str:
    """Run the image through Podman's API (host network, PORT), return GET /'s body, and
    remove the container whatever happens."""
    container = podman.client.containers.run(
        tag, detach=True, network_mode="host", environment={"PORT": str(port)},
        labels=TEST_LABELS,
    )  # fmt: skip
    try:
        try:
            return wait_http(f"http://127.0.0.1:{port}/", timeout=START_TIMEOUT)
        except TimeoutError as exc:
            logs = container.logs().decode("utf-8", "replace")[-2000:]
            pytest.fail(f"{exc}\ncontainer output:\n{logs}", pytrace=False)
    finally:
        container.remove(force=True, v=True)


@pytest.fixture
def fastapi_project(tmp_path: Path) -> Path:
    project = tmp_path / "fastapi-app"
    shutil.copytree(EXAMPLES_DIR / "fastapi-app", project)
    return project


def _own_layers(result: dict[str, Any]) -> dict[str, str]:
    return {la["role"]: la["digest"] for la in result["layers"] if la["role"] != "base"}


def test_fastapi_app_builds_and_serves_on_podman_and_a_code_change_rebuilds_the_app_layer(
    podman_engine: PodmanEngine,
    podman_cache: Path,
    run_pydeploy: RunPydeploy,
    fastapi_project: Path,
    free_port: int,
    wait_http: WaitHttp,
) -> None:
    tag = f"pydeploy-test/podman-fastapi:{uuid.uuid4().hex[:12]}"
    first = _build(run_pydeploy, podman_engine, podman_cache, fastapi_project, tag)
    # The app check ran in Podman (the cache is this module's: nothing to reuse).
    assert (first["check"]["status"], first["check"]["cached"]) == ("passed", False)
    assert podman_engine.client.images.get(tag).id == first["image_id"]
    body = json.loads(_serve(podman_engine, tag, free_port, wait_http))
    assert body == {"app": "fastapi-app", "message": "hello"}

    main = fastapi_project / "main.py"
    main.write_text(
        main.read_text(encoding="utf-8").replace('"message": "hello"', '"message": "changed"'),
        encoding="utf-8",
    )
    second = _build(run_pydeploy, podman_engine, podman_cache, fastapi_project, tag)
    assert second["dependencies"]["cached"] is True
    before, after = _own_layers(first), _own_layers(second)
    assert {role for role in before if before[role] != after.get(role)} == {"app"}
    assert podman_engine.client.images.get(tag).id == second["image_id"] != first["image_id"]
    body = json.loads(_serve(podman_engine, tag, free_port, wait_http))
    assert body == {"app": "fastapi-app", "message": "changed"}


def test_flask_app_with_system_packages_and_build_commands_builds_and_serves_on_podman(
    podman_engine: PodmanEngine,
    podman_cache: Path,
    run_pydeploy: RunPydeploy,
    tmp_path: Path,
    free_port: int,
    wait_http: WaitHttp,
) -> None:
    """The system layer (apt in a container, read back by `docker export` and `docker
    diff`) and the build layer (a build command's output, by diff and archive)."""
    project = tmp_path / "flask-app"
    shutil.copytree(EXAMPLES_DIR / "flask-app", project)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text(encoding="utf-8").replace(
            'app = "app:app"\n',
            'app = "app:app"\nruntime-packages = ["libpq5"]\n'
            'build-commands = ["mkdir -p built && echo from-build > built/out.txt"]\n',
        ),
        encoding="utf-8",
    )
    tag = f"pydeploy-test/podman-flask:{uuid.uuid4().hex[:12]}"
    result = _build(run_pydeploy, podman_engine, podman_cache, project, tag)
    assert result["interface"] == "wsgi"
    assert {"system", "build"} <= set(_own_layers(result))
    body = json.loads(_serve(podman_engine, tag, free_port, wait_http))
    assert body == {"app": "flask-app", "message": "hello"}
    # A one-off command in the image: the build command's file, libpq from the system layer.
    container = podman_engine.client.containers.create(
        tag, ["/bin/sh", "-c", "cat /app/built/out.txt && ls /usr/lib/*/libpq.so.5"],
        network_mode="none", labels=TEST_LABELS,
    )  # fmt: skip
    try:
        container.start()
        status = container.wait(timeout=60)
        output = container.logs().decode("utf-8", "replace")
    finally:
        container.remove(force=True, v=True)
    assert status["StatusCode"] == 0, output
    assert output.startswith("from-build\n")
    assert "libpq.so.5" in output
