"""The registry as the shared build cache, on the real engine and the session registry.

A "fresh runner" is what a CI job starts with: its own empty host cache
(PYDEPLOY_CACHE_DIR) and an engine without the project's venv volume (removed after the
build that made it). The project's dependency set is this module's own (fastapi plus
itsdangerous), so removing its volume touches no other test's."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import MultiPlatformBase, Resources, RunPydeploy, WaitHttp

FASTAPI = Path(__file__).resolve().parents[2] / "examples" / "fastapi-app"
ARTIFACT_TYPE = "application/vnd.pydeploy.cache.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _copy(dest: Path, *, table: str = "", after: str = "") -> Path:
    """The FastAPI example with this module's own dependency set (itsdangerous added),
    `table` added to its [tool.pydeploy] table and `after` to the end of the file."""
    shutil.copytree(FASTAPI, dest)
    pyproject = dest / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    text = text.replace('"fastapi>=0.110"', '"fastapi>=0.110", "itsdangerous"')
    text = text.replace('app = "main:app"', f'app = "main:app"{table}')
    pyproject.write_text(text + after, encoding="utf-8")
    return dest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    # A small runtime package the base lacks: its apt layer is recorded too.
    return _copy(tmp_path / "fastapi-app", table='\nruntime-packages = ["libyaml-0-2"]')


class Runner:
    """One CI runner: its own host cache; builds the project with the engine's state as
    the test leaves it."""

    def __init__(self, root: Path, run_pydeploy: RunPydeploy, base_image: str) -> None:
        self.cache = root
        self._run, self._base = run_pydeploy, base_image
        # Builds without an engine install with uv on the host: its cache is the runner's.
        self.env = {"PYDEPLOY_CACHE_DIR": str(root), "UV_CACHE_DIR": str(root / "uv")}

    def build(self, project: Path, *args: str, base: str = "") -> tuple[dict[str, Any], str]:
        proc = self._run(
            "build", str(project), "--json", "--base", base or self._base, *args, cwd=project,
            env={**os.environ, **self.env},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
        result: dict[str, Any] = json.loads(proc.stdout)
        return result, proc.stderr


@pytest.fixture
def runners(tmp_path: Path, run_pydeploy: RunPydeploy, base_image: str) -> Any:
    count = iter(range(100))
    return lambda: Runner(tmp_path / f"runner-{next(count)}", run_pydeploy, base_image)


def _forget_volume(
    client: docker.DockerClient, resources: Resources, result: dict[str, Any]
) -> None:
    """What a fresh runner's engine lacks: the venv volume this build filled (if any: a
    restore that needed none made none)."""
    name = resources.volume(result["dependencies"]["volume"])
    with contextlib.suppress(docker.errors.NotFound):
        client.volumes.get(name).remove(force=True)


def _dependency_digests(result: dict[str, Any]) -> list[str]:
    return [la["digest"] for la in result["layers"] if la["role"].startswith("dependencies")]


def _records(registry: str, repository: str, kind: str) -> list[str]:
    from tests.integration.conftest import http_get

    status, body = http_get(f"http://{registry}/v2/{repository}/tags/list")
    assert status == 200, body
    return sorted(t for t in json.loads(body)["tags"] if t.startswith(f"pydeploy-cache-{kind}-"))


def test_a_fresh_runner_reuses_the_recorded_layers_and_builds_the_same_image(
    project: Path,
    runners: Any,
    registry: str,
    docker_client: docker.DockerClient,
    resources: Resources,
    free_port: int,
    wait_http: WaitHttp,
) -> None:
    from tests.integration.conftest import registry_get

    repository = f"pydeploy-test/cache-{uuid.uuid4().hex[:12]}"
    first, _ = runners().build(project, "--tag", f"{registry}/{repository}:1", "--push")
    # Pushing: the push repository is the cache by default; both records were written.
    assert first["cache"]["to"] == f"{registry}/{repository}"
    assert first["cache"]["saved"] == ["base", "libs", "system", "venv"]
    (venv_tag,) = _records(registry, repository, "venv")
    assert len(_records(registry, repository, "system")) == 1
    data, media_type = registry_get(f"{registry}/{repository}:{venv_tag}", (MANIFEST,))
    record = json.loads(data)
    assert media_type == MANIFEST
    assert record["artifactType"] == ARTIFACT_TYPE
    # The record names the image's own dependency blobs (stored once in the repository).
    assert [la["digest"] for la in record["layers"]] == _dependency_digests(first)
    assert (
        json.loads(record["annotations"]["io.pydeploy.cache.document"])["pins"]
        == first["dependencies"]["pins"]
    )
    _forget_volume(docker_client, resources, first)

    # A code-only change on a fresh runner: nothing is installed, apt does not run.
    (project / "main.py").write_text(
        (project / "main.py").read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8"
    )
    tag = resources.image(f"{registry}/{repository}:2")
    second, log = runners().build(project, "--tag", tag, "--push", "--output", "docker")
    assert second["cache"]["restored"] == ["base", "libs", "system", "venv"]
    assert second["cache"]["saved"] == [], "the records were there already"
    # The layers and the library check's answer were recorded: no venv volume is made.
    assert "restored from the registry cache" in log
    assert "layers only: no venv volume needed" in log
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(second["dependencies"]["volume"])
    assert "resolve:" not in log, "uv did not run"
    assert "runtime packages: cached" in log
    assert _dependency_digests(second) == _dependency_digests(first)
    container = resources.create(tag, environment={"PORT": str(free_port)})
    container.start()
    assert json.loads(wait_http(f"http://127.0.0.1:{free_port}/", timeout=60))
    container.remove(force=True)

    # The same code built on a third fresh runner without any cache: the same image.
    _forget_volume(docker_client, resources, second)
    third, log = runners().build(
        project, "--tag", "cache-test:3", "--output", f"oci:{project.parent / 'oci'}"
    )
    assert third["cache"] == {"from": None, "to": None, "restored": [], "saved": []}
    assert "resolve:" in log
    assert third["manifest_digest"] == second["manifest_digest"]
    assert third["image_id"] == second["image_id"]


def test_a_foreign_damaged_or_unreachable_cache_is_a_normal_build(
    project: Path,
    runners: Any,
    registry: str,
    docker_client: docker.DockerClient,
    resources: Resources,
) -> None:
    from tests.integration.conftest import (
        registry_get,
        registry_put_manifest,
    )

    repository = f"pydeploy-test/cache-{uuid.uuid4().hex[:12]}"
    cache = f"{registry}/{repository}-cache"
    first, _ = runners().build(
        project,
        "--tag",
        f"{registry}/{repository}:1",
        "--push",
        "--cache-to",
        cache,
        "--cache-from",
        cache,
    )
    assert first["cache"]["saved"] == ["base", "libs", "system", "venv"]
    (venv_tag,) = _records(registry, f"{repository}-cache", "venv")
    record_ref = f"{cache}:{venv_tag}"
    record, _ = registry_get(record_ref, (MANIFEST,))
    image_manifest, _ = registry_get(f"{registry}/{repository}:1", (MANIFEST,))
    _forget_volume(docker_client, resources, first)

    # Foreign: the tag holds an ordinary image manifest (its blobs are in that repository).
    registry_put_manifest(f"{registry}/{repository}:{venv_tag}", image_manifest, MANIFEST)
    foreign = f"{registry}/{repository}"
    built, log = runners().build(project, "--tag", "cache-test:foreign", "--cache-from", foreign)
    assert "not a pydeploy cache record" in log
    assert built["dependencies"]["cached"] is False
    assert built["image_id"] == first["image_id"]
    _forget_volume(docker_client, resources, built)

    # Damaged: a layer's diff ID is not what its blob unpacks to.
    document = json.loads(record)
    wrong = "sha256:" + hashlib.sha256(b"not this layer").hexdigest()
    document["layers"][0]["annotations"]["io.pydeploy.cache.diff-id"] = wrong
    damaged = json.dumps(document).encode()
    registry_put_manifest(record_ref, damaged, MANIFEST)
    runner = runners()
    built, log = runner.build(project, "--tag", "cache-test:damaged", "--cache-from", cache)
    assert "does not unpack to its diff ID" in log
    assert built["dependencies"]["cached"] is False
    assert built["image_id"] == first["image_id"], "the damaged record left no trace"
    _forget_volume(docker_client, resources, built)

    # Unreachable: nothing answers on that port.
    from tests.integration.conftest import find_free_port

    nowhere = f"127.0.0.1:{find_free_port()}/nothing"
    built, log = runners().build(project, "--tag", "cache-test:nowhere", "--cache-from", nowhere)
    assert f"registry cache {nowhere} not read" in log
    assert built["image_id"] == first["image_id"]
    for tag in ("foreign", "damaged", "nowhere"):
        resources.image(f"cache-test:{tag}")


def test_a_fresh_runner_without_an_engine_reuses_the_recorded_venv(
    tmp_path: Path,
    runners: Any,
    registry: str,
    multiplatform_base: MultiPlatformBase,
    unreachable_engine: str,
) -> None:
    project = _copy(tmp_path / "no-engine")
    repository = f"{registry}/pydeploy-test/cache-{uuid.uuid4().hex[:12]}"
    base = multiplatform_base.reference
    first_runner, second_runner = runners(), runners()
    for runner in (first_runner, second_runner):
        runner.env["DOCKER_HOST"] = unreachable_engine
    first, _ = first_runner.build(project, "--tag", f"{repository}:1", "--push", base=base)
    assert first["path"] == "host"
    assert first["cache"]["saved"] == ["venv"]
    second, log = second_runner.build(project, "--tag", f"{repository}:2", "--push", base=base)
    assert second["cache"]["restored"] == ["venv"]
    assert "restored into" in log
    assert "resolve:" not in log, "uv did not run"
    assert second["check"]["status"] == "passed", "the host check imported the restored venv"
    assert second["manifest_digest"] == first["manifest_digest"]


def test_a_push_only_build_leaves_the_recorded_layers_in_the_registry(
    tmp_path: Path,
    runners: Any,
    registry: str,
    multiplatform_base: MultiPlatformBase,
    unreachable_engine: str,
) -> None:
    """Nothing reads the dependency layers' bytes when the check is skipped and the image
    is only pushed: a fresh runner pushes them by reference (mounted from the cache
    repository, or already there) and never downloads them."""
    project = _copy(tmp_path / "push-only", after="\n[tool.pydeploy.check]\nskip = true\n")
    repository = f"{registry}/pydeploy-test/cache-{uuid.uuid4().hex[:12]}"
    base = multiplatform_base.reference
    first_runner, second_runner, third_runner = runners(), runners(), runners()
    for runner in (first_runner, second_runner, third_runner):
        runner.env["DOCKER_HOST"] = unreachable_engine
    first, _ = first_runner.build(project, "--tag", f"{repository}:1", "--push", base=base)
    assert first["cache"]["saved"] == ["venv"]
    deps = [la for la in first["layers"] if la["role"].startswith("dependencies")]

    def downloaded(runner: Runner) -> list[str]:
        blobs = runner.cache / "blobs" / "sha256"
        return [la["role"] for la in deps if (blobs / la["digest"].split(":")[1]).exists()]

    second, log = second_runner.build(project, "--tag", f"{repository}:2", "--push", base=base)
    assert second["cache"]["restored"] == ["venv"]
    assert "layers left there: only pushed" in log
    assert downloaded(second_runner) == []
    assert second["manifest_digest"] == first["manifest_digest"]
    # Another repository of the registry: the layers are mounted from the cache's.
    elsewhere = f"{registry}/pydeploy-test/cache-{uuid.uuid4().hex[:12]}-other"
    third, log = third_runner.build(
        project, "--tag", f"{elsewhere}:1", "--push", "--cache-from", repository, base=base
    )
    mounted = re.search(r"(\d+) mounted from other repositories", log)
    assert mounted is not None, log
    assert int(mounted.group(1)) >= len(deps), log
    assert downloaded(third_runner) == []
    assert third["manifest_digest"] == first["manifest_digest"]
