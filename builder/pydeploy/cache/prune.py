"""`pydeploy prune`: what pydeploy's caches hold, what may go, and removing it.

Three steps, so the decision is testable without an engine or a disk: `take_inventory`
reads the engine's pydeploy volumes and builder images and the host cache directory;
`plan_prune` (pure) decides from that inventory and a Policy; `apply` removes.

Last use of a venv volume is recorded inside the volume by every build that uses it
(cachekeys.USED), so prune on any host sharing the engine judges every user's volumes
alike; a volume with no record is judged by its creation time.

What an in-flight build uses is never removed. On the engine: a build pins its images
and volumes with containers (Engine.pin), and what a container refers to is skipped (the
engine refuses it anyway, which `apply` treats as "in use"); containers of dead builds
are removed first (owners.py), which frees what they held. In the host cache: builds
hold a shared lock (`lease`) and prune an exclusive one, so while a build runs, prune
leaves the host cache alone; host files a killed build may have left (`.tmp-*` partial
blobs, `tmp/` scratch, unreferenced blobs) are only removed an hour after their last
change.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from pydeploy.atomic import TEMP_PREFIX
from pydeploy.cachekeys import (
    APT_VOLUME_PREFIX,
    BASE_REPOSITORY,
    BUILD_LABEL,
    BUILDER_REPOSITORY,
    CACHE_VOLUME,
    HOST_VENVS_DIR,
    INDEX_IMAGE_LAYERS,
    INDEX_PRELOAD,
    LABEL_CACHE,
    LABEL_CLAIMED,
    LABEL_PYTHON,
    LABEL_VENV,
    LABEL_VENV_KEY,
    MARKER,
    PYTHON_VOLUME_PREFIX,
    UNCHANGED_DIR,
    USED,
    VENV_VOLUME_PREFIX,
    VOLUME_PREFIX,
)
from pydeploy.engine.client import Engine
from pydeploy.errors import EngineError

DEFAULT_DAYS = 30.0
# Anything a running build may still be writing stays this long after its last change.
GRACE_SECONDS = 3600
LOCK_FILE = "lock"  # never removed: builds and prune meet on it
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DAY = 86400.0

VolumeRole = Literal["venv", "python", "cache", "apt"]
FileRole = Literal["blob", "partial", "index", "tmp", "log", "record", "lock", "other", "venv"]


# --- the host cache lock ---------------------------------------------------------------


@contextlib.contextmanager
def lease(root: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Held (shared) by a build for as long as it uses the host cache. Waits while a
    `prune` holds it exclusively, calling `on_wait` first."""
    with _lock_file(root) as handle:
        if handle is not None and not _flock(handle, shared=True, wait=False):
            if on_wait:
                on_wait()
            _flock(handle, shared=True, wait=True)
        yield


@contextlib.contextmanager
def exclusive(root: Path) -> Iterator[bool]:
    """Try to hold the host cache alone (prune): yields False while a build uses it."""
    with _lock_file(root) as handle:
        yield handle is None or _flock(handle, shared=False, wait=False)


