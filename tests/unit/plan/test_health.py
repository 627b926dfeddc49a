"""The healthcheck's default: a health route found in the source, else any answer below
500 from `/`; never a probe that marks a healthy app unhealthy."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pydeploy.config.models import HealthcheckConfig
from pydeploy.plan import health

FASTAPI = "from fastapi import FastAPI\napp = FastAPI()\n"
FLASK = "from flask import Flask\napp = Flask(__name__)\n"


def choose(root: Path, files: dict[str, str], **config: object) -> tuple[str, int, str]:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    probe = health.choose(HealthcheckConfig.model_validate(config), root)
    return probe.path, probe.healthy_below, probe.origin


@pytest.mark.parametrize(
    ("files", "path"),
    [
        ({"main.py": FASTAPI + '@app.get("/healthz")\ndef h(): ...\n'}, "/healthz"),
        ({"main.py": FASTAPI + '@app.api_route("/api/health", methods=["GET"])\ndef h(): ...\n'},
         "/api/health"),
        # A factory's app object, and add_url_rule.
        ({"app/__init__.py": "from flask import Flask\ndef create_app():\n"
          "    app = Flask(__name__)\n"
          '    @app.route("/-/health")\n    def h(): ...\n    return app\n'}, "/-/health"),
        ({"app.py": FLASK + 'app.add_url_rule("/ping", view_func=lambda: "pong")\n'}, "/ping"),
        ({"app.py": FLASK + '@app.route("/health", methods=("GET", "HEAD"))\ndef h(): ...\n'},
         "/health"),
        # By name first (healthz before status), then the shorter path.
        ({"main.py": FASTAPI + '@app.get("/status")\ndef s(): ...\n@app.get("/api/healthz")\n'
          'def h(): ...\n@app.get("/healthz")\ndef g(): ...\n'}, "/healthz"),
    ],
)  # fmt: skip
def test_a_health_route_on_the_app_is_probed_for_2xx_3xx(
    tmp_path: Path, files: dict[str, str], path: str
) -> None:
    found, below, origin = choose(tmp_path, files)
    assert (found, below) == (path, 400)
    assert origin.startswith("detected: `")
    assert "a 2xx or 3xx answer is healthy" in origin


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"main.py": FASTAPI + '@app.get("/")\ndef root(): ...\n'},
        # Prefixes decided elsewhere: a blueprint's or a router's routes are not certain.
        {"app.py": FLASK + 'from flask import Blueprint\nbp = Blueprint("b", __name__)\n'
         '@bp.route("/health")\ndef h(): ...\napp.register_blueprint(bp, url_prefix="/x")\n'},
        {"main.py": FASTAPI + "from fastapi import APIRouter\nrouter = APIRouter()\n"
         '@router.get("/health")\ndef h(): ...\napp.include_router(router, prefix="/v1")\n'},
        # Not a GET, a parameter, too deep, not a literal.
        {"main.py": FASTAPI + '@app.post("/health")\ndef h(): ...\n'},
        {"app.py": FLASK + '@app.route("/health", methods=["POST"])\ndef h(): ...\n'},
        {"app.py": FLASK + '@app.route("/orders/<int:id>/status")\ndef s(id): ...\n'},
        {"main.py": FASTAPI + '@app.get("/a/b/c/health")\ndef h(): ...\n'},
        {"main.py": FASTAPI + 'P = "/health"\n@app.get(P)\ndef h(): ...\n'},
    ],
)  # fmt: skip
def test_without_a_certain_health_route_any_answer_below_500_is_alive(
    tmp_path: Path, files: dict[str, str]
) -> None:
    assert choose(tmp_path, files) == ("/", 500, health.FALLBACK_WHY)


DJANGO_SETTINGS = 'ROOT_URLCONF = "mysite.urls"\n'


def test_django_root_urlconf_routes_use_the_below_500_rule(tmp_path: Path) -> None:
    urls = """
        from django.urls import include, path, re_path
        urlpatterns = [
            path("api/", include("api.urls")),
            re_path(r"^ping/$", lambda r: None),
            path("healthz/", lambda r: None),
        ]
    """
    included = "from django.urls import path\nurlpatterns = [path('health/', None)]\n"
    files = {
        "mysite/__init__.py": "",
        "mysite/settings.py": DJANGO_SETTINGS,
        "mysite/urls.py": urls,
        "api/__init__.py": "",
        "api/urls.py": included,
    }
    path, below, origin = choose(tmp_path, files)
    assert (path, below) == ("/healthz/", 500)
    assert "mysite/urls.py" in origin
    assert "ALLOWED_HOSTS" in origin


def test_an_included_urlconfs_route_is_not_certain(tmp_path: Path) -> None:
    files = {
        "mysite/settings.py": DJANGO_SETTINGS,
        "mysite/urls.py": "from django.urls import include, path\n"
        "urlpatterns = [path('api/', include('api.urls'))]\n",
        "api/urls.py": "from django.urls import path\nurlpatterns = [path('health/', None)]\n",
    }
    assert choose(tmp_path, files)[:2] == ("/", 500)


def test_a_configured_path_wins(tmp_path: Path) -> None:
    files = {"main.py": FASTAPI + '@app.get("/healthz")\ndef h(): ...\n'}
    path, below, origin = choose(tmp_path, files, path="/ready")
    assert (path, below) == ("/ready", 400)
    assert origin.startswith("tool.pydeploy.healthcheck.path")
