"""The import names a project's source directories have once the project is installed.

A package's build backend may ship a directory under another name: hatch's wheel
`sources` (`"src/webapp" = "app"`) and `packages` (`["src/app"]` ships `app`),
setuptools' `package-dir` (`{"app" = "src/webapp"}`, `{"" = "src"}`) and
`packages.find.where`, Poetry's `packages` (`{include = "app", from = "src", to = ...}`).
App detection names modules by these rules, so a detected target is the one the app
check and the server import from the installed wheel. A `src/` directory that is not a
package is a source root under any backend (flit, pdm and uv's default layouts).

Pure: it reads the parsed pyproject.toml only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

__all__ = ["SourceRoot", "module_parts", "source_roots"]


@dataclass(frozen=True)
class SourceRoot:
    """Files below `directory` (relative to the project; `.` for the project itself)
    import as `prefix` + their path below it (`prefix` empty: top-level names)."""

    directory: PurePosixPath
    prefix: tuple[str, ...]
    origin: str  # the key that says so, for messages


def _clean(path: object) -> PurePosixPath | None:
    if not isinstance(path, str) or not path.strip():
        return None
    pure = PurePosixPath(path.strip().strip("/"))
    if pure.is_absolute() or ".." in pure.parts:
        return None  # outside the project: nothing detection walks
    return pure


def _dotted(name: object) -> tuple[str, ...] | None:
    if not isinstance(name, str):
        return None
    parts = tuple(p for p in name.replace("/", ".").split(".") if p)
    return parts if all(p.isidentifier() for p in parts) else None


def _table(data: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    node: Any = data
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def _hatch(data: Mapping[str, Any]) -> Iterable[SourceRoot]:
    wheel = _table(data, "tool", "hatch", "build", "targets", "wheel")
    build = _table(data, "tool", "hatch", "build")
    origin = "tool.hatch.build.targets.wheel"
    sources = wheel.get("sources", build.get("sources"))
    if isinstance(sources, Mapping):
        for source, dest in sources.items():
            directory, prefix = _clean(source), _dotted(dest)
            if directory is not None and prefix is not None:
                yield SourceRoot(directory, prefix, f"{origin}.sources")
    elif isinstance(sources, list):
        for source in sources:
            directory = _clean(source)
            if directory is not None:
                yield SourceRoot(directory, (), f"{origin}.sources")
    elif isinstance(wheel.get("packages"), list):
        # `packages` ships each directory under its own name, from its parent.
        for package in wheel["packages"]:
            directory = _clean(package)
            if directory is not None and directory.parent != PurePosixPath("."):
                yield SourceRoot(directory.parent, (), f"{origin}.packages")


def _setuptools(data: Mapping[str, Any]) -> Iterable[SourceRoot]:
    table = _table(data, "tool", "setuptools")
    package_dir = table.get("package-dir")
    if isinstance(package_dir, Mapping):
        for name, source in package_dir.items():
            directory, prefix = _clean(source), _dotted(name)
            if directory is not None and prefix is not None:
                yield SourceRoot(directory, prefix, "tool.setuptools.package-dir")
    where = _table(table, "packages", "find").get("where")
    if isinstance(where, list):
        for source in where:
            directory = _clean(source)
            if directory is not None:
                yield SourceRoot(directory, (), "tool.setuptools.packages.find.where")


def _poetry(data: Mapping[str, Any]) -> Iterable[SourceRoot]:
    packages = _table(data, "tool", "poetry").get("packages")
    for package in packages if isinstance(packages, list) else ():
        if not isinstance(package, Mapping):
            continue
        include, base = _clean(package.get("include")), _clean(package.get("from", "."))
        if include is None or base is None or any(c in str(include) for c in "*?["):
            continue
        to = _clean(package.get("to", "."))
        prefix = _dotted(str(to / include) if to is not None else None)
        if prefix is not None:
            yield SourceRoot(base / include, prefix, "tool.poetry.packages")


def source_roots(pyproject: Mapping[str, Any]) -> tuple[SourceRoot, ...]:
    """What the build backend's configuration says, deepest directory first (the
    most specific rule wins); empty when it says nothing (see module_parts' default)."""
    roots = [*_hatch(pyproject), *_setuptools(pyproject), *_poetry(pyproject)]
    unique = {root.directory: root for root in reversed(roots)}  # the first rule stays
    return tuple(sorted(unique.values(), key=lambda r: (-len(r.directory.parts), str(r))))


def module_parts(
    relative: PurePosixPath, roots: tuple[SourceRoot, ...], src_layout: bool
) -> tuple[str, ...]:
    """The dotted name's parts of the file at `relative` (suffix dropped): below the
    first matching root, renamed by it; else its path, with a `src/` layout's `src`
    dropped."""
    parts = relative.with_suffix("").parts
    for root in roots:
        depth = 0 if root.directory == PurePosixPath(".") else len(root.directory.parts)
        if parts[:depth] == root.directory.parts[:depth] and len(parts) > depth:
            return (*root.prefix, *parts[depth:])
    if src_layout and len(parts) > 1 and parts[0] == "src":
        return parts[1:]
    return parts
