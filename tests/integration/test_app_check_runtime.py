"""The app check runs where the app will run (issue 13): in the runtime image, as its
uid, on a read-only root filesystem, with the image's environment plus `check-env`.

Two fixtures that passed a builder-side check and then failed as containers:
- settings_app reads DATABASE_URL and SECRET_KEY at import (pydantic-settings; it also
  refuses to be imported as root): the build fails naming both variables and
  `[tool.pydeploy.check-env]`; with placeholders there it builds, the placeholders are
  nowhere in the image, and the container started with real values serves;
- writes_app's Flask factory creates ./instance and ./logs: the build fails naming the
  path and `writable`; with `writable` it builds, and the container serves and writes its
  log both read-only (tmpfs mounts, as the manifests run it) and under a plain
  `docker run`; with `check.skip` it builds unchecked and says so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import Resources, WaitHttp

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
UID = 10001


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One host cache for the module (the base image is imported once)."""
    return tmp_path_factory.mktemp("cache")


def build(project: Path, base: str, tag: str, cache: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pydeploy", "build", str(project), "--base", base,
            "--network", "host", "--tag", tag, "--json"]  # fmt: skip
    env = {**os.environ, "PYDEPLOY_CACHE_DIR": str(cache)}
    return subprocess.run(argv, capture_output=True, text=True, check=False, env=env, timeout=900)


def built(project: Path, base: str, tag: str, cache: Path) -> dict[str, Any]:
    proc = build(project, base, tag, cache)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    if list(result["timings"]) != ["unchanged"]:  # the no-change fast path makes nothing
        assert not check_images(proc.stderr), "the check image is gone"
    return result


def check_images(stderr: str) -> list[Any]:
    """The images the build with this output left labelled as its own."""
    found = re.search(r"\(build ([0-9a-f]+)\)", stderr)
    assert found, stderr[-2000:]
    client = docker.from_env()
    try:
        return list(client.images.list(all=True, filters={"label": f"pydeploy.build={found[1]}"}))
    finally:
        client.close()


