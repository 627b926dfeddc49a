"""A content-addressed blob store: `root/sha256/<hex>`, written atomically.

Every blob enters through a temp file in the same directory that is renamed into place
only after its digest is known, so an interrupted build never leaves a half-written blob
under a name that a later build would trust. Small JSON indexes (e.g. "which blobs make
up base image X") live beside the blobs under `root/index/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydeploy import atomic

ALGORITHM = "sha256"
_CHUNK = 1 << 20


def sha256_digest(data: bytes) -> str:
    """The OCI digest string (`sha256:<hex>`) of `data`."""
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def digest_hex(digest: str) -> str:
    """The hex part of a `sha256:<hex>` digest, validated so it is safe as a file name."""
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != ALGORITHM or len(hexpart) != 64 or not _is_lower_hex(hexpart):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return hexpart


def _is_lower_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class Blob:
    """A stored blob: its digest and size in bytes."""

    digest: str
    size: int


class BlobCorruptError(Exception):
    """A stored blob's content no longer matches its name (disk damage or tampering)."""


class BlobWriter:
    """A file-like sink that hashes what it is given. Use through `BlobStore.writer()`."""

    def __init__(self, fileobj: IO[bytes]) -> None:
        self._file = fileobj
        self._hash = hashlib.sha256()
        self.size = 0
        self._blob: Blob | None = None

    def write(self, data: bytes) -> int:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._file.flush()

    @property
    def digest(self) -> str:
        return f"{ALGORITHM}:{self._hash.hexdigest()}"

    @property
    def blob(self) -> Blob:
        """The stored blob; only valid once the `with` block has exited without error."""
        if self._blob is None:
            raise RuntimeError("the blob is only known after the writer's block has finished")
        return self._blob


class BlobStore:
    """Blobs under `root/sha256/<hex>`; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blobs = self.root / ALGORITHM
        self._index = self.root / "index"

    def path(self, digest: str) -> Path:
        return self._blobs / digest_hex(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    @contextlib.contextmanager
    def writer(self) -> Iterator[BlobWriter]:
        """Stream a new blob in; it is renamed to its digest when the block succeeds and
        deleted when the block raises."""
        self._blobs.mkdir(parents=True, exist_ok=True)
        # The name is the digest, known only at the end: hence not `atomic.replacing`.
        fd, tmp_name = tempfile.mkstemp(prefix=atomic.TEMP_PREFIX, dir=self._blobs)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                sink = BlobWriter(handle)
                yield sink
            blob = Blob(sink.digest, sink.size)
            tmp.chmod(0o644)  # mkstemp makes 0600; blobs are not secret
            tmp.replace(self.path(blob.digest))
            sink._blob = blob
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, data: bytes) -> Blob:
        digest = sha256_digest(data)
        if not self.has(digest):
            with self.writer() as sink:
                sink.write(data)
        return Blob(digest, len(data))

    def put_file(self, source: Path, *, move: bool = False) -> Blob:
        """Store a copy of `source` (or move it in when `move` and it is on the same
        filesystem as the store)."""
        digest, size = file_digest(source)
        if self.has(digest):
            if move:
                source.unlink()
            return Blob(digest, size)
        if move:
            self._blobs.mkdir(parents=True, exist_ok=True)
            try:
                source.replace(self.path(digest))
            except OSError:
                pass  # another filesystem: fall back to a copy
            else:
                return Blob(digest, size)
        with self.writer() as sink, source.open("rb") as handle:
            shutil.copyfileobj(handle, sink)
        if move:
            source.unlink()
        if sink.blob.digest != digest:
            raise BlobCorruptError(f"{source} changed while it was being stored")
        return sink.blob

    @contextlib.contextmanager
    def open(self, digest: str, *, verify: bool = False) -> Iterator[IO[bytes]]:
        """Open a blob for reading; with `verify` the whole blob is hashed first."""
        if verify:
            self.verify(digest)
        with self.path(digest).open("rb") as handle:
            yield handle

    def read_bytes(self, digest: str, *, verify: bool = True) -> bytes:
        data = self.path(digest).read_bytes()
        if verify and sha256_digest(data) != digest:
            raise BlobCorruptError(f"blob {self.path(digest)} does not match its digest")
        return data

    def verify(self, digest: str) -> None:
        """Raise BlobCorruptError unless the stored bytes hash to `digest`."""
        actual, _ = file_digest(self.path(digest))
        if actual != digest:
            raise BlobCorruptError(
                f"blob {self.path(digest)} does not match its digest (found {actual}); "
                f"delete it and rebuild"
            )

    # Small JSON documents keyed by name, e.g. index("docker-save", image_hex).
    def _index_path(self, kind: str, key: str) -> Path:
        if not key or "/" in key or key.startswith(".") or "/" in kind:
            raise ValueError(f"bad index key {kind!r}/{key!r}")
        return self._index / kind / f"{key}.json"

    def read_index(self, kind: str, key: str) -> Any:
        path = self._index_path(kind, key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # a damaged index is a cache miss, never an error

    def write_index(self, kind: str, key: str, document: Any) -> None:
        path = self._index_path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path, json.dumps(document, sort_keys=True))

    def index_keys(self, kind: str) -> list[str]:
        """The keys an index kind holds (atomic writes' temporary files left out)."""
        folder = self._index / kind
        if "/" in kind or not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.json") if not p.name.startswith("."))

    def remove_index(self, kind: str, key: str) -> None:
        self._index_path(kind, key).unlink(missing_ok=True)


def file_digest(path: Path) -> tuple[str, int]:
    """The sha256 digest and size of a file, read in chunks."""
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return f"{ALGORITHM}:{hasher.hexdigest()}", size
