"""`pydeploy init`: append a commented [tool.pydeploy] table to pyproject.toml.

The rest of the file is kept byte for byte: the table is appended as text (no TOML
round-trip that would drop comments), the result is re-validated, then written
atomically so a failure leaves the original untouched."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydeploy import atomic
from pydeploy.config.models import PYPROJECT, parse_config, read_pyproject
from pydeploy.config.toml import parse_toml
from pydeploy.errors import ConfigError
from pydeploy.plan.detect import Candidate, scan_project


@dataclass(frozen=True)
class InitResult:
    path: Path
    target: str
    reason: str


def init_project(directory: Path, app: str | None = None) -> InitResult:
    root = directory.resolve()
    path = root / PYPROJECT
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


def _table(target: str, framework: str, reason: str) -> str:
    # json.dumps: a TOML basic string, whatever quotes a factory's arguments hold.
    return f"""
[tool.pydeploy]
# The {framework} app to serve ({reason}).
app = {json.dumps(target)}
# Port inside the container; the PORT environment variable overrides it at run time.
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
# An HTTP path that answers 2xx when the app is up (probed without curl).
# path = "/"
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
