"""Reliability contract: an engine or registry that stops answering fails the command within
a bound, with a paragraph and the right exit code; a lost engine connection is named as
such; a flaky registry is ridden out by retries; and layers a registry already holds in
another repository are mounted there, not uploaded again.

The faults are real sockets: a unix socket that accepts and never answers (as DOCKER_HOST),
one that answers the connection check and then drops every connection, a TCP listener that
never answers, and an HTTP proxy in front of the real registry that fails the first request
of each kind (a 503, or a dropped connection) and records what reached the registry.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pydeploy.errors import PublishError
from pydeploy.oci.blobs import BlobStore
from pydeploy.oci.config import ImageSettings, build_config, rfc3339
from pydeploy.oci.entries import FileEntry
from pydeploy.oci.image import Image
from pydeploy.oci.layer import build_layer
from pydeploy.publish import registry as regclient  # `registry` is the fixture's name

ROOT = Path(__file__).resolve().parents[3]
FASTAPI = ROOT / "examples" / "fastapi-app"
BOUND = 30.0  # seconds: what "fails promptly" means here, several times the real bounds


# --- fake engines -----------------------------------------------------------------------


class FakeEngine:
    """A unix socket server. `silent`: accept, read, never answer. `drop`: answer the
    connection check (/version, /_ping) like an engine, then close every connection that
    asks for anything else, as an engine that died would."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.dir = Path(tempfile.mkdtemp(prefix="pd-eng-", dir="/tmp"))  # sun_path is short
        self.path = self.dir / "docker.sock"
        self.asked: list[str] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.path))
        self._server.listen(16)
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                while b"\r\n\r\n" in buffer:
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    path = head.split(b" ", 2)[1].decode()
                    self.asked.append(path)
                    if self.mode == "silent":
                        continue
                    if not self._answer(conn, path):
                        conn.close()
                        return

    @staticmethod
    def _answer(conn: socket.socket, path: str) -> bool:
        route = path.split("?", 1)[0]
        if route.endswith("/_ping"):
            body, kind = b"OK", b"text/plain"
        elif route.endswith("/version"):
            body = b'{"ApiVersion":"1.41","MinAPIVersion":"1.12","Version":"20.10.24"}'
            kind = b"application/json"
        else:
            return False
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: " + kind
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )  # fmt: skip
        return True

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def fake_engine() -> Iterator[Callable[[str], FakeEngine]]:
    engines: list[FakeEngine] = []

    def start(mode: str) -> FakeEngine:
        engines.append(FakeEngine(mode))
        return engines[-1]

    yield start
    for engine in engines:
        engine.close()


def build_against(host: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """`pydeploy build` of a copy of the FastAPI example with DOCKER_HOST=host; killed
    (and so failing the test) after twice the bound."""
    project = tmp_path / "app"
    shutil.copytree(FASTAPI, project)
    env = {**os.environ, "DOCKER_HOST": host, "PYDEPLOY_CACHE_DIR": str(tmp_path / "cache")}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pydeploy", "build", str(project), "--base", "pydeploy-none:1"],
        capture_output=True, text=True, check=False, env=env, timeout=2 * BOUND,
    )  # fmt: skip
    return proc, time.monotonic() - started


