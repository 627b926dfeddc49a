"""How the app check's report on a factory target, or on a factory-shaped object, becomes
an error before any image exists: the path where a factory named without its call was
forced to `server.interface = "wsgi"` and answered 500 to every request is closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.unit.builder.conftest import MakePlan
from tests.unit.builder.fake_engine import BASE, FakeEngine, checks

from pydeploy.builder import appcheck
from pydeploy.builder.transcript import Reporting
from pydeploy.config.project import load_project
from pydeploy.errors import AppCheckError
from pydeploy.plan.planner import BuildPlan, Overrides, make_plan

FACTORY_APP = "def create_app(config=None):\n    return make(config)\n"


def plan_of(root: Path, app: str, server: str = "", source: str = FACTORY_APP) -> BuildPlan:
    root.mkdir()
    table = f"[project]\nname = 'demo'\nversion = '1.0'\n\n[tool.pydeploy]\napp = {app!r}\n"
    if server:
        table += f"\n[tool.pydeploy.server]\n{server}"
    (root / "pyproject.toml").write_text(table, encoding="utf-8")
    (root / "app.py").write_text(source, encoding="utf-8")
    return make_plan(load_project(root), Overrides(base_image=BASE))


def check(engine: FakeEngine, plan: BuildPlan, _tmp_path: Path, report: dict[str, Any]) -> str:
    engine.handlers["check"] = checks(report)
    return appcheck.run_check(engine, plan, BASE, Reporting(_quiet)).interface


def _quiet(_step: str, _elapsed: float, _detail: str | None) -> None:
    return None


@pytest.mark.parametrize("server", ["", 'interface = "wsgi"\n', 'interface = "asgi"\n'])
def test_a_factory_named_without_its_call_fails_even_with_a_forced_interface(
    engine: FakeEngine, make: MakePlan, tmp_path: Path, server: str
) -> None:
    plan = plan_of(tmp_path / "p", "app:create_app", server)
    report = {"ok": False, "kind": "no-arguments", "type": "builtins.function"}
    with pytest.raises(AppCheckError, match="takes no arguments") as caught:
        check(engine, plan, tmp_path, report)
    assert 'app = "app:create_app()"' in (caught.value.hint or "")
    assert "server.interface" not in (caught.value.hint or "")


def test_a_forced_interface_the_signature_cannot_take_is_an_error(
    engine: FakeEngine, make: MakePlan, tmp_path: Path
) -> None:
    plan = make(server='interface = "wsgi"\n', source="def app(config_name):\n    pass\n")
    report = {"ok": False, "kind": "unknown", "type": "builtins.function", "accepts": ["asgi"]}
    with pytest.raises(AppCheckError, match="does not take the WSGI call"):
        check(engine, plan, tmp_path, report)
    # ... while one it can take (ASGI 2's single argument) still settles it.
    asgi = make(server='interface = "asgi"\n', source="def app(scope):\n    pass\n")
    assert check(engine, asgi, tmp_path, report) == "asgi"


def test_a_factory_call_that_returns_an_app_decides_the_interface(
    engine: FakeEngine, make: MakePlan, tmp_path: Path
) -> None:
    plan = plan_of(tmp_path / "p", "app:create_app()")
    report = {"ok": True, "kind": "asgi", "interface": "asgi", "factory": True}
    assert check(engine, plan, tmp_path, report) == "asgi"


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ({"kind": "factory", "error": "KeyError: 'SECRET'"}, "calling the factory failed"),
        ({"kind": "not-callable", "type": "builtins.NoneType"}, "returned a builtins.NoneType"),
        ({"kind": "no-arguments", "type": "builtins.function"}, "returned a builtins.function"),
        ({"kind": "class", "type": "builtins.type"}, "returned a builtins.type"),
        ({"kind": "not-a-factory", "type": "builtins.int"}, "which is not callable"),
        ({"kind": "async-factory", "type": "builtins.function"}, "without awaiting"),
    ],
)
def test_a_factory_call_that_fails_or_returns_no_app_is_an_error(
    engine: FakeEngine,
    make: MakePlan,
    tmp_path: Path,
    report: dict[str, Any],
    message: str,
) -> None:
    plan = plan_of(tmp_path / "p", 'app:create_app("prod")', 'interface = "wsgi"\n')
    with pytest.raises(AppCheckError, match=message) as caught:
        check(engine, plan, tmp_path, {"ok": False, "factory": True, **report})
    assert "tool.pydeploy.app" in (caught.value.hint or "")


def test_a_bad_target_reported_by_the_check_is_an_error(
    engine: FakeEngine, make: MakePlan, tmp_path: Path
) -> None:
    report = {"ok": False, "kind": "target", "error": "must be `module:attribute`"}
    with pytest.raises(AppCheckError, match="is not an app target"):
        check(engine, make(), tmp_path, report)
