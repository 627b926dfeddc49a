"""Reliability contract: `auto` workers fit the container's memory limit (issue 10).

Before: `docker run --memory 128m` with no WEB_CONCURRENCY started 2 x CPUs + 1 workers
whatever they cost, and the kernel OOM-killed them in a loop while gunicorn booted new
ones; with 64m the container never served. Now the app check measures what one worker
costs, the image records it (launch.json and labels) and the launcher starts only what
fits, at least 1, saying why.

The fixture app holds 24 MiB per worker (tests/fixtures/ballast_app), as WSGI and as
ASGI. Each case runs the real image with host networking on a free loopback port and
swap disabled (as on Kubernetes), serves real requests, then checks the kernel's own OOM
kill counter for the container's cgroup, docker's OOMKilled flag and the server log for
worker replacements.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container
    from tests.integration.conftest import BuildImage, Resources

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "ballast_app"
PYTHON = "/opt/venv/bin/python"
START_TIMEOUT = 90.0  # a 64 MiB container on a loaded 2-core machine boots slowly
BOOT_TIMEOUT = 60.0
REQUESTS = 40

STARTUP = re.compile(
    r"^pydeploy-launcher: [\w-]+, (?P<count>\d+) workers? \((?P<reason>[^)]*)\)", re.MULTILINE
)
CPU_ALLOWS = re.compile(r"\bcpu allows (\d+):")
BOOTED = re.compile(r"Booting worker with pid")

# The kernel's OOM kill counter for the container's cgroup (v2 memory.events, v1
# memory.oom_control since Linux 4.13); "none" where the kernel keeps no such counter.
OOM_KILLS = r"""
import os
for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
    if os.path.exists(path):
        for line in open(path):
            if line.startswith("oom_kill "):
                print(line.split()[1])
                raise SystemExit(0)
print("none")
"""

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def logs(container: Container) -> str:
    raw = container.logs()
    assert isinstance(raw, bytes)
    return raw.decode("utf-8", "replace")


def fail_with_logs(container: Container, message: str) -> NoReturn:
    pytest.fail(f"{message}\n--- container logs ---\n{logs(container)[-4000:]}", pytrace=False)


def get(port: int, path: str) -> int:
    try:
        with _direct.open(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def wait_serving(container: Container, port: int) -> None:
    """Until /healthz answers 200; fail at once, with the logs, if the container stops."""
    deadline = time.monotonic() + START_TIMEOUT
    last = "no attempt"
    while True:
        container.reload()
        if container.status not in {"created", "running"}:
            fail_with_logs(container, f"the container stopped ({container.status}) before serving")
        try:
            status = get(port, "/healthz")
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                return
            last = f"HTTP {status}"
        if time.monotonic() >= deadline:
            fail_with_logs(container, f"no 200 within {START_TIMEOUT:g} s; last: {last}")
        time.sleep(0.25)


def wait_booted(container: Container, count: int) -> int:
    """Until gunicorn has logged `count` worker boots (it boots them one after another);
    the number seen, which exceeds `count` when workers were replaced."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        booted = len(BOOTED.findall(logs(container)))
        if booted >= count or time.monotonic() >= deadline:
            return booted
        time.sleep(0.25)


def oom_kills(container: Container) -> int | None:
    result = container.exec_run([PYTHON, "-c", OOM_KILLS])
    output = result.output
    assert isinstance(output, bytes)
    text = output.decode("utf-8", "replace").strip()
    assert result.exit_code == 0, text
    return None if text == "none" else int(text)


@pytest.fixture(scope="module", params=["wsgi", "asgi"])
def ballast_image(
    request: pytest.FixtureRequest,
    pydeploy_build: BuildImage,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """The fixture app built for real, as WSGI (gunicorn sync workers) or ASGI (gunicorn
    with uvicorn workers)."""
    interface: str = request.param
    project = tmp_path_factory.mktemp(f"ballast-{interface}") / "ballast_app"
    shutil.copytree(FIXTURE, project, ignore=shutil.ignore_patterns("__pycache__"))
    if interface == "asgi":
        pyproject = project / "pyproject.toml"
        text = pyproject.read_text(encoding="utf-8")
        pyproject.write_text(text.replace('"wsgi_app:app"', '"asgi_app:app"'), encoding="utf-8")
    return pydeploy_build(project, f"ballast-{interface}")


@pytest.mark.parametrize("limit_mib", [128, 64])
def test_auto_workers_fit_the_memory_limit(
    ballast_image: str,
    limit_mib: int,
    resources: Resources,
    free_port: int,
    docker_client: docker.DockerClient,
) -> None:
    container = resources.create(
        ballast_image,
        environment={"PORT": str(free_port)},  # and no WEB_CONCURRENCY
        mem_limit=f"{limit_mib}m",
        memswap_limit=f"{limit_mib}m",  # no swap to hide an overcommit in
    )
    container.start()
    wait_serving(container, free_port)
    line = STARTUP.search(logs(container))
    if line is None:
        fail_with_logs(container, "no launcher startup line")
    count = int(line["count"])

    # Real traffic through the workers, then the kernel's and the server's verdicts.
    statuses = [get(free_port, f"/n/{i}") for i in range(REQUESTS)]
    assert statuses == [200] * REQUESTS
    booted = wait_booted(container, count)
    killed = oom_kills(container)
    container.reload()
    state = container.attrs["State"]
    output = logs(container)
    assert state["Status"] == "running", state
    assert state["OOMKilled"] is False, state
    assert container.attrs["RestartCount"] == 0
    assert killed in (0, None), f"the kernel OOM-killed {killed} processes:\n{output[-3000:]}"
    if booted != count:
        fail_with_logs(container, f"{booted} worker boots for {count} workers: a boot loop")

    # The count is the launcher's rule applied to what the image records.
    labels = docker_client.images.get(ballast_image).labels
    assert labels.get("pydeploy.worker-memory-origin") == "measured at build", labels
    worker = int(labels["pydeploy.worker-memory-mib"])
    master = int(labels["pydeploy.master-memory-mib"])
    # 24 MiB of ballast per worker, measured with the margin; the master holds none.
    assert worker >= 24 * 1.25, labels
    assert master < worker, labels
    cpu = CPU_ALLOWS.search(line["reason"])
    assert cpu is not None, f"the startup line does not weigh memory: {line[0]}"
    fits = (limit_mib - master) // worker
    assert f"memory allows {fits}:" in line["reason"], line[0]
    assert count == max(1, min(int(cpu[1]), fits)), line[0]
    if fits < 1:
        assert "pydeploy-launcher: warning: " in output, output[-2000:]
        assert "starting 1 worker anyway" in output, output[-2000:]


def test_launch_json_carries_the_measurement(
    ballast_image: str, resources: Resources, docker_client: docker.DockerClient
) -> None:
    """What the launcher reads is what the labels say (one measurement, two records)."""
    labels = docker_client.images.get(ballast_image).labels
    run = resources.run(
        ballast_image, ["/opt/pydeploy/launch.json"], entrypoint=["cat"], network_mode="none"
    )
    assert run.exit_code == 0, run.output
    launch = json.loads(run.output)
    assert launch["worker_memory_mb"] == int(labels["pydeploy.worker-memory-mib"])
    assert launch["master_memory_mb"] == int(labels["pydeploy.master-memory-mib"])
    assert launch["worker_memory_origin"] == "measured at build"
