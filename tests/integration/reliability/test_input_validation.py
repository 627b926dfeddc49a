"""Bad input fails `pydeploy build` at once with exit 2 and one paragraph, on a real
engine: before, bad tags went through a whole build and failed at `docker load` (exit 3),
and a NUL in `env` or unusable `server.extra-args` built an image that could not start."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import RunPydeploy

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "pure_app"


@pytest.mark.parametrize(
    ("table", "args", "expected"),
    [
        ("", ["--tag", "Bad Repo:1"], "--tag: 'Bad Repo:1' is not a valid image reference"),
        ('tags = ["../../x:1"]', [], "`tool.pydeploy.tags` entry '../../x:1'"),
        ('name = "' + "a" * 2_000_000 + '"', [], "`tool.pydeploy.name` is not an image name"),
        ('env = {GREETING = "a\\u0000b"}', [], "`GREETING` holds a NUL character"),
        (
            '[tool.pydeploy.server]\nextra-args = ["--timeout"]',
            [],
            "the last item `--timeout` needs a value",
        ),
        (
            '[tool.pydeploy.server]\nextra-args = ["--daemon"]',
            [],
            "`--daemon` makes gunicorn exit or leave the foreground",
        ),
    ],
    ids=["tag-space", "tag-traversal", "name-2mb", "env-nul", "extra-args-no-value", "daemon"],
)
def test_bad_input_fails_the_build_before_engine_work(
    tmp_path: Path,
    base_image: str,
    docker_client: docker.DockerClient,
    run_pydeploy: RunPydeploy,
    table: str,
    args: list[str],
    expected: str,
) -> None:
    project = tmp_path / "app"
    shutil.copytree(FIXTURE, project)
    name = f"pydeploy-test-input-{uuid.uuid4().hex[:12]}"
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8").replace('name = "pure-app"', f'name = "{name}"')
    pyproject.write_text(text + table + "\n", encoding="utf-8")
    proc = run_pydeploy(
        "build", str(project), "--base", base_image, "--network", "host", *args, cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("pydeploy: config error: "), proc.stderr[-3000:]
    assert proc.stderr.strip().count("\n") == 0, proc.stderr[-3000:]
    assert expected in proc.stderr
    # Nothing was built or loaded under the project's (unique) name.
    assert not docker_client.images.list(name=name)
