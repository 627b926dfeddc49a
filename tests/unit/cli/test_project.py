"""`init`, `check` and `schema` (cli/project.py): bad input is a paragraph with exit 2,
a bug the internal-error line and its log, `--debug` its traceback."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pydeploy.config import init as config_init
from pydeploy.config import schema
from pydeploy.plan import planner

if TYPE_CHECKING:
    from tests.unit.cli.conftest import Cli


def test_check_without_a_pyproject_is_a_config_error(runner: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = runner.run("check", str(empty))
    runner.assert_paragraph(out, 2, "config", "pyproject.toml")


def test_check_says_what_it_validated(runner: Cli, project: Path) -> None:
    out = runner.run("check", str(project))
    assert out.code == 0, out.output
    assert out.stdout == (
        f"{project / 'pyproject.toml'}: [tool.pydeploy] is valid "
        "(app main:app, wsgi, server gunicorn).\n"
    )


def test_init_on_a_configured_project_is_a_config_error(runner: Cli, project: Path) -> None:
    out = runner.run("init", str(project))
    runner.assert_paragraph(out, 2, "config", "already has a [tool.pydeploy] table")


def test_schema_check_outside_a_checkout_is_a_config_error(
    runner: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = runner.run("schema", "--check")
    runner.assert_paragraph(out, 2, "config", "No schema/pydeploy.schema.json found")


def test_schema_check_of_a_stale_file_exits_1_without_a_bug_report(
    runner: Cli, tmp_path: Path
) -> None:
    stale = tmp_path / "schema.json"
    stale.write_text("{}\n")
    out = runner.run("schema", "--check", "--output", str(stale))
    assert out.code == 1
    assert out.stderr == (
        f"{stale} is out of date with the [tool.pydeploy] models; "
        "run `pydeploy schema` and commit the result.\n"
    )
    assert not (runner.cache / "logs").exists()
    written = runner.run("schema", "--output", str(stale))
    assert (written.code, written.stdout) == (0, f"wrote {stale}\n")
    fresh = runner.run("schema", "--check", "--output", str(stale))
    assert (fresh.code, fresh.stdout) == (0, f"{stale} is up to date.\n")


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize(
    ("command", "module", "name"),
    [
        ("init", config_init, "init_project"),
        ("check", planner, "make_plan"),
        ("schema", schema, "render"),
    ],
)
def test_a_bug_in_a_project_command_is_reported(
    runner: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    module: object,
    name: str,
    debug: bool,
) -> None:
    monkeypatch.setattr(module, name, runner.bug)
    target = tmp_path / "bare"
    target.mkdir()
    (target / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\n'
                                           '[tool.pydeploy]\napp = "main:app"\n')  # fmt: skip
    args = [command] if command == "schema" else [command, str(target)]
    out = runner.run(*(["--debug"] if debug else []), *args)
    runner.assert_bug(out, debug=debug)
