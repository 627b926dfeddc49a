"""One-off commands, the release command, other processes and the healthcheck default
(issue 13), on the real engine with one image of tests/fixtures/procs_app: an API whose
`/` is a 404, a release command that migrates SQLite, and a worker process.

- `docker run IMAGE python -c ...` runs with the venv active, in /app, as the runtime
  uid, and its exit code is the container's; a missing command is 127 in one line.
- `pydeploy run DIR -- python -c ...` does the same through pydeploy.
- `pydeploy run` migrates into a named volume before the server serves the migrated
  row; a failing release command stops it with its exit code and its output, before any
  server starts.
- `pydeploy run --process worker` runs the worker (no port, no healthcheck) and stops it
  with SIGTERM forwarded by the launcher.
- The image's HEALTHCHECK, with no path configured and no health route in the source,
  marks the API healthy although `/` answers 404, and a worker container healthy too.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pydeploy.cachekeys import RUN_LABEL
from pydeploy.config.project import load_project

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container
    from tests.integration.conftest import BuildImage, Resources, WaitHttp

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "procs_app"
CLI_TIMEOUT = 600
START_TIMEOUT = 90.0

# Runs as the one-off: where it runs, as whom, with which environment.
WHO = (
    "import json, os, sys; print(json.dumps({'prefix': sys.prefix, 'uid': os.getuid(), "
    "'cwd': os.getcwd(), 'path': os.environ['PATH'], 'venv': os.environ.get('VIRTUAL_ENV')}));"
    " sys.exit(5)"
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture under a unique image name (the `pydeploy run` containers' label)."""
    root = Path(shutil.copytree(FIXTURE, tmp_path_factory.mktemp("procs") / "procs_app"))
    pyproject = root / "pyproject.toml"
    name = f"procs-{uuid.uuid4().hex[:10]}"
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(text.replace("[tool.pydeploy]\n", f'[tool.pydeploy]\nname = "{name}"\n'))
    return root


@pytest.fixture(scope="module")
def image(pydeploy_build: BuildImage, project: Path) -> str:
    return pydeploy_build(project, "procs")


def run_args(project: Path, image: str, base_image: str, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "pydeploy", "run", str(project), "--no-build", "--tag", image,
        "--base", base_image, "--network", "host", *args,
    ]  # fmt: skip


def labelled(client: docker.DockerClient, project: Path) -> list[Container]:
    """The containers `pydeploy run` made for the project (labelled with its name)."""
    name = load_project(project).config.name
    return client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={name}"})


def wait_health(container: Container, timeout: float = START_TIMEOUT) -> dict[str, object]:
    """Poll the engine's health status until `healthy` (or fail with the probe's log)."""
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        health = container.attrs["State"].get("Health") or {}
        if health.get("Status") == "healthy":
            return health
        if time.monotonic() >= deadline or container.status == "exited":
            log = container.logs().decode("utf-8", "replace")[-2000:]
            pytest.fail(f"not healthy: {json.dumps(health)[-1500:]}\n{log}", pytrace=False)
        time.sleep(0.5)


# --- one-off commands ---------------------------------------------------------------------


def test_docker_run_image_command_runs_with_the_venv_as_the_runtime_user(
    image: str, resources: Resources
) -> None:
    result = resources.run(image, ["python", "-c", WHO])
    assert result.exit_code == 5, result.output
    seen = json.loads(result.output)
    assert seen["prefix"] == "/opt/venv"
    assert seen["uid"] == 10001
    assert seen["cwd"] == "/app"
    assert seen["path"].startswith("/opt/venv/bin:")
    assert seen["venv"] == "/opt/venv"

    missing = resources.run(image, ["no-such-tool", "--flag"])
    assert missing.exit_code == 127
    assert len(missing.output.strip().splitlines()) == 1, missing.output
    assert "no-such-tool: command not found" in missing.output


