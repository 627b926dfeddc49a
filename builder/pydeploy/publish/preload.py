"""The final image loaded before the app check, so the check runs in it and the `docker`
output then only tags it (no second image sent).

Such an image carries no owner label (that would change its ID), so each preload is
recorded in the host cache (index `preload`, by build ID, with the owner) before it is
sent; the record goes when the build ends. A killed build leaves its record, and the next
build on this host removes the image (unless something tagged it or a container uses it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from pydeploy.cachekeys import INDEX_PRELOAD
from pydeploy.engine import owners
from pydeploy.oci.blobs import BlobStore
from pydeploy.oci.image import Image
from pydeploy.publish import daemon


class PreloadingEngine(daemon.LoadingEngine, Protocol):
    build_id: str
    owner: owners.Owner

    def remove_untagged_image(self, image_id: str) -> bool: ...


@contextlib.contextmanager
def preloaded(
    engine: PreloadingEngine, image: Image, scratch: Path, known: daemon.ImageLayers
) -> Iterator[str]:
    """`image` in the engine by its ID alone for the block; afterwards removed unless it
    was tagged meanwhile (the `docker` output's load) or another live build preloaded it
    too (the same inputs give the same ID: that build removes it)."""
    store = known.store
    record = {"image": image.image_id, "owner": engine.owner.label()}
    store.write_index(INDEX_PRELOAD, engine.build_id, record)
    try:
        daemon.load(engine, image, (), scratch, known)
        yield image.image_id
    finally:
        store.remove_index(INDEX_PRELOAD, engine.build_id)
        if not _records_of(store, image.image_id):
            engine.remove_untagged_image(image.image_id)


def reap(engine: PreloadingEngine, store: BlobStore) -> int:
    """Remove the untagged images that builds killed on this host preloaded; how many
    records of dead builds were cleared."""
    cleared = 0
    for key in store.index_keys(INDEX_PRELOAD):
        doc = store.read_index(INDEX_PRELOAD, key)
        owner = owners.Owner.parse(doc.get("owner")) if isinstance(doc, dict) else None
        if owner is not None and owners.is_alive(owner, engine.owner) is not False:
            continue  # running, or of another host sharing this cache: not ours to judge
        image = doc.get("image") if isinstance(doc, dict) else None
        if isinstance(image, str) and len(_records_of(store, image)) <= 1:
            engine.remove_untagged_image(image)
        store.remove_index(INDEX_PRELOAD, key)
        cleared += 1
    return cleared


def _records_of(store: BlobStore, image_id: str) -> list[str]:
    """The builds whose preload record names `image_id`."""
    found = []
    for key in store.index_keys(INDEX_PRELOAD):
        doc = store.read_index(INDEX_PRELOAD, key)
        if isinstance(doc, dict) and doc.get("image") == image_id:
            found.append(key)
    return found
