"""The generated server entrypoint, in real images built by `pydeploy build` (issue 5).

Each example is built once per session (the `example_images` fixture) and run with host
networking on a free PORT; the tests speak HTTP to it on 127.0.0.1 and look inside it
through /proc (the images have no `ps`). Containers that only answer questions share one
container per example; anything that stops, kills or misconfigures a server gets its own.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import docker
    from docker.models.containers import Container
    from tests.integration.conftest import BuildImage, Resources

APPS = ("flask-app", "django-app", "fastapi-app")
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
PYTHON = "/opt/venv/bin/python"
LAUNCHER = "/opt/pydeploy/launcher.py"
GUNICORN = "/opt/venv/bin/gunicorn"
SHELLS = {"sh", "bash", "dash", "ash", "busybox"}

SECOND = 1_000_000_000
ONE_CPU = SECOND  # nano_cpus, i.e. `docker run --cpus 1`
# Only the timing is overridden: the engine keeps the image's own test command (the
# launcher's probe), so a healthy status still proves the image's HEALTHCHECK works.
FAST_HEALTHCHECK = {"interval": SECOND, "start_period": SECOND}

START_TIMEOUT = 45.0  # image start to first 200 on a loaded 2-core CI machine
SETTLE_TIMEOUT = 20.0  # workers booting or being replaced

STARTUP_LINE = re.compile(
    r"^pydeploy-launcher: (?P<server>[\w-]+), (?P<count>\d+) workers? \((?P<reason>[^)]*)\)",
    re.MULTILINE,
)

# Runs inside the image: every process with its parent, state and argv, from /proc.
PROCESS_TABLE = r"""
import json, os
table = {}
for entry in os.listdir("/proc"):
    if not entry.isdigit():
        continue
    try:
        with open("/proc/%s/stat" % entry) as f:
            stat = f.read()
        with open("/proc/%s/cmdline" % entry, "rb") as f:
            raw = f.read()
    except OSError:
        continue  # it exited while we looked
    fields = stat.rsplit(")", 1)[1].split()
    argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
    table[entry] = {"state": fields[0], "ppid": int(fields[1]), "argv": argv}
print(json.dumps(table))
"""

# Runs inside the image as the runtime user.
USER_PROBE = r"""
import json, os, shutil
writable = []
for root, dirs, files in os.walk("/app"):
    for name in [root] + [os.path.join(root, n) for n in files]:
        if os.access(name, os.W_OK):
            writable.append(name)
try:
    with open("/app/.pydeploy-write-probe", "w"):
        pass
except OSError as exc:
    created = type(exc).__name__
else:
    os.remove("/app/.pydeploy-write-probe")
    created = "created"
names = ("gcc", "cc", "c++", "g++", "clang", "x86_64-linux-gnu-gcc")
compilers = {c: shutil.which(c) for c in names}
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "home": os.path.expanduser("~"),
    "writable": writable, "create": created,
    "compilers": {c: p for c, p in compilers.items() if p},
}))
"""

# Runs inside the image as root, who can see into every home directory.
ROOT_PROBE = r"""
import glob, json, sys
patterns = ["/root/.cache/pip", "/root/.cache/uv", "/home/*/.cache/pip", "/home/*/.cache/uv",
            sys.argv[1] + "/.cache/pip", "/tmp/pip-*", "/var/cache/pip"]
caches = sorted({p for pattern in patterns for p in glob.glob(pattern)})
wheels = sorted(p for top in ("/opt", "/app", "/tmp", "/root", "/home")
                for p in glob.glob(top + "/**/*.whl", recursive=True))
