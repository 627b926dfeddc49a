"""`pydeploy run`: the built image as a local container, stopped the way an orchestrator
stops it.

The container gets the configured port (host networking when the engine has no bridge,
else published on 127.0.0.1 only), the `[tool.pydeploy.resources]` limits (the launcher
sizes its workers from them, as it will in production), and the environment from
`--env` / `--env-file`. Its output is passed on line by line. An interrupt (Ctrl-C, or
SIGTERM that the CLI turns into one) becomes `docker stop` with a timeout above the
server's graceful timeout: SIGTERM first, SIGKILL only if the drain overruns. The
container is always removed; the result is its exit code.

Container operations go through the Engine's service-container methods (the Engine is
the only module that talks to the Docker SDK).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import re
import shlex
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydeploy.cachekeys import RUN_LABEL
from pydeploy.config.models import ENV_NAME
from pydeploy.deploy.manifests import dns_name, grace_period, run_limits
from pydeploy.engine.client import Engine
from pydeploy.engine.types import Mount, Outcome, Published, ResourceLimits
from pydeploy.errors import ConfigError
from pydeploy.plan import writable
from pydeploy.plan.planner import VENV, BuildPlan, repository_name

OnOutput = Callable[[str, bool], None]  # (line, from stderr)
OnEvent = Callable[[str], None]


@dataclass(frozen=True)
class RunSpec:
    """Everything the container is created with."""

    image: str
    name: str
    network: str  # "host" or a bridge network
    port: int  # where the server is reached on this machine
    container_port: int
    env: dict[str, str]
    limits: ResourceLimits
    stop_timeout: int
    labels: dict[str, str] = field(default_factory=dict)
    tmpfs: dict[str, str] = field(default_factory=dict)  # `writable` dirs: path -> options
    # A command for the image's launcher instead of the server (a one-off, the release
    # command, a process): no published port, no HTTP healthcheck.
    command: tuple[str, ...] = ()
    volumes: tuple[Mount, ...] = ()  # `--volume NAME:/path`, on every container of the run

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def scratch_mounts(self) -> dict[str, str]:
        """The `writable` tmpfs mounts, but for directories a `--volume` covers: the volume
        is what keeps their data between the run's containers (a tmpfs there would hide
        what the release command wrote from the server)."""
        covered = [volume.target.rstrip("/") for volume in self.volumes]
        return {
            path: options
            for path, options in self.tmpfs.items()
            if not any(path == top or path.startswith(top + "/") for top in covered)
        }

    @property
    def publish(self) -> Published | None:
        """On a bridge network the port is published (on 127.0.0.1 only); with host
        networking the server binds the host's port itself; a command serves nothing."""
        if self.network == "host" or self.command:
            return None
        return Published(self.container_port, self.port)

    def running(self, command: Sequence[str], role: str) -> RunSpec:
        """The same container (image, environment, volumes, limits) running `command`."""
        return replace(self, command=tuple(command), name=f"{self.name}-{role}")


# --------------------------------------------------------------------------- environment


