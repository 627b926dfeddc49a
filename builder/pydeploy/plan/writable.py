"""`tool.pydeploy.writable`: the directories the app writes, as image paths.

An entry is relative to the app directory (`logs` -> /app/logs) or absolute
(`/var/lib/app`). The image holds each as an empty-or-existing directory owned by the
runtime uid; every place that runs the image read-only (the app check, `pydeploy run`,
the manifests) mounts each as a fresh writable tmpfs or emptyDir. System trees, the
venv (but for its `var/`, where Flask keeps an installed package's instance folder) and
the launcher never qualify: a mount there would hide what the image needs.

Pure: strings in, strings out (the config validates with `problem`, the plan resolves
with `resolve`).
"""

from __future__ import annotations

import itertools
import posixpath

APP_DIR = "/app"
KEY = "tool.pydeploy.writable"
# Mounting over these (or inside them) hides files the image or the kernel provides.
_SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
    "/run", "/sbin", "/sys", "/usr", "/opt/venv", "/opt/pydeploy",
)  # fmt: skip
# Inside the venv, only its `var/` holds no part of it: Flask puts an installed package's
# instance folder at `sys.prefix/var/<name>-instance`.
_VENV_VAR = "/opt/venv/var"
# Already writable wherever the image runs read-only (see deploy.manifests.WRITABLE_PATHS).
_ALREADY_WRITABLE = ("/tmp", "/var/tmp", "/home")  # noqa: S108 -- mount points
# Parents of much else: the whole of one as a mount would hide it.
_TOO_WIDE = frozenset({"/", APP_DIR, "/opt", "/var", "/var/lib", "/srv", "/mnt"})


def _inside(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree + "/")


def resolve(entry: str) -> str:
    """The entry as an absolute, normalized image path (`problem` must be None)."""
    joined = entry if entry.startswith("/") else posixpath.join(APP_DIR, entry)
    return posixpath.normpath(joined)


def problem(entry: str) -> str | None:
    """Why `entry` cannot be a writable directory, or None."""
    if not entry.strip() or entry != entry.strip():
        return "is empty or starts or ends with whitespace"
    if "\0" in entry or "\\" in entry:
        return "holds a NUL or a backslash"
    if ".." in entry.split("/"):
        return "holds `..`: name the directory itself (relative to /app, or absolute)"
    path = resolve(entry)
    if path in _TOO_WIDE:
        return f"is {path} itself: name the subdirectory the app writes (e.g. `logs`)"
    if _inside(path, _VENV_VAR) and path != _VENV_VAR:
        return None
    reasons = [
        *((tree, "must stay as the image has it") for tree in _SYSTEM_TREES),
        *((tree, "is writable already") for tree in _ALREADY_WRITABLE),
    ]
    return next((f"is inside {t}, which {why}" for t, why in reasons if _inside(path, t)), None)


def overlaps(paths: list[str]) -> tuple[str, str] | None:
    """Two resolved entries of which one holds the other (one mount would hide the
    other's directory), or None."""
    for outer, inner in itertools.pairwise(sorted(set(paths))):
        if _inside(inner, outer):
            return outer, inner
    return None


def tmpfs_mounts(paths: tuple[str, ...], uid: int) -> dict[str, str]:
    """The directories as tmpfs mounts (path -> options) the runtime user owns, as the
    image has them: a tmpfs is root's by default."""
    return dict.fromkeys(paths, f"uid={uid},gid={uid},mode=0755")


def entry_for(path: str) -> str:
    """How a directory is written in `writable`: relative under /app, else absolute."""
    if path.startswith(APP_DIR + "/"):
        return path[len(APP_DIR) + 1 :]
    return path
