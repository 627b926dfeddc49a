"""Which dependency source a build uses and why (`auto`'s order of precedence), whether
the other dependency files present agree with it, and what a lock read on the host
(poetry.lock, pdm.lock, Pipfile.lock) installs. Pure: files are read, nothing is run."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydeploy.config.models import read_pyproject
from pydeploy.config.project import Project, other_requirements, read_lock, read_text
from pydeploy.errors import ConfigError
from pydeploy.plan.locks import pdm, pipenv, poetry
from pydeploy.plan.locks.common import Pins, Selection, Target, pins_of

# Each source and the file that makes `auto` pick it, in `auto`'s order of precedence
# (the requirements files and [project] come after them).
LOCKS = {
    "uv.lock": "uv.lock",
    "pylock": "pylock.toml",
    "poetry.lock": "poetry.lock",
    "pdm.lock": "pdm.lock",
    "Pipfile.lock": "Pipfile.lock",
}
# Sources read on the host into requirement lines installed as they are (--no-deps).
HOST_LOCKS = ("poetry.lock", "pdm.lock", "Pipfile.lock")
SOURCE_KEY = "tool.pydeploy.dependencies.source"
_ORDER = " > ".join([*LOCKS.values(), "requirements", "[project]"])


@dataclass(frozen=True)
class Choice:
    source: str
    origin: str  # why: the key that set it, or which file `auto` found first


def choose(project: Project) -> Choice:
    """The dependency source and why; in `auto`, also checks that the other dependency
    files present agree with it (ConfigError naming SOURCE_KEY when they do not)."""
    deps = project.config.dependencies
    if deps.source != "auto":
        return Choice(deps.source, SOURCE_KEY)
    present = [source for source, name in LOCKS.items() if _lock_path(project, name)]
    requirements = list(deps.requirements or project.requirements_files)
    if present:
        source = present[0]
        others = present[1:] + (["requirements"] if requirements else [])
        agreeing = _check_agreement(project, source, others, requirements)
        also = f"; also present, agreeing: {', '.join(agreeing)}" if agreeing else ""
        return Choice(source, f"auto: {LOCKS[source]} is the first present of {_ORDER}{also}")
    if deps.requirements:
        return Choice("requirements", "tool.pydeploy.dependencies.requirements")
    if project.requirements_files:
        name = project.requirements_files[0]
        return Choice("requirements", f"auto: {name} (production requirements; no lock file)")
    extra_files = other_requirements(project.root)
    if extra_files and not project.dependencies:
        raise ConfigError(
            f"{project.root} has no lock file and no production requirements file "
            f"(requirements.txt, requirements/production.txt or requirements/prod.txt), only "
            f"{', '.join(extra_files)}, which pydeploy does not guess to be production's.",
            hint="Name the file the image should install: `tool.pydeploy.dependencies."
            'requirements = ["requirements/base.txt"]` (for example).',
        )
    why = "auto: no lock file or production requirements file"
    if extra_files:
        why += f" ({', '.join(extra_files)} are not production's)"
    return Choice("project", why)


def _lock_path(project: Project, name: str) -> Path | None:
    for directory in (project.root, project.workspace_root if name == "uv.lock" else None):
        if directory is not None and (directory / name).is_file():
            return directory / name
    return None


def _check_agreement(
    project: Project, source: str, others: list[str], requirements: list[str]
) -> list[str]:
    """The other sources present (their files), each checked to pin no package at another
    version than `source`'s lock does."""
    chosen = _pins(project, source, requirements)
    agreeing = []
    for other in others:
        name = ", ".join(requirements) if other == "requirements" else LOCKS[other]
        theirs = _pins(project, other, requirements)
        clashes = sorted(n for n in chosen.keys() & theirs.keys() if not chosen[n] & theirs[n])
        if clashes:
            first = clashes[0]
            more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
            raise ConfigError(
                f"{project.root} holds {LOCKS[source]} and {name}, which disagree: "
                f"{LOCKS[source]} pins {first} {_versions(chosen[first])}, {name} pins "
                f"{_versions(theirs[first])}{more}. `auto` would pick {LOCKS[source]}.",
                hint=f'Set `{SOURCE_KEY} = "{source}"` (or `"{other}"`) in '
                f"{project.pyproject} to pick the one the image gets, or regenerate the other.",
            )
        agreeing.append(name)
    return agreeing


