"""The layers' gzip: one member with a fixed header, from the stdlib.

`gzip.GzipFile(filename="", mtime=0)` writes the header `1f 8b 08 00 00000000 00 ff` (no
name, mtime 0, XFL 0 at level 6, OS 255), zlib's raw deflate, then the CRC-32/size trailer:
the same bytes as the hand-written encoder it replaced. Checked on CPython 3.8-3.13 for the
golden layer, a 180 MB venv tar, 8 MB of random bytes, 64 MB of zeros and empty input,
each written whole, in the layer writer's own write sizes, in 1 MiB chunks and in random
small pieces. The golden digests and tests/unit/oci/test_compress.py pin it. Only the
deflate stream depends on the zlib build: another zlib may change layer *digests*, never
`diff_id`s, so image IDs stay stable.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Protocol

from pydeploy.oci.blobs import BlobStore
from pydeploy.oci.streams import CHUNK

GZIP_LEVEL = 6
GZIP_MAGIC = b"\x1f\x8b"


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...
    def flush(self) -> object: ...


def gzip_writer(sink: Sink, level: int = GZIP_LEVEL) -> gzip.GzipFile:
    """A deterministic gzip member written into `sink`, fed incrementally; closing it
    (leaving its `with` block) writes the trailer and leaves `sink` open."""
    return gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=sink, mtime=0)


def gunzip_into(store: BlobStore, path: Path) -> str:
    """Store the decompressed content of the gzip file at `path`; its digest."""
    with store.writer() as sink, gzip.open(path, "rb") as src:
        shutil.copyfileobj(src, sink, CHUNK)
    return sink.blob.digest
