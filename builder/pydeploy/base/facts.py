"""What a build needs to know about its base, read from the base's layers without an
engine and without extracting them: the accounts files, the interpreter (its path through
the python3 symlink chain, its version, its standard library) and the C library.

Only the few paths that answer these are kept while the layers stream past (every
symlink, since a directory symlink such as bookworm's `lib -> usr/lib` can sit on any
path); whiteouts of later layers hide what earlier ones put there, as the engine's
overlay would. Read once per base image ID (index `base-facts`)."""

from __future__ import annotations

import base64
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

from pydeploy.builder.stage import PythonInfo
from pydeploy.cachekeys import BASE_FACTS_RECIPE, INDEX_BASE_FACTS
from pydeploy.errors import BaseImageError, BuildError
from pydeploy.oci.blobs import BlobStore, digest_hex
from pydeploy.oci.image import BaseImage
from pydeploy.oci.layer import open_uncompressed
from pydeploy.oci.tar import Reader, TarMember, TarScanner

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_MAX_DATA = 64 << 20  # a kept file larger than this is noted, its content not read
_MAX_HOPS = 40  # symlinks followed in one path walk (Linux's limit)
# Files whose content answers a question: accounts, package databases, interpreters, libc.
_DATA = re.compile(
    r"etc/(?:passwd|group)|var/lib/dpkg/status|lib/apk/db/installed"
    r"|(?:.*/)?bin/python3(?:\.\d+)?"
    r"|(?:.*/)?lib(?:64)?/(?:[^/]+/)?"
    r"(?:libc\.so\.6|libc-[\d.]+\.so|ld-musl-[^/]+\.so\.1|libpython3\.\d+[^/]*\.so[^/]*)"
)
_STDLIB = re.compile(r"((?:[^/]+/)*?lib/python3\.\d+)(?:/|$)")
_INTERPRETERS = ("usr/local/bin/python3", "usr/bin/python3")
_GLIBC_BANNER = re.compile(rb"GNU C Library [^\n\0]*?release version (\d+)\.(\d+)")
_MUSL_VERSION = re.compile(rb"\0(1\.\d+)\.\d+\0")


