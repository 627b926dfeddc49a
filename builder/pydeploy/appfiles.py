"""Which project files reach the app layer.

Secrets, VCS metadata, local virtualenvs and caches never do, whatever the config says.
Then the project's .gitignore files (nested ones too), its .dockerignore, pydeploy's
defaults (build outputs, tests) and `tool.pydeploy.exclude` drop more, and
`tool.pydeploy.include` can bring back anything but the never-list.
"""

from __future__ import annotations

from pathlib import Path

import pathspec

from pydeploy.oci import FileEntry, entries_from_dir
from pydeploy.plan import APP_DIR, BuildPlan

# Not even `include` brings these back: a leaked .env or .git is worse than a missing file.
NEVER = (".git/", ".hg/", ".svn/", ".env", ".env.*", ".venv/", "__pycache__/", "*.py[cod]")


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


def ignore_spec(root: Path, excludes: tuple[str, ...]) -> pathspec.GitIgnoreSpec:
    lines = list(excludes)
    for ignore in sorted(root.rglob(".gitignore")):
        rel = ignore.parent.relative_to(root).as_posix()
        if any(part in {".git", ".venv", "node_modules"} for part in Path(rel).parts):
            continue
        lines += _gitignore_lines(ignore, "" if rel == "." else rel)
    if (root / ".dockerignore").is_file():
        lines += _dockerignore_lines(root / ".dockerignore")
    return pathspec.GitIgnoreSpec.from_lines(lines)


def app_filter(
    plan: BuildPlan,
) -> tuple[pathspec.GitIgnoreSpec, pathspec.GitIgnoreSpec, pathspec.GitIgnoreSpec]:
    never = pathspec.GitIgnoreSpec.from_lines(NEVER)
    ignored = ignore_spec(plan.project.root, plan.excludes)
    included = pathspec.GitIgnoreSpec.from_lines(plan.includes)
    return never, ignored, included


def app_entries(plan: BuildPlan) -> list[FileEntry]:
    """The app layer's entries: the filtered project tree under /app, owned by root,
    read-only for the runtime user (dirs 0755, files 0644 or 0755)."""
    never, ignored, included = app_filter(plan)

    def keep(rel: str, is_dir: bool) -> bool:
        probe = rel + "/" if is_dir else rel
        if never.match_file(probe):
            return False
        if included.match_file(probe):
            return True
        # A directory matched only by an include further down must still be walked.
        if is_dir and any(p.startswith(rel + "/") for p in plan.includes):
            return True
        return not ignored.match_file(probe)

    return entries_from_dir(plan.project.root, APP_DIR.lstrip("/"), include=keep)