def _versions(found: frozenset[str]) -> str:
    return " or ".join(sorted(found))


def _pins(project: Project, source: str, requirements: list[str]) -> Pins:
    if source == "requirements":
        return requirement_pins([project.root / r for r in requirements], project.root)
    path = _lock_path(project, LOCKS[source])
    if path is None:
        return {}
    if source in ("uv.lock", "pylock"):
        return pins_of((e.get("name"), e.get("version")) for e in read_lock(path))
    reader = {"poetry.lock": poetry.pins, "pdm.lock": pdm.pins, "Pipfile.lock": pipenv.pins}
    return reader[source](path)


def locked_selection(project: Project, source: str, python: str | None) -> Selection:
    """What a HOST_LOCKS source installs for the configured extras and groups, judged for
    Python `python` (the base image's, probed) or, when None, any Python the project
    allows (markers left undecided stay in the lines; see locks.common.Target)."""
    if _lock_path(project, LOCKS[source]) is None:
        raise ConfigError(
            f"`{SOURCE_KEY}` is {source!r} but {project.root / LOCKS[source]} does not exist.",
            hint="Write the lock with its tool, or choose another source.",
        )
    deps = project.config.dependencies
    constraint = project.python_constraint
    target = Target.of(python, constraint.allows if constraint else None)
    extras, groups = tuple(deps.extras), tuple(deps.groups)
    if source == "poetry.lock":
        return poetry.read(project.root, read_pyproject(project.root), extras, groups, target)
    if source == "pdm.lock":
        return pdm.read(project.root, read_pyproject(project.root), extras, groups, target)
    if extras:
        raise ConfigError(
            "`tool.pydeploy.dependencies.extras` has no meaning for a Pipfile.lock (Pipenv "
            "projects have no extras).",
            hint="Remove `extras`; use `groups` for a Pipfile category.",
        )
    return pipenv.read(project.root, groups, target)


# --- requirements files ---------------------------------------------------------------

_INCLUDE = re.compile(r"^\s*(?:-r|--requirement|-c|--constraint)[\s=]+(\S+)")
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*===?\s*([^\s;#\\]+)")


def repository_root(root: Path) -> Path | None:
    """The top of the git repository holding `root` (walking up for `.git`), or None."""
    for directory in (root, *root.parents):
        if (directory / ".git").exists():
            return directory
    return None


def requirement_closure(files: list[Path], root: Path) -> list[Path]:
    """The requirements files and every file they include (-r) or constrain with (-c);
    an included file outside the project's git repository (or, outside a repository,
    outside the project) is a ConfigError naming it."""
    repository = repository_root(root)
    boundary = repository or root
    seen: list[Path] = []
    todo: list[tuple[Path, Path | None]] = [(path, None) for path in files]
    while todo:
        given, by = todo.pop(0)
        path = given.resolve()
        if path in seen or not path.is_file():
            continue
        if by is not None and not path.is_relative_to(boundary.resolve()):
            where = (
                "git repository" if repository else "project directory (not in a git repository)"
            )
            raise ConfigError(
                f"{by} includes {path}, which is outside the {where} {boundary}: the "
                "builder receives only files inside it.",
                hint="Move the file into the repository (or copy its lines in).",
            )
        seen.append(path)
        for line in read_text(path, "requirements").splitlines():
            match = _INCLUDE.match(line)
            if match:
                todo.append((path.parent / match.group(1), path))
    return seen


def requirement_pins(files: list[Path], root: Path) -> Pins:
    """`name==version` pins of requirements files and what they include."""
    found = []
    for path in requirement_closure(files, root):
        for line in read_text(path, "requirements").splitlines():
            match = _PIN.match(line)
            if match:
                found.append((match.group(1), match.group(2)))
    return pins_of(found)
