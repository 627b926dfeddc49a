"""Runs inside containers: which shared libraries the ELF files of a venv need, and
whether the image's dynamic loader would find them.

Stdlib only, 3.8-compatible code at run time (the base image's python3 runs it; pydeploy
uploads the file, never imports pydeploy here). The host imports it for its constants and
for the unit tests.

    elfdeps.py scan JOB.json    every ELF file of the venv, each DT_NEEDED resolved as
                                glibc's ld.so resolves it in this container's filesystem
    elfdeps.py which JOB.json   where this container's loader finds some sonames and the
                                Debian package (dpkg's database) that owns each

The result is one `##pydeploy:result JSON` line (builder_script's protocol).

The loader's rules (glibc elf/dl-load.c): a name with a slash is a path. Otherwise, an
object without DT_RUNPATH searches its own DT_RPATH, then those of the objects that
loaded it, up the chain; then LD_LIBRARY_PATH; then the object's own DT_RUNPATH; then
/etc/ld.so.cache; then the loader's system directories. `$ORIGIN` is the directory of the
object whose path list it is in. A candidate of another ELF class or machine is skipped.
A soname already loaded (by file name or DT_SONAME) is reused, which is how wheels'
vendored libraries (auditwheel's `<pkg>.libs/`) find each other.
"""

# ld.so's paths are strings: `$ORIGIN/../lib` is joined, never normalized or resolved
# (a `..` after a symlink leaves the symlink's target), so this file keeps to os.path.
# ruff: noqa: PTH110, PTH113, PTH114, PTH118, PTH119, PTH120, PTH122, PTH123, PTH208

from __future__ import annotations

import collections
import json
import os
import struct
import subprocess
import sys
import time
from typing import Any

MARK = "##pydeploy:"  # as builder_script.MARK (this file cannot import it in a container)
MAGIC = b"\x7fELF"
ET_EXEC, ET_DYN = 2, 3
PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH, DT_RUNPATH = 0, 1, 5, 10, 14, 15, 29
PN_XNUM = 0xFFFF
# Bounds that keep a corrupt header from making the reader allocate or loop without end.
MAX_PHNUM = 1 << 16
MAX_TABLE = 64 << 20
CACHE_MAGIC_NEW = b"glibc-ld.so.cache1.1"
CACHE_MAGIC_OLD = b"ld.so-1.7.0"
LD_CACHE = "/etc/ld.so.cache"
DPKG_INFO = "/var/lib/dpkg/info"
# The system directories of a 64-bit/32-bit glibc when the loader cannot say (Debian's
# multiarch ones come first there; a wrong-class candidate is skipped anyway).
FALLBACK_SYSTEM_DIRS = ["/lib", "/usr/lib", "/lib64", "/usr/lib64"]
# Names that are never ELF: not even opened during the walk.
TEXT_SUFFIXES = frozenset(
    {
        ".py",
        ".pyc",
        ".pyi",
        ".pyx",
        ".pxd",
        ".txt",
        ".md",
        ".rst",
        ".json",
        ".toml",
        ".cfg",
        ".typed",
        ".h",
        ".c",
        ".cpp",
        ".html",
        ".js",
        ".css",
        ".csv",
        ".png",
        ".svg",
    }
)


class ElfError(ValueError):
    """An ELF file whose headers cannot be read (truncated, corrupt)."""


class Elf:
    """What the loader reads of one ELF file: its kind and its dynamic section."""

    __slots__ = ("elf_class", "endian", "interpreter", "kind", "machine", "needed", "rpath",
                 "runpath", "soname")  # fmt: skip

    def __init__(self, elf_class: int, endian: int, machine: int, kind: int) -> None:
        self.elf_class = elf_class  # 1: 32-bit, 2: 64-bit
        self.endian = endian  # 1: little, 2: big
        self.machine = machine  # e_machine (62: x86-64, 183: aarch64...)
        self.kind = kind  # e_type
        self.interpreter: str | None = None  # PT_INTERP
        self.needed: list[str] = []
        self.soname: str | None = None
        self.rpath: list[str] | None = None  # None: no DT_RPATH at all
        self.runpath: list[str] | None = None

    def abi(self) -> tuple[int, int, int]:
        return (self.elf_class, self.endian, self.machine)

    def musl(self) -> bool:
        """Linked against musl: such a file never loads in a glibc image (and pip only
        installs it into one when a wheel bundles it for another platform)."""
        return "ld-musl" in (self.interpreter or "") or any(
            name.startswith("libc.musl-") for name in self.needed
        )


