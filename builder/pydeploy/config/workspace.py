"""uv workspaces: find the root, list its members and their workspace dependencies, pick
the deployable ones, and tell which of them a git change touches. Reads files and asks
git; needs no engine and never writes.

Names are compared in PEP 503 normal form (`My_Lib` == `my-lib`), as uv and pip do.
"""

from __future__ import annotations

import difflib
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from pydeploy.config.models import PYPROJECT, read_pyproject
from pydeploy.errors import ConfigError

# Root files that shape every member's build: the one lock, the workspace table (and
# workspace-wide sources), the default Python version. A change to any of them marks every
# deployable member as changed; diffing the lock per package would be finer but is not
# worth the risk of missing a transitive change.
SHARED_ROOT_FILES = ("uv.lock", PYPROJECT, ".python-version")


@dataclass(frozen=True)
class Member:
    """One workspace member. `name` is normalized; `workspace_deps` are the normalized
    names of other members listed in its `[project.dependencies]` (direct only; see
    `closure`)."""

    name: str
    path: Path
    has_pydeploy: bool
    workspace_deps: tuple[str, ...]


def find_workspace_root(start: Path) -> Path | None:
    """The nearest directory at or above `start` whose pyproject.toml has
    `[tool.uv.workspace]`, or None outside any uv workspace."""
    start = start.resolve()
    if not start.is_dir():
        start = start.parent
    for directory in (start, *start.parents):
        if (directory / PYPROJECT).is_file() and _workspace_table(directory) is not None:
            return directory
    return None


def members(root: Path) -> list[Member]:
    """Every member of the workspace at `root`, sorted by name. Mirrors uv: `members` globs
    are relative to the root, `exclude` globs remove matches, files, hidden and empty
    directories are skipped, a root with a [project] table is a member itself."""
    root = root.resolve()
    table = _workspace_table(root)
    if table is None:
        raise ConfigError(
            f"{root / PYPROJECT} has no [tool.uv.workspace] table, so {root} is not a uv "
            "workspace root.",
            hint='Add `[tool.uv.workspace]` with `members = ["services/*", "libs/*"]`.',
        )
    where = f"{root / PYPROJECT}: `tool.uv.workspace"
    excluded = _expand(root, _globs(table, "exclude", where))
    directories = [d for d in _expand(root, _globs(table, "members", where)) if d not in excluded]
    if "project" in read_pyproject(root):
        directories.insert(0, root)

    raw: dict[str, tuple[Path, dict[str, Any]]] = {}
    for directory in dict.fromkeys(directories):
        if not (directory / PYPROJECT).is_file():
            if not any(directory.iterdir()):
                continue  # uv skips empty directories (left behind by a git checkout)
            raise ConfigError(
                f"Workspace member {directory} (matched by `tool.uv.workspace.members` in "
                f"{root / PYPROJECT}) has no {PYPROJECT}.",
                hint="Add a pyproject.toml there, or list the directory in "
                "`tool.uv.workspace.exclude`.",
            )
        data = read_pyproject(directory)
        name = data.get("project", {}).get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"Workspace member {directory / PYPROJECT} has no `project.name`.",
                hint="Every uv workspace member needs a [project] table with a name.",
            )
        key = canonicalize_name(name)
        if key in raw:
            raise ConfigError(
                f"Two workspace members are named {name!r}: {raw[key][0]} and {directory}.",
                hint="Rename one of them; member names must be unique in a workspace.",
            )
        raw[key] = (directory, data)

    return sorted(
        (
            Member(
                name=key,
                path=directory,
                has_pydeploy="pydeploy" in data.get("tool", {}),
                workspace_deps=_member_deps(directory, data, set(raw) - {key}),
            )
            for key, (directory, data) in raw.items()
        ),
        key=lambda m: m.name,
    )


def deployable(root: Path, every: Sequence[Member] | None = None) -> list[Member]:
    """The members with a `[tool.pydeploy]` table, sorted by name (`every`: the
    workspace's members when the caller has already read them)."""
    return [m for m in (members(root) if every is None else every) if m.has_pydeploy]


