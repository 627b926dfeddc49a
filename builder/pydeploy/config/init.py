"""`pydeploy init`: append a commented [tool.pydeploy] table to pyproject.toml, creating
the file when there is none; at a uv workspace root without [project], set up members.

The rest of the file is kept byte for byte: the table is appended as text (no TOML
round-trip that would drop comments), the result is re-validated, then written
atomically so a failure leaves the original untouched."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydeploy import atomic
from pydeploy.config import workspace
from pydeploy.config.models import PYPROJECT, parse_config, read_pyproject
from pydeploy.config.toml import parse_toml
from pydeploy.errors import ConfigError
from pydeploy.plan import references
from pydeploy.plan.detect import Candidate, detect_app, scan_project

_NOT_FOUND = "Cannot find a Flask, Django, FastAPI, Starlette, Quart or Litestar app object"


@dataclass(frozen=True)
class InitResult:
    """What init wrote: `target` is None when a new pyproject.toml holds no app yet."""

    path: Path
    target: str | None
    reason: str
    created: bool = False


@dataclass(frozen=True)
class MemberSetup:
    """One member of a workspace root, as `init` at the root sees it."""

    name: str
    path: Path
    state: Literal["configured", "deployable", "no-app"]
    target: str | None = None
    reason: str = ""
    result: InitResult | None = None  # with `--all`: the table written


@dataclass(frozen=True)
class WorkspaceInit:
    """`init` at a uv workspace root without [project]: its members, set up or not."""

    root: Path
    members: tuple[MemberSetup, ...]
    wrote: bool  # `--all` was given


def is_virtual_root(root: Path) -> bool:
    """A uv workspace root without [project]: a place for members, not an app itself."""
    if not (root / PYPROJECT).is_file():
        return False
    data = read_pyproject(root)
    return "workspace" in data.get("tool", {}).get("uv", {}) and "project" not in data


def init_workspace(directory: Path, write: bool = False) -> WorkspaceInit:
    """List a virtual workspace root's members with what init would do for each; with
    `write`, append a table to every member where an app was found."""
    root = directory.resolve()
    setups: list[MemberSetup] = []
    for member in workspace.members(root):
        if member.has_pydeploy:
            setups.append(MemberSetup(member.name, member.path, "configured"))
            continue
        detection = detect_app(member.path)
        if detection is None:
            setups.append(MemberSetup(member.name, member.path, "no-app"))
            continue
        result = init_project(member.path) if write else None
        setups.append(
            MemberSetup(
                member.name,
                member.path,
                "deployable",
                detection.target,
                detection.reason,
                result,
            )
        )
    return WorkspaceInit(root, tuple(setups), write)


def init_project(directory: Path, app: str | None = None) -> InitResult:
    root = directory.resolve()
    path = root / PYPROJECT
    if not path.exists() and root.is_dir():
        return _create(root, app)
    data = read_pyproject(root)  # raises a ConfigError when missing or malformed
    if "pydeploy" in data.get("tool", {}):
        raise ConfigError(
            f"{path} already has a [tool.pydeploy] table; init leaves it alone.",
            hint="Edit it by hand, or run `pydeploy check` to validate it.",
        )
    if app:
        target, reason, framework = app, "given with --app", "your app"
    else:
        scan = scan_project(root)
        detection = scan.best
        if detection is None:
            raise _nothing_found(root, scan.candidates)
        target, reason, framework = detection.target, detection.reason, detection.framework
    text = path.read_text(encoding="utf-8")
    separator = "" if text.endswith("\n") or not text else "\n"
    new_text = text + separator + _table(target, framework, reason)
    _validate(new_text, path)
    atomic.write_text(path, new_text, mode=path.stat().st_mode & 0o777)
    return InitResult(path=path, target=target, reason=reason)


def _create(root: Path, app: str | None) -> InitResult:
    """A new pyproject.toml holding only the commented table: many deployed apps are a
    requirements.txt and code, and need no [project] metadata to be built."""
    path = root / PYPROJECT
    detection = None if app else detect_app(root)
    if app:
        target, reason, framework = app, "given with --app", "your app"
    elif detection is not None:
        target, reason, framework = detection.target, detection.reason, detection.framework
    else:
        target, reason, framework = None, "no app found", ""
    header = (
        "# pydeploy's settings. No [project] table is needed: the image is named after\n"
        "# this directory (or `name` below) and tagged by `git describe` (else latest).\n"
    )
    name = references.name_from_project(root.name) or "my-app"
    new_text = header + _table(target, framework, reason, name).lstrip("\n")
    _validate(new_text, path)
    atomic.write_text(path, new_text)
    return InitResult(path=path, target=target, reason=reason, created=True)


def _nothing_found(root: Path, candidates: tuple[Candidate, ...]) -> ConfigError:
    """No app object nor argument-free factory: name the factories that need arguments."""
    if candidates:
        found = candidates[0]
        module, _, name = found.target.partition(":")
        return ConfigError(
            f"Found no app object in {root}, only an app factory: {found.reason}.",
            hint=f"Run `pydeploy init --app '{module}:{name}(...)'` with its arguments.",
        )
    return ConfigError(
        f"Cannot find a Flask, Django, FastAPI, Starlette, Quart or Litestar app "
        f"object or app factory in {root}.",
        hint='Run `pydeploy init --app "module:attribute"` to name it.',
    )


def _table(target: str | None, framework: str, reason: str, name: str | None = None) -> str:
    if target is None:
        app = f'# {_NOT_FOUND} here: name it as module:attribute.\n# app = "main:app"\n'
    else:
        # json.dumps: a TOML basic string, whatever quotes a factory's arguments hold.
        app = f"# The {framework} app to serve ({reason}).\napp = {json.dumps(target)}\n"
    if name is not None:
        app += f'# Image repository name (default: the directory name).\n# name = "{name}"\n'
    return f"""
[tool.pydeploy]
{app}# Port inside the container; the PORT environment variable overrides it at run time.
# port = 8000
# Python version: default .python-version, else the newest that requires-python allows.
# python = "3.13"
# base-image = "python:3.13-slim"
# Debian packages: compilers/headers for the builder only, shared libraries at run time.
# build-packages = ["gcc", "libc6-dev"]
# runtime-packages = []

[tool.pydeploy.server]
# auto: gunicorn for WSGI apps, gunicorn with uvicorn workers for ASGI apps.
# type = "auto"
# auto: WEB_CONCURRENCY, else 2 x the container's CPUs + 1, decided at start.
# workers = "auto"
# timeout = 30
# graceful-timeout = 8

[tool.pydeploy.healthcheck]
# An HTTP path that answers 2xx when the app is up (probed without curl). Default: a
# health route found in the source, else any answer below 500 from `/`.
# path = "/healthz"

# Runs before a new version serves, e.g. "python manage.py migrate --noinput".
# release-command = "..."
"""


def _validate(text: str, path: Path) -> None:
    try:
        table = parse_toml(text, str(path))["tool"]["pydeploy"]
    except (ConfigError, KeyError):
        raise ConfigError(
            f"Appending a table to {path} would not give valid TOML (is `[tool]` defined "
            "as an inline table?).",
            hint="Add the [tool.pydeploy] table by hand.",
        ) from None
    parse_config(table, path)