def parse_env_file(path: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """`docker run --env-file` format: `NAME=value` per line (the value is taken verbatim,
    quotes included), `NAME` alone copies it from this environment, `#` starts a comment."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read --env-file {path}: {exc.strerror}.") from None
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip() if not sep else name
        if not ENV_NAME.match(name):
            raise ConfigError(
                f"{path}, line {number}: {name!r} is not an environment variable name.",
                hint="Each line is NAME=value, NAME (copied from your environment) or # comment.",
            )
        _assign(found, name, sep, value, environ)
    return found


def _assign(
    found: dict[str, str], name: str, sep: str, value: str, environ: Mapping[str, str]
) -> None:
    """`NAME=value` sets the value; a bare `NAME` copies it from `environ` when set."""
    if sep:
        found[name] = value
    elif name in environ:
        found[name] = environ[name]


def parse_env_args(items: Iterable[str], environ: Mapping[str, str]) -> dict[str, str]:
    """`--env NAME=value` or `--env NAME` (copied from this environment when set)."""
    found: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not ENV_NAME.match(name):
            raise ConfigError(
                f"--env {item!r}: {name!r} is not an environment variable name.",
                hint="Use --env NAME=value, or --env NAME to pass your own value of NAME.",
            )
        _assign(found, name, sep, value, environ)
    return found


# --------------------------------------------------------------------------- the spec


def make_spec(  # noqa: PLR0913 - keyword-only, one per `pydeploy run` flag
    plan: BuildPlan,
    image: str,
    *,
    bridge: bool,
    port: int | None = None,
    cpus: float | None = None,
    memory: int | None = None,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> RunSpec:
    """The container for `image`: limits from flags, else `[tool.pydeploy.resources]`."""
    if cpus is not None and cpus <= 0:
        raise ConfigError(f"--cpus {cpus:g} must be above 0.", hint="For example --cpus 0.5.")
    if memory is not None and memory < 16:
        raise ConfigError(f"--memory {memory} MiB is too small.", hint="Use at least 16 (MiB).")
    host_port = port or plan.port
    variables = dict(env or {})
    if bridge:
        container_port = plan.port
        # Inside its own network namespace the server keeps its configured port.
        variables.pop("PORT", None)
    else:
        # Host networking: the server binds the host's port itself.
        container_port = host_port
        variables["PORT"] = str(host_port)
    return RunSpec(
        image=image,
        name=f"pydeploy-run-{dns_name(repository_name(plan.project))}-{uuid.uuid4().hex[:8]}",
        network="bridge" if bridge else "host",
        port=host_port,
        container_port=container_port,
        env=variables,
        limits=run_limits(plan.resources, cpus, memory),
        stop_timeout=grace_period(plan.launch.graceful_timeout),
        labels={**(labels or {}), RUN_LABEL: repository_name(plan.project)},
        tmpfs=writable.tmpfs_mounts(plan.writable, plan.user_id),
    )


# Docker's rule for volume names.
_VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]+$")


def parse_volumes(items: Iterable[str]) -> tuple[Mount, ...]:
    """`--volume NAME:/path[:ro]`: a named volume (never a host path: the engine may be
    remote), created when missing. It outlives the containers: the release command and
    the server see the same data."""
    found = []
    for item in items:
        name, _, rest = item.partition(":")
        target, _, mode = rest.partition(":")
        if not _VOLUME_NAME.match(name) or not target.startswith("/") or mode not in {"", "ro"}:
            raise ConfigError(
                f"--volume {item!r} is not NAME:/path or NAME:/path:ro.",
                hint=(
                    "Name a volume (letters, digits, `_.-`; the engine creates it) and an "
                    "absolute path in the container, e.g. --volume appdata:/data."
                ),
            )
        found.append(Mount(target, name, "volume", read_only=mode == "ro"))
    return tuple(found)


def prepare_volumes(engine: Engine, image: str, volumes: Iterable[Mount], uid: int) -> list[str]:
    """Create the volumes that do not exist yet, owned by the runtime uid: the engine
    would make a new volume's root root-owned (it copies the image's ownership only
    where the image has that directory), and the app, which runs as `uid`, could not
    write there. Returns the names it created."""
    created = []
    for mount in volumes:
        if mount.read_only or engine.volume_labels(mount.source) is not None:
            continue
        engine.create_volume(mount.source)
        created.append(mount.source)
        chown = f"import os; os.chown({mount.target!r}, {uid}, {uid})"
        argv = [f"{VENV}/bin/python", "-c", chown]
        with engine.container(image, argv, mounts=[mount], network="none") as box:
            outcome = box.follow(lambda _line: None)
        if outcome.exit_code != 0:
            raise ConfigError(
                f"Cannot give the new volume {mount.source} to uid {uid} "
                f"(exit {outcome.exit_code}).",
                hint="Create and prepare it yourself (`docker volume create`), then retry.",
            )
    return created


@dataclass(frozen=True)
class CommandResult:
    """How a one-off container ended, and the last lines it wrote."""

    exit_code: int
    tail: tuple[str, ...]


def run_command(
    engine: Engine, spec: RunSpec, on_output: OnOutput, on_event: OnEvent, tail: int = 20
) -> CommandResult:
    """Run `spec` (a command) to its end, its output passed on; keep the last lines for
    a failure's report."""
    lines: deque[str] = deque(maxlen=tail)

    def keep(line: str, is_stderr: bool) -> None:
        lines.append(line)
        on_output(line, is_stderr)

    code = Runner(engine, spec).run(keep, on_event)
    return CommandResult(code, tuple(lines))


