"""Fixtures for the builder stage's unit tests: a fake engine, a fake clock and plans of
small projects written to a temporary directory."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.unit.builder.fake_engine import BASE, Clock, FakeEngine

from pydeploy.config.project import load_project
from pydeploy.plan.index import CA_ENV_VARS
from pydeploy.plan.planner import BuildPlan, Overrides, make_plan

MakePlan = Callable[..., BuildPlan]
WSGI_APP = "def app(environ, start_response):\n    return []\n"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(time, "monotonic", fake.monotonic)
    monkeypatch.setattr(time, "sleep", fake.sleep)
    return fake


@pytest.fixture
def engine(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """A fake engine holding the base image; the host's CA settings do not leak in."""
    for name in CA_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return FakeEngine()


@pytest.fixture
def make(tmp_path: Path) -> MakePlan:
    """make(tool="build-packages = [...]", server="interface = ...", source=app.py's text)
    -> the project's plan. The default app.py is a WSGI function (the plan says so)."""
    counter = iter(range(1000))

    def plan(tool: str = "", server: str = "", source: str = WSGI_APP) -> BuildPlan:
        root = tmp_path / f"p{next(counter)}"
        root.mkdir()
        (root / "pyproject.toml").write_text(
            textwrap.dedent(
                """\
                [project]
                name = "demo"
                version = "1.0"
                dependencies = ["flask>=3"]

                [tool.pydeploy]
                app = "app:app"
                """
            )
            + tool
            + ("\n[tool.pydeploy.server]\n" + server if server else ""),
            encoding="utf-8",
        )
        (root / "app.py").write_text(source, encoding="utf-8")
        return make_plan(load_project(root), Overrides(base_image=BASE))

    return plan