def _read(handle: Any, offset: int, size: int) -> bytes:
    if offset < 0 or size < 0 or size > MAX_TABLE:
        raise ElfError(f"a table at {offset} of {size} bytes is out of range")
    handle.seek(offset)
    data: bytes = handle.read(size)
    if len(data) != size:
        raise ElfError(f"truncated: {size} bytes at {offset} wanted, {len(data)} there")
    return data


def read_elf(path: str) -> Elf | None:
    """The ELF facts of `path`; None when it is no ELF file. Raises ElfError when it is
    one but its headers are cut short or inconsistent, OSError when it cannot be read."""
    with open(path, "rb") as handle:
        ident = handle.read(16)
        if len(ident) < 4 or ident[:4] != MAGIC:
            return None
        if len(ident) < 16:
            raise ElfError("truncated ELF identification")
        return _parse(handle, ident)


def _parse(handle: Any, ident: bytes) -> Elf:
    elf_class, endian = ident[4], ident[5]
    if elf_class not in (1, 2) or endian not in (1, 2):
        raise ElfError(f"unknown ELF class {elf_class} or data encoding {endian}")
    order = "<" if endian == 1 else ">"
    wide = elf_class == 2
    header = "HHIQQQIHHHHHH" if wide else "HHIIIIIHHHHHH"
    size = struct.calcsize(order + header)
    fields = struct.unpack(order + header, _read(handle, 16, size))
    kind, machine, phoff, shoff = fields[0], fields[1], fields[4], fields[5]
    phentsize, phnum = fields[8], fields[9]
    elf = Elf(elf_class, endian, machine, kind)
    if phnum == PN_XNUM:  # the real count is in section 0's sh_info
        info_at = 44 if wide else 28
        phnum = struct.unpack(order + "I", _read(handle, shoff + info_at, 4))[0]
    if phnum == 0:
        return elf  # a relocatable object or a file with no program headers
    entry = "IIQQQQQQ" if wide else "IIIIIIII"
    if phentsize < struct.calcsize(order + entry) or phnum > MAX_PHNUM:
        raise ElfError(f"program header table of {phnum} entries of {phentsize} bytes")
    table = _read(handle, phoff, phentsize * phnum)
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic: tuple[int, int] | None = None
    for index in range(phnum):
        raw = struct.unpack_from(order + entry, table, index * phentsize)
        if wide:
            p_type, p_offset, p_vaddr, p_filesz = raw[0], raw[2], raw[3], raw[5]
        else:
            p_type, p_offset, p_vaddr, p_filesz = raw[0], raw[1], raw[2], raw[4]
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
        elif p_type == PT_INTERP:
            elf.interpreter = (
                _read(handle, p_offset, p_filesz)
                .split(b"\0", 1)[0]
                .decode("utf-8", "surrogateescape")
            )
    if dynamic is not None:
        _dynamic_section(handle, elf, order, dynamic, loads)
    return elf


def _dynamic_section(
    handle: Any, elf: Elf, order: str, where: tuple[int, int], loads: list[tuple[int, int, int]]
) -> None:
    entry = "qQ" if elf.elf_class == 2 else "iI"
    step = struct.calcsize(order + entry)
    data = _read(handle, where[0], where[1] - where[1] % step)
    tags: list[tuple[int, int]] = []
    for offset in range(0, len(data), step):
        tag, value = struct.unpack_from(order + entry, data, offset)
        if tag == DT_NULL:
            break
        tags.append((tag, value))
    table = dict(tags)
    if DT_STRTAB not in table:
        if any(tag in (DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH) for tag, _ in tags):
            raise ElfError("a dynamic section with names but no string table")
        return
    strtab = _file_offset(table[DT_STRTAB], loads)
    strings = _read(handle, strtab, min(table.get(DT_STRSZ, 0), MAX_TABLE))

    def text(offset: int) -> str:
        if offset >= len(strings):
            raise ElfError(f"a dynamic string at {offset} beyond the string table")
        end = strings.find(b"\0", offset)
        return strings[offset : end if end >= 0 else len(strings)].decode(
            "utf-8", "surrogateescape"
        )

    for tag, value in tags:
        if tag == DT_NEEDED:
            elf.needed.append(text(value))
        elif tag == DT_SONAME:
            elf.soname = text(value)
        elif tag == DT_RPATH:
            elf.rpath = (elf.rpath or []) + text(value).split(":")
        elif tag == DT_RUNPATH:
            elf.runpath = (elf.runpath or []) + text(value).split(":")


