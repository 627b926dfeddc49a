"""Everything that decides a dependency set, read on the host: the dependency source
(uv.lock, pylock.toml, requirements files or [project]), the local path packages it names
and their content, the directory the builder mounts, and the key of the set.

Pure: files are read, nothing is run; the builder stage (wheels.py) turns the result into
a venv volume named by `dependency_key`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydeploy.config import PYPROJECT, read_pyproject
from pydeploy.errors import ConfigError
from pydeploy.plan import BuildPlan
from pydeploy.project import Project

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

# Part of every builder image and venv key: bump when the recipe (wheels.py,
# builder_script.py) changes what lands in a builder image or a venv.
RECIPE_VERSION = "1"
UV_VERSION = "0.13.9"

SERVER_PACKAGES: dict[str, tuple[str, ...]] = {
    "gunicorn": ("gunicorn",),
    "gunicorn-uvicorn": ("gunicorn", "uvicorn", "uvicorn-worker"),
    "uvicorn": ("uvicorn",),
    # The interface is only known once the app imports: have both servers ready.
    "auto": ("gunicorn", "uvicorn", "uvicorn-worker"),
}
# Never part of a local package's content hash (caches, VCS, build output).
_HASH_SKIP_DIRS = {
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    "__pycache__",
    "node_modules",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "build",
    "dist",
}


def server_packages(server: str) -> tuple[str, ...]:
    return SERVER_PACKAGES.get(server, SERVER_PACKAGES["auto"])


# --- dependency inputs and key ----------------------------------------------------------


@dataclass(frozen=True)
class DependencyInputs:
    """Everything that decides the dependency set, read on the host."""

    source: str
    mount_root: Path  # host directory mounted read-only at /src
    copies: tuple[str, ...]  # directories (relative to mount_root) the builder copies
    cwd: str  # where tools run, relative to mount_root
    package: str | None = None  # uv --package, for a workspace member
    requirements: tuple[str, ...] = ()  # requirements files, relative to cwd
    requirement_lines: tuple[str, ...] = ()  # pylock.toml, as requirements
    extras: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    digests: tuple[tuple[str, str], ...] = field(default=())  # (what, sha256)


@dataclass
class _Found:
    """What one dependency source contributes to DependencyInputs."""

    cwd: Path
    digests: list[tuple[str, str]]
    local: list[Path] = field(default_factory=list)
    package: str | None = None
    requirements: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()


def dependency_inputs(plan: BuildPlan) -> DependencyInputs:
    """Read (on the host) every input of the dependency set, and where the builder finds
    them: the lowest directory holding the project and its local path packages is
    mounted, and only those directories are copied."""
    project = plan.project
    readers = {"uv.lock": _from_uv_lock, "pylock": _from_pylock, "requirements": _from_requirements}
    found = readers.get(plan.dependency_source, _from_project)(project)
    root = project.root
    local = sorted({p.resolve() for p in found.local if p.exists()})
    digests = found.digests + [
        (f"local:{os.path.relpath(path, root)}", content_digest(path)) for path in local
    ]
    cwd = found.cwd.resolve()
    mount_root = Path(os.path.commonpath([cwd, *local]))
    return DependencyInputs(
        source=plan.dependency_source,
        mount_root=mount_root,
        copies=_outermost([cwd, *local], mount_root),
        cwd=_rel(cwd, mount_root),
        package=found.package,
        requirements=found.requirements,
        requirement_lines=found.lines,
        extras=tuple(project.config.dependencies.extras),
        groups=tuple(project.config.dependencies.groups),
        digests=tuple(sorted(digests)),
    )


def _from_uv_lock(project: Project) -> _Found:
    root = project.root
    lock_dir = root if (root / "uv.lock").is_file() else project.workspace_root
    if lock_dir is None or not (lock_dir / "uv.lock").is_file():
        raise ConfigError(
            "`tool.pydeploy.dependencies.source` is 'uv.lock' but there is no uv.lock in "
            f"{root} or its workspace root.",
            hint="Run `uv lock`, or choose another source.",
        )
    lock = (lock_dir / "uv.lock").read_bytes()
    return _Found(
        cwd=lock_dir,
        digests=[("uv.lock", _sha(lock))],
        local=_uv_lock_paths(lock, lock_dir, project.name),
        # A workspace member is exported from the workspace root by its name.
        package=project.name if lock_dir != root else None,
    )


def _from_pylock(project: Project) -> _Found:
    lock = project.root / "pylock.toml"
    if not lock.is_file():
        raise ConfigError(
            f"`tool.pydeploy.dependencies.source` is 'pylock' but {lock} does not exist.",
            hint="Generate it (e.g. `uv export -o pylock.toml`) or choose another source.",
        )
    text = lock.read_text(encoding="utf-8")
    return _Found(
        cwd=project.root,
        digests=[("pylock.toml", _sha(text.encode()))],
        local=[project.root / p for p in _pylock_paths(text)],
        lines=tuple(parse_pylock(text, str(lock))),
    )


def _from_requirements(project: Project) -> _Found:
    root = project.root
    names = project.config.dependencies.requirements or list(project.requirements_files)
    for name in names:
        if not (root / name).is_file():
            raise ConfigError(
                f"`tool.pydeploy.dependencies.requirements` names {name}, which is not a "
                f"file in {root}.",
                hint="Fix the path (relative to the project directory).",
            )
    found = _Found(cwd=root, digests=[], requirements=tuple(names))
    for path in _requirement_closure([root / name for name in names]):
        found.digests.append(
            (f"requirements:{os.path.relpath(path, root)}", _sha(path.read_bytes()))
        )
        found.local += _requirement_paths(path, root)
    return found


def _from_project(project: Project) -> _Found:
    root = project.root
    data = read_pyproject(root)
    table = data.get("project", {})
    uv = data.get("tool", {}).get("uv", {})
    relevant: dict[str, Any] = {
        "dependencies": table.get("dependencies", []),
        "optional-dependencies": table.get("optional-dependencies", {}),
        "dynamic": table.get("dynamic", []),
        "dependency-groups": data.get("dependency-groups", {}),
        "uv": {"sources": uv.get("sources"), "index": uv.get("index")},
    }
    if "dependencies" in relevant["dynamic"]:
        # Computed by the build backend: only the whole pyproject.toml identifies them.
        relevant["pyproject"] = _sha((root / PYPROJECT).read_bytes())
    found = _Found(
        cwd=root, digests=[("project", _sha(json.dumps(relevant, sort_keys=True).encode()))]
    )
    for spec in (uv.get("sources") or {}).values():
        for entry in spec if isinstance(spec, list) else [spec]:
            if isinstance(entry, dict) and "path" in entry:
                found.local.append(root / str(entry["path"]))
    for requirement in relevant["dependencies"]:
        match = re.search(r"@\s*file://(\S+)", str(requirement))
        if match:
            found.local.append(Path(urllib.parse.unquote(match.group(1))))
    return found


def dependency_key(
    builder_image_id: str,
    inputs: DependencyInputs,
    servers: Iterable[str],
    index: Mapping[str, Any],
) -> str:
    """sha256 over everything that decides the installed venv (and nothing secret)."""
    document = {
        "recipe": RECIPE_VERSION,
        "uv": UV_VERSION,
        "builder": builder_image_id,
        "source": inputs.source,
        "package": inputs.package,
        "requirements": list(inputs.requirements),
        "lines": list(inputs.requirement_lines),
        "extras": sorted(inputs.extras),
        "groups": sorted(inputs.groups),
        "inputs": [list(pair) for pair in inputs.digests],
        "servers": sorted(servers),
        "index": dict(index),
    }
    return _sha(json.dumps(document, sort_keys=True).encode())


def content_digest(path: Path) -> str:
    """sha256 of a file, or of a directory's files (names, bytes, exec bits) skipping
    caches, VCS data and build output."""
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
        return digest.hexdigest()
    for current, dirs, files in os.walk(path):
        dirs[:] = sorted(
            d for d in dirs if d not in _HASH_SKIP_DIRS and not d.endswith(".egg-info")
        )
        for name in sorted(files):
            file = Path(current) / name
            if file.suffix in {".pyc", ".pyo", ".so"} or not file.is_file():
                continue
            digest.update(f"{file.relative_to(path)}\0{os.access(file, os.X_OK)}\0".encode())
            digest.update(_sha(file.read_bytes()).encode())
    return digest.hexdigest()


def parse_pylock(text: str, where: str = "pylock.toml") -> list[str]:
    """PEP 751 packages as requirement lines: `name==version` for index packages, a
    direct reference for archives and VCS, the relative path for local directories."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}.") from None
    lines: list[str] = []
    for package in data.get("packages", []):
        name = package.get("name")
        if not isinstance(name, str):
            raise ConfigError(f"{where}: a [[packages]] entry has no `name`.")
        marker = f" ; {package['marker']}" if package.get("marker") else ""
        if "directory" in package:
            path = str(package["directory"]["path"])
            lines.append(_local_ref(path) + marker)
        elif "vcs" in package:
            vcs = package["vcs"]
            url = vcs.get("url") or _local_ref(str(vcs.get("path", "")))
            commit = vcs.get("commit-id") or vcs.get("requested-revision", "")
            ref = f"{vcs.get('type', 'git')}+{url}" + (f"@{commit}" if commit else "")
            sub = vcs.get("subdirectory")
            lines.append(f"{name} @ {ref}" + (f"#subdirectory={sub}" if sub else "") + marker)
        elif "archive" in package:
            archive = package["archive"]
            ref = archive.get("url") or _local_ref(str(archive.get("path", "")))
            lines.append(f"{name} @ {ref}" + marker)
        elif package.get("version"):
            lines.append(f"{name}=={package['version']}{marker}")
        else:
            # wheels/sdist given only by URL or path (no index version): use the first.
            files = [
                *package.get("wheels", []),
                *([package["sdist"]] if "sdist" in package else []),
            ]
            refs = [f.get("url") or _local_ref(str(f.get("path", ""))) for f in files]
            if not refs:
                raise ConfigError(
                    f"{where}: package `{name}` has no version, directory, vcs, archive, "
                    "wheels or sdist."
                )
            lines.append(f"{name} @ {refs[0]}{marker}")
    return lines


