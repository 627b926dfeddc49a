"""Start-up cost (issue 14): what `pydeploy --version` and `pydeploy check` import, read
from the sys.modules of a real process (no timing, so nothing to flake), and the record
that lets a repeated `check` answer without importing the config models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tests.unit.cli.conftest import VALID

import pydeploy

if TYPE_CHECKING:
    from tests.unit.cli.conftest import Cli

# The engine's client and the secret scanner: no command without an engine needs them.
ENGINE_AND_SCAN = ("docker", "requests", "urllib3", "detect_secrets", "yaml", "multiprocessing")
# What validating a config takes: a recorded check needs none of it.
MODELS = ("pydantic", "pydantic_core", "packaging", "pydeploy.config.models")

_RUN = """\
import json, sys
from pydeploy.cli.main import main
out, sys.argv = sys.argv[1], ["pydeploy", *sys.argv[2:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
with open(out, "w") as handle:
    json.dump({"code": code, "modules": sorted(sys.modules)}, handle)
"""


def _run(tmp_path: Path, cwd: Path, *args: str) -> tuple[int, str, set[str]]:
    """Exit code, stdout and the top-level names plus modules imported by `pydeploy ARGS`."""
    out = tmp_path / "modules.json"
    # This checkout's pydeploy, whatever the directory (PYTHONPATH may be relative).
    env = {**os.environ, "PYTHONPATH": str(Path(pydeploy.__file__).parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", _RUN, str(out), *args],
        cwd=cwd, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.stderr == "", proc.stderr
    document = json.loads(out.read_text())
    modules = set(document["modules"])
    return document["code"], proc.stdout, modules | {m.split(".")[0] for m in modules}


def test_version_imports_neither_the_models_nor_the_engine(tmp_path: Path) -> None:
    code, stdout, modules = _run(tmp_path, tmp_path, "--version")
    assert (code, stdout.split()[0]) == (0, "pydeploy,")
    assert modules.isdisjoint(ENGINE_AND_SCAN + MODELS), modules & {*ENGINE_AND_SCAN, *MODELS}


def test_check_imports_no_engine_client_and_no_secret_scanner(
    tmp_path: Path, project: Path
) -> None:
    code, stdout, modules = _run(tmp_path, project, "check")
    expected = (
        f"{project / 'pyproject.toml'}: [tool.pydeploy] is valid "
        "(app main:app, wsgi, server gunicorn).\n"
    )
    assert (code, stdout) == (0, expected)
    assert "pydeploy.config.models" in modules
    assert modules.isdisjoint(ENGINE_AND_SCAN), modules & set(ENGINE_AND_SCAN)


def test_a_repeated_check_answers_from_its_record_without_the_models(
    tmp_path: Path, project: Path, cache_dir: Path
) -> None:
    first = _run(tmp_path, project, "check")
    assert list((cache_dir / "unchanged").glob("*.json")), "the passed check is recorded"
    code, stdout, modules = _run(tmp_path, project, "check")
    assert (code, stdout) == first[:2]
    assert modules.isdisjoint(ENGINE_AND_SCAN + MODELS), modules & {*ENGINE_AND_SCAN, *MODELS}


def test_a_changed_config_is_checked_again(runner: Cli, project: Path) -> None:
    assert runner.run("check", str(project)).code == 0
    (project / "pyproject.toml").write_text(VALID + "port = 0\n")
    runner.assert_paragraph(runner.run("check", str(project)), 2, "config", "port")
    (project / "pyproject.toml").write_text(VALID.replace("main:app", "main:application"))
    out = runner.run("check", str(project))
    assert (out.code, "app main:application," in out.stdout) == (0, True), out.output


def test_a_failed_check_leaves_no_record(runner: Cli, project: Path) -> None:
    (project / "pyproject.toml").write_text(VALID + "port = 0\n")
    assert runner.run("check", str(project)).code == 2
    assert not (runner.cache / "unchanged").exists()


def test_a_pyproject_between_the_start_and_the_root_is_a_new_root(
    runner: Cli, project: Path
) -> None:
    """The search for the project starts where the command points: a pyproject.toml that
    appears on the way up makes another project, and the record does not answer for it
    (even where planning lists nothing: detection skips `tests/`)."""
    start = project / "tests" / "api"
    start.mkdir(parents=True)
    assert runner.run("check", str(start)).stdout.startswith(f"{project / 'pyproject.toml'}:")
    (project / "tests" / "pyproject.toml").write_text(VALID.replace('"demo"', '"api"'))
    (project / "tests" / "main.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    out = runner.run("check", str(start))
    assert out.stdout.startswith(f"{project / 'tests' / 'pyproject.toml'}:"), out.output
