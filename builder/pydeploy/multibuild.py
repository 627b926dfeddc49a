"""`pydeploy build --all`: every deployable member of a uv workspace, in parallel.

Members share the builder image, the uv cache and the layer store; each gets its own
Engine (and so its own container bookkeeping), so one failure or interrupt cleans up
exactly what it started. A failing service never stops the others.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydeploy import build as build_mod
from pydeploy.config import workspace
from pydeploy.config.project import load_project
from pydeploy.engine.client import Engine
from pydeploy.errors import ConfigError, InterruptError, PydeployError
from pydeploy.plan.planner import Overrides, make_plan

ServiceProgress = Callable[[str, str, float, "str | None"], None]


@dataclass
class ServiceOutcome:
    name: str
    path: Path
    result: build_mod.BuildResult | None = None
    error: PydeployError | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.result is not None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "name": self.name,
            "path": str(self.path),
            "status": "ok" if self.ok else "failed",
            "seconds": round(self.seconds, 3),
        }
        if self.result is not None:
            document["result"] = self.result.to_json()
        if self.error is not None:
            document["error"] = {
                "kind": self.error.kind,
                "exit_code": self.error.exit_code,
                "message": self.error.message,
            }
        return document


def select_members(
    root: Path, only: tuple[str, ...], changed_since: str | None
) -> list[workspace.Member]:
    ws_root = workspace.find_workspace_root(root)
    if ws_root is None:
        raise ConfigError(
            f"--all needs a uv workspace, but no pyproject.toml with [tool.uv.workspace] "
            f"was found at or above {root}.",
            hint="Run it in the workspace, or build one project with `pydeploy build DIR`.",
        )
    every = workspace.members(ws_root)
    chosen = workspace.select(workspace.deployable(ws_root, every), only)
    if changed_since:
        # Every member, libraries included: a change in a library marks its dependents.
        changed = {m.name for m in workspace.changed_since(ws_root, every, changed_since)}
        chosen = [m for m in chosen if m.name in changed]
    return chosen


def build_members(
    members: list[workspace.Member],
    overrides: Overrides,
    options: build_mod.BuildOptions,
    progress: ServiceProgress,
    jobs: int | None = None,
) -> list[ServiceOutcome]:
    """Build each member; returns one outcome per member, in the members' order."""
    outcomes = [ServiceOutcome(m.name, m.path) for m in members]
    engines: list[Engine] = []
    lock = threading.Lock()
    workers = max(1, min(jobs or (os.cpu_count() or 1), len(members) or 1))

    def one(outcome: ServiceOutcome) -> None:
        started = time.monotonic()
        try:
            plan = make_plan(load_project(outcome.path), overrides, os.environ)
            # Its containers are removed and its connections closed when the build ends.
            with Engine.connect() as engine:
                with lock:
                    engines.append(engine)
                outcome.result = build_mod.build(
                    plan,
                    engine,
                    options,
                    lambda step, elapsed, detail: progress(outcome.name, step, elapsed, detail),
                )
        except PydeployError as exc:
            outcome.error = exc
        except Exception as exc:  # noqa: BLE001 - one service's bug must not stop the rest
            outcome.error = PydeployError(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            outcome.seconds = time.monotonic() - started
            progress(outcome.name, "done" if outcome.ok else "failed", outcome.seconds, None)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pydeploy-build")
    try:
        futures = [pool.submit(one, outcome) for outcome in outcomes]
        for future in futures:
            future.result()
    except KeyboardInterrupt:
        with lock:
            for engine in engines:
                engine.cleanup()
        pool.shutdown(wait=True, cancel_futures=True)
        raise InterruptError(
            "Build interrupted; every service's containers were removed."
        ) from None
    pool.shutdown(wait=True)
    return outcomes


def exit_code(outcomes: list[ServiceOutcome]) -> int:
    """0 when every service built; else the exit code of the first failure (by name)."""
    failed = [o for o in outcomes if not o.ok]
    return failed[0].error.exit_code if failed and failed[0].error else 0
