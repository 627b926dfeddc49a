"""`docker`: load the image into the local engine, sending only the layers it lacks."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from pydeploy.errors import PublishError
from pydeploy.oci.archive import write_docker_archive
from pydeploy.oci.image import Image
from pydeploy.publish.publisher import Published, Report


class LoadingEngine(Protocol):
    """What loading needs from the engine (pydeploy.engine.client.Engine has it)."""

    def present_diff_ids(self, image_id: str, diff_ids: list[str]) -> set[str]: ...
    def load_image(self, data: IO[bytes]) -> object: ...
    def image_id(self, name: str) -> str | None: ...


@dataclass(frozen=True)
class DaemonPublisher:
    engine: LoadingEngine
    scratch: Path  # where the archive is spooled on its way to the engine

    @property
    def step(self) -> str:
        return "load"

    def publish(self, image: Image, tags: tuple[str, ...], report: Report) -> Published:  # noqa: ARG002 - Publisher's signature
        """`docker load` the image and check the engine's image ID is ours.

        moby's loader opens a layer file only when that layer chain is missing, so layers
        the engine already holds are listed in manifest.json but left out of the archive."""
        load(self.engine, image, tags, self.scratch)
        loaded = self.engine.image_id(tags[0] if tags else image.image_id)
        if loaded != image.image_id:
            raise PublishError(
                f"The engine loaded {tags[0] if tags else 'the image'} as {loaded}, not as "
                f"{image.image_id}.",
                hint="This is a pydeploy bug; rerun with --debug and report it.",
            )
        return Published(f"into the engine as {', '.join(tags)}")


def load(engine: LoadingEngine, image: Image, tags: tuple[str, ...], scratch: Path) -> None:
    """`docker load` the image under `tags` (none: by its ID alone), leaving out the
    leading layers the engine already holds."""
    present = engine.present_diff_ids(image.image_id, image.diff_ids)
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=scratch) as handle:
        write_docker_archive(handle, image, list(tags), omit_diff_ids=present)
        handle.seek(0)
        engine.load_image(handle)
