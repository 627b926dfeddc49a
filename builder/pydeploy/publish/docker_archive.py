"""`docker-archive:FILE`: write a `docker load`-able tar file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydeploy.oci.archive import write_docker_archive
from pydeploy.oci.image import Image
from pydeploy.publish.publisher import Published, Report


@dataclass(frozen=True)
class DockerArchivePublisher:
    path: Path

    @property
    def step(self) -> str:
        return "write"

    def publish(self, image: Image, tags: tuple[str, ...], report: Report) -> Published:  # noqa: ARG002 - Publisher's signature
        write_docker_archive(self.path, image, list(tags))
        return Published(f"docker-archive:{self.path}")