print(json.dumps({"caches": caches, "wheels": wheels}))
"""

# Loopback servers must never be reached through a proxy from the environment.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str, timeout: float = 10.0) -> tuple[int, Any]:
    """GET without proxies: (status, decoded JSON body, or the text if not JSON)."""
    try:
        with _direct.open(url, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            status, raw = exc.code, exc.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def logs(container: Container, *, stdout: bool = True, stderr: bool = True) -> str:
    raw = container.logs(stdout=stdout, stderr=stderr)
    assert isinstance(raw, bytes)  # not streamed
    return raw.decode("utf-8", "replace")


def fail_with_logs(container: Container, message: str) -> NoReturn:
    pytest.fail(f"{message}\n--- container logs ---\n{logs(container)[-4000:]}", pytrace=False)


def wait_serving(container: Container, port: int, timeout: float = START_TIMEOUT) -> None:
    """Until /healthz answers 200; fail at once, with the logs, if the container exits."""
    url = f"http://127.0.0.1:{port}/healthz"
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while True:
        container.reload()
        if container.status not in {"created", "running"}:
            code = container.attrs["State"]["ExitCode"]
            fail_with_logs(container, f"the container exited (code {code}) before serving")
        try:
            status, body = get(url, timeout=2)
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                return
            last = f"HTTP {status}: {body}"
        if time.monotonic() >= deadline:
            fail_with_logs(container, f"{url} did not answer 200 within {timeout:g} s; {last}")
        time.sleep(0.2)


def start_server(
    resources: Resources,
    image: str,
    port: int,
    env: dict[str, str] | None = None,
    **kwargs: Any,
) -> Container:
    """A registered container of `image` serving on `port`, once it answers."""
    container = resources.create(
        image,
        environment={"PORT": str(port), **(env or {})},
        healthcheck=FAST_HEALTHCHECK,
        **kwargs,
    )
    container.start()
    wait_serving(container, port)
    return container


def exec_python(container: Container, code: str, *args: str, user: str = "") -> str:
    """Run a Python snippet with the image's interpreter; its output."""
    result = container.exec_run([PYTHON, "-c", code, *args], user=user)
    raw = result.output
    assert isinstance(raw, bytes)  # not streamed
    output = raw.decode("utf-8", "replace")
    assert result.exit_code == 0, f"probe failed in the container:\n{output}"
    return output


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str
    argv: list[str]


def processes(container: Container) -> dict[int, Proc]:
    table = json.loads(exec_python(container, PROCESS_TABLE))
    return {
        int(pid): Proc(int(pid), row["ppid"], row["state"], row["argv"])
        for pid, row in table.items()
    }


def live_children(table: dict[int, Proc], parent: int) -> list[Proc]:
    return sorted(
        (p for p in table.values() if p.ppid == parent and p.state != "Z"), key=lambda p: p.pid
    )


def wait_for(
    container: Container,
    what: str,
    condition: Callable[[dict[int, Proc]], bool],
    timeout: float = SETTLE_TIMEOUT,
) -> dict[int, Proc]:
    """Poll the process table until `condition` holds twice in a row, 0.5 s apart (a
    master still forking more workers passes through the expected count)."""
    deadline = time.monotonic() + timeout
    held = False
    while True:
        table = processes(container)
        if condition(table):
            if held:
                return table
            held = True
        else:
            held = False
        if time.monotonic() >= deadline:
            rows = "\n".join(f"{p.pid} ppid={p.ppid} {p.state} {p.argv}" for p in table.values())
            fail_with_logs(container, f"never saw {what} within {timeout:g} s:\n{rows}")
        time.sleep(0.5)


def wait_workers(container: Container, parent: int, count: int) -> list[int]:
    table = wait_for(
        container,
        f"{count} live children of PID {parent}",
        lambda t: len(live_children(t, parent)) == count,
    )
    return [p.pid for p in live_children(table, parent)]


def startup_line(container: Container) -> re.Match[str]:
    match = STARTUP_LINE.search(logs(container, stdout=False))
    if match is None:
        fail_with_logs(container, "no launcher startup line on stderr")
    return match


@dataclass
class Outcome:
    status: int | None = None
    body: Any = None
    error: str | None = None


def request_in_background(url: str, timeout: float) -> tuple[threading.Thread, Outcome]:
    outcome = Outcome()

    def run() -> None:
        try:
            outcome.status, outcome.body = get(url, timeout=timeout)
        except (OSError, http.client.HTTPException) as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def stop_timed(container: Container, timeout: int = 10) -> tuple[float, int]:
    """`docker stop` (SIGTERM, SIGKILL after `timeout`): seconds it took and exit code."""
    started = time.monotonic()
    container.stop(timeout=timeout)
    elapsed = time.monotonic() - started
    container.reload()
    return elapsed, int(container.attrs["State"]["ExitCode"])


