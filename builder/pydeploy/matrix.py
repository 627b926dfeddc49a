"""`pydeploy build --all --list`: the services `build --all` would build, as a CI job
matrix. Builds nothing and needs no engine.

The selection is multibuild's (`select_members`) and every reference comes from
`make_plan` with the same Overrides, so the list names exactly what `build --all` would
tag and push with the same flags. `service_list` is pure; `list_services` reads the
workspace (and asks git for --changed-since).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydeploy.config import workspace
from pydeploy.config.project import load_project
from pydeploy.multibuild import select_members
from pydeploy.plan.planner import BuildPlan, Overrides, make_plan


@dataclass(frozen=True)
class ListedService:
    name: str  # the member's normalized name, what `--only` takes
    directory: str  # relative to the workspace root, posix
    tags: tuple[str, ...]  # every reference `build` tags (and pushes with --push)
    app: str

    @property
    def image(self) -> str:
        return self.tags[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "directory": self.directory,
            "image": self.image,
            "tags": list(self.tags),
            "app": self.app,
        }

    def matrix_entry(self) -> dict[str, str]:
        """One CI job's values: strings only, since a matrix shows them in job names
        (an array would read `Array`)."""
        return {"name": self.name, "directory": self.directory, "image": self.image}


@dataclass(frozen=True)
class ServiceList:
    workspace: Path
    changed_since: str | None
    services: tuple[ListedService, ...]

    def to_json(self) -> dict[str, Any]:
        """The documented shape (schema/build-list.schema.json). `include` is what a
        GitHub Actions `strategy.matrix.include` takes; it is empty when nothing is
        selected, and a matrix without entries fails the workflow, so the build job must
        be skipped then."""
        return {
            "workspace": str(self.workspace),
            "changed_since": self.changed_since,
            "services": [s.to_json() for s in self.services],
            "include": [s.matrix_entry() for s in self.services],
        }


def service_list(
    root: Path, changed_since: str | None, plans: Sequence[tuple[workspace.Member, BuildPlan]]
) -> ServiceList:
    """The list for the selected members and their plans, in the given order."""
    services = tuple(
        ListedService(
            name=member.name,
            directory=member.path.relative_to(root).as_posix(),
            tags=plan.tags,
            app=plan.app,
        )
        for member, plan in plans
    )
    return ServiceList(root, changed_since, services)


def list_services(
    directory: Path,
    only: tuple[str, ...],
    changed_since: str | None,
    overrides: Overrides,
    environ: Mapping[str, str] | None = None,
) -> ServiceList:
    """What `build --all DIRECTORY` with these flags would build (ConfigError outside a
    workspace, for an unknown `--only` or a bad `--changed-since`, as `build` gives)."""
    start = directory.resolve()
    members = select_members(start, only, changed_since)
    root = workspace.find_workspace_root(start) or start  # select_members raised if none
    env = os.environ if environ is None else environ
    plans = [(m, make_plan(load_project(m.path), overrides, env)) for m in members]
    return service_list(root, changed_since, plans)
