"""Deterministic OCI images without a daemon: layers, config, manifest, and output writers.

The same inputs give the same bytes: tar entries are sorted, parents are added, owners,
modes and mtimes are fixed, and the tar and gzip encoders are written here (rather than
borrowed from `tarfile`/`gzip`) so their framing cannot drift with the Python version.
Only the deflate stream comes from zlib; a different zlib build may compress differently,
which changes layer *digests* but never `diff_id`s, so the image ID stays stable.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import io
import json
import os
import posixpath
import shutil
import stat
import struct
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, Protocol

from pydeploy import atomic
from pydeploy.cachekeys import INDEX_DOCKER_SAVE
from pydeploy.errors import BaseImageError, BuildError, PublishError
from pydeploy.oci.blobs import Blob, BlobStore, BlobWriter, digest_hex, sha256_digest

MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

GZIP_LEVEL = 6
_BLOCK = 512
_CHUNK = 1 << 20
_KINDS = frozenset({"file", "dir", "symlink", "hardlink"})
_TYPEFLAGS = {"file": b"0", "hardlink": b"1", "symlink": b"2", "dir": b"5"}


# --------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class FileEntry:
    """One filesystem object inside a layer. `path` is relative to the image root, POSIX,
    without a leading slash; a file's content comes from `source` (host path) or `data`."""

    path: str
    kind: str
    mode: int
    uid: int = 0
    gid: int = 0
    source: Path | None = None
    data: bytes | None = field(default=None, repr=False)
    linkname: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", clean_path(self.path))
        if self.kind not in _KINDS:
            raise ValueError(f"{self.path}: unknown entry kind {self.kind!r}")
        if self.kind == "file" and (self.source is None) == (self.data is None):
            raise ValueError(f"{self.path}: a file needs exactly one of source= or data=")
        if self.kind != "file" and (self.source is not None or self.data is not None):
            raise ValueError(f"{self.path}: only files carry content")
        if self.kind in {"symlink", "hardlink"} and not self.linkname:
            raise ValueError(f"{self.path}: a {self.kind} needs a linkname")
        if self.kind == "hardlink":
            object.__setattr__(self, "linkname", clean_path(self.linkname))
        if not 0 <= self.mode <= 0o7777 or self.uid < 0 or self.gid < 0:
            raise ValueError(f"{self.path}: mode/uid/gid out of range")

    def content_size(self) -> int:
        if self.data is not None:
            return len(self.data)
        if self.source is not None:
            return self.source.stat().st_size
        return 0