def build_variant(
    pydeploy_build: BuildImage,
    tmp_path_factory: pytest.TempPathFactory,
    app: str,
    name: str,
    toml: str,
) -> str:
    """A copy of an example with `toml` appended to its pyproject.toml, built for real."""
    project = tmp_path_factory.mktemp(name) / app
    shutil.copytree(
        EXAMPLES_DIR / app, project, ignore=shutil.ignore_patterns("__pycache__", ".venv")
    )
    with (project / "pyproject.toml").open("a", encoding="utf-8") as pyproject:
        pyproject.write("\n" + toml)
    return pydeploy_build(project, name)


# --- one container per example, shared by the tests that only look ----------------------


@dataclass(frozen=True)
class Served:
    app: str
    image: str
    container: Container
    port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module", params=APPS)
def served(
    request: pytest.FixtureRequest,
    example_images: dict[str, str],
    session_resources: Resources,
    free_port_factory: Callable[[], int],
) -> Iterator[Served]:
    """An example's image running under `--cpus 1`, with the short healthcheck interval."""
    app: str = request.param
    port = free_port_factory()
    container = start_server(session_resources, example_images[app], port, nano_cpus=ONE_CPU)
    yield Served(app, example_images[app], container, port)
    container.remove(force=True)


def test_answers_http_from_a_worker(served: Served) -> None:
    assert get(served.url("/")) == (200, {"app": served.app, "message": "hello"})
    assert get(served.url("/healthz")) == (200, {"status": "ok"})
    status, body = get(served.url("/pid"))
    assert status == 200
    # The answer came from a worker process forked by PID 1, not from PID 1 itself.
    worker = processes(served.container)[body["pid"]]
    assert worker.ppid == 1, worker


def test_pid1_is_the_gunicorn_master_not_a_shell(served: Served) -> None:
    argv = processes(served.container)[1].argv
    assert Path(argv[0]).name not in SHELLS, argv
    assert Path(argv[0]).name.startswith("python"), argv  # gunicorn's script shebang
    assert argv[1] == GUNICORN, argv
    worker_class = argv[argv.index("--worker-class") + 1]
    expected = "ASGIWorker" if served.app == "fastapi-app" else "WSGIWorker"
    assert worker_class == f"pydeploy_workers.{expected}", argv
    # gunicorn names the master's PID when it binds: it must be 1.
    assert f"Listening at: http://0.0.0.0:{served.port} (1)" in logs(served.container)


def test_one_cpu_gives_three_workers(served: Served) -> None:
    assert len(wait_workers(served.container, 1, 3)) == 3
    line = startup_line(served.container)
    assert line["server"] == ("gunicorn-uvicorn" if served.app == "fastapi-app" else "gunicorn")
    assert line["count"] == "3", line[0]
    assert re.search(r"CPU quota 1(\.0)?\b", line["reason"]), line[0]


def test_access_log_goes_to_stdout(served: Served) -> None:
    marker = uuid.uuid4().hex
    assert get(served.url(f"/?probe={marker}"))[0] == 200
    wanted = f'"GET /?probe={marker} HTTP/1.1" 200'
    deadline = time.monotonic() + 10
    while wanted not in logs(served.container, stderr=False):
        if time.monotonic() >= deadline:
            fail_with_logs(served.container, f"no access log line {wanted} on stdout")
        time.sleep(0.2)
    assert wanted not in logs(served.container, stdout=False)


def test_healthcheck_turns_healthy(served: Served, docker_client: docker.DockerClient) -> None:
    test = docker_client.images.get(served.image).attrs["Config"]["Healthcheck"]["Test"]
    assert test == ["CMD", PYTHON, LAUNCHER, "--healthcheck"]
    deadline = time.monotonic() + 30
    while True:
        served.container.reload()
        health = served.container.attrs["State"]["Health"]
        if health["Status"] == "healthy":
            break
        if time.monotonic() >= deadline:
            fail_with_logs(served.container, f"not healthy within 30 s: {health}")
        time.sleep(0.5)
    probe = health["Log"][-1]
    assert probe["ExitCode"] == 0, probe
    assert f"GET http://127.0.0.1:{served.port}/healthz -> 200" in probe["Output"], probe


