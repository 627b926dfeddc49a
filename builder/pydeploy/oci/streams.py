"""File objects over the docker SDK's streams, which arrive as iterators of byte chunks."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import IO, Any

CHUNK = 1 << 20  # the read/copy size for layer-sized streams


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (the docker SDK's streams)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


TarSource = IO[bytes] | Iterable[bytes]


def as_reader(source: TarSource) -> IO[bytes]:
    """A file object for `source`: returned as is when it already is one, else wrapped
    (e.g. `image.save()` or the first item of `container.get_archive()`)."""
    if hasattr(source, "read"):
        return source  # type: ignore[return-value]
    return io.BufferedReader(_ChunkReader(source), CHUNK)
