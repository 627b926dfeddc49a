"""A multi-platform build (linux/amd64 and linux/arm64) from the session registry's
multi-platform test base: one OCI image index, validated by skopeo; aarch64 wheels in the
arm64 image and x86-64 ones in the amd64 image; the app and launcher layers shared with
identical digests; the same inputs give the same index digest; and the arm64 image,
pulled by digest, runs under QEMU user emulation and answers HTTP."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import (
        ElfMachines,
        MultiPlatformBase,
        ReadIndex,
        Resources,
        RunPydeploy,
        WaitHttp,
    )

FASTAPI = Path(__file__).resolve().parents[2] / "examples" / "fastapi-app"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ELF_X86_64, ELF_AARCH64 = 0x3E, 0xB7
PLATFORMS = "linux/amd64,linux/arm64"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    dest = tmp_path / "fastapi-app"
    shutil.copytree(FASTAPI, dest)
    return dest


def _build(run_pydeploy: RunPydeploy, project: Path, *args: str) -> dict[str, Any]:
    proc = run_pydeploy("build", str(project), "--json", *args, cwd=project, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _layers(result: dict[str, Any], role: str) -> str:
    (layer,) = [la for la in result["layers"] if la["role"] == role]
    digest: str = layer["digest"]
    return digest


def test_two_platforms_give_one_index_and_the_arm64_image_serves(
    project: Path,
    multiplatform_base: MultiPlatformBase,
    registry: str,
    run_pydeploy: RunPydeploy,
    read_index: ReadIndex,
    elf_machines: ElfMachines,
    docker_client: docker.DockerClient,
    resources: Resources,
    free_port: int,
    wait_http: WaitHttp,
) -> None:
    ref = f"{registry}/pydeploy-test/multi:{uuid.uuid4().hex[:12]}"
    base = multiplatform_base.reference
    result = _build(run_pydeploy, project, "--base", base, "--platform", PLATFORMS,
                    "--tag", ref, "--push")  # fmt: skip
    assert result["pushed"][ref] == result["index_digest"]
    amd64, arm64 = result["platforms"]
    assert amd64["platform"] == "linux/amd64"
    # The arm64 base says variant v8, as public arm64 images do: the image keeps it.
    assert arm64["platform"] == "linux/arm64/v8"
    # The engine runs amd64 natively: the one check ran there, and settles both launchers.
    assert amd64["check"] == arm64["check"]
    assert amd64["check"]["where"] == "image"

    index = read_index(ref)
    assert index.digest == result["index_digest"]
    assert index.manifests == {"linux/amd64": amd64["manifest_digest"],
                               "linux/arm64/v8": arm64["manifest_digest"]}  # fmt: skip
    # Each image stands on its own platform's base manifest.
    assert index.configs["linux/arm64/v8"]["Architecture"] == "arm64"
    # Each platform's image has its own SBOM attached (its subject: that image's manifest).
    for entry in (amd64, arm64):
        (attested,) = entry["attestations"]
        pinned_ref = f"registry:{ref.rsplit(':', 1)[0]}@{entry['manifest_digest']}"
        shown = run_pydeploy("inspect", pinned_ref, "--json", cwd=project, env=dict(os.environ))
        assert shown.returncode == 0, shown.stderr
        (referrer,) = json.loads(shown.stdout)["referrers"]
        assert referrer["digest"] == attested["digest"]
        assert referrer["components"] > len(entry["dependencies"]["pins"])  # + the base

    # The wheels are each platform's: every ELF file of the venv is for that machine.
    for platform, machine in (("linux/amd64", ELF_X86_64), ("linux/arm64", ELF_AARCH64)):
        found = elf_machines(ref, platform=platform, under="/opt/venv")
        assert found, f"{platform}: no compiled extension in the venv (pydantic-core has one)"
        wrong = {path: hex(m) for path, m in found.items() if m != machine}
        assert not wrong, f"{platform}: ELF files for another machine: {wrong}"

    # The app and launcher layers are the same bytes on both; the dependencies are not.
    for role in ("app", "launcher", "user"):
        assert _layers(amd64, role) == _layers(arm64, role), role
    assert _layers(amd64, "dependencies-pydantic-core") != _layers(
        arm64, "dependencies-pydantic-core"
    )

    # Reproducible: the same inputs give the same index (from the host cache this time).
    again = _build(run_pydeploy, project, "--base", base, "--platform", PLATFORMS,
                   "--tag", ref, "--push")  # fmt: skip
    assert again["index_digest"] == result["index_digest"]

    # The arm64 image runs under emulation (binfmt_misc + qemu-user-static) and serves.
    pinned = f"{ref.rsplit(':', 1)[0]}@{arm64['manifest_digest']}"
    resources.image(pinned)
    pulled = docker_client.images.pull(pinned, platform="linux/arm64")
    assert pulled.attrs["Architecture"] == "arm64"
    container = resources.create(pinned, environment={"PORT": str(free_port)})
    container.start()
    body = wait_http(f"http://127.0.0.1:{free_port}/", timeout=120)
    assert json.loads(body)["app"] == "fastapi-app"
    probe = ["/opt/venv/bin/python", "-c", "import platform; print(platform.machine())"]
    ran = resources.run(pinned, entrypoint=probe)
    assert ran.output.strip() == "aarch64"
    container.remove(force=True)


def test_an_index_needs_an_output_that_holds_one(
    project: Path, multiplatform_base: MultiPlatformBase, run_pydeploy: RunPydeploy
) -> None:
    proc = run_pydeploy(
        "build", str(project), "--base", multiplatform_base.reference, "--platform", PLATFORMS,
        cwd=project, env=dict(os.environ),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "--output docker" in proc.stderr
    assert "--push" in proc.stderr


def _cache_objects(client: docker.DockerClient) -> tuple[set[str], set[str]]:
    """pydeploy's images (the base loaded for a builder, builder images) and venv volumes."""
    images = {
        tag
        for image in client.images.list()
        for tag in image.tags
        if tag.startswith(("pydeploy-base:", "pydeploy-builder:"))
    }
    volumes = {
        str(v.name) for v in client.volumes.list() if str(v.name).startswith("pydeploy-venv-")
    }
    return images, volumes


