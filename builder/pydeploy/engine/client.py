"""The only module that talks to the Docker SDK.

Stages get thin, typed operations: images (inspect, pull when missing, commit, save,
load), volumes, and containers that are always removed. They pass and get the values of
engine/types.py (mounts, commit settings, resource limits; image facts, outcomes): no
other module builds SDK arguments or reads an engine's JSON. Every container this Engine
creates carries the label `pydeploy.build=<build id>` and is remembered, so `cleanup()`
(called by the CLI on Ctrl-C / SIGTERM) can remove whatever a build left running.

A SIGKILL runs no cleanup, so builder containers also carry their owner process
(`pydeploy.owner`, see owners.py): the next build or `prune` reaps those of dead owners.
A container started with `stdin` gets it on an attached stream that this process holds
open: the bytes never enter the container's configuration (secrets travel this way), and
the stream's end when the process dies is the container's cue to exit (its lifeline).
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import posixpath
import re
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

import docker
import docker.errors
import docker.types
import requests.exceptions
import urllib3.exceptions
from docker.models.containers import Container

from pydeploy.base.platforms import architecture_of
from pydeploy.cachekeys import BUILD_LABEL, CHECK_IMAGE_LABEL, OWNER_LABEL
from pydeploy.engine import owners
from pydeploy.engine.quick import DEFAULT_HOST
from pydeploy.engine.types import (
    CommitSettings,
    Confinement,
    DiskUsage,
    HistoryEntry,
    ImageFacts,
    ImageInfo,
    ImageRef,
    Mount,
    Outcome,
    Published,
    ResourceLimits,
    RunResult,
    VolumeInfo,
)
from pydeploy.errors import (
    BaseImageError,
    ConfigError,
    EngineError,
    InterruptError,
    NoEngineError,
)
from pydeploy.oci.streams import as_reader
from pydeploy.plan.references import parse_reference, try_parse

# `key=value,key=value`: labels for the temporary containers a command creates (a CI job on
# a shared engine tells its own apart with them), never for the image.
ENV_CONTAINER_LABELS = "PYDEPLOY_CONTAINER_LABELS"
# A pin's program: it holds its image and volumes in use until its lifeline ends.
_PIN_ARGV = ["/bin/sh", "-c", "exec cat >/dev/null"]
# Every bound is on silence, not on duration: how long the engine may say nothing.
# Log and attach streams have none (the SDK lifts it: a compiler may print nothing for
# minutes), and neither has waiting for a `pydeploy run` server to exit.
# The connection check: an engine that cannot answer /version in 10 s will not run a build.
PING_TIMEOUT = 10
# Short calls (inspect, create, remove, tag, list) answer in well under a second; 60 s
# covers a loaded machine. Connecting (unix socket, TCP, SSH) gets 5 s.
CALL_TIMEOUT = (5.0, 60.0)
# Calls that move or write whole images and filesystems (load, save, commit, export,
# archives, disk usage) may go quiet for minutes on a big image.
SLOW_TIMEOUT = 900
# A container whose output has ended has exited: its status follows at once.
EXITED_WAIT_TIMEOUT = 300.0
# A container left running after its last line (the app check's result) exits by itself
# at once; one that has not within this is force-removed.
EXITING_WAIT_TIMEOUT = 10
# What the SDK may raise when a connection breaks or times out mid-stream (chunks of a
# save, export or load are read straight from urllib3 and the socket).
_SDK_ERRORS = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)

OnLine = Callable[[str], None]
# The API version of the client that only pings (/_ping is not versioned).
_PROBE_API_VERSION = "1.24"
# runc's words when a container's configured rlimit exceeds the hard limit it runs under
# (type 7 is RLIMIT_NOFILE): Podman's default nofile of 1048576 on a host allowing less.
_RLIMIT_REFUSED = "error setting rlimit"


def _missing(exc: EngineError) -> bool:
    """The engine said the object does not exist (which callers often accept)."""
    return isinstance(exc.__cause__, docker.errors.NotFound)


def _timed_out(exc: BaseException) -> bool:
    return isinstance(
        exc, (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
    )


def _disconnected(exc: BaseException) -> bool:
    return isinstance(
        exc,
        (requests.exceptions.ConnectionError, urllib3.exceptions.ProtocolError, ConnectionError),
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _silence(exc: BaseException) -> str:
    """`no answer within 60 s` from urllib3's `(read timeout=60)`, when it says."""
    match = re.search(r"timeout=([0-9.]+)", str(exc))
    return f"no answer within {float(match[1]):g} s" if match else "no answer in time"


# Markers in the SDK's error text -> what happened, in words.
_DISCONNECTS = (
    ("RemoteDisconnected", "the engine closed the connection without answering"),
    ("Connection refused", "the connection was refused"),
    ("Connection reset", "the connection was reset"),
    ("Broken pipe", "the connection broke"),
    ("No such file or directory", "its socket is gone"),
    ("IncompleteRead", "the connection closed in the middle of an answer"),
)


def _disconnect_reason(exc: BaseException) -> str:
    text = " ".join(f"{cause!r} {cause}" for cause in _causes(exc))
    return next((why for marker, why in _DISCONNECTS if marker in text), _short(exc))


