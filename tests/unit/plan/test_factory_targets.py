"""App factories as `tool.pydeploy.app` targets: parsing (gunicorn's grammar, literals
only), what the plan makes of them for each server, and the errors that keep a factory
named without its call (or with arguments uvicorn cannot pass) from reaching an image."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from pydeploy.config.project import load_project
from pydeploy.errors import ConfigError
from pydeploy.payload import launcher
from pydeploy.plan import apptarget, serverargs
from pydeploy.plan.planner import BuildPlan, Overrides, make_plan

FLASK_FACTORY = """\
from flask import Flask

def create_app(config_name="production", debug=False):
    app = Flask(__name__)
    return app
"""
BARE = '[project]\nname = "x"\nversion = "1"\n\n[tool.pydeploy]\n'
STARLETTE_FACTORY = """\
from starlette.applications import Starlette

def make_app():
    return Starlette()
"""


@pytest.mark.parametrize(
    ("text", "module", "attribute", "factory", "arguments"),
    [
        ("main:app", "main", "app", False, False),
        ("pkg.wsgi:application.inner", "pkg.wsgi", "application.inner", False, False),
        ("flaskr:create_app()", "flaskr", "create_app", True, False),
        ('app:create_app("production", debug=False)', "app", "create_app", True, True),
        ("app:make(-1, [1, 2.5], {'a': (None, True)}, name=b'x')", "app", "make", True, True),
        ("app:make( )", "app", "make", True, False),
    ],
)
def test_targets_parse(
    text: str, module: str, attribute: str, factory: bool, arguments: bool
) -> None:
    target = apptarget.parse(text)
    assert (target.module, target.attribute, target.factory, target.arguments) == (
        module,
        attribute,
        factory,
        arguments,
    )
    assert target.reference == f"{module}:{attribute}"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("main", "must be `module:attribute`"),
        ("main:", "is not an attribute name"),
        ("1main:app", "must be `module:attribute`"),
        ("main:app-x", "is not an attribute name"),
        ("main:create_app(", "is not a valid call"),
        ("main:create_app(config=)", "is not a valid call"),
        ("main:app[0]", "is not an attribute name"),
        ("main:create_app(os.environ['X'])", "is not a literal"),
        ("main:create_app(get())", "is not a literal"),
        ("main:create_app(1 + 2)", "is not a literal"),
        ("main:create_app(*args)", "unpacks arguments"),
        ("main:create_app(**kw)", "unpacks arguments"),
        ("main:factories.create_app()", "must be a simple name"),
        ("main:create_app()()", "must be a simple name"),
        ("main:(lambda: 1)()", "must be a simple name"),
        ("main:create_app() + 1", "neither an attribute name nor a factory call"),
    ],
)
def test_bad_targets_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(apptarget.TargetError, match=problem):
        apptarget.parse(text)


def write(root: Path, table: str, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "shop"\nversion = "2.0"\ndependencies = ["flask>=3"]\n\n'
        "[tool.pydeploy]\n" + textwrap.dedent(table),
        encoding="utf-8",
    )
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


def plan_of(root: Path) -> BuildPlan:
    return make_plan(load_project(root), Overrides(base_image="local/base:1"))


def test_a_bad_target_is_a_config_error_when_read(tmp_path: Path) -> None:
    root = write(tmp_path, "app = \"web:create_app(os.getenv('X'))\"\n", {})
    with pytest.raises(ConfigError, match="is not a literal") as caught:
        load_project(root)
    assert "tool.pydeploy" in str(caught.value) or "app" in str(caught.value)


def test_a_factory_call_under_gunicorn_is_passed_as_written(tmp_path: Path) -> None:
    target = 'web:create_app("staging", debug=True)'
    plan = plan_of(write(tmp_path, f"app = {json.dumps(target)}\n", {"web.py": FLASK_FACTORY}))
    # The interface comes from the scanned factory's framework.
    assert (plan.app, plan.interface, plan.server) == (target, "wsgi", "gunicorn")
    document = plan.launch.document()
    assert document["factory"] is True
    config = launcher.parse_config(document)
    argv = launcher.gunicorn_argv(config, workers=2, port=8000, gunicorn_version=(23,))
    assert argv[-1] == target
    assert "--factory" not in argv


def test_a_zero_argument_factory_under_uvicorn_gets_factory_flag(tmp_path: Path) -> None:
    table = 'app = "svc:make_app()"\nserver.type = "uvicorn"\n'
    plan = plan_of(write(tmp_path, table, {"svc.py": STARLETTE_FACTORY}))
    assert (plan.interface, plan.server) == ("asgi", "uvicorn")
    config = launcher.parse_config(plan.launch.document())
    argv = launcher.uvicorn_argv(config, workers=2, port=8000, uvicorn_version=None)
    assert argv[1:3] == ["svc:make_app", "--factory"]


def test_a_factory_with_arguments_under_uvicorn_is_a_config_error(tmp_path: Path) -> None:
    table = 'app = "svc:make_app(\'prod\')"\nserver.type = "uvicorn"\n'
    with pytest.raises(ConfigError, match="uvicorn cannot pass") as caught:
        plan_of(write(tmp_path, table, {"svc.py": STARLETTE_FACTORY}))
    assert "gunicorn-uvicorn" in (caught.value.hint or "")
    # auto picks gunicorn-uvicorn for the ASGI factory, which passes the arguments.
    auto = plan_of(write(tmp_path / "auto", "app = \"svc:make_app('prod')\"\n",
                         {"svc.py": STARLETTE_FACTORY}))  # fmt: skip
    assert auto.server == "gunicorn-uvicorn"


def test_the_launcher_refuses_a_factory_with_arguments_under_uvicorn() -> None:
    document = {
        "app": "svc:make('x')", "server": "uvicorn", "factory": True, "healthcheck_path": "/",
    }  # fmt: skip
    with pytest.raises(launcher.LaunchError, match="without arguments"):
        launcher.parse_config(document)
    for app in ("svc:make()", "svc:make( )"):
        assert launcher.parse_config({**document, "app": app}).factory
    with pytest.raises(launcher.LaunchError, match="'factory' must be true or false"):
        launcher.parse_config({**document, "factory": "yes"})


@pytest.mark.parametrize(
    ("files", "app", "call"),
    [
        ({"web.py": FLASK_FACTORY}, "web:create_app", "web:create_app()"),
        (
            {"web.py": FLASK_FACTORY.replace('config_name="production"', "config_name")},
            "web:create_app",
            "web:create_app(...)",
        ),
    ],
)
def test_a_factory_named_without_its_call_is_a_config_error(
    tmp_path: Path, files: dict[str, str], app: str, call: str
) -> None:
    """The server would call `create_app(environ, start_response)`: 500 on every request."""
    with pytest.raises(ConfigError, match="names an app factory") as caught:
        plan_of(write(tmp_path, f'app = "{app}"\nserver.interface = "wsgi"\n', files))
    assert f'app = "{call}"' in (caught.value.hint or "")


def test_an_object_target_keeps_launch_json_as_it_was(tmp_path: Path) -> None:
    plan = plan_of(
        write(tmp_path, 'app = "web:app"\n', {"web.py": FLASK_FACTORY + "app = create_app()\n"})
    )
    assert "factory" not in plan.launch.document()
    assert not launcher.parse_config(plan.launch.document()).factory


def test_detection_proposes_a_factory_when_there_is_no_app_object(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "pyproject.toml").write_text(BARE, "utf-8")
    (root / "web.py").write_text(FLASK_FACTORY, encoding="utf-8")
    plan = plan_of(root)
    assert plan.app == "web:create_app()"
    assert plan.app_origin.startswith("detected: `def create_app()` in web.py")
    assert plan.launch.document()["factory"] is True


def test_only_a_factory_needing_arguments_is_named_in_the_error(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "pyproject.toml").write_text(BARE, "utf-8")
    source = FLASK_FACTORY.replace('config_name="production"', "config_name")
    (root / "web.py").write_text(source, encoding="utf-8")
    with pytest.raises(ConfigError, match="only an app factory") as caught:
        plan_of(root)
    assert 'app = "web:create_app(...)"' in str(caught.value)


@pytest.mark.parametrize(
    ("server", "args", "problem"),
    [
        ("uvicorn", ["--factory"], "`--factory` is set by pydeploy from `tool.pydeploy.app`"),
        ("gunicorn", ["--preload"], None),
        ("gunicorn-uvicorn", ["--log-level", "info"], None),
    ],
)
def test_extra_args_leave_the_factory_flag_to_the_target(
    server: str, args: list[str], problem: str | None
) -> None:
    found = serverargs.problem(server, args)
    assert (found is None) if problem is None else (problem in (found or ""))
