"""pydeploy's runtime launcher: the entrypoint of every generated image.

pydeploy copies this file into the image as /opt/pydeploy/launcher.py next to the
launch.json it wrote at build time. At container start it decides the worker count from
the container's real CPU budget (cgroup quota and affinity, not the host's core count)
and its memory limit (what one worker costs was measured at build), builds the gunicorn
or uvicorn command line and hands the process over to the server. Given a command, it
runs that instead (a one-off, a release command, another process): with the venv
active, in the app directory, supervised when it is PID 1.

It runs under whatever interpreter the image has (Python >= 3.8), so it imports only the
standard library, never pydeploy, and keeps to 3.8 syntax and APIs at runtime.

    launcher.py [--config PATH]                   start the server (no arguments)
    launcher.py [--config PATH] [--] CMD [ARG...] run CMD: `docker run IMAGE flask db upgrade`
    launcher.py [--config PATH] --healthcheck     probe the server on 127.0.0.1:$PORT
    launcher.py [--config PATH] --print-command   print the decided server command as JSON

The launcher's own modes are options, and options count only before the first argument
that is not one: everything from there on is the user's command, whatever its words
(`docker run IMAGE healthcheck` runs a program named healthcheck, `docker run IMAGE
python --help` asks python). `--` ends the options for a command that starts with `-`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import FrameType

PROG = "pydeploy-launcher"
CONFIG_ENV = "PYDEPLOY_LAUNCH_CONFIG"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
PROC_1_CMDLINE = Path("/proc/1/cmdline")
# gunicorn's worker heartbeat touches a file in this directory; on overlay /tmp it can block.
SHM_DIR = "/dev/shm"  # noqa: S108 -- a fixed tmpfs, not a temp file we create

# plan/servers.py is the table; this stdlib-only copy is pinned to it by a unit test.
SERVERS = ("gunicorn", "gunicorn-uvicorn", "uvicorn")
INTERFACE_OF_SERVER = {"gunicorn": "wsgi", "gunicorn-uvicorn": "asgi", "uvicorn": "asgi"}
# pydeploy's worker classes (server_workers.py, copied into the image as WORKER_MODULE in
# `worker_lib`): uvicorn's event loop in front of the app, for WSGI (through a2wsgi) and ASGI.
WORKER_MODULE = "pydeploy_workers"
WSGI_WORKER_CLASS = f"{WORKER_MODULE}.WSGIWorker"
ASGI_WORKER_CLASS = f"{WORKER_MODULE}.ASGIWorker"
WSGI_WORKERS = ("async", "sync")
# Buffered access logs (access_log.py, copied into `worker_lib` as ACCESS_LOG_MODULE, with
# UVICORN_LOG_CONFIG beside it): a write per batch, not per request, on the engine's pipe.
ACCESS_LOG_MODES = ("buffered", "unbuffered", "off")
ACCESS_LOG_MODULE = "pydeploy_accesslog"
GUNICORN_LOGGER_CLASS = f"{ACCESS_LOG_MODULE}.GunicornLogger"
UVICORN_LOG_CONFIG = "uvicorn_logging.json"
# Options of the user's extra-args that configure the server's logging themselves: with
# any of them the server keeps its own (unbuffered) logging, as asked.
GUNICORN_LOG_OPTIONS = (
    "--logger-class",
    "--log-config",
    "--log-config-dict",
    "--log-config-json",
    "--log-syslog",
    "--statsd-host",
    "--access-logfile",
)
UVICORN_LOG_OPTIONS = ("--log-config",)
# Threads per worker that run a WSGI app behind the async front when `threads` is unset.
DEFAULT_WSGI_THREADS = 4
# The graceful timeout's default: with the server's exit it fits inside docker stop's 10 s
# (and so inside Kubernetes' 30 s).
DEFAULT_GRACEFUL_TIMEOUT = 8
# gunicorn 25.1 added a control socket that errors on read-only or HOME-less containers.
GUNICORN_CONTROL_SOCKET_SINCE = (25, 1)
# uvicorn 0.41 added --limit-max-requests-jitter; older versions reject the flag.
UVICORN_JITTER_SINCE = (0, 41)
# cgroup v1 reports "no memory limit" as a page-rounded 2**63-1; anything this big is none.
UNLIMITED_MEMORY_BYTES = 1 << 60
# Where launch.json's worker_memory_mb came from (pydeploy.plan.memory writes these).
MEASURED_ORIGIN = "measured at build"
CONFIGURED_ORIGIN = "server.worker-memory"
# The master's share when the build recorded none (an ejected Dockerfile, a failed probe).
DEFAULT_MASTER_MEMORY_MB = 32

# Signals a PID-1 supervisor passes on to uvicorn (the same set gunicorn's master handles).
FORWARDED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGTTIN,
    signal.SIGTTOU,
)

# The two healthcheck rules (see LaunchConfig.healthcheck_healthy_below).
HEALTHY_BELOW = (400, 500)

EXIT_USAGE = 2  # invalid environment, arguments or launch.json
EXIT_NO_SERVER = 127  # the server executable is missing from the virtualenv, like a shell
EXIT_NOT_FOUND = 127  # a command that is not on PATH, as a shell reports it
EXIT_NOT_EXECUTABLE = 126  # found but not executable, as a shell reports it


class LaunchError(Exception):
    """A problem the operator can fix; main() prints it as one line, no traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------- launch.json