def _file_offset(address: int, loads: list[tuple[int, int, int]]) -> int:
    for vaddr, offset, filesz in loads:
        if vaddr <= address < vaddr + filesz:
            return address - vaddr + offset
    raise ElfError(f"the string table's address {address:#x} is in no loaded segment")


# --- the loader's view of this filesystem ------------------------------------------------


def read_ld_cache(path: str = LD_CACHE) -> dict[str, list[str]]:
    """/etc/ld.so.cache as {soname: [paths, in the cache's order]}; {} when it is absent
    or in a format this reader does not know (the system directories still apply)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_TABLE)
    except OSError:
        return {}
    return parse_ld_cache(data)


def parse_ld_cache(data: bytes) -> dict[str, list[str]]:
    start = 0
    if data.startswith(CACHE_MAGIC_OLD):
        # The old format comes first (16-byte header, 12-byte entries); the new one
        # follows, aligned to 8, and its string offsets count from its own start.
        if len(data) < 16:
            return {}
        (count,) = struct.unpack_from("=I", data, 12)
        start = (16 + 12 * count + 7) & ~7
    if data[start : start + len(CACHE_MAGIC_NEW)] != CACHE_MAGIC_NEW or len(data) < start + 48:
        return {}
    # The header's flags say the byte order (2: little, 3: big); 0: the writer's own.
    flags = data[start + 28] & 3
    order = {2: "<", 3: ">"}.get(flags, "=")
    count, _strings = struct.unpack_from(order + "II", data, start + 20)
    found: dict[str, list[str]] = {}
    for index in range(count):
        at = start + 48 + 24 * index
        if at + 24 > len(data):
            break
        _flags, key, value = struct.unpack_from(order + "iII", data, at)
        name, target = _cstring(data, start + key), _cstring(data, start + value)
        if name and target:
            found.setdefault(name, []).append(target)
    return found


def _cstring(data: bytes, offset: int) -> str:
    if offset >= len(data):
        return ""
    end = data.find(b"\0", offset)
    return data[offset : end if end >= 0 else len(data)].decode("utf-8", "surrogateescape")


def system_dirs(interpreter: str | None) -> list[str]:
    """The loader's own default directories: asked of ld.so itself (glibc 2.33+ prints
    them with --list-diagnostics), else the usual ones."""
    if interpreter and os.path.exists(interpreter):
        try:
            out = subprocess.run(
                [interpreter, "--list-diagnostics"], stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, timeout=30, check=False,
            ).stdout.decode("utf-8", "replace")  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            out = ""
        dirs = [
            line.split("=", 1)[1].strip().strip('"').rstrip("/") or "/"
            for line in out.splitlines()
            if line.startswith("path.system_dirs[")
        ]
        if dirs:
            return dirs
    return list(FALLBACK_SYSTEM_DIRS)


class Loader:
    """glibc's search for one process's libraries, over this filesystem."""

    def __init__(
        self,
        abi: tuple[int, int, int],
        cache: dict[str, list[str]],
        default_dirs: list[str],
        library_path: list[str] | None = None,
    ) -> None:
        self.abi = abi
        self.cache = cache
        self.default_dirs = default_dirs
        self.library_path = [d for d in (library_path or []) if d]
        self._files: dict[str, Elf | None] = {}

    def elf(self, path: str) -> Elf | None:
        """The ELF facts of a candidate file (None: missing, unreadable, no ELF)."""
        if path not in self._files:
            try:
                self._files[path] = read_elf(path) if os.path.isfile(path) else None
            except (OSError, ElfError):
                self._files[path] = None
        return self._files[path]

    def usable(self, path: str) -> bool:
        found = self.elf(path)
        return found is not None and found.abi() == self.abi

    def find(self, name: str, requester: str, chain: list[tuple[str, Elf]]) -> str | None:
        """Where `name`, needed by the object `chain[-1]` (at `requester`), is loaded
        from; None when the loader would fail. `chain` is the loading objects, the
        requester last (their DT_RPATHs apply when the requester has no DT_RUNPATH)."""
        if "/" in name:
            return name if self.usable(name) else None
        for directory in self.search_dirs(requester, chain):
            candidate = os.path.join(directory, name)
            if self.usable(candidate):
                return candidate
        for candidate in self.cache.get(name, []):
            if self.usable(candidate):
                return candidate
        for directory in self.default_dirs:
            candidate = os.path.join(directory, name)
            if self.usable(candidate):
                return candidate
        return None

    def search_dirs(self, requester: str, chain: list[tuple[str, Elf]]) -> list[str]:
        """The path lists searched before the cache, in the loader's order."""
        own = chain[-1][1]
        dirs: list[str] = []
        if own.runpath is None:
            for path, obj in reversed(chain):
                dirs += _expand(obj.rpath or [], path)
        dirs += self.library_path
        if own.runpath is not None:
            dirs += _expand(own.runpath, requester)
        return dirs


