"""payload/elfdeps.py: the ELF reader (tiny ELF files written here in all four class and
byte-order variants, real libraries and extension modules of this host, truncated and
non-ELF files), the loader cache, ld.so's search rules over a directory tree, the venv
scan, and the package lookup in dpkg's database."""

from __future__ import annotations

import ast
import json
import os
import shutil
import struct
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pydeploy.payload import elfdeps

SCRIPT = Path(elfdeps.__file__)
X86_64, I386, AARCH64, PPC64 = 62, 3, 183, 21
ABI64 = (2, 1, X86_64)
LOAD_BASE = 0x400000  # the segment's address differs from its offset, as in real files


@dataclass
class Spec:
    """What a tiny ELF file written by `write_elf` holds."""

    needed: list[str] = field(default_factory=list)
    soname: str | None = None
    rpath: str | None = None
    runpath: str | None = None
    interp: str | None = None
    elf_class: int = 2
    endian: int = 1
    machine: int = X86_64
    kind: int = elfdeps.ET_DYN


def elf_bytes(spec: Spec) -> bytes:
    wide = spec.elf_class == 2
    order = "<" if spec.endian == 1 else ">"
    ehsize, phentsize = (64, 56) if wide else (52, 32)
    strings = bytearray(b"\0")

    def add(text: str) -> int:
        offset = len(strings)
        strings.extend(text.encode() + b"\0")
        return offset

    tags = [(elfdeps.DT_NEEDED, add(name)) for name in spec.needed]
    for tag, value in ((elfdeps.DT_SONAME, spec.soname), (elfdeps.DT_RPATH, spec.rpath),
                       (elfdeps.DT_RUNPATH, spec.runpath)):  # fmt: skip
        if value is not None:
            tags.append((tag, add(value)))
    phnum = 3 if spec.interp else 2
    interp = (spec.interp.encode() + b"\0") if spec.interp else b""
    interp_at = ehsize + phnum * phentsize
    strtab_at = interp_at + len(interp)
    dyn_at = (strtab_at + len(strings) + 7) & ~7
    tags += [(elfdeps.DT_STRTAB, LOAD_BASE + strtab_at), (elfdeps.DT_STRSZ, len(strings))]
    tags.append((elfdeps.DT_NULL, 0))
    dyn_entry = "qQ" if wide else "iI"
    dynamic = b"".join(struct.pack(order + dyn_entry, t, v) for t, v in tags)
    total = dyn_at + len(dynamic)

    def phdr(p_type: int, offset: int, size: int) -> bytes:
        vaddr = LOAD_BASE + offset
        if wide:
            return struct.pack(order + "IIQQQQQQ", p_type, 4, offset, vaddr, vaddr, size, size, 8)
        return struct.pack(order + "IIIIIIII", p_type, offset, vaddr, vaddr, size, size, 4, 4)

    phdrs = phdr(elfdeps.PT_LOAD, 0, total) + phdr(elfdeps.PT_DYNAMIC, dyn_at, len(dynamic))
    if spec.interp:
        phdrs += phdr(elfdeps.PT_INTERP, interp_at, len(interp))
    ident = b"\x7fELF" + bytes([spec.elf_class, spec.endian, 1]) + bytes(9)
    header_format = "HHIQQQIHHHHHH" if wide else "HHIIIIIHHHHHH"
    header = struct.pack(order + header_format, spec.kind, spec.machine, 1, 0, ehsize, 0, 0,
                         ehsize, phentsize, phnum, 0, 0, 0)  # fmt: skip
    body = ident + header + phdrs + interp + bytes(strings)
    return body + bytes(dyn_at - len(body)) + dynamic


