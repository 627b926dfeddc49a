"""What pydeploy knows about a project from its files alone: metadata, locks, Python
version constraints, git revision. Reads, never writes; needs no engine."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from pydeploy.config.models import PYPROJECT, PydeployConfig, load_config
from pydeploy.config.toml import read_toml
from pydeploy.errors import ConfigError

# Newest first; the default is the newest one with broad wheel coverage today.
KNOWN_PYTHONS = ("3.14", "3.13", "3.12", "3.11", "3.10")
DEFAULT_PYTHON = "3.13"


@dataclass(frozen=True)
class Project:
    """A project directory and everything read from it."""

    root: Path
    name: str
    version: str
    requires_python: str | None
    dependencies: tuple[str, ...]
    has_build_system: bool
    description: str
    source_url: str | None
    config: PydeployConfig
    python_version_file: str | None
    lock_files: tuple[str, ...] = field(default=())
    requirements_files: tuple[str, ...] = field(default=())
    workspace_root: Path | None = None

    @property
    def pyproject(self) -> Path:
        return self.root / PYPROJECT


def find_project_root(start: Path) -> Path:
    """The directory holding pyproject.toml: `start` itself or its nearest ancestor."""
    start = start.resolve()
    for candidate in (start, *start.parents):
        if (candidate / PYPROJECT).is_file():
            return candidate
    raise ConfigError(
        f"No {PYPROJECT} in {start} or any parent directory.",
        hint="Run pydeploy inside a Python project, or `pydeploy init` in one.",
    )


def load_project(directory: Path) -> Project:
    """Load a project: pyproject metadata plus its validated [tool.pydeploy]."""
    root = directory.resolve()
    if not root.is_dir():
        raise ConfigError(f"{directory} is not a directory.", hint="Pass a project directory.")
    data, config = load_config(root)
    project = data.get("project", {})
    name = project.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"{root / PYPROJECT} has no `project.name`.",
            hint="Add a [project] table with `name` and `version` (PEP 621).",
        )
    version = project.get("version")
    if not isinstance(version, str):
        # Dynamic versions are computed by the build backend; the image tag falls back.
        version = "latest"
    requires = project.get("requires-python")
    if requires is not None:
        _specifier(requires, root)
    urls: dict[str, Any] = project.get("urls", {}) or {}
    source = next(
        (
            str(urls[key])
            for key in urls
            if key.lower() in {"source", "repository", "source code", "code", "homepage"}
        ),
        None,
    )
    return Project(
        root=root,
        name=name,
        version=version,
        requires_python=requires,
        dependencies=tuple(project.get("dependencies", []) or []),
        has_build_system="build-system" in data,
        description=str(project.get("description", "")),
        source_url=source,
        config=config,
        python_version_file=_read_python_version(root),
        lock_files=tuple(n for n in ("uv.lock", "pylock.toml") if (root / n).is_file()),
        requirements_files=tuple(sorted(p.name for p in root.glob("requirements*.txt"))),
        workspace_root=_workspace_root(root),
    )


def _specifier(text: str, root: Path) -> SpecifierSet:
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise ConfigError(
            f"{root / PYPROJECT}: `project.requires-python` = {text!r} is not a valid "
            "version specifier.",
            hint="Use PEP 440 syntax such as `>=3.11`.",
        ) from None


def _read_python_version(root: Path) -> str | None:
    for directory in (root, *root.parents):
        path = directory / ".python-version"
        if path.is_file():
            for line in read_text(path, "a Python version such as `3.12`").splitlines():
                match = re.match(r"^\s*(?:cpython-|python)?(3\.\d+)", line)
                if match:
                    return match[1]
            return None
        if (directory / ".git").exists():
            break
    return None


def read_text(path: Path, holds: str) -> str:
    """A UTF-8 text file the project holds; ConfigError when it cannot be read as one."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path} is not UTF-8 text.", hint=f"It should hold {holds}; fix or delete it."
        ) from None
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror}.") from None


# The lock tables pydeploy reads and the string fields in them (uv.lock `source` values
# are all strings; pylock.toml's `directory.editable` is a boolean, so not listed).
_LOCK_ENTRIES = {"uv.lock": "package", "pylock.toml": "packages"}
_LOCK_STRINGS = ("name", "version", "marker")
_LOCK_TABLES = {
    "source": ("path", "directory", "editable"),
    "directory": ("path",),
    "vcs": ("url", "path", "type", "commit-id", "requested-revision", "subdirectory"),
    "archive": ("url", "path"),
    "sdist": ("url", "path"),
}


