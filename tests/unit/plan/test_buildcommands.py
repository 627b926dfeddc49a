"""Build commands as planned: the user's, and Django's collectstatic when the settings
ask for it (detected from the source, shown with its reason)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pydeploy.config.project import load_project
from pydeploy.errors import ConfigError
from pydeploy.plan.planner import Overrides, make_plan

BASE_SETTINGS = """\
    from pathlib import Path
    BASE_DIR = Path(__file__).resolve().parent.parent
    DJANGO_APPS = ["django.contrib.admin", "django.contrib.staticfiles"]
    INSTALLED_APPS = DJANGO_APPS + ["shop"]
    STATIC_URL = "static/"
    WSGI_APPLICATION = "site_conf.wsgi.application"
    """


def django_project(root: Path, table: str = "", settings: dict[str, str] | None = None,
                   manage_py: bool = True) -> Path:  # fmt: skip
    files = {
        "site_conf/__init__.py": "",
        "site_conf/wsgi.py": textwrap.dedent(
            """\
            import os
            from django.core.wsgi import get_wsgi_application
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_conf.settings.production")
            application = get_wsgi_application()
            """
        ),
        "site_conf/settings/__init__.py": "",
        "site_conf/settings/base.py": textwrap.dedent(BASE_SETTINGS),
        "site_conf/settings/production.py": (
            'from .base import *\nSTATIC_ROOT = BASE_DIR / "staticfiles"\n'
        ),
        **(settings or {}),
    }
    if manage_py:
        files["manage.py"] = (
            "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', "
            "'site_conf.settings.production')\n"
        )
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    (root / "pyproject.toml").write_text(
        '[project]\nname = "shop"\nversion = "1"\ndependencies = ["django>=5"]\n\n'
        "[tool.pydeploy]\n" + textwrap.dedent(table),
        encoding="utf-8",
    )
    return root


def commands(root: Path) -> list[tuple[list[str], str, dict[str, str]]]:
    plan = make_plan(load_project(root), Overrides(base_image="local/base:1"))
    return [(list(c.argv), c.origin, dict(c.env)) for c in plan.build_commands]


def test_collectstatic_runs_for_staticfiles_with_a_static_root(tmp_path: Path) -> None:
    (argv, origin, env), = commands(django_project(tmp_path))  # fmt: skip
    assert argv == ["python", "manage.py", "collectstatic", "--noinput"]
    assert origin == (
        "automatic: Django staticfiles with STATIC_ROOT set in site_conf/settings/production.py"
    )
    assert env == {}


def test_without_manage_py_the_settings_module_is_named(tmp_path: Path) -> None:
    (argv, _, env), = commands(django_project(tmp_path, manage_py=False))  # fmt: skip
    assert argv == ["python", "-m", "django", "collectstatic", "--noinput"]
    assert env == {"DJANGO_SETTINGS_MODULE": "site_conf.settings.production"}


@pytest.mark.parametrize(
    "production",
    [
        "from .base import *\n",  # STATIC_ROOT never set
        "from .base import *\nSTATIC_ROOT = None\n",
    ],
)
def test_no_static_root_means_no_collectstatic(tmp_path: Path, production: str) -> None:
    root = django_project(tmp_path, settings={"site_conf/settings/production.py": production})
    assert commands(root) == []


def test_no_staticfiles_app_means_no_collectstatic(tmp_path: Path) -> None:
    base = BASE_SETTINGS.replace('"django.contrib.staticfiles"', '"django.contrib.auth"')
    root = django_project(tmp_path, settings={"site_conf/settings/base.py": textwrap.dedent(base)})
    assert commands(root) == []


def test_user_commands_follow_and_a_user_collectstatic_replaces_the_automatic_one(
    tmp_path: Path,
) -> None:
    root = django_project(
        tmp_path, 'build-commands = ["python manage.py compress", ["pybabel", "compile"]]\n'
    )
    assert commands(root) == [
        (["python", "manage.py", "collectstatic", "--noinput"], commands(root)[0][1], {}),
        (["/bin/sh", "-c", "python manage.py compress"], "tool.pydeploy.build-commands[0]", {}),
        (["pybabel", "compile"], "tool.pydeploy.build-commands[1]", {}),
    ]
    own = django_project(
        tmp_path, 'build-commands = ["python manage.py collectstatic --noinput -v 0"]\n'
    )
    assert [c[0] for c in commands(own)] == [
        ["/bin/sh", "-c", "python manage.py collectstatic --noinput -v 0"]
    ]


def test_collectstatic_false_turns_it_off_and_true_without_settings_is_an_error(
    tmp_path: Path,
) -> None:
    assert commands(django_project(tmp_path / "off", "collectstatic = false\n")) == []
    root = django_project(
        tmp_path / "on",
        "collectstatic = true\n",
        settings={"site_conf/settings/production.py": "from .base import *\n"},
    )
    with pytest.raises(ConfigError, match=r"`tool\.pydeploy\.collectstatic` is true"):
        commands(root)


def test_the_build_layer_is_planned_only_with_commands(tmp_path: Path) -> None:
    plan = make_plan(load_project(django_project(tmp_path)), Overrides(base_image="b:1"))
    roles = [layer.role for layer in plan.layers]
    assert roles[-3:] == ["app", "build", "launcher"]
    off = make_plan(
        load_project(django_project(tmp_path / "off", "collectstatic = false\n")),
        Overrides(base_image="b:1"),
    )
    assert "build" not in [layer.role for layer in off.layers]


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ("build-commands = [[]]\n", "non-empty program"),
        ('build-commands = [""]\n', "at least 1 character"),
        ('build-outputs = ["srv/static"]\n', "absolute directory"),
        ('build-outputs = ["/app/static"]\n', "does not keep build output"),
        ('build-outputs = ["/opt/venv/x"]\n', "does not keep build output"),
    ],
)
def test_bad_build_command_settings_name_the_key(tmp_path: Path, table: str, fragment: str) -> None:
    root = django_project(tmp_path, table)
    with pytest.raises(ConfigError) as caught:
        load_project(root)
    text = str(caught.value) + (caught.value.hint or "")
    assert fragment in text
    assert "build-" in text
