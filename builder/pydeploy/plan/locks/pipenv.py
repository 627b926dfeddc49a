"""Pipfile.lock as the packages `pipenv install --deploy` installs: the `default`
section. `develop` (Pipfile's [dev-packages]) only when `groups` names `develop` or
`dev-packages`, another category (Pipenv 2022.10+) when `groups` names it. The lock is
flat: every package with its version, hashes and markers, git and path sources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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

LOCK = "Pipfile.lock"
PIPFILE = "Pipfile"
# Pipfile's table names for the lock's sections.
_SECTIONS = {"default": "packages", "develop": "dev-packages"}
_GROUP_ALIASES = {"dev-packages": "develop", "dev": "develop", "packages": "default"}


def read(root: Path, groups: tuple[str, ...], target: Target) -> Selection:
    """The packages root/Pipfile.lock installs for `default` and `groups`."""
    path = root / LOCK
    lock = _load(path)
    lock.setdefault("default", {})
    sections = ["default"]
    for group in groups:
        section = _GROUP_ALIASES.get(group, group)
        if section == "_meta" or not isinstance(lock.get(section), dict):
            known = sorted(k for k in lock if k != "_meta")
            raise ConfigError(
                f"`tool.pydeploy.dependencies.groups` names {group!r}, which {path} has "
                f"no section for (it has {', '.join(known)}).",
                hint="Use `develop` for [dev-packages], or a Pipfile category.",
            )
        sections.append(section)
    _check_fresh(root, lock)
    chosen = []
    for section in dict.fromkeys(sections):
        for name, entry in sorted(lock[section].items()):
            if not isinstance(entry, dict):
                raise bad_lock(path, f"`{section}.{name}` is not an object", "pipenv lock")
            condition = narrow(frozenset(), [str(entry.get("markers") or "")], target, str(path))
            if condition is None:
                continue
            conditions = Conditions()
            conditions.add(condition)
            chosen.append(_locked(name, entry, str(path), conditions.marker()))
    return Selection(tuple(chosen))


def pins(path: Path) -> Pins:
    """Every version the lock pins, in any section."""
    lock = _load(path)
    return pins_of(
        (name, str(entry.get("version", "")).removeprefix("=="))
        for key, section in lock.items()
        if key != "_meta" and isinstance(section, dict)
        for name, entry in section.items()
        if isinstance(entry, dict)
    )


def _load(path: Path) -> dict[str, Any]:
    try:
        lock = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise bad_lock(path, f"not readable as JSON ({exc})", "pipenv lock") from None
    if not isinstance(lock, dict) or not isinstance(lock.get("default", {}), dict):
        raise bad_lock(path, "it has no `default` section", "pipenv lock")
    return lock


def _check_fresh(root: Path, lock: dict[str, Any]) -> None:
    """Every package the Pipfile names is in its lock section (else the lock predates it)."""
    pipfile = root / PIPFILE
    if not pipfile.is_file():
        return
    data = read_toml(pipfile)
    for section, table in _SECTIONS.items():
        locked = {canonicalize_name(n) for n in lock.get(section, {}) or {}}
        missing = sorted(n for n in data.get(table, {}) if canonicalize_name(n) not in locked)
        if missing:
            raise ConfigError(
                f"{root / LOCK} is out of date with {pipfile}: [{table}] names "
                f"{', '.join(f'`{m}`' for m in missing)}, which the lock does not hold.",
                hint="Run `pipenv lock` and commit the new Pipfile.lock.",
            )


def _locked(name: str, entry: dict[str, Any], where: str, marker: str | None) -> Locked:
    version = str(entry.get("version", "")).removeprefix("==") or None
    hashes = hashes_of((str(h) for h in entry.get("hashes", [])), where, name)
    if isinstance(entry.get("path"), str):
        # `editable = true` too: an image holds no editable installs.
        return Locked(name, version, path=entry["path"], marker=marker)
    if isinstance(entry.get("git"), str):
        url = vcs_url("git", entry["git"], entry.get("ref"), entry.get("subdirectory"))
        return Locked(name, version, url=url, marker=marker)
    if isinstance(entry.get("file"), str):
        return Locked(name, version, hashes, url=entry["file"], marker=marker)
    return Locked(name, version, hashes, marker=marker)
