"""The group: one place turns failures into output and exit codes. A bug (any exception
that is not a PydeployError) is one line with exit 1: what it was, the log file holding
the traceback, how to report it; `--debug` prints the traceback as well. Start-up imports
only the cli's own light modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import pytest

import pydeploy
from pydeploy.cli import session
from pydeploy.errors import EXIT_CODES
from pydeploy.plan import planner

if TYPE_CHECKING:
    from tests.unit.cli.conftest import Cli


def plant(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def raising(*_args: object, **_kwargs: object) -> None:
        raise exc

    monkeypatch.setattr(planner, "make_plan", raising)


def test_internal_error_is_one_line_and_a_log(
    runner: Cli, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant(monkeypatch, ZeroDivisionError("division by zero\nsecond line"))
    out = runner.run("plan", str(project))
    assert out.code == 1
    assert out.stdout == ""
    assert out.stderr.startswith("pydeploy: internal error: ZeroDivisionError: division by zero. ")
    assert out.stderr.count("\n") == 1
    assert "(--debug prints it)" in out.stderr
    [log] = (runner.cache / "logs").glob("internal-error-*.log")
    text = log.read_text()
    assert text.startswith(f"pydeploy {pydeploy.__version__}\n")
    assert "ZeroDivisionError: division by zero" in text


def test_debug_prints_the_traceback_too(
    runner: Cli, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant(monkeypatch, ZeroDivisionError("division by zero"))
    out = runner.run("--debug", "plan", str(project))
    assert out.code == 1
    assert out.stderr.startswith("Traceback (most recent call last):")
    assert "pydeploy: internal error: ZeroDivisionError" in out.stderr
    assert "(--debug prints it)" not in out.stderr


def test_a_bug_whose_log_cannot_be_written_still_gets_its_line(
    runner: Cli, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant(monkeypatch, ValueError(""))
    monkeypatch.setattr(session, "save_log", lambda *_args: None)
    out = runner.run("plan", str(project))
    assert out.code == 1
    assert out.stderr.startswith("pydeploy: internal error: ValueError. ")
    assert "the traceback could not be saved" in out.stderr


def test_an_error_with_tool_output_points_at_its_log(
    runner: Cli, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydeploy.errors import BuildError

    error = BuildError("uv could not resolve the dependencies.", hint="Check the pins.")
    error.output = "resolver says no\n"
    plant(monkeypatch, error)
    out = runner.run("plan", str(project))
    runner.assert_paragraph(out, 5, "build", "uv could not resolve the dependencies. Check")
    [log] = (runner.cache / "logs").glob("build-failure-*.log")
    assert out.stderr.rstrip().endswith(f"The full tool output is in {log}.")
    assert log.read_text() == "resolver says no\n"


def test_debug_prints_the_traceback_of_a_pydeploy_error(
    runner: Cli, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydeploy.errors import ConfigError

    plant(monkeypatch, ConfigError("bad table."))
    out = runner.run("--debug", "plan", str(project))
    assert out.code == 2
    assert out.stderr.startswith("Traceback (most recent call last):")
    assert out.stderr.splitlines()[-1] == "pydeploy: config error: bad table."


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), click.exceptions.Abort()])
def test_an_interruption_outside_any_cleanup_is_exit_130(
    runner: Cli, project: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    plant(monkeypatch, exc)
    out = runner.run("plan", str(project))
    # click answers a KeyboardInterrupt with a newline (ending a line the user typed ^C on).
    assert (out.code, out.stderr.lstrip("\n")) == (130, "pydeploy: interrupted.\n")


def test_usage_errors_are_clicks_with_exit_2(runner: Cli) -> None:
    out = runner.run("build", "--jobs", "0")
    assert out.code == 2
    assert "Invalid value for '--jobs'" in out.stderr
    assert runner.run("no-such-command").code == 2


def test_help_lists_every_command_and_the_exit_codes(runner: Cli) -> None:
    out = runner.run("--help")
    assert out.code == 0
    for name in ("build", "check", "dockerfile", "init", "inspect", "manifest", "plan",
                 "prune", "run", "schema"):  # fmt: skip
        assert f"  {name} " in out.stdout
    text = " ".join(out.stdout.split())
    assert "Exit codes: 0 ok, 1 internal error, " in text
    for kind, code in EXIT_CODES.items():
        assert f"{code} {kind}" in text


def test_version_flag(runner: Cli) -> None:
    out = runner.run("--version")
    assert out.code == 0
    assert out.stdout == f"pydeploy, version {pydeploy.__version__}\n"


def _modules_after(*args: str) -> set[str]:
    """The modules a fresh interpreter holds after `pydeploy ARGS` ran (its output first)."""
    probe = (
        "import sys\n"
        "from pydeploy.cli.main import main\n"
        f"sys.argv = ['pydeploy', *{list(args)!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('MODULES', ' '.join(sorted(sys.modules)))\n"
    )
    source_root = str(Path(pydeploy.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": source_root}
    proc = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    return set(proc.stdout.rpartition("MODULES ")[2].split())


def _heavy(loaded: set[str], roots: set[str], packages: tuple[str, ...]) -> set[str]:
    return {
        name
        for name in loaded
        if name.split(".")[0] in roots
        or name in roots
        or any(name == f"pydeploy.{p}" or name.startswith(f"pydeploy.{p}.") for p in packages)
    }


# What only a build, a push or a run needs: the engine's SDK and HTTP stack, YAML (the
# manifests), the secret scanner, and pydeploy's own engine-side packages.
_ENGINE_ROOTS = {"docker", "requests", "urllib3", "yaml", "detect_secrets", "http.client", "ssl"}
_ENGINE_PACKAGES = ("engine", "build", "builder", "oci", "layers", "publish", "cache")


def test_version_imports_no_heavy_module() -> None:
    """`pydeploy --version` (and --help) must stay fast: the commands import what they run
    only when they run, and the version is a literal (no importlib.metadata)."""
    loaded = _modules_after("--version")
    roots = {*_ENGINE_ROOTS, "pydantic", "packaging", "pathspec", "importlib.metadata"}
    heavy = _heavy(loaded, roots, ("plan", "config", "payload", *_ENGINE_PACKAGES))
    assert "pydeploy.cli.main" in loaded
    assert heavy == set()


def test_check_imports_only_the_config_and_the_planner(tmp_path: Path) -> None:
    """`pydeploy check` validates and plans: pydantic and the planner, but none of what a
    build needs (no engine SDK, HTTP client, YAML, secret scanner, layer code)."""
    (tmp_path / "main.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "p"\nversion = "1"\ndependencies = ["flask"]\n'
        '[tool.pydeploy]\napp = "main:app"\n'
    )
    loaded = _modules_after("check", str(tmp_path))
    assert {"pydeploy.cli.project", "pydeploy.plan.planner"} <= loaded
    assert _heavy(loaded, _ENGINE_ROOTS, _ENGINE_PACKAGES) == set()
