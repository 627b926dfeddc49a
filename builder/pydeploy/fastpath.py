"""The no-change fast path's record: what a build read, and whether it still reads the same.

While a build runs, `recording()` collects what it read from the host: every file opened
for reading and every directory listed (Python's audit hooks `open`, `os.listdir`,
`os.scandir`), the git commands it ran with their output (`run_git`), and, above the
project, whether the names the planner looks for there exist. After a successful build,
`Record` keeps the stat and hash of each file, the listing of each directory (and of the
directory of each file read), the git outputs, the images the engine gave (tags, base)
and the build's result, under a key of everything else a build depends on (`key`).

`verify` re-reads all of it cheaply (stats first, hashes only when a stat moved) and
answers True only when everything matches; anything unexpected (a missing or unreadable
record, an OSError) is False, and the caller builds normally. The caller then asks the
engine whether the images are still what they were.

Stdlib only, imported before the build's heavy modules."""

# Plain str paths and os calls: the hook runs in every audited open of the process.
# ruff: noqa: PTH100, PTH115, PTH116, PTH117, PTH118, PTH120

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydeploy import __version__
from pydeploy.cachekeys import UNCHANGED_DIR, UNCHANGED_RECIPE

# Variables a shell changes between two identical commands; no build reads them.
VOLATILE_ENV = frozenset(
    {"PWD", "OLDPWD", "SHLVL", "_", "COLUMNS", "LINES", "TERM_SESSION_ID", "WINDOWID"}
)
# What the planner probes for in the directories above a project (the project root, a
# workspace root, a repository root, ignore files): their appearance changes the plan.
ABOVE_ROOT_NAMES = (
    "pyproject.toml",
    ".git",
    "uv.lock",
    ".gitignore",
    ".dockerignore",
    ".python-version",
)
# A file changed within this many seconds of its recorded stat may change again without
# its mtime moving (coarse timestamps): it is compared by content.
_RACY_SECONDS = 2.0
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def key(args: Mapping[str, object], environ: Mapping[str, str], cwd: str) -> str:
    """The record's name: pydeploy's version, the interpreter, the command's arguments,
    the working directory and the environment (without VOLATILE_ENV)."""
    env = sorted((k, v) for k, v in environ.items() if k not in VOLATILE_ENV)
    document = [UNCHANGED_RECIPE, __version__, sys.version, sys.executable, _own_code(),
                args, cwd, env]  # fmt: skip
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def _own_code() -> str:
    """A digest of pydeploy's own modules (paths, sizes, mtimes): an edited checkout
    (the version stays) is another pydeploy."""
    package = os.path.dirname(os.path.abspath(__file__))
    stats = []
    for directory, dirs, names in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(n for n in names if n.endswith(".py")):
            info = os.stat(os.path.join(directory, name))
            stats.append((directory, name, info.st_size, info.st_mtime_ns))
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()


def record_path(root: Path, record_key: str) -> Path:
    return root / UNCHANGED_DIR / f"{record_key}.json"


# --- recording ------------------------------------------------------------------------


@dataclass
class Reads:
    """What the build read, as the hooks saw it (absolute paths)."""

    # path -> its stat when first read (None: absent), to tell a change during the build
    opened: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    listed: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    git: dict[tuple[str, tuple[str, ...]], str | None] = field(default_factory=dict)


_active: Reads | None = None
_hooked = False


def _writes(mode: object, flags: object) -> bool:
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Runs for every audited event of the process: return at once unless recording, and
    # never raise (an exception here would fail the open itself).
    reads = _active
    if reads is None:
        return
    try:
        if event == "open":
            path, mode, flags = args
            # os.open (mode None) of a relative name is shutil.rmtree's walk of a scratch
            # tree by dir_fd, which the event leaves out: no read of the working directory.
            relative_fd_walk = mode is None and not os.path.isabs(path)
            if isinstance(path, str | bytes) and not _writes(mode, flags) and not relative_fd_walk:
                name = os.path.abspath(os.fsdecode(path))
                if name not in reads.opened:
                    reads.opened[name] = _moment(name)
        elif event in {"os.listdir", "os.scandir"}:
            path = args[0] if args else None
            if path is None:
                path = "."
            if isinstance(path, str | bytes | os.PathLike):
                name = os.path.abspath(os.fsdecode(path))
                if name not in reads.listed:
                    reads.listed[name] = _moment(name)
    except Exception:  # noqa: BLE001, S110 - see above: a read we cannot name is no read
        pass


@contextlib.contextmanager
def recording() -> Iterator[Reads]:
    """Collect what the block reads (audit hooks cannot be removed: one is installed once
    and does nothing outside a recording)."""
    global _active, _hooked  # noqa: PLW0603 - the one hook of the process
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked = True
    reads = Reads()
    _active = reads
    try:
        yield reads
    finally:
        _active = None


def run_git(root: Path, *args: str) -> str | None:
    """stdout of `git -C root ARGS`, or None when git is missing or fails (no repository);
    noted while recording, since what git read is not seen by the hooks."""
    result = _git(str(root), args)
    reads = _active
    if reads is not None:
        reads.git[(os.path.abspath(root), args)] = result
    return result