def engine_failure(exc: BaseException, host: str) -> EngineError:
    """One wording per way an engine call fails: it stopped answering, the connection
    was lost, or the engine answered with a refusal."""
    if any(_timed_out(cause) for cause in _causes(exc)):
        return EngineError(
            f"The Docker engine at {host} stopped answering ({_silence(exc)}).",
            hint="It is hung or overloaded: check `docker info` and the engine's log, "
            "restart it if it does not answer, then run the command again.",
        )
    if _disconnected(exc):
        return EngineError(
            f"pydeploy lost the connection to the Docker engine at {host}: "
            f"{_disconnect_reason(exc)}.",
            hint="The engine stopped or restarted (or the SSH/TCP link to it dropped): "
            "check that it runs (`docker info`), start it if needed, and run the command "
            "again; a rerun reuses everything already built.",
        )
    if _RLIMIT_REFUSED in str(exc):
        return EngineError(
            f"The engine at {host} could not start a container: it asks for an open-files "
            "limit (ulimit nofile) above the hard limit this machine allows (`error setting "
            "rlimit type 7`). Podman's default is 1048576.",
            hint="Let containers inherit the engine's limits: in containers.conf (e.g. "
            "/etc/containers/containers.conf, or a file named by CONTAINERS_CONF when the "
            "service starts) set `default_ulimits = []` under `[containers]`, restart "
            "`podman system service`, and run the command again.",
        )
    return EngineError(f"The Docker engine refused an operation: {_short(exc)}")


class _Identified(Protocol):
    """A container by its ID (a Box, or a caller's stand-in for one)."""

    @property
    def id(self) -> str: ...


class Box:
    """A container created by an Engine; removed when its `Engine.container` block ends."""

    def __init__(self, engine: Engine, container: Container, stdin: bytes | None = None) -> None:
        self._engine = engine
        self._container = container
        self._stdin = stdin
        self.id: str = container.id or ""
        # follow_until stopped before the exit: the block's end removes it in the background.
        self.left_running = False

    def put_archive(self, path: str, data: bytes | IO[bytes]) -> None:
        """Unpack the tar `data` (bytes or a file, streamed) at `path` in the container."""
        with self._engine.guard():
            if not self._engine.slow.put_archive(self.id, path, data):
                raise EngineError(f"The engine did not accept files for {path} in a container.")

    def put_files(self, directory: str, files: dict[str, bytes], mode: int = 0o644) -> None:
        """Write small files (name -> bytes) into `directory`, which is created."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, data in sorted(files.items()):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = mode
                tar.addfile(info, io.BytesIO(data))
        self.put_archive("/", _prefix_tar(buffer.getvalue(), directory.strip("/")))

    def get_archive(self, path: str) -> Iterator[bytes]:
        """A tar stream of `path`; entries start with the path's last component."""
        with self._engine.guard():
            stream, _stat = self._engine.slow.get_archive(self.id, path, chunk_size=1 << 20)
        chunks = self._engine.guarded_iter(stream)
        if self._engine.is_podman:
            # Podman roots the archive of a volume's mount point at '' ('', '/bin', ...):
            # rewritten to Docker's layout, which every reader of these archives expects.
            return rooted_archive(chunks, posixpath.basename(path.rstrip("/")))
        return chunks

    def read_file(self, path: str) -> bytes | None:
        """The bytes of one regular file, or None when it does not exist."""
        try:
            data = b"".join(self.get_archive(path))
        except EngineError as exc:
            if _missing(exc):
                return None
            raise
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.next()
            handle = tar.extractfile(member) if member and member.isfile() else None
            return handle.read() if handle else None

    def start(self) -> None:
        """Start the container; with `stdin`, attach the lifeline first and send it."""
        with self._engine.guard():
            if self._stdin is None:
                self._container.start()
                return
            stream = self._engine.client.api.attach_socket(
                self.id, params={"stdin": 1, "stream": 1}
            )
            self._engine.keep_lifeline(self.id, stream)
            self._container.start()
            if self._stdin:
                _raw_socket(stream).sendall(self._stdin)

    def changes(self) -> list[tuple[str, str]]:
        """`docker diff`: (absolute path, "modified" | "added" | "deleted")."""
        kinds = {0: "modified", 1: "added", 2: "deleted"}
        with self._engine.guard():
            found = self._container.diff() or []
        return [(str(c["Path"]), kinds.get(int(c["Kind"]), "modified")) for c in found]

    def export(self) -> Iterator[bytes]:
        """`docker export`: the container's whole filesystem as a stream of tar chunks."""
        with self._engine.guard():
            # types-docker says str; the SDK yields bytes chunks.
            stream: Iterable[bytes] = self._engine.slow.export(self.id, chunk_size=1 << 20)
        return self._engine.guarded_iter(stream)

    def follow(self, on_line: OnLine) -> Outcome:
        """Start the container, pass each output line (stdout and stderr) to `on_line`,
        and say how it ended once it has stopped."""
        self._read(on_line, None)
        outcome = self.wait()
        # A container killed by cleanup() ends like a failing one: say what happened.
        self._engine.raise_if_stopping()
        return outcome

    def follow_until(self, on_line: OnLine, done: Callable[[], bool]) -> Outcome | None:
        """`follow`, but stop reading once `done()` holds after a line: None then, without
        waiting for the exit (the log stream ends some 50 ms after it, and the status
        takes another request); the container's block removes it, exited or not."""
        self.left_running = self._read(on_line, done)
        outcome = None if self.left_running else self.wait()
        self._engine.raise_if_stopping()
        return outcome

    def _read(self, on_line: OnLine, done: Callable[[], bool] | None) -> bool:
        """Start the container and pass on its output lines until it ends (False) or
        `done()` holds (True: the log stream is closed unread)."""
        self.start()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        with self._engine.guard():
            stream = self._container.logs(stream=True, follow=True, stdout=True, stderr=True)
        for chunk in self._engine.guarded_iter(stream):
            pending += decoder.decode(chunk)
            *lines, pending = pending.split("\n")
            for line in lines:
                on_line(line.rstrip("\r"))
                if done is not None and done():
                    _cancel(stream)
                    return True
        pending += decoder.decode(b"", final=True)
        if pending:
            on_line(pending.rstrip("\r"))
        return done is not None and done()

    def wait(self) -> Outcome:
        """How a container whose output has ended (so it has exited) ended."""
        with self._engine.guard():
            status = self._container.wait(timeout=EXITED_WAIT_TIMEOUT)
        return self._engine.outcome(self.id, int(status.get("StatusCode", 1)))

    def commit(self, repository: str, tag: str, settings: CommitSettings) -> str:
        """Save the container's filesystem as an image whose whole config is `settings`
        (so nothing of the container's environment or labels reaches the image)."""
        config = {
            "Env": list(settings.env),
            "Cmd": list(settings.cmd),
            "Entrypoint": list(settings.entrypoint),
            "WorkingDir": settings.workdir,
            "User": settings.user,
            "Labels": dict(settings.labels),
        }
        with self._engine.guard():
            image = self._engine.slow.commit(self.id, repository=repository, tag=tag, conf=config)
        return str(image["Id"])


