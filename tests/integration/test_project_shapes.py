"""Project shapes without [project] metadata, built on the real engine and asked over HTTP:
a pyproject.toml holding only [tool.pydeploy] beside a requirements.txt and the code."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.integration.conftest import BuildImage, Resources, RunPydeploy, WaitHttp

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_a_pyproject_holding_only_the_table_builds_and_serves(
    tmp_path: Path,
    run_pydeploy: RunPydeploy,
    pydeploy_build: BuildImage,
    resources: Resources,
    free_port: int,
    wait_http: WaitHttp,
) -> None:
    project = tmp_path / "Tool Table"
    shutil.copytree(FIXTURES / "tooltable_app", project)
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "initial")
    git(project, "tag", "v1.0")
    plan = run_pydeploy("plan", "--json", str(project), cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    document = json.loads(plan.stdout)
    assert document["image_name"] == {"name": "tool-table", "origin": "directory name"}
    assert document["tags"] == ["tool-table:v1.0"]
    assert document["tags_origin"] == "git describe"

    image = pydeploy_build(project, "tooltable")
    container = resources.create(image, environment={"PORT": str(free_port)})
    container.start()
    body = wait_http(f"http://127.0.0.1:{free_port}/")
    assert json.loads(body) == {"app": "tooltable", "message": "hello"}
    labels = resources.client.images.get(image).labels
    assert labels["org.opencontainers.image.title"] == "Tool Table"
    assert labels["org.opencontainers.image.version"] == "v1.0"


def test_an_old_pinned_uvicorn_serves_with_its_own_worker_class(
    tmp_path: Path, pydeploy_build: BuildImage, resources: Resources, free_port: int,
    wait_http: WaitHttp,
) -> None:  # fmt: skip
    """uvicorn < 0.36 has its own gunicorn worker (uvicorn.workers), and uvicorn-worker 0.4
    cannot be installed beside it: the build adds no uvicorn-worker and the image's worker
    class falls back to uvicorn's own."""
    project = tmp_path / "olduvicorn"
    shutil.copytree(FIXTURES / "olduvicorn_app", project)
    image = pydeploy_build(project, "olduvicorn")
    code = "import importlib.util as u, uvicorn; print(uvicorn.__version__, u.find_spec('uvicorn_worker') is None)"  # noqa: E501
    probe = resources.run(image, ["-c", code], entrypoint=["/opt/venv/bin/python"])
    assert probe.exit_code == 0, probe.output
    assert probe.output.strip().splitlines()[-1] == "0.27.1 True"
    container = resources.create(image, environment={"PORT": str(free_port)})
    container.start()
    assert json.loads(wait_http(f"http://127.0.0.1:{free_port}/ping")) == {"ping": "pong"}
