"""What the image does when it starts, resolved at planning: the launcher's settings
(launch.json), the HEALTHCHECK, and what `[tool.pydeploy.server]` asks of the server
choice that the build's app check settles. The builder stage, the image assembly, the
Dockerfile eject and the manifests read these from the plan, never from the config.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from pydeploy.config.models import ResourcesConfig
from pydeploy.plan.memory import WorkerMemory
from pydeploy.plan.memory import launch_keys as memory_launch_keys
from pydeploy.plan.servers import ServerType

Interface = Literal["wsgi", "asgi", "auto"]
WsgiWorker = Literal["async", "sync"]


@dataclass(frozen=True)
class Healthcheck:
    """The image's HEALTHCHECK (a probe of `path` on the live port) and the manifests'
    probes, in seconds; statuses from 200 up to `healthy_below` (400 or 500) are healthy
    (plan/health.py decides which, and `origin` says why)."""

    path: str
    interval: int
    timeout: int
    start_period: int
    retries: int
    healthy_below: int = 400
    origin: str = ""

    @property
    def any_answer(self) -> bool:
        """Any answer below 500 is alive: more than a kubelet httpGet probe accepts."""
        return self.healthy_below > 400

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "interval": self.interval,
            "timeout": self.timeout,
            "start_period": self.start_period,
            "retries": self.retries,
            "healthy_below": self.healthy_below,
            "origin": self.origin,
        }


@dataclass(frozen=True)
class Process:
    """One of `[tool.pydeploy.processes]`: the image with another command (the launcher
    runs it), its own replica count and resources."""

    name: str
    argv: tuple[str, ...]
    replicas: int
    resources: ResourcesConfig

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "command": list(self.argv),
            "replicas": self.replicas,
            "resources": self.resources.model_dump(),
        }


@dataclass(frozen=True)
class ServerPolicy:
    """`[tool.pydeploy.server]`'s say in the server choice, which the app check (it
    imports the app) must agree with."""

    type: ServerType  # the configured server; `auto`: chosen by the interface
    interface: Interface  # the forced interface; `auto`: detected, then checked
    worker_memory: int | None  # MiB per worker replacing the build's measurement
    wsgi_worker: WsgiWorker  # how gunicorn serves a WSGI app (decides its packages)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "interface": self.interface,
            "worker_memory": self.worker_memory,
            "wsgi_worker": self.wsgi_worker,
        }


@dataclass(frozen=True)
class LaunchSettings:
    """The launcher's launch.json: everything the image decides at start. The fields are
    the document's keys (payload/launcher.py parse_config reads them)."""

    app: str
    interface: str
    server: str
    factory: bool  # `app` is a factory's call (apptarget)
    port: int
    workers: int | None  # None: `auto`, decided at container start
    worker_memory_mb: int | None
    worker_memory_origin: str | None
    master_memory_mb: int | None
    wsgi_worker: str
    threads: int | None
    timeout: int
    graceful_timeout: int
    keepalive: int
    max_requests: int
    max_requests_jitter: int
    forwarded_allow_ips: str | None  # comma-separated, as the servers take them
    proxy_headers: bool
    access_log: str  # "buffered", "unbuffered" or "off" (the launcher's ACCESS_LOG_MODES)
    extra_args: tuple[str, ...]
    app_dir: str
    venv: str
    worker_lib: str
    healthcheck_path: str
    healthcheck_timeout: int
    healthcheck_healthy_below: int

    def document(self) -> dict[str, Any]:
        """launch.json's content (the launcher layer writes it with sorted keys)."""
        return {
            "app": self.app,
            "interface": self.interface,
            "server": self.server,
            "port": self.port,
            "workers": self.workers,
            "worker_memory_mb": self.worker_memory_mb,
            "worker_memory_origin": self.worker_memory_origin,
            "master_memory_mb": self.master_memory_mb,
            "wsgi_worker": self.wsgi_worker,
            "threads": self.threads,
            "timeout": self.timeout,
            "graceful_timeout": self.graceful_timeout,
            "keepalive": self.keepalive,
            "max_requests": self.max_requests,
            "max_requests_jitter": self.max_requests_jitter,
            "forwarded_allow_ips": self.forwarded_allow_ips,
            "proxy_headers": self.proxy_headers,
            "access_log": self.access_log,
            "extra_args": list(self.extra_args),
            "app_dir": self.app_dir,
            "venv": self.venv,
            "worker_lib": self.worker_lib,
            "healthcheck_path": self.healthcheck_path,
            "healthcheck_timeout": self.healthcheck_timeout,
            "healthcheck_healthy_below": self.healthcheck_healthy_below,
            # Only when set: the launch.json of an app object stays as it was.
            **({"factory": True} if self.factory else {}),
        }

    def settled(
        self, interface: str, server: str, memory: WorkerMemory | None = None
    ) -> LaunchSettings:
        """These settings once the interface and server are decided and, with `memory`,
        what the app check measured (without it, only `server.worker-memory` is known)."""
        measured = memory_launch_keys(memory, None) if memory is not None else {}
        return replace(self, interface=interface, server=server, **measured)
