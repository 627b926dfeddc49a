"""poetry.lock (lock formats 1.x and 2.x) as the packages `poetry install --only main`
installs, or with the groups and extras asked for.

Whatever the format says about groups (1.x `category`, 2.1 `groups`/`markers`, 2.0
nothing), the rule is one: walk the dependency graph from the project's root
requirements (main, plus each requested group, plus optional ones a requested extra
names), following each package's `[package.dependencies]` (and those of the extras
asked of it), judging every edge's markers and `python` constraint for the target. What
the target cannot decide stays in the line as a marker (see common.Target)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from pydeploy.config.project import poetry_specifiers
from pydeploy.config.toml import read_toml
from pydeploy.errors import ConfigError
from pydeploy.plan.locks.common import (
    Conditions,
    Locked,
    Pins,
    Selection,
    Target,
    bad_lock,
    hashes_of,
    narrow,
    pins_of,
    python_marker,
    vcs_url,
)

LOCK = "poetry.lock"
_EXTRA_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


@dataclass(frozen=True)
class _Edge:
    """A requirement on a locked package: its name, the extras asked of it, the markers
    (and `python` constraint, as a marker) under which it holds, and its version range."""

    name: str
    extras: frozenset[str]
    markers: tuple[str, ...]
    versions: tuple[SpecifierSet, ...] | None


def read(
    root: Path, pyproject: dict[str, Any], extras: tuple[str, ...], groups: tuple[str, ...],
    target: Target,
) -> Selection:  # fmt: skip
    """The packages root/poetry.lock installs for the main group, `groups` and `extras`."""
    path = root / LOCK
    lock = read_toml(path)
    packages = _packages(lock, path)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for package in packages:
        by_name.setdefault(canonicalize_name(package["name"]), []).append(package)
    roots = list(root_edges(pyproject, extras, groups, path))
    # Poetry locks nothing for a requirement no allowed Python needs: not missing.
    missing = sorted(
        {
            e.name
            for e in roots
            if canonicalize_name(e.name) not in by_name
            and narrow(frozenset(), e.markers, target, str(path)) is not None
        }
    )
    if missing:
        raise ConfigError(
            f"{path} is out of date with {root / 'pyproject.toml'}: it has no "
            f"{', '.join(f'`{m}`' for m in missing)}, which pyproject.toml requires.",
            hint="Run `poetry lock` and commit the new poetry.lock.",
        )
    files = lock.get("metadata", {}).get("files", {})
    legacy: dict[str, Any] = {}
    if isinstance(files, dict):  # lock 1.x: hashes in [metadata.files]
        legacy = {canonicalize_name(k): v for k, v in files.items()}
    conditions = _walk(roots, by_name, target, str(path))
    chosen = [
        _locked(package, legacy, str(path), conditions[id(package)])
        for package in packages
        if id(package) in conditions
    ]
    return Selection(tuple(chosen))


def pins(path: Path) -> Pins:
    """Every version the lock pins."""
    return pins_of((p["name"], p.get("version")) for p in _packages(read_toml(path), path))


def _packages(lock: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    version = str(lock.get("metadata", {}).get("lock-version", ""))
    if not re.match(r"^[12]\.\d+$", version):
        raise bad_lock(path, f"lock-version {version or '(none)'} is not 1.x or 2.x", "poetry lock")
    packages = lock.get("package", [])
    if not isinstance(packages, list) or not all(
        isinstance(p, dict) and isinstance(p.get("name"), str) for p in packages
    ):
        raise bad_lock(
            path, "`package` must be a list of [[package]] tables with a name", "poetry lock"
        )
    return packages


def root_edges(
    pyproject: dict[str, Any], extras: tuple[str, ...], groups: tuple[str, ...], where: Path
) -> Iterator[_Edge]:
    """The project's requirements for the main group, `groups` and `extras`: Poetry 2's
    [project] tables when [project] lists dependencies, else [tool.poetry]'s."""
    poetry = pyproject.get("tool", {}).get("poetry", {})
    project = pyproject.get("project", {})
    pep621 = "dependencies" in project
    main = poetry.get("dependencies", {})
    if pep621:
        yield from (_pep508(text, where) for text in project.get("dependencies", []))
    else:
        yield from _poetry_edges(main, where, optional=False)
    available = _extras(poetry, project)
    for extra in extras:
        if extra not in available:
            raise ConfigError(
                f"`tool.pydeploy.dependencies.extras` names {extra!r}, which "
                f"{where.parent / 'pyproject.toml'} does not define"
                + (f" (it has {', '.join(sorted(available))})." if available else "."),
                hint="Use an extra of [tool.poetry.extras] or [project.optional-dependencies].",
            )
        if pep621 and extra in project.get("optional-dependencies", {}):
            yield from (_pep508(text, where) for text in project["optional-dependencies"][extra])
            continue
        named = {canonicalize_name(n) for n in available[extra]}
        optional = {k: v for k, v in main.items() if canonicalize_name(k) in named}
        yield from _poetry_edges(optional, where, optional=True)
    for group in groups:
        yield from _group_edges(pyproject, poetry, group, where)


