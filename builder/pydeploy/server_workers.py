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

Both bound uvicorn's graceful shutdown by gunicorn's `--graceful-timeout`. uvicorn-worker
passes none, so uvicorn waits for every open connection without limit and only the
master's SIGKILL at the graceful timeout ends the worker, skipping the app's lifespan
shutdown (and, with a timeout above the orchestrator's, `docker stop` kills the container).
"""

from __future__ import annotations

from typing import Any

from a2wsgi import WSGIMiddleware
from uvicorn_worker import UvicornWorker

# Of the graceful timeout, what uvicorn leaves for the lifespan shutdown and the worker's
# exit before the master's SIGKILL.
EXIT_MARGIN_SECONDS = 1.0


class ASGIWorker(UvicornWorker):  # type: ignore[misc]  # untyped in the dev environment
    """uvicorn-worker's worker, whose drain ends before the master's SIGKILL."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        graceful = float(self.cfg.graceful_timeout)
        self.config.timeout_graceful_shutdown = max(0.0, graceful - EXIT_MARGIN_SECONDS)


class WSGIWorker(ASGIWorker):
    """A WSGI app behind uvicorn: requests are read asynchronously, run in threads."""

    wsgi: Any  # the loaded app: gunicorn's WSGI callable, then the ASGI adapter around it

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = WSGIMiddleware(self.wsgi, workers=max(1, int(self.cfg.threads)))
