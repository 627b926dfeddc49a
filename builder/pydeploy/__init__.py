"""pydeploy: build slim, reproducible, non-root container images for Python web apps."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pydeploy")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
