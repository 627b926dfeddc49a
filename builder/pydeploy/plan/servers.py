"""The servers pydeploy runs, stated once for the host: which interface each serves, the
program it starts, what it needs in the venv, what its worker imports and how many
processes it adds, and how `tool.pydeploy.server.type` plus the app's interface settle
on one of them.

The two programs that run inside containers (payload/launcher.py, payload/builder_script.py)
are stdlib-only files copied alone, so they cannot import this: the builder script is sent
the worker modules in its job, and the launcher keeps its own copy of the name -> interface
map, which a unit test pins to this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pydeploy.plan.planner import BuildPlan

# `tool.pydeploy.server.type`: a server's name, or `auto` (chosen by the app's interface).
ServerType = Literal["auto", "gunicorn", "gunicorn-uvicorn", "uvicorn"]
Interface = Literal["wsgi", "asgi"]

# httptools: uvicorn's fast HTTP parser (uvicorn picks it when installed; its h11 fallback
# served half as many requests/s).
_UVICORN = ("uvicorn", "httptools")
# pydeploy's worker classes (server_workers.py) override uvicorn-worker's private `_serve`:
# a release that changes it must not reach images before it is tested.
_GUNICORN_UVICORN = ("gunicorn", *_UVICORN, "uvicorn-worker>=0.4,<0.5")
_GUNICORN_MODULES = ("gunicorn.app.wsgiapp", "gunicorn.workers.sync", "gunicorn.workers.gthread")


@dataclass(frozen=True)
class Server:
    name: str
    interface: Interface
    # The executable the launcher starts (its command-line rules are serverargs').
    program: Literal["gunicorn", "uvicorn"]
    # What the venv needs, with wsgi-worker = "async" (the default) ...
    packages: tuple[str, ...]
    # ... and with wsgi-worker = "sync", where that differs.
    sync_packages: tuple[str, ...] | None
    # What a worker process imports besides the app (the master imports the same).
    worker_modules: tuple[str, ...]
    # Processes besides the master and its workers (each about a bare interpreter).
    extra_processes: int = 0


SERVERS: dict[str, Server] = {
    server.name: server
    for server in (
        # WSGI behind pydeploy's uvicorn-based worker (wsgi-worker = "async"), through
        # a2wsgi; with "sync", gunicorn's own workers need nothing else.
        Server("gunicorn", "wsgi", "gunicorn", (*_GUNICORN_UVICORN, "a2wsgi"), ("gunicorn",),
               _GUNICORN_MODULES),
        Server("gunicorn-uvicorn", "asgi", "gunicorn", _GUNICORN_UVICORN, None,
               ("gunicorn.app.wsgiapp", "uvicorn_worker")),
        # uvicorn's supervisor and its multiprocessing resource tracker.
        Server("uvicorn", "asgi", "uvicorn", _UVICORN, None,
               ("uvicorn.main", "uvicorn.supervisors"), extra_processes=2),
    )
}  # fmt: skip
# What `auto` becomes once the interface is known.
AUTO: dict[str, str] = {"wsgi": "gunicorn", "asgi": "gunicorn-uvicorn"}


def _auto_union(values: list[tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for value in values for item in value))


def interface_of(configured: str) -> Interface | Literal["auto"]:
    """The interface the configured server serves (`auto`: not known from the server)."""
    return SERVERS[configured].interface if configured in SERVERS else "auto"


def resolve(configured: str, interface: str) -> str:
    """The server for `configured` and the app's interface; `auto` while the interface is
    unknown (the builder's import check settles it). A configured server that does not
    serve the interface is the caller's error to report (see `mismatch`)."""
    if configured != "auto":
        return configured
    return AUTO.get(interface, "auto")


def mismatch(configured: str, interface: str) -> bool:
    """Whether the configured server cannot serve an app of `interface`."""
    return (
        configured in SERVERS and interface in AUTO and SERVERS[configured].interface != interface
    )


def choices(interface: str) -> str:
    """The servers that serve `interface`, for hints: "`gunicorn-uvicorn` or `uvicorn`"."""
    return " or ".join(f"`{s.name}`" for s in SERVERS.values() if s.interface == interface)


def program_of(server: str) -> str:
    """The executable `server` starts (`auto` runs gunicorn either way)."""
    return SERVERS[resolve(server, "wsgi")].program


def packages(server: str, wsgi_worker: str = "async") -> tuple[str, ...]:
    """What `server` needs in the venv. `auto` has everything both of its candidates need
    ready, since the interface is only known once the app imports."""
    if server not in SERVERS:
        return _auto_union([SERVERS[name].packages for name in AUTO.values()])
    chosen = SERVERS[server]
    if wsgi_worker == "sync" and chosen.sync_packages is not None:
        return chosen.sync_packages
    return chosen.packages


def plan_packages(plan: BuildPlan) -> tuple[str, ...]:
    """What the plan's server needs in the venv."""
    return packages(plan.server, plan.server_policy.wsgi_worker)


def worker_modules(server: str) -> tuple[str, ...]:
    """What a worker of `server` imports besides the app (`auto`: both candidates')."""
    if server not in SERVERS:
        return _auto_union([SERVERS[name].worker_modules for name in AUTO.values()])
    return SERVERS[server].worker_modules


def extra_processes(server: str) -> int:
    """Processes `server` runs besides its master and workers (`auto`: the most of both)."""
    if server not in SERVERS:
        return max(SERVERS[name].extra_processes for name in AUTO.values())
    return SERVERS[server].extra_processes