@dataclass(frozen=True)
class LaunchConfig:
    """launch.json, validated. Keys and defaults are the contract with pydeploy's writer."""

    app: str
    interface: str
    server: str
    # `app` is an app factory's call (`module:create_app()`): gunicorn takes it as is,
    # uvicorn as `module:create_app --factory` (zero arguments only).
    factory: bool = False
    port: int = 8000
    workers: int | None = None
    worker_memory_mb: int | None = None
    worker_memory_origin: str | None = None
    master_memory_mb: int | None = None
    threads: int | None = None
    timeout: int = 30
    graceful_timeout: int = DEFAULT_GRACEFUL_TIMEOUT
    keepalive: int = 5
    max_requests: int = 0
    max_requests_jitter: int = 0
    forwarded_allow_ips: str | None = None
    proxy_headers: bool = True
    access_log: str = "buffered"
    extra_args: tuple[str, ...] = ()
    app_dir: str = "/app"
    venv: str = "/opt/venv"
    wsgi_worker: str = "async"
    worker_lib: str = "/opt/pydeploy/lib"
    healthcheck_path: str | None = "/healthz"
    healthcheck_timeout: float = 3.0
    # Statuses below this are healthy: 400 for a real health route (2xx/3xx), 500 when the
    # probe only asks "does the server answer at all" (a 404 or a Django 400 is an answer).
    healthcheck_healthy_below: int = 400


