"""The default servers under hostile clients and under `docker stop` (issue 10).

Reliability contract:
- 100 clients that trickle their request headers for 20 s do not stop the default WSGI
  image (examples/flask-app) from answering a normal client.
- `docker stop` under load, on the WSGI and the ASGI example with `--cpus 1`: every request
  sent before SIGTERM that fits inside the graceful timeout is answered, a request longer
  than it does not keep the container past docker's 10 s, and the exit code is 0.

Containers run with host networking on a free loopback port; clients speak raw HTTP/1.1 so
that the moment each request was sent is known. Set PYDEPLOY_STOP_ROUNDS to loop the stop
test more (the issue asks for 20 runs in a row by hand; CI runs a few per image).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from tests.integration.test_runtime import ONE_CPU, start_server

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.integration.conftest import Resources

SLOW_CLIENTS = 100
HOLD_SECONDS = 20.0
TRICKLE_INTERVAL = 0.5  # one header byte per slow client every this many seconds
NORMAL_TIMEOUT = 5.0  # generous: the machine is shared and loaded
STOP_TIMEOUT = 10  # docker stop's default
STOP_ROUNDS = int(os.environ.get("PYDEPLOY_STOP_ROUNDS", "3"))
LOAD_SECONDS = 2.0  # load before SIGTERM
# Requests that outlive the graceful timeout (8 s): cut, but they must not outlive docker's
# 10 s either. The others fit inside it and must all be answered.
OVERLONG_PATH = "/slow?seconds=30"
LOAD = (
    ("/slow?seconds=1", False),
    ("/slow?seconds=1", False),
    ("/slow?seconds=1", False),
    ("/slow?seconds=1", False),
    ("/slow?seconds=1", False),
    ("/slow?seconds=1", False),
    ("/", False),
    ("/", False),
    ("/", False),
    ("/", True),
    ("/", True),
    ("/", True),
    ("/slow?seconds=0.3", True),
)


def request_bytes(path: str, *, keep_alive: bool) -> bytes:
    close = "" if keep_alive else "Connection: close\r\n"
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{close}\r\n".encode()


def read_response(sock: socket.socket) -> tuple[int, bool]:
    """(status, whether the server closes the connection) of one response with a
    Content-Length body; raises OSError or ValueError when none arrives whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError(f"connection closed after {data[:60]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("connection closed in the body")
        body += chunk
    return status, headers.get("connection", "").lower() == "close"


# --- slow clients ---------------------------------------------------------------------------


def test_slow_clients_do_not_starve_the_wsgi_image(
    example_images: dict[str, str], resources: Resources, free_port: int
) -> None:
    container = start_server(resources, example_images["flask-app"], free_port)
    head = request_bytes("/", keep_alive=True)
    slow = [
        socket.create_connection(("127.0.0.1", free_port), timeout=NORMAL_TIMEOUT)
        for _ in range(SLOW_CLIENTS)
    ]
    done = threading.Event()

    def trickle() -> None:
        # Never the final CRLF: each request stays incomplete for as long as the test holds.
        for offset in range(len(head) - 2):
            for sock in slow:
                # The server may drop a slow client; that is its right.
                with contextlib.suppress(OSError):
                    sock.sendall(head[offset : offset + 1])
            if done.wait(TRICKLE_INTERVAL):
                return

    trickler = threading.Thread(target=trickle, daemon=True)
    answered, failures = 0, []
    try:
        trickler.start()
        deadline = time.monotonic() + HOLD_SECONDS
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(
                    ("127.0.0.1", free_port), timeout=NORMAL_TIMEOUT
                ) as sock:
                    sock.sendall(request_bytes("/", keep_alive=False))
                    status, _ = read_response(sock)
                if status == 200:
                    answered += 1
                else:
                    failures.append(f"HTTP {status}")
            except (OSError, ValueError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.2)
    finally:
        done.set()
        trickler.join(10)
        for sock in slow:
            sock.close()
    container.reload()
    assert container.status == "running"
    assert not failures, (
        f"with {SLOW_CLIENTS} slow clients, {len(failures)} normal requests failed "
        f"({answered} answered): {failures[:5]}"
    )
    assert answered >= 10, f"only {answered} normal requests in {HOLD_SECONDS:g} s"


# --- docker stop under load -----------------------------------------------------------------


@dataclass
class Ledger:
    """What the load clients saw, against the moment SIGTERM was sent."""

    sigterm_at: float | None = None
    answered_before: int = 0
    lost_before: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, sent_at: float, path: str, error: str | None) -> None:
        with self.lock:
            if self.sigterm_at is not None and sent_at >= self.sigterm_at:
                return  # sent after SIGTERM: the server may refuse or reset it
            if error is None:
                self.answered_before += 1
            else:
                self.lost_before.append(f"{path}: {error}")


def load_client(
    port: int, path: str, keep_alive: bool, ledger: Ledger, stop: threading.Event
) -> None:
    sock: socket.socket | None = None
    while not stop.is_set():
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(request_bytes(path, keep_alive=keep_alive))
        except OSError:
            if sock is not None:
                sock.close()
            sock = None
            time.sleep(0.05)  # refused once the server stops listening
            continue
        sent_at = time.monotonic()
        error: str | None = None
        closes = True
        try:
            status, closes = read_response(sock)
            if status != 200:
                error = f"HTTP {status}"
        except (OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        if path != OVERLONG_PATH:
            ledger.record(sent_at, f"{path} ({'keep-alive' if keep_alive else 'close'})", error)
        if error is not None or closes or not keep_alive:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()


@pytest.mark.parametrize("app", ["flask-app", "fastapi-app"])
def test_docker_stop_under_load_answers_every_accepted_request(
    app: str,
    example_images: dict[str, str],
    resources: Resources,
    free_port_factory: Callable[[], int],
) -> None:
    outcomes = []
    for round_ in range(STOP_ROUNDS):
        port = free_port_factory()
        container = start_server(resources, example_images[app], port, nano_cpus=ONE_CPU)
        ledger, stop = Ledger(), threading.Event()
        load = [*LOAD, (OVERLONG_PATH, False)]
        clients = [
            threading.Thread(target=load_client, args=(port, p, k, ledger, stop), daemon=True)
            for p, k in load
        ]
        for client in clients:
            client.start()
        time.sleep(LOAD_SECONDS)
        with ledger.lock:
            ledger.sigterm_at = time.monotonic()
        started = time.monotonic()
        container.stop(timeout=STOP_TIMEOUT)
        took = time.monotonic() - started
        stop.set()
        for client in clients:
            client.join(40)
        container.reload()
        code = int(container.attrs["State"]["ExitCode"])
        outcomes.append(
            f"round {round_ + 1}: exit {code} after {took:.1f} s, "
            f"{ledger.answered_before} answered, {len(ledger.lost_before)} lost "
            f"{ledger.lost_before[:3]}"
        )
        container.remove(force=True)
        assert code == 0, "\n".join(outcomes)
        assert not ledger.lost_before, "\n".join(outcomes)
        assert ledger.answered_before > 0, "\n".join(outcomes)
