"""`docker`: load the image into the local engine, sending only the layers it lacks."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from pydeploy.cachekeys import INDEX_IMAGE_LAYERS
from pydeploy.errors import PublishError
from pydeploy.oci.archive import write_docker_archive
from pydeploy.oci.blobs import BlobStore, digest_hex
from pydeploy.oci.image import Image
from pydeploy.publish.publisher import Published, Report


class LoadingEngine(Protocol):
    """What loading needs from the engine (pydeploy.engine.client.Engine has it)."""

    def local_image_ids(self) -> list[str]: ...
    def diff_ids(self, image_id: str) -> tuple[str, ...] | None: ...
    def load_image(self, data: IO[bytes]) -> object: ...
    def tag_image(self, image_id: str, reference: str) -> None: ...
    def image_id(self, name: str) -> str | None: ...
    @property
    def is_podman(self) -> bool: ...


@dataclass(frozen=True)
class ImageLayers:
    """Image ID -> its layer diff IDs, remembered in the host cache (index `image-layers`).

    An image ID is the digest of a config that lists those diff IDs, so an entry can never
    go stale: a load asks the engine only about images it has not seen before."""

    store: BlobStore

    def get(self, image_id: str) -> tuple[str, ...] | None:
        key = _key(image_id)
        doc = self.store.read_index(INDEX_IMAGE_LAYERS, key) if key else None
        if isinstance(doc, list) and all(isinstance(d, str) for d in doc):
            return tuple(doc)
        return None

    def put(self, image_id: str, diff_ids: Sequence[str]) -> None:
        key = _key(image_id)
        if key:
            self.store.write_index(INDEX_IMAGE_LAYERS, key, list(diff_ids))


def _key(image_id: str) -> str | None:
    """The index key of an image ID; None for one that is not a sha256 digest (then it is
    not content-addressed, and not remembered)."""
    try:
        return digest_hex(image_id)
    except ValueError:
        return None


def leading_chain(chains: Iterable[Sequence[str]], wanted: Sequence[str]) -> int:
    """How many leading layers of `wanted` some chain holds, in the same order."""
    best = 0
    for chain in chains:
        common = 0
        for have, want in zip(chain, wanted, strict=False):
            if have != want:
                break
            common += 1
        best = max(best, common)
        if best == len(wanted):
            break  # the rest need not be read (nor asked for)
    return best


@dataclass(frozen=True)
class DaemonPublisher:
    engine: LoadingEngine
    scratch: Path  # where the archive is spooled on its way to the engine
    known: ImageLayers
    held: frozenset[str] = frozenset()  # in the engine under the build's own reference

    @property
    def step(self) -> str:
        return "load"

    def publish(self, image: Image, tags: tuple[str, ...], report: Report) -> Published:  # noqa: ARG002 - Publisher's signature
        """`docker load` the image (only tag it when the engine has it, e.g. the app check
        ran in it) and check the engine's image ID is ours.

        moby's loader opens a layer file only when that layer chain is missing, so layers
        the engine already holds are listed in manifest.json but left out of the archive
        (Podman's loader reads every layer: it gets them all)."""
        load(self.engine, image, tags, self.scratch, self.known, held=self.held)
        loaded = self.engine.image_id(tags[0] if tags else image.image_id)
        if loaded != image.image_id:
            raise PublishError(
                f"The engine loaded {tags[0] if tags else 'the image'} as {loaded}, not as "
                f"{image.image_id}.",
                hint="This is a pydeploy bug; rerun with --debug and report it.",
            )
        return Published(f"into the engine as {', '.join(tags)}")


def load(  # noqa: PLR0913 - the image, where it goes, what is known of the engine
    engine: LoadingEngine,
    image: Image,
    tags: tuple[str, ...],
    scratch: Path,
    known: ImageLayers,
    *,
    held: frozenset[str] = frozenset(),
) -> bool:
    """Put the image in the engine under `tags` (none: by its ID alone), sending none of
    the leading layers the engine already holds; True when it was sent, False when the
    engine had it and it was only tagged (an image in `held` is not even looked for: the
    build holds it under a reference of its own, as publish.preload does)."""
    local = [] if image.image_id in held else engine.local_image_ids()
    if image.image_id in held or image.image_id in local:
        for tag in tags:
            engine.tag_image(image.image_id, tag)
        return False
    wanted = image.diff_ids
    # Podman refuses an archive that leaves out a layer, even one it holds.
    held_layers = 0 if engine.is_podman else leading_chain(_chains(engine, known, local), wanted)
    present = set(wanted[:held_layers])
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=scratch) as handle:
        write_docker_archive(handle, image, list(tags), omit_diff_ids=present)
        handle.seek(0)
        engine.load_image(handle)
    known.put(image.image_id, wanted)
    return True


def _chains(
    engine: LoadingEngine, known: ImageLayers, image_ids: list[str]
) -> Iterator[tuple[str, ...]]:
    """The layer list of each local image: from the host cache, else asked (and kept)."""
    for image_id in image_ids:
        chain = known.get(image_id)
        if chain is None:
            chain = engine.diff_ids(image_id)
            if chain is None:
                continue  # removed since listed
            known.put(image_id, chain)
        yield chain