def _expand(entries: list[str], path: str) -> list[str]:
    """A DT_RPATH/DT_RUNPATH list with $ORIGIN replaced by the directory of `path` (the
    path the object was loaded as, as ld.so does: no symlink resolution). Elements with
    other tokens ($LIB, $PLATFORM) or empty ones are left out."""
    origin = os.path.dirname(path)  # the walk's and the loader's paths are absolute
    out = []
    for entry in entries:
        expanded = entry.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)
        if expanded and "$" not in expanded:
            out.append(expanded)
    return out


# --- scanning a venv ---------------------------------------------------------------------


def elf_files(top: str) -> tuple[dict[str, Elf], list[tuple[str, str]]]:
    """Every regular ELF file under `top` (symlinks are not followed: their targets are
    scanned where they are), and the ELF files that could not be read with why."""
    found: dict[str, Elf] = {}
    broken: list[tuple[str, str]] = []
    for directory, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() in TEXT_SUFFIXES:
                continue
            path = os.path.join(directory, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            try:
                elf = read_elf(path)
            except ElfError as exc:
                broken.append((path, str(exc)))
                continue
            except OSError as exc:
                broken.append((path, exc.strerror or str(exc)))
                continue
            if elf is not None and elf.kind in (ET_EXEC, ET_DYN):
                found[path] = elf
    return found, broken


def scan(top: str, loader: Loader) -> dict[str, Any]:
    """Resolve every DT_NEEDED of the ELF files under `top` as loads would.

    Files that other files of the venv need (by file name or soname) are checked as
    those load them, so the loading chain's DT_RPATH and the libraries loaded before
    apply; all other files are loaded on their own (extension modules, executables,
    ctypes libraries), except vendored libraries nothing needs. Files of another ABI
    than the interpreter's, or linked against musl, are skipped: they never load here."""
    objects, broken = elf_files(top)
    ours = {p: e for p, e in objects.items() if e.abi() == loader.abi and not e.musl()}
    needed_names = {n for e in ours.values() for n in e.needed}
    dependents = {p for p, e in ours.items() if {os.path.basename(p), e.soname} & needed_names}
    # A wheel's vendored library (auditwheel's `<dist>.libs/`) that nothing needs is
    # never loaded: a leftover of another version of the wheel.
    unused = {p for p in ours if p not in dependents and _vendored(p)}
    missing: dict[str, list[str]] = collections.OrderedDict()
    visited: set[str] = set()
    order = [p for p in sorted(ours) if p not in dependents and p not in unused]
    for root in order + sorted(dependents):
        if root not in visited:
            _load(root, ours, loader, visited, missing)
    return {
        "files": len(ours),
        "unused": sorted(_relative(p, top) for p in unused),
        "skipped": sorted(_relative(p, top) for p in objects if p not in ours),
        "broken": [[_relative(p, top), why] for p, why in broken],
        "missing": [
            {"soname": name, "needed_by": sorted({_relative(p, top) for p in paths})}
            for name, paths in sorted(missing.items())
        ],
    }


def _load(
    root: str,
    ours: dict[str, Elf],
    loader: Loader,
    visited: set[str],
    missing: dict[str, list[str]],
) -> None:
    """One load of `root` and its dependencies, breadth first as ld.so maps them; only
    the venv's own files are followed (the system's come with their packages' own
    dependencies)."""
    elf = ours[root]
    loaded = {os.path.basename(root)}
    if elf.soname:
        loaded.add(elf.soname)
    queue = collections.deque([[(root, elf)]])
    visited.add(root)
    while queue:
        chain = queue.popleft()
        path, obj = chain[-1]
        for name in obj.needed:
            if name in loaded:
                continue
            loaded.add(name)
            found = loader.find(name, path, chain)
            if found is None:
                missing.setdefault(name, []).append(path)
                continue
            target = loader.elf(found)
            if target is not None and target.soname:
                loaded.add(target.soname)
            real = _venv_file(found, ours)
            if real is not None:
                visited.add(real)
                queue.append([*chain, (found, ours[real])])


def _vendored(path: str) -> bool:
    return os.path.basename(os.path.dirname(path)).endswith(".libs")


def _venv_file(path: str, ours: dict[str, Elf]) -> str | None:
    if path in ours:
        return path
    real = os.path.realpath(path)
    return real if real in ours else None


def _relative(path: str, top: str) -> str:
    return os.path.relpath(path, top)


def interpreter_abi(executable: str) -> tuple[tuple[int, int, int], str | None]:
    """The ABI of the running interpreter and its ELF interpreter (ld.so)."""
    elf = read_elf(os.path.realpath(executable))
    if elf is None:
        raise ElfError(f"{executable} is not an ELF file")
    return elf.abi(), elf.interpreter


# --- which package owns a library (the builder's dpkg database) ------------------------


def _merged(path: str) -> str:
    """A path as on a merged-/usr system: /lib/x and /usr/lib/x are the same file."""
    for top in ("/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libx32", "/usr/bin", "/usr/sbin"):
        if path == top or path.startswith(top + "/"):
            return path[4:]
    return path


def dpkg_owners(info_dir: str = DPKG_INFO) -> dict[str, str]:
    """{path (merged-/usr form): package} from dpkg's file lists (what `dpkg -S` reads);
    the package name without its `:arch` qualifier."""
    owners: dict[str, str] = {}
    try:
        names = sorted(os.listdir(info_dir))
    except OSError:
        return owners
    for name in names:
        if not name.endswith(".list"):
            continue
        package = name[: -len(".list")].split(":", 1)[0]
        try:
            with open(os.path.join(info_dir, name), encoding="utf-8", errors="replace") as f:
                for line in f:
                    owners.setdefault(_merged(line.rstrip("\n")), package)
        except OSError:
            continue
    return owners


def owner_of(path: str, owners: dict[str, str]) -> str | None:
    """The package that ships `path` (a soname's symlink usually), else its target."""
    for candidate in (path, os.path.realpath(path)):
        package = owners.get(_merged(candidate))
        if package:
            return package
    return None


def which(wanted: list[str], loader: Loader, owners: dict[str, str]) -> dict[str, Any]:
    """{soname: {"path": where the loader finds it or None, "package": its owner}}."""
    answer: dict[str, Any] = {}
    for name in wanted:
        path = loader.find(name, "/", [("/", Elf(*loader.abi, ET_DYN))])
        answer[name] = {"path": path, "package": owner_of(path, owners) if path else None}
    return answer


# --- the commands --------------------------------------------------------------------------


def _loader(job: dict[str, Any]) -> Loader:
    abi, interpreter = interpreter_abi(sys.executable)
    library_path = [d for d in str(job.get("library_path") or "").split(":") if d]
    return Loader(abi, read_ld_cache(), system_dirs(interpreter), library_path)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("scan", "which"):
        sys.stderr.write("usage: elfdeps.py scan|which JOB.json\n")
        return 2
    with open(argv[2], encoding="utf-8") as handle:
        job = json.load(handle)
    started = time.monotonic()
    loader = _loader(job)
    if argv[1] == "scan":
        result = scan(job["venv"], loader)
    else:
        result = {"libraries": which(list(job["sonames"]), loader, dpkg_owners())}
    result["seconds"] = round(time.monotonic() - started, 4)
    sys.stdout.write(MARK + "result " + json.dumps(result, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