def clean_path(path: str) -> str:
    """Normalize an in-image path to `a/b/c`; refuse `..` and the empty path."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in {"", "."}]
    if not parts or ".." in parts:
        raise ValueError(f"invalid path inside the image: {path!r}")
    return "/".join(parts)


def normalize_mode(kind: str, mode: int) -> int:
    """The default mode policy: dirs 0755, files 0755 if any exec bit else 0644,
    symlinks 0777. Strips setuid/setgid/sticky (CIS 4.8) and group/other write."""
    if kind == "dir":
        return 0o755
    if kind == "symlink":
        return 0o777
    return 0o755 if mode & 0o111 else 0o644


ModePolicy = Callable[[str, int], int]


def _join(prefix: str, rest: str) -> str:
    return "/".join(p for p in (prefix.strip("/"), rest.strip("/")) if p)


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
    return io.BufferedReader(_ChunkReader(source), _CHUNK)


def entries_from_tar(
    fileobj: TarSource,
    *,
    strip_prefix: str,
    dest_prefix: str,
    spool_dir: Path,
    uid: int = 0,
    gid: int = 0,
    mode_policy: ModePolicy = normalize_mode,
    small_file_limit: int = 64 * 1024,
) -> list[FileEntry]:
    """Read a tar stream (e.g. docker's `get_archive('/opt/venv')`, entries `venv/...`)
    and return its entries rewritten from `strip_prefix` to `dest_prefix`, with modes
    from `mode_policy` and the given owners. Tar streams are sequential, so file content
    is kept in memory when small and spooled into `spool_dir` (which must outlive the
    returned entries) otherwise."""
    strip = strip_prefix.strip("/")
    spool_dir.mkdir(parents=True, exist_ok=True)
    entries: list[FileEntry] = []

    def rewrite(name: str) -> str:
        rel = "/".join(p for p in name.split("/") if p not in {"", "."})
        if strip:
            if rel == strip:
                rel = ""
            elif rel.startswith(strip + "/"):
                rel = rel[len(strip) + 1 :]
            else:
                raise BuildError(
                    f"the archive entry {name!r} is outside {strip_prefix!r}; the archive "
                    f"does not have the expected layout"
                )
        return _join(dest_prefix, rel)

    with tarfile.open(fileobj=as_reader(fileobj), mode="r|*") as archive:
        for member in archive:
            path = rewrite(member.name)
            if not path:
                continue  # the archive's root itself with an empty dest_prefix
            if member.isdir():
                entries.append(
                    FileEntry(path, "dir", mode_policy("dir", member.mode), uid=uid, gid=gid)
                )
            elif member.issym():
                entries.append(
                    FileEntry(
                        path, "symlink", mode_policy("symlink", member.mode),
                        uid=uid, gid=gid, linkname=member.linkname,
                    )
                )  # fmt: skip
            elif member.islnk():
                entries.append(
                    FileEntry(
                        path, "hardlink", mode_policy("hardlink", member.mode),
                        uid=uid, gid=gid, linkname=rewrite(member.linkname),
                    )
                )  # fmt: skip
            elif member.isreg():
                extracted = archive.extractfile(member)
                if extracted is None:  # pragma: no cover - isreg() members always extract
                    raise BuildError(f"cannot read {member.name!r} from the archive")
                mode = mode_policy("file", member.mode)
                if member.size <= small_file_limit:
                    entries.append(
                        FileEntry(path, "file", mode, uid=uid, gid=gid, data=extracted.read())
                    )
                else:
                    spooled = spool_dir / f"{len(entries):08d}"
                    with spooled.open("wb") as out:
                        shutil.copyfileobj(extracted, out, _CHUNK)
                    entries.append(FileEntry(path, "file", mode, uid=uid, gid=gid, source=spooled))
            else:
                raise BuildError(
                    f"the archive entry {member.name!r} is a device or FIFO, which an image "
                    f"layer built by pydeploy may not contain"
                )
    return entries


def entries_from_dir(
    root: Path,
    dest_prefix: str,
    *,
    include: Callable[[str, bool], bool] | None = None,
    mode_policy: ModePolicy = normalize_mode,
) -> list[FileEntry]:
    """Entries for a host directory tree under `dest_prefix`, owned by root with
    normalized modes. `include(relpath, is_dir)` (POSIX path relative to `root`) filters;
    an excluded directory is not descended into. Symlinks stay symlinks; hard links on the
    host become independent files (so the layer does not depend on how files were linked);
    sockets and FIFOs are skipped."""
    root = Path(root)
    entries = [FileEntry(dest_prefix, "dir", mode_policy("dir", 0o755))] if dest_prefix else []
    for current, dirnames, filenames in os.walk(root):
        here = Path(current)
        kept: list[str] = []
        for name in sorted(dirnames) + sorted(filenames):
            full = here / name
            rel = full.relative_to(root).as_posix()
            info = full.lstat()
            is_dir = stat.S_ISDIR(info.st_mode)
            if include is not None and not include(rel, is_dir):
                continue
            path = _join(dest_prefix, rel)
            if stat.S_ISLNK(info.st_mode):
                entries.append(
                    FileEntry(path, "symlink", mode_policy("symlink", 0o777),
                              linkname=str(full.readlink()))
                )  # fmt: skip
            elif is_dir:
                kept.append(name)
                entries.append(FileEntry(path, "dir", mode_policy("dir", info.st_mode)))
            elif stat.S_ISREG(info.st_mode):
                entries.append(
                    FileEntry(path, "file", mode_policy("file", info.st_mode), source=full)
                )
        dirnames[:] = kept
    return entries


# --------------------------------------------------------------------------- tar encoding


def _octal(value: int, width: int) -> bytes:
    return f"{value:0{width - 1}o}".encode("ascii") + b"\0"


def _field(data: bytes, width: int) -> bytes:
    return data[:width].ljust(width, b"\0")


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    length = len(body) + len(str(len(body)))
    if len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode("ascii") + body


def _ustar_block(
    name: bytes, *, mode: int, uid: int, gid: int, size: int, mtime: int, typeflag: bytes,
    linkname: bytes,
) -> bytes:  # fmt: skip
    block = b"".join(
        (
            _field(name, 100), _octal(mode, 8), _octal(uid, 8), _octal(gid, 8),
            _octal(size, 12), _octal(mtime, 12), b" " * 8, typeflag, _field(linkname, 100),
            b"ustar\x0000", b"\0" * 32, b"\0" * 32, _octal(0, 8), _octal(0, 8),
            b"\0" * 155, b"\0" * 12,
        )
    )  # fmt: skip
    checksum = f"{sum(block):06o}\0 ".encode("ascii")
    return block[:148] + checksum + block[156:]


def tar_header(
    name: str, *, kind: str, mode: int, size: int, mtime: int, uid: int = 0, gid: int = 0,
    linkname: str = "",
) -> bytes:  # fmt: skip
    """A ustar header, preceded by a PAX extended header only when a field does not fit
    (long or non-ASCII names, huge sizes or ids). No atime/ctime: nothing varies by host."""
    pax: dict[str, str] = {}
    raw_name = name.encode()
    if not name.isascii() or len(raw_name) > 100:
        pax["path"] = name
    raw_link = linkname.encode()
    if not linkname.isascii() or len(raw_link) > 100:
        pax["linkpath"] = linkname
    numbers = {"size": (size, 12), "uid": (uid, 8), "gid": (gid, 8)}
    for key, (value, width) in numbers.items():
        if value >= 8 ** (width - 1):
            pax[key] = str(value)
    ascii_name = name.encode("ascii", "replace")
    ascii_link = linkname.encode("ascii", "replace")
    header = _ustar_block(
        ascii_name, mode=mode, uid=0 if "uid" in pax else uid, gid=0 if "gid" in pax else gid,
        size=0 if "size" in pax else size, mtime=mtime, typeflag=_TYPEFLAGS[kind],
        linkname=ascii_link,
    )  # fmt: skip
    if not pax:
        return header
    records = b"".join(_pax_record(k, pax[k]) for k in sorted(pax))
    pax_header = _ustar_block(
        b"././@PaxHeader", mode=0o644, uid=0, gid=0, size=len(records), mtime=mtime,
        typeflag=b"x", linkname=b"",
    )  # fmt: skip
    pax_header += _pad(records)
    return pax_header + header


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % _BLOCK)


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class DeterministicGzip:
    """A gzip member with a fixed header (mtime 0, no name, OS 255), fed incrementally."""

    def __init__(self, sink: _Sink, level: int = GZIP_LEVEL) -> None:
        self._sink = sink
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._crc = 0
        self._size = 0
        sink.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")

    def write(self, data: bytes) -> int:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._sink.write(self._deflate.compress(data))
        return len(data)

    def close(self) -> None:
        self._sink.write(self._deflate.flush())
        self._sink.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))


class _Tee:
    def __init__(self, *sinks: _Sink) -> None:
        self._sinks = sinks

    def write(self, data: bytes) -> int:
        for sink in self._sinks:
            sink.write(data)
        return len(data)


def _plan_entries(entries: Iterable[FileEntry]) -> list[FileEntry]:
    """Deduplicate, add missing parent directories, make every hard link point at the
    first path of its group in tar order, and sort by path (bytewise UTF-8)."""
    by_path: dict[str, FileEntry] = {}
    for entry in entries:
        known = by_path.get(entry.path)
        if known is not None and known != entry:
            raise ValueError(f"two different entries for {entry.path!r} in one layer")
        by_path[entry.path] = entry
    for path in list(by_path):
        parent = PurePosixPath(path).parent
        while str(parent) != ".":
            existing = by_path.get(str(parent))
            if existing is None:
                by_path[str(parent)] = FileEntry(str(parent), "dir", 0o755)
            elif existing.kind != "dir":
                raise ValueError(f"{path!r} is inside {str(parent)!r}, which is not a directory")
            parent = parent.parent

    def key(path: str) -> bytes:
        return path.encode()

    groups: dict[str, list[str]] = {}
    for entry in by_path.values():
        if entry.kind == "hardlink":
            target, seen = entry.linkname, {entry.path}
            while (hop := by_path.get(target)) is not None and hop.kind == "hardlink":
                if target in seen:
                    raise ValueError(f"hard link loop at {entry.path!r}")
                seen.add(target)
                target = hop.linkname
            if hop is None or hop.kind != "file":
                raise ValueError(
                    f"hard link {entry.path!r} points at {entry.linkname!r}, which is not a "
                    f"regular file in the same layer"
                )
            groups.setdefault(target, [target]).append(entry.path)
    for target, members in groups.items():
        content = by_path[target]
        first = min(members, key=key)
        by_path[first] = replace(content, path=first)
        for member in members:
            if member != first:
                by_path[member] = FileEntry(
                    member, "hardlink", content.mode, uid=content.uid, gid=content.gid,
                    linkname=first,
                )  # fmt: skip
    return [by_path[p] for p in sorted(by_path, key=key)]


def write_tar_entries(out: _Sink, entries: Iterable[FileEntry], *, epoch: int) -> int:
    """Write planned entries and the end-of-archive marker; returns bytes written."""
    written = 0
    for entry in entries:
        size = entry.content_size() if entry.kind == "file" else 0
        name = entry.path + "/" if entry.kind == "dir" else entry.path
        header = tar_header(
            name, kind=entry.kind, mode=entry.mode, size=size, mtime=epoch,
            uid=entry.uid, gid=entry.gid, linkname=entry.linkname,
        )  # fmt: skip
        out.write(header)
        written += len(header)
        if entry.kind == "file":
            written += _write_content(out, entry, size)
    out.write(b"\0" * (2 * _BLOCK))
    return written + 2 * _BLOCK


def _write_content(out: _Sink, entry: FileEntry, size: int) -> int:
    if entry.data is not None:
        out.write(entry.data)
    elif entry.source is not None:
        remaining = size
        with entry.source.open("rb") as handle:
            while remaining:
                chunk = handle.read(min(_CHUNK, remaining))
                if not chunk:
                    raise BuildError(f"{entry.source} shrank while it was being archived")
                out.write(chunk)
                remaining -= len(chunk)
    padding = b"\0" * (-size % _BLOCK)
    out.write(padding)
    return size + len(padding)


# --------------------------------------------------------------------------- layers


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
    planned = _plan_entries(entries)
    with store.writer() as gz_sink:
        compressor = DeterministicGzip(gz_sink)
        with store.writer() as tar_sink:
            write_tar_entries(_Tee(tar_sink, compressor), planned, epoch=epoch)
        compressor.close()
    tar_blob, gz_blob = tar_sink.blob, gz_sink.blob
    return Layer(role, tar_blob.digest, gz_blob.digest, gz_blob.size, tar_blob.size)


def compress_stored(store: BlobStore, diff_id: str, *, role: str) -> Layer:
    """Deterministically gzip an uncompressed layer already in the store."""
    with store.writer() as gz_sink:
        compressor = DeterministicGzip(gz_sink)
        with store.open(diff_id) as handle:
            while chunk := handle.read(_CHUNK):
                compressor.write(chunk)
        compressor.close()
    return Layer(role, diff_id, gz_sink.blob.digest, gz_sink.blob.size, store.size(diff_id))


@contextlib.contextmanager
def open_uncompressed(store: BlobStore, layer: Layer) -> Iterator[_Reader]:
    """The layer's tar: the stored copy, or the gzip decompressed on the fly."""
    if store.has(layer.diff_id):
        with store.open(layer.diff_id) as handle:
            yield handle
    else:
        with gzip.open(store.path(layer.digest), "rb") as handle:
            yield handle


# --------------------------------------------------------------------------- config


def canonical_json(document: Any) -> bytes:
    """Sorted keys, compact separators, UTF-8: one byte string per document."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def rfc3339(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


# Base config keys that carry over; the rest (Hostname, AttachStdin, OnBuild, Shell, ...)
# are Docker build-time noise or would change what our entrypoint means.
_INHERITED_KEYS = ("Env", "ExposedPorts", "Labels", "Volumes", "Healthcheck")


def _merge_env(base_env: Sequence[str], env: Mapping[str, str]) -> list[str]:
    merged: dict[str, str] = {}
    for item in base_env:
        key, _, value = item.partition("=")
        merged[key] = value
    for key in sorted(env):
        merged[key] = env[key]
    return [f"{k}={v}" for k, v in merged.items()]


def _port_key(port: str) -> str:
    return port if "/" in port else f"{port}/tcp"


def build_config(
    base_config: Mapping[str, Any],
    base_diff_ids: Sequence[str],
    base_history: Sequence[Mapping[str, Any]],
    layers: Sequence[Layer],
    *,
    user: str,
    env: Mapping[str, str],
    entrypoint: Sequence[str],
    cmd: Sequence[str] | None,
    workdir: str,
    exposed_ports: Sequence[str],
    labels: Mapping[str, str],
    stop_signal: str,
    healthcheck: Mapping[str, Any] | None,
    created: str,
) -> bytes:
    """The image config as canonical JSON; its sha256 is the image ID.

    `env` is merged over the base's Env (PATH is never guessed: pass it). `cmd=None`
    drops the base's Cmd, as Docker does when ENTRYPOINT is set. `healthcheck=None`
    keeps the base's. Labels and exposed ports are merged over the base's."""
    base_runtime: Mapping[str, Any] = base_config.get("config") or {}
    runtime: dict[str, Any] = {
        k: base_runtime[k] for k in _INHERITED_KEYS if base_runtime.get(k) not in (None, "", {})
    }
    runtime["Env"] = _merge_env(base_runtime.get("Env") or [], env)
    runtime["User"] = user
    runtime["Entrypoint"] = list(entrypoint)
    if cmd is not None:
        runtime["Cmd"] = list(cmd)
    runtime["WorkingDir"] = workdir
    ports = dict(base_runtime.get("ExposedPorts") or {})
    ports.update({_port_key(p): {} for p in exposed_ports})
    if ports:
        runtime["ExposedPorts"] = ports
    merged_labels = {**(base_runtime.get("Labels") or {}), **labels}
    if merged_labels:
        runtime["Labels"] = merged_labels
    runtime["StopSignal"] = stop_signal
    if healthcheck is not None:
        runtime["Healthcheck"] = dict(healthcheck)
    document: dict[str, Any] = {
        "architecture": base_config.get("architecture", "amd64"),
        "os": base_config.get("os", "linux"),
        "created": created,
        "config": runtime,
        "rootfs": {
            "type": "layers",
            "diff_ids": [*base_diff_ids, *(layer.diff_id for layer in layers)],
        },
        "history": [
            *base_history,
            *({"created": created, "created_by": f"pydeploy: {layer.role}"} for layer in layers),
        ],
    }
    for key in ("variant", "os.version", "os.features"):
        if base_config.get(key):
            document[key] = base_config[key]
    return canonical_json(document)


def build_manifest(config_digest: str, config_size: int, layers: Sequence[Layer]) -> bytes:
    """The OCI image manifest (base layers first, then ours) as canonical JSON."""
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": config_digest,
                       "size": config_size},
            "layers": [layer.descriptor() for layer in layers],
        }
    )  # fmt: skip


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class BaseImage:
    """A base image imported from the engine: its raw config and stored layers."""

    config_bytes: bytes
    layers: tuple[Layer, ...]

    @property
    def config(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.config_bytes)
        return document

    @property
    def image_id(self) -> str:
        return sha256_digest(self.config_bytes)

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]

    @property
    def history(self) -> list[dict[str, Any]]:
        history: list[dict[str, Any]] = self.config.get("history") or []
        return history


@dataclass(frozen=True)
class Image:
    """A finished image: config and manifest bytes (both also in `store`) and every
    layer, base layers first."""

    store: BlobStore
    config: bytes
    manifest: bytes
    layers: tuple[Layer, ...]
    base_layer_count: int = 0
    image_id: str = field(init=False)
    manifest_digest: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_id", sha256_digest(self.config))
        object.__setattr__(self, "manifest_digest", sha256_digest(self.manifest))

    @property
    def config_digest(self) -> str:
        return self.image_id

    @property
    def own_layers(self) -> tuple[Layer, ...]:
        return self.layers[self.base_layer_count :]

    @classmethod
    def from_config(
        cls, store: BlobStore, config: bytes, layers: Sequence[Layer], *, base_layer_count: int = 0
    ) -> Image:
        """Store `config`, derive the manifest, and tie them together."""
        diff_ids = json.loads(config).get("rootfs", {}).get("diff_ids", [])
        if diff_ids != [layer.diff_id for layer in layers]:
            raise ValueError("the config's rootfs.diff_ids do not match the given layers")
        store.put_bytes(config)
        manifest = build_manifest(sha256_digest(config), len(config), layers)
        store.put_bytes(manifest)
        return cls(store, config, manifest, tuple(layers), base_layer_count)


def assemble_image(
    store: BlobStore,
    base: BaseImage,
    layers: Sequence[Layer],
    *,
    epoch: int,
    user: str,
    env: Mapping[str, str],
    entrypoint: Sequence[str],
    cmd: Sequence[str] | None = None,
    workdir: str = "/",
    exposed_ports: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    stop_signal: str = "SIGTERM",
    healthcheck: Mapping[str, Any] | None = None,
) -> Image:
    """`base` plus `layers` with the given runtime settings, created at `epoch`."""
    config = build_config(
        base.config, base.diff_ids, base.history, layers,
        user=user, env=env, entrypoint=entrypoint, cmd=cmd, workdir=workdir,
        exposed_ports=exposed_ports, labels=labels or {}, stop_signal=stop_signal,
        healthcheck=healthcheck, created=rfc3339(epoch),
    )  # fmt: skip
    return Image.from_config(
        store, config, [*base.layers, *layers], base_layer_count=len(base.layers)
    )


# --------------------------------------------------------------------------- base import

_SMALL_MEMBER = 1 << 20


def cached_base(store: BlobStore, image_id: str) -> BaseImage | None:
    """The base image imported earlier under this image ID, if all its blobs are there;
    lets the caller skip `docker save` entirely."""
    try:
        key = digest_hex(image_id)
    except ValueError:
        return None
    document = store.read_index(INDEX_DOCKER_SAVE, key)
    if not isinstance(document, dict):
        return None
    try:
        # Entries written before the index recorded each layer's role lack it: all are base.
        found = [Layer.from_doc({"role": "base", **d}) for d in document["layers"]]
        layers = tuple(layer for layer in found if layer is not None)
        if len(layers) != len(found):
            return None
        needed = [image_id, *(layer.digest for layer in layers)]
        if not all(store.has(digest) for digest in needed):
            return None
        return BaseImage(store.read_bytes(image_id), layers)
    except (KeyError, TypeError, ValueError, OSError):
        return None


def import_docker_save(tar_stream: TarSource, store: BlobStore) -> BaseImage:
    """Read `docker save IMAGE` output (legacy `<id>/layer.tar` or OCI `blobs/sha256/...`
    layouts; manifest.json drives both) and store each layer's tar and deterministic gzip.
    The result is indexed by image ID, so `cached_base` finds it next time."""
    small: dict[str, bytes] = {}
    large: dict[str, Blob] = {}
    links: dict[str, str] = {}
    with tarfile.open(fileobj=as_reader(tar_stream), mode="r|*") as archive:
        for member in archive:
            name = clean_path(member.name) if member.name.strip("./") else ""
            if member.issym() or member.islnk():
                # docker save links repeated layers: `<id>/layer.tar -> ../<other>/layer.tar`
                base_dir = posixpath.dirname(name) if member.issym() else ""
                links[name] = posixpath.normpath(posixpath.join(base_dir, member.linkname))
            elif member.isreg():
                handle = archive.extractfile(member)
                if handle is None:  # pragma: no cover
                    continue
                if member.size <= _SMALL_MEMBER:
                    small[name] = handle.read()
                else:
                    with store.writer() as sink:
                        shutil.copyfileobj(handle, sink, _CHUNK)
                    large[name] = sink.blob

    def resolve(name: str) -> str:
        seen: set[str] = set()
        name = clean_path(name)
        while name in links and name not in seen:
            seen.add(name)
            name = links[name]
        return name

    try:
        manifest = json.loads(small[resolve("manifest.json")])[0]
        config_bytes = small[resolve(manifest["Config"])]
        config = json.loads(config_bytes)
        diff_ids: list[str] = config["rootfs"]["diff_ids"]
        layer_names: list[str] = manifest["Layers"]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise BaseImageError(
            f"the engine's `docker save` output is not in a format pydeploy understands "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if len(diff_ids) != len(layer_names):
        raise BaseImageError("the saved base image lists a different number of layers and diff_ids")
    layers: list[Layer] = []
    for diff_id, layer_name in zip(diff_ids, layer_names, strict=True):
        name = resolve(layer_name)
        blob = large.get(name) or (store.put_bytes(small[name]) if name in small else None)
        if blob is None:
            raise BaseImageError(f"the saved base image lacks its layer file {layer_name!r}")
        stored = _ensure_uncompressed(store, blob)
        if stored != diff_id:
            raise BaseImageError(
                f"base layer {layer_name!r} hashes to {stored}, not to its diff_id {diff_id}; "
                f"the saved image is damaged"
            )
        layers.append(compress_stored(store, diff_id, role="base"))
    store.put_bytes(config_bytes)
    base = BaseImage(config_bytes, tuple(layers))
    store.write_index(
        INDEX_DOCKER_SAVE,
        digest_hex(base.image_id),
        {"layers": [layer.to_doc() for layer in layers]},
    )
    return base


def _ensure_uncompressed(store: BlobStore, blob: Blob) -> str:
    """The digest of the uncompressed form of a stored layer blob (gunzipping if needed)."""
    with store.open(blob.digest) as handle:
        magic = handle.read(2)
    if magic != b"\x1f\x8b":
        return blob.digest
    with store.writer() as sink, gzip.open(store.path(blob.digest), "rb") as src:
        shutil.copyfileobj(src, sink, _CHUNK)
    return sink.blob.digest


# --------------------------------------------------------------------------- writers


def _unwritable(dest: Path, exc: OSError) -> PublishError:
    reason = exc.strerror or str(exc)
    return PublishError(
        f"cannot write the output {dest}: {reason}.",
        hint="Choose a path in a writable directory (or fix its permissions) and run again.",
    )


def _missing_blobs(image: Image, digests: Iterable[str]) -> None:
    missing = [d for d in digests if not image.store.has(d)]
    if missing:
        raise PublishError(
            f"the build cache at {image.store.root} lacks blob {missing[0]}.",
            hint="It was removed after the build; run `pydeploy build` again.",
        )


def write_oci_layout(dest_dir: Path, image: Image, ref_name: str) -> None:
    """Write an OCI image layout (oci-layout, index.json, blobs/sha256/...) at `dest_dir`,
    built in a temp sibling and renamed into place. An existing OCI layout there is
    replaced; any other existing non-empty directory is refused."""
    dest_dir = Path(dest_dir)
    digests = [image.config_digest, image.manifest_digest, *(la.digest for la in image.layers)]
    _missing_blobs(image, digests)
    if dest_dir.exists() and not _replaceable_layout(dest_dir):
        raise PublishError(
            f"{dest_dir} exists and is not an OCI image layout, so pydeploy will not overwrite it.",
            hint="Choose another output directory or remove it first.",
        )
    try:
        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.tmp-", dir=dest_dir.parent))
        tmp.chmod(0o755)  # mkdtemp makes 0700; the layout is meant to be shared
    except OSError as exc:
        raise _unwritable(dest_dir, exc) from exc
    try:
        blobs = tmp / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        (tmp / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
        for digest in dict.fromkeys(digests):
            shutil.copyfile(image.store.path(digest), blobs / digest_hex(digest))
        index = {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [
                {"mediaType": MEDIA_TYPE_MANIFEST, "digest": image.manifest_digest,
                 "size": len(image.manifest), "annotations": {REF_NAME_ANNOTATION: ref_name}}
            ],
        }  # fmt: skip
        (tmp / "index.json").write_bytes(canonical_json(index))
        _swap_into_place(tmp, dest_dir)
    except OSError as exc:
        raise _unwritable(dest_dir, exc) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _replaceable_layout(path: Path) -> bool:
    if not path.is_dir():
        return False
    return (path / "oci-layout").is_file() or not any(path.iterdir())


def _swap_into_place(tmp: Path, dest: Path) -> None:
    """Rename `tmp` to `dest`; an existing `dest` is moved aside first and removed after."""
    if not dest.exists():
        tmp.rename(dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    old.rmdir()
    dest.rename(old)
    try:
        tmp.rename(dest)
    except OSError:
        old.rename(dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_docker_archive(
    dest: str | os.PathLike[str] | BinaryIO,
    image: Image,
    repo_tags: Sequence[str],
    *,
    omit_diff_ids: Iterable[str] = (),
) -> None:
    """Write the `docker save`/`docker load` format: manifest.json, `<hex>.json` config,
    `<diff-id-hex>/layer.tar` per layer. Layers in `omit_diff_ids` are listed but not
    included (the engine must already have them). A path is written atomically; a stream
    is written as is."""
    omit = set(omit_diff_ids)
    unique = {la.diff_id: la for la in image.layers}  # a repeated layer is stored once
    included = [la for la in unique.values() if la.diff_id not in omit]
    _missing_blobs(image, [image.config_digest])
    for layer in included:
        if not (image.store.has(layer.diff_id) or image.store.has(layer.digest)):
            _missing_blobs(image, [layer.diff_id])
    if not isinstance(dest, (str, os.PathLike)):
        _write_docker_archive_to(dest, image, repo_tags, included)
        return
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic.replacing(dest) as handle:
            _write_docker_archive_to(handle, image, repo_tags, included)
    except OSError as exc:
        raise _unwritable(dest, exc) from exc


def _write_docker_archive_to(
    out: IO[bytes] | BlobWriter, image: Image, repo_tags: Sequence[str], included: list[Layer]
) -> None:
    config_name = f"{digest_hex(image.image_id)}.json"
    manifest = [
        {
            "Config": config_name,
            "RepoTags": list(repo_tags),
            "Layers": [f"{digest_hex(la.diff_id)}/layer.tar" for la in image.layers],
        }
    ]

    def small_file(name: str, data: bytes) -> None:
        out.write(tar_header(name, kind="file", mode=0o644, size=len(data), mtime=0))
        out.write(_pad(data))

    small_file("manifest.json", canonical_json(manifest))
    small_file(config_name, image.config)
    for layer in included:
        directory = digest_hex(layer.diff_id)
        out.write(tar_header(directory + "/", kind="dir", mode=0o755, size=0, mtime=0))
        size = layer.uncompressed_size
        out.write(tar_header(f"{directory}/layer.tar", kind="file", mode=0o644, size=size,
                             mtime=0))  # fmt: skip
        remaining = size
        with open_uncompressed(image.store, layer) as handle:
            while remaining:
                chunk = handle.read(min(_CHUNK, remaining))
                if not chunk:
                    raise PublishError(
                        f"layer {layer.diff_id} in {image.store.root} is shorter than recorded.",
                        hint="The build cache is damaged; run `pydeploy build` again.",
                    )
                out.write(chunk)
                remaining -= len(chunk)
        out.write(b"\0" * (-size % _BLOCK))
    out.write(b"\0" * (2 * _BLOCK))
