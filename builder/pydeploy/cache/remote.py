"""The registry as a shared build cache: one build's lookups and the records it leaves.

A machine with an empty engine and host cache (a fresh CI runner) asks the cache
repository for the record of each costly layer's key before making it (the dependency
install, apt's runtime packages, the build commands); a hit downloads the recorded layers
into the host store, verified, instead of running the builder. At the end the build writes
the records the cache repository lacks (pydeploy.cache.records has their format).

An optimisation, never a correctness risk: a missing, foreign or damaged record, a blob
whose bytes are not its digest or whose tar is not its diff ID, an unreachable or
unauthorised registry, all read as a miss: the build goes on as without the cache and says
so. A hit gives exactly the layers the record names, which a build without the cache makes
from the same inputs, so the image is byte-identical. Writing a record never fails a build
either: the image is already published by then.

Trust: a record decides what is installed, so whoever may push to the cache repository is
trusted as much as the base image's publisher.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydeploy.cache import records
from pydeploy.cachekeys import INDEX_GZIP, INDEX_REGISTRY_RECORD
from pydeploy.errors import PydeployError
from pydeploy.oci.blobs import BlobStore, digest_hex, sha256_digest
from pydeploy.oci.config import EMPTY_JSON
from pydeploy.oci.layer import Layer, gzipped
from pydeploy.oci.streams import CHUNK
from pydeploy.plan.references import Reference
from pydeploy.plan.registrycache import CacheRefs
from pydeploy.publish import registry

_PARALLEL = 4  # blobs downloaded at once


class _UnusableRecordError(Exception):
    """A record whose blobs do not match it: a miss."""


class RegistryCache:
    """One build's use of the registry cache (thread-safe: steps run in a pool)."""

    def __init__(
        self,
        refs: CacheRefs,
        store: BlobStore,
        note: Callable[[str], None],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.refs, self.store, self._note, self._env = refs, store, note, environ
        self.restored: list[str] = []  # kinds whose layers came from the registry
        self.saved: list[str] = []  # kinds whose records this build wrote
        self._pending: dict[tuple[str, str], tuple[list[Layer], dict[str, Any]]] = {}
        self._failed: set[str] = set()  # "from"/"to": a side that failed once is left alone
        self._lock = threading.Lock()
        # Layers of records restored without their bytes: fetched when something needs them.
        self._remote: dict[str, Layer] = {}
        self._missed: set[tuple[str, str]] = set()  # asked once, not there or not usable

    def note(self, text: str) -> None:
        """A line about the cache (a miss's reason) on the build's progress."""
        self._note(text)

    def to_json(self) -> dict[str, Any]:
        """`cache` of `build --json`."""
        return {
            "from": str(self.refs.pull) if self.refs.pull else None,
            "to": str(self.refs.push) if self.refs.push else None,
            "restored": sorted(set(self.restored)),
            "saved": sorted(set(self.saved)),
        }

    # -- reading

    def restore(self, kind: str, key: str, *, fetch: bool = True) -> records.Record | None:
        """The record of (`kind`, `key`) with its layers in the host store (downloaded when
        missing), or None: not there, not usable, or the registry not reachable. Without
        `fetch` the layers stay in the registry until `fetch_missing` (a push of them to
        that registry mounts them from the cache repository instead)."""
        pull = self.refs.pull
        if pull is None or "from" in self._failed or (kind, key) in self._missed:
            return None
        found = self._restore(pull, kind, key, fetch=fetch)
        if found is None:
            with self._lock:
                self._missed.add((kind, key))
        return found

    def restore_layer(self, kind: str, key: str) -> Layer | None:
        """The one layer of a single-layer kind's record (system packages, build
        commands), in the host store; None as `restore` gives it, or for another shape."""
        record = self.restore(kind, key)
        return record.layers[0] if record is not None and len(record.layers) == 1 else None

    def _restore(
        self, pull: Reference, kind: str, key: str, *, fetch: bool
    ) -> records.Record | None:
        ref = dataclasses.replace(pull, tag=records.tag(kind, key))
        try:
            with registry.RegistryClient(ref, environ=self._env) as client:
                data = client.find_manifest()
                if data is None:
                    return None
                record = records.parse(data, kind, key)
                if isinstance(record, str):
                    self._note(f"{kind} record {ref.tag} in {_name(pull)} not used: {record}")
                    return None
                if fetch:
                    self._fetch(client, record.layers)
                else:
                    self._leave_remote(record.layers)
        except PydeployError as exc:
            self._failed.add("from")
            self._note(f"{_name(pull)} not read ({exc.message}); building without it")
            return None
        except _UnusableRecordError as exc:
            self._note(f"{kind} record {ref.tag} in {_name(pull)} not used: {exc}")
            return None
        with self._lock:
            self.restored.append(kind)
        if self.refs.push == pull:  # already where this build would write it
            self._mark(ref, sha256_digest(data))
        return record

    def _leave_remote(self, layers: tuple[Layer, ...]) -> None:
        pull = self.refs.pull
        assert pull is not None  # noqa: S101 - only a restore calls it
        absent = [la for la in layers if not self.store.has(la.digest)]
        with self._lock:
            self._remote.update({la.digest: la for la in absent})
        # Where a push to this registry mounts them from (pydeploy.publish.registry).
        locations = registry.BlobLocations(self.store.root.parent)
        locations.record(pull.registry, pull.repository, [la.digest for la in absent])

    def fetch_missing(self, digests: list[str]) -> None:
        """Download the blobs among `digests` that a restore left in the registry (a push
        to another registry, a local output, the app check needs their bytes)."""
        with self._lock:
            wanted = tuple(self._remote[d] for d in dict.fromkeys(digests) if d in self._remote)
        pull = self.refs.pull
        if not wanted or pull is None:
            return
        try:
            with registry.RegistryClient(pull, environ=self._env) as client:
                self._fetch(client, wanted)
        except _UnusableRecordError as exc:
            raise PydeployError(
                f"a layer the {_name(pull)} recorded is damaged ({exc}); this build used "
                "its record without reading it.",
                hint="Build again: the damaged record is then not used "
                "(or delete its tag from the cache repository).",
            ) from exc
        with self._lock:
            for layer in wanted:
                self._remote.pop(layer.digest, None)

    def left_in_registry(self) -> frozenset[str]:
        """The digests of restored layers this host has not downloaded."""
        with self._lock:
            return frozenset(self._remote)

    def _fetch(self, client: registry.RegistryClient, layers: tuple[Layer, ...]) -> None:
        store = self.store
        missing = [la for la in layers if not (store.has(la.digest) and store.has(la.diff_id))]
        if not missing:
            return
        tmp_root = store.root.parent / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        with (
            tempfile.TemporaryDirectory(prefix="pydeploy-cache-", dir=tmp_root) as tmp,
            ThreadPoolExecutor(max_workers=_PARALLEL, thread_name_prefix="cache") as pool,
        ):
            for future in [pool.submit(self._fetch_one, client, la, Path(tmp)) for la in missing]:
                future.result()

    def _fetch_one(self, client: registry.RegistryClient, layer: Layer, tmp: Path) -> None:
        store = self.store
        if not store.has(layer.digest):
            dest = tmp / digest_hex(layer.digest)
            client.download_blob(layer.digest, dest)  # verified against the digest
            store.put_file(dest, move=True)
        if not store.has(layer.diff_id):
            with gzip.open(store.path(layer.digest), "rb") as src, store.writer() as sink:
                try:
                    shutil.copyfileobj(src, sink, CHUNK)
                except (OSError, EOFError) as exc:
                    raise _UnusableRecordError(
                        f"layer {layer.digest[:19]} is not a gzip ({exc})"
                    ) from exc
            if sink.blob.digest != layer.diff_id:
                raise _UnusableRecordError(
                    f"layer {layer.digest[:19]} does not unpack to its diff ID"
                )
        # As `gzipped` would have made it: the next build's outputs reuse this gzip.
        doc = {k: v for k, v in layer.to_doc().items() if k != "role"}
        store.write_index(INDEX_GZIP, digest_hex(layer.diff_id), doc)

    # -- writing

    def remember(self, kind: str, key: str, layers: list[Layer], document: dict[str, Any]) -> None:
        """Record (`kind`, `key`) -> `layers` in the cache repository at `save`."""
        if self.refs.push is not None and layers:
            with self._lock:
                self._pending[kind, key] = (layers, document)

    def save(self) -> None:
        """Write the remembered records the cache repository lacks; a failure is a note."""
        push = self.refs.push
        if push is None or "to" in self._failed:
            return
        locations = registry.BlobLocations(self.store.root.parent)
        for (kind, key), (layers, document) in sorted(self._pending.items()):
            ref = dataclasses.replace(push, tag=records.tag(kind, key))
            record = records.Record(
                kind, key, tuple(gzipped(self.store, la) for la in layers), document
            )
            data = records.manifest(record)
            digest = sha256_digest(data)
            if self._marked(ref) == digest:
                continue
            if self.refs.pull is None or self.refs.pull.registry != push.registry:
                self.fetch_missing([la.digest for la in record.layers])  # no mount from there
            try:
                with registry.RegistryClient(ref, environ=self._env) as client:
                    there = client.find_manifest()
                if there != data:
                    blobs: dict[str, tuple[int, Path | bytes]] = {
                        la.digest: (la.size, self.store.path(la.digest)) for la in record.layers
                    }
                    blobs[sha256_digest(EMPTY_JSON)] = (2, EMPTY_JSON)
                    registry.push_artifact(
                        ref, data, blobs, locations=locations, fetch=self.fetch_missing
                    )
                    self.saved.append(kind)
            except PydeployError as exc:
                self._failed.add("to")
                self._note(f"{_name(push)} not written ({exc.message}); the image is published")
                return
            self._mark(ref, digest)

    # -- what this host knows is there: a warm rebuild sends no request

    def _mark(self, ref: Reference, digest: str) -> None:
        self.store.write_index(INDEX_REGISTRY_RECORD, _ref_key(ref), {"digest": digest})

    def _marked(self, ref: Reference) -> str | None:
        doc = self.store.read_index(INDEX_REGISTRY_RECORD, _ref_key(ref))
        found = doc.get("digest") if isinstance(doc, dict) else None
        return found if isinstance(found, str) else None


def _ref_key(ref: Reference) -> str:
    return hashlib.sha256(str(ref).encode()).hexdigest()


def _name(ref: Reference) -> str:
    return f"registry cache {ref.registry}/{ref.repository}"
