"""What pydeploy knows about a project from its files alone: metadata, locks, Python
version constraints, git revision. Reads, never writes; needs no engine.

Metadata comes from `[project]` (PEP 621, also Poetry 2), else `[tool.poetry]` (Poetry 1),
else nothing: a pyproject.toml holding only `[tool.pydeploy]` is a project too, named by
`tool.pydeploy.name` or its directory and versioned by git."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from pydeploy import fastpath
from pydeploy.config import workspace
from pydeploy.config.models import PYPROJECT, PydeployConfig, load_config, read_pyproject
from pydeploy.config.toml import read_toml
from pydeploy.errors import ConfigError

# Newest first; the default is the newest one with broad wheel coverage today.
KNOWN_PYTHONS = ("3.14", "3.13", "3.12", "3.11", "3.10")
DEFAULT_PYTHON = "3.13"


# The lock files a project directory may hold, in `auto`'s order of precedence.
LOCK_FILES = ("uv.lock", "pylock.toml", "poetry.lock", "pdm.lock", "Pipfile.lock")
# The production requirements file of the common layouts, first found wins:
# `requirements-dev.txt`, `requirements/test.txt` and the like are never guessed.
PRODUCTION_REQUIREMENTS = (
    "requirements.txt",
    "requirements/production.txt",
    "requirements/prod.txt",
)


# Where a project's metadata was written: [project], [tool.poetry], or nowhere.
Metadata = Literal["project", "poetry", "none"]
REQUIRES_PYTHON = "project.requires-python"
POETRY_PYTHON = "tool.poetry.dependencies.python"


@dataclass(frozen=True)
class PythonConstraint:
    """The Python versions a project's metadata allows. `text` as written under `key`
    (`project.requires-python` or `tool.poetry.dependencies.python`); `alternatives` are
    PEP 440 specifier sets of which a version must satisfy one (Poetry's `||`)."""

    text: str
    key: str
    alternatives: tuple[SpecifierSet, ...]

    def allows(self, version: str) -> bool:
        """Whether Python `version` (`3.12` or `3.12.4`) is allowed."""
        wanted = Version(version if version.count(".") >= 2 else f"{version}.0")
        return any(spec.contains(wanted, prereleases=True) for spec in self.alternatives)

    def __str__(self) -> str:
        return " || ".join(str(spec) or "*" for spec in self.alternatives)


@dataclass(frozen=True)
class Project:
    """A project directory and everything read from it.

    `name` is the metadata name ([project] or [tool.poetry]), else `tool.pydeploy.name`,
    else the directory's name; `version` the metadata version, else the git description
    (for a project without metadata), else `latest`. `*_origin` say which."""

    root: Path
    name: str
    version: str
    python_constraint: PythonConstraint | None
    dependencies: tuple[str, ...]
    has_build_system: bool
    description: str
    source_url: str | None
    config: PydeployConfig
    python_version_file: str | None
    lock_files: tuple[str, ...] = field(default=())
    requirements_files: tuple[str, ...] = field(default=())
    workspace_root: Path | None = None
    metadata: Metadata = "project"
    name_origin: str = "project.name"
    version_origin: str = "project.version"
    python_version_path: Path | None = None

    @property
    def pyproject(self) -> Path:
        return self.root / PYPROJECT

    @property
    def requires_python(self) -> str | None:
        """The Python constraint as written, or None."""
        return self.python_constraint.text if self.python_constraint else None


def find_project_root(start: Path) -> Path:
    """The directory holding pyproject.toml: `start` itself or its nearest ancestor."""
    start = start.resolve()
    for candidate in (start, *start.parents):
        if (candidate / PYPROJECT).is_file():
            return candidate
    raise ConfigError(
        f"No {PYPROJECT} in {start} or any parent directory: pydeploy reads its settings "
        f"from a [tool.pydeploy] table in {PYPROJECT}.",
        hint=f"Run `pydeploy init {start}` to create one (it detects the app), then "
        "`pydeploy plan`.",
    )


def load_project(directory: Path) -> Project:
    """Load a project: its metadata (if any) plus its validated [tool.pydeploy]."""
    root = directory.resolve()
    if not root.is_dir():
        raise ConfigError(f"{directory} is not a directory.", hint="Pass a project directory.")
    if (root / PYPROJECT).is_file():
        problem = workspace.root_problem(root, read_pyproject(root))
        if problem is not None:
            raise problem
    data, config = load_config(root)
    meta = read_metadata(data, root, config)
    project = data.get("project", {})
    urls: dict[str, Any] = project.get("urls", {}) or {}
    source = next(
        (
            str(urls[key])
            for key in urls
            if key.lower() in {"source", "repository", "source code", "code", "homepage"}
        ),
        None,
    )
    version_path = find_python_version_file(root)
    return Project(
        root=root,
        name=meta.name,
        version=meta.version,
        python_constraint=meta.python,
        dependencies=tuple(project.get("dependencies", []) or []),
        has_build_system="build-system" in data,
        description=meta.description,
        source_url=source,
        config=config,
        python_version_file=_read_python_version(version_path) if version_path else None,
        lock_files=tuple(n for n in LOCK_FILES if (root / n).is_file()),
        requirements_files=production_requirements(root),
        workspace_root=_workspace_root(root),
        metadata=meta.kind,
        name_origin=meta.name_origin,
        version_origin=meta.version_origin,
        python_version_path=version_path,
    )


def production_requirements(root: Path) -> tuple[str, ...]:
    """The production requirements file (PRODUCTION_REQUIREMENTS), or none."""
    return next(((n,) for n in PRODUCTION_REQUIREMENTS if (root / n).is_file()), ())


def other_requirements(root: Path) -> tuple[str, ...]:
    """Requirements files that are not production_requirements (`requirements-dev.txt`,
    `requirements/base.txt`): never used unless `dependencies.requirements` names them."""
    found = {p.name for p in root.glob("requirements*.txt")}
    found |= {f"requirements/{p.name}" for p in root.glob("requirements/*.txt")}
    return tuple(sorted(found - set(production_requirements(root))))


@dataclass(frozen=True)
class ProjectMetadata:
    """Name, version and Python constraint, and where each came from."""

    kind: Metadata
    name: str
    name_origin: str
    version: str
    version_origin: str
    python: PythonConstraint | None
    description: str


def read_metadata(data: dict[str, Any], root: Path, config: PydeployConfig) -> ProjectMetadata:
    """The metadata of the pyproject `data` at `root`: [project] (PEP 621, Poetry 2), else
    [tool.poetry] (Poetry 1), else the directory name (or `tool.pydeploy.name`) and git."""
    where = root / PYPROJECT
    poetry: dict[str, Any] = data.get("tool", {}).get("poetry", {})
    if "project" in data:
        project = data["project"]
        name = project.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"{where} has a [project] table without `project.name`.",
                hint="Add `name` (and `version`) to [project] (PEP 621), or remove the "
                "empty table: a pyproject.toml holding only [tool.pydeploy] is valid too.",
            )
        version, version_origin = project.get("version"), "project.version"
        if not isinstance(version, str) and "version" in project.get("dynamic", []):
            # Poetry 2 keeps a dynamic version in [tool.poetry]; other backends compute it.
            version, version_origin = poetry.get("version"), "tool.poetry.version"
        if not isinstance(version, str):
            version, version_origin = "latest", "default: project.version is dynamic"
        python = _python_constraint(project.get("requires-python"), REQUIRES_PYTHON, where)
        python = python or _python_constraint(_poetry_python(poetry), POETRY_PYTHON, where)
        return ProjectMetadata(
            "project",
            name,
            "project.name",
            version,
            version_origin,
            python,
            str(project.get("description", "")),
        )
    if isinstance(poetry.get("name"), str) and poetry["name"]:
        version = poetry.get("version")
        if isinstance(version, str) and version:
            version_origin = "tool.poetry.version"
        else:
            version, version_origin = _git_version(root)
        return ProjectMetadata(
            "poetry",
            poetry["name"],
            "tool.poetry.name",
            version,
            version_origin,
            _python_constraint(_poetry_python(poetry), POETRY_PYTHON, where),
            str(poetry.get("description", "")),
        )
    name, name_origin = (
        (config.name, "tool.pydeploy.name") if config.name else (root.name, "directory name")
    )
    version, version_origin = _git_version(root)
    return ProjectMetadata("none", name, name_origin, version, version_origin, None, "")


