"""Which project files reach the app layer, and what pydeploy warns about on the way.

skiplist.NEVER (secrets, VCS metadata, local virtualenvs, caches) never does, whatever
the config says. Credential-shaped files (skiplist.CREDENTIALS) stay out unless
`tool.pydeploy.include` names them, which earns a warning. Then the project's .gitignore
files (nested ones too), its .dockerignore, pydeploy's defaults (build outputs, tests) and
`tool.pydeploy.exclude` drop more, and `include` can bring those back.

Symlinks: one that stays inside the project is kept as a (relative) link; one into the
rest of the repository is followed (the file's content is copied, unless the target is
itself never-listed or credential-shaped); any other is refused, naming the link, since
it would write a host path into the image. Files over LARGE_FILE bytes and files that look
like they hold a secret by content (secretscan) are warned about, with their paths. The
project's pyproject.toml ships without its `check-env` values (plan.checkenv).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pathspec

from pydeploy.errors import ConfigError
from pydeploy.oci.blobs import BlobStore
from pydeploy.oci.entries import FileEntry, entries_from_dir, normalize_mode
from pydeploy.plan import secretscan
from pydeploy.plan.checkenv import shipped_pyproject
from pydeploy.plan.planner import APP_DIR, BuildPlan
from pydeploy.plan.skiplist import CREDENTIALS, NEVER, SKIP_DIRS

LARGE_FILE = 50 * 1000 * 1000
_NEVER = pathspec.GitIgnoreSpec.from_lines(NEVER)
_CREDENTIALS = pathspec.GitIgnoreSpec.from_lines(CREDENTIALS)


@dataclass(frozen=True)
class AppFiles:
    entries: list[FileEntry]
    warnings: tuple[str, ...]


def _patterns(path: Path) -> list[tuple[bool, str]]:
    """(negated, pattern) for each rule of an ignore file; comments and blanks dropped."""
    rules: list[tuple[bool, str]] = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            rules.append((negate, line[1:] if negate else line))
    return rules


def _gitignore_lines(path: Path, base: str) -> list[str]:
    """Patterns of one .gitignore, re-anchored so they apply below `base` only."""
    lines: list[str] = []
    for negate, pattern in _patterns(path):
        rule = pattern
        if base:
            anchored = "/" in pattern.rstrip("/")
            rule = f"/{base}/{pattern.lstrip('/')}" if anchored else f"/{base}/**/{pattern}"
        lines.append(("!" if negate else "") + rule)
    return lines


def _dockerignore_lines(path: Path) -> list[str]:
    """.dockerignore patterns are relative to the context root: anchor them."""
    return [
        ("!" if negate else "") + (p if p.startswith(("**", "/")) else "/" + p)
        for negate, p in _patterns(path)
    ]


def gitignore_files(root: Path) -> list[tuple[str, Path]]:
    """(directory relative to `root`, "" for the root; path) of each .gitignore, outside
    the directories no walk enters."""
    found = []
    for ignore in sorted(root.rglob(".gitignore")):
        rel = ignore.parent.relative_to(root).as_posix()
        if not any(part in SKIP_DIRS for part in Path(rel).parts):
            found.append(("" if rel == "." else rel, ignore))
    return found


def ignore_spec(root: Path, excludes: tuple[str, ...]) -> pathspec.GitIgnoreSpec:
    lines = list(excludes)
    for base, ignore in gitignore_files(root):
        lines += _gitignore_lines(ignore, base)
    if (root / ".dockerignore").is_file():
        lines += _dockerignore_lines(root / ".dockerignore")
    return pathspec.GitIgnoreSpec.from_lines(lines)


def app_files(plan: BuildPlan, *, store: BlobStore | None = None) -> AppFiles:
    """The app layer's entries: the filtered project tree under /app, owned by root,
    read-only for the runtime user (dirs 0755, files 0644 or 0755); and the warnings.
    `store` caches the secret scan's results."""
    root = plan.project.root
    ignored = ignore_spec(root, plan.excludes)
    included = pathspec.GitIgnoreSpec.from_lines(plan.includes)
    warnings: list[str] = []

    def keep(rel: str, is_dir: bool) -> bool:
        probe = rel + "/" if is_dir else rel
        if _NEVER.match_file(probe):
            return False
        if included.match_file(probe):
            if not is_dir and _CREDENTIALS.match_file(probe):
                warnings.append(
                    f"{rel} is credential-shaped and goes into the app layer only because "
                    "tool.pydeploy.include names it; anyone who can pull the image can "
                    "read it. Pass it at run time (an environment variable or a mounted "
                    "secret) instead."
                )
            return True
        # A directory matched only by an include further down must still be walked.
        if is_dir and any(p.startswith(rel + "/") for p in plan.includes):
            return True
        if _CREDENTIALS.match_file(probe):
            return False
        return not ignored.match_file(probe)

    prefix = APP_DIR.lstrip("/") + "/"
    entries = entries_from_dir(root, prefix.rstrip("/"), include=keep)
    links = _Links(root)
    entries = [links.resolve(e, e.path[len(prefix) :]) if e.kind == "symlink" else e
               for e in entries]  # fmt: skip
    if plan.check_env:
        pyproject = f"{prefix}pyproject.toml"
        values = dict(plan.check_env)
        entries = [shipped_pyproject(e, values) if e.path == pyproject and e.kind == "file" else e
                   for e in entries]  # fmt: skip
    files = [(e.path[len(prefix) :], e) for e in entries if e.kind == "file"]
    for rel, entry in files:
        size = entry.content_size()
        if size > LARGE_FILE:
            warnings.append(
                f"{rel} is {size / 1e6:.0f} MB and goes into the app layer (every push and "
                "pull carries it). Exclude it (tool.pydeploy.exclude) if the app does not "
                "need it, or fetch it at run time."
            )
    warnings += secretscan.describe(secretscan.scan(root, [rel for rel, _ in files], store=store))
    return AppFiles(entries, tuple(warnings))


