"""Where a built image goes: the local engine, a registry, an OCI layout or a
docker-archive file. Each sink is all-or-nothing at its destination."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydeploy.engine.client import Engine
from pydeploy.errors import ConfigError, PublishError
from pydeploy.oci.archive import write_docker_archive
from pydeploy.oci.image import Image
from pydeploy.oci.layout import write_oci_layout
from pydeploy.plan.references import parse_reference
from pydeploy.publish import registry

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


def load_into_engine(engine: Engine, image: Image, tags: tuple[str, ...], scratch: Path) -> None:
    """`docker load` the image, sending only the layers the engine does not have.

    moby's loader opens a layer file only when that layer chain is missing, so layers the
    engine already holds are listed in manifest.json but left out of the archive."""
    present = engine.present_diff_ids(image.image_id, [la.diff_id for la in image.layers])
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=scratch) as handle:
        write_docker_archive(handle, image, list(tags), omit_diff_ids=present)
        handle.seek(0)
        engine.load_image(handle)
    loaded = engine.image_id(tags[0]) if tags else None
    if loaded != image.image_id:
        raise PublishError(
            f"The engine loaded {tags[0] if tags else 'the image'} as {loaded}, not as "
            f"{image.image_id}.",
            hint="This is a pydeploy bug; rerun with --debug and report it.",
        )


def push_to_registry(
    image: Image, tags: tuple[str, ...], report: Callable[[str], None], cache: Path
) -> dict[str, str]:
    """Push under every tag; blobs already there are skipped, blobs this host pushed to
    another repository of the registry are mounted (recorded in `cache`). Returns
    ref -> digest."""
    pushed: dict[str, str] = {}
    locations = registry.BlobLocations(cache)
    for ref in tags:
        counts = {"exists": 0, "uploaded": 0, "mounted": 0}

        def progress(event: registry.PushEvent, counts: dict[str, int] = counts) -> None:
            if event.kind in counts:
                counts[event.kind] += 1

        pushed[ref] = registry.push(image, ref, progress=progress, locations=locations)
        report(
            f"pushed {ref}@{pushed[ref]} ({counts['uploaded']} blobs uploaded, "
            f"{counts['mounted']} mounted from other repositories, "
            f"{counts['exists']} already there)"
        )
    return pushed


def write_output(output: Output, image: Image, tags: tuple[str, ...]) -> None:
    if output.path is None:
        raise AssertionError(output)
    if output.kind == "oci":
        tag = parse_reference(tags[0]).tag if tags else None
        write_oci_layout(output.path, image, tag or "latest")
    else:
        write_docker_archive(output.path, image, list(tags))
