"""Preload records: a build's own reference is removed when it ends, and the next build
removes the references of builds killed on this host, never those of live ones or of
another host sharing the cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import cast

from pydeploy.cachekeys import INDEX_PRELOAD
from pydeploy.engine import owners
from pydeploy.oci.blobs import BlobStore
from pydeploy.publish import preload


class Engine:
    def __init__(self) -> None:
        self.build_id = "b" * 12
        self.owner = owners.this_process()
        self.removed: list[str] = []

    def remove_unused_image(self, reference: str) -> bool:
        self.removed.append(reference)
        return True


def test_reap_removes_only_the_references_of_dead_builds_on_this_host(tmp_path: Path) -> None:
    store, engine = BlobStore(tmp_path), Engine()
    me = engine.owner
    dead = dataclasses.replace(me, started=me.started + "0")  # the pid, started another time
    elsewhere = dataclasses.replace(me, host="other-host")
    store.write_index(INDEX_PRELOAD, "dead", {"owner": dead.label()})
    store.write_index(INDEX_PRELOAD, "live", {"owner": me.label()})
    store.write_index(INDEX_PRELOAD, "remote", {"owner": elsewhere.label()})
    assert preload.reap(cast("preload.PreloadingEngine", engine), store) == 1
    assert engine.removed == ["pydeploy-preload:dead"]
    assert store.index_keys(INDEX_PRELOAD) == ["live", "remote"]