class Engine:
    """A connection to one Docker engine, for one build."""

    def __init__(
        self,
        client: docker.DockerClient,
        labels: dict[str, str] | None = None,
        *,
        slow: docker.APIClient | None = None,
        host: str | None = None,
        podman: bool | None = None,
    ) -> None:
        self.client = client
        # The same engine with SLOW_TIMEOUT, for the calls that may go quiet for minutes
        # (the SDK takes no per-call timeout for most of them).
        self.slow: docker.APIClient = slow or client.api
        self.host = host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST
        self.build_id = uuid.uuid4().hex[:12]
        self.labels = {**(labels or {}), BUILD_LABEL: self.build_id}
        self.owner = owners.this_process()
        self._created: list[str] = []
        self._lifelines: dict[str, Any] = {}
        self._pins: list[str] = []
        self._removing: list[threading.Thread] = []
        self._default_network: str | None = None
        self._podman = podman  # None: asked when first needed
        self._holds = 0
        self._lock = threading.Lock()
        self._stopping = False

    @classmethod
    def connect(cls, *, labels: dict[str, str] | None = None) -> Engine:
        """Connect to the engine named by DOCKER_HOST (or the local socket) and ping it.

        `labels` (and PYDEPLOY_CONTAINER_LABELS) are added to every container created."""
        labels = {**container_labels(os.environ.get(ENV_CONTAINER_LABELS, "")), **(labels or {})}
        host = os.environ.get("DOCKER_HOST") or DEFAULT_HOST
        client: docker.DockerClient | None = None
        podman = False
        socket = host.removeprefix("unix://") if host.startswith("unix://") else None
        reason = None
        fix = (
            "pydeploy builds through a Docker engine: start one (`sudo systemctl start "
            "docker`, `sudo dockerd &`, or open Docker Desktop), or point DOCKER_HOST at a "
            "remote engine (e.g. `DOCKER_HOST=ssh://user@host`)."
        )
        if socket is not None and not Path(socket).exists():
            # Checked first: the SDK leaks a socket when it fails to connect to one.
            reason = f"{socket} does not exist"
        else:
            try:
                client, podman = _ping()
            except _SDK_ERRORS as exc:
                if client is not None:
                    client.close()
                reason = _short(exc)
                if any(_timed_out(cause) for cause in _causes(exc)):
                    reason = f"it accepted the connection but gave {_silence(exc)}"
                    fix = (
                        "Something listens there but does not answer: a hung or overloaded "
                        "engine (check `docker info` and its log, restart it) or not a Docker "
                        "engine at all (check DOCKER_HOST)."
                    )
        if reason is not None or client is None:
            raise NoEngineError(f"No Docker engine answers at {host} ({reason}).", hint=fix)
        # Set after construction: the SDK builds its connection pools with a number.
        client.api.timeout = CALL_TIMEOUT  # type: ignore[assignment]
        version = client.api.api_version  # no second negotiation
        slow = docker.from_env(timeout=SLOW_TIMEOUT, version=version)
        return cls(client, labels, slow=slow.api, host=host, podman=podman)

    def close(self) -> None:
        """Release the SDK clients' connection pools (and any lifeline still held: the
        containers on it then exit). Idempotent. Containers are removed by `cleanup()`."""
        with self._lock:
            lifelines, self._lifelines = list(self._lifelines.values()), {}
        for lifeline in lifelines:
            _close_stream(lifeline)
        self.client.close()
        if self.slow is not self.client.api:
            self.slow.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        """The end of a command: every container it created is removed, then the
        connections are closed."""
        try:
            self.cleanup()
        finally:
            self.close()

    @property
    def is_podman(self) -> bool:
        """Whether the engine is Podman's Docker-compatible service (from the connection's
        ping, else asked once from /version): its archives and image loads differ from
        Docker's (see the callers)."""
        if self._podman is None:
            with self.guard():
                version = self.client.version()
            self._podman = is_podman_version(version)
        return self._podman

    # --- failures -------------------------------------------------------------------

    def raise_if_stopping(self) -> None:
        if self._stopping:
            raise InterruptError("The build was interrupted; its containers were removed.")

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Turn SDK failures into EngineError, or InterruptError after `cleanup()`."""
        try:
            yield
        except _SDK_ERRORS as exc:
            self.raise_if_stopping()
            raise engine_failure(exc, self.host) from exc

    def guarded_iter(self, stream: Iterable[bytes]) -> Iterator[bytes]:
        iterator = iter(stream)
        while True:
            with self.guard():
                chunk = next(iterator, None)
            if chunk is None:
                return
            yield chunk

    # --- images ---------------------------------------------------------------------

    def inspect_image(self, name: str) -> ImageFacts | None:
        """What the engine knows of a local image, or None when it has none of that name."""
        try:
            with self.guard():
                attrs = self.client.images.get(name).attrs
        except EngineError as exc:
            if _missing(exc):
                return None
            raise
        return image_facts(attrs)

    def image_history(self, name: str) -> tuple[HistoryEntry, ...]:
        """`docker history`: newest step first."""
        with self.guard():
            entries = self.client.api.history(name)  # type: ignore[no-untyped-call]
        return tuple(
            HistoryEntry(str(entry.get("CreatedBy") or ""), int(entry.get("Size") or 0))
            for entry in entries
        )

    def image_id(self, name: str) -> str | None:
        info = self.inspect_image(name)
        return info.image_id if info else None

    def ensure_image(self, name: str) -> ImageRef:
        """The local image when present, else pulled. Fails with a BaseImageError that
        says what was tried."""
        found = self._image_ref(name)
        if found:
            return found
        ref = parse_reference(name, "the base image")
        try:
            with self.guard():
                self.client.images.pull(ref.familiar, tag=ref.target)
        except EngineError as exc:
            raise BaseImageError(
                f"The base image `{name}` is not in the local engine and pulling it failed "
                f"({_short(exc.__cause__ or exc)}).",
                hint=(
                    "Check the name, run `docker pull` for it (log in with `docker login` "
                    "for a private registry), or pick another with `--base` / "
                    "`tool.pydeploy.base-image`."
                ),
            ) from None
        pulled = self._image_ref(name)
        if not pulled:
            raise BaseImageError(f"Pulled `{name}` but the engine does not list it afterwards.")
        return pulled

    def _image_ref(self, name: str) -> ImageRef | None:
        info = self.inspect_image(name)
        if info is None:
            return None
        wanted = try_parse(name)
        pinned = [
            ref for ref in map(try_parse, info.repo_digests) if ref is not None and ref.digest
        ]
        # A digest of this repository, else any (the same content under another name).
        mine = [ref for ref in pinned if wanted and ref.familiar == wanted.familiar]
        chosen = (mine or pinned)[:1]
        return ImageRef(name, info.image_id, chosen[0].digest if chosen else None)

    def read_files(self, image: str, paths: list[str]) -> list[bytes]:
        """The bytes of files in an image (b"" for a missing one), without running it."""
        with self.container(image, ["/bin/true"], network="none") as box:
            return [box.read_file(path) or b"" for path in paths]

    def local_image_ids(self) -> list[str]:
        """The IDs of every local image, intermediate ones included (one request)."""
        with self.guard():
            summaries = self.client.api.images(all=True)
        return [str(summary["Id"]) for summary in summaries]

    def diff_ids(self, image_id: str) -> tuple[str, ...] | None:
        """The image's layer diff IDs, base first; None when the engine has no such image."""
        info = self.inspect_image(image_id)
        return info.diff_ids if info else None

    def tag_image(self, image_id: str, reference: str) -> None:
        """Point `reference` (`name:tag`, `name` for :latest) at a local image."""
        name, sep, tag = reference.rpartition(":")
        if not sep or "/" in tag:  # no tag, or the colon of a registry's port
            name, tag = reference, "latest"
        with self.guard():
            self.client.api.tag(image_id, name, tag)

    @contextlib.contextmanager
    def save_image(self, name: str) -> Iterator[Iterator[bytes]]:
        """`docker save` of one image: yields a stream of tar chunks, closed at exit."""
        with self.guard():
            stream = self.slow.get_image(name, chunk_size=1 << 20)
        try:
            yield self.guarded_iter(stream)
        finally:
            close = getattr(stream, "close", None)
            if close:
                close()

    def load_image(self, data: bytes | IO[bytes] | Iterable[bytes]) -> list[str]:
        """`docker load` a tar (bytes, a file or a chunk iterator, streamed); returns the
        loaded references (`name:tag`, or `sha256:...` for untagged images)."""
        loaded: list[str] = []
        with self.guard():
            events: Iterable[dict[str, Any]] = self.slow.load_image(data)  # type: ignore[no-untyped-call]
            for event in events:
                if "error" in event:
                    raise EngineError(f"The engine could not load the image: {event['error']}")
                text = str(event.get("stream", "")).strip()
                loaded += [
                    text[len(prefix) :]
                    for prefix in ("Loaded image: ", "Loaded image ID: ")
                    if text.startswith(prefix)
                ]
        return loaded

    # --- volumes and networks -------------------------------------------------------

    def volume_labels(self, name: str) -> dict[str, str] | None:
        """The volume's labels ({} when it has none), or None when it does not exist."""
        try:
            with self.guard():
                info = self.client.api.inspect_volume(name)
        except EngineError as exc:
            if _missing(exc):
                return None
            raise
        return dict(info.get("Labels") or {})

    def create_volume(self, name: str, labels: dict[str, str] | None = None) -> None:
        with self.guard():
            self.client.api.create_volume(name, labels=labels or {})

    def remove_volume(self, name: str) -> None:
        """Remove a volume; a missing one is fine."""
        try:
            with self.guard():
                self.client.api.remove_volume(name, force=True)
        except EngineError as exc:
            if not _missing(exc):
                raise

    # --- cache inventory (`pydeploy prune`) -----------------------------------------

    def list_volumes(self, name_prefix: str) -> list[VolumeInfo]:
        """Volumes whose name starts with `name_prefix` (filtered here: the API's name
        filter matches substrings anywhere)."""
        with self.guard():
            found = self.client.api.volumes().get("Volumes") or []
        return [
            VolumeInfo(str(v["Name"]), dict(v.get("Labels") or {}), _epoch(v.get("CreatedAt")))
            for v in found
            if str(v.get("Name", "")).startswith(name_prefix)
        ]

    def list_images(self, repository: str) -> list[ImageInfo]:
        """Tagged images of one repository (`repository:<any tag>`)."""
        with self.guard():
            found = self.client.api.images()
        wanted = try_parse(repository)
        return [
            ImageInfo(str(tag), str(image["Id"]), float(image.get("Created") or 0))
            for image in found
            for tag in image.get("RepoTags") or []
            if wanted and _same_repository(str(tag), wanted.familiar)
        ]

    def in_use(self, ignore: set[str] | None = None) -> tuple[set[str], set[str]]:
        """(volume names, image IDs) that some container, running or not, refers to;
        the containers in `ignore` do not count."""
        with self.guard():
            found = [
                c for c in self.client.api.containers(all=True) if c["Id"] not in (ignore or ())
            ]
        volumes = {str(m["Name"]) for c in found for m in c.get("Mounts") or [] if m.get("Name")}
        return volumes, {str(c.get("ImageID")) for c in found if c.get("ImageID")}

    def df(self) -> DiskUsage:
        """`docker system df -v`: bytes per volume name and per image ID (the part not
        shared with other images)."""
        with self.guard():
            usage = self.slow.df()
        volumes = {
            str(v["Name"]): int((v.get("UsageData") or {}).get("Size", -1))
            for v in usage.get("Volumes") or []
        }
        images = {
            str(i["Id"]): int(i.get("Size", 0)) - max(int(i.get("SharedSize", 0)), 0)
            for i in usage.get("Images") or []
        }
        return DiskUsage({k: v for k, v in volumes.items() if v >= 0}, images)

    def read_volume_files(self, volume: str, paths: list[str], image: str) -> list[bytes | None]:
        """Files of a volume (None when absent), read through one never-started
        container of `image` (any local image: nothing in it runs)."""
        target = "/pydeploy-volume"  # a path no image has, so nothing is copied into the volume
        mount = Mount(target, volume, read_only=True)
        with self.container(image, ["/bin/true"], mounts=[mount], network="none") as box:
            return [box.read_file(f"{target}/{path.lstrip('/')}") for path in paths]

    def remove_unused_volume(self, name: str) -> bool:
        """Remove a volume unless a container uses it (the engine refuses): False then.
        A volume already gone counts as removed."""
        return self._remove_unless_in_use(self.client.api.remove_volume, name)

    def remove_unused_image(self, reference: str) -> bool:
        """Untag/remove an image unless a container uses it (never forced): False then."""
        return self._remove_unless_in_use(self.client.api.remove_image, reference)

    def _remove_unless_in_use(self, remove: Callable[[str], Any], name: str) -> bool:
        try:
            with self.guard():
                remove(name)
        except EngineError as exc:
            if _missing(exc):
                return True
            cause = exc.__cause__
            if isinstance(cause, docker.errors.APIError) and cause.status_code == 409:
                return False  # the engine's "in use by a container"
            raise
        return True

    def platform(self) -> tuple[str, str]:
        """(os, architecture) of what the engine runs natively, as image configs name it."""
        with self.guard():
            version = self.client.api.version()
        return str(version.get("Os") or "linux"), architecture_of(str(version.get("Arch") or ""))

    def has_bridge(self) -> bool:
        with self.guard():
            return bool(self.client.api.networks(names=["bridge"]))

    def network_mode(self, configured: str | None) -> str:
        """The configured mode, else the engine's bridge when it has one, else host
        (asked once: every builder container and the app check need it)."""
        if configured:
            return configured
        if self._default_network is None:
            self._default_network = "bridge" if self.has_bridge() else "host"
        return self._default_network

    # --- containers -----------------------------------------------------------------

    @contextlib.contextmanager
    def container(  # noqa: PLR0913 - keyword-only options, as `docker create` takes them
        self,
        image: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        mounts: Iterable[Mount] = (),
        network: str = "host",
        stdin: bytes | None = None,
        confine: Confinement | None = None,
    ) -> Iterator[Box]:
        """Create (not start) a labelled container, run as root in `/` unless `confine`
        says otherwise; force-remove it when the block exits, whatever the reason (error,
        KeyboardInterrupt, `cleanup()` from another thread). `stdin`: sent on the
        lifeline when the container starts (see the module doc). One that
        `follow_until` left running is removed in the background (see `settle`)."""
        box = self._create(
            image, argv, env=env, mounts=mounts, network=network, stdin=stdin, confine=confine
        )
        try:
            yield box
        finally:
            if box.left_running:
                self._remove_soon(box.id, exiting=True)
            else:
                self._remove_container(box.id)

    def _create(  # noqa: PLR0913 - keyword-only options, as `docker create` takes them
        self,
        image: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        mounts: Iterable[Mount] = (),
        network: str = "host",
        stdin: bytes | None = None,
        confine: Confinement | None = None,
    ) -> Box:
        sdk_mounts = [
            docker.types.Mount(m.target, m.source or None, type=m.kind, read_only=m.read_only)
            for m in mounts
        ]
        with self._lock:
            self.raise_if_stopping()
        api = self.client.api
        with self.guard():
            # The low-level call: the SDK's model create() inspects the new container in
            # a second request, and a failure there would leave it unrecorded.
            ident = str(
                api.create_container(
                    image,
                    argv[1:],
                    entrypoint=argv[:1],
                    environment=env or {},
                    working_dir=confine.workdir if confine else "/",
                    user=confine.user if confine else "0:0",
                    labels={**self.labels, OWNER_LABEL: self.owner.label()},
                    # Not detached, stdin open: the engine then closes the container's
                    # stdin once the one attached client (this process) goes away.
                    stdin_open=stdin is not None,
                    detach=stdin is None,
                    host_config=api.create_host_config(
                        mounts=sdk_mounts,
                        network_mode=network,
                        read_only=confine.read_only if confine else None,
                        tmpfs=dict(confine.tmpfs) if confine and confine.tmpfs else None,
                    ),
                )["Id"]
            )
        with self._lock:
            self._created.append(ident)
        created = self.client.containers.prepare_model({"Id": ident})
        return Box(self, created, stdin)

    def keep_lifeline(self, ident: str, stream: Any) -> None:
        """Hold a container's attached stdin open until the container is removed."""
        with self._lock:
            self._lifelines[ident] = stream

    # --- pins: what a build uses between its containers ------------------------------

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Pins made inside stay until the outermost `hold` block ends (pins made outside
        any stay until `cleanup()`); that end also waits for the background removals."""
        with self._lock:
            self._holds += 1
        try:
            yield
        finally:
            with self._lock:
                self._holds -= 1
                outermost = self._holds == 0
                release, self._pins = (self._pins, []) if outermost else ([], self._pins)
            # Side by side with the background removals: each waits on the engine.
            for ident in release:
                self._remove_soon(ident)
            if outermost:
                self.settle()

    def pin(self, image: str, mounts: Iterable[Mount] = ()) -> Box:
        """A running container that keeps `image` and the volumes of `mounts` in use, so
        the engine refuses to remove them (and `prune` skips them) while the build needs
        them between its own containers. It exits when this process dies."""
        box = self._create(image, _PIN_ARGV, mounts=mounts, network="none", stdin=b"")
        try:
            box.start()
        except BaseException:
            self._remove_container(box.id)
            raise
        with self._lock:
            self._pins.append(box.id)
        return box

    def unpin(self, box: _Identified) -> None:
        with self._lock:
            if box.id in self._pins:
                self._pins.remove(box.id)
        self._remove_container(box.id)

    def run(
        self,
        image: str,
        argv: list[str],
        *,
        on_line: OnLine | None = None,
        files: dict[str, dict[str, bytes]] | None = None,
        network: str = "host",
    ) -> RunResult:
        """Run a container to completion; `files` maps a directory to {name: bytes}
        written before start. Returns how it ended and all its output."""
        lines: list[str] = []

        def keep(line: str) -> None:
            lines.append(line)
            if on_line:
                on_line(line)

        with self.container(image, argv, network=network) as box:
            for directory, content in (files or {}).items():
                box.put_files(directory, content)
            outcome = box.follow(keep)
        return RunResult(outcome.exit_code, "\n".join(lines), outcome.oom_killed)

    # --- long-running containers (`pydeploy run`) --------------------------------------

    def create_service(  # noqa: PLR0913 - keyword-only, one per container setting
        self,
        image: str,
        *,
        name: str,
        env: Mapping[str, str],
        network: str,
        publish: Published | None,
        limits: ResourceLimits,
        labels: Mapping[str, str],
        stop_timeout: int,
        tmpfs: Mapping[str, str] | None = None,
        command: Sequence[str] = (),
        volumes: Sequence[Mount] = (),
        healthcheck: bool = True,
    ) -> str:
        """Create (not start) a container that serves, on `network` (`host`, or a bridge
        with `publish`), within `limits`; returns its ID. Without an init process: the
        image's own entrypoint is PID 1 and gets the stop signal, as in production.
        `command`: the arguments to that entrypoint (a one-off; none: the server), which
        serves no HTTP, so `healthcheck=False` turns the image's probe off."""
        host = service_host_config(network, publish, limits, tmpfs)
        if volumes:
            host["mounts"] = [
                docker.types.Mount(m.target, m.source, type=m.kind, read_only=m.read_only)
                for m in volumes
            ]
        with self.guard():
            api = self.client.api
            created = api.create_container(
                image,
                list(command) or None,
                name=name,
                environment=dict(env),
                host_config=api.create_host_config(**host),
                labels={**self.labels, **labels},
                ports=[publish.container_port] if publish else None,
                stop_timeout=stop_timeout,
                healthcheck=None if healthcheck else {"test": ["NONE"]},
                detach=True,
            )
        return str(created["Id"])

    def start(self, ident: str) -> None:
        with self.guard():
            self.client.api.start(ident)

    def attach(self, ident: str) -> Iterable[tuple[bytes | None, bytes | None]]:
        """(stdout, stderr) chunk pairs from the start of the container's output."""
        with self.guard():
            stream: Iterable[tuple[bytes | None, bytes | None]] = self.client.api.attach(
                ident, stdout=True, stderr=True, stream=True, logs=True, demux=True
            )
        return stream

    def wait(self, ident: str) -> Outcome:
        """How the container ended, once it has (no bound: a server runs until stopped)."""
        with self.guard():
            status = self.client.api.wait(ident, timeout=None)
        return self.outcome(ident, int(status.get("StatusCode", 1)))

    def outcome(self, ident: str, exit_code: int) -> Outcome:
        """The outcome of an exited container. Only a failed one is inspected (the kernel
        kills with SIGKILL, so OOM-killed ones never exit 0); unreadable counts as not."""
        if exit_code == 0:
            return Outcome(0)
        try:
            with self.guard():
                state = self.client.api.inspect_container(ident).get("State") or {}
        except EngineError:
            return Outcome(exit_code)
        return Outcome(exit_code, oom_killed=bool(state.get("OOMKilled")))

    def stop(self, ident: str, timeout: int) -> None:
        """SIGTERM (the image's STOPSIGNAL), then SIGKILL after `timeout` seconds."""
        with self.guard():
            # The SDK adds `timeout` to the client's own, which must be a number here.
            self.slow.stop(ident, timeout=timeout)

    def kill(self, ident: str) -> None:
        with contextlib.suppress(EngineError), self.guard():
            self.client.api.kill(ident)

    def remove(self, ident: str) -> None:
        with contextlib.suppress(EngineError), self.guard():
            self.client.api.remove_container(ident, force=True, v=True)

    def containers_with_label(
        self, build_id: str | None = None, *, running_only: bool = False
    ) -> list[str]:
        """IDs of the containers of this build (or of `build_id`) the engine still has."""
        with self.guard():
            found = self.client.api.containers(
                all=not running_only,
                filters={"label": f"{BUILD_LABEL}={build_id or self.build_id}"},
            )
        return [str(c["Id"]) for c in found]

    def orphans(self) -> list[str]:
        """IDs of the builder containers whose owner is gone (owners.orphaned)."""
        with self.guard():
            found = self.client.api.containers(all=True, filters={"label": OWNER_LABEL})
        dead = []
        for summary in found:
            ident = str(summary["Id"])
            state = str(summary.get("State") or "")
            if state == "removing":
                continue
            label = (summary.get("Labels") or {}).get(OWNER_LABEL)
            idle = self._idle_seconds(ident, state, summary) if state != "running" else 0.0
            if owners.orphaned(label, state == "running", idle, self.owner):
                dead.append(ident)
        return dead

    def reap_orphans(self) -> list[str]:
        """Remove the builder containers of dead owners, then the app-check images such
        owners on this host loaded (an image holds no lifeline: one of another host is
        left to `docker image prune`, as it carries no tag); the containers' IDs."""
        dead = self.orphans()
        for ident in dead:
            self.remove(ident)
        with self.guard():
            images = self.client.api.images(all=True, filters={"label": CHECK_IMAGE_LABEL})
        for summary in images:
            owner = owners.Owner.parse((summary.get("Labels") or {}).get(OWNER_LABEL))
            tagged = [t for t in summary.get("RepoTags") or () if t != "<none>:<none>"]
            if owner is not None and not tagged and owners.is_alive(owner, self.owner) is False:
                self.remove_unused_image(str(summary["Id"]))
        return dead

    def _idle_seconds(self, ident: str, state: str, summary: dict[str, Any]) -> float:
        """How long a container has stood stopped (or created, never started)."""
        since = float(summary.get("Created") or 0)
        if state != "created":
            try:
                with self.guard():
                    info = self.client.api.inspect_container(ident)
            except EngineError:
                return 0.0
            since = max(since, _epoch((info.get("State") or {}).get("FinishedAt")))
        return time.time() - since if since else 0.0

    def cleanup(self) -> None:
        """Force-remove every container this Engine created. Idempotent; safe to call from
        a signal handler or another thread while a build runs (the build then raises
        InterruptError)."""
        with self._lock:
            self._stopping = True
            idents = list(self._created)
        for ident in idents:
            self._remove_container(ident)
        self.settle()

    def _remove_soon(self, ident: str, *, exiting: bool = False) -> None:
        """`_remove_container` in a thread of its own, joined by `settle`: a container
        whose work is done need not hold up the build while the engine tears it down.
        One `exiting` by itself is first given EXITING_WAIT_TIMEOUT to do so: removing
        an exited container is quicker than killing one (about 60 ms against 130 ms)."""

        def remove() -> None:
            if exiting:
                with contextlib.suppress(*_SDK_ERRORS):
                    self.client.api.wait(ident, timeout=EXITING_WAIT_TIMEOUT)
            self._remove_container(ident)

        thread = threading.Thread(target=remove, name="pydeploy-remove", daemon=True)
        with self._lock:
            self._removing.append(thread)
        thread.start()

    def settle(self) -> None:
        """Wait until the background removals have ended (before removing an image such a
        container uses, and at the end of the command: cleanup and the outermost hold)."""
        with self._lock:
            threads, self._removing = self._removing, []
        for thread in threads:
            thread.join()

    def _remove_container(self, ident: str) -> None:
        """Force-remove, retrying what a busy engine refuses for a moment (a removal
        already in progress, a root filesystem still busy). What still fails is left to
        the owner label: the next build or `prune` reaps it once this process ends."""
        for delay in (0.2, 0.5, 1.0, 2.0, 4.0, None):
            if self._try_remove(ident):
                break
            if delay is None or self._engine_gone():
                return
            time.sleep(delay)
        with self._lock:
            if ident in self._created:
                self._created.remove(ident)
            lifeline = self._lifelines.pop(ident, None)
        if lifeline is not None:
            _close_stream(lifeline)

    def _try_remove(self, ident: str) -> bool:
        """Removed (or already gone)?"""
        try:
            self.client.api.remove_container(ident, force=True, v=True)
        except docker.errors.NotFound:
            return True
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return False
        return True

    def _engine_gone(self) -> bool:
        try:
            self.client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return True
        return False


