"""pdm.lock (lock format 4.x) as the packages `pdm install --prod` installs, or with the
groups and extras asked for.

PDM 2.11+ writes each package's `groups` and its `marker` (strategy `inherit_metadata`,
the default), so no graph needs walking: a package is installed when one of its groups
is selected and its marker holds for the target. PDM names extras as groups too."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

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
    vcs_url,
)

LOCK = "pdm.lock"
DEFAULT_GROUP = "default"


def read(
    root: Path,
    pyproject: dict[str, Any],
    extras: tuple[str, ...],
    groups: tuple[str, ...],
    target: Target,
) -> Selection:
    """The packages root/pdm.lock installs for the default group, `groups` and `extras`."""
    path = root / LOCK
    lock = read_toml(path)
    metadata = lock.get("metadata", {})
    version = str(metadata.get("lock_version", ""))
    if not re.match(r"^4\.", version):
        raise bad_lock(
            path,
            f"lock_version {version or '(none)'} is older than 4.0, which pydeploy reads "
            "(it has no per-package groups and markers)",
            "pdm lock --update-reuse",
        )
    packages = lock.get("package", [])
    if not isinstance(packages, list) or not all(
        isinstance(p, dict) and isinstance(p.get("name"), str) for p in packages
    ):
        raise bad_lock(
            path, "`package` must be a list of [[package]] tables with a name", "pdm lock"
        )
    locked_groups = [str(g) for g in metadata.get("groups", [DEFAULT_GROUP])]
    wanted = {DEFAULT_GROUP, *extras, *groups}
    for name in sorted(wanted - set(locked_groups)):
        key = "extras" if name in extras else "groups"
        raise ConfigError(
            f"`tool.pydeploy.dependencies.{key}` names {name!r}, but {path} was locked "
            f"without it (its groups: {', '.join(locked_groups)}).",
            hint=f"Run `pdm lock -G {name}` (or fix the name).",
        )
    if any("groups" not in p for p in packages):
        raise bad_lock(
            path,
            "its packages carry no `groups` (a lock written without the inherit_metadata strategy)",
            "pdm lock --strategy inherit_metadata",
        )
    _check_fresh(path, pyproject, packages)
    chosen = []
    for package in packages:
        if not wanted & {str(g) for g in package["groups"]}:
            continue
        marker = str(package.get("marker") or "")
        condition = narrow(frozenset(), [marker], target, str(path))
        if condition is None:
            continue
        conditions = Conditions()
        conditions.add(condition)
        chosen.append(_locked(package, str(path), conditions.marker()))
    return Selection(tuple(chosen))


def pins(path: Path) -> Pins:
    """Every version the lock pins."""
    entries = read_toml(path).get("package", [])
    return pins_of((p.get("name"), p.get("version")) for p in entries if isinstance(p, dict))


def _check_fresh(path: Path, pyproject: dict[str, Any], packages: list[dict[str, Any]]) -> None:
    """Every [project].dependencies name is locked (else the lock predates pyproject.toml)."""
    locked = {canonicalize_name(p["name"]) for p in packages}
    missing = []
    for text in pyproject.get("project", {}).get("dependencies", []):
        try:
            name = canonicalize_name(Requirement(str(text)).name)
        except InvalidRequirement:
            continue  # pyproject.toml's own validation reports it
        if name not in locked:
            missing.append(name)
    if missing:
        raise ConfigError(
            f"{path} is out of date with {path.parent / 'pyproject.toml'}: it has no "
            f"{', '.join(f'`{m}`' for m in missing)}, which [project].dependencies requires.",
            hint="Run `pdm lock` and commit the new pdm.lock.",
        )


def _locked(package: dict[str, Any], where: str, marker: str | None) -> Locked:
    name, version = package["name"], package.get("version")
    files = package.get("files", [])
    hashes = hashes_of((str(f.get("hash", "")) for f in files if isinstance(f, dict)), where, name)
    if isinstance(package.get("path"), str):
        return Locked(name, version, path=package["path"], marker=marker)
    if isinstance(package.get("git"), str):
        commit = package.get("revision") or package.get("ref")
        url = vcs_url("git", package["git"], commit, package.get("subdirectory"))
        return Locked(name, version, url=url, marker=marker)
    if isinstance(package.get("url"), str):
        return Locked(name, version, hashes, url=package["url"], marker=marker)
    return Locked(name, version, hashes, marker=marker)