def _git(root: str, args: Sequence[str]) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", root, *args], capture_output=True, text=True, check=False, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# --- the record -------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """A recorded build: what it read and what it gave (`result`: the --json document,
    `images`: engine image name -> ID, the tags and the base)."""

    files: dict[str, list[Any] | None]  # path -> [mode, size, mtime_ns, ctime_ns, sha256]
    dirs: dict[str, str | None]  # path -> digest of its listing (None: absent)
    probes: dict[str, str]  # path -> its kind ("file", "dir", "other", "missing")
    git: list[list[Any]]  # [root, [args], output]
    images: dict[str, str]
    result: dict[str, Any]
    written: float
    warnings: list[str] = field(default_factory=list)  # the build's, repeated by the answer

    def to_doc(self) -> dict[str, Any]:
        return {
            "recipe": UNCHANGED_RECIPE,
            "files": self.files,
            "dirs": self.dirs,
            "probes": self.probes,
            "git": self.git,
            "images": self.images,
            "result": self.result,
            "written": self.written,
            "warnings": self.warnings,
        }

    @classmethod
    def from_doc(cls, doc: object) -> Record | None:
        if not isinstance(doc, dict) or doc.get("recipe") != UNCHANGED_RECIPE:
            return None
        try:
            return cls(
                dict(doc["files"]), dict(doc["dirs"]), dict(doc["probes"]), list(doc["git"]),
                dict(doc["images"]), dict(doc["result"]), float(doc["written"]),
                [str(w) for w in doc["warnings"]],
            )  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return None


def make_record(  # noqa: PLR0913 - keyword-only parts of the record
    reads: Reads,
    *,
    project_roots: Sequence[Path],
    ignored: Sequence[Path],
    images: Mapping[str, str],
    result: dict[str, Any],
    warnings: Sequence[str] = (),
) -> Record | None:
    """The record of a finished build, or None when something it read changed while it
    ran (the image may hold the old content). `ignored`: trees whose reads are not
    inputs (the host cache, the interpreter's own files)."""
    skip = tuple(os.path.join(os.path.abspath(p), "") for p in ignored)

    def kept(path: str) -> bool:
        return not path.startswith(skip) and "/__pycache__/" not in path

    seen = {p: moment for p, moment in [*reads.opened.items(), *reads.listed.items()] if kept(p)}
    if any(_moment(path) != moment for path, moment in seen.items()):
        return None
    files = {path: _file_state(path) for path in sorted(filter(kept, reads.opened))}
    listed = set(filter(kept, reads.listed)) | {os.path.dirname(p) for p in files}
    probes: dict[str, str] = {}
    for root in project_roots:
        for directory in Path(os.path.abspath(root)).parents:
            for name in ABOVE_ROOT_NAMES:
                probes[str(directory / name)] = _kind(str(directory / name))
    return Record(
        files=files,
        dirs={path: _listing(path) for path in sorted(listed)},
        probes=probes,
        git=[[root, list(args), out] for (root, args), out in sorted(reads.git.items())],
        images=dict(images),
        result=result,
        written=time.time(),
        warnings=list(warnings),
    )


def _moment(path: str) -> tuple[int, ...] | None:
    info = _stat(path)
    if info is None:
        return None
    return (info.st_mode, info.st_size, info.st_ino, info.st_mtime_ns, info.st_ctime_ns)


def _file_state(path: str) -> list[Any] | None:
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            return [info.st_mode, 0, 0, 0, ""]
        return [info.st_mode, info.st_size, info.st_mtime_ns, info.st_ctime_ns, _sha256(path)]
    except OSError:
        return None


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:  # noqa: PTH123 - plain paths throughout
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _listing(path: str) -> str | None:
    """A digest of a directory's entries: names, kinds and symlink targets."""
    try:
        with os.scandir(path) as entries:
            items = sorted(
                (e.name, "l:" + os.readlink(e.path) if e.is_symlink() else
                 "d" if e.is_dir() else "f")
                for e in entries
            )  # fmt: skip
    except OSError:
        return None
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def _kind(path: str) -> str:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "missing"
    return "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode) else "other"


def verify(record: Record) -> bool:
    """True when the host reads the same as when `record` was written (files, listings,
    probes, git outputs); the engine's images are the caller's question."""
    try:
        return (
            all(_file_same(path, then, record.written) for path, then in record.files.items())
            and all(_listing(path) == then for path, then in record.dirs.items())
            and all(_kind(path) == then for path, then in record.probes.items())
            and all(_git(root, args) == out for root, args, out in record.git)
        )
    except (OSError, TypeError, ValueError):
        return False


def _file_same(path: str, then: list[Any] | None, written: float) -> bool:
    now = _stat(path)
    if then is None or now is None:
        return then is None and now is None
    mode, size, mtime_ns, ctime_ns, digest = then
    if now.st_mode != mode:
        return False
    if not stat.S_ISREG(mode):
        return True
    if now.st_size != size:
        return False
    racy = written - mtime_ns / 1e9 < _RACY_SECONDS
    if (now.st_mtime_ns, now.st_ctime_ns) == (mtime_ns, ctime_ns) and not racy:
        return True
    return bool(_sha256(path) == digest)


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def load(path: Path) -> Record | None:
    try:
        return Record.from_doc(json.loads(path.read_bytes()))
    except (OSError, ValueError):
        return None
