"""A bug (any exception that is not a PydeployError) is reported in one line with exit 1:
what it was, the log file holding the traceback, how to report it. `--debug` prints the
traceback as well."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from pydeploy.cli.main import cli
from pydeploy.plan import planner


def _boom(*_args: object, **_kwargs: object) -> None:
    raise ZeroDivisionError("division by zero\nsecond line")


def invoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *flags: str) -> tuple[int, str]:
    monkeypatch.setattr(planner, "make_plan", _boom)
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "1"\n[tool.pydeploy]\napp = "main:app"\n'
    )
    result = CliRunner().invoke(
        cli, [*flags, "plan", str(project)], env={"PYDEPLOY_CACHE_DIR": str(tmp_path / "cache")}
    )
    assert isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_internal_error_is_one_line_and_a_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = invoke(tmp_path, monkeypatch)
    assert code == 1
    assert "Traceback" not in out
    assert out.count("\n") == 1
    assert out.startswith("pydeploy: internal error: ZeroDivisionError: division by zero. ")
    assert "please report it" in out
    assert "(--debug prints it)" in out
    [log] = (tmp_path / "cache" / "logs").glob("internal-error-*.log")
    assert str(log) in out
    text = log.read_text()
    assert "Traceback (most recent call last)" in text
    assert "ZeroDivisionError: division by zero" in text
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_debug_prints_the_traceback_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = invoke(tmp_path, monkeypatch, "--debug")
    assert code == 1
    assert "Traceback (most recent call last)" in out
    assert "pydeploy: internal error: ZeroDivisionError" in out
