"""The final image loaded before the app check, so the check runs in it and the `docker`
output then only tags it (no second image sent).

Such an image carries no owner label (that would change its ID). It is loaded under a
reference of this build's own, `pydeploy-preload:<build ID>`, which is all the build
removes afterwards: removing by image ID would also untag it if a concurrent build of
the same inputs had tagged it meanwhile. Each preload is recorded in the host cache
(index `preload`, by build ID, with the owner) before it is sent, and the record goes
when the build ends; a killed build leaves its record, and the next build on this host
removes that build's reference (and with it the image, unless tagged or in use).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from pydeploy.cachekeys import INDEX_PRELOAD, PRELOAD_REPOSITORY
from pydeploy.engine import owners
from pydeploy.oci.blobs import BlobStore
from pydeploy.oci.image import Image
from pydeploy.publish import daemon


class PreloadingEngine(daemon.LoadingEngine, Protocol):
    build_id: str
    owner: owners.Owner

    def remove_unused_image(self, reference: str) -> bool: ...
    def settle(self) -> None: ...


def reference(build_id: str) -> str:
    return f"{PRELOAD_REPOSITORY}:{build_id}"


@contextlib.contextmanager
def preloaded(
    engine: PreloadingEngine, image: Image, scratch: Path, known: daemon.ImageLayers
) -> Iterator[str]:
    """`image` in the engine under this build's preload reference for the block; that
    reference is removed afterwards (the image stays when the `docker` output tagged it)."""
    store = known.store
    record = {"owner": engine.owner.label()}
    store.write_index(INDEX_PRELOAD, engine.build_id, record)
    try:
        daemon.load(engine, image, (reference(engine.build_id),), scratch, known)
        yield image.image_id
    finally:
        if remove_settled(engine, reference(engine.build_id)):
            store.remove_index(INDEX_PRELOAD, engine.build_id)


def remove_settled(engine: PreloadingEngine, name: str) -> bool:
    """Remove an image (or untag it) unless a container uses it. A check container may
    still be on its way out in the background (Engine.settle): an untag next to another
    tag does not wait for it, the removal of the last reference waits and retries."""
    if engine.remove_unused_image(name):
        return True
    engine.settle()
    return engine.remove_unused_image(name)


def reap(engine: PreloadingEngine, store: BlobStore) -> int:
    """Remove the preload references of builds killed on this host (their images go with
    them unless tagged or in use); how many were removed."""
    cleared = 0
    for build_id in store.index_keys(INDEX_PRELOAD):
        doc = store.read_index(INDEX_PRELOAD, build_id)
        owner = owners.Owner.parse(doc.get("owner")) if isinstance(doc, dict) else None
        if owner is not None and owners.is_alive(owner, engine.owner) is not False:
            continue  # running, or of another host sharing this cache: not ours to judge
        if engine.remove_unused_image(reference(build_id)):
            store.remove_index(INDEX_PRELOAD, build_id)
            cleared += 1
    return cleared