def copy_fixture(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def append(project: Path, text: str) -> None:
    with (project / "pyproject.toml").open("a", encoding="utf-8") as handle:
        handle.write(text)


def image_bytes(client: docker.DockerClient, ref: str) -> bytes:
    """The config and every layer's files of the image, as one searchable blob."""
    parts: list[bytes] = []
    with tempfile.TemporaryFile() as saved:
        for chunk in client.images.get(ref).save(chunk_size=1 << 20):
            saved.write(chunk)
        saved.seek(0)
        with tarfile.open(fileobj=saved) as outer:
            for member in outer:
                handle = outer.extractfile(member) if member.isfile() else None
                if handle is None:
                    continue
                if not member.name.endswith("layer.tar"):
                    parts.append(handle.read())
                    continue
                with tarfile.open(fileobj=handle) as layer:
                    for inner in layer:
                        data = layer.extractfile(inner) if inner.isfile() else None
                        parts.append(inner.name.encode() + (data.read() if data else b""))
    return b"\0".join(parts)


def test_settings_read_at_import_build_with_check_env_that_never_ships(
    base_image: str,
    tmp_path: Path,
    cache: Path,
    resources: Resources,
    docker_client: docker.DockerClient,
    free_port: int,
    wait_http: WaitHttp,
) -> None:
    project = copy_fixture("settings_app", tmp_path)
    tag = resources.image(f"pydeploy-test/settings-app:{uuid.uuid4().hex[:10]}")

    failed = build(project, base_image, tag, cache)
    assert failed.returncode == 7, failed.stderr[-4000:]
    message = failed.stderr
    assert "`DATABASE_URL` and `SECRET_KEY`" in message, message[-3000:]
    assert "[tool.pydeploy.check-env]" in message
    assert "`tool.pydeploy.app`" not in message, "the target is fine; the settings are not"
    assert "Traceback (most recent call last)" not in message
    assert not check_images(message), "a failed check leaves no image behind"

    placeholder = f"pdt-placeholder-{uuid.uuid4().hex}"
    append(
        project,
        f'\n[tool.pydeploy.check-env]\nDATABASE_URL = "sqlite:///{placeholder}"\n'
        f'SECRET_KEY = "{placeholder}"\n',
    )
    result = built(project, base_image, tag, cache)
    assert result["check"] == {
        "status": "passed",
        "cached": False,
        "where": "image",
        "reason": None,
    }
    assert result["interface"] == "asgi"

    config = docker_client.images.get(tag).attrs["Config"]
    names = {entry.split("=", 1)[0] for entry in config["Env"]}
    assert not {"DATABASE_URL", "SECRET_KEY"} & names
    assert placeholder.encode() not in image_bytes(docker_client, tag), "nowhere in the image"

    # Served with the real values, given at run time as in production.
    container = resources.create(
        tag,
        environment={
            "PORT": str(free_port),
            "DATABASE_URL": "postgresql://app@db/app",
            "SECRET_KEY": "s" * 24,
        },
    )
    container.start()
    body = wait_http(f"http://127.0.0.1:{free_port}/", timeout=60)
    assert json.loads(body) == {"database": "postgresql", "secret_length": 24}
    container.remove(force=True)

    # Unchanged: the answer is reused and no container (nor image) is made for it.
    again = built(project, base_image, tag, cache)
    assert again["check"] == {"status": "passed", "cached": True, "where": "image", "reason": None}
    assert again["image_id"] == result["image_id"]


def test_an_app_writing_under_app_builds_with_writable_and_writes_where_it_runs(
    base_image: str,
    tmp_path: Path,
    cache: Path,
    resources: Resources,
    docker_client: docker.DockerClient,
    free_port: int,
    wait_http: WaitHttp,
) -> None:
    project = copy_fixture("writes_app", tmp_path)
    tag = resources.image(f"pydeploy-test/writes-app:{uuid.uuid4().hex[:10]}")
    pyproject = project / "pyproject.toml"
    original = pyproject.read_text(encoding="utf-8")

    failed = build(project, base_image, tag, cache)
    assert failed.returncode == 7, failed.stderr[-4000:]
    assert "The app writes /app/instance" in failed.stderr, failed.stderr[-3000:]
    assert 'writable = ["instance"]' in failed.stderr
    assert "tool.pydeploy.writable" in failed.stderr

    # Skipped: it builds, unchecked, and says so.
    pyproject.write_text(original + "\n[tool.pydeploy.check]\nskip = true\n", encoding="utf-8")
    proc = build(project, base_image, tag, cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["check"] == {
        "status": "skipped",
        "cached": False,
        "where": None,
        "reason": "tool.pydeploy.check.skip",
    }
    assert "app check: skipped (tool.pydeploy.check.skip)" in proc.stderr
    assert "worker memory not measured" in proc.stderr

    pyproject.write_text(
        original.replace(
            'app = "app:create_app()"', 'app = "app:create_app()"\nwritable = ["logs", "instance"]'
        ),
        encoding="utf-8",
    )
    result = built(project, base_image, tag, cache)
    assert result["check"] == {
        "status": "passed",
        "cached": False,
        "where": "image",
        "reason": None,
    }
    roles = [layer["role"] for layer in result["layers"]]
    assert roles[-3:] == ["app", "writable", "launcher"]

    owned = f"uid={UID},gid={UID}"
    runs: dict[str, dict[str, Any]] = {
        # As the manifests run it: read-only root, fresh writable mounts.
        "read-only": {
            "read_only": True,
            "tmpfs": {"/tmp": "", "/app/logs": owned, "/app/instance": owned},
        },
        # Plain `docker run`: the image's own directories, owned by its user.
        "plain": {},
    }
    for name, options in runs.items():
        container = resources.create(tag, environment={"PORT": str(free_port)}, **options)
        container.start()
        body = wait_http(f"http://127.0.0.1:{free_port}/", timeout=60)
        assert body == "visit 1\n", name
        log = container.exec_run(["cat", "/app/logs/app.log"])
        assert log.exit_code == 0, (name, log.output)
        assert b"visit 1" in log.output, name
        container.remove(force=True)