def _extras(poetry: dict[str, Any], project: dict[str, Any]) -> dict[str, list[str]]:
    found = {str(k): [str(n) for n in v] for k, v in poetry.get("extras", {}).items()}
    for extra, texts in project.get("optional-dependencies", {}).items():
        found[str(extra)] = [str(t) for t in texts]
    return found


def _group_edges(
    pyproject: dict[str, Any], poetry: dict[str, Any], group: str, where: Path
) -> Iterator[_Edge]:
    table = poetry.get("group", {}).get(group, {}).get("dependencies")
    if table is None and group == "dev":
        table = poetry.get("dev-dependencies")  # Poetry < 1.2
    if table is not None:
        yield from _poetry_edges(table, where, optional=False)
        return
    pep735 = pyproject.get("dependency-groups", {}).get(group)
    if pep735 is not None:
        yield from (_pep508(t, where) for t in pep735 if isinstance(t, str))
        return
    known = sorted({*poetry.get("group", {}), *pyproject.get("dependency-groups", {})})
    raise ConfigError(
        f"`tool.pydeploy.dependencies.groups` names {group!r}, which "
        f"{where.parent / 'pyproject.toml'} does not define"
        + (f" (it has {', '.join(known)})." if known else "."),
        hint="Use a group of [tool.poetry.group.<name>.dependencies].",
    )


def _poetry_edges(table: dict[str, Any], where: Path, *, optional: bool) -> Iterator[_Edge]:
    """[tool.poetry.dependencies]-shaped entries; `optional = true` ones only when
    `optional` (an extra named them), the others only when not."""
    for name, spec in table.items():
        if canonicalize_name(name) == "python":
            continue
        for constraint in spec if isinstance(spec, list) else [spec]:
            if isinstance(constraint, dict) and bool(constraint.get("optional")) != optional:
                continue
            if not isinstance(constraint, dict) and optional:
                continue
            yield _edge(name, constraint, str(where))


def _edge(name: str, spec: object, where: str) -> _Edge:
    """A Poetry dependency (a version string or a table) as an edge."""
    table: dict[str, Any] = spec if isinstance(spec, dict) else {"version": spec}
    markers = [str(table["markers"])] if table.get("markers") else []
    if table.get("python"):
        markers.append(python_marker(_poetry_range(str(table["python"]), where, name)))
    if table.get("platform"):
        markers.append(f'sys_platform == "{table["platform"]}"')
    version = table.get("version")
    versions = None
    if isinstance(version, str):
        try:
            versions = poetry_specifiers(version)
        except ValueError:
            versions = None  # a form pydeploy does not read: any locked version will do
    extras = frozenset(str(e) for e in table.get("extras", []) or [])
    return _Edge(name, extras, tuple(markers), versions)


def _poetry_range(text: str, where: str, name: str) -> tuple[SpecifierSet, ...]:
    try:
        return poetry_specifiers(text)
    except ValueError:
        raise ConfigError(
            f"{where}: the `python` constraint {text!r} of `{name}` is not a version range.",
            hint="Use Poetry's syntax such as `>=3.9` or `<3.11`.",
        ) from None


def _pep508(text: str, where: Path) -> _Edge:
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise ConfigError(
            f"{where.parent / 'pyproject.toml'}: {text!r} is not a requirement ({exc})."
        ) from None
    markers = (str(requirement.marker),) if requirement.marker else ()
    versions = (requirement.specifier,) if requirement.specifier else None
    return _Edge(requirement.name, frozenset(requirement.extras), markers, versions)