def _git_version(root: Path) -> tuple[str, str]:
    """A tag for a project without a version: `git describe` (the nearest tag and the
    commits since, or the short commit; `-dirty` with uncommitted changes), else latest."""
    described = _git(root, "describe", "--tags", "--always", "--dirty")
    tag = re.sub(r"[^A-Za-z0-9_.-]", "-", described or "").lstrip(".-")[:128]
    return (tag, "git describe") if tag else ("latest", "default: not a git checkout")


def _poetry_python(poetry: dict[str, Any]) -> object:
    """`[tool.poetry.dependencies].python`: a string, or a table with `version`."""
    value = poetry.get("dependencies", {}).get("python")
    return value.get("version") if isinstance(value, dict) else value


def _python_constraint(value: object, key: str, where: Path) -> PythonConstraint | None:
    if value is None:
        return None

    def bad() -> ConfigError:
        syntax = "PEP 440 syntax such as `>=3.11`"
        if key == POETRY_PYTHON:
            syntax = "Poetry's syntax such as `^3.11`, `~3.11` or `>=3.11,<4`"
        return ConfigError(
            f"{where}: `{key}` = {value!r} is not a valid version constraint.",
            hint=f"Use {syntax}.",
        )

    if not isinstance(value, str):
        raise bad()
    try:
        if key == REQUIRES_PYTHON:
            alternatives: tuple[SpecifierSet, ...] = (SpecifierSet(value),)
        else:
            alternatives = poetry_specifiers(value)
    except (InvalidSpecifier, InvalidVersion, ValueError):
        raise bad() from None
    return PythonConstraint(value, key, alternatives)