@dataclass(frozen=True)
class BaseFacts:
    passwd: bytes
    group: bytes
    python: PythonInfo
    libc: tuple[str, str]  # ("glibc", "2.36") or ("musl", "1.2")
    env: tuple[str, ...]

    def to_doc(self) -> dict[str, object]:
        return {
            "recipe": BASE_FACTS_RECIPE,
            "passwd": base64.b64encode(self.passwd).decode(),
            "group": base64.b64encode(self.group).decode(),
            "python": [self.python.executable, self.python.version, self.python.site_packages],
            "libc": list(self.libc),
            "env": list(self.env),
        }

    @classmethod
    def from_doc(cls, doc: object) -> BaseFacts | None:
        if not isinstance(doc, dict) or doc.get("recipe") != BASE_FACTS_RECIPE:
            return None
        try:
            executable, version, site_packages = (str(x) for x in doc["python"])
            kind, libc_version = (str(x) for x in doc["libc"])
            return cls(
                base64.b64decode(doc["passwd"]),
                base64.b64decode(doc["group"]),
                PythonInfo(executable, version, site_packages),
                (kind, libc_version),
                tuple(str(x) for x in doc["env"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class _Node:
    kind: str  # "file", "dir", "symlink"
    linkname: str = ""
    data: bytes | None = None


class MergedView:
    """The kept paths of a stack of layers, whiteouts honoured; add layers bottom first."""

    def __init__(self) -> None:
        self.nodes: dict[str, _Node] = {}

    def add_layer(self, stream: Reader) -> None:
        added: dict[str, _Node] = {}
        hidden: list[tuple[str, bool]] = []  # (path, keep the directory itself)
        scanner = TarScanner(stream)
        for member in scanner:
            name = posixpath.normpath(member.name.lstrip("/"))
            if name in {".", ""} or name.startswith(".."):
                continue
            parent, leaf = posixpath.split(name)
            if leaf == _OPAQUE:
                hidden.append((parent, True))
                continue
            if leaf.startswith(_WHITEOUT):
                hidden.append((posixpath.join(parent, leaf[len(_WHITEOUT) :]), False))
                continue
            stdlib = _STDLIB.match(name)
            if stdlib:  # an entry below it proves the directory even without its own entry
                added.setdefault(stdlib.group(1), _Node("dir"))
            node = self._node(name, member, scanner, added)
            if node is not None:
                added[name] = node
                continue
            added.pop(name, None)
            below = self.nodes.get(name)
            if below is not None and not (below.kind == "dir" and member.kind == "dir"):
                # Replaced by something not kept; a directory over a directory merges.
                hidden.append((name, False))
        for path, keep_top in hidden:
            self._forget(path, keep_top=keep_top)
        self.nodes.update(added)

    def _node(
        self, name: str, member: TarMember, scanner: TarScanner, added: dict[str, _Node]
    ) -> _Node | None:
        kind = member.kind
        if kind == "symlink":
            return _Node("symlink", member.linkname)
        if kind == "dir":
            return _Node("dir") if _STDLIB.fullmatch(name) else None
        if kind == "hardlink":  # shares its target's content, in this layer or below
            target = posixpath.normpath(member.linkname.lstrip("/"))
            if not _DATA.fullmatch(name):
                return None
            return added.get(target) or self.nodes.get(target)
        if kind == "file" and _DATA.fullmatch(name):
            return _Node("file", data=scanner.read() if member.size <= _MAX_DATA else None)
        return None

    def _forget(self, path: str, *, keep_top: bool) -> None:
        inside = path + "/"
        for known in [k for k in self.nodes if k.startswith(inside) or k == path]:
            if known != path or not keep_top:
                del self.nodes[known]

    def resolve(self, path: str) -> str | None:
        """The real path `path` names, every symlink on the way followed (absolute ones
        from the image's root); None for a loop."""
        pending = [p for p in path.split("/") if p not in {"", "."}]
        current: list[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if current:
                    current.pop()
                continue
            node = self.nodes.get("/".join([*current, part]))
            if node is not None and node.kind == "symlink":
                hops += 1
                if hops > _MAX_HOPS:
                    return None
                if node.linkname.startswith("/"):
                    current = []
                pending = [p for p in node.linkname.split("/") if p not in {"", "."}] + pending
                continue
            current.append(part)
        return "/".join(current)

    def lookup(self, path: str) -> _Node | None:
        real = self.resolve(path)
        return self.nodes.get(real) if real is not None else None

    def file(self, path: str) -> bytes | None:
        node = self.lookup(path)
        return node.data if node is not None and node.kind == "file" else None


def base_facts(store: BlobStore, base: BaseImage, name: str) -> BaseFacts:
    """The facts of `base` (its layers in `store`), cached by its image ID."""
    key = digest_hex(base.image_id)
    cached = BaseFacts.from_doc(store.read_index(INDEX_BASE_FACTS, key))
    if cached is not None:
        return cached
    if base.layers is None:
        raise AssertionError("base_facts needs the base's layers in the store")
    view = MergedView()
    for layer in base.layers:
        with open_uncompressed(store, layer) as handle:
            try:
                view.add_layer(handle)
            except BuildError as exc:  # the tar reader's damaged-archive errors
                raise BaseImageError(f"a layer of the base image {name} is damaged: {exc}") from exc
    facts = facts_of(view, base.config, name)
    store.write_index(INDEX_BASE_FACTS, key, facts.to_doc())
    return facts


def facts_of(view: MergedView, config: dict[str, object], name: str) -> BaseFacts:
    """The facts from a merged view and the image config; a BaseImageError for the first
    one missing."""
    settings = config.get("config")
    env_list = settings.get("Env") if isinstance(settings, dict) else None
    env = tuple(str(e) for e in env_list or ())
    passwd, group = view.file("etc/passwd"), view.file("etc/group")
    if passwd is None:
        raise _missing(name, "/etc/passwd, which the runtime user is added to")
    if group is None:
        raise _missing(name, "/etc/group, which the runtime user's group is added to")
    return BaseFacts(passwd, group, _python(view, env, name), _libc(view, name), env)


def _missing(name: str, what: str) -> BaseImageError:
    return BaseImageError(
        f"the base image {name} has no {what}.",
        hint="pydeploy needs a base with a Linux userland and CPython 3 (python:3.X-slim, or a "
        "Debian/Ubuntu/Alpine image with python3 installed); choose another `base-image`.",
    )


def _python(view: MergedView, env: tuple[str, ...], name: str) -> PythonInfo:
    for candidate in _INTERPRETERS:
        real = view.resolve(candidate)
        node = view.nodes.get(real) if real is not None else None
        if real is not None and node is not None and node.kind == "file":
            break
    else:
        raise _missing(name, "python3 interpreter (looked for /usr/local/bin/python3 and "
                       "/usr/bin/python3, following their symlinks)")  # fmt: skip
    prefix = posixpath.dirname(posixpath.dirname(real))
    match = re.fullmatch(r"python3\.(\d+)", posixpath.basename(real))
    if match:
        minor = match.group(1)
    else:  # a bare `python3` file: its standard library says which 3.X it is
        found = sorted(
            m.group(1)
            for path, n in view.nodes.items()
            if n.kind == "dir" and (m := re.fullmatch(rf"{re.escape(prefix)}/lib/python3\.(\d+)",
                                                       path))
        )  # fmt: skip
        if len(found) != 1:
            raise _missing(name, f"single python3.X standard library beside /{real}")
        minor = found[0]
    series = f"3.{minor}"
    stdlib = view.lookup(f"{prefix}/lib/python{series}")
    if stdlib is None or stdlib.kind != "dir":
        raise _missing(name, f"standard library /{prefix}/lib/python{series} for /{real}")
    version = _python_version(view, env, series, prefix, node.data)
    if version is None:
        raise _missing(
            name,
            f"record of the exact version of /{real} (looked at the PYTHON_VERSION variable, "
            f"the package database and the interpreter's own strings)",
        )
    return PythonInfo(f"/{real}", version, f"lib/python{series}/site-packages")


def _python_version(
    view: MergedView, env: tuple[str, ...], series: str, prefix: str, binary: bytes | None
) -> str | None:
    """`3.X.Y` of the interpreter: the official images' PYTHON_VERSION, else the package
    database (Debian's python3.X-minimal, Alpine's python3), else the PY_VERSION string
    compiled into the interpreter or its libpython."""
    exact = re.compile(rf"{re.escape(series)}\.\d+")
    for entry in env:
        key, _, value = entry.partition("=")
        if key == "PYTHON_VERSION" and exact.match(value):
            return value
    dpkg = _package_version(view.file("var/lib/dpkg/status"), f"python{series}-minimal", dpkg=True)
    apk = _package_version(view.file("lib/apk/db/installed"), "python3", dpkg=False)
    for found in (dpkg, apk):
        if found and (m := exact.match(found)):
            return m.group(0)
    libraries = (n.data for p, n in view.nodes.items()
                 if re.fullmatch(rf"{re.escape(prefix)}/lib(?:/[^/]+)?/libpython{re.escape(series)}"
                                 r"[^/]*\.so[^/]*", p))  # fmt: skip
    literal = re.compile(rb"(?<![\d.])(" + re.escape(series.encode()) + rb"\.\d+)\0")
    for data in (binary, *libraries):
        if data and (hit := literal.search(data)):
            return hit.group(1).decode()
    return None


def _package_version(database: bytes | None, package: str, *, dpkg: bool) -> str | None:
    """The version of `package` in dpkg's status file or apk's installed database."""
    if database is None:
        return None
    text = database.decode("utf-8", "replace")
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(_fields(stanza.splitlines(), ": " if dpkg else ":"))
        if fields.get("Package" if dpkg else "P") == package:
            return fields.get("Version" if dpkg else "V")
    return None


def _fields(lines: Iterable[str], separator: str) -> Iterable[tuple[str, str]]:
    for line in lines:
        key, sep, value = line.partition(separator)
        if sep and not line.startswith(" "):
            yield key, value.strip()


def _libc(view: MergedView, name: str) -> tuple[str, str]:
    def named(pattern: str) -> list[bytes | None]:
        return [view.file(p) for p in sorted(view.nodes) if re.fullmatch(pattern, p)]

    glibc = named(r"(?:.*/)?lib(?:64)?/(?:[^/]+/)?(?:libc\.so\.6|libc-[\d.]+\.so)")
    if glibc:
        for data in glibc:
            if data and (banner := _GLIBC_BANNER.search(data)):
                return "glibc", f"{int(banner.group(1))}.{int(banner.group(2))}"
        return "glibc", _from_database(view, "libc6", name, "glibc")
    musl = named(r"(?:.*/)?lib/ld-musl-[^/]+\.so\.1")
    if musl:
        found = _package_version(view.file("lib/apk/db/installed"), "musl", dpkg=False)
        if found and (m := re.match(r"\d+\.\d+", found)):
            return "musl", m.group(0)
        for data in musl:
            if data and (n := _MUSL_VERSION.search(data)):
                return "musl", n.group(1).decode()
        raise _missing(name, "record of its musl version (apk database or ld-musl's strings)")
    raise _missing(name, "C library (libc.so.6 of glibc or ld-musl-*.so.1 of musl)")


def _from_database(view: MergedView, package: str, name: str, what: str) -> str:
    found = _package_version(view.file("var/lib/dpkg/status"), package, dpkg=True)
    if found and (m := re.match(r"\d+\.\d+", found)):
        return m.group(0)
    raise _missing(name, f"record of its {what} version (libc.so.6's banner or dpkg's {package})")
