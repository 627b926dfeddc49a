"""Reliability contract: a killed build must not hurt the next one (issue 10).

`pydeploy build` is SIGKILLed (what the OOM killer, a CI hard timeout or a lost engine
connection amount to: no cleanup runs) while its install, or its app check, waits at a
gate this test holds (tests/fixtures/gated_app). Then:

- no container of the killed build keeps running for more than a short bounded time
  (they die with their owner), and none at all survives the next build (it reaps them);
- the next build with the same dependencies completes in its normal time, instead of
  waiting on the dead build's claim of the venv volume;
- the index credentials (a canary password in the index variables) appear nowhere in
  the configuration of any container the build had running at the moment of the kill.

`prune` racing a build runs on a private engine (started by this module; the shared
engine's caches belong to others): `prune --older-than 0` and `prune --all` while a build
waits at its app check both finish cleanly, and the build then succeeds.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import Resources

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "gated_app"
BUILD_LABEL = "pydeploy.build"
USER_ENV, PASSWORD_ENV = "PYDEPLOY_TEST_CANARY_USER", "PYDEPLOY_TEST_CANARY_PASSWORD"
ARRIVAL_TIMEOUT = 900.0  # a cold first build on a loaded machine resolves through the proxy
GONE_TIMEOUT = 60.0  # the killed build's running containers end within this
NEXT_BUILD_TIMEOUT = 400.0  # far above a normal warm build; far below the dead claim's wait


# --- the gate and the canary index ------------------------------------------------------


class Gate:
    """A loopback server the fixture's install and app import wait at. Each connection
    names its waiter; the first `hold` one is kept waiting (and `arrived` is set), every
    other is let through at once."""

    def __init__(self, hold: str) -> None:
        self.hold = hold
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.arrived = threading.Event()
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, name="gate", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            conn.settimeout(60)
            try:
                who = conn.recv(64).decode().strip()
            except OSError:
                conn.close()
                continue
            if who == self.hold and not self.arrived.is_set():
                self.held.append(conn)
                self.arrived.set()
            else:
                with contextlib.suppress(OSError):
                    conn.sendall(b"g")
                conn.close()

    def release(self) -> None:
        for conn in self.held:
            with contextlib.suppress(OSError):
                conn.sendall(b"g")
            conn.close()
        self.held.clear()

    def close(self) -> None:
        self.server.close()
        self.release()
        self.thread.join(timeout=10)


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(404)

    def log_message(self, *_args: object) -> None:
        pass


@contextlib.contextmanager
def canary_index() -> Iterator[str]:
    """An extra index that has nothing (uv moves on to the next), so the index
    credentials are configured without changing what gets installed."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def gated_project(dest: Path, gate: Gate, where: str, index_url: str) -> Path:
    """A copy of the fixture whose install (`where="install"`) or app import (`"app"`)
    waits at `gate`, with an index that needs the canary credentials."""
    project = shutil.copytree(FIXTURE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    spec = project / ("vendor/gatedpkg" if where == "install" else ".") / "gate.json"
    spec.write_text(json.dumps({"port": gate.port}), encoding="utf-8")
    with (project / "pyproject.toml").open("a", encoding="utf-8") as handle:
        handle.write(
            f'\n[tool.pydeploy.index]\nextra-urls = ["{index_url}"]\n'
            f'username-env = "{USER_ENV}"\npassword-env = "{PASSWORD_ENV}"\n'
        )
    return project


# --- the build under test ------------------------------------------------------------------


class Build:
    """`python -m pydeploy build` in a subprocess; stderr is collected as it comes, and
    the build id (from its first line) is known as soon as it is printed."""

    def __init__(self, project: Path, base_image: str, tag: str, env: dict[str, str]) -> None:
        argv = [sys.executable, "-m", "pydeploy", "build", str(project), "--base", base_image,
                "--network", "host", "--tag", tag, "--json"]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self.stdout: list[str] = []
        self.build_id = ""
        self.identified = threading.Event()
        self.readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        self.stdout.append(self.proc.stdout.read())

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if not self.build_id and "(build " in line:
                self.build_id = line.rsplit("(build ", 1)[1].split(")")[0]
                self.identified.set()
        self.identified.set()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def finish(self, timeout: float) -> tuple[int, str]:
        """(exit code, stdout); on timeout the build is stopped and the test fails."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=60)
            self._join()
            pytest.fail(f"the build did not finish within {timeout:g} s:\n{self.stderr[-3000:]}")
        self._join()
        return code, "".join(self.stdout)

    def kill(self) -> None:
        """SIGKILL, unless it has ended; either way its pipes are closed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)
        self._join()

    def _join(self) -> None:
        for reader in self.readers:
            reader.join(timeout=30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def containers_of(
    client: docker.DockerClient, build_id: str, *, running_only: bool = False
) -> list[Any]:
    assert build_id, "the build printed its id"
    filters: dict[str, Any] = {"label": f"{BUILD_LABEL}={build_id}"}
    return list(client.containers.list(all=not running_only, filters=filters))


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


@pytest.fixture
def build_env(tmp_path: Path) -> dict[str, str]:
    canary = f"pdt-canary-{uuid.uuid4().hex}"
    return {
        **os.environ, "PYDEPLOY_CACHE_DIR": str(tmp_path / "cache"),
        USER_ENV: "pydeploy-canary-user", PASSWORD_ENV: canary,
    }  # fmt: skip


def secrets_in(attrs: dict[str, Any], env: dict[str, str]) -> list[str]:
    """Where the canary credentials (or the variables meant to carry them) show up in a
    container's inspect document."""
    text = json.dumps(attrs)
    found = [name for name in (USER_ENV, PASSWORD_ENV) if env[name] in text]
    variables = [e.split("=", 1)[0] for e in attrs["Config"].get("Env") or []]
    found += [v for v in variables if v.startswith("UV_INDEX_PYDEPLOY_")]
    return found


def kill_at_the_gate(
    where: str,
    tmp_path: Path,
    base_image: str,
    docker_client: docker.DockerClient,
    resources: Resources,
    env: dict[str, str],
) -> None:
    """The scenario both kill tests share; `where` is the step the build is killed in."""
    gate = Gate(hold=where)
    tag = resources.image(f"pydeploy-test/gated:{uuid.uuid4().hex[:12]}")
    killed = ""
    try:
        with canary_index() as index_url:
            project = gated_project(tmp_path / "project", gate, where, index_url)
            first = Build(project, base_image, tag, env)
            try:
                assert first.identified.wait(timeout=120), first.stderr
                killed = first.build_id
                arrived = wait_until(
                    lambda: gate.arrived.is_set() or first.proc.poll() is not None,
                    ARRIVAL_TIMEOUT,
                )
                assert arrived, f"the {where} never reached the gate:\n{first.stderr}"
                assert gate.arrived.is_set(), f"the build ended early:\n{first.stderr}"
                alive = containers_of(docker_client, killed, running_only=True)
                assert alive, "the build's containers run while it waits at the gate"
                leaks = {c.id[:12]: secrets_in(c.attrs, env) for c in alive}
                assert not any(leaks.values()), f"credentials in container config: {leaks}"
            finally:
                first.kill()

            # Its containers end with it: nothing keeps running (or holding the gate).
            stopped = wait_until(
                lambda: not containers_of(docker_client, killed, running_only=True),
                GONE_TIMEOUT,
            )
            assert stopped, "the killed build's containers kept running"

            started = time.monotonic()
            second = Build(project, base_image, tag, env)
            code, stdout = second.finish(NEXT_BUILD_TIMEOUT)
            seconds = time.monotonic() - started
            assert code == 0, second.stderr[-4000:]
            volume = json.loads(stdout)["dependencies"]["volume"]
            resources.volume(volume)
            assert "Traceback" not in second.stderr
            assert f"waiting for build {killed}" not in second.stderr, (
                "a dead claim is not waited on"
            )
            assert containers_of(docker_client, killed) == [], "the next build reaped them"
            assert containers_of(docker_client, second.build_id) == []
            # The app-check images too (killed at the check, its image was loaded).
            for build_id in (killed, second.build_id):
                left = docker_client.images.list(
                    all=True, filters={"label": f"{BUILD_LABEL}={build_id}"}
                )
                assert left == [], f"check images of build {build_id} left: {left}"
            print(f"next build after a kill during the {where}: {seconds:.1f} s")
    finally:
        gate.close()
        if killed:  # whatever a failing run left behind
            for container in containers_of(docker_client, killed):
                resources.container(container)
            claim = {"label": f"pydeploy.venv.build={killed}"}
            for leftover in docker_client.volumes.list(filters=claim):
                resources.volume(leftover.name or "")


def test_sigkill_during_the_install_leaves_nothing_behind(
    tmp_path: Path,
    base_image: str,
    docker_client: docker.DockerClient,
    resources: Resources,
    build_env: dict[str, str],
) -> None:
    kill_at_the_gate("install", tmp_path, base_image, docker_client, resources, build_env)


def test_sigkill_during_the_app_check_leaves_nothing_behind(
    tmp_path: Path,
    base_image: str,
    docker_client: docker.DockerClient,
    resources: Resources,
    build_env: dict[str, str],
) -> None:
    kill_at_the_gate("app", tmp_path, base_image, docker_client, resources, build_env)


# --- prune racing a build (on a private engine) ---------------------------------------


def prune(env: dict[str, str], *args: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "pydeploy", "prune", *args, "--json"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    document: dict[str, Any] = json.loads(proc.stdout)
    return document


def read_volume_file(client: docker.DockerClient, image: str, volume: str, name: str) -> bytes:
    """A file from a volume, through the archive API of a container that never starts. Not
    through `cat` and the container's log: a last line without a newline can be missing
    from the log of a container that has just exited (seen here: the record lost its `}`)."""
    box = client.containers.create(
        image, ["true"], network_mode="none", volumes={volume: {"bind": "/v", "mode": "ro"}}
    )
    try:
        chunks, _ = box.get_archive(f"/v/{name}")
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.extractfile(name)
            assert member is not None, f"{name} in {volume} is not a file"
            return member.read()
    finally:
        box.remove(force=True)


def test_prune_racing_a_build_never_breaks_it(
    tmp_path: Path, base_image: str, private_engine: str, build_env: dict[str, str]
) -> None:
    """`prune --older-than 0` and `prune --all` while a build waits at its app check:
    both finish cleanly, leave alone what the build uses (its venv, the uv cache, its
    host cache), and the build then succeeds; its last use is recorded in the volume."""
    env = {**build_env, "DOCKER_HOST": private_engine}
    client = docker.DockerClient(base_url=private_engine, timeout=600)
    gate = Gate(hold="app")
    tag = f"pydeploy-test/gated:{uuid.uuid4().hex[:12]}"
    try:
        with canary_index() as index_url:
            project = gated_project(tmp_path / "project", gate, "app", index_url)
            build = Build(project, base_image, tag, env)
            try:
                arrived = wait_until(
                    lambda: gate.arrived.is_set() or build.proc.poll() is not None,
                    ARRIVAL_TIMEOUT,
                )
                assert arrived, f"the app check never reached the gate:\n{build.stderr}"
                assert gate.arrived.is_set(), f"the build ended early:\n{build.stderr}"
                used = {v.name for v in client.volumes.list()} - {None}
                used = {v for v in used if v.startswith(("pydeploy-venv-", "pydeploy-cache"))}
                assert len(used) == 2, used
                for args in (("--older-than", "0"), ("--all",)):
                    document = prune(env, *args)
                    removed = {item["name"] for item in document["items"]}
                    assert not removed & used, f"prune {args} removed {removed & used}"
                    reasons = {item["reason"] for item in document["kept"]}
                    assert "a build is using the host cache" in reasons, document["kept"]
                gate.release()
                code, stdout = build.finish(NEXT_BUILD_TIMEOUT)
            finally:
                build.kill()
        assert code == 0, build.stderr[-4000:]
        assert "Traceback" not in build.stderr
        result = json.loads(stdout)
        client.images.get(tag)
        volume = result["dependencies"]["volume"]
        record = read_volume_file(client, base_image, volume, ".pydeploy-used")
        assert abs(json.loads(record)["time"] - time.time()) < 3600
    finally:
        gate.close()
        client.close()