_POETRY_OPERATOR = re.compile(r"(\^|~=|~|===|==|!=|>=|<=|>|<|=)\s+")
_RELEASE = re.compile(r"^\d+(\.\d+)*$")


def poetry_specifiers(text: str) -> tuple[SpecifierSet, ...]:
    """A Poetry version constraint as PEP 440 specifier sets, any of which may match:
    `^3.9` -> `>=3.9,<4.0`, `~3.9` -> `>=3.9,<3.10`, `3.9` -> `==3.9.*`, `*` -> any, `,` or
    a space between parts (and), `||` between alternatives (or). ValueError when invalid.
    A bare `3.9` (or `==3.9`) is the 3.9 line, which is what it means for a Python."""
    alternatives: list[SpecifierSet] = []
    for alternative in re.split(r"\|\|?", text):
        parts = _POETRY_OPERATOR.sub(r"\1", alternative.strip())
        specifiers = [_poetry_part(p) for p in re.split(r"[,\s]+", parts) if p]
        alternatives.append(SpecifierSet(",".join(s for s in specifiers if s)))
    return tuple(alternatives)


def _poetry_part(part: str) -> str:
    if part in {"*", "x"}:
        return ""
    for operator in ("^", "~"):
        if part.startswith(operator) and not part.startswith("~="):
            release = part[1:]
            if not _RELEASE.match(release):
                raise ValueError(part)
            numbers = [int(n) for n in release.split(".")]
            if operator == "^":
                # The first non-zero component may not change (the last given, if all zero).
                bump = next((i for i, n in enumerate(numbers) if n), len(numbers) - 1)
            else:
                bump = min(1, len(numbers) - 1)  # ~1.2.3 and ~1.2 -> <1.3; ~1 -> <2
            upper = [*numbers[:bump], numbers[bump] + 1]
            return f">={release},<{'.'.join(map(str, upper))}"
    if part.startswith("=") and not part.startswith("=="):
        part = "=" + part
    if re.fullmatch(r"\d+(\.\d+)*\.\*", part):
        return f"=={part}"  # `3.9.*`
    if _RELEASE.match(part.removeprefix("==")):
        # A bare (or `==`) Python release means that release line, as Poetry treats it.
        release = part.removeprefix("==")
        return f"=={release}" if release.count(".") >= 2 else f"=={release}.*"
    return part


def find_python_version_file(root: Path) -> Path | None:
    """The `.python-version` that applies to `root`: its own or an ancestor's, up to the
    repository's top."""
    for directory in (root, *root.parents):
        path = directory / ".python-version"
        if path.is_file():
            return path
        if (directory / ".git").exists():
            break
    return None


def _read_python_version(path: Path) -> str | None:
    for line in read_text(path, "a Python version such as `3.12`").splitlines():
        match = re.match(r"^\s*(?:cpython-|python)?(3\.\d+)", line)
        if match:
            return match[1]
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
    constraint = project.python_constraint
    if config.python:
        version, origin = config.python, "tool.pydeploy.python"
    elif project.python_version_file:
        version, origin = project.python_version_file, ".python-version"
    elif constraint:
        allowed = [v for v in KNOWN_PYTHONS if constraint.allows(v)]
        if not allowed:
            raise ConfigError(
                f"{project.pyproject}: `{constraint.key}` = {constraint.text!r} allows none "
                f"of {', '.join(KNOWN_PYTHONS)}.",
                hint=f"Set `tool.pydeploy.python` or widen {constraint.key}.",
            )
        version = DEFAULT_PYTHON if DEFAULT_PYTHON in allowed else allowed[0]
        origin = "requires-python" if constraint.key == REQUIRES_PYTHON else constraint.key
    else:
        version, origin = DEFAULT_PYTHON, "default"
    check_python_allowed(project, version, origin)
    return version, origin


def check_python_allowed(project: Project, version: str, origin: str) -> None:
    """A version picked by the user or the base image must satisfy the project's Python
    constraint (requires-python, or Poetry's python dependency)."""
    constraint = project.python_constraint
    if constraint is None or constraint.allows(version):
        return
    raise ConfigError(
        f"Python {version} (from {origin}) does not satisfy `{constraint.key}` = "
        f"{constraint.text!r} in {project.pyproject}.",
        hint=f"Pick another `tool.pydeploy.python` / base image, or change {constraint.key}.",
    )


def _git(root: Path, *args: str) -> str | None:
    """stdout of `git -C root ARGS`, or None when git is missing or fails (no repository).
    Through the fast path's runner: a no-change rebuild asks git the same questions."""
    return fastpath.run_git(root, *args)


def git_revision(root: Path) -> str | None:
    """The commit checked out at `root`, or None outside a git repository."""
    rev = _git(root, "rev-parse", "HEAD")
    return rev if rev and re.fullmatch(r"[0-9a-f]{40,64}", rev) else None


def git_commit_time(root: Path) -> int | None:
    """The checked-out commit's time (seconds since 1970), or None outside a repository."""
    text = _git(root, "log", "-1", "--format=%ct")
    return int(text) if text and text.isdigit() else None
