"""Helpers shared by the monorepo's services (a uv workspace library member)."""

from __future__ import annotations

import datetime as dt

import humanize

__version__ = "0.1.0"


def greeting(name: str) -> str:
    """The greeting every service returns, proving this library is installed."""
    return f"Hello from shared, {name}!"


def uptime(started: dt.datetime, now: dt.datetime | None = None) -> str:
    """A human-readable age (`3 minutes`), proving the library's own dependency is installed."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return str(humanize.naturaldelta(now - started))