def test_engine_that_never_answers_fails_the_build_promptly(
    fake_engine: Callable[[str], FakeEngine], tmp_path: Path
) -> None:
    engine = fake_engine("silent")
    proc, elapsed = build_against(engine.host, tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert elapsed < BOUND, f"took {elapsed:.1f} s"
    assert engine.asked, "pydeploy never reached the fake engine"
    assert f"No Docker engine answers at {engine.host}" in proc.stderr
    assert "accepted the connection but gave no answer within 10 s" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_lost_engine_connection_is_named_with_a_fix(
    fake_engine: Callable[[str], FakeEngine], tmp_path: Path
) -> None:
    engine = fake_engine("drop")
    proc, elapsed = build_against(engine.host, tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert elapsed < BOUND, f"took {elapsed:.1f} s"
    # The connection broke on a real call, after the ping answered (the first such call is
    # the reaping of killed builds' containers, then the base image lookup).
    assert any(p.endswith("/_ping") for p in engine.asked), engine.asked
    assert any(not p.endswith(("/_ping", "/version")) for p in engine.asked), engine.asked
    assert f"lost the connection to the Docker engine at {engine.host}" in proc.stderr
    assert "closed the connection without answering" in proc.stderr
    assert "docker info" in proc.stderr
    assert "refused an operation" not in proc.stderr
    assert "Traceback" not in proc.stderr


# --- registries -------------------------------------------------------------------------


def synthetic_image(store: BlobStore, salt: str) -> Image:
    layers = [
        build_layer(
            [FileEntry(f"opt/{salt}/data.bin", "file", 0o644, data=os.urandom(64 * 1024))],
            store=store, epoch=0, role="dependencies",
        ),
        build_layer(
            [FileEntry("app/main.py", "file", 0o644, data=f"print({salt!r})\n".encode())],
            store=store, epoch=0, role="app",
        ),
    ]  # fmt: skip
    config = build_config(
        {"architecture": "amd64", "os": "linux", "config": {}},
        [],
        [],
        layers,
        ImageSettings(
            user="10001",
            env={},
            entrypoint=["/usr/bin/python3"],
            cmd=None,
            workdir="/app",
            exposed_ports=[],
            labels={},
            stop_signal="SIGTERM",
            healthcheck=None,
            created=rfc3339(0),
        ),
    )
    return Image.from_config(store, config, layers)


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """No credentials or Docker config of the machine; everything else as it is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYDEPLOY_REGISTRY_")}
    env["DOCKER_CONFIG"] = str(tmp_path / "docker-config")
    return env


@pytest.fixture
def silent_tcp() -> Iterator[str]:
    """host:port of a loopback listener that accepts and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        with contextlib.suppress(OSError):  # the listener closed at teardown
            while not stop.is_set():
                accepted.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    server.close()
    for conn in accepted:
        conn.close()


def test_registry_that_never_answers_fails_the_push_promptly(
    silent_tcp: str, clean_env: dict[str, str], tmp_path: Path
) -> None:
    image = synthetic_image(BlobStore(tmp_path / "store"), "silent")
    clean_env["PYDEPLOY_REGISTRY_TIMEOUT"] = "2"
    outcome: list[BaseException | str] = []

    def push() -> None:
        try:
            outcome.append(regclient.push(image, f"{silent_tcp}/team/app:1", environ=clean_env))
        except Exception as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=push, daemon=True)
    worker.start()
    worker.join(BOUND)
    elapsed = time.monotonic() - started
    assert outcome, f"the push still waits after {elapsed:.0f} s"
    (error,) = outcome
    assert isinstance(error, PublishError), error
    message = error.message
    assert f"registry {silent_tcp} did not answer HEAD" in message
    assert "within 2 s (tried 3 times)" in message
    assert "PYDEPLOY_REGISTRY_TIMEOUT" in message
    # Plain HTTP was used already: telling the user to allow it would mislead.
    assert "PYDEPLOY_INSECURE_REGISTRIES" not in message


@dataclass
class Exchange:
    method: str
    path: str
    status: int  # 0: the proxy dropped the connection


@dataclass
class Proxy:
    address: str
    log: list[Exchange] = field(default_factory=list)

    def reached(self, repository: str) -> list[Exchange]:
        """What the registry answered (injected faults left out) for one repository."""
        return [e for e in self.log if f"/v2/{repository}/" in e.path and e.status not in {0, 503}]


def request_kind(method: str, path: str) -> str:
    """HEAD blob, POST upload, PUT upload, PUT manifest, GET ...: one fault per kind."""
    route = path.split("?", 1)[0]
    shape = re.sub(r"/v2/.+/(blobs/uploads|blobs|manifests)/.*", r"\1", route)
    return f"{method} {shape}"


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@pytest.fixture
def flaky_proxy() -> Iterator[Callable[[str, str], Proxy]]:
    """`start(upstream, fault)`: an HTTP proxy on loopback in front of `upstream`; fault
    "503" answers the first request of each kind with 503, "drop" closes its connection
    unanswered, "none" forwards everything. Every request is logged."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(upstream: str, fault: str) -> Proxy:
        proxy = Proxy("")
        faulted: set[str] = set()
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                kind = request_kind(self.command, self.path)
                with lock:
                    inject = fault != "none" and kind not in faulted
                    faulted.add(kind)
                if inject and fault == "drop":
                    proxy.log.append(Exchange(self.command, self.path, 0))
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if inject:
                    proxy.log.append(Exchange(self.command, self.path, 503))
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._forward(body)

            def _forward(self, body: bytes | None) -> None:
                conn = http.client.HTTPConnection(upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    payload = answer.read()
                finally:
                    conn.close()
                proxy.log.append(Exchange(self.command, self.path, answer.status))
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in _HOP_BY_HOP:
                        self.send_header(key, value)
                size = answer.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", size or str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _relay  # noqa: N815

            def log_message(self, *_args: Any) -> None:
                return

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        proxy.address = f"127.0.0.1:{server.server_address[1]}"
        return proxy

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def unique_repository(name: str) -> str:
    return f"pydeploy-test/{name}-{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("fault", ["503", "drop"])
def test_flaky_registry_push_succeeds_by_retrying(
    fault: str,
    registry: str,
    flaky_proxy: Callable[[str, str], Proxy],
    clean_env: dict[str, str],
    tmp_path: Path,
) -> None:
    proxy = flaky_proxy(registry, fault)
    image = synthetic_image(BlobStore(tmp_path / "store"), f"flaky-{fault}")
    repository = unique_repository("flaky")
    digest = regclient.push(image, f"{proxy.address}/{repository}:1", environ=clean_env)
    assert digest == image.manifest_digest
    injected = {request_kind(e.method, e.path) for e in proxy.log if e.status in {0, 503}}
    # Every kind of request a push sends met its fault once, and was retried.
    assert injected == {"HEAD blobs", "POST blobs/uploads", "PUT blobs/uploads", "PUT manifests"}
    fetched = regclient.fetch_manifest(f"{registry}/{repository}:1", environ=clean_env)
    assert fetched.digest == image.manifest_digest


def test_layers_held_in_another_repository_are_mounted_not_uploaded(
    registry: str,
    flaky_proxy: Callable[[str, str], Proxy],
    clean_env: dict[str, str],
    tmp_path: Path,
) -> None:
    proxy = flaky_proxy(registry, "none")
    image = synthetic_image(BlobStore(tmp_path / "store"), "mount")
    locations = regclient.BlobLocations(tmp_path / "cache")
    first, second = unique_repository("mount-a"), unique_repository("mount-b")
    blobs = [*(layer.digest for layer in image.layers), image.config_digest]

    events: list[regclient.PushEvent] = []
    regclient.push(image, f"{proxy.address}/{first}:1", environ=clean_env,
                  progress=events.append, locations=locations)  # fmt: skip
    assert sorted(e.digest for e in events if e.kind == "uploaded") == sorted(blobs)
    assert all(locations.sources(proxy.address, d) == [first] for d in blobs)

    events.clear()
    regclient.push(image, f"{proxy.address}/{second}:1", environ=clean_env,
                  progress=events.append, locations=locations)  # fmt: skip
    assert sorted(e.digest for e in events if e.kind == "mounted") == sorted(blobs)
    # What the registry itself said: a 201 to each mount request, and no upload at all.
    reached = proxy.reached(second)
    mounts = [e for e in reached if e.method == "POST"]
    assert sorted((e.path.split("mount=")[1].split("&")[0], e.status) for e in mounts) == sorted(
        (d.replace(":", "%3A"), 201) for d in blobs
    )
    assert all(f"from={first.replace('/', '%2F')}" in e.path for e in mounts)
    assert not [e for e in reached if e.method == "PUT" and "/blobs/uploads/" in e.path]
    assert (
        regclient.fetch_manifest(f"{registry}/{second}:1", environ=clean_env).digest
        == image.manifest_digest
    )
    assert locations.sources(proxy.address, blobs[0]) == [second, first]
