"""The code-only rebuild (issue 14): the app check runs in the final image, predicted from
the last check's answer and loaded untagged, so the `docker` output only tags it.

- a code-only rebuild sends the engine one archive, holding the app layer and what sits
  on it (the launcher: layer chains are by parent), nothing below the app; and the result
  is the image a build that started from an empty host cache makes (byte for byte);
- a build SIGKILLed at its check leaves its preload (the image under the build's own
  `pydeploy-preload:<build ID>` reference, and its host-cache record); the next build
  removes it.
The builds run the real CLI in a subprocess; the wrapper only observes (or kills) it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import Resources

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pure_app"

# The CLI, with each archive sent to `docker load` listed (its member names) in a file.
RECORDING = """
import json, sys, tarfile
from pydeploy.engine.client import Engine
LOG = sys.argv.pop(1)
original = Engine.load_image
def load_image(self, data):
    with tarfile.open(fileobj=data) as archive:
        names = archive.getnames()
    with open(LOG, "a") as log:
        log.write(json.dumps(names) + "\\n")
    data.seek(0)
    return original(self, data)
Engine.load_image = load_image
from pydeploy.cli.main import main
main()
"""
# The CLI, SIGKILLed where its app check would start a container (after the preload).
KILLED_AT_CHECK = """
import os, signal
from pydeploy.builder import appcheck
appcheck.run_check = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
from pydeploy.cli.main import main
main()
"""


def cli(program: str, *args: str, project: Path, base: str, tag: str, cache: Path) -> Any:
    argv = [sys.executable, "-c", program, *args, "build", str(project), "--base", base,
            "--network", "host", "--tag", tag, "--json"]  # fmt: skip
    env = {**os.environ, "PYDEPLOY_CACHE_DIR": str(cache)}
    return subprocess.run(argv, capture_output=True, text=True, check=False, env=env, timeout=900)


def result(proc: Any) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr[-4000:]
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


def change_code(project: Path, marker: str) -> None:
    with (project / "app.py").open("a", encoding="utf-8") as handle:
        handle.write(f"\nMARKER = {marker!r}\n")


def layer_files(names: list[str]) -> set[str]:
    return {name.split("/")[0] for name in names if name.endswith("/layer.tar")}


def test_a_code_only_rebuild_sends_only_the_app_layer_and_what_is_on_it(
    tmp_path: Path, base_image: str, docker_client: docker.DockerClient, resources: Resources
) -> None:
    project = Path(shutil.copytree(FIXTURE, tmp_path / "project"))
    tag = resources.image(f"pydeploy-test/preload:{uuid.uuid4().hex[:12]}")
    cache, loads = tmp_path / "cache", tmp_path / "loads.jsonl"
    first = cli(RECORDING, str(loads), project=project, base=base_image, tag=tag, cache=cache)
    result(first)  # the first build: no answer to predict from, a check image then the final
    loads.unlink()

    change_code(project, "one")
    rebuilt = result(
        cli(RECORDING, str(loads), project=project, base=base_image, tag=tag, cache=cache)
    )
    archives = [json.loads(line) for line in loads.read_text().splitlines()]
    assert len(archives) == 1, "one image sent: the check ran in the final image"
    roles = [layer["role"] for layer in rebuilt["layers"]]
    app = roles.index("app")
    sent = layer_files(archives[0])
    above = {layer["diff_id"].split(":")[1] for layer in rebuilt["layers"][app:]}
    assert sent == above, f"sent {sent}, the layers from the app up are {above} ({roles})"
    assert docker_client.images.get(tag).id == rebuilt["image_id"]
    assert docker_client.images.get(rebuilt["image_id"]).tags == [tag]

    # The same inputs from an empty host cache (no prediction) give the same image.
    fresh = cli(RECORDING, str(tmp_path / "other.jsonl"), project=project, base=base_image,
                tag=tag, cache=tmp_path / "fresh")  # fmt: skip
    assert result(fresh)["image_id"] == rebuilt["image_id"]


def test_a_preload_left_by_a_killed_build_is_reaped_by_the_next(
    tmp_path: Path, base_image: str, docker_client: docker.DockerClient, resources: Resources
) -> None:
    project = Path(shutil.copytree(FIXTURE, tmp_path / "project"))
    tag = resources.image(f"pydeploy-test/preload:{uuid.uuid4().hex[:12]}")
    cache = tmp_path / "cache"
    result(cli(RECORDING, str(tmp_path / "l"), project=project, base=base_image, tag=tag,
               cache=cache))  # fmt: skip
    change_code(project, "killed")
    killed = cli(KILLED_AT_CHECK, project=project, base=base_image, tag=tag, cache=cache)
    assert killed.returncode == -9, killed.stderr[-2000:]
    records = list((cache / "blobs" / "index" / "preload").glob("*.json"))
    assert len(records) == 1, "the killed build's preload record is left"
    reference = f"pydeploy-preload:{records[0].stem}"
    left = docker_client.images.get(reference).id or ""
    try:
        assert docker_client.images.get(left).tags == [reference], "under its own reference"

        change_code(project, "next")
        proc = cli(RECORDING, str(tmp_path / "l"), project=project, base=base_image, tag=tag,
                   cache=cache)  # fmt: skip
        assert result(proc)["image_id"] != left
        assert "removed the images killed builds preloaded" in proc.stderr
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(left)
        assert list((cache / "blobs" / "index" / "preload").glob("*.json")) == []
    finally:
        resources.image(left)