def read_lock(path: Path) -> list[dict[str, Any]]:
    """The package entries of a uv.lock or pylock.toml, checked for the shape pydeploy
    reads; a broken lock is a ConfigError naming the file and the entry."""
    return lock_entries(read_toml(path), path.name, str(path))


def lock_entries(data: dict[str, Any], kind: str, where: str) -> list[dict[str, Any]]:
    """`data`'s package entries (`kind`: uv.lock or pylock.toml) once their shape is checked."""
    key = _LOCK_ENTRIES[kind]
    entries = data.get(key, [])

    def bad(what: str) -> ConfigError:
        return ConfigError(
            f"{where}: {what}.",
            hint=f"Regenerate the lock with the tool that wrote it (it is not a valid {kind}).",
        )

    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise bad(f"`{key}` must be a list of [[{key}]] tables")
    for number, entry in enumerate(entries, 1):
        label = f"[[{key}]] entry {number}"
        for name in _LOCK_STRINGS:
            if name in entry and not isinstance(entry[name], str):
                raise bad(f"{label}: `{name}` must be a string")
        wheels = entry.get("wheels", [])
        if not isinstance(wheels, list) or not all(isinstance(w, dict) for w in wheels):
            raise bad(f"{label}: `wheels` must be a list of tables")
        tables = [(name, entry[name]) for name in _LOCK_TABLES if name in entry]
        for name, table in [*tables, *(("wheels", w) for w in wheels)]:
            if not isinstance(table, dict):
                raise bad(f"{label}: `{name}` must be a table")
            for field_name in _LOCK_TABLES.get(name, ("url", "path")):
                if field_name in table and not isinstance(table[field_name], str):
                    raise bad(f"{label}: `{name}.{field_name}` must be a string")
    return entries


def _workspace_root(root: Path) -> Path | None:
    """The uv workspace root above `root` (a pyproject with [tool.uv.workspace])."""
    from pydeploy.config.models import read_pyproject  # noqa: PLC0415 - avoid a cycle at import

    for directory in root.parents:
        if (directory / PYPROJECT).is_file():
            try:
                data = read_pyproject(directory)
            except ConfigError:
                return None
            if "workspace" in data.get("tool", {}).get("uv", {}):
                return directory
    return None


def resolve_python(project: Project) -> tuple[str, str]:
    """Decide the Python version and say where the decision came from."""
    config = project.config
    if config.python:
        version, origin = config.python, "tool.pydeploy.python"
    elif project.python_version_file:
        version, origin = project.python_version_file, ".python-version"
    elif project.requires_python:
        spec = _specifier(project.requires_python, project.root)
        allowed = [v for v in KNOWN_PYTHONS if spec.contains(Version(f"{v}.0"), prereleases=True)]
        if not allowed:
            raise ConfigError(
                f"{project.pyproject}: `project.requires-python` = "
                f"{project.requires_python!r} allows none of {', '.join(KNOWN_PYTHONS)}.",
                hint="Set `tool.pydeploy.python` or widen requires-python.",
            )
        version = DEFAULT_PYTHON if DEFAULT_PYTHON in allowed else allowed[0]
        origin = "requires-python"
    else:
        version, origin = DEFAULT_PYTHON, "default"
    check_python_allowed(project, version, origin)
    return version, origin


def check_python_allowed(project: Project, version: str, origin: str) -> None:
    """A version picked by the user or the base image must satisfy requires-python."""
    if not project.requires_python:
        return
    spec = _specifier(project.requires_python, project.root)
    if not spec.contains(Version(version if version.count(".") == 2 else f"{version}.0")):
        raise ConfigError(
            f"Python {version} (from {origin}) does not satisfy `project.requires-python` = "
            f"{project.requires_python!r} in {project.pyproject}.",
            hint="Pick another `tool.pydeploy.python` / base image, or change requires-python.",
        )


def _git(root: Path, *args: str) -> str | None:
    """stdout of `git -C root ARGS`, or None when git is missing or fails (no repository)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_revision(root: Path) -> str | None:
    """The commit checked out at `root`, or None outside a git repository."""
    rev = _git(root, "rev-parse", "HEAD")
    return rev if rev and re.fullmatch(r"[0-9a-f]{40,64}", rev) else None


def git_commit_time(root: Path) -> int | None:
    """The checked-out commit's time (seconds since 1970), or None outside a repository."""
    text = _git(root, "log", "-1", "--format=%ct")
    return int(text) if text and text.isdigit() else None