@contextlib.contextmanager
def _lock_file(root: Path) -> Iterator[IO[str] | None]:
    """The open lock file; None when it cannot be had (then nothing is locked)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = (root / LOCK_FILE).open("a")
    except OSError:
        yield None
        return
    with handle:
        yield handle


def _flock(handle: IO[str], *, shared: bool, wait: bool) -> bool:
    try:
        import fcntl  # noqa: PLC0415 - POSIX only; elsewhere nothing is locked
    except ImportError:
        return True
    flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
    try:
        fcntl.flock(handle, flags)
    except BlockingIOError:
        return False
    except OSError:
        return True  # a file system without locks: as without fcntl
    return True


# --- the inventory --------------------------------------------------------------------


@dataclass(frozen=True)
class CachedVolume:
    name: str
    role: VolumeRole
    created: float  # epoch seconds
    size: int | None
    in_use: bool
    complete: bool | None = None  # venv: has its completion marker (None: not checked)
    claimed: float = 0.0  # venv: when a build claimed it (else `created`)
    last_used: float | None = None  # venv: the record a build left in it


@dataclass(frozen=True)
class CachedImage:
    reference: str
    image_id: str
    size: int | None
    in_use: bool
    category: str = "builder image"  # or "loaded base image" (pydeploy-base: for a builder)


@dataclass(frozen=True)
class HostEntry:
    path: Path
    role: FileRole
    size: int
    mtime: float  # for a directory: the newest change anywhere in it
    is_dir: bool = False
    digest: str | None = None  # blob: its digest
    refs: frozenset[str] = frozenset()  # index: the digests it names
    index_kind: str = ""


@dataclass(frozen=True)
class Inventory:
    root: Path
    volumes: tuple[CachedVolume, ...] = ()
    images: tuple[CachedImage, ...] = ()
    files: tuple[HostEntry, ...] = ()
    engine_images: frozenset[str] = frozenset()  # image IDs the engine holds
    engine: bool = True  # False: no engine answered; only the host cache was read
    orphans: tuple[str, ...] = ()  # containers of dead builds (owners.py)
    host_busy: bool = False  # a build holds the host cache (`lease`)


@dataclass(frozen=True)
class Policy:
    everything: bool = False
    older_than_days: float = DEFAULT_DAYS
    now: float = 0.0

    @property
    def cutoff(self) -> float:
        return self.now - self.older_than_days * _DAY


@dataclass(frozen=True)
class Item:
    kind: Literal["container", "volume", "image", "file", "directory"]
    category: str  # "venv volume", "builder image", "blob", "log", ...
    name: str  # volume name, image reference or path
    size: int | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "category": self.category,
            "name": self.name,
            "size": self.size,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Plan:
    remove: tuple[Item, ...]
    kept: tuple[Item, ...]  # what was spared and why (in use, maybe being written)
    # --all, with no build using the host cache: `apply` then also removes the
    # directories it emptied (a build creates one just before writing into it).
    tidy_directories: bool = False

    @property
    def size(self) -> int:
        return sum(item.size or 0 for item in self.remove)


def take_inventory(
    engine: Engine | None, root: Path, *, check_markers: bool, host_busy: bool = False
) -> Inventory:
    """Read what pydeploy caches on the engine (when given) and under `root`.
    `check_markers` reads each unused venv volume's completion marker and last use (one
    never-started container each); `--all` does not need them. What containers of dead
    builds hold counts as unused: `apply` removes those containers first."""
    files = tuple(_host_entries(root))
    if engine is None:
        return Inventory(root, files=files, engine=False, host_busy=host_busy)
    orphans = engine.orphans()
    used_volumes, used_images = engine.in_use(ignore=set(orphans))
    disk = engine.df()
    images = _images(engine, disk.images, used_images)
    probe_image = next((i.reference for i in images), None) or next(iter(disk.images), None)
    volumes: list[CachedVolume] = []
    for info in engine.list_volumes(VOLUME_PREFIX):
        role = _volume_role(info.name, info.labels)
        if role is None:
            continue  # a pydeploy-looking name without pydeploy's labels: not ours
        in_use = info.name in used_volumes
        complete, last_used = None, None
        if role == "venv" and check_markers and not in_use and probe_image:
            complete, last_used = _venv_state(engine, info.name, info.labels, probe_image)
        volumes.append(
            CachedVolume(
                info.name, role, info.created, disk.volumes.get(info.name), in_use, complete,
                claimed=_number(info.labels.get(LABEL_CLAIMED)) or info.created,
                last_used=last_used,
            )
        )  # fmt: skip
    return Inventory(
        root, tuple(volumes), tuple(images), files, frozenset(disk.images),
        orphans=tuple(orphans), host_busy=host_busy,
    )  # fmt: skip


def _volume_role(name: str, labels: dict[str, str]) -> VolumeRole | None:
    if name.startswith(VENV_VOLUME_PREFIX) and labels.get(LABEL_VENV) == "1":
        return "venv"
    if name.startswith(PYTHON_VOLUME_PREFIX) and LABEL_PYTHON in labels:
        return "python"
    if name == CACHE_VOLUME and labels.get(LABEL_CACHE) == "1":
        return "cache"
    if name.startswith(APT_VOLUME_PREFIX) and BUILD_LABEL in labels:
        return "apt"
    return None


def _images(engine: Engine, sizes: dict[str, int], used: set[str]) -> list[CachedImage]:
    seen: set[str] = set()
    images = []
    kinds = ((BUILDER_REPOSITORY, "builder image"), (BASE_REPOSITORY, "loaded base image"))
    for repository, category in kinds:
        for info in engine.list_images(repository):
            # Several tags of one image: its bytes are counted once.
            size = None if info.image_id in seen else sizes.get(info.image_id)
            seen.add(info.image_id)
            in_use = info.image_id in used
            images.append(CachedImage(info.reference, info.image_id, size, in_use, category))
    return images


def _venv_state(
    engine: Engine, volume: str, labels: dict[str, str], image: str
) -> tuple[bool | None, float | None]:
    """(has its completion marker, the last use a build recorded in it). Unreadable:
    (None, None), which the planner treats as complete and judges by creation time."""
    try:
        marker, used = engine.read_volume_files(volume, [MARKER, USED], image)
    except EngineError:
        return None, None
    last_used = None
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        last_used = float(json.loads(used or b"")["time"])
    if marker is None:
        return False, last_used
    try:
        document = json.loads(marker)
    except ValueError:
        return False, last_used
    key = labels.get(LABEL_VENV_KEY)
    complete = isinstance(document, dict) and (key is None or document.get("key") == key)
    return complete, last_used


def _number(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0


def _host_entries(root: Path) -> Iterator[HostEntry]:
    if not root.is_dir():
        return
    for top in sorted(root.iterdir()):
        if top.name == "blobs" and top.is_dir() and not top.is_symlink():
            yield from _blob_entries(top)
        elif top.name in {"tmp", "logs"} and top.is_dir() and not top.is_symlink():
            role: FileRole = "tmp" if top.name == "tmp" else "log"
            for child in sorted(top.iterdir()):
                yield _entry(child, role)
        elif top.name == HOST_VENVS_DIR and top.is_dir() and not top.is_symlink():
            # Builds without an engine: one venv per dependency key (its marker is
            # touched on each use), and the work directories of interrupted installs.
            for child in sorted(top.iterdir()):
                yield _entry(child, "tmp" if child.name.startswith(".tmp-") else "venv")
        elif top.name == UNCHANGED_DIR and top.is_dir() and not top.is_symlink():
            for child in sorted(top.iterdir()):
                yield _entry(child, "partial" if child.name.startswith(TEMP_PREFIX) else "record")
        elif top.name == LOCK_FILE:
            yield _entry(top, "lock")
        else:
            yield _entry(top, "other")


def _blob_entries(blobs: Path) -> Iterator[HostEntry]:
    for top in sorted(blobs.iterdir()):
        if top.name == "sha256" and top.is_dir():
            yield from _digest_entries(top)
        elif top.name == "index" and top.is_dir():
            yield from _index_entries(top)
        else:
            yield _entry(top, "other")


def _digest_entries(sha256: Path) -> Iterator[HostEntry]:
    """`blobs/sha256/`: the blobs, and partial ones a write left."""
    for path in sorted(sha256.iterdir()):
        if path.name.startswith(TEMP_PREFIX):
            yield _entry(path, "partial")
        elif _HEX64.fullmatch(path.name) and path.is_file():
            yield _entry(path, "blob", digest=f"sha256:{path.name}")
        else:
            yield _entry(path, "other")


def _index_entries(index: Path) -> Iterator[HostEntry]:
    """`blobs/index/<kind>/`: the cache index entries of each kind."""
    for kind_dir in sorted(p for p in index.iterdir() if p.is_dir()):
        for path in sorted(kind_dir.iterdir()):
            if path.name.startswith(TEMP_PREFIX):
                yield _entry(path, "partial")
            elif path.suffix == ".json" and path.is_file():
                yield _index_entry(path, kind_dir.name)
            else:
                yield _entry(path, "other")


# Indexes of what the engine holds (its images' layers, preloaded images): their digests
# name engine images, not host blobs, so they keep no blob.
_ENGINE_INDEXES = frozenset({INDEX_IMAGE_LAYERS, INDEX_PRELOAD})


def _index_entry(path: Path, kind: str) -> HostEntry:
    base = _entry(path, "index")
    if kind in _ENGINE_INDEXES:
        return HostEntry(path, "index", base.size, base.mtime, index_kind=kind)
    try:
        refs = set(_DIGEST.findall(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError):
        refs = set()
    if _HEX64.fullmatch(path.stem):
        # Some indexes are keyed by a blob's digest (the base import: by image ID,
        # which is its config blob's digest).
        refs.add(f"sha256:{path.stem}")
    return HostEntry(path, "index", base.size, base.mtime, refs=frozenset(refs), index_kind=kind)


def _entry(path: Path, role: FileRole, *, digest: str | None = None) -> HostEntry:
    try:
        stat = path.lstat()
    except OSError:
        return HostEntry(path, role, 0, 0.0, digest=digest)
    if not path.is_dir() or path.is_symlink():
        return HostEntry(path, role, stat.st_size, stat.st_mtime, digest=digest)
    size, newest = 0, stat.st_mtime
    for directory, dirs, names in os.walk(path):
        for name in [*dirs, *names]:
            with contextlib.suppress(OSError):
                info = Path(directory, name).lstat()
                newest = max(newest, info.st_mtime)
                size += info.st_size if name in names else 0
    return HostEntry(path, role, size, newest, is_dir=True, digest=digest)


# --- the plan (pure) ------------------------------------------------------------------


_VOLUME_CATEGORY = {
    "venv": "venv volume",
    "python": "probe volume",
    "cache": "uv cache volume",
    "apt": "apt volume",
}
_FILE_CATEGORY = {
    "blob": "blob",
    "partial": "partial blob",
    "index": "index entry",
    "tmp": "tmp",
    "log": "log",
    "record": "no-change record",
    "venv": "host venv",
    "lock": "lock",
    "other": "other",
}


def plan_prune(inventory: Inventory, policy: Policy) -> Plan:
    """What goes and what stays, from an inventory alone."""
    remove = [
        Item("container", "builder container", ident, None, "its build is gone")
        for ident in inventory.orphans
    ]
    kept: list[Item] = []
    for volume in inventory.volumes:
        verdict = _judge_volume(volume, policy)
        if verdict:
            goes, reason = verdict
            category = _VOLUME_CATEGORY[volume.role]
            item = Item("volume", category, volume.name, volume.size, reason)
            (remove if goes else kept).append(item)
    for image in inventory.images:
        if not policy.everything:
            continue
        reason = "in use" if image.in_use else "--all"
        target = kept if image.in_use else remove
        target.append(Item("image", image.category, image.reference, image.size, reason))
    files_out, files_kept = _plan_files(inventory, policy)
    tidy = policy.everything and not inventory.host_busy
    return Plan(tuple(remove + files_out), tuple(kept + files_kept), tidy)


def _judge_volume(volume: CachedVolume, policy: Policy) -> tuple[bool, str] | None:
    """(remove?, why), or None for a volume that simply stays."""
    if volume.in_use:
        return False, "in use"
    if policy.everything:
        return True, "--all"
    if volume.role == "venv":
        return _judge_venv(volume, policy)
    if volume.role == "apt" and policy.now - volume.created >= GRACE_SECONDS:
        return True, "left by an interrupted build"
    return None


def _judge_venv(volume: CachedVolume, policy: Policy) -> tuple[bool, str] | None:
    """A venv volume no container uses: incomplete ones go once no build can be filling
    them, complete ones when unused for longer than the policy allows."""
    if volume.complete is False:
        if policy.now - volume.claimed < GRACE_SECONDS:
            return False, "incomplete, but claimed within the hour: a build may fill it"
        return True, "incomplete (no completion marker)"
    last = volume.last_used if volume.last_used is not None else volume.created
    if last < policy.cutoff:
        return True, f"not used for {_days(policy.now - last)} days"
    return None


def _plan_files(inventory: Inventory, policy: Policy) -> tuple[list[Item], list[Item]]:
    remove: list[Item] = []
    kept: list[Item] = []
    if inventory.host_busy:
        why = "a build is using the host cache"
        return [], [_file_item(e, why) for e in inventory.files if e.role != "lock"]
    settled = policy.now - GRACE_SECONDS
    # Index entries first: the blobs they name stay, and a removed entry frees its blobs.
    referenced: set[str] = set()
    for entry in inventory.files:
        if entry.role == "index" and not policy.everything:
            reason = _stale_index(entry, inventory, policy)
            if reason:
                remove.append(_file_item(entry, reason))
            else:
                referenced |= entry.refs
    for entry in inventory.files:
        if entry.role == "lock" or (entry.role == "index" and not policy.everything):
            continue
        busy = entry.role in {"partial", "tmp"} and entry.mtime > settled
        if busy:
            kept.append(_file_item(entry, "changed within the hour: a build may be writing it"))
            continue
        if policy.everything:
            remove.append(_file_item(entry, "--all"))
            continue
        reason = _stale_file(entry, policy, referenced)
        if reason:
            remove.append(_file_item(entry, reason))
    return remove, kept


def _stale_index(entry: HostEntry, inventory: Inventory, policy: Policy) -> str | None:
    if entry.mtime >= policy.cutoff:
        return None
    if entry.index_kind in {"docker-save", "base-config"} and entry.refs & inventory.engine_images:
        return None  # the base image is still in the engine: its import stays useful
    return f"written {_days(policy.now - entry.mtime)} days ago"


def _stale_file(entry: HostEntry, policy: Policy, referenced: set[str]) -> str | None:
    settled = policy.now - GRACE_SECONDS
    if entry.role == "partial":
        return "partial write of an interrupted build"
    if entry.role == "tmp":
        return "scratch space of an interrupted build"
    if entry.role in {"log", "record", "venv"} and entry.mtime < policy.cutoff:
        return f"written {_days(policy.now - entry.mtime)} days ago"
    if entry.role == "blob" and entry.digest not in referenced and entry.mtime < settled:
        return "not referenced by any cache index"
    return None


def _file_item(entry: HostEntry, reason: str) -> Item:
    kind: Literal["file", "directory"] = "directory" if entry.is_dir else "file"
    return Item(kind, _FILE_CATEGORY[entry.role], str(entry.path), entry.size, reason)


def describe(items: Iterable[Item]) -> list[str]:
    """Report lines: one an item, except blobs (often hundreds): one line a reason."""
    lines: list[str] = []
    blobs: dict[str, list[Item]] = {}
    for item in items:
        if item.category == "blob":
            blobs.setdefault(item.reason, []).append(item)
        else:
            lines.append(f"{item.category} {item.name} ({format_size(item.size)}; {item.reason})")
    for reason, group in blobs.items():
        size = sum(i.size or 0 for i in group)
        lines.append(f"{len(group)} blobs ({format_size(size)}; {reason})")
    return lines


def format_size(size: int | None) -> str:
    if size is None:
        return "size unknown"
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def _days(seconds: float) -> int:
    return int(seconds // _DAY)


# --- removal --------------------------------------------------------------------------


@dataclass
class Outcome:
    removed: list[Item]
    kept: list[Item]  # planned, but in use by the time of removal

    @property
    def reclaimed(self) -> int:
        return sum(item.size or 0 for item in self.removed)


def apply(
    engine: Engine | None,
    root: Path,
    plan: Plan,
    on_item: Callable[[Item], None] | None = None,
) -> Outcome:
    """Remove what the plan says. Volumes and images a container took up since the
    inventory are refused by the engine and reported as kept, not as errors."""
    outcome = Outcome([], [])
    for item in plan.remove:  # containers first: they free what they held
        done = True
        if item.kind == "container" and engine is not None:
            engine.remove(item.name)
        elif item.kind == "volume" and engine is not None:
            done = engine.remove_unused_volume(item.name)
        elif item.kind == "image" and engine is not None:
            done = engine.remove_unused_image(item.name)
        elif item.kind == "directory":
            shutil.rmtree(item.name, ignore_errors=True)
            done = not Path(item.name).exists()
        elif item.kind == "file":
            with contextlib.suppress(FileNotFoundError):
                Path(item.name).unlink()
        if done:
            outcome.removed.append(item)
            if on_item:
                on_item(item)
        else:
            outcome.kept.append(Item(item.kind, item.category, item.name, item.size, "in use"))
    if plan.tidy_directories:
        _remove_empty_dirs(root)
    return outcome


@dataclass(frozen=True)
class Pruned:
    """What one `prune` removed (dry: would remove) and kept; `prune --json` shows it."""

    removed: tuple[Item, ...]
    kept: tuple[Item, ...]
    policy: Policy
    root: Path
    engine: bool  # an engine answered (else only the host cache was pruned)
    dry_run: bool = False

    @property
    def size(self) -> int:
        return sum(item.size or 0 for item in self.removed)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run, "all": self.policy.everything,
            "older_than_days": self.policy.older_than_days,
            "cache_dir": str(self.root), "engine": self.engine,
            "items": [i.to_json() for i in self.removed],
            "kept": [i.to_json() for i in self.kept], "bytes": self.size,
        }  # fmt: skip


def _remove_empty_dirs(root: Path) -> None:
    """After --all: the directories it emptied, the root last (it keeps the lock file,
    so it stays)."""
    if not root.is_dir():
        return
    for directory, _dirs, _files in sorted(os.walk(root), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            Path(directory).rmdir()