def root_problem(root: Path, data: dict[str, Any]) -> ConfigError | None:
    """Why the workspace root `root` (its pyproject `data`) cannot be built as a project:
    without [project] it is virtual, a place for members and not an app, and a
    [tool.pydeploy] table there configures no image (members do not inherit it). None for a
    root that is a project itself, or no workspace root."""
    if "workspace" not in data.get("tool", {}).get("uv", {}) or "project" in data:
        return None
    every = members(root)
    ready = [m for m in every if m.has_pydeploy]
    listed = ", ".join(f"{m.name} ({_relative(m.path, root)})" for m in ready)
    if "pydeploy" in data.get("tool", {}):
        first = (
            f"{root / PYPROJECT} has a [tool.pydeploy] table, but {root} is a uv workspace "
            "root without [project]: it is not an app, so that table configures no image "
            "(members do not inherit it). Each deployable member has its own table in its "
            "own pyproject.toml."
        )
        hint = "Move the table's keys into the member(s) it is meant for, and delete it here."
    else:
        first = (
            f"{root} is a uv workspace root without [project]: pydeploy builds its members, "
            "each from the [tool.pydeploy] table in its own pyproject.toml."
        )
        hint = ""
    if ready:
        first += f" Deployable members: {listed}."
        then = (
            f"Run `pydeploy build --all` here, or `pydeploy plan {_relative(ready[0].path, root)}`."
        )
    else:
        first += " No member has a [tool.pydeploy] table yet."
        then = (
            "Run `pydeploy init` here to list the members that look deployable "
            "(`pydeploy init --all` sets them up)."
        )
    hint = f"{hint} {then}".strip()
    return ConfigError(first, hint=hint)


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def closure(member: Member, all_members: Sequence[Member]) -> list[Member]:
    """The members `member` depends on, directly or through other members, sorted by
    name; `member` itself is not included (even in a dependency cycle)."""
    by_name = {m.name: m for m in all_members}
    seen: dict[str, Member] = {}
    pending = list(member.workspace_deps)
    while pending:
        name = pending.pop()
        if name in seen or name == member.name or name not in by_name:
            continue
        seen[name] = by_name[name]
        pending.extend(by_name[name].workspace_deps)
    return sorted(seen.values(), key=lambda m: m.name)


def select(candidates: Sequence[Member], only: Iterable[str]) -> list[Member]:
    """The candidates named in `only` (all of them when `only` is empty), in their order.
    Unknown names and members without [tool.pydeploy] are ConfigErrors."""
    wanted = {canonicalize_name(name): name for name in only}
    if not wanted:
        return list(candidates)
    by_name = {m.name: m for m in candidates}
    valid = ", ".join(sorted(by_name)) or "(none)"
    for key, given in wanted.items():
        if key not in by_name:
            close = difflib.get_close_matches(key, list(by_name), n=1)
            guess = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"`--only {given}` names no workspace member.{guess}",
                hint=f"Valid names: {valid}.",
            )
        if not by_name[key].has_pydeploy:
            raise ConfigError(
                f"`--only {given}`: workspace member {by_name[key].path} has no "
                "[tool.pydeploy] table, so it is not deployable.",
                hint="Run `pydeploy init` in that directory, or pick another member. "
                f"Valid names: {valid}.",
            )
    return [m for m in candidates if m.name in wanted]


def changed_since(root: Path, all_members: Sequence[Member], git_ref: str) -> list[Member]:
    """The deployable members whose directory, or a workspace dependency's directory,
    holds a file that differs between `git_ref` and the working tree (committed, staged,
    unstaged, or untracked and not ignored). A change to a SHARED_ROOT_FILES file marks
    every deployable member. A file belongs to the deepest member directory holding it, so
    a root that is itself a member does not swallow its nested members' changes."""
    root = root.resolve()
    files = _changed_files(root, git_ref)
    if any(root / name in files for name in SHARED_ROOT_FILES):
        return sorted((m for m in all_members if m.has_pydeploy), key=lambda m: m.name)

    # Deepest first, so the first containing member is the owner.
    by_depth = sorted(all_members, key=lambda m: len(m.path.parts), reverse=True)
    touched: set[str] = set()
    for path in files:
        owner = next((m for m in by_depth if path.is_relative_to(m.path)), None)
        if owner is not None:
            touched.add(owner.name)
    return sorted(
        (
            m
            for m in all_members
            if m.has_pydeploy
            and (m.name in touched or any(d.name in touched for d in closure(m, all_members)))
        ),
        key=lambda m: m.name,
    )


