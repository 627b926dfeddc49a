"""The dependency layers: the venv split so that what changes together ships together.

One layer for the whole venv made any dependency change re-compress and re-upload all of
it. Split by which distribution owns each file (its RECORD), adding or upgrading one
small distribution rewrites one small layer; the others keep their digests, so neither
the host cache nor the registry sees them again. At most 2 + MAX_HEAVY + GROUPS layers:

- `dependencies-venv`: the venv's skeleton, bin/, pyvenv.cfg, and whatever no
  distribution owns (it changes with the interpreter or the console scripts);
- the MAX_HEAVY largest distributions of at least HEAVY_BYTES, one layer each
  (`dependencies-<name>`): a numpy upgrade ships numpy alone;
- the rest in GROUPS buckets by a hash of the name (`dependencies-group-N`), so a
  distribution always lands in the same bucket, whatever else is installed.

Pure: the same entries always give the same parts (identical dependency sets in a
monorepo's services must share digests). The orchestration lives in `build`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

from pydeploy.oci.entries import FileEntry

VENV_ROLE = "dependencies-venv"
ROLE_PREFIX = "dependencies-"
HEAVY_BYTES = 2 * 1024 * 1024  # installed size, by RECORD ownership
MAX_HEAVY = 4
GROUPS = 3
_SITE = "site-packages"
_NAME_RUN = re.compile(r"[-_.]+")


@dataclass(frozen=True)
class Part:
    """One dependency layer to be: its role and its entries, in the venv's order."""

    role: str
    entries: tuple[FileEntry, ...]


def is_dependency_role(role: str) -> bool:
    return role == "dependencies" or role.startswith(ROLE_PREFIX)


def bucket(name: str) -> int:
    """The group (1..GROUPS) of a distribution: by its normalized name alone, so adding
    one distribution never moves another."""
    digest = hashlib.sha256(normalize(name).encode()).digest()
    return int.from_bytes(digest[:8], "big") % GROUPS + 1


def normalize(name: str) -> str:
    """PEP 503 normalization: `Foo_Bar.baz` and `foo-bar-baz` are one distribution."""
    return _NAME_RUN.sub("-", name).lower()


def split(entries: Iterable[FileEntry]) -> list[Part]:
    """The venv's entries (image paths, e.g. `opt/venv/...`) as dependency layers: the venv
    layer first, then the heavy distributions by size, then the groups by number. Empty
    parts are left out."""
    entries = list(entries)
    by_path = {entry.path: entry for entry in entries}
    owners = _record_owners(entries)
    dir_owners: dict[str, set[str]] = {}
    for path, name in owners.items():
        parent = posixpath.dirname(path)
        while _inside_site(parent):
            dir_owners.setdefault(parent, set()).add(name)
            parent = posixpath.dirname(parent)

    def owner(entry: FileEntry) -> str | None:
        if entry.kind == "hardlink":  # with its target: a link cannot cross layers
            target = by_path.get(entry.linkname)
            return owner(target) if target is not None and target is not entry else None
        return _owner_of(entry.path, entry.kind == "dir", owners, dir_owners)

    owned = {entry.path: owner(entry) for entry in entries}
    sizes: dict[str, int] = {}
    for entry in entries:
        dist = owned[entry.path]
        if dist is not None and entry.kind == "file":
            sizes[dist] = sizes.get(dist, 0) + entry.content_size()
    ranked = sorted(sizes, key=lambda d: (-sizes[d], d))
    heavy = [d for d in ranked if sizes[d] >= HEAVY_BYTES][:MAX_HEAVY]
    roles = {d: f"{ROLE_PREFIX}{d}" for d in heavy}
    order = [VENV_ROLE, *roles.values(), *(f"{ROLE_PREFIX}group-{n}" for n in range(1, GROUPS + 1))]
    grouped: dict[str, list[FileEntry]] = {role: [] for role in order}
    for entry in entries:
        dist = owned[entry.path]
        if dist is None:
            role = VENV_ROLE
        else:
            role = roles.get(dist) or f"{ROLE_PREFIX}group-{bucket(dist)}"
        grouped[role].append(entry)
    return [Part(role, tuple(grouped[role])) for role in order if grouped[role]]


def _inside_site(path: str) -> bool:
    """Below a site-packages directory (not the directory itself)."""
    parts = path.split("/")
    return _SITE in parts[:-1]


def _owner_of(
    path: str, is_dir: bool, owners: dict[str, str], dir_owners: dict[str, set[str]]
) -> str | None:
    """The distribution a path belongs to: its RECORD's, else (bytecode compiled after the
    install, a package's directories) the one distribution owning the nearest directory
    around it, inside site-packages."""
    if path in owners:
        return owners[path]
    parent, leaf = posixpath.split(path)
    if not is_dir and posixpath.basename(parent) == "__pycache__":
        # `__pycache__/six.cpython-312.pyc` is six.py's, even at site-packages' top.
        source = posixpath.join(posixpath.dirname(parent), leaf.split(".", 1)[0] + ".py")
        if source in owners:
            return owners[source]
    here = path if is_dir else parent
    while _inside_site(here):
        found = dir_owners.get(here)
        if found is not None and len(found) == 1:
            return next(iter(found))
        if found is not None:
            return None  # a namespace shared by several distributions
        here = posixpath.dirname(here)
    return None


def _record_owners(entries: list[FileEntry]) -> dict[str, str]:
    """Image path -> normalized distribution name, from every `*.dist-info/RECORD`."""
    owners: dict[str, str] = {}
    records = [
        e
        for e in entries
        if e.kind == "file"
        and posixpath.basename(e.path) == "RECORD"
        and posixpath.dirname(e.path).endswith(".dist-info")
        and posixpath.basename(posixpath.dirname(posixpath.dirname(e.path))) == _SITE
    ]
    for record in sorted(records, key=lambda e: e.path):
        dist_info = posixpath.dirname(record.path)
        site = posixpath.dirname(dist_info)
        # `{name}-{version}.dist-info`; the name's own dashes are `_` in wheels, not
        # always in older installers' directories, and a version has none.
        dist = normalize(posixpath.basename(dist_info).removesuffix(".dist-info").rsplit("-", 1)[0])
        owners[record.path] = dist
        for row in csv.reader(io.StringIO(_text(record))):
            if not row or not row[0]:
                continue
            target = posixpath.normpath(posixpath.join(site, row[0]))
            if not target.startswith(".."):
                owners.setdefault(target, dist)
    return owners


def _text(entry: FileEntry) -> str:
    if entry.data is not None:
        data = entry.data
    elif entry.source is not None:
        data = entry.source.read_bytes()
    else:
        data = b""
    return data.decode("utf-8", "replace")


def content_key(recipe: str, part: Part) -> str:
    """What a part's layer is made of, as a cache key: every entry's metadata and content
    hash. Equal keys give equal layers, so a cached layer is reused without re-taring."""
    hasher = hashlib.sha256(f"{recipe}\0{part.role}\0".encode())
    for entry in sorted(part.entries, key=lambda e: e.path.encode()):
        hasher.update(
            f"{entry.path}\0{entry.kind}\0{entry.mode:o}\0{entry.uid}\0{entry.gid}\0"
            f"{entry.linkname}\0".encode()
        )
        if entry.kind == "file":
            hasher.update(_content_digest(entry))
    return hasher.hexdigest()


def _content_digest(entry: FileEntry) -> bytes:
    if entry.data is not None:
        return hashlib.sha256(entry.data).digest()
    hasher = hashlib.sha256()
    if entry.source is None:
        return hasher.digest()
    with entry.source.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.digest()
