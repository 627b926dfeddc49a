"""Where pydeploy's host cache lives: the one place that knows it.

Importing nothing heavy, so the CLI's fast paths (the no-change record, failure logs)
find the cache without loading the build."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(explicit: Path | None = None) -> Path:
    """`explicit`, else PYDEPLOY_CACHE_DIR, else `$XDG_CACHE_HOME/pydeploy` (default
    `~/.cache/pydeploy`)."""
    if explicit:
        return explicit
    env = os.environ.get("PYDEPLOY_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pydeploy"