# ---------------------------------------------------------------------------
# Helpers


def _workspace_table(directory: Path) -> dict[str, Any] | None:
    data = read_pyproject(directory)
    table = data.get("tool", {}).get("uv", {}).get("workspace")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(
            f"{directory / PYPROJECT}: `tool.uv.workspace` must be a table, not a "
            f"{type(table).__name__}.",
            hint='Write `[tool.uv.workspace]` with `members = ["packages/*"]`.',
        )
    return table


def _globs(table: dict[str, Any], key: str, where: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(
            f"{where}.{key}` must be a list of glob strings, not {value!r}.",
            hint=f'For example `{key} = ["services/*"]`.',
        )
    for pattern in value:
        if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            raise ConfigError(
                f"{where}.{key}` has {pattern!r}, which points outside the workspace root.",
                hint="Use globs relative to the root, such as `services/*`.",
            )
    return value


def _expand(root: Path, patterns: list[str]) -> list[Path]:
    """Directories matched by the globs, in sorted order. Like uv, a wildcard does not
    match hidden names unless the pattern spells the leading dot."""
    found: list[Path] = []
    for pattern in patterns:
        explicit_dot = any(part.startswith(".") for part in Path(pattern).parts)
        for match in sorted(root.glob(pattern)):
            relative = match.relative_to(root).parts
            if not match.is_dir() or (
                not explicit_dot and any(p.startswith(".") for p in relative)
            ):
                continue
            found.append(match.resolve())
    return list(dict.fromkeys(found))


def _member_deps(directory: Path, data: dict[str, Any], others: set[str]) -> tuple[str, ...]:
    """Names of other members in `[project.dependencies]`. uv refuses a dependency on a
    member without a `{ workspace = true }` source, so the name alone identifies it."""
    names: set[str] = set()
    for text in data.get("project", {}).get("dependencies", []) or []:
        try:
            name = canonicalize_name(Requirement(text).name)
        except (InvalidRequirement, TypeError):
            raise ConfigError(
                f"{directory / PYPROJECT}: `project.dependencies` has {text!r}, which is "
                "not a valid requirement.",
                hint="Use PEP 508 syntax such as `shared` or `fastapi>=0.110`.",
            ) from None
        if name in others:
            names.add(name)
    return tuple(sorted(names))


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            check=False,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(
            f"`--changed-since` needs git, and running it in {root} failed: {exc}.",
            hint="Install git, or build without --changed-since.",
        ) from None


def _changed_files(root: Path, git_ref: str) -> set[Path]:
    """Absolute paths that differ between `git_ref` and the working tree, plus untracked
    files git does not ignore. Renames count at both their old and new paths."""
    top = _git(root, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise ConfigError(
            f"`--changed-since {git_ref}`: {root} is not inside a git repository.",
            hint="Run it in a git checkout (CI: fetch enough history), or build without it.",
        )
    toplevel = Path(top.stdout.decode().strip()).resolve()
    # A ref starting with `-` would be read as an option; no real ref does.
    verify = None
    if git_ref and not git_ref.startswith("-"):
        verify = _git(root, "rev-parse", "--verify", "--quiet", git_ref + "^{commit}")
    if verify is None or verify.returncode != 0:
        raise ConfigError(
            f"`--changed-since {git_ref}`: {git_ref!r} is not a commit in the repository at "
            f"{toplevel}.",
            hint="Pass a branch, tag or commit that exists locally (in CI, fetch it first, "
            "e.g. `git fetch origin main` and use `origin/main`).",
        )
    commit = verify.stdout.decode().strip()
    # Both are limited to the workspace (pathspec `.` is relative to `-C root`); both
    # print paths relative to the repository's top level.
    diff = _git(root, "diff", "--name-only", "--no-renames", "-z", commit, "--", ".")
    untracked = _git(
        root, "ls-files", "--others", "--exclude-standard", "--full-name", "-z", "--", "."
    )
    for result in (diff, untracked):
        if result.returncode != 0:
            raise ConfigError(
                f"`--changed-since {git_ref}`: git failed in {toplevel}: "
                f"{result.stderr.decode(errors='replace').strip()}",
            )
    names = (diff.stdout + untracked.stdout).decode(errors="surrogateescape").split("\0")
    return {toplevel / name for name in names if name}