def _raw_socket(stream: Any) -> Any:
    """The socket under an attached stream (a SocketIO over unix sockets)."""
    return getattr(stream, "_sock", stream)


def _cancel(stream: Any) -> None:
    """Close a log stream before its end: the SDK's CancellableStream shuts its socket,
    and closing its response releases the file object still holding that socket open."""
    with contextlib.suppress(OSError, docker.errors.DockerException):
        stream.close()
    response = getattr(stream, "_response", None)
    if response is not None:
        with contextlib.suppress(OSError):
            response.close()


def _close_stream(stream: Any) -> None:
    raw = _raw_socket(stream)  # closing the SDK's wrapper leaves it open
    with contextlib.suppress(OSError):
        stream.close()
        raw.close()


def image_facts(attrs: Mapping[str, Any]) -> ImageFacts:
    """An engine's `docker image inspect` document as ImageFacts."""
    config = attrs.get("Config") or {}
    return ImageFacts(
        image_id=str(attrs.get("Id") or ""),
        repo_digests=tuple(str(d) for d in attrs.get("RepoDigests") or ()),
        labels={str(k): str(v) for k, v in (config.get("Labels") or {}).items()},
        env=tuple(str(e) for e in config.get("Env") or ()),
        cmd=tuple(str(c) for c in config.get("Cmd") or ()),
        entrypoint=tuple(str(e) for e in config.get("Entrypoint") or ()),
        workdir=str(config.get("WorkingDir") or ""),
        user=str(config.get("User") or ""),
        created=_epoch(attrs.get("Created")),
        architecture=str(attrs.get("Architecture") or ""),
        diff_ids=tuple(str(d) for d in (attrs.get("RootFS") or {}).get("Layers") or ()),
    )