def write_elf(path: Path, spec: Spec | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(elf_bytes(spec or Spec()))
    return path


def loader(
    *,
    cache: dict[str, list[str]] | None = None,
    dirs: list[str] | None = None,
    library_path: list[str] | None = None,
) -> elfdeps.Loader:
    return elfdeps.Loader(ABI64, cache or {}, dirs or [], library_path)


# --- the reader -------------------------------------------------------------------------


@pytest.mark.parametrize(("elf_class", "endian", "machine"),
                         [(2, 1, X86_64), (1, 1, I386), (2, 2, PPC64), (1, 2, 20)])  # fmt: skip
def test_all_four_layouts_read_back(
    tmp_path: Path, elf_class: int, endian: int, machine: int
) -> None:
    spec = Spec(["libfoo.so.1", "libc.so.6"], "libme.so.2", "$ORIGIN/a:/b", "$ORIGIN/../c",
                "/lib/ld.so.1", elf_class, endian, machine)  # fmt: skip
    elf = elfdeps.read_elf(str(write_elf(tmp_path / "x.so", spec)))
    assert elf is not None
    assert elf.abi() == (elf_class, endian, machine)
    assert elf.needed == ["libfoo.so.1", "libc.so.6"]
    assert elf.soname == "libme.so.2"
    assert elf.rpath == ["$ORIGIN/a", "/b"]
    assert elf.runpath == ["$ORIGIN/../c"]
    assert elf.interpreter == "/lib/ld.so.1"


def test_absent_path_lists_are_none_not_empty(tmp_path: Path) -> None:
    elf = elfdeps.read_elf(str(write_elf(tmp_path / "x.so", Spec(["libc.so.6"]))))
    assert elf is not None
    assert (elf.rpath, elf.runpath, elf.soname, elf.interpreter) == (None, None, None, None)


def host_library(name: str) -> Path:
    for directory in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"):
        path = Path(directory) / name
        if path.exists():
            return path.resolve()
    pytest.fail(f"this x86-64 host has no {name}")


def test_real_host_libraries_and_extension_modules() -> None:
    libc = elfdeps.read_elf(str(host_library("libc.so.6")))
    assert libc is not None
    assert libc.abi() == ABI64
    assert libc.soname == "libc.so.6"
    libz = elfdeps.read_elf(str(host_library("libz.so.1")))
    assert libz is not None
    assert libz.soname == "libz.so.1"
    assert "libc.so.6" in libz.needed
    python = elfdeps.read_elf(os.path.realpath(sys.executable))
    assert python is not None
    assert python.kind in (elfdeps.ET_EXEC, elfdeps.ET_DYN)
    assert python.interpreter
    assert python.interpreter.startswith("/lib")
    dynload = Path(str(sysconfig.get_config_var("DESTSHARED")))
    ssl = next(dynload.glob("_ssl.*.so"))
    ext = elfdeps.read_elf(str(ssl))
    assert ext is not None
    assert any(name.startswith("libssl.so") for name in ext.needed)
    assert ext.interpreter is None  # a shared object: no PT_INTERP


def test_truncated_files_raise_and_non_elf_files_are_none(tmp_path: Path) -> None:
    data = host_library("libz.so.1").read_bytes()
    for size in (10, 40, 200, len(data) // 3):
        cut = tmp_path / f"cut{size}.so"
        cut.write_bytes(data[:size])
        with pytest.raises(elfdeps.ElfError):
            elfdeps.read_elf(str(cut))
    tiny = write_elf(tmp_path / "tiny.so", Spec(["libc.so.6"]))
    whole = tiny.read_bytes()
    tiny.write_bytes(whole[:-12])  # inside the dynamic section
    with pytest.raises(elfdeps.ElfError):
        elfdeps.read_elf(str(tiny))
    text = tmp_path / "libfake.so"
    text.write_text("INPUT(-lfoo)\n", encoding="utf-8")  # a linker script named .so
    assert elfdeps.read_elf(str(text)) is None
    empty = tmp_path / "empty.so"
    empty.write_bytes(b"")
    assert elfdeps.read_elf(str(empty)) is None


def test_a_corrupt_header_raises_instead_of_allocating(tmp_path: Path) -> None:
    data = bytearray(elf_bytes(Spec(["libc.so.6"])))
    struct.pack_into("<Q", data, 32, 1 << 40)  # e_phoff far beyond the file
    path = tmp_path / "bad.so"
    path.write_bytes(bytes(data))
    with pytest.raises(elfdeps.ElfError):
        elfdeps.read_elf(str(path))


# --- the loader cache -------------------------------------------------------------------


def cache_bytes(entries: list[tuple[str, str]], order: str = "<", old: bool = False) -> bytes:
    strings = bytearray()
    offsets = []
    table_end = 48 + 24 * len(entries)
    for name, path in entries:
        key = table_end + len(strings)
        strings.extend(name.encode() + b"\0")
        value = table_end + len(strings)
        strings.extend(path.encode() + b"\0")
        offsets.append((key, value))
    flags = 2 if order == "<" else 3
    header = elfdeps.CACHE_MAGIC_NEW + struct.pack(order + "IIB3xI12x", len(entries),
                                                   len(strings), flags, 0)  # fmt: skip
    body = b"".join(struct.pack(order + "iIIIQ", 0x303, k, v, 0, 0) for k, v in offsets)
    new = header + body + bytes(strings)
    if not old:
        return new
    legacy = elfdeps.CACHE_MAGIC_OLD + bytes(1) + struct.pack("=I", 2) + bytes(24)
    return legacy + bytes(-len(legacy) % 8) + new


@pytest.mark.parametrize(("order", "old"), [("<", False), (">", False), ("<", True)])
def test_cache_formats(order: str, old: bool) -> None:
    data = cache_bytes([("libpq.so.5", "/lib/x/libpq.so.5"), ("libpq.so.5", "/lib/y/libpq.so.5"),
                        ("libz.so.1", "/lib/x/libz.so.1")], order, old)  # fmt: skip
    assert elfdeps.parse_ld_cache(data) == {
        "libpq.so.5": ["/lib/x/libpq.so.5", "/lib/y/libpq.so.5"],
        "libz.so.1": ["/lib/x/libz.so.1"],
    }
    assert elfdeps.parse_ld_cache(data[:30]) == {}
    assert elfdeps.parse_ld_cache(b"not a cache") == {}


def test_the_hosts_cache_reads_as_ldconfig_prints_it() -> None:
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    printed = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, check=True).stdout
    expected = set()
    for line in printed.splitlines():
        if " => " in line:
            name_part, path = line.split(" => ")
            expected.add((name_part.split(" (")[0].strip(), path.strip()))
    found = {(n, p) for n, paths in elfdeps.read_ld_cache().items() for p in paths}
    assert expected
    assert found == expected


def test_the_loaders_own_system_dirs() -> None:
    _, interpreter = elfdeps.interpreter_abi(sys.executable)
    dirs = elfdeps.system_dirs(interpreter)
    assert "/usr/lib" in dirs or "/usr/lib64" in dirs
    assert elfdeps.system_dirs("/nonexistent/ld.so") == elfdeps.FALLBACK_SYSTEM_DIRS


# --- ld.so's search -------------------------------------------------------------------------


def chain(*paths: Path) -> list[tuple[str, elfdeps.Elf]]:
    out = []
    for path in paths:
        elf = elfdeps.read_elf(str(path))
        assert elf is not None
        out.append((str(path), elf))
    return out


def test_origin_in_runpath_and_rpath(tmp_path: Path) -> None:
    lib = write_elf(tmp_path / "pkg.libs" / "libv.so.1")
    origin, braced = "$ORIGIN/../pkg.libs", "${ORIGIN}/../pkg.libs"
    for name, spec in [("runpath.so", Spec(["libv.so.1"], runpath=origin)),
                       ("rpath.so", Spec(["libv.so.1"], rpath=origin)),
                       ("braced.so", Spec(["libv.so.1"], rpath=braced))]:  # fmt: skip
        ext = write_elf(tmp_path / "pkg" / name, spec)
        found = loader().find("libv.so.1", str(ext), chain(ext))
        # Joined as ld.so joins it: the `..` is the kernel's to resolve.
        assert found == f"{tmp_path}/pkg/../pkg.libs/libv.so.1"
        assert Path(found).resolve() == lib


def test_rpath_is_inherited_down_the_chain_but_runpath_is_not(tmp_path: Path) -> None:
    write_elf(tmp_path / "libs" / "libb.so.1")
    liba = write_elf(tmp_path / "libs" / "liba.so.1", Spec(["libb.so.1"]))
    with_rpath = write_elf(tmp_path / "pkg" / "r.so", Spec(["liba.so.1"], rpath="$ORIGIN/../libs"))
    with_runpath = write_elf(
        tmp_path / "pkg" / "u.so", Spec(["liba.so.1"], runpath="$ORIGIN/../libs")
    )
    assert loader().find("libb.so.1", str(liba), chain(with_rpath, liba))
    assert loader().find("libb.so.1", str(liba), chain(with_runpath, liba)) is None


def test_runpath_turns_off_the_objects_own_rpath(tmp_path: Path) -> None:
    write_elf(tmp_path / "a" / "libx.so.1")
    both = write_elf(tmp_path / "o.so", Spec(["libx.so.1"], rpath=f"{tmp_path}/a", runpath="/none"))
    assert loader().find("libx.so.1", str(both), chain(both)) is None
    only = write_elf(tmp_path / "p.so", Spec(["libx.so.1"], rpath=f"{tmp_path}/a"))
    assert loader().find("libx.so.1", str(only), chain(only)) == f"{tmp_path}/a/libx.so.1"


def test_search_order_rpath_library_path_runpath_cache_defaults(tmp_path: Path) -> None:
    for where in ("rpath", "env", "runpath", "cache", "default"):
        write_elf(tmp_path / where / "libx.so.1")
    cache = {"libx.so.1": [f"{tmp_path}/cache/libx.so.1"]}
    dirs = [f"{tmp_path}/default"]
    env = [f"{tmp_path}/env"]
    old = write_elf(tmp_path / "old.so", Spec(["libx.so.1"], rpath=f"{tmp_path}/rpath"))
    new = write_elf(tmp_path / "new.so", Spec(["libx.so.1"], runpath=f"{tmp_path}/runpath"))
    full = loader(cache=cache, dirs=dirs, library_path=env)
    assert full.find("libx.so.1", str(old), chain(old)) == f"{tmp_path}/rpath/libx.so.1"
    assert full.find("libx.so.1", str(new), chain(new)) == f"{tmp_path}/env/libx.so.1"
    no_env = loader(cache=cache, dirs=dirs)
    assert no_env.find("libx.so.1", str(new), chain(new)) == f"{tmp_path}/runpath/libx.so.1"
    plain = write_elf(tmp_path / "plain.so", Spec(["libx.so.1"]))
    assert no_env.find("libx.so.1", str(plain), chain(plain)) == f"{tmp_path}/cache/libx.so.1"
    defaults = loader(dirs=dirs)
    assert defaults.find("libx.so.1", str(plain), chain(plain)) == f"{tmp_path}/default/libx.so.1"
    assert loader().find("libx.so.1", str(plain), chain(plain)) is None


def test_candidates_of_another_class_or_machine_are_skipped(tmp_path: Path) -> None:
    write_elf(tmp_path / "lib32" / "libx.so.1", Spec(elf_class=1, machine=I386))
    write_elf(tmp_path / "arm" / "libx.so.1", Spec(machine=AARCH64))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "libx.so.1").write_text("not ELF", encoding="utf-8")
    write_elf(tmp_path / "lib64" / "libx.so.1")
    dirs = [f"{tmp_path}/{d}" for d in ("lib32", "arm", "text", "lib64")]
    plain = write_elf(tmp_path / "plain.so", Spec(["libx.so.1"]))
    assert loader(dirs=dirs).find("libx.so.1", str(plain), chain(plain)) == dirs[-1] + "/libx.so.1"
    assert loader(dirs=dirs[:3]).find("libx.so.1", str(plain), chain(plain)) is None


