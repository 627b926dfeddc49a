"""Builds with the engine made unreachable (DOCKER_HOST names a socket nobody listens on):
the base comes from the session registry, an OCI layout or a docker-archive, the wheels
are installed on this host, the app is checked by a host interpreter, and the image goes
to the registry or a file. With the engine back, the image is pulled (or loaded), run,
and answers HTTP: a green engine-free build is a working container."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import (
        MultiPlatformBase,
        OciBaseLayout,
        Resources,
        RunPydeploy,
        WaitHttp,
    )

FASTAPI = Path(__file__).resolve().parents[2] / "examples" / "fastapi-app"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    dest = tmp_path / "fastapi-app"
    shutil.copytree(FASTAPI, dest)
    return dest


def _build(
    run_pydeploy: RunPydeploy, project: Path, docker_host: str, *args: str
) -> dict[str, Any]:
    proc = run_pydeploy(
        "build", str(project), "--json", *args, cwd=project,
        env={**os.environ, "DOCKER_HOST": docker_host},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _serve(resources: Resources, image: str, free_port: int, wait_http: WaitHttp) -> dict[str, Any]:
    container = resources.create(image, environment={"PORT": str(free_port)})
    container.start()
    body = wait_http(f"http://127.0.0.1:{free_port}/", timeout=60)
    container.remove(force=True)
    answer: dict[str, Any] = json.loads(body)
    return answer


def test_a_build_without_an_engine_pushes_an_image_that_runs(
    project: Path,
    multiplatform_base: MultiPlatformBase,
    registry: str,
    unreachable_engine: str,
    run_pydeploy: RunPydeploy,
    docker_client: docker.DockerClient,
    resources: Resources,
    free_port: int,
    wait_http: WaitHttp,
) -> None:
    ref = f"{registry}/pydeploy-test/no-engine:{uuid.uuid4().hex[:12]}"
    # The base is the registry's multi-platform index: the amd64 manifest is picked.
    result = _build(
        run_pydeploy, project, unreachable_engine, "--base", multiplatform_base.reference,
        "--tag", ref, "--push",
    )  # fmt: skip
    assert result["path"] == "host"
    assert result["platform"] == "linux/amd64"
    assert result["check"]["status"] == "passed"
    assert result["check"]["where"] == "host", "no engine: the host interpreter checked it"
    assert result["interface"] == "asgi"
    assert result["pushed"][ref] == result["manifest_digest"]
    assert result["base_image"] == multiplatform_base.reference
    # The base's own layers are the amd64 manifest's, fetched by the registry API.
    base_layers = [la for la in result["layers"] if la["role"] == "base"]
    assert base_layers, "the base's blobs were read: its layers have digests"

    resources.image(ref)
    pulled = docker_client.images.pull(ref)
    assert pulled.id == result["image_id"]
    assert _serve(resources, ref, free_port, wait_http)["app"] == "fastapi-app"

    # A second build with nothing changed uses the host cache: no install, same image.
    again = _build(
        run_pydeploy, project, unreachable_engine, "--base", multiplatform_base.reference,
        "--tag", ref, "--push",
    )  # fmt: skip
    assert again["dependencies"]["cached"] is True
    assert again["check"]["cached"] is True
    assert again["manifest_digest"] == result["manifest_digest"]


def test_bases_from_an_oci_layout_and_an_archive_give_files_that_run(
    project: Path,
    oci_base_layout: OciBaseLayout,
    docker_archive_base: Path,
    unreachable_engine: str,
    run_pydeploy: RunPydeploy,
    resources: Resources,
    tmp_path: Path,
    free_port: int,
    wait_http: WaitHttp,
) -> None:
    tag = f"pydeploy-test/no-engine-files:{uuid.uuid4().hex[:12]}"
    layout = tmp_path / "out-oci"
    from_layout = _build(
        run_pydeploy, project, unreachable_engine, "--base", oci_base_layout.reference,
        "--tag", tag, "--output", f"oci:{layout}",
    )  # fmt: skip
    archive = tmp_path / "out.tar"
    from_archive = _build(
        run_pydeploy, project, unreachable_engine,
        "--base", f"docker-archive:{docker_archive_base}",
        "--tag", tag, "--output", f"docker-archive:{archive}",
    )  # fmt: skip
    assert from_layout["path"] == from_archive["path"] == "host"
    # skopeo's OCI copy of the base keeps its layers: the same dependency and app layers
    # stand on the same base either way.
    own = [[la["diff_id"] for la in r["layers"] if la["role"] != "base"]
           for r in (from_layout, from_archive)]  # fmt: skip
    assert own[0] == own[1]

    inspected = subprocess.run(
        ["skopeo", "inspect", f"oci:{layout}:{tag.rsplit(':', 1)[1]}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Digest"] == from_layout["manifest_digest"]

    # With the engine back: the docker-archive loads and serves.
    with archive.open("rb") as handle:
        (loaded,) = resources.client.images.load(handle.read())
    image_id = str(loaded.id)
    resources.image(image_id)
    assert image_id == from_archive["image_id"]
    assert _serve(resources, image_id, free_port, wait_http)["app"] == "fastapi-app"


def test_a_dependency_without_a_wheel_names_the_package_and_the_ways_out(
    project: Path,
    oci_base_layout: OciBaseLayout,
    unreachable_engine: str,
    run_pydeploy: RunPydeploy,
    tmp_path: Path,
) -> None:
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    # psycopg2 publishes only an sdist: it needs a compiler, so a builder container.
    pyproject.write_text(text.replace("dependencies = [", 'dependencies = [\n  "psycopg2==2.9.9",'))
    proc = run_pydeploy(
        "build", str(project), "--base", oci_base_layout.reference, "--output",
        f"oci:{tmp_path / 'out'}", cwd=project,
        env={**os.environ, "DOCKER_HOST": unreachable_engine},
    )  # fmt: skip
    assert proc.returncode == 5, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "`psycopg2` has no wheel for x86_64-manylinux_2_36" in proc.stderr
    assert "DOCKER_HOST" in proc.stderr
    assert not (tmp_path / "out").exists(), "nothing half-written"


def test_the_docker_output_without_an_engine_is_refused_before_any_work(
    project: Path, unreachable_engine: str, run_pydeploy: RunPydeploy
) -> None:
    proc = run_pydeploy(
        "build", str(project), cwd=project, env={**os.environ, "DOCKER_HOST": unreachable_engine}
    )
    assert proc.returncode == 3, proc.stderr
    assert f"No Docker engine answers at {unreachable_engine}" in proc.stderr
    assert "The output `docker` (the default) loads the image into an engine" in proc.stderr
    assert "--push" in proc.stderr
    assert "Traceback" not in proc.stderr
    plan = run_pydeploy(
        "plan", str(project), "--push", cwd=project,
        env={**os.environ, "DOCKER_HOST": unreachable_engine},
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert "path: host" in plan.stdout
    assert "no engine answers" in plan.stdout


def test_the_host_check_refuses_writes_as_the_read_only_image_does(
    tmp_path: Path,
    oci_base_layout: OciBaseLayout,
    unreachable_engine: str,
    run_pydeploy: RunPydeploy,
) -> None:
    """The host interpreter could write anywhere (and this suite runs as root): the check
    confines the app's writes to /tmp and `writable`, so an app that creates ./instance
    and ./logs at import fails here as it would in the image, with the same paragraph."""
    project = tmp_path / "writes_app"
    shutil.copytree(Path(__file__).resolve().parents[1] / "fixtures" / "writes_app", project)
    env = {**os.environ, "DOCKER_HOST": unreachable_engine}
    args = ("build", str(project), "--base", oci_base_layout.reference,
            "--output", f"oci:{tmp_path / 'out'}")  # fmt: skip
    refused = run_pydeploy(*args, cwd=project, env=env)
    assert refused.returncode == 7, refused.stderr
    assert "The app writes /app/instance when it is imported" in refused.stderr
    assert 'writable = ["instance"]' in refused.stderr
    assert not (project / "instance").exists(), "nothing was written into the project"
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            'app = "app:create_app()"', 'app = "app:create_app()"\nwritable = ["instance", "logs"]'
        )
    )
    built = run_pydeploy(*args, "--json", cwd=project, env=env)
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["check"]["where"] == "host"


def test_a_packaged_project_gets_its_own_wheel_without_an_engine(
    tmp_path: Path,
    multiplatform_base: MultiPlatformBase,
    registry: str,
    unreachable_engine: str,
    run_pydeploy: RunPydeploy,
    docker_client: docker.DockerClient,
    resources: Resources,
    free_port: int,
) -> None:
    """A src-layout project with a build system: its wheel is built on the host and
    installed into the app layer's site-packages; the image imports it from there."""
    project = tmp_path / "pkapp"
    (project / "src" / "pkapp").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "pkapp"\nversion = "0.1.0"\nrequires-python = ">=3.10"\n'
        'dependencies = ["fastapi>=0.110"]\n\n'
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[tool.pydeploy]\napp = "pkapp.main:app"\n',
        encoding="utf-8",
    )
    (project / "src" / "pkapp" / "__init__.py").write_text("", encoding="utf-8")
    (project / "src" / "pkapp" / "main.py").write_text(
        "from fastapi import FastAPI\n\napp = FastAPI()\n\n\n"
        '@app.get("/")\ndef root() -> dict[str, str]:\n    return {"app": "pkapp"}\n',
        encoding="utf-8",
    )
    ref = f"{registry}/pydeploy-test/no-engine-pkapp:{uuid.uuid4().hex[:12]}"
    result = _build(
        run_pydeploy, project, unreachable_engine, "--base", multiplatform_base.reference,
        "--tag", ref, "--push",
    )  # fmt: skip
    assert result["check"]["status"] == "passed"
    resources.image(ref)
    docker_client.images.pull(ref)
    site = "/opt/venv/lib/python3.11/site-packages"
    listed = resources.run(ref, ["/bin/sh", "-c", f"ls {site} | grep pkapp"])
    assert listed.exit_code == 0, listed.output
    assert "pkapp-0.1.0.dist-info" in listed.output
    container = resources.create(ref, environment={"PORT": str(free_port)})
    container.start()
    from tests.integration.conftest import wait_http

    assert json.loads(wait_http(f"http://127.0.0.1:{free_port}/", timeout=60)) == {"app": "pkapp"}