def _local_ref(path: str) -> str:
    return path if path.startswith(("/", ".")) else f"./{path}"


def _pylock_paths(text: str) -> list[str]:
    paths: list[str] = []
    for package in tomllib.loads(text).get("packages", []):
        for key in ("directory", "archive", "sdist"):
            entry = package.get(key)
            if isinstance(entry, dict) and entry.get("path"):
                paths.append(str(entry["path"]))
        paths += [str(w["path"]) for w in package.get("wheels", []) if w.get("path")]
    return paths


def _uv_lock_paths(lock: bytes, lock_dir: Path, project_name: str) -> list[Path]:
    """Local packages in a uv.lock (path/directory/editable sources), except the project."""
    data = tomllib.loads(lock.decode("utf-8"))
    own = _normalize(project_name)
    return [
        lock_dir / str(package["source"][kind])
        for package in data.get("package", [])
        if _normalize(str(package.get("name", ""))) != own
        for kind in ("path", "directory", "editable")
        if kind in package.get("source", {})
    ]


def _requirement_closure(files: list[Path]) -> list[Path]:
    """The requirements files and every file they include (-r) or constrain with (-c)."""
    seen: list[Path] = []
    todo = list(files)
    while todo:
        path = todo.pop(0).resolve()
        if path in seen or not path.is_file():
            continue
        seen.append(path)
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.match(r"^\s*(?:-r|--requirement|-c|--constraint)[\s=]+(\S+)", line)
            if match:
                todo.append(path.parent / match.group(1))
    return seen


def _requirement_paths(path: Path, root: Path) -> list[Path]:
    """Local paths a requirements file installs (`./pkg`, `-e ./pkg`, `x @ file:...`)."""
    found = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = re.sub(r"^\s*(?:-e|--editable)(?:\s+|=)", "", raw.split(" #", 1)[0]).strip()
        match = re.search(r"@\s*file://(\S+)", line)
        if match:
            found.append(Path(urllib.parse.unquote(match.group(1))))
            continue
        if line.startswith("file:"):
            line = re.sub(r"^file:(//)?", "", line)
        if line.startswith((".", "/")):
            spec = urllib.parse.unquote(line.split(";")[0].split("[")[0].strip())
            # pip reads relative paths from the working directory, uv from the file's.
            for base in (path.parent, root):
                if (base / spec).exists():
                    found.append(base / spec)
                    break
    return found


def _outermost(paths: list[Path], root: Path) -> tuple[str, ...]:
    """Relative paths of `paths`, dropping those inside another one."""
    chosen: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(path == c or c in path.parents for c in chosen):
            chosen.append(path)
    return tuple(sorted(_rel(p, root) for p in chosen))


def _rel(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return "" if rel == "." else rel


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
