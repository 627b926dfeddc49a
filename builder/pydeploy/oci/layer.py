"""Layers: a deterministic tar of file entries and its gzip, both in the blob store.

The gzip is the costly part (about 1 s of CPU per 20 MB of venv) and only a manifest
needs it: the engine's `docker load` and a docker-archive take the plain tars (diff ID
= digest). So a layer may be stored uncompressed (`digest == diff_id`) and gzipped when
an output needs it (`gzipped`), once per diff ID: the same tar bytes always give the same
gzip bytes, whether written alongside the tar or later."""

from __future__ import annotations

import contextlib
import gzip
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pydeploy.cachekeys import INDEX_GZIP
from pydeploy.oci.blobs import BlobStore, digest_hex
from pydeploy.oci.compress import gzip_writer
from pydeploy.oci.config import MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR
from pydeploy.oci.entries import FileEntry
from pydeploy.oci.streams import CHUNK
from pydeploy.oci.tar import Sink, plan_entries, write_tar_entries


class Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Tee:
    def __init__(self, *sinks: Sink) -> None:
        self._sinks = sinks

    def write(self, data: bytes) -> int:
        for sink in self._sinks:
            sink.write(data)
        return len(data)


@dataclass(frozen=True)
class Layer:
    """A layer in the blob store: its uncompressed tar is stored under `diff_id`, the
    gzip under `digest`; an uncompressed layer has `digest == diff_id` (and `size ==
    uncompressed_size`) until `gzipped` makes its gzip."""

    role: str
    diff_id: str
    digest: str
    size: int
    uncompressed_size: int

    @property
    def compressed(self) -> bool:
        return self.digest != self.diff_id

    @property
    def media_type(self) -> str:
        return MEDIA_TYPE_LAYER_GZIP if self.compressed else MEDIA_TYPE_LAYER_TAR

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    def to_doc(self) -> dict[str, Any]:
        """A JSON-able record for cache indexes (`from_doc` reads it back)."""
        return {
            "role": self.role,
            "diff_id": self.diff_id,
            "digest": self.digest,
            "size": self.size,
            "uncompressed_size": self.uncompressed_size,
        }

    @classmethod
    def from_doc(cls, doc: Any) -> Layer | None:
        """The layer of a cache index entry, or None when the entry is not one."""
        try:
            return cls(
                str(doc["role"]), str(doc["diff_id"]), str(doc["digest"]),
                int(doc["size"]), int(doc["uncompressed_size"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return None


def build_layer(
    entries: Iterable[FileEntry], *, store: BlobStore, epoch: int, role: str, compress: bool = True
) -> Layer:
    """Write a deterministic tar of `entries` and (with `compress`) its deterministic gzip
    into `store`."""
    if epoch < 0:
        raise ValueError("epoch must be >= 0")
    planned = plan_entries(entries)
    if not compress:
        with store.writer() as tar_sink:
            write_tar_entries(tar_sink, planned, epoch=epoch)
        tar = tar_sink.blob
        return Layer(role, tar.digest, tar.digest, tar.size, tar.size)
    # Exits in reverse: the tar is stored, then the gzip trailer written, then the gzip stored.
    with (
        store.writer() as gz_sink,
        gzip_writer(gz_sink) as compressor,
        store.writer() as tar_sink,
    ):
        write_tar_entries(_Tee(tar_sink, compressor), planned, epoch=epoch)
    tar_blob, gz_blob = tar_sink.blob, gz_sink.blob
    return Layer(role, tar_blob.digest, gz_blob.digest, gz_blob.size, tar_blob.size)


def compress_stored(store: BlobStore, diff_id: str, *, role: str) -> Layer:
    """Deterministically gzip an uncompressed layer already in the store."""
    with (
        store.writer() as gz_sink,
        gzip_writer(gz_sink) as compressor,
        store.open(diff_id) as handle,
    ):
        shutil.copyfileobj(handle, compressor, CHUNK)
    return Layer(role, diff_id, gz_sink.blob.digest, gz_sink.blob.size, store.size(diff_id))


def gzipped(store: BlobStore, layer: Layer) -> Layer:
    """`layer` with its gzip: made from the stored tar the first time (then remembered by
    diff ID, index `gzip`), so that every build and service of the same tar pushes the
    same blob."""
    if layer.compressed:
        return layer
    key = digest_hex(layer.diff_id)
    doc = store.read_index(INDEX_GZIP, key)
    known = Layer.from_doc({**doc, "role": layer.role}) if isinstance(doc, dict) else None
    if known is not None and known.diff_id == layer.diff_id and store.has(known.digest):
        return known
    made = compress_stored(store, layer.diff_id, role=layer.role)
    store.write_index(INDEX_GZIP, key, {k: v for k, v in made.to_doc().items() if k != "role"})
    return made


@contextlib.contextmanager
def open_uncompressed(store: BlobStore, layer: Layer) -> Iterator[Reader]:
    """The layer's tar: the stored copy, or the gzip decompressed on the fly."""
    if store.has(layer.diff_id):
        with store.open(layer.diff_id) as handle:
            yield handle
    else:
        with gzip.open(store.path(layer.digest), "rb") as handle:
            yield handle
