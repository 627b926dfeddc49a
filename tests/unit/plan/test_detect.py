"""Static app detection: the shipped examples and synthetic project layouts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pydeploy.plan import detect
from pydeploy.plan.detect import Detection, detect_app, interface_of, scan_project

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def make_project(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def detected(root: Path, files: dict[str, str]) -> Detection:
    detection = detect_app(make_project(root, files))
    assert detection is not None, f"nothing detected in {sorted(files)}"
    return detection


FLASK_APP = "from flask import Flask\napp = Flask(__name__)\n"
FASTAPI_APP = "from fastapi import FastAPI\napp = FastAPI()\n"


@pytest.mark.parametrize(
    ("example", "target", "framework", "interface", "source"),
    [
        ("flask-app", "app:app", "flask", "wsgi", "app.py"),
        ("fastapi-app", "main:app", "fastapi", "asgi", "main.py"),
        ("django-app", "mysite.wsgi:application", "django", "wsgi", "mysite/settings.py"),
    ],
)
def test_examples_are_detected(
    example: str, target: str, framework: str, interface: str, source: str
) -> None:
    detection = detect_app(EXAMPLES / example)
    assert detection is not None
    assert (detection.target, detection.framework, detection.interface, detection.source) == (
        target,
        framework,
        interface,
        source,
    )
    assert source in detection.reason


def test_example_config_matches_detection() -> None:
    tomllib = pytest.importorskip("tomllib")  # stdlib from 3.11
    for example in ("flask-app", "fastapi-app", "django-app"):
        pyproject = tomllib.loads((EXAMPLES / example / "pyproject.toml").read_text())
        detection = detect_app(EXAMPLES / example)
        assert detection is not None
        assert pyproject["tool"]["pydeploy"]["app"] == detection.target, example
        assert "build-system" not in pyproject, example


@pytest.mark.parametrize(
    ("files", "target", "framework", "interface"),
    [
        pytest.param(
            {"src/mypkg/__init__.py": "", "src/mypkg/web.py": FLASK_APP},
            "mypkg.web:app",
            "flask",
            "wsgi",
            id="src-layout",
        ),
        pytest.param(
            {"wsgi.py": "import flask\napplication = flask.Flask(__name__)\n"},
            "wsgi:application",
            "flask",
            "wsgi",
            id="flask-module-import",
        ),
        pytest.param(
            {"api/__init__.py": "", "api/main.py": FASTAPI_APP},
            "api.main:app",
            "fastapi",
            "asgi",
            id="fastapi-in-package",
        ),
        pytest.param(
            {"server.py": "from fastapi import FastAPI as API\napi: API = API(title='x')\n"},
            "server:api",
            "fastapi",
            "asgi",
            id="fastapi-aliased-annotated",
        ),
        pytest.param(
            {"app.py": "from starlette.applications import Starlette\napp = Starlette()\n"},
            "app:app",
            "starlette",
            "asgi",
            id="starlette",
        ),
        pytest.param(
            {"svc.py": "import starlette.applications\nweb = starlette.applications.Starlette()\n"},
            "svc:web",
            "starlette",
            "asgi",
            id="starlette-dotted",
        ),
        pytest.param(
            {"app.py": "from quart import Quart\napp = Quart(__name__)\n"},
            "app:app",
            "quart",
            "asgi",
            id="quart",
        ),
        pytest.param(
            {"app.py": "from litestar import *\napp = Litestar(route_handlers=[])\n"},
            "app:app",
            "litestar",
            "asgi",
            id="litestar-star-import",
        ),
        pytest.param(
            {
                "wsgi.py": """\
                def application(environ, start_response):
                    start_response("200 OK", [])
                    return [b"hi"]
                """
            },
            "wsgi:application",
            "wsgi",
            "wsgi",
            id="plain-wsgi-callable",
        ),
        pytest.param(
            {
                "main.py": """\
                try:
                    from fastapi import FastAPI
                except ImportError:
                    raise
                else:
                    app = FastAPI()
                """
            },
            "main:app",
            "fastapi",
            "asgi",
            id="inside-try-else",
        ),
    ],
)
def test_synthetic_projects(
    tmp_path: Path, files: dict[str, str], target: str, framework: str, interface: str
) -> None:
    detection = detected(tmp_path, files)
    assert (detection.target, detection.framework, detection.interface) == (
        target,
        framework,
        interface,
    )


def test_src_layout_source_keeps_the_real_path(tmp_path: Path) -> None:
    detection = detected(tmp_path, {"src/mypkg/__init__.py": "", "src/mypkg/web.py": FLASK_APP})
    assert detection.source == "src/mypkg/web.py"
    assert detection.reason == "`app = Flask(...)` in src/mypkg/web.py"


DJANGO_MANAGE = """\
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
"""
DJANGO_WSGI = """\
from django.core.wsgi import get_wsgi_application
application = get_wsgi_application()
"""
DJANGO_ASGI = """\
from django.core.asgi import get_asgi_application
application = get_asgi_application()
"""


def test_django_asgi_application_setting(tmp_path: Path) -> None:
    detection = detected(
        tmp_path,
        {
            "manage.py": DJANGO_MANAGE,
            "proj/__init__.py": "",
            "proj/settings.py": (
                'WSGI_APPLICATION = "proj.wsgi.application"\n'
                'ASGI_APPLICATION = "proj.routing.application"\n'
            ),
            "proj/wsgi.py": DJANGO_WSGI,
            "proj/routing.py": DJANGO_ASGI,
        },
    )
    assert (detection.target, detection.framework, detection.interface) == (
        "proj.routing:application",
        "django",
        "asgi",
    )
    assert detection.reason == '`ASGI_APPLICATION = "proj.routing.application"` in proj/settings.py'


def test_django_without_application_setting_falls_back_to_wsgi_py(tmp_path: Path) -> None:
    detection = detected(
        tmp_path,
        {
            "manage.py": DJANGO_MANAGE,
            "proj/__init__.py": "",
            "proj/settings.py": "DEBUG = False\n",
            "proj/wsgi.py": "application = object()\n",  # not recognisable on its own
        },
    )
    assert (detection.target, detection.interface, detection.source) == (
        "proj.wsgi:application",
        "wsgi",
        "proj/wsgi.py",
    )


def test_django_settings_named_by_manage_py_win_through_star_imports(tmp_path: Path) -> None:
    detection = detected(
        tmp_path,
        {
            "manage.py": DJANGO_MANAGE.replace("proj.settings", "proj.settings.production"),
            "proj/__init__.py": "",
            "proj/settings/__init__.py": "",
            "proj/settings/shared.py": 'WSGI_APPLICATION = "proj.server.application"\n',
            "proj/settings/production.py": "from .shared import *\nDEBUG = False\n",
            # Sorts first, but nothing names it as DJANGO_SETTINGS_MODULE.
            "proj/settings/dev.py": 'ASGI_APPLICATION = "proj.asgi.application"\n',
            "proj/server.py": DJANGO_WSGI,
            "proj/asgi.py": DJANGO_ASGI,
        },
    )
    assert (detection.target, detection.interface, detection.source) == (
        "proj.server:application",
        "wsgi",
        "proj/settings/shared.py",
    )


def test_django_project_beats_a_top_level_main(tmp_path: Path) -> None:
    detection = detected(
        tmp_path,
        {
            "main.py": FASTAPI_APP,
            "manage.py": DJANGO_MANAGE,
            "proj/__init__.py": "",
            "proj/settings.py": 'WSGI_APPLICATION = "proj.wsgi.application"\n',
            "proj/wsgi.py": DJANGO_WSGI,
        },
    )
    assert detection.target == "proj.wsgi:application"


@pytest.mark.parametrize(
    "source",
    [
        "app = Flask(__name__)\n",
        "class Flask:\n    pass\n\napp = Flask(__name__)\n",
        "from mylib import Flask\napp = Flask(__name__)\n",
        "import flask\nfrom mylib import FastAPI\napp = FastAPI()\n",
        "from flask import Flask\napp = Flask.from_config()\n",
        "from flask import Flask\nif __name__ == '__main__':\n    app = Flask(__name__)\n",
    ],
    ids=[
        "no-import",
        "local-class",
        "other-module",
        "wrong-framework",
        "not-a-constructor",
        "main-guard",
    ],
)
def test_look_alikes_are_not_detected(tmp_path: Path, source: str) -> None:
    assert detect_app(make_project(tmp_path, {"app.py": source})) is None


def test_syntax_error_is_skipped_and_reported(tmp_path: Path) -> None:
    broken = "from flask import Flask\nother = Flask(\n"
    make_project(tmp_path, {"broken.py": broken, "app.py": FLASK_APP, "junk.py": "def (:\n"})
    scan = scan_project(tmp_path)
    assert scan.best is not None
    assert scan.best.target == "app:app"
    # junk.py cannot hold an app (it names no framework), so it is never parsed.
    assert len(scan.skipped) == 1
    assert scan.skipped[0].startswith("broken.py: ")


def test_unreadable_sources_do_not_crash(tmp_path: Path) -> None:
    make_project(tmp_path, {"app.py": FLASK_APP})
    (tmp_path / "nul.py").write_bytes(b"Flask = 1\x00\n")
    (tmp_path / "latin.py").write_bytes(b"Flask = '\xff'\n")  # not UTF-8, no coding cookie
    scan = scan_project(tmp_path)
    assert scan.best is not None
    assert sorted(line.split(":")[0] for line in scan.skipped) == ["latin.py", "nul.py"]


def test_user_code_warnings_are_not_raised(tmp_path: Path) -> None:
    # pytest runs with filterwarnings=error: an invalid escape would fail parsing otherwise.
    detection = detected(tmp_path, {"app.py": FLASK_APP + 'PATTERN = "\\d+"\n'})
    assert detection.target == "app:app"


def test_user_code_is_never_imported(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    detection = detected(
        tmp_path,
        {"app.py": f"from pathlib import Path\nPath({str(marker)!r}).touch()\n{FLASK_APP}"},
    )
    assert detection.target == "app:app"
    assert not marker.exists()


def test_nothing_found(tmp_path: Path) -> None:
    make_project(tmp_path, {"lib.py": "def add(a, b):\n    return a + b\n", "README.md": "x"})
    scan = scan_project(tmp_path)
    assert scan.best is None
    assert scan.detections == ()
    assert scan.candidates == ()
    assert detect_app(tmp_path) is None


def test_empty_or_missing_directory(tmp_path: Path) -> None:
    assert detect_app(tmp_path) is None
    assert detect_app(tmp_path / "missing") is None


FLASK_FACTORY = """\
from flask import Flask