def test_a_compiled_local_package_for_arm64_builds_in_an_emulated_builder(
    tmp_path: Path,
    multiplatform_base: MultiPlatformBase,
    registry: str,
    run_pydeploy: RunPydeploy,
    elf_machines: ElfMachines,
    docker_client: docker.DockerClient,
    resources: Resources,
) -> None:
    """No wheel can exist for a local C extension: the arm64 image's one is compiled in a
    builder container of the arm64 base (gcc installed by apt), under QEMU; the app check
    runs in the arm64 image, emulated too (app.py calls the extension at import)."""
    project = tmp_path / "cext_app"
    shutil.copytree(FIXTURES / "cext_app", project)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            'app = "app:app"', 'app = "app:app"\nbuild-packages = ["gcc", "libc6-dev"]'
        )
    )
    ref = f"{registry}/pydeploy-test/cext-arm64:{uuid.uuid4().hex[:12]}"
    images, volumes = _cache_objects(docker_client)
    try:
        proc = run_pydeploy(
            "build", str(project), "--json", "--base", multiplatform_base.reference,
            "--platform", "linux/arm64", "--network", "host", "--tag", ref, "--push",
            cwd=project, env=dict(os.environ),
        )  # fmt: skip
    finally:  # what this build added to pydeploy's engine caches goes with the test
        now_images, now_volumes = _cache_objects(docker_client)
        for tag in now_images - images:
            resources.image(tag)
        for name in now_volumes - volumes:
            resources.volume(name)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    # Installed there now, or by an earlier build into the engine's venv volume (cached).
    assert "in a builder container" in proc.stderr
    assert result["platform"] == "linux/arm64/v8"
    assert result["check"]["where"] == "image"
    assert "under emulation" in result["check"]["reason"]
    found = elf_machines(ref, under="/opt/venv")
    extensions = {path: m for path, m in found.items() if "/fastsum" in path}
    assert extensions, found
    assert set(extensions.values()) == {ELF_AARCH64}