# Docker's relative CPU weight for one core's worth of shares (its default for a container).
SHARES_PER_CPU = 1024
_NANO = 1_000_000_000
_MIB = 1024 * 1024


def service_host_config(
    network: str,
    publish: Published | None,
    limits: ResourceLimits,
    tmpfs: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments of the SDK's `create_host_config` for a serving container;
    `tmpfs`: mount point -> options."""
    config: dict[str, Any] = {"network_mode": network, "init": False}
    if tmpfs:
        config["tmpfs"] = dict(tmpfs)
    if publish is not None:
        config["port_bindings"] = {publish.container_port: ("127.0.0.1", publish.host_port)}
    if limits.cpus is not None:
        config["nano_cpus"] = round(limits.cpus * _NANO)
    if limits.memory_mib is not None:
        memory = limits.memory_mib * _MIB
        # No swap beyond the limit: an orchestrator's memory limit is a hard one.
        config["mem_limit"] = memory
        config["memswap_limit"] = memory
    if limits.cpu_request is not None:
        config["cpu_shares"] = max(2, round(limits.cpu_request * SHARES_PER_CPU))
    if limits.memory_request_mib is not None:
        config["mem_reservation"] = limits.memory_request_mib * _MIB
    return config


def container_labels(text: str) -> dict[str, str]:
    """`a=1,b=2` -> {"a": "1", "b": "2"}; a ConfigError naming the bad item otherwise."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or key.strip() == BUILD_LABEL:
            raise ConfigError(
                f"{ENV_CONTAINER_LABELS} item {item!r} is not key=value (or names "
                f"{BUILD_LABEL}, which pydeploy sets itself).",
                hint=f"Use e.g. {ENV_CONTAINER_LABELS}=ci.job=1234,ci.runner=a.",
            )
        labels[key.strip()] = value.strip()
    return labels


def _same_repository(tag: str, familiar: str) -> bool:
    """Whether a RepoTags entry (`<none>:<none>` too) names the repository `familiar`."""
    ref = try_parse(tag)
    return ref is not None and ref.familiar == familiar


def _ping() -> tuple[docker.DockerClient, bool]:
    """A client of the engine DOCKER_HOST names that answered /_ping; whether it is Podman.

    The API version comes from the ping's `Api-Version` header, as the docker CLI takes
    it: the SDK's own negotiation asks /version, which Podman takes ~0.5 s to answer.
    PING_TIMEOUT bounds each request."""
    probe = docker.from_env(timeout=PING_TIMEOUT, version=_PROBE_API_VERSION)  # no request
    try:
        response = probe.api.get(f"{probe.api.base_url}/_ping", timeout=PING_TIMEOUT)
        response.raise_for_status()
    finally:
        probe.close()
    headers = response.headers
    version = headers.get("Api-Version")
    # Without the header (an old engine, a proxy that drops it): the SDK negotiates.
    client = docker.from_env(timeout=PING_TIMEOUT, version=version or None)
    if not version:
        try:
            client.ping()
        except _SDK_ERRORS:
            client.close()
            raise
    return client, is_podman_ping(headers)


def is_podman_ping(headers: Mapping[str, str]) -> bool:
    """Whether a /_ping answer's headers are Podman's (`Libpod-Api-Version`, `Server:
    Libpod/4.3.1 (linux)`); Docker's say `Server: Docker/...`."""
    lowered = {key.lower(): value for key, value in headers.items()}
    return "libpod-api-version" in lowered or "libpod" in lowered.get("server", "").lower()


def is_podman_version(version: Mapping[str, Any]) -> bool:
    """Whether a /version document is Podman's (`Components: [{"Name": "Podman Engine"}]`)."""
    components = version.get("Components") or ()
    return any("podman" in str(c.get("Name", "")).lower() for c in components)


def rooted_archive(chunks: Iterable[bytes], top: str) -> Iterator[bytes]:
    """A tar stream in Docker's get_archive layout, entries under `top`. Podman roots the
    archive of a mount point at '' ('', '/bin', ...): when the first entry is such a root,
    every name (and hard link target) is put under `top`; other archives pass unchanged."""

    def relative(name: str) -> str:
        return "/".join(part for part in name.split("/") if part not in {"", "."})

    out = _Spill()
    rooted: bool | None = None
    with (
        tarfile.open(fileobj=as_reader(chunks), mode="r|") as src,
        tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as dst,
    ):
        for member in src:
            if rooted is None:
                rooted = relative(member.name) == ""
            if rooted:
                member.name = "/".join(filter(None, (top, relative(member.name))))
                if member.islnk():
                    member.linkname = "/".join(filter(None, (top, relative(member.linkname))))
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
            yield from out.take()
    yield from out.take()


class _Spill(io.RawIOBase):
    """A write-only file whose bytes are taken out as they come (a tar writer's sink)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> Iterator[bytes]:
        parts, self._parts = self._parts, []
        return iter(parts)


def _prefix_tar(data: bytes, directory: str) -> bytes:
    """Re-root a tar's entries under `directory`. No entries for the parents: the engine
    creates missing ones, and an entry for an existing one (say /tmp) would reset its mode."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src:
            handle = src.extractfile(member) if member.isfile() else None
            member.name = f"{directory}/{member.name}" if directory else member.name
            dst.addfile(member, handle)
    return out.getvalue()


def _epoch(stamp: object) -> float:
    """An engine RFC 3339 time (`2024-05-01T10:00:00Z`, maybe with fractions or an
    offset) as epoch seconds; 0 when missing or unreadable."""
    text = str(stamp or "")
    try:
        when = datetime.fromisoformat(re.sub(r"(\.\d+)?(Z|[+-]\d\d:\d\d)?$", "", text))
    except ValueError:
        return 0.0
    offset = re.search(r"([+-])(\d\d):(\d\d)$", text)
    shift = 0
    if offset:
        shift = (int(offset[2]) * 3600 + int(offset[3]) * 60) * (1 if offset[1] == "+" else -1)
    return when.replace(tzinfo=timezone.utc).timestamp() - shift


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
