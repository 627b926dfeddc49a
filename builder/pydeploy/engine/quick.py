"""Questions for the engine that need no Docker SDK: plain HTTP/1.0 over its unix socket.

For the no-change fast path, where importing the SDK and its HTTP stack would cost more
than the whole answer. Only a local unix socket (DOCKER_HOST unset or `unix://`); any
other engine, an error or an unexpected answer gives None, and the caller does the work
the normal way."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from urllib.parse import quote, urlencode

DEFAULT_HOST = "unix:///var/run/docker.sock"
TIMEOUT = 5.0  # seconds: a fast path that waits longer is no faster than a build


def image_ids(names: Iterable[str]) -> dict[str, str | None] | None:
    """The engine's image ID of each name (None when absent), or None when it cannot be
    asked this way."""
    path = _socket_path()
    if path is None:
        return None
    found: dict[str, str | None] = {}
    try:
        for name in names:
            status, body = _get(path, f"/images/{quote(name, safe='/:@')}/json")
            if status == 404:
                found[name] = None
            elif status == 200:
                image_id = json.loads(body).get("Id")
                if not isinstance(image_id, str):
                    return None
                found[name] = image_id
            else:
                return None
    except (OSError, ValueError):
        return None
    return found


def tag(image_id: str, reference: str) -> bool:
    """Tag the image `image_id` as `reference` (`name:tag`); False when that could not be
    done this way."""
    socket_path = _socket_path()
    if socket_path is None:
        return False
    repository, _, name = reference.rpartition(":")
    target = f"/images/{quote(image_id, safe=':')}/tag?" + urlencode(
        {"repo": repository, "tag": name}
    )
    try:
        status, _ = _request(socket_path, "POST", target)
    except (OSError, ValueError):
        return False
    return status == 201


def _socket_path() -> str | None:
    host = os.environ.get("DOCKER_HOST") or DEFAULT_HOST
    return host.removeprefix("unix://") if host.startswith("unix://") else None


def _get(path: str, target: str) -> tuple[int, bytes]:
    return _request(path, "GET", target)


def _request(path: str, method: str, target: str) -> tuple[int, bytes]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(path)
        # Content-Length: 0 for a POST without a body, which the engine's HTTP/1.0 accepts.
        length = "Content-Length: 0\r\n" if method == "POST" else ""
        sock.sendall(f"{method} {target} HTTP/1.0\r\nHost: docker\r\n{length}\r\n".encode())
        chunks = []
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/"):
        raise ValueError("not an HTTP answer")
    return int(status_line[1]), body