def test_pydeploy_run_dashes_runs_a_one_off(
    project: Path, image: str, base_image: str, docker_client: docker.DockerClient
) -> None:
    argv = run_args(project, image, base_image, "-e", "GREETING=hi", "--")
    argv += ["python", "-c", WHO.replace("sys.exit(5)", "print(os.environ['GREETING'])")]
    proc = subprocess.run(
        argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, greeting = proc.stdout.strip().splitlines()
    assert json.loads(first)["uid"] == 10001
    assert greeting == "hi"
    assert "migrate" not in proc.stdout + proc.stderr  # no release command before a one-off
    assert labelled(docker_client, project) == []


# --- the release command ----------------------------------------------------------------


def test_release_migrates_into_a_volume_before_the_server_serves(
    project: Path,
    image: str,
    base_image: str,
    docker_client: docker.DockerClient,
    resources: Resources,
    free_port: int,
    wait_http: WaitHttp,
    tmp_path: Path,
) -> None:
    volume = resources.volume(f"pydeploy-test-procs-{uuid.uuid4().hex[:8]}")
    argv = run_args(project, image, base_image, "--port", str(free_port), "-v", f"{volume}:/data")
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=stderr)  # fmt: skip
    try:
        try:
            body = wait_http(f"http://127.0.0.1:{free_port}/items", timeout=START_TIMEOUT)
        except TimeoutError as exc:
            pytest.fail(f"{exc}\n{err.read_text(errors='replace')[-3000:]}", pytrace=False)
        assert json.loads(body) == ["migrated"]
        # The migration ran first, in its own container, as the runtime user.
        assert "migrate: /data/app.db is up to date (uid 10001)" in out.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, err.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for leftover in labelled(docker_client, project):
            leftover.remove(force=True, v=True)
    assert labelled(docker_client, project) == []


def test_a_failing_release_command_stops_the_run_with_its_exit_code(
    project: Path,
    image: str,
    base_image: str,
    docker_client: docker.DockerClient,
    resources: Resources,
    free_port: int,
) -> None:
    volume = resources.volume(f"pydeploy-test-procs-{uuid.uuid4().hex[:8]}")
    argv = run_args(project, image, base_image, "--port", str(free_port), "-v", f"{volume}:/data")
    proc = subprocess.run(
        [*argv, "-e", "MIGRATE_FAIL=1"], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=CLI_TIMEOUT, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "the release command `python migrate.py` exited with 3" in proc.stderr
    assert "  | migrate: applying 0002_broken... FAILED: no such column: price" in proc.stderr
    assert "serving on" not in proc.stderr  # the server never started
    assert labelled(docker_client, project) == []


# --- processes --------------------------------------------------------------------------


def test_run_process_runs_the_worker_and_stops_it_with_sigterm(
    project: Path,
    image: str,
    base_image: str,
    docker_client: docker.DockerClient,
    resources: Resources,
    tmp_path: Path,
) -> None:
    volume = resources.volume(f"pydeploy-test-procs-{uuid.uuid4().hex[:8]}")
    argv = run_args(project, image, base_image, "--process", "worker", "-v", f"{volume}:/data")
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=stderr)  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "worker ready" not in out.read_text(errors="replace"):
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"no worker: {err.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        assert "worker ready: queue=default uid=10001 prefix=/opt/venv" in out.read_text()
        (container,) = labelled(docker_client, project)  # the release container is gone
        config = container.attrs["Config"]
        assert config["Cmd"] == ["python", "worker.py", "--queue", "default"]
        assert config["Healthcheck"]["Test"] == ["NONE"]
        assert container.attrs["HostConfig"]["PortBindings"] in (None, {})
        proc.send_signal(signal.SIGINT)  # -> docker stop -> SIGTERM to the launcher -> worker
        code = proc.wait(timeout=60)
        assert code == 0, err.read_text(errors="replace")[-3000:]
        assert "worker stopped" in out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for leftover in labelled(docker_client, project):
            leftover.remove(force=True, v=True)


# --- the healthcheck default --------------------------------------------------------------


def test_an_api_without_a_root_route_becomes_healthy(
    image: str, resources: Resources, free_port: int, wait_http: WaitHttp
) -> None:
    container = resources.create(image, environment={"PORT": str(free_port)})
    container.start()
    health = wait_health(container)
    log = health["Log"]
    assert isinstance(log, list)
    assert f"healthy: GET http://127.0.0.1:{free_port}/ -> 404" in log[-1]["Output"]


def test_a_worker_container_is_healthy_without_serving_http(
    image: str, resources: Resources
) -> None:
    container = resources.create(image, ["python", "worker.py", "--queue", "mail"])
    container.start()
    health = wait_health(container)
    log = health["Log"]
    assert isinstance(log, list)
    assert "the container runs `python worker.py --queue mail`, not the server" in log[-1]["Output"]
    container.stop(timeout=10)
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0  # SIGTERM reached the worker