def test_runtime_user_is_unprivileged_and_image_carries_no_build_tools(served: Served) -> None:
    user = json.loads(exec_python(served.container, USER_PROBE))
    assert user["uid"] != 0, user
    assert user["gid"] != 0, user
    assert user["writable"] == [], "the runtime user can write to the app's files"
    assert user["create"] == "PermissionError", user
    assert user["compilers"] == {}, user
    found = json.loads(exec_python(served.container, ROOT_PROBE, user["home"], user="0"))
    assert found == {"caches": [], "wheels": []}


# --- worker counts ------------------------------------------------------------------


@pytest.mark.parametrize("app", APPS)
def test_two_cpus_give_five_workers(
    app: str, example_images: dict[str, str], resources: Resources, free_port: int
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("`--cpus 2` needs a machine with at least 2 CPUs")
    container = start_server(resources, example_images[app], free_port, nano_cpus=2 * ONE_CPU)
    assert len(wait_workers(container, 1, 5)) == 5
    line = startup_line(container)
    assert line["count"] == "5", line[0]
    assert re.search(r"CPU quota 2(\.0)?\b", line["reason"]), line[0]


@pytest.mark.parametrize("app", APPS)
def test_web_concurrency_overrides_the_cpu_quota(
    app: str, example_images: dict[str, str], resources: Resources, free_port: int
) -> None:
    container = start_server(
        resources,
        example_images[app],
        free_port,
        env={"WEB_CONCURRENCY": "2"},
        nano_cpus=ONE_CPU,  # would give 3
    )
    assert len(wait_workers(container, 1, 2)) == 2
    line = startup_line(container)
    assert line["count"] == "2", line[0]
    assert line["reason"] == "WEB_CONCURRENCY=2", line[0]


# --- failure and shutdown -----------------------------------------------------------


@pytest.mark.parametrize("app", APPS)
def test_killed_worker_is_replaced(
    app: str, example_images: dict[str, str], resources: Resources, free_port: int
) -> None:
    container = start_server(
        resources, example_images[app], free_port, env={"WEB_CONCURRENCY": "2"}
    )
    before = wait_workers(container, 1, 2)
    victim = before[0]
    exec_python(container, f"import os, signal; os.kill({victim}, signal.SIGKILL)")
    # The other worker keeps serving while the master notices.
    assert get(f"http://127.0.0.1:{free_port}/")[0] == 200

    def replaced(table: dict[int, Proc]) -> bool:
        now = [p.pid for p in live_children(table, 1)]
        # gone from the table altogether: reaped by the master, not left a zombie
        return victim not in table and len(now) == 2 and set(now) != set(before)

    after = [p.pid for p in live_children(wait_for(container, "a replacement worker", replaced), 1)]
    assert victim not in after
    for _ in range(5):
        assert get(f"http://127.0.0.1:{free_port}/")[0] == 200


@pytest.mark.parametrize("app", APPS)
def test_sigterm_lets_an_inflight_request_finish(
    app: str, example_images: dict[str, str], resources: Resources, free_port: int
) -> None:
    container = start_server(resources, example_images[app], free_port)
    thread, outcome = request_in_background(
        f"http://127.0.0.1:{free_port}/slow?seconds=2", timeout=15
    )
    time.sleep(0.7)  # the request is being served when SIGTERM arrives
    elapsed, exit_code = stop_timed(container, timeout=10)
    thread.join(15)
    assert (outcome.status, outcome.body, outcome.error) == (200, {"slept": 2.0}, None)
    assert exit_code == 0, logs(container)
    assert elapsed < 8, f"docker stop took {elapsed:.1f} s"


GRACEFUL_TIMEOUT = 2


@pytest.fixture(scope="module")
def short_graceful_image(
    pydeploy_build: BuildImage, tmp_path_factory: pytest.TempPathFactory
) -> str:
    return build_variant(
        pydeploy_build,
        tmp_path_factory,
        "flask-app",
        "flask-app-graceful",
        f"[tool.pydeploy.server]\ngraceful-timeout = {GRACEFUL_TIMEOUT}\n",
    )


def test_request_longer_than_graceful_timeout_is_cut(
    short_graceful_image: str, resources: Resources, free_port: int
) -> None:
    container = start_server(resources, short_graceful_image, free_port)
    thread, outcome = request_in_background(
        f"http://127.0.0.1:{free_port}/slow?seconds=20", timeout=30
    )
    time.sleep(0.7)
    elapsed, exit_code = stop_timed(container, timeout=10)
    thread.join(10)
    assert not thread.is_alive()
    # Cut before the graceful timeout: uvicorn cancels the request at its bound (a 500), or
    # the master SIGKILLs the worker mid-request (the connection drops); never a 200.
    assert outcome.status in {None, 500}, outcome
    assert (outcome.status is None) == (outcome.error is not None), outcome
    # The server waited for the request (the worker's own bound is a little under the
    # graceful timeout), then exited by itself (137 would mean the engine SIGKILLed it).
    assert GRACEFUL_TIMEOUT / 2 <= elapsed < GRACEFUL_TIMEOUT + 4, f"stop took {elapsed:.1f} s"
    assert exit_code != 137, logs(container)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("WEB_CONCURRENCY", "abc"), ("WEB_CONCURRENCY", "0"), ("PORT", "0"), ("PORT", "http")],
)
def test_invalid_environment_exits_with_one_line(
    variable: str,
    value: str,
    example_images: dict[str, str],
    resources: Resources,
    free_port: int,
) -> None:
    result = resources.run(
        example_images["flask-app"],
        environment={"PORT": str(free_port), variable: value},
        timeout=30,
    )
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0, result.output
    assert len(lines) == 1, result.output
    assert f"{variable}=" in lines[0], lines[0]
    assert "Traceback" not in result.output


