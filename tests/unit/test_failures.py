"""Turning a builder container's output into the error the user sees: compile failures,
source builds, resolver messages and TLS trust. No engine: the output is given."""

from __future__ import annotations

import textwrap
from pathlib import Path

from pydeploy import failures
from pydeploy.errors import BuildError, CompileError
from pydeploy.plan import BuildPlan, Overrides, make_plan
from pydeploy.project import load_project


def demo_plan(root: Path) -> BuildPlan:
    """A plan for a project whose dependencies come from [project.dependencies]."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [project]
            name = "demo"
            version = "1.0"
            dependencies = ["itsdangerous>=2.1"]

            [tool.pydeploy]
            app = "app:app"
            """
        ),
        encoding="utf-8",
    )
    (root / "app.py").write_text(
        "def app(environ, start_response):\n    return []\n", encoding="utf-8"
    )
    return make_plan(load_project(root), Overrides(base_image="local/base:1"))


COMPILE_FAILURE = """\
Resolved 2 packages in 12ms
error: Failed to build `badext @ file:///build/src/vendor/badext`
  cause: The build backend returned an error
  cause: Call to `setuptools.build_meta.build_wheel` failed (exit status: 1)
         [stderr]
         badext.c: In function 'add':
         badext.c:9:34: error: expected ';' before 'this'
         error: command '/usr/bin/x86_64-linux-gnu-gcc' failed with exit code 1
  hint: This usually indicates a problem with the package or the build environment.
error: `/cache/tools/uv/bin/uv pip install ...` exited with 1
"""


def test_compile_failure_names_package_tail_and_key(tmp_path: Path) -> None:
    plan = demo_plan(tmp_path / "p")
    error = failures.explain_failure("install", COMPILE_FAILURE, plan)
    assert isinstance(error, CompileError)
    assert error.exit_code == 6
    assert "`badext`" in error.message
    assert "badext.c:9:34: error" in error.message
    assert "tool.pydeploy.build-packages" in error.message
    assert "hint: This usually" not in error.message
    assert "exited with 1" not in error.message


def test_pure_python_build_failure_is_not_a_compile_error(tmp_path: Path) -> None:
    plan = demo_plan(tmp_path / "p")
    output = (
        "error: Failed to build `slowpkg==1.0`\n"
        "  cause: The build backend returned an error\n"
        "         ModuleNotFoundError: No module named 'flit_core'\n"
    )
    error = failures.explain_failure("install", output, plan)
    assert type(error) is BuildError
    assert "`slowpkg`" in error.message


def test_resolution_failure_shows_the_resolver_message(tmp_path: Path) -> None:
    plan = demo_plan(tmp_path / "p")
    output = (
        "Using Python 3.11.2\n"
        "error: No solution found when resolving dependencies\n"
        "  cause: Because nosuchpkg was not found in the package registry and you require "
        "nosuchpkg, we can conclude that your requirements are unsatisfiable.\n"
        "error: `/cache/tools/uv/bin/uv pip compile ...` exited with 1\n"
    )
    error = failures.explain_failure("resolve", output, plan)
    assert type(error) is BuildError
    assert "nosuchpkg was not found in the package registry" in error.message
    assert "Traceback" not in error.message
    assert "exited with 1" not in error.message
    assert "[project.dependencies]" in error.message


def test_tls_failure_points_at_the_ca_bundle(tmp_path: Path) -> None:
    plan = demo_plan(tmp_path / "p")
    output = "error: Request failed\n  cause: invalid peer certificate: UnknownIssuer\n"
    error = failures.explain_failure("resolve", output, plan)
    assert "tool.pydeploy.index.ca-bundle" in error.message