def create_app(config=None):
    app = Flask(__name__)
    return app
"""


def test_factory_only_flask_is_proposed_as_its_call(tmp_path: Path) -> None:
    make_project(tmp_path, {"myapp/__init__.py": FLASK_FACTORY})
    scan = scan_project(tmp_path)
    assert scan.best is not None
    assert (scan.best.target, scan.best.framework, scan.best.interface, scan.best.source) == (
        "myapp:create_app()",
        "flask",
        "wsgi",
        "myapp/__init__.py",
    )
    assert "factory" in scan.best.reason
    assert scan.candidates == ()
    [factory] = scan.factories
    assert (factory.reference, factory.required, factory.is_async) == (
        "myapp:create_app",
        (),
        False,
    )
    assert scan.factory("myapp:create_app") == factory
    assert scan.factory("myapp:other") is None


def test_factory_importing_inside_the_function(tmp_path: Path) -> None:
    make_project(
        tmp_path,
        {"factory.py": "def make_app():\n    import fastapi\n    return fastapi.FastAPI()\n"},
    )
    best = scan_project(tmp_path).best
    assert best is not None
    assert (best.target, best.framework, best.interface) == (
        "factory:make_app()",
        "fastapi",
        "asgi",
    )


def test_factory_needing_arguments_is_a_candidate_naming_them(tmp_path: Path) -> None:
    source = (
        "from flask import Flask\n"
        "def create_app(config_name, *, debug=False, secret):\n"
        "    return Flask(__name__)\n"
    )
    scan = scan_project(make_project(tmp_path, {"web/__init__.py": source}))
    assert scan.best is None
    [candidate] = scan.candidates
    assert candidate.target == "web:create_app"
    assert "config_name, secret" in candidate.reason
    assert 'app = "web:create_app(...)"' in candidate.reason


def test_async_factory_is_never_proposed(tmp_path: Path) -> None:
    source = "from litestar import Litestar\nasync def make_app():\n    return Litestar([])\n"
    scan = scan_project(make_project(tmp_path, {"svc.py": source}))
    assert scan.best is None
    [candidate] = scan.candidates
    assert "without awaiting" in candidate.reason


def test_function_that_runs_an_app_is_not_a_factory(tmp_path: Path) -> None:
    source = "from flask import Flask\ndef main():\n    app = Flask(__name__)\n    app.run()\n"
    scan = scan_project(make_project(tmp_path, {"run.py": source}))
    assert (scan.best, scan.candidates, scan.factories) == (None, (), ())


def test_nested_return_does_not_make_a_factory(tmp_path: Path) -> None:
    source = (
        "from flask import Flask\n"
        "def main():\n"
        "    app = Flask(__name__)\n"
        "    def view():\n"
        "        return 'x'\n"
        "    app.run()\n"
    )
    assert scan_project(make_project(tmp_path, {"run.py": source})).factories == ()


def test_module_level_app_beats_a_factory_and_preferred_names_win(tmp_path: Path) -> None:
    factories = (
        "from starlette.applications import Starlette\n"
        "def build():\n    return Starlette()\n"
        "def create_app():\n    return Starlette()\n"
    )
    make_project(tmp_path, {"svc/factories.py": factories})
    targets = [d.target for d in scan_project(tmp_path).detections]
    assert targets == ["svc.factories:create_app()", "svc.factories:build()"]
    make_project(tmp_path, {"svc/deep/main.py": "from fastapi import FastAPI\napp = FastAPI()\n"})
    assert detect_app(tmp_path) == Detection(
        "svc.deep.main:app",
        "fastapi",
        "asgi",
        "svc/deep/main.py",
        "`app = FastAPI()` in svc/deep/main.py",
    )


@pytest.mark.parametrize(
    "wsgi",
    [
        "from myapp import create_app\napp = create_app()\n",
        "import myapp\napp = myapp.create_app()\n",
    ],
)
def test_module_level_call_of_a_factory_is_detected(tmp_path: Path, wsgi: str) -> None:
    make_project(tmp_path, {"myapp/__init__.py": FLASK_FACTORY, "wsgi.py": wsgi})
    scan = scan_project(tmp_path)
    assert scan.best is not None
    assert (scan.best.target, scan.best.framework, scan.best.interface) == (
        "wsgi:app",
        "flask",
        "wsgi",
    )
    assert "myapp/__init__.py" in scan.best.reason
    assert scan.candidates == ()  # the factory is used, so nothing to suggest


def test_relative_import_of_a_factory(tmp_path: Path) -> None:
    detection = detected(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/factory.py": FLASK_FACTORY,
            "pkg/wsgi.py": "from .factory import create_app\napplication = create_app()\n",
        },
    )
    assert detection.target == "pkg.wsgi:application"


def test_factory_called_in_its_own_module(tmp_path: Path) -> None:
    detection = detected(tmp_path, {"app.py": FLASK_FACTORY + "\napp = create_app()\n"})
    assert (detection.target, detection.framework) == ("app:app", "flask")


@pytest.mark.parametrize(
    "directory",
    [".venv", "venv", "tests", "node_modules", "build", "dist", ".hidden", "custom-env"],
)
def test_skipped_directories(tmp_path: Path, directory: str) -> None:
    make_project(tmp_path, {f"{directory}/pkg/app.py": FLASK_APP})
    if directory == "custom-env":
        (tmp_path / directory / "pyvenv.cfg").write_text("home = /usr/bin\n")
    assert detect_app(tmp_path) is None


def test_files_that_cannot_be_imported_are_not_targets(tmp_path: Path) -> None:
    make_project(tmp_path, {"my-scripts/app.py": FLASK_APP, "run-dev.py": FLASK_APP})
    assert detect_app(tmp_path) is None


def test_preference_top_level_conventional_name_first(tmp_path: Path) -> None:
    detection = detected(
        tmp_path,
        {
            "admin.py": FASTAPI_APP,
            "pkg/__init__.py": "",
            "pkg/app.py": FLASK_APP,
            "main.py": FASTAPI_APP,
        },
    )
    assert detection.target == "main:app"


def test_preference_shallowest_then_conventional_then_alphabetical(tmp_path: Path) -> None:
    make_project(
        tmp_path,
        {
            "zeta.py": FASTAPI_APP,
            "alpha.py": FASTAPI_APP,
            "pkg/__init__.py": "",
            "pkg/main.py": FASTAPI_APP,
            "pkg/aaa.py": FASTAPI_APP,
            "pkg/deep/__init__.py": "",
            "pkg/deep/app.py": FASTAPI_APP,
        },
    )
    targets = [d.target for d in scan_project(tmp_path).detections]
    assert targets == ["alpha:app", "zeta:app", "pkg.main:app", "pkg.aaa:app", "pkg.deep.app:app"]


def test_preference_within_a_file(tmp_path: Path) -> None:
    detection = detected(
        tmp_path,
        {"main.py": "from fastapi import FastAPI\nadmin = FastAPI()\napp = FastAPI()\n"},
    )
    assert detection.target == "main:app"


def test_walk_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {f"m{i}.py": "x = 1\n" for i in range(5)}
    make_project(tmp_path, {**files, "zz.py": FLASK_APP})
    monkeypatch.setattr(detect, "MAX_PY_FILES", 3)
    scan = scan_project(tmp_path)
    assert scan.truncated
    assert scan.best is None  # zz.py sorts last, beyond the bound
    monkeypatch.undo()
    assert not scan_project(tmp_path).truncated
    assert detect_app(tmp_path) is not None


@pytest.mark.parametrize(
    ("framework", "interface"),
    [
        ("flask", "wsgi"),
        ("django", "wsgi"),
        ("wsgi", "wsgi"),
        ("fastapi", "asgi"),
        ("starlette", "asgi"),
        ("quart", "asgi"),
        ("litestar", "asgi"),
    ],
)
def test_interface_of(framework: detect.Framework, interface: str) -> None:
    assert interface_of(framework) == interface
