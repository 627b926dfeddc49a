"""Everything that decides a dependency set, read on the host: the dependency source
(uv.lock, pylock.toml, poetry.lock, pdm.lock, Pipfile.lock, requirements files or
[project]; chosen by depsource), the local path packages it names
and their content, the files the builder receives, and the key of the set.

Pure: files are read, nothing is run; the builder stage (wheels.py) sends `input_files`
into a builder container as a tar (the engine may be remote, so nothing is bind-mounted)
and turns the result into a venv volume named by `dependency_key`.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pathspec
from packaging.utils import canonicalize_name

from pydeploy.cachekeys import RECIPE_VERSION, UV_VERSION
from pydeploy.config import workspace
from pydeploy.config.models import PYPROJECT, read_pyproject
from pydeploy.config.project import Project, lock_entries, read_text
from pydeploy.config.toml import parse_toml
from pydeploy.errors import BuildError, ConfigError
from pydeploy.plan.appfiles import ignore_spec
from pydeploy.plan.depsource import HOST_LOCKS, LOCKS, locked_selection, requirement_closure
from pydeploy.plan.locks.pylock import parse_pylock, pylock_paths
from pydeploy.plan.planner import BuildPlan, DependencyPlan
from pydeploy.plan.skiplist import (
    BUILD_OUTPUT_DIRS,
    HASH_SKIP_DIRS,
    NEVER,
    SKIP_DIRS,
    VENV_CONFIG,
    is_egg_info,
)

# Never part of a local package's content hash (caches, VCS, build output).
# Files beside a lock or pyproject.toml that tell uv how to read them (settings, Python).
_TOOL_FILES = (PYPROJECT, "uv.toml", ".python-version")
_NEVER = pathspec.GitIgnoreSpec.from_lines(NEVER)


# --- dependency inputs and key ----------------------------------------------------------


@dataclass(frozen=True)
class DependencyInputs:
    """Everything that decides the dependency set, read on the host."""

    source: str
    mount_root: Path  # lowest host directory holding every input; /src in the builder
    copies: tuple[str, ...]  # directories (relative to mount_root) the builder copies
    cwd: str  # where tools run, relative to mount_root
    package: str | None = None  # uv --package, for a workspace member
    requirements: tuple[str, ...] = ()  # requirements files, relative to cwd
    requirement_lines: tuple[str, ...] = ()  # pylock.toml, as requirements
    extras: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    # uv.lock: the `uv export` options (uv_export_options), for the builder and the
    # ejected Dockerfile alike; empty for other sources.
    export: tuple[str, ...] = ()
    digests: tuple[tuple[str, str], ...] = field(default=())  # (what, sha256)
    # What the builder receives, relative to mount_root: trees (filtered like the app
    # layer) and single files sent whatever ignore files say. See `input_files`.
    trees: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    # Names of the local path packages (built even when nothing else may be), or None
    # when one has no name readable without building it (then only the full builder).
    local_names: tuple[str, ...] | None = ()


@dataclass
class _Found:
    """What one dependency source contributes to DependencyInputs."""

    cwd: Path
    digests: list[tuple[str, str]]
    local: list[Path] = field(default_factory=list)
    package: str | None = None
    requirements: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()
    # Files (and --find-links directories) the tools read, sent whatever ignore files say.
    files: list[Path] = field(default_factory=list)
    # Packages built from source though not local (a lock's git and sdist URLs).
    built: list[str] = field(default_factory=list)


def dependency_inputs(plan: BuildPlan, python: str | None = None) -> DependencyInputs:
    """Read (on the host) every input of the dependency set, and what the builder gets:
    the project directory, its local path packages and the requirements files it
    includes, below their lowest common directory. A workspace member exported from the
    workspace root gets the root's dependency files and every member's pyproject.toml,
    not the whole workspace. `python`: the base image's interpreter version, when probed
    (a lock read on the host judges its markers for it; see depsource.locked_selection)."""
    project = plan.project
    if plan.dependency_source == "requirements":
        found = _from_requirements(project, plan.dependencies.requirements)
    elif plan.dependency_source in HOST_LOCKS:
        found = _from_host_lock(project, plan.dependency_source, python)
    else:
        readers = {"uv.lock": _from_uv_lock, "pylock": _from_pylock}
        found = readers.get(plan.dependency_source, _from_project)(project)
    root = project.root
    local = sorted({p.resolve() for p in found.local if p.exists()})
    digests = found.digests + [
        (f"local:{os.path.relpath(path, root)}", content_digest(path)) for path in local
    ]
    cwd = found.cwd.resolve()
    # Requirements files included from above the project (`-r ../common/base.txt`, inside
    # the repository: depsource.requirement_closure) are sent and copied too.
    outside = sorted({p.resolve() for p in found.files if not p.resolve().is_relative_to(cwd)})
    mount_root = Path(os.path.commonpath([cwd, *local, *outside]))
    sent = {p.resolve() for p in found.files}
    sent |= {cwd / name for name in _TOOL_FILES if (cwd / name).is_file()}
    sent |= set(local)
    trees = {p for p in sent if p.is_dir()} | ({cwd} if found.package is None else set())
    files = {p for p in sent if not p.is_dir()}
    return DependencyInputs(
        source=plan.dependency_source,
        mount_root=mount_root,
        copies=_outermost([cwd, *local, *outside], mount_root),
        cwd=_rel(cwd, mount_root),
        package=found.package,
        requirements=found.requirements,
        requirement_lines=found.lines,
        extras=plan.dependencies.extras,
        groups=plan.dependencies.groups,
        export=(
            uv_export_options(plan.dependencies, found.package)
            if plan.dependency_source == "uv.lock"
            else ()
        ),
        digests=tuple(sorted(digests)),
        trees=tuple(sorted(_rel(p, mount_root) for p in trees)),
        files=tuple(sorted(_rel(p, mount_root) for p in files)),
        local_names=_with_built(local_package_names(local), found.built),
    )


def _with_built(names: tuple[str, ...] | None, built: list[str]) -> tuple[str, ...] | None:
    if names is None:
        return None
    return tuple(sorted({*names, *(canonicalize_name(n) for n in built)}))


def uv_export_options(selected: DependencyPlan, package: str | None) -> tuple[str, ...]:
    """`uv export` options (after `uv export`, before `--output-file`) that turn a uv.lock
    into the requirements the image gets: the lock as it is, without the project itself
    (installed on its own) or editables, the plan's extras and groups, and uv's default
    `dev` group only as DependencyPlan.dev_group says."""
    options = ["--frozen", "--no-hashes", "--no-emit-project", "--no-editable", "--no-header"]
    options += ["--format", "requirements.txt", "--quiet"]
    if not selected.dev_group:
        options.append("--no-dev")
    if package:
        options += ["--package", package]
    options += [arg for extra in selected.extras for arg in ("--extra", extra)]
    options += [arg for group in selected.groups for arg in ("--group", group)]
    return tuple(options)


def local_package_names(paths: Iterable[Path]) -> tuple[str, ...] | None:
    """The distribution names of local packages, read without building them: a
    directory's [project].name (or setup.cfg [metadata] name), an sdist's file name.
    Wheels need no name (they are not built). None when one cannot be told."""
    names: set[str] = set()
    for path in paths:
        name = _local_name(path)
        if name is None:
            return None
        if name:
            names.add(canonicalize_name(name))
    return tuple(sorted(names))


def _local_name(path: Path) -> str | None:
    """The name, "" for a wheel (nothing to build), None when unknown."""
    if path.is_file():
        if path.name.endswith(".whl"):
            return ""
        match = re.match(r"^(.+)-[^-]+\.(?:tar\.gz|zip)$", path.name)
        return match.group(1) if match else None
    try:
        name = read_pyproject(path).get("project", {}).get("name")
    except (ConfigError, OSError):
        name = None
    if isinstance(name, str) and name:
        return name
    setup_cfg = configparser.ConfigParser(interpolation=None)
    try:
        setup_cfg.read(path / "setup.cfg", encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        return None
    name = setup_cfg.get("metadata", "name", fallback=None)
    return name or None


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
    files = [lock_dir / "uv.lock"]
    if lock_dir != root:
        # uv finds the member by reading every member's pyproject.toml.
        files += [m.path / PYPROJECT for m in workspace.members(lock_dir)]
    return _Found(
        cwd=lock_dir,
        digests=[("uv.lock", _sha(lock))],
        local=_uv_lock_paths(lock, lock_dir, project.name),
        # A workspace member is exported from the workspace root by its name.
        package=project.name if lock_dir != root else None,
        files=files,
    )


def _from_pylock(project: Project) -> _Found:
    lock = project.root / "pylock.toml"
    if not lock.is_file():
        raise ConfigError(
            f"`tool.pydeploy.dependencies.source` is 'pylock' but {lock} does not exist.",
            hint="Generate it (e.g. `uv export -o pylock.toml`) or choose another source.",
        )
    text = read_text(lock, "a PEP 751 lock")
    return _Found(
        cwd=project.root,
        digests=[("pylock.toml", _sha(text.encode()))],
        local=[project.root / p for p in pylock_paths(text, str(lock))],
        lines=tuple(parse_pylock(text, str(lock))),
        files=[lock],
    )


def _from_requirements(project: Project, names: tuple[str, ...]) -> _Found:
    root = project.root
    for name in names:
        if not (root / name).is_file():
            raise ConfigError(
                f"`tool.pydeploy.dependencies.requirements` names {name}, which is not a "
                f"file in {root}.",
                hint="Fix the path (relative to the project directory).",
            )
    found = _Found(cwd=root, digests=[], requirements=tuple(names))
    for path in requirement_closure([root / name for name in names], root):
        found.digests.append(
            (f"requirements:{os.path.relpath(path, root)}", _sha(path.read_bytes()))
        )
        found.local += _requirement_paths(path, root)
        found.files += [path, *_find_links(path, root)]
    return found


def _from_host_lock(project: Project, source: str, python: str | None) -> _Found:
    """poetry.lock, pdm.lock, Pipfile.lock: the lines to install as they are."""
    selection = locked_selection(project, source, python)
    lock = project.root / LOCKS[source]
    return _Found(
        cwd=project.root,
        digests=[(LOCKS[source], _sha(lock.read_bytes()))],
        local=[project.root / p for p in selection.paths],
        lines=tuple(selection.lines(str(lock))),
        files=[lock],
        built=[p.name for p in selection.packages if p.url and not p.url.endswith(".whl")],
    )


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
    # default=str: TOML dates and times, which JSON has no type for.
    document = json.dumps(relevant, sort_keys=True, default=str)
    found = _Found(cwd=root, digests=[("project", _sha(document.encode()))])
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
    builder_key: str,
    inputs: DependencyInputs,
    servers: Iterable[str],
    index: Mapping[str, Any],
) -> str:
    """sha256 over everything that decides the installed venv (and nothing secret).
    `builder_key` is the full builder's content key (base image ID, build packages,
    recipe), not an image ID: a venv installed in the base image alone and one installed
    in the full builder are the same venv, whichever builder this build needed."""
    document = {
        "recipe": RECIPE_VERSION,
        "uv": UV_VERSION,
        "builder": builder_key,
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
        dirs[:] = sorted(d for d in dirs if d not in HASH_SKIP_DIRS and not is_egg_info(d))
        for name in sorted(files):
            file = Path(current) / name
            if file.suffix in {".pyc", ".pyo", ".so"} or not file.is_file():
                continue
            digest.update(f"{file.relative_to(path)}\0{os.access(file, os.X_OK)}\0".encode())
            digest.update(_sha(file.read_bytes()).encode())
    return digest.hexdigest()


# --- what the builder receives --------------------------------------------------------


def input_files(inputs: DependencyInputs) -> list[tuple[str, Path]]:
    """(name relative to mount_root, host path) of everything the builder receives,
    parents before children, the root ("") first. Trees are walked with the app layer's
    never-list and each tree's own .gitignore/.dockerignore rules (an ignore file above a
    tree never drops a package that is named explicitly), minus VCS data, virtualenvs,
    caches and stale build output; `files` are sent whatever ignore files say."""
    root = inputs.mount_root
    chosen = {""}
    for tree in inputs.trees:
        chosen.update(_tree(root, tree))
    chosen.update(inputs.files)
    parents = {str(parent) for name in chosen for parent in PurePosixPath(name).parents}
    chosen |= {p for p in parents if p != "."}
    return [(name, root / name) for name in sorted(chosen, key=lambda n: PurePosixPath(n).parts)]


def _tree(root: Path, tree: str) -> Iterator[str]:
    top = root / tree
    prefix = f"{tree}/" if tree else ""
    yield tree
    if top.is_symlink() or not top.is_dir():
        return
    try:
        ignored = ignore_spec(top, ())
    except OSError as exc:
        raise BuildError(
            f"Cannot read the ignore files (.gitignore, .dockerignore) of {top}: {exc}.",
            hint="Make them readable: they decide which files the builder receives.",
        ) from exc

    def dropped(rel: str) -> bool:
        return _NEVER.match_file(rel) or ignored.match_file(rel)

    for current, dirs, files in os.walk(top):
        here = Path(current)
        base = here.relative_to(top).as_posix()
        base = "" if base == "." else f"{base}/"
        package_root = PYPROJECT in files or "setup.py" in files
        kept = []
        for name in sorted(dirs):
            path = here / name
            skip = name in SKIP_DIRS or is_egg_info(name)
            skip = skip or (package_root and name in BUILD_OUTPUT_DIRS)
            # Any virtualenv, whatever its name (`venv/`, `env/`).
            skip = skip or (path / VENV_CONFIG).is_file()
            if skip or dropped(f"{base}{name}/"):
                continue
            yield f"{prefix}{base}{name}"
            if not path.is_symlink():
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            path = here / name
            # Regular files and symlinks only: sockets and FIFOs are no package content.
            if dropped(f"{base}{name}") or not (path.is_symlink() or path.is_file()):
                continue
            yield f"{prefix}{base}{name}"


def _uv_lock_paths(lock: bytes, lock_dir: Path, project_name: str) -> list[Path]:
    """Local packages in a uv.lock (path/directory/editable sources), except the project."""
    where = str(lock_dir / "uv.lock")
    own = canonicalize_name(project_name)
    return [
        lock_dir / str(package["source"][kind])
        for package in lock_entries(parse_toml(lock, where), "uv.lock", where)
        if canonicalize_name(str(package.get("name", ""))) != own
        for kind in ("path", "directory", "editable")
        if kind in package.get("source", {})
    ]


def _requirement_paths(path: Path, root: Path) -> list[Path]:
    """Local paths a requirements file installs (`./pkg`, `-e ./pkg`, `x @ file:...`)."""
    found = []
    for raw in read_text(path, "requirements").splitlines():
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


def _find_links(path: Path, root: Path) -> list[Path]:
    """Local directories a requirements file names with -f/--find-links (not part of the
    key, as before; sent so that an ignored `wheels/` directory still reaches pip)."""
    found = []
    for line in read_text(path, "requirements").splitlines():
        match = re.match(r"^\s*(?:-f|--find-links)(?:\s+|=)(\S+)", line)
        spec = re.sub(r"^file:(//)?", "", match.group(1)) if match else "://"
        if "://" not in spec:
            spec = urllib.parse.unquote(spec)
            found += [base / spec for base in (path.parent, root) if (base / spec).is_dir()][:1]
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


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
