"""Layers: a deterministic tar of file entries and its gzip, both in the blob store."""

from __future__ import annotations

import contextlib
import gzip
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pydeploy.oci.blobs import BlobStore
from pydeploy.oci.compress import gzip_writer
from pydeploy.oci.config import MEDIA_TYPE_LAYER_GZIP
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
    gzip under `digest`."""

    role: str
    diff_id: str
    digest: str
    size: int
    uncompressed_size: int
    media_type: str = MEDIA_TYPE_LAYER_GZIP

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


def build_layer(entries: Iterable[FileEntry], *, store: BlobStore, epoch: int, role: str) -> Layer:
    """Write a deterministic tar of `entries` and its deterministic gzip into `store`."""
    if epoch < 0:
        raise ValueError("epoch must be >= 0")
    planned = plan_entries(entries)
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


@contextlib.contextmanager
def open_uncompressed(store: BlobStore, layer: Layer) -> Iterator[Reader]:
    """The layer's tar: the stored copy, or the gzip decompressed on the fly."""
    if store.has(layer.diff_id):
        with store.open(layer.diff_id) as handle:
            yield handle
    else:
        with gzip.open(store.path(layer.digest), "rb") as handle:
            yield handle
