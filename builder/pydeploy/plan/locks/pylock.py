"""pylock.toml (PEP 751) as requirement lines: `name==version` for index packages, a
direct reference for archives and VCS, the relative path for local directories. uv
resolves them together with the server packages (the lock's own dependency edges are not
read), as before this package existed."""

from __future__ import annotations

from pydeploy.config.project import lock_entries
from pydeploy.config.toml import parse_toml
from pydeploy.errors import ConfigError
from pydeploy.plan.locks.common import local_ref

LOCK = "pylock.toml"


def parse_pylock(text: str, where: str = "pylock.toml") -> list[str]:
    """PEP 751 packages as requirement lines: `name==version` for index packages, a
    direct reference for archives and VCS, the relative path for local directories."""
    lines: list[str] = []
    for package in lock_entries(parse_toml(text, where), "pylock.toml", where):
        name = package.get("name")
        if not isinstance(name, str):
            raise ConfigError(f"{where}: a [[packages]] entry has no `name`.")
        marker = f" ; {package['marker']}" if package.get("marker") else ""
        if "directory" in package:
            path = package["directory"].get("path")
            if not path:
                raise ConfigError(f"{where}: package `{name}` has a `directory` without `path`.")
            lines.append(local_ref(path) + marker)
        elif "vcs" in package:
            vcs = package["vcs"]
            url = vcs.get("url") or local_ref(str(vcs.get("path", "")))
            commit = vcs.get("commit-id") or vcs.get("requested-revision", "")
            ref = f"{vcs.get('type', 'git')}+{url}" + (f"@{commit}" if commit else "")
            sub = vcs.get("subdirectory")
            lines.append(f"{name} @ {ref}" + (f"#subdirectory={sub}" if sub else "") + marker)
        elif "archive" in package:
            archive = package["archive"]
            ref = archive.get("url") or local_ref(str(archive.get("path", "")))
            lines.append(f"{name} @ {ref}" + marker)
        elif package.get("version"):
            lines.append(f"{name}=={package['version']}{marker}")
        else:
            # wheels/sdist given only by URL or path (no index version): use the first.
            files = [
                *package.get("wheels", []),
                *([package["sdist"]] if "sdist" in package else []),
            ]
            refs = [f.get("url") or local_ref(str(f.get("path", ""))) for f in files]
            if not refs:
                raise ConfigError(
                    f"{where}: package `{name}` has no version, directory, vcs, archive, "
                    "wheels or sdist."
                )
            lines.append(f"{name} @ {refs[0]}{marker}")
    return lines


def pylock_paths(text: str, where: str) -> list[str]:
    paths: list[str] = []
    for package in lock_entries(parse_toml(text, where), "pylock.toml", where):
        for key in ("directory", "archive", "sdist"):
            entry = package.get(key)
            if isinstance(entry, dict) and entry.get("path"):
                paths.append(str(entry["path"]))
        paths += [str(w["path"]) for w in package.get("wheels", []) if w.get("path")]
    return paths
