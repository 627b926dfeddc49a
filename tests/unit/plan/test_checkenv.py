"""check-env values never ship: the app layer's pyproject.toml has them blanked, in
whichever TOML form they were written, and a form that cannot be blanked is an error."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from pydeploy.config.project import load_project
from pydeploy.config.toml import parse_toml
from pydeploy.errors import ConfigError
from pydeploy.plan.appfiles import app_files
from pydeploy.plan.checkenv import REDACTED, redact
from pydeploy.plan.planner import Overrides, make_plan


def loads(text: str) -> dict[str, Any]:
    return parse_toml(text, "pyproject.toml")


VALUES = {"SECRET_KEY": "build-only-1234", "DATABASE_URL": "sqlite:///check.db"}


def test_a_check_env_table_is_blanked_and_the_rest_kept() -> None:
    text = textwrap.dedent(
        """\
        [tool.pydeploy]
        app = "app:app"
        env = { DATABASE_URL = "sqlite:///real.db" }

        [tool.pydeploy.check-env]
        SECRET_KEY = "build-only-1234"  # a comment stays
        DATABASE_URL='sqlite:///check.db'
        """
    )
    out = redact(text, VALUES, "pyproject.toml")
    assert "build-only-1234" not in out
    assert "sqlite:///check.db" not in out
    assert "# a comment stays" in out
    table = loads(out)["tool"]["pydeploy"]
    assert table["check-env"] == dict.fromkeys(VALUES, REDACTED)
    assert table["env"] == {"DATABASE_URL": "sqlite:///real.db"}, "other values are left"


@pytest.mark.parametrize(
    "form",
    [
        'check-env = { SECRET_KEY = "build-only-1234", DATABASE_URL = "sqlite:///check.db" }',
        'check-env.SECRET_KEY = "build-only-1234"\ncheck-env.DATABASE_URL = "sqlite:///check.db"',
    ],
)
def test_inline_and_dotted_forms_are_blanked(form: str) -> None:
    out = redact(f'[tool.pydeploy]\napp = "app:app"\n{form}\n', VALUES, "pyproject.toml")
    assert loads(out)["tool"]["pydeploy"]["check-env"] == dict.fromkeys(VALUES, REDACTED)


def test_a_value_that_cannot_be_blanked_is_a_config_error() -> None:
    text = '[tool.pydeploy.check-env]\nSECRET_KEY = """build-only-1234"""\n'
    with pytest.raises(ConfigError, match="check-env` SECRET_KEY cannot be left out"):
        redact(text, {"SECRET_KEY": "build-only-1234"}, "pyproject.toml")


def test_the_app_layer_ships_pyproject_without_the_values(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "1"\n\n[tool.pydeploy]\napp = "app:app"\n'
        '\n[tool.pydeploy.check-env]\nSECRET_KEY = "build-only-1234"\n',
        encoding="utf-8",
    )
    (tmp_path / "app.py").write_text("def app(environ, start_response):\n    return []\n")
    plan = make_plan(load_project(tmp_path), Overrides(base_image="local/base:1"))
    (entry,) = [e for e in app_files(plan).entries if e.path == "app/pyproject.toml"]
    assert entry.data is not None
    assert b"build-only-1234" not in entry.data
    assert (tmp_path / "pyproject.toml").read_text().count("build-only-1234") == 1, "untouched"