# --- uvicorn's own supervisor under the launcher ------------------------------------------


@pytest.fixture(scope="module")
def uvicorn_image(pydeploy_build: BuildImage, tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_variant(
        pydeploy_build,
        tmp_path_factory,
        "fastapi-app",
        "fastapi-app-uvicorn",
        '[tool.pydeploy.server]\ntype = "uvicorn"\n',
    )


def test_uvicorn_mode_runs_under_the_launcher_as_pid1(
    uvicorn_image: str, resources: Resources, free_port: int
) -> None:
    container = start_server(resources, uvicorn_image, free_port, nano_cpus=ONE_CPU)
    assert get(f"http://127.0.0.1:{free_port}/") == (
        200,
        {"app": "fastapi-app", "message": "hello"},
    )
    table = processes(container)
    assert table[1].argv[:2] == [PYTHON, LAUNCHER], table[1]
    (server,) = live_children(table, 1)
    assert server.argv[1] == "/opt/venv/bin/uvicorn", server

    def three_workers(t: dict[int, Proc]) -> bool:
        spawned = [
            p for p in live_children(t, server.pid) if "multiprocessing.spawn" in str(p.argv)
        ]
        return len(spawned) == 3

    wait_for(container, "3 uvicorn workers", three_workers)
    line = startup_line(container)
    assert (line["server"], line["count"]) == ("uvicorn", "3"), line[0]
    assert "supervised by the launcher as PID 1" in logs(container, stdout=False)

    # SIGTERM reaches uvicorn through the launcher; the in-flight request still finishes.
    thread, outcome = request_in_background(
        f"http://127.0.0.1:{free_port}/slow?seconds=2", timeout=15
    )
    time.sleep(0.7)
    elapsed, exit_code = stop_timed(container, timeout=10)
    thread.join(15)
    assert (outcome.status, outcome.body, outcome.error) == (200, {"slept": 2.0}, None)
    assert exit_code == 0, logs(container)
    assert elapsed < 8, f"docker stop took {elapsed:.1f} s"
