"""File entries: what goes into a layer, with the mode policy, read from a tar stream or a
host directory."""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydeploy.errors import BuildError
from pydeploy.oci.streams import CHUNK, TarSource, as_reader

KINDS = frozenset({"file", "dir", "symlink", "hardlink"})


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
        if self.kind not in KINDS:
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


def join_path(prefix: str, rest: str) -> str:
    return "/".join(p for p in (prefix.strip("/"), rest.strip("/")) if p)


def entries_from_tar(  # noqa: PLR0913 - keyword-only knobs of one import, named by callers
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
        return join_path(dest_prefix, rel)

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
                        shutil.copyfileobj(extracted, out, CHUNK)
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
            path = join_path(dest_prefix, rel)
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