def _int(data: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LaunchError(f"launch.json: {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _optional_int(data: Mapping[str, Any], key: str, minimum: int) -> int | None:
    return None if data.get(key) is None else _int(data, key, 0, minimum)


def _str(data: Mapping[str, Any], key: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value:
        raise LaunchError(f"launch.json: {key!r} must be a non-empty string, got {value!r}")
    return value


def _optional_str(data: Mapping[str, Any], key: str, default: str | None) -> str | None:
    value = data.get(key, default)
    return None if value is None else _str({key: value}, key, "")


def parse_config(data: object) -> LaunchConfig:
    """Validate launch.json's decoded content. Unknown keys are ignored (newer writers)."""
    if not isinstance(data, dict):
        raise LaunchError("launch.json: the top level must be a JSON object")
    for key in ("app", "server"):
        if key not in data:
            raise LaunchError(f"launch.json: the required key {key!r} is missing")
    server = _str(data, "server", "")
    if server not in SERVERS:
        raise LaunchError(
            f"launch.json: 'server' must be one of {', '.join(SERVERS)}, got {server!r}"
        )
    interface = data.get("interface", INTERFACE_OF_SERVER[server])
    if interface != INTERFACE_OF_SERVER[server]:
        raise LaunchError(
            f"launch.json: server {server!r} serves {INTERFACE_OF_SERVER[server]} apps, "
            f"but 'interface' is {interface!r}"
        )
    extra = data.get("extra_args", [])
    if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
        raise LaunchError("launch.json: 'extra_args' must be a list of strings")
    proxy_headers = data.get("proxy_headers", True)
    if not isinstance(proxy_headers, bool):
        raise LaunchError(
            f"launch.json: 'proxy_headers' must be true or false, got {proxy_headers!r}"
        )
    access_log = _access_log(data.get("access_log", "buffered"))
    wsgi_worker = data.get("wsgi_worker", "async")
    if wsgi_worker not in WSGI_WORKERS:
        raise LaunchError(
            f"launch.json: 'wsgi_worker' must be one of {', '.join(WSGI_WORKERS)}, "
            f"got {wsgi_worker!r}"
        )
    factory = data.get("factory", False)
    if not isinstance(factory, bool):
        raise LaunchError(f"launch.json: 'factory' must be true or false, got {factory!r}")
    app = _str(data, "app", "")
    if factory and server == "uvicorn" and not _zero_argument_call(app):
        raise LaunchError(
            f"launch.json: uvicorn calls an app factory without arguments, but 'app' is "
            f"{app!r}; serve it with gunicorn-uvicorn, which passes them"
        )
    hc_timeout = data.get("healthcheck_timeout", 3)
    if isinstance(hc_timeout, bool) or not isinstance(hc_timeout, (int, float)) or hc_timeout <= 0:
        raise LaunchError(
            f"launch.json: 'healthcheck_timeout' must be a positive number, got {hc_timeout!r}"
        )
    return LaunchConfig(
        app=app,
        interface=interface,
        server=server,
        factory=factory,
        port=_int(data, "port", 8000, 1),
        workers=_optional_int(data, "workers", 1),
        worker_memory_mb=_optional_int(data, "worker_memory_mb", 1),
        worker_memory_origin=_optional_str(data, "worker_memory_origin", None),
        master_memory_mb=_optional_int(data, "master_memory_mb", 0),
        threads=_optional_int(data, "threads", 1),
        timeout=_int(data, "timeout", 30, 0),
        graceful_timeout=_int(data, "graceful_timeout", DEFAULT_GRACEFUL_TIMEOUT, 0),
        keepalive=_int(data, "keepalive", 5, 0),
        max_requests=_int(data, "max_requests", 0, 0),
        max_requests_jitter=_int(data, "max_requests_jitter", 0, 0),
        forwarded_allow_ips=_optional_str(data, "forwarded_allow_ips", None),
        proxy_headers=proxy_headers,
        access_log=access_log,
        extra_args=tuple(extra),
        app_dir=_str(data, "app_dir", "/app"),
        venv=_str(data, "venv", "/opt/venv"),
        wsgi_worker=wsgi_worker,
        worker_lib=_str(data, "worker_lib", "/opt/pydeploy/lib"),
        # null = no HTTP path: the healthcheck only checks that the port accepts connections.
        healthcheck_path=_optional_str(data, "healthcheck_path", "/healthz"),
        healthcheck_timeout=float(hc_timeout),
        healthcheck_healthy_below=_healthy_below(data),
    )


def _access_log(value: object) -> str:
    """One of ACCESS_LOG_MODES; true and false (older launch.json) are buffered and off."""
    if value is True or value is False:
        return "buffered" if value else "off"
    if value not in ACCESS_LOG_MODES:
        raise LaunchError(
            f"launch.json: 'access_log' must be one of {', '.join(ACCESS_LOG_MODES)}, got {value!r}"
        )
    return str(value)


def _healthy_below(data: Mapping[str, Any]) -> int:
    value = data.get("healthcheck_healthy_below", 400)
    if type(value) is not int or value not in HEALTHY_BELOW:
        raise LaunchError(
            f"launch.json: 'healthcheck_healthy_below' must be 400 or 500, got {value!r}"
        )
    return value


def _zero_argument_call(app: str) -> bool:
    """`module:name()`: a factory call that passes nothing."""
    head, paren, tail = app.partition("(")
    return bool(paren) and tail.replace(" ", "") == ")" and "(" not in head


def factory_reference(app: str) -> str:
    """`module:create_app()` -> `module:create_app`, the form uvicorn's --factory takes."""
    return app.partition("(")[0].rstrip()


def load_config(path: Path) -> LaunchConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LaunchError(f"cannot read the launch config {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LaunchError(f"{path} is not valid JSON: {exc}") from None
    return parse_config(data)


# --------------------------------------------------------------------------- environment


def env_port(environ: Mapping[str, str], default: int) -> int:
    """`PORT` overrides the configured port; an empty value counts as unset."""
    raw = environ.get("PORT", "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise LaunchError(f"invalid PORT={raw!r}: must be an integer from 1 to 65535")
    return int(raw)


def env_web_concurrency(environ: Mapping[str, str]) -> int | None:
    """`WEB_CONCURRENCY` fixes the worker count; an empty value counts as unset."""
    raw = environ.get("WEB_CONCURRENCY", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise LaunchError(
            f"invalid WEB_CONCURRENCY={raw!r}: must be a positive integer (1, 2, 3, ...) "
            "or unset to size workers from the container's CPUs"
        )
    return int(raw)


# --------------------------------------------------------------------------- cgroups


@dataclass(frozen=True)
class CgroupEntry:
    """One line of /proc/self/cgroup: `hierarchy-id:controllers:path`."""

    hierarchy: str
    controllers: tuple[str, ...]
    path: str


def read_proc_cgroup(proc_cgroup: Path) -> list[CgroupEntry]:
    try:
        text = proc_cgroup.read_text(encoding="utf-8")
    except OSError:
        return []
    entries = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            controllers = tuple(c for c in parts[1].split(",") if c)
            entries.append(CgroupEntry(parts[0], controllers, parts[2]))
    return entries


def _walk_up(mount: Path, cgroup_path: str) -> list[Path]:
    """The directories from the process's cgroup up to the mount root, deepest first.

    Inside a container the path shown in /proc/self/cgroup (e.g. /docker/<id>) often does
    not exist under the mount, whose root *is* the container's cgroup; walking up always
    reaches it. A limit on an ancestor also binds a child that sets none, hence every level.
    """
    parts = [p for p in cgroup_path.split("/") if p and p != "."]
    if ".." in parts:  # outside our cgroup namespace: only the mount root is meaningful
        parts = []
    return [mount.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _v2_path(entries: Sequence[CgroupEntry]) -> str | None:
    for entry in entries:
        if entry.hierarchy == "0" and not entry.controllers:
            return entry.path
    return None


def _v1_mounts(
    root: Path, entries: Sequence[CgroupEntry], controller: str
) -> list[tuple[Path, str]]:
    """Candidate (mount directory, cgroup path) pairs of a v1 controller."""
    for entry in entries:
        if controller in entry.controllers:
            names = [",".join(entry.controllers), controller]
            if controller == "cpu":  # Docker and systemd mount cpu and cpuacct together
                names += ["cpu,cpuacct", "cpuacct,cpu"]
            unique = dict.fromkeys(names)
            return [(root / name, entry.path) for name in unique if (root / name).is_dir()]
    return []


def _is_unified(root: Path) -> bool:
    """cgroup v2 mounted at the root (not a v1 or hybrid tmpfs of controller directories)."""
    return (root / "cgroup.controllers").is_file()


@dataclass(frozen=True)
class CpuQuota:
    cpus: float
    source: str  # "cgroup v1" or "cgroup v2"


def cgroup_cpu_quota(cgroup_root: Path, proc_cgroup: Path) -> CpuQuota | None:
    """The tightest CPU quota (in CPUs, e.g. 1.5) on the process's cgroup or an ancestor.

    cgroup v2: `cpu.max` holds "QUOTA PERIOD" or "max PERIOD". cgroup v1: `cpu.cfs_quota_us`
    (-1 = none) over `cpu.cfs_period_us`. Shares and weights are ignored: they are relative
    priorities, not a ceiling.
    """
    entries = read_proc_cgroup(proc_cgroup)
    found: list[CpuQuota] = []
    v2 = _v2_path(entries)
    if v2 is not None and _is_unified(cgroup_root):
        for directory in _walk_up(cgroup_root, v2):
            fields = (_read(directory / "cpu.max") or "").split()
            if len(fields) == 2 and fields[0] != "max":
                found.extend(_quota(fields[0], fields[1], "cgroup v2"))
    for mount, path in _v1_mounts(cgroup_root, entries, "cpu"):
        for directory in _walk_up(mount, path):
            quota = _read(directory / "cpu.cfs_quota_us")
            period = _read(directory / "cpu.cfs_period_us")
            if quota is not None and period is not None:
                found.extend(_quota(quota, period, "cgroup v1"))
    return min(found, key=lambda q: q.cpus) if found else None


def _quota(quota: str, period: str, source: str) -> list[CpuQuota]:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return []
    return [CpuQuota(q / p, source)] if q > 0 and p > 0 else []


@dataclass(frozen=True)
class MemoryLimit:
    mib: int
    source: str


def cgroup_memory_limit(cgroup_root: Path, proc_cgroup: Path) -> MemoryLimit | None:
    """The tightest memory limit on the process's cgroup or an ancestor, or None."""
    entries = read_proc_cgroup(proc_cgroup)
    found: list[tuple[int, str]] = []
    v2 = _v2_path(entries)
    if v2 is not None and _is_unified(cgroup_root):
        for directory in _walk_up(cgroup_root, v2):
            value = _read(directory / "memory.max")
            if value is not None and value.isdigit():
                found.append((int(value), "cgroup v2"))
    for mount, path in _v1_mounts(cgroup_root, entries, "memory"):
        for directory in _walk_up(mount, path):
            value = _read(directory / "memory.limit_in_bytes")
            if value is not None and value.isdigit():
                found.append((int(value), "cgroup v1"))
    limits = [(b, s) for b, s in found if 0 < b < UNLIMITED_MEMORY_BYTES]
    if not limits:
        return None
    limit, source = min(limits)
    return MemoryLimit(limit // (1024 * 1024), source)


def cpu_affinity() -> int:
    """CPUs this process may run on (taskset/cpuset), falling back to the machine's count."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        return max(1, len(getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class System:
    """What the worker decision reads from the machine; tests pass fake trees."""

    cgroup_root: Path = CGROUP_ROOT
    proc_cgroup: Path = PROC_SELF_CGROUP
    affinity: int = field(default_factory=cpu_affinity)
    pid1_cmdline: Path = PROC_1_CMDLINE


# --------------------------------------------------------------------------- workers


def effective_cpus(affinity: int, quota: float | None) -> int:
    """min(affinity, ceil(quota)), at least 1: a 1.5-CPU quota can keep 2 workers busy."""
    if quota is None:
        return max(1, affinity)
    return max(1, min(affinity, math.ceil(quota)))


@dataclass(frozen=True)
class WorkerDecision:
    count: int
    reason: str  # where the number came from, for the startup line
    warning: str | None = None  # printed on its own line when the count risks the OOM killer


@dataclass(frozen=True)
class MemoryBudget:
    """What the master and each worker cost, from launch.json."""

    worker_mib: int
    master_mib: int
    origin: str  # MEASURED_ORIGIN or CONFIGURED_ORIGIN

    def per_worker(self) -> str:
        how = "measured at build" if self.origin == MEASURED_ORIGIN else f"from {self.origin}"
        return f"~{self.worker_mib} MiB per worker {how}"


def memory_budget(config: LaunchConfig) -> MemoryBudget | None:
    if config.worker_memory_mb is None:
        return None
    master = config.master_memory_mb
    return MemoryBudget(
        config.worker_memory_mb,
        DEFAULT_MASTER_MEMORY_MB if master is None else master,
        config.worker_memory_origin or CONFIGURED_ORIGIN,
    )


def memory_allows(limit_mib: int, master_mib: int, worker_mib: int) -> int:
    """Workers that fit next to the master: floor((limit - master) / worker), maybe 0."""
    return max(0, (limit_mib - master_mib) // worker_mib)


def _fmt_cpus(cpus: float) -> str:
    return str(round(cpus, 2))


def decide_workers(  # noqa: PLR0913 - keyword-only inputs, each named at both call sites
    *,
    web_concurrency: int | None,
    configured: int | None,
    affinity: int,
    quota: CpuQuota | None,
    memory: MemoryLimit | None = None,
    budget: MemoryBudget | None = None,
) -> WorkerDecision:
    """WEB_CONCURRENCY, else the configured count, else min(2 x effective CPUs + 1, what
    the memory limit allows), at least 1.

    Explicit numbers from the operator or the config are never second-guessed, only
    warned about when they do not fit the memory limit. When not even one worker fits,
    one starts anyway, with a warning: a server that refuses to start helps nobody.
    """
    if web_concurrency is not None:
        explicit = WorkerDecision(web_concurrency, f"WEB_CONCURRENCY={web_concurrency}")
        return _warn_if_over(explicit, memory, budget)
    if configured is not None:
        explicit = WorkerDecision(configured, f"configured workers = {configured}")
        return _warn_if_over(explicit, memory, budget)
    return _memory_cap(_cpu_workers(affinity, quota), memory, budget)


def _cpu_workers(affinity: int, quota: CpuQuota | None) -> WorkerDecision:
    cpus = effective_cpus(affinity, quota.cpus if quota is not None else None)
    if quota is not None and math.ceil(quota.cpus) <= affinity:
        reason = (
            f"2*{cpus}+1 from {quota.source} CPU quota {_fmt_cpus(quota.cpus)}; affinity {affinity}"
        )
    elif quota is not None:
        reason = (
            f"2*{cpus}+1 from CPU affinity {affinity}; "
            f"{quota.source} CPU quota {_fmt_cpus(quota.cpus)}"
        )
    else:
        reason = f"2*{cpus}+1 from CPU affinity {affinity}; no cgroup CPU quota"
    return WorkerDecision(2 * cpus + 1, reason)


def _memory_cap(
    cpu: WorkerDecision, memory: MemoryLimit | None, budget: MemoryBudget | None
) -> WorkerDecision:
    if memory is None:
        return cpu
    if budget is None:
        unused = f"{memory.source} memory limit {memory.mib} MiB unused: no per-worker estimate"
        return WorkerDecision(cpu.count, f"{cpu.reason}; {unused}")
    allows = memory_allows(memory.mib, budget.master_mib, budget.worker_mib)
    reason = (
        f"cpu allows {cpu.count}: {cpu.reason}; memory allows {allows}: {memory.source} limit "
        f"{memory.mib} MiB, ~{budget.master_mib} MiB master + {budget.per_worker()}"
    )
    warning = None
    if allows < 1:
        need = budget.master_mib + budget.worker_mib
        warning = (
            f"the {memory.source} memory limit of {memory.mib} MiB is below the ~{need} MiB "
            f"that the master (~{budget.master_mib} MiB) and one worker "
            f"({budget.per_worker()}) need; starting 1 worker anyway, which the kernel may "
            f"OOM-kill under load. Raise the memory limit to at least {need} MiB."
        )
    return WorkerDecision(max(1, min(cpu.count, allows)), reason, warning)


def _warn_if_over(
    explicit: WorkerDecision, memory: MemoryLimit | None, budget: MemoryBudget | None
) -> WorkerDecision:
    if memory is None or budget is None:
        return explicit
    need = budget.master_mib + explicit.count * budget.worker_mib
    if need <= memory.mib:
        return explicit
    warning = (
        f"{explicit.count} workers need ~{need} MiB (~{budget.master_mib} MiB master + "
        f"{budget.per_worker()}), more than the {memory.source} memory limit of "
        f"{memory.mib} MiB: workers may be OOM-killed. Lower the count or raise the limit."
    )
    return WorkerDecision(explicit.count, explicit.reason, warning)


# --------------------------------------------------------------------------- installed versions


def installed_version(venv: Path, distribution: str) -> tuple[int, ...] | None:
    """The version of a distribution in the venv, read from its dist-info (no import)."""
    best: tuple[int, ...] | None = None
    pattern = f"lib/python*/site-packages/{distribution}-*.dist-info"
    for info in sorted(venv.glob(pattern)):
        version = None
        for line in (_read(info / "METADATA") or "").splitlines():
            if line.startswith("Version:"):
                version = line.split(":", 1)[1].strip()
                break
        if version is None:  # the directory name carries the version too
            version = info.name[len(distribution) + 1 : -len(".dist-info")]
        match = re.match(r"(\d+(?:\.\d+)*)", version)
        if match:
            parsed = tuple(int(n) for n in match.group(1).split("."))
            best = parsed if best is None else max(best, parsed)
    return best


def _at_least(version: tuple[int, ...] | None, minimum: tuple[int, ...]) -> bool:
    return version is not None and version >= minimum


# --------------------------------------------------------------------------- command lines


def gunicorn_argv(
    config: LaunchConfig,
    *,
    workers: int,
    port: int,
    gunicorn_version: tuple[int, ...] | None,
    worker_tmp_dir: str | None = SHM_DIR,
) -> list[str]:
    """gunicorn with pydeploy's uvicorn-based workers (WSGI through a2wsgi, and ASGI), or
    with gunicorn's sync worker (gthread with threads > 1) when `wsgi_worker` is "sync"."""
    argv = [str(Path(config.venv) / "bin" / "gunicorn"), "--bind", f"0.0.0.0:{port}"]
    argv += ["--workers", str(workers)]
    threads = wsgi_threads(config)
    if config.server == "gunicorn-uvicorn":
        argv += ["--worker-class", ASGI_WORKER_CLASS]
    elif config.wsgi_worker == "async":
        argv += ["--worker-class", WSGI_WORKER_CLASS, "--threads", str(threads)]
    elif threads > 1:
        argv += ["--worker-class", "gthread", "--threads", str(threads)]
    else:
        argv += ["--worker-class", "sync"]
    buffered = buffered_access_log(config, GUNICORN_LOG_OPTIONS)
    if config.server == "gunicorn-uvicorn" or config.wsgi_worker == "async" or buffered:
        argv += ["--pythonpath", config.worker_lib]
    argv += ["--chdir", config.app_dir]
    if worker_tmp_dir is not None:
        argv += ["--worker-tmp-dir", worker_tmp_dir]
    if config.access_log != "off":
        argv += ["--access-logfile", "-"]
        argv += ["--logger-class", GUNICORN_LOGGER_CLASS] if buffered else []
    argv += ["--error-logfile", "-"]
    argv += ["--timeout", str(config.timeout), "--graceful-timeout", str(config.graceful_timeout)]
    argv += ["--keep-alive", str(config.keepalive)]
    if config.max_requests > 0:
        argv += ["--max-requests", str(config.max_requests)]
        if config.max_requests_jitter > 0:
            argv += ["--max-requests-jitter", str(config.max_requests_jitter)]
    if not config.proxy_headers:
        # gunicorn has no proxy-headers switch: trusting no peer is the same thing.
        argv += ["--forwarded-allow-ips", ""]
    elif config.forwarded_allow_ips is not None:
        argv += ["--forwarded-allow-ips", config.forwarded_allow_ips]
    if _at_least(gunicorn_version, GUNICORN_CONTROL_SOCKET_SINCE):
        argv += ["--no-control-socket"]
    argv += list(config.extra_args)
    argv.append(config.app)
    return argv


def buffered_access_log(config: LaunchConfig, own_options: Sequence[str]) -> bool:
    """Whether pydeploy's buffered access log applies: asked for, and the user's
    extra-args configure none of the server's logging."""
    if config.access_log != "buffered":
        return False
    return not any(
        arg == option or arg.startswith(option + "=")
        for arg in config.extra_args
        for option in own_options
    )


def uvicorn_environ(config: LaunchConfig, environ: Mapping[str, str]) -> dict[str, str] | None:
    """uvicorn's environment when it buffers its access log: `worker_lib` on PYTHONPATH,
    since uvicorn imports the log config's handler before anything extends sys.path (the
    directory holds only pydeploy's modules, so it shadows nothing); else None (ours)."""
    if not buffered_access_log(config, UVICORN_LOG_OPTIONS):
        return None
    found = dict(environ)
    paths = [config.worker_lib] + [p for p in found.get("PYTHONPATH", "").split(os.pathsep) if p]
    found["PYTHONPATH"] = os.pathsep.join(paths)
    return found


def wsgi_threads(config: LaunchConfig) -> int:
    """Threads per worker that run a WSGI app: `threads`, else 4 behind the async front
    (a few, so one slow request does not hold up the others its worker accepted), else 1."""
    if config.threads is not None:
        return config.threads
    return DEFAULT_WSGI_THREADS if config.wsgi_worker == "async" else 1


def uvicorn_argv(
    config: LaunchConfig,
    *,
    workers: int,
    port: int,
    uvicorn_version: tuple[int, ...] | None,
) -> list[str]:
    """uvicorn with its own multiprocess supervisor (`--workers`)."""
    if config.factory:
        argv = [str(Path(config.venv) / "bin" / "uvicorn"), factory_reference(config.app)]
        argv.append("--factory")
    else:
        argv = [str(Path(config.venv) / "bin" / "uvicorn"), config.app]
    argv += ["--host", "0.0.0.0", "--port", str(port), "--workers", str(workers)]  # noqa: S104
    argv += ["--app-dir", config.app_dir]
    argv += ["--timeout-graceful-shutdown", str(config.graceful_timeout)]
    argv += ["--timeout-keep-alive", str(config.keepalive)]
    argv.append("--proxy-headers" if config.proxy_headers else "--no-proxy-headers")
    if config.access_log == "off":
        argv.append("--no-access-log")
    elif buffered_access_log(config, UVICORN_LOG_OPTIONS):
        argv += ["--log-config", str(Path(config.worker_lib) / UVICORN_LOG_CONFIG)]
    if config.proxy_headers and config.forwarded_allow_ips is not None:
        argv += ["--forwarded-allow-ips", config.forwarded_allow_ips]
    if config.max_requests > 0:
        argv += ["--limit-max-requests", str(config.max_requests)]
        if config.max_requests_jitter > 0 and _at_least(uvicorn_version, UVICORN_JITTER_SINCE):
            argv += ["--limit-max-requests-jitter", str(config.max_requests_jitter)]
    argv += list(config.extra_args)
    return argv


@dataclass(frozen=True)
class LaunchPlan:
    argv: list[str]
    port: int
    workers: WorkerDecision
    server: str
    threads: int | None
    # The server's environment when it is not the launcher's own.
    env: dict[str, str] | None = None

    def startup_line(self) -> str:
        threads = f", {self.threads} threads" if self.threads else ""
        noun = "worker" if self.workers.count == 1 else "workers"
        return (
            f"{PROG}: {self.server}, {self.workers.count} {noun} ({self.workers.reason})"
            f"{threads}, port {self.port}"
        )


def plan_launch(config: LaunchConfig, environ: Mapping[str, str], system: System) -> LaunchPlan:
    """Everything `run` decides: reads the machine and the venv, changes nothing."""
    port = env_port(environ, config.port)
    web_concurrency = env_web_concurrency(environ)
    auto = web_concurrency is None and config.workers is None
    budget = memory_budget(config)
    decision = decide_workers(
        web_concurrency=web_concurrency,
        configured=config.workers,
        affinity=system.affinity,
        quota=cgroup_cpu_quota(system.cgroup_root, system.proc_cgroup) if auto else None,
        memory=(
            cgroup_memory_limit(system.cgroup_root, system.proc_cgroup)
            if auto or budget is not None
            else None
        ),
        budget=budget,
    )
    venv = Path(config.venv)
    threads = None
    env = None
    if config.server == "uvicorn":
        env = uvicorn_environ(config, environ)
        argv = uvicorn_argv(
            config,
            workers=decision.count,
            port=port,
            uvicorn_version=installed_version(venv, "uvicorn"),
        )
    else:
        argv = gunicorn_argv(
            config,
            workers=decision.count,
            port=port,
            gunicorn_version=installed_version(venv, "gunicorn"),
            worker_tmp_dir=SHM_DIR if Path(SHM_DIR).is_dir() else None,
        )
        if config.server == "gunicorn" and wsgi_threads(config) > 1:
            threads = wsgi_threads(config)
    return LaunchPlan(argv, port, decision, config.server, threads, env)


# --------------------------------------------------------------------------- running


def exit_code_of(status: int) -> int:
    """A waitpid status as a shell would report it (os.waitstatus_to_exitcode is 3.9+)."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 1


def supervise(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    foreground: bool = False,
    executable: str | None = None,
) -> int:
    """Run a child as PID 1 must: forward signals, reap every orphan.

    uvicorn reaps only its own workers, so when it is not PID 1 the orphans of anything it
    spawns would pile up as zombies. A terminal's Ctrl-C must reach the child once (through
    us), not twice (uvicorn force-exits on a second SIGINT): the server gets its own
    session; a `foreground` command (a one-off, perhaps interactive: `manage.py shell`,
    `createsuperuser`'s password prompt) gets its own process group in our session, made
    the terminal's foreground group when there is a terminal, as tini does, so it keeps
    the controlling terminal and Ctrl-C goes to it alone.
    Returns the child's exit code, 128+N if a signal N killed it.
    """
    child: list[int] = []  # set once spawned; signals that arrive earlier are queued
    pending: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        if not child:
            pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):  # already exited; waitpid will tell
            os.kill(child[0], signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        try:
            process = subprocess.Popen(
                list(argv),
                executable=executable,
                cwd=cwd,
                env=None if env is None else dict(env),
                start_new_session=not foreground,
                preexec_fn=_take_terminal if foreground else None,  # noqa: PLW1509 -- 1 thread
            )
        except OSError as exc:
            raise LaunchError(f"cannot start {argv[0]}: {exc.strerror}", EXIT_NO_SERVER) from None
        child.append(process.pid)
        for signum in pending:
            os.kill(process.pid, signum)
        while True:
            try:
                pid, status = os.waitpid(-1, 0)  # any child: orphans are ours to reap too
            except ChildProcessError:  # cannot happen while the server runs; be safe
                return 1 if process.returncode is None else process.returncode
            if pid == process.pid:
                process.returncode = exit_code_of(status)  # Popen must not wait again
                _reap_zombies()
                return process.returncode
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _take_terminal() -> None:
    """In the forked child, before exec: its own process group, and the terminal's
    foreground (a background group that touches the terminal is stopped by SIGTTOU,
    hence ignored for the call; exec resets nothing that is ignored, so it is restored)."""
    os.setpgid(0, 0)
    with contextlib.suppress(OSError):  # no terminal (the usual case): nothing to take
        if os.isatty(0):
            previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            try:
                os.tcsetpgrp(0, os.getpgrp())
            finally:
                signal.signal(signal.SIGTTOU, previous)


def _reap_zombies() -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def launch(plan: LaunchPlan, *, app_dir: str, pid1: bool) -> int:
    """Hand over to the server: exec it, or supervise uvicorn when we are PID 1.

    gunicorn's master reaps every child, so it may be PID 1 itself; uvicorn may not.
    """
    executable = plan.argv[0]
    if not os.access(executable, os.X_OK):
        raise LaunchError(
            f"{executable} not found or not executable: the image's virtualenv lacks "
            f"{Path(executable).name}, which the {plan.server!r} server needs",
            EXIT_NO_SERVER,
        )
    # The server starts in the app directory (uvicorn's --app-dir only extends sys.path), so
    # relative paths in the app and a project's gunicorn.conf.py resolve as in development.
    cwd = app_dir if Path(app_dir).is_dir() else None
    if plan.server == "uvicorn" and pid1:
        return supervise(plan.argv, cwd=cwd, env=plan.env)
    if cwd is not None:
        os.chdir(cwd)
    return _exec(plan.argv, plan.env)


def _exec(
    argv: Sequence[str], env: Mapping[str, str] | None = None, executable: str | None = None
) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    path = executable or argv[0]
    if env is None:
        os.execv(path, list(argv))  # noqa: S606 -- replacing ourselves is the point
    os.execve(path, list(argv), dict(env))  # noqa: S606


# --------------------------------------------------------------------------- commands


def command_environ(environ: Mapping[str, str], venv: str) -> dict[str, str]:
    """The environment of a user command: the venv active, as `source bin/activate` makes
    it (its bin first on PATH, VIRTUAL_ENV set), even when the container's PATH was
    replaced (`docker run -e PATH=...`, a Kubernetes `env` entry)."""
    bin_dir = str(Path(venv) / "bin")
    found = dict(environ)
    entries = [e for e in found.get("PATH", "").split(os.pathsep) if e]
    if not entries or entries[0] != bin_dir:
        found["PATH"] = os.pathsep.join([bin_dir] + [e for e in entries if e != bin_dir])
    found["VIRTUAL_ENV"] = venv
    found.pop("PYTHONHOME", None)  # would point python at another installation's stdlib
    return found


def resolve_command(name: str, environ: Mapping[str, str]) -> str:
    """The executable a command's first word names, as a shell finds it: a path as is,
    a bare name on PATH. A missing one is exit 127, a non-executable one 126."""
    if "/" in name:
        path = Path(name)
        if not path.exists():
            raise LaunchError(f"{name}: no such file", EXIT_NOT_FOUND)
        if path.is_dir() or not os.access(name, os.X_OK):
            raise LaunchError(f"{name}: not an executable file", EXIT_NOT_EXECUTABLE)
        return name
    search = environ.get("PATH", "")
    found = shutil.which(name, path=search)
    if found is None:
        raise LaunchError(f"{name}: command not found (PATH={search})", EXIT_NOT_FOUND)
    return found


def run_command(
    command: Sequence[str], config: LaunchConfig, environ: Mapping[str, str], *, pid1: bool
) -> int:
    """A user command in the app directory with the venv active: exec'd, or supervised
    (signals forwarded, orphans reaped, exit code passed on) when we are PID 1."""
    env = command_environ(environ, config.venv)
    executable = resolve_command(command[0], env)
    cwd = config.app_dir if Path(config.app_dir).is_dir() else None
    # argv[0] stays the word the user typed: programs that look at it (multi-call tools,
    # `python` vs `python3`) see what they would from a shell.
    if pid1:
        return supervise(command, cwd=cwd, env=env, foreground=True, executable=executable)
    if cwd is not None:
        os.chdir(cwd)
    return _exec(command, env, executable)


# --------------------------------------------------------------------------- healthcheck


def pid1_command(cmdline: bytes, launcher_path: str) -> list[str] | None:
    """The user command PID 1 runs through the launcher, from `/proc/1/cmdline` (ours, or
    an init's: `docker-init -- python /opt/pydeploy/launcher.py celery ...`); None when
    PID 1 is the server (the launcher with options only, gunicorn) or anything else."""
    args = [a.decode("utf-8", "replace") for a in cmdline.split(b"\0") if a]
    if launcher_path not in args:
        return None
    try:
        _mode, _config, command = parse_args(args[args.index(launcher_path) + 1 :])
    except LaunchError:
        return None
    return command or None


def healthcheck(config: LaunchConfig, environ: Mapping[str, str]) -> tuple[int, str]:
    """(exit code, one-line report): 0 when healthy, 1 otherwise (Docker reserves 2).
    Healthy: an answer below `healthcheck_healthy_below` (2xx/3xx, or anything but 5xx)."""
    try:
        port = env_port(environ, config.port)
    except LaunchError as exc:
        return 1, str(exc)
    if config.healthcheck_path is None:
        try:
            with socket.create_connection(("127.0.0.1", port), config.healthcheck_timeout):
                return 0, f"healthy: 127.0.0.1:{port} accepts connections"
        except OSError as exc:
            return 1, f"unhealthy: 127.0.0.1:{port}: {exc}"
    # Imported here: urllib.request (http.client, email, ...) is the launcher's heaviest
    # import, and the host imports this module to plan a build (`pydeploy check`).
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        """A 3xx is a healthy answer; following it could leave 127.0.0.1."""

        def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
            return None

    path = config.healthcheck_path
    url = f"http://127.0.0.1:{port}{path if path.startswith('/') else '/' + path}"
    # No proxies: an HTTP_PROXY in the container's environment must not see our loopback GET.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())
    try:
        with opener.open(url, timeout=config.healthcheck_timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return 1, f"unhealthy: GET {url} failed: {reason}"
    if 200 <= status < config.healthcheck_healthy_below:
        return 0, f"healthy: GET {url} -> {status}"
    return 1, f"unhealthy: GET {url} -> {status}"


def container_health(
    config: LaunchConfig, environ: Mapping[str, str], system: System
) -> tuple[int, str]:
    """The image's HEALTHCHECK: the server's probe, unless the container runs a command
    instead (a worker, a one-off), which serves no HTTP: alive while it runs."""
    try:
        cmdline = system.pid1_cmdline.read_bytes()
    except OSError:
        cmdline = b""
    command = pid1_command(cmdline, str(Path(__file__)))
    if command is not None:
        return 0, f"healthy: the container runs `{' '.join(command)[:200]}`, not the server"
    return healthcheck(config, environ)


# --------------------------------------------------------------------------- entry point

USAGE = (
    f"usage: {Path(__file__).name} [--config PATH] [--healthcheck | --print-command | "
    "[--] COMMAND [ARG...]]"
)
MODES = ("--healthcheck", "--print-command")


def parse_args(argv: Sequence[str]) -> tuple[str, str | None, list[str]]:
    """(mode, --config value, user command). Mode is `serve`, `command` or one of MODES.
    Options count up to the first other argument (or `--`); the rest is the command,
    untouched. Hand-rolled: argparse would take the command's own options."""
    mode: str | None = None
    config: str | None = None
    args = list(argv)
    while args and args[0].startswith("-"):
        arg = args.pop(0)
        if arg == "--":
            break
        if arg == "--config":
            if not args:
                raise LaunchError(f"--config needs a path; {USAGE}")
            config = args.pop(0)
        elif arg.startswith("--config="):
            config = arg[len("--config=") :]
        elif arg in MODES and mode is None:
            mode = arg
        else:
            raise LaunchError(f"unexpected option {arg!r}; {USAGE}")
    if args and mode is not None:
        raise LaunchError(f"{mode} takes no command (given {args[0]!r}); {USAGE}")
    if args:
        return "command", config, args
    return mode or "serve", config, []


def config_path(option: str | None, environ: Mapping[str, str]) -> Path:
    if option:
        return Path(option)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    return Path(__file__).resolve().parent / "launch.json"


def _say(stream: Any, line: str) -> None:
    stream.write(line + "\n")
    stream.flush()


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    system: System | None = None,
    pid1: bool | None = None,
) -> int:
    """The launcher. Keyword arguments exist for tests; production passes none."""
    environ = os.environ if environ is None else environ
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-h"], ["--help"]):
        _say(sys.stdout, USAGE)
        return 0
    system = system or System()
    try:
        mode, option, command = parse_args(args)
        config = load_config(config_path(option, environ))
        is_pid1 = os.getpid() == 1 if pid1 is None else pid1
        if mode == "command":
            return run_command(command, config, environ, pid1=is_pid1)
        if mode == "--healthcheck":
            code, report = container_health(config, environ, system)
            _say(sys.stdout if code == 0 else sys.stderr, f"{PROG}: {report}")
            return code
        plan = plan_launch(config, environ, system)
        line = plan.startup_line()
        if plan.server == "uvicorn" and is_pid1:
            line += ", supervised by the launcher as PID 1"
        _say(sys.stderr, line)
        if plan.workers.warning:
            _say(sys.stderr, f"{PROG}: warning: {plan.workers.warning}")
        if mode == "--print-command":
            decided: dict[str, object] = {
                "argv": plan.argv,
                "workers": plan.workers.count,
                "workers_reason": plan.workers.reason,
                "port": plan.port,
                "server": plan.server,
                "supervised": plan.server == "uvicorn" and is_pid1,
            }
            _say(sys.stdout, json.dumps(decided))
            return 0
        return launch(plan, app_dir=config.app_dir, pid1=is_pid1)
    except LaunchError as exc:
        _say(sys.stderr, f"{PROG}: {exc}")
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
