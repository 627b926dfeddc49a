"""Every bad-input case of `pydeploy check`: exit code 2, one paragraph, the exact key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pydeploy.cli.main import cli

MINIMAL = '[project]\nname = "demo"\nversion = "1.0"\n'


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check that passes leaves its record in the cache: a private one, never the user's."""
    monkeypatch.setenv("PYDEPLOY_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def run_check(tmp_path: Path, pyproject: str | None) -> tuple[int, str]:
    if pyproject is not None:
        (tmp_path / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    result = CliRunner().invoke(cli, ["check", str(tmp_path)])
    return result.exit_code, result.output


def test_malformed_toml_names_file_line_and_column(tmp_path: Path) -> None:
    code, out = run_check(tmp_path, MINIMAL + "[tool.pydeploy]\napp = main:app\n")
    assert code == 2
    assert str(tmp_path / "pyproject.toml") in out
    assert "line 5, column 7" in out
    assert "Traceback" not in out


def test_unknown_key_gives_full_path_and_closest_key(tmp_path: Path) -> None:
    code, out = run_check(
        tmp_path,
        MINIMAL + '[tool.pydeploy]\napp = "main:app"\n[tool.pydeploy.server]\nwrokers = 3\n',
    )
    assert code == 2
    assert "`tool.pydeploy.server.wrokers` is not a known key; did you mean `workers`?" in out


def test_unknown_top_level_key(tmp_path: Path) -> None:
    code, out = run_check(tmp_path, MINIMAL + '[tool.pydeploy]\napp = "main:app"\nprot = 80\n')
    assert code == 2
    assert "`tool.pydeploy.prot` is not a known key; did you mean `port`?" in out


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            'port = "8000"',
            (
                "`tool.pydeploy.port` should be a valid integer (given: '8000'); "
                "allowed: an integer 1..65535."
            ),
        ),
        (
            "port = 70000",
            (
                "`tool.pydeploy.port` should be less than or equal to 65535 "
                "(given: 70000); allowed: an integer 1..65535."
            ),
        ),
        (
            '[tool.pydeploy.server]\nworkers = "many"',
            (
                "`tool.pydeploy.server.workers` is not valid (given: 'many'); "
                "allowed: `auto` or an integer 1..512."
            ),
        ),
        (
            '[tool.pydeploy.server]\ntype = "gunicron"',
            (
                "`tool.pydeploy.server.type` should be 'auto', 'gunicorn', 'gunicorn-uvicorn' or "
                "'uvicorn' (given: 'gunicron')"
            ),
        ),
        (
            '[tool.pydeploy.healthcheck]\npath = "healthz"',
            "`tool.pydeploy.healthcheck.path` must be a URL path starting with `/`",
        ),
        ('[tool.pydeploy.index]\npassword = "hunter2"', "Credentials never go in pyproject.toml"),
        (
            '[tool.pydeploy.index]\nurl = "https://me:pw@pypi.example/simple"',
            "a URL must not contain credentials",
        ),
        ('runtime-packages = ["libpq5; rm -rf /"]', "is not a Debian package name"),
    ],
)
def test_wrong_type_or_value(tmp_path: Path, table: str, expected: str) -> None:
    code, out = run_check(tmp_path, MINIMAL + '[tool.pydeploy]\napp = "main:app"\n' + table + "\n")
    assert code == 2
    assert expected in out
    assert "hunter2" not in out or "given" not in out.split("hunter2")[0][-20:]


def test_bad_app_target(tmp_path: Path) -> None:
    code, out = run_check(tmp_path, MINIMAL + '[tool.pydeploy]\napp = "main.app"\n')
    assert code == 2
    assert "`tool.pydeploy.app` must be `module:attribute`" in out
    assert "'main.app'" in out


def test_missing_pyproject_points_at_init(tmp_path: Path) -> None:
    code, out = run_check(tmp_path, None)
    assert code == 2
    assert f"No pyproject.toml in {tmp_path}" in out
    assert "pydeploy init" in out


def test_missing_table_points_at_init(tmp_path: Path) -> None:
    code, out = run_check(tmp_path, MINIMAL)
    assert code == 2
    assert "has no [tool.pydeploy] table" in out
    assert "pydeploy init" in out


def test_messages_are_one_paragraph_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        MINIMAL + "[tool.pydeploy]\nport = 0\n", encoding="utf-8"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pydeploy", "check", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("pydeploy: config error: ")
    assert proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_python_outside_requires_python(tmp_path: Path) -> None:
    code, out = run_check(
        tmp_path,
        MINIMAL.replace('version = "1.0"', 'version = "1.0"\nrequires-python = ">=3.12"')
        + '[tool.pydeploy]\napp = "main:app"\npython = "3.11"\n',
    )
    assert code == 2
    assert "Python 3.11 (from tool.pydeploy.python) does not satisfy" in out


def test_valid_table_passes(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("from fastapi import FastAPI\napp = FastAPI()\n")
    code, out = run_check(tmp_path, MINIMAL + '[tool.pydeploy]\napp = "main:app"\n')
    assert code == 0, out
    assert "is valid (app main:app, asgi, server gunicorn-uvicorn)" in out