def _walk(
    roots: list[_Edge], by_name: dict[str, list[dict[str, Any]]], target: Target, where: str
) -> dict[int, Conditions]:
    """Each reached package (by id) with the conditions it was reached under."""
    reached: dict[int, Conditions] = {}
    expanded: dict[tuple[int, str], Conditions] = {}
    todo: list[tuple[_Edge, frozenset[str]]] = [(edge, frozenset()) for edge in roots]
    while todo:
        edge, condition = todo.pop()
        narrowed = narrow(condition, edge.markers, target, where)
        if narrowed is None:
            continue
        # A dependency no allowed Python needs is not locked (Poetry drops it).
        candidates = by_name.get(canonicalize_name(edge.name), [])
        for package, extra_condition in _entries(edge, candidates, target, where):
            here = narrowed | extra_condition
            reached.setdefault(id(package), Conditions()).add(here)
            for part in ("", *sorted(edge.extras)):
                if expanded.setdefault((id(package), part), Conditions()).add(here):
                    todo += [(dep, here) for dep in _dependencies(package, part, where)]
    return reached


def _entries(
    edge: _Edge, candidates: list[dict[str, Any]], target: Target, where: str
) -> Iterator[tuple[dict[str, Any], frozenset[str]]]:
    """The locked entries an edge may mean: one, or (a name locked at several versions,
    one per Python range) those its version range allows, each under its own
    `python-versions`."""
    if len(candidates) <= 1:
        yield from ((c, frozenset()) for c in candidates)
        return
    fitting = [c for c in candidates if _fits(edge.versions, c.get("version"))] or candidates
    for candidate in fitting:
        python = candidate.get("python-versions")
        if not isinstance(python, str) or python.strip() in {"", "*"}:
            yield candidate, frozenset()
            continue
        narrowed = narrow(
            frozenset(), [python_marker(_poetry_range(python, where, edge.name))], target, where
        )
        if narrowed is not None:
            yield candidate, narrowed


def _fits(versions: tuple[SpecifierSet, ...] | None, version: object) -> bool:
    if versions is None or not isinstance(version, str):
        return True
    try:
        parsed = Version(version)
    except InvalidVersion:
        return True
    return any(s.contains(parsed, prereleases=True) for s in versions)


def _dependencies(package: dict[str, Any], extra: str, where: str) -> list[_Edge]:
    """The edges out of a locked package: its required dependencies (`extra` ""), or the
    optional ones its extra `extra` names."""
    table = package.get("dependencies", {})
    if not isinstance(table, dict):
        raise bad_lock(
            where, f"`{package['name']}` has a `dependencies` that is not a table", "poetry lock"
        )
    if not extra:
        return [
            _edge(name, c, where)
            for name, spec in table.items()
            for c in (spec if isinstance(spec, list) else [spec])
            if not (isinstance(c, dict) and c.get("optional"))
        ]
    wanted: dict[str, frozenset[str]] = {}
    for text in package.get("extras", {}).get(extra, []):
        match = _EXTRA_NAME.match(str(text))
        if match:
            asked = frozenset(e.strip() for e in (match[2] or "").split(",") if e.strip())
            wanted[canonicalize_name(match[1])] = asked
    edges = []
    for name, spec in table.items():
        if canonicalize_name(name) in wanted:
            for c in spec if isinstance(spec, list) else [spec]:
                found = _edge(name, c, where)
                edges.append(
                    _Edge(
                        found.name,
                        found.extras | wanted[canonicalize_name(name)],
                        found.markers,
                        found.versions,
                    )
                )
    return edges


def _locked(
    package: dict[str, Any], legacy: dict[str, Any], where: str, conditions: Conditions
) -> Locked:
    name, version = package["name"], package.get("version")
    source = package.get("source", {}) or {}
    kind, url = source.get("type"), source.get("url")
    marker = conditions.marker()
    files = package.get("files")
    if files is None:
        files = legacy.get(canonicalize_name(name), [])
    hashes = hashes_of((str(f.get("hash", "")) for f in files if isinstance(f, dict)), where, name)
    if kind in {"directory", "file"} and isinstance(url, str):
        return Locked(name, version, path=url, marker=marker)
    if kind == "git" and isinstance(url, str):
        commit = source.get("resolved_reference") or source.get("reference")
        return Locked(
            name,
            version,
            url=vcs_url("git", url, commit, source.get("subdirectory")),
            marker=marker,
        )
    if kind == "url" and isinstance(url, str):
        return Locked(name, version, hashes, url=url, marker=marker)
    return Locked(name, version, hashes, marker=marker)
