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
    def __init__(self, in_use_until_settled: bool = False) -> None:
        self.build_id = "b" * 12
        self.owner = owners.this_process()
        self.removed: list[str] = []
        self.calls: list[str] = []
        self.in_use = in_use_until_settled  # a check container still on its way out

    def remove_unused_image(self, reference: str) -> bool:
        self.calls.append(f"remove {reference}")
        if self.in_use:
            return False
        self.removed.append(reference)
        return True

    def settle(self) -> None:
        self.calls.append("settle")
        self.in_use = False


def test_a_removal_waits_for_background_removals_only_when_refused() -> None:
    free = Engine()
    assert preload.remove_settled(cast("preload.PreloadingEngine", free), "ref")
    assert free.calls == ["remove ref"], "an untag need not wait"
    held = Engine(in_use_until_settled=True)
    assert preload.remove_settled(cast("preload.PreloadingEngine", held), "ref")
    assert held.calls == ["remove ref", "settle", "remove ref"]


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
