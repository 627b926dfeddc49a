"""The values that cross the engine boundary: what callers ask an engine for (mounts,
commit settings, resource limits, a published port) and what it answers (image, volume
and container facts). Plain frozen dataclasses without the Docker SDK, so pure code
(deploy's resource arithmetic, the builder stage's protocol and its fakes) can use them
without importing it; only engine/client.py turns them into SDK calls and back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# --- what a caller asks for ---------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    """An engine-side named volume (or a tmpfs) mounted into a container. Never a host
    path: the engine may be remote (DOCKER_HOST=tcp://..., docker-in-docker), where the
    client's files do not exist; send files with `Box.put_archive` instead."""

    target: str
    source: str
    kind: Literal["volume", "tmpfs"] = "volume"
    read_only: bool = False


@dataclass(frozen=True)
class Confinement:
    """How a container of a runtime image runs as the image will in production: its
    user and working directory, a read-only root filesystem, and tmpfs mounts
    (path -> mount options, e.g. `uid=10001,gid=10001,mode=0755`)."""

    user: str
    workdir: str
    read_only: bool = True
    tmpfs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CommitSettings:
    """The whole config of an image committed from a container: nothing of the
    container's own environment, command or labels is kept."""

    env: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ResourceLimits:
    """What a container may use. `cpus` and `memory_mib` are hard limits (no swap beyond
    the memory limit, as an orchestrator's); the requests are soft: a relative CPU
    weight and a memory reservation. None: not limited."""

    cpus: float | None = None  # cores
    memory_mib: int | None = None
    cpu_request: float | None = None  # cores
    memory_request_mib: int | None = None


@dataclass(frozen=True)
class Published:
    """A container port reachable at `host_port` on the host's loopback interface only."""

    container_port: int
    host_port: int


# --- what the engine answers ----------------------------------------------------------------


@dataclass(frozen=True)
class ImageRef:
    """A local image: the name asked for, its ID, and its registry digest when the engine
    knows one (pulled images have one; locally built or imported images do not)."""

    name: str
    image_id: str
    repo_digest: str | None


@dataclass(frozen=True)
class ImageFacts:
    """What the engine knows of a local image (`docker image inspect`)."""

    image_id: str
    repo_digests: tuple[str, ...] = ()  # `repository@sha256:...`, one per registry it came from
    labels: dict[str, str] = field(default_factory=dict)
    env: tuple[str, ...] = ()  # NAME=value
    cmd: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""  # "" when the image does not set one (root)
    created: float = 0.0  # epoch seconds; 0 when the engine does not say
    architecture: str = ""
    diff_ids: tuple[str, ...] = ()  # its layers, bottom first


@dataclass(frozen=True)
class HistoryEntry:
    """One step of an image's history (`docker history`)."""

    created_by: str
    size: int  # bytes the step added; 0 for a metadata-only step


@dataclass(frozen=True)
class Outcome:
    """How a container ended."""

    exit_code: int
    oom_killed: bool = False  # the kernel killed it for exceeding its memory limit


@dataclass(frozen=True)
class RunResult:
    """A container run to completion: how it ended and everything it printed."""

    exit_code: int
    output: str
    oom_killed: bool = False


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    labels: dict[str, str]
    created: float  # epoch seconds; 0 when the engine does not say


@dataclass(frozen=True)
class ImageInfo:
    """A tagged image of one repository, as the engine lists it."""

    reference: str  # repository:tag
    image_id: str
    created: float


@dataclass(frozen=True)
class DiskUsage:
    volumes: dict[str, int]  # name -> bytes
    images: dict[str, int]  # image ID -> bytes not shared with other images
