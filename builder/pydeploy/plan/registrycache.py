"""Where the registry cache is read and written: `--cache-from`/`--cache-to`, the `cache`
key, and the default (the push repository when the build pushes). Pure.

The rule, stated once: a flag decides its own side; else `cache` names both sides (`false`:
neither); else a build that pushes uses the repository of its first pushed tag for both,
and a build that does not push uses none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydeploy.plan import references
from pydeploy.plan.references import Reference


@dataclass(frozen=True)
class CachePlan:
    """The repositories named before the outputs are known (None: not named)."""

    pull: str | None
    push: str | None
    disabled: bool  # `cache = false`: no default either
    origin: str  # what named them, for `plan`

    def to_json(self) -> dict[str, object]:
        return {"from": self.pull, "to": self.push, "disabled": self.disabled,
                "origin": self.origin}  # fmt: skip

    def describe(self) -> str:
        """One line for `pydeploy plan`."""
        if self.disabled:
            return f"none ({self.origin} = false)"
        if self.pull is None and self.push is None:
            return "the push repository, when the build pushes (default)"
        sides = [f"from {self.pull}" if self.pull else "", f"to {self.push}" if self.push else ""]
        return ", ".join(s for s in sides if s) + f" ({self.origin})"


@dataclass(frozen=True)
class CacheRefs:
    """The repositories this build reads records from and writes them to."""

    pull: Reference | None = None
    push: Reference | None = None

    @property
    def enabled(self) -> bool:
        return self.pull is not None or self.push is not None


NO_CACHE = CachePlan(None, None, disabled=False, origin="default")


def plan_cache(
    cache_from: str | None, cache_to: str | None, configured: str | Literal[False] | None
) -> CachePlan:
    """The flags over `tool.pydeploy.cache` (validated there); each flag checked here."""
    for flag, value in (("--cache-from", cache_from), ("--cache-to", cache_to)):
        if value is not None:
            references.check(references.repository_problem(value), value, flag)
    if cache_from is not None or cache_to is not None:
        return CachePlan(cache_from, cache_to, disabled=False, origin="--cache-from/--cache-to")
    if configured is False:
        return CachePlan(None, None, disabled=True, origin="tool.pydeploy.cache")
    if configured:
        return CachePlan(configured, configured, disabled=False, origin="tool.pydeploy.cache")
    return NO_CACHE


def cache_refs(plan: CachePlan, tags: tuple[str, ...], pushing: bool) -> CacheRefs:
    """The repositories for this build's outputs (`tags`: full references when pushing)."""
    if plan.pull is not None or plan.push is not None:
        return CacheRefs(_repository(plan.pull), _repository(plan.push))
    if plan.disabled or not pushing or not tags:
        return CacheRefs()
    first = references.try_parse(tags[0])
    if first is None:
        return CacheRefs()
    repository = Reference(first.registry, first.repository)
    return CacheRefs(repository, repository)


def _repository(text: str | None) -> Reference | None:
    if text is None:
        return None
    parsed = references.parse_reference(text)
    return Reference(parsed.registry, parsed.repository)
