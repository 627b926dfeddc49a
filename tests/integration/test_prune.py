"""`pydeploy prune` against the real engine: a venv volume a build left without its
completion marker and a partial blob of a killed build are listed by --dry-run (and
survive it), then removed; a broken venv volume attached to a running container stays.

Never `--all` here: the engine is shared, and --all would delete other tests' caches
(its plan is tested in tests/unit/test_cachegc.py). `--older-than` is set far out so the
default run only removes broken entries, never another test's healthy cache volume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import pytest

from pydeploy.cachekeys import LABEL_CLAIMED, LABEL_VENV_KEY, VENV_VOLUME_PREFIX

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.conftest import Resources

pytestmark = pytest.mark.integration
FAR = "36500"  # days: no healthy volume on the shared engine is judged by age


def prune(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYDEPLOY_CACHE_DIR": str(cache)}
    argv = [sys.executable, "-m", "pydeploy", "prune", "--older-than", FAR, *args]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def broken_venv_volume(client: docker.DockerClient, resources: Resources) -> str:
    """A volume as an interrupted build leaves it: labelled, claimed two hours ago, one
    file written, no completion marker."""
    name = resources.volume(f"{VENV_VOLUME_PREFIX}test{uuid.uuid4().hex[:12]}")
    labels = {
        **resources.labels, "pydeploy.venv": "1", LABEL_VENV_KEY: "0" * 64,
        LABEL_CLAIMED: str(int(time.time()) - 7200),
    }  # fmt: skip
    client.volumes.create(name, labels=labels)
    return name


def exists(client: docker.DockerClient, volume: str) -> bool:
    try:
        client.volumes.get(volume)
    except docker.errors.NotFound:
        return False
    return True


def test_prune_removes_broken_caches_and_spares_what_a_container_uses(
    docker_client: docker.DockerClient, base_image: str, resources: Resources, tmp_path: Path
) -> None:
    broken = broken_venv_volume(docker_client, resources)
    fill = resources.create(
        base_image,
        ["sh", "-c", "head -c 200000 /dev/zero > /v/half-installed"],
        volumes={broken: {"bind": "/v", "mode": "rw"}},
    )
    fill.start()
    assert fill.wait(timeout=120)["StatusCode"] == 0
    fill.remove()  # nothing refers to the volume any more
    attached = broken_venv_volume(docker_client, resources)
    running = resources.create(
        base_image, ["sleep", "600"], volumes={attached: {"bind": "/v", "mode": "rw"}}
    )
    running.start()

    cache = tmp_path / "cache"
    partial = cache / "blobs" / "sha256" / ".tmp-killed"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x" * 1234)
    two_hours_ago = time.time() - 7200
    os.utime(partial, (two_hours_ago, two_hours_ago))

    listed: dict[str, Any] = json.loads(prune(cache, "--dry-run", "--json").stdout)
    assert listed["dry_run"] is True
    would = {item["name"]: item for item in listed["items"]}
    assert would[broken]["reason"] == "incomplete (no completion marker)"
    assert would[broken]["size"] >= 200_000
    assert would[str(partial)]["size"] == 1234
    assert attached not in would
    assert {"name": attached, "reason": "in use"}.items() <= next(
        item for item in listed["kept"] if item["name"] == attached
    ).items()
    assert exists(docker_client, broken)
    assert partial.exists()

    text = prune(cache).stdout
    assert f"removed venv volume {broken}" in text
    assert f"kept venv volume {attached}" in text
    assert "pydeploy: reclaimed" in text
    assert not exists(docker_client, broken)
    assert not partial.exists()
    assert exists(docker_client, attached)
    running.reload()
    assert running.status == "running"