def check_port_free(port: int, *, host_network: bool) -> None:
    """Fail early, and clearly, when something already listens on the port."""
    address = "0.0.0.0" if host_network else "127.0.0.1"  # noqa: S104 -- what the server binds
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise ConfigError(
                f"Port {port} is already in use on this machine.",
                hint="Stop what listens there, or pick another with `--port`.",
            ) from None


def describe_limits(spec: RunSpec) -> str:
    parts = []
    cpus, memory = spec.limits.cpus, spec.limits.memory_mib
    if cpus is not None:
        parts.append(f"{cpus:g} CPU" + ("" if cpus == 1 else "s"))
    if memory is not None:
        parts.append(f"{memory} MiB")
    return ", ".join(parts) if parts else "no limits"


# --------------------------------------------------------------------------- running


class Runner:
    """One container: created, started, followed, stopped gracefully, removed."""

    def __init__(self, engine: Engine, spec: RunSpec) -> None:
        self.engine = engine
        self.spec = spec
        self.container_id = ""
        self._threads: list[threading.Thread] = []

    def run(self, on_output: OnOutput, on_event: OnEvent) -> int:
        """Run until the container exits, or until KeyboardInterrupt, which stops it
        gracefully (a second one kills it). Returns the container's exit code."""
        try:
            self.container_id = self.engine.create_service(
                self.spec.image,
                name=self.spec.name,
                env=self.spec.env,
                network=self.spec.network,
                publish=self.spec.publish,
                limits=self.spec.limits,
                labels=self.spec.labels,
                stop_timeout=self.spec.stop_timeout,
                tmpfs=self.spec.scratch_mounts,
                command=self.spec.command,
                volumes=self.spec.volumes,
                healthcheck=not self.spec.command,
            )
            self.engine.start(self.container_id)
            self._follow(on_output)
            doing = (
                f"running `{shlex.join(self.spec.command)}`"
                if self.spec.command
                else f"serving on {self.spec.url}"
            )
            on_event(
                f"started {self.spec.name} ({describe_limits(self.spec)}, network "
                f"{self.spec.network}); {doing}; Ctrl-C stops it"
            )
            try:
                outcome = self.engine.wait(self.container_id)
            except KeyboardInterrupt:
                on_event(
                    f"stopping {self.spec.name}: SIGTERM, then SIGKILL after "
                    f"{self.spec.stop_timeout} s"
                )
                outcome = self._stop(on_event)
            if outcome.oom_killed:
                on_event(f"{self.spec.name} was killed for using more than its memory limit")
            return outcome.exit_code
        finally:
            if self.container_id:
                self.engine.remove(self.container_id)
            for thread in self._threads:
                thread.join(timeout=5)

    def _follow(self, on_output: OnOutput) -> None:
        stream = self.engine.attach(self.container_id)
        thread = threading.Thread(
            target=_pump, args=(stream, on_output), name="pydeploy-run-logs", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def _stop(self, on_event: OnEvent) -> Outcome:
        try:
            self.engine.stop(self.container_id, self.spec.stop_timeout)
            return self.engine.wait(self.container_id)
        except KeyboardInterrupt:
            on_event(f"killing {self.spec.name}")
            self.engine.kill(self.container_id)
            return self.engine.wait(self.container_id)


def _pump(stream: Iterable[tuple[bytes | None, bytes | None]], on_output: OnOutput) -> None:
    """Split the demultiplexed output into lines, per stream."""
    decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in range(2)]
    pending = ["", ""]
    with contextlib.suppress(Exception):  # the stream ends abruptly when the container goes
        for chunks in stream:
            for index, chunk in enumerate(chunks):
                if not chunk:
                    continue
                pending[index] += decoders[index].decode(chunk)
                *lines, pending[index] = pending[index].split("\n")
                for line in lines:
                    on_output(line.rstrip("\r"), index == 1)
    for index, rest in enumerate(pending):
        if rest:
            on_output(rest.rstrip("\r"), index == 1)


def find_image(engine: Engine, plan: BuildPlan) -> str:
    """For `--no-build`: the image of the plan's first tag, which must exist locally."""
    tag = plan.tags[0]
    image_id = engine.image_id(tag)
    if image_id is None:
        raise ConfigError(
            f"--no-build: the engine has no image {tag}.",
            hint="Run `pydeploy build` first, or leave out --no-build.",
        )
    return image_id