def test_a_name_with_a_slash_is_a_path(tmp_path: Path) -> None:
    lib = write_elf(tmp_path / "libx.so.1")
    plain = write_elf(tmp_path / "plain.so", Spec([str(lib)]))
    assert loader().find(str(lib), str(plain), chain(plain)) == str(lib)
    assert loader().find(f"{tmp_path}/gone.so", str(plain), chain(plain)) is None


# --- the venv scan ---------------------------------------------------------------------------


def test_scan_reports_what_is_missing_with_the_files_that_need_it(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.12" / "site-packages"
    write_elf(tmp_path / "sys" / "libc.so.6")
    write_elf(site / "pkg.libs" / "libvend-1a2b.so.1", Spec(["libc.so.6"]))
    write_elf(site / "pkg" / "_ext.so", Spec(["libvend-1a2b.so.1", "libpq.so.5", "libc.so.6"],
                                             runpath="$ORIGIN/../pkg.libs"))  # fmt: skip
    write_elf(site / "other" / "_b.so", Spec(["libpq.so.5"]))
    write_elf(venv / "bin" / "tool", Spec(["libc.so.6"], kind=elfdeps.ET_EXEC, interp="/lib/ld"))
    (site / "pkg" / "__init__.py").write_text("", encoding="utf-8")
    (site / "pkg" / "data.so").write_text("not ELF", encoding="utf-8")
    (site / "pkg" / "link.so").symlink_to("_ext.so")
    result = elfdeps.scan(str(venv), loader(dirs=[f"{tmp_path}/sys"]))
    assert result["files"] == 4
    assert result["missing"] == [
        {
            "soname": "libpq.so.5",
            "needed_by": [
                "lib/python3.12/site-packages/other/_b.so",
                "lib/python3.12/site-packages/pkg/_ext.so",
            ],
        }
    ]
    assert result["broken"] == []
    assert result["skipped"] == []


def test_vendored_libraries_rely_on_what_their_loader_loaded(tmp_path: Path) -> None:
    """auditwheel's layout: the extension's RPATH (inherited) or an earlier DT_NEEDED
    serves the vendored libraries, which have no path list of their own."""
    libs = tmp_path / "venv" / "pkg.libs"
    write_elf(libs / "libquad-9f.so.0")
    write_elf(libs / "libgfort-8e.so.5", Spec(["libquad-9f.so.0"]))
    write_elf(libs / "libblas-7d.so", Spec(["libgfort-8e.so.5"]))
    write_elf(tmp_path / "venv" / "pkg" / "_a.so",
              Spec(["libblas-7d.so"], rpath="$ORIGIN/../pkg.libs"))  # fmt: skip
    # RUNPATH is not inherited, but both libraries are loaded before libblas needs them.
    write_elf(tmp_path / "venv" / "pkg" / "_b.so",
              Spec(["libquad-9f.so.0", "libgfort-8e.so.5", "libblas-7d.so"],
                   runpath="$ORIGIN/../pkg.libs"))  # fmt: skip
    # A leftover of another wheel version: nothing needs it, nothing loads it.
    write_elf(libs / "libold-00.so", Spec(["libgone.so.1"]))
    result = elfdeps.scan(str(tmp_path / "venv"), loader())
    assert result["missing"] == []
    assert result["unused"] == ["pkg.libs/libold-00.so"]


def test_runpath_alone_does_not_reach_a_vendored_librarys_own_needs(tmp_path: Path) -> None:
    libs = tmp_path / "venv" / "pkg.libs"
    write_elf(libs / "libquad-9f.so.0")
    write_elf(libs / "libgfort-8e.so.5", Spec(["libquad-9f.so.0"]))
    write_elf(tmp_path / "venv" / "pkg" / "_c.so",
              Spec(["libgfort-8e.so.5"], runpath="$ORIGIN/../pkg.libs"))  # fmt: skip
    result = elfdeps.scan(str(tmp_path / "venv"), loader())
    assert result["missing"] == [
        {"soname": "libquad-9f.so.0", "needed_by": ["pkg.libs/libgfort-8e.so.5"]}
    ]


def test_files_of_another_abi_or_musl_are_skipped_and_broken_ones_listed(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    write_elf(venv / "arm.so", Spec(["libnothere.so"], machine=AARCH64))
    write_elf(venv / "musl.so", Spec(["libc.musl-x86_64.so.1"]))
    musl_interp = "/lib/ld-musl-x86_64.so.1"
    write_elf(venv / "alpine", Spec(["libz.so.1"], kind=elfdeps.ET_EXEC, interp=musl_interp))
    write_elf(venv / "object.o", Spec(["libnothere.so"], kind=1))  # relocatable: never loaded
    (venv / "cut.so").write_bytes(elf_bytes(Spec(["libc.so.6"]))[:70])
    result = elfdeps.scan(str(venv), loader())
    assert result["files"] == 0
    assert result["missing"] == []
    assert result["skipped"] == ["alpine", "arm.so", "musl.so"]
    assert [name for name, _ in result["broken"]] == ["cut.so"]


# --- the package that provides a library -----------------------------------------------------


def test_dpkg_owner_of_a_soname_across_merged_usr(tmp_path: Path) -> None:
    info = tmp_path / "info"
    info.mkdir()
    (info / "libpq5:amd64.list").write_text(
        "/.\n/usr\n/usr/lib/x86_64-linux-gnu/libpq.so.5\n/usr/lib/x86_64-linux-gnu/libpq.so.5.15\n",
        encoding="utf-8",
    )
    (info / "libldap-2.5-0.list").write_text("/lib/x86_64-linux-gnu/libldap-2.5.so.0\n", "utf-8")
    (info / "libldap-2.5-0.md5sums").write_text("x  /usr/lib/nope.so\n", encoding="utf-8")
    owners = elfdeps.dpkg_owners(str(info))
    assert elfdeps.owner_of("/lib/x86_64-linux-gnu/libpq.so.5", owners) == "libpq5"
    assert elfdeps.owner_of("/usr/lib/x86_64-linux-gnu/libldap-2.5.so.0", owners) == "libldap-2.5-0"
    assert elfdeps.owner_of("/usr/lib/nope.so", owners) is None
    assert elfdeps.dpkg_owners(str(tmp_path / "absent")) == {}


def test_which_finds_the_builders_file_and_its_package(tmp_path: Path) -> None:
    lib = tmp_path / "usr" / "lib" / "libpq.so.5.15"
    write_elf(lib, Spec(soname="libpq.so.5"))
    (lib.parent / "libpq.so.5").symlink_to(lib.name)
    owners = {elfdeps._merged(str(lib)): "libpq5"}  # only the real file is listed
    answer = elfdeps.which(["libpq.so.5", "libGL.so.1"], loader(dirs=[str(lib.parent)]), owners)
    assert answer == {
        "libpq.so.5": {"path": f"{lib.parent}/libpq.so.5", "package": "libpq5"},
        "libGL.so.1": {"path": None, "package": None},
    }


# --- as a program in a container ----------------------------------------------------------


def test_stdlib_only_and_python38_syntax() -> None:
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"), feature_version=(3, 8))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            imported.add((node.module or "").split(".")[0])
    assert imported <= sys.stdlib_module_names


def _python38() -> str:
    for candidate in ("python3.8", str(Path.home() / ".pyenv/versions/3.8.18/bin/python")):
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 8))"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
        except OSError:
            continue
        if out.stdout.strip() == "True":
            return candidate
    if os.environ.get("CI"):
        pytest.fail("no Python 3.8 interpreter, which this machine's CI has")
    pytest.skip("no Python 3.8 interpreter on this machine")


@pytest.mark.parametrize("python", ["current", "3.8"])
def test_the_scan_command_runs_and_prints_one_result(tmp_path: Path, python: str) -> None:
    interpreter = sys.executable if python == "current" else _python38()
    venv = tmp_path / "venv"
    write_elf(venv / "ok.so", Spec(["libc.so.6"]))
    write_elf(venv / "needs.so", Spec(["libpydeploy-test-missing.so.9"]))
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"venv": str(venv), "library_path": ""}), encoding="utf-8")
    out = subprocess.run([interpreter, str(SCRIPT), "scan", str(job)],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    [line] = [ln for ln in out.stdout.splitlines() if ln.startswith(elfdeps.MARK)]
    result = json.loads(line[len(elfdeps.MARK + "result ") :])
    assert result["files"] == 2
    assert result["missing"] == [
        {"soname": "libpydeploy-test-missing.so.9", "needed_by": ["needs.so"]}
    ]
    assert result["seconds"] >= 0
