"""The gunicorn worker classes of pydeploy's images: uvicorn's event loop in front of the app.

pydeploy copies this file into the image as /opt/pydeploy/lib/pydeploy_workers.py; the
launcher names its classes with `--worker-class` and puts that directory on gunicorn's
`--pythonpath` (a directory of its own, so it shadows no module of the app). It runs in the
image's virtualenv, next to gunicorn, uvicorn, uvicorn-worker and a2wsgi; it never imports
pydeploy and is never imported on the host.

- `WSGIWorker`, the default for WSGI apps: uvicorn reads and parses each request on its
  event loop, so a client that trickles its headers (slowloris) holds a socket, not a
  worker; only complete requests reach the app, which runs in a pool of `--threads`
  threads through a2wsgi. gunicorn's sync worker gives each connection the whole process:
  six slow clients starved five workers.
- `ASGIWorker`, for ASGI apps: uvicorn-worker's worker with the same shutdown rule.

Both change two things in uvicorn's shutdown:
- It is bounded by gunicorn's `--graceful-timeout`. uvicorn-worker passes none, so uvicorn
  waits for every open connection without limit and only the master's SIGKILL at the
  graceful timeout ends the worker, skipping the app's lifespan shutdown (and, with a
  timeout above the orchestrator's, `docker stop` kills the container).
- It starts after a short grace in which the worker goes on as before. uvicorn closes
  its listener and every idle connection at once: a request already sent on an idle
  connection but not yet read, and connections still queued in the listen backlog (reset
  when the last worker closes the socket), were dropped although sent before SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server

try:
    from uvicorn_worker import UvicornWorker
except ImportError:  # a project pinning uvicorn < 0.36 keeps uvicorn's own copy of the class
    from uvicorn.workers import UvicornWorker

# Of the graceful timeout, what uvicorn leaves for the lifespan shutdown and the worker's
# exit before the master's SIGKILL.
EXIT_MARGIN_SECONDS = 1.0
# How long a stopping worker still accepts and reads before uvicorn's shutdown begins:
# many event-loop turns, even on a loaded CPU; it counts against the graceful timeout.
READ_GRACE_SECONDS = 0.5


class _GraceServer(Server):  # type: ignore[misc]  # untyped in the dev environment
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if not self.force_exit:  # a second signal (or SIGQUIT) means now
            await asyncio.sleep(READ_GRACE_SECONDS)
        await super().shutdown(sockets)
        # uvicorn re-raises SIGTERM with the default action once this returns, which kills
        # the worker before logging's exit flush: write the buffered access lines now.
        for handler in logging.getLogger("uvicorn.access").handlers:
            handler.flush()


class ASGIWorker(UvicornWorker):  # type: ignore[misc]  # untyped in the dev environment
    """uvicorn-worker's worker, whose shutdown reads what was sent before SIGTERM and
    ends before the master's SIGKILL."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        budget = float(self.cfg.graceful_timeout) - EXIT_MARGIN_SECONDS - READ_GRACE_SECONDS
        self.config.timeout_graceful_shutdown = max(0.0, budget)

    async def _serve(self) -> None:
        # uvicorn-worker's own _serve, with the server class above.
        self.config.app = self.wsgi
        server = _GraceServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


class WSGIWorker(ASGIWorker):
    """A WSGI app behind uvicorn: requests are read asynchronously, run in threads."""

    wsgi: Any  # the loaded app: gunicorn's WSGI callable, then the ASGI adapter around it

    def load_wsgi(self) -> None:
        from a2wsgi import WSGIMiddleware  # noqa: PLC0415 -- only WSGI images install it

        super().load_wsgi()
        self.wsgi = WSGIMiddleware(self.wsgi, workers=max(1, int(self.cfg.threads)))
