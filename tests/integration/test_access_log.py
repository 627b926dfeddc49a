"""Buffered access logs in real images, on every server path (issue 14, server throughput).

Each path is one example image and, where the path is a launch setting rather than a
different set of packages, a launch.json changed at container start (the image's own
launcher reads it, as it reads the built one). The uvicorn-only image is built for real:
it has no gunicorn, and the access-log module must still load there. Requests carry a
token in their query string, so a test counts exactly its own lines in `docker logs`.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from tests.integration.test_runtime import PYTHON, build_variant, get, logs, start_server

if TYPE_CHECKING:
    from docker.models.containers import Container
    from tests.integration.conftest import BuildImage, Resources

# Runs as the image's entrypoint: the built launch.json with argv[1]'s keys replaced.
RELAUNCH = (
    "import json, os, sys; c = json.load(open('/opt/pydeploy/launch.json')); "
    "c.update(json.loads(sys.argv[1])); json.dump(c, open('/tmp/launch.json', 'w')); "
    "os.execv(sys.executable, [sys.executable, '/opt/pydeploy/launcher.py', "
    "'--config', '/tmp/launch.json'])"
)
FLUSH_ENV = "PYDEPLOY_ACCESS_LOG_FLUSH_SECONDS"
NEVER = "3600"  # a flush delay no test waits for: only an exit (or 64 KiB) writes
ARRIVAL_TIMEOUT = 30.0  # the bound is 0.1 s; this only ends a test that is failing anyway
BURST = 400


@dataclass(frozen=True)
class ServerPath:
    image_key: str  # "flask-app", "fastapi-app" or "uvicorn"
    launch: dict[str, object]


PATHS = {
    "gunicorn-async-wsgi": ServerPath("flask-app", {}),
    "gunicorn-sync": ServerPath("flask-app", {"wsgi_worker": "sync", "threads": None}),
    "gunicorn-gthread": ServerPath("flask-app", {"wsgi_worker": "sync", "threads": 2}),
    "gunicorn-uvicorn": ServerPath("fastapi-app", {}),
    "uvicorn": ServerPath("uvicorn", {}),
}


@pytest.fixture(scope="module")
def images(
    example_images: dict[str, str],
    pydeploy_build: BuildImage,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    uvicorn = build_variant(
        pydeploy_build,
        tmp_path_factory,
        "fastapi-app",
        "access-log-uvicorn",
        '[tool.pydeploy.server]\ntype = "uvicorn"\n',
    )
    return {**example_images, "uvicorn": uvicorn}


def serve(
    resources: Resources,
    image: str,
    port: int,
    launch: dict[str, object],
    env: dict[str, str] | None = None,
) -> Container:
    """The image's server with two workers, its launch.json changed by `launch`."""
    extra: dict[str, object] = {}
    if launch:
        extra = {"entrypoint": [PYTHON], "command": ["-c", RELAUNCH, json.dumps(launch)]}
    return start_server(
        resources, image, port, env={"WEB_CONCURRENCY": "2", **(env or {})}, **extra
    )


def request(port: int, token: str, n: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", f"/healthz?t={token}-{n}")
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def send(port: int, token: str, count: int, *, parallel: int = 1) -> None:
    with ThreadPoolExecutor(parallel) as pool:
        statuses = list(pool.map(lambda n: request(port, token, n), range(count)))
    assert statuses == [200] * count


def logged(container: Container, token: str) -> list[int]:
    """The request numbers of `token` in the container's stdout, one per access line."""
    found = re.findall(rf"t={token}-(\d+) HTTP", logs(container, stderr=False))
    return sorted(int(n) for n in found)


def wait_logged(container: Container, token: str, count: int) -> list[int]:
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while True:
        found = logged(container, token)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.parametrize("path", list(PATHS))
def test_a_burst_arrives_while_the_server_runs_every_line_once(
    path: str, images: dict[str, str], resources: Resources, free_port: int
) -> None:
    spec = PATHS[path]
    container = serve(resources, images[spec.image_key], free_port, spec.launch)
    token = uuid.uuid4().hex[:12]
    send(free_port, token, BURST, parallel=32)
    # Still running: the lines came from the flusher, not from an exit.
    assert wait_logged(container, token, BURST) == list(range(BURST))
    container.reload()
    assert container.status == "running"


@pytest.mark.parametrize("path", list(PATHS))
def test_lines_buffered_at_sigterm_are_written_by_the_exit(
    path: str, images: dict[str, str], resources: Resources, free_port: int
) -> None:
    spec = PATHS[path]
    env = {FLUSH_ENV: NEVER}
    container = serve(resources, images[spec.image_key], free_port, spec.launch, env)
    token = uuid.uuid4().hex[:12]
    send(free_port, token, 50)
    assert logged(container, token) == [], "buffered: nothing written before the batch ends"
    container.stop(timeout=10)
    assert logged(container, token) == list(range(50))


def test_unbuffered_writes_each_line_at_once(
    images: dict[str, str], resources: Resources, free_port: int
) -> None:
    env = {FLUSH_ENV: NEVER}  # would hold buffered lines for an hour
    launch: dict[str, object] = {"access_log": "unbuffered"}
    container = serve(resources, images["fastapi-app"], free_port, launch, env)
    token = uuid.uuid4().hex[:12]
    send(free_port, token, 20)
    assert wait_logged(container, token, 20) == list(range(20))


@pytest.mark.parametrize("key", ["flask-app", "uvicorn"])
def test_off_writes_no_access_line(
    key: str, images: dict[str, str], resources: Resources, free_port: int
) -> None:
    container = serve(resources, images[key], free_port, {"access_log": "off"})
    token = uuid.uuid4().hex[:12]
    send(free_port, token, 20)
    status, _body = get(f"http://127.0.0.1:{free_port}/healthz", timeout=10)
    assert status == 200
    container.stop(timeout=10)
    assert logged(container, token) == []
    assert "healthz" not in logs(container)