class _Links:
    """What becomes of each symlink in the project (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))
        self._repo: Path | None = None

    @property
    def repo(self) -> Path:
        """The repository around the project (the nearest .git), else the project."""
        if self._repo is None:
            self._repo = next(
                (d for d in (self.root, *self.root.parents) if (d / ".git").exists()), self.root
            )
        return self._repo

    def resolve(self, entry: FileEntry, rel: str) -> FileEntry:
        link = self.root / rel
        target = Path(os.path.realpath(link))
        if target.is_relative_to(self.root):
            if not Path(entry.linkname).is_absolute():
                return entry
            # An absolute link into the project: the same target, without the host's path.
            relative = os.path.relpath(target, link.parent)
            return FileEntry(entry.path, "symlink", entry.mode, linkname=relative)
        if target.is_relative_to(self.repo) and target.is_file():
            inside = target.relative_to(self.repo).as_posix()
            if not (_NEVER.match_file(inside) or _CREDENTIALS.match_file(inside)):
                mode = normalize_mode("file", target.stat().st_mode)
                return FileEntry(entry.path, "file", mode, source=target)
            why = "a file that never goes into an image (secrets, VCS data)"
        elif target.is_relative_to(self.repo):
            why = "a directory outside the project (only files are followed)"
        else:
            why = "a path outside the repository"
        raise ConfigError(
            f"{link} is a symlink to {target}, {why}: pydeploy keeps links that stay inside "
            f"the project, copies files they point to elsewhere in the repository "
            f"({self.repo}), and refuses the rest, which would put a host path or a host "
            "file into the image.",
            hint=(
                f"Replace the link with a copy of what the app needs, or exclude it with "
                f'`exclude = ["{rel}"]` in [tool.pydeploy].'
            ),
        )
