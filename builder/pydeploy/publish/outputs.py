"""The user's outputs (`--output docker|registry|oci:DIR|docker-archive:FILE`) and the one
place each becomes its Publisher."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydeploy.errors import ConfigError
from pydeploy.publish.daemon import DaemonPublisher, ImageLayers, LoadingEngine
from pydeploy.publish.docker_archive import DockerArchivePublisher
from pydeploy.publish.oci_layout import OciLayoutPublisher
from pydeploy.publish.publisher import Publisher
from pydeploy.publish.push import RegistryPublisher
from pydeploy.publish.registry import Fetch

OutputKind = Literal["docker", "registry", "oci", "docker-archive"]


@dataclass(frozen=True)
class Output:
    kind: OutputKind
    path: Path | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}" if self.path else self.kind


def parse_output(spec: str) -> Output:
    """`docker`, `registry`, `oci:DIR` or `docker-archive:FILE`."""
    kind, _, rest = spec.partition(":")
    if kind in {"docker", "registry"} and not rest:
        return Output(kind)  # type: ignore[arg-type]
    if kind in {"oci", "docker-archive"} and rest:
        return Output(kind, Path(rest))  # type: ignore[arg-type]
    raise ConfigError(
        f"--output {spec!r} is not a known output.",
        hint="Use `docker` (default), `registry`, `oci:DIR` or `docker-archive:FILE`.",
    )


@dataclass(frozen=True)
class Destinations:
    """What publishers need from the build: the engine to load into, a scratch directory
    for the archive on its way there, the cache root (registry blob locations) and the
    layer lists of the engine's images it remembers."""

    engine: LoadingEngine | None  # None: a build without an engine (no `docker` output)
    scratch: Path
    cache: Path
    known: ImageLayers
    held: frozenset[str] = frozenset()  # image IDs the build holds in the engine (a preload)
    fetch: Fetch | None = None  # the blobs a registry cache restore left in the registry


def publisher_for(output: Output, where: Destinations) -> Publisher:
    """The Publisher that sends an image to `output`."""
    if output.kind == "docker":
        if where.engine is None:
            raise AssertionError("the `docker` output without an engine")  # refused earlier
        return DaemonPublisher(where.engine, where.scratch, where.known, where.held)
    if output.kind == "registry":
        return RegistryPublisher(where.cache, where.fetch)
    if output.path is None:
        raise AssertionError(f"{output} has no path")  # parse_output never makes one
    if output.kind == "oci":
        return OciLayoutPublisher(output.path)
    return DockerArchivePublisher(output.path)
