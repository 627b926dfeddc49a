"""The progress callback every build stage reports through (the cli renders it)."""

from __future__ import annotations

from collections.abc import Callable

# (step name, seconds since the build started, optional detail such as "cached").
Progress = Callable[[str, float, "str | None"], None]
