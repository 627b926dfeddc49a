"""The deterministic tar encoder: ustar headers (PAX only where a field does not fit), fixed
owners, modes and mtimes, entries in bytewise path order with their parents added.

Written here rather than borrowed from `tarfile`, whose defaults have changed between
Python versions (its default format went from GNU to PAX in 3.8): these bytes are every
layer's diff_id, so their framing is fixed here and pinned by the golden digests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Protocol

from pydeploy.errors import BuildError
from pydeploy.oci.entries import FileEntry
from pydeploy.oci.streams import CHUNK

BLOCK = 512
_TYPEFLAGS = {"file": b"0", "hardlink": b"1", "symlink": b"2", "dir": b"5"}


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


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


def _ustar_block(  # noqa: PLR0913 - one parameter per ustar header field
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


def tar_header(  # noqa: PLR0913 - one parameter per tar header field
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
    pax_header += pad(records)
    return pax_header + header


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def plan_entries(entries: Iterable[FileEntry]) -> list[FileEntry]:
    """Deduplicate, add missing parent directories, make every hard link point at the
    first path of its group in tar order, and sort by path (bytewise UTF-8)."""
    by_path = _by_path(entries)
    _add_parents(by_path)
    _canonical_hardlinks(by_path)
    return [by_path[p] for p in sorted(by_path, key=_tar_order)]


def _tar_order(path: str) -> bytes:
    return path.encode()


def _by_path(entries: Iterable[FileEntry]) -> dict[str, FileEntry]:
    """The entries by path; the same entry twice is one, two different ones an error."""
    by_path: dict[str, FileEntry] = {}
    for entry in entries:
        known = by_path.get(entry.path)
        if known is not None and known != entry:
            raise ValueError(f"two different entries for {entry.path!r} in one layer")
        by_path[entry.path] = entry
    return by_path


def _add_parents(by_path: dict[str, FileEntry]) -> None:
    """Every missing parent directory, with the default directory mode."""
    for path in list(by_path):
        parent = PurePosixPath(path).parent
        while str(parent) != ".":
            existing = by_path.get(str(parent))
            if existing is None:
                by_path[str(parent)] = FileEntry(str(parent), "dir", 0o755)
            elif existing.kind != "dir":
                raise ValueError(f"{path!r} is inside {str(parent)!r}, which is not a directory")
            parent = parent.parent


def _link_target(by_path: Mapping[str, FileEntry], entry: FileEntry) -> str:
    """The regular file a hard link ends at, through chains of links."""
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
    return target


def _canonical_hardlinks(by_path: dict[str, FileEntry]) -> None:
    """In each group of hard-linked paths, the first in tar order holds the content
    and the others link to it, whichever path the caller gave the content."""
    groups: dict[str, list[str]] = {}
    for entry in by_path.values():
        if entry.kind == "hardlink":
            target = _link_target(by_path, entry)
            groups.setdefault(target, [target]).append(entry.path)
    for target, members in groups.items():
        content = by_path[target]
        first = min(members, key=_tar_order)
        by_path[first] = replace(content, path=first)
        for member in members:
            if member != first:
                by_path[member] = FileEntry(
                    member, "hardlink", content.mode, uid=content.uid, gid=content.gid,
                    linkname=first,
                )  # fmt: skip


def write_tar_entries(out: Sink, entries: Iterable[FileEntry], *, epoch: int) -> int:
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
    out.write(b"\0" * (2 * BLOCK))
    return written + 2 * BLOCK


def _write_content(out: Sink, entry: FileEntry, size: int) -> int:
    if entry.data is not None:
        out.write(entry.data)
    elif entry.source is not None:
        remaining = size
        with entry.source.open("rb") as handle:
            while remaining:
                chunk = handle.read(min(CHUNK, remaining))
                if not chunk:
                    raise BuildError(f"{entry.source} shrank while it was being archived")
                out.write(chunk)
                remaining -= len(chunk)
    padding = b"\0" * (-size % BLOCK)
    out.write(padding)
    return size + len(padding)


# --- reading -----------------------------------------------------------------------------
# Base layers are only scanned (names, modes, owners), never extracted: tarfile's stream
# mode costs seconds of CPU on a 200 MB base, reading the 512-byte headers by hand and
# skipping the data by size does not.

_KINDS_BY_FLAG = {b"0": "file", b"\0": "file", b"7": "file", b"1": "hardlink",
                  b"2": "symlink", b"5": "dir"}  # fmt: skip


class Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class TarMember:
    """One member's header, with PAX and GNU long names applied. `kind` is "file",
    "dir", "symlink", "hardlink" or "other" (devices, fifos)."""

    name: str
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    linkname: str = ""


def _number(field: bytes) -> int:
    """A numeric header field: octal, or base-256 when its high bit is set (GNU)."""
    if field[:1] and field[0] & 0x80:
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = value << 8 | byte
        return value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class TarScanner:
    """Iterate a tar stream's members; `read` gives the current member's data, and
    whatever of it is left unread is skipped (by seek when the stream can)."""

    def __init__(self, stream: Reader) -> None:
        self._stream = stream
        self._left = 0  # unread data of the current member, padding included
        self._data_left = 0
        seekable = getattr(stream, "seekable", None)
        self._seek = getattr(stream, "seek", None) if seekable and seekable() else None

    def read(self, size: int = -1, /) -> bytes:
        """The current member's data (at most `size` bytes of it)."""
        size = self._data_left if size < 0 else min(size, self._data_left)
        data = self._exact(size) if size else b""
        self._data_left -= len(data)
        self._left -= len(data)
        return data

    def _exact(self, size: int) -> bytes:
        parts, want = [], size
        while want:
            part = self._stream.read(want)
            if not part:
                raise BuildError("a tar stream ended inside a member; the archive is truncated")
            parts.append(part)
            want -= len(part)
        return b"".join(parts)

    def _skip(self) -> None:
        if self._left and self._seek is not None:
            self._seek(self._left, 1)
        else:
            while self._left:
                step = min(self._left, CHUNK)
                self._exact(step)
                self._left -= step
        self._left = self._data_left = 0

    def _header(self) -> bytes | None:
        block = self._stream.read(BLOCK)
        if len(block) < BLOCK or block == bytes(BLOCK):
            return None  # the end-of-archive marker (or a stream cut at a block boundary)
        if sum(block[:148]) + sum(block[156:]) + 8 * 32 != _number(block[148:156]):
            raise BuildError("a tar header's checksum does not match; the archive is damaged")
        return block

    def __iter__(self) -> Iterator[TarMember]:
        pax: dict[str, str] = {}
        long_name = long_link = None
        while True:
            self._skip()
            block = self._header()
            if block is None:
                return
            flag, size = block[156:157], _number(block[124:136])
            self._data_left, self._left = size, size + (-size % BLOCK)
            if flag in {b"x", b"g", b"L", b"K"}:
                data = self.read()
                if flag == b"x":
                    pax.update(_pax_records(data))
                elif flag == b"L":
                    long_name = _text(data)
                elif flag == b"K":
                    long_link = _text(data)
                continue  # a global header (g) sets nothing a scan uses
            name = _text(block[0:100])
            if block[257:263] == b"ustar\0" and block[345:500].strip(b"\0"):  # POSIX prefix
                name = _text(block[345:500]) + "/" + name
            if "size" in pax:
                size = int(pax["size"])
                self._data_left, self._left = size, size + (-size % BLOCK)
            yield TarMember(
                name=pax.get("path", long_name or name),
                kind=_KINDS_BY_FLAG.get(flag, "other"),
                mode=_number(block[100:108]) & 0o7777,
                uid=int(pax["uid"]) if "uid" in pax else _number(block[108:116]),
                gid=int(pax["gid"]) if "gid" in pax else _number(block[116:124]),
                size=size,
                linkname=pax.get("linkpath", long_link or _text(block[157:257])),
            )
            pax, long_name, long_link = {}, None, None
