"""Turning a builder container's output into the error the user sees: compile failures,
source builds, resolver messages and TLS trust. No engine: the output is given."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pydeploy.builder import transcript as failures
from pydeploy.builder.credentials import Masker
from pydeploy.config.project import load_project
from pydeploy.errors import BuildError, CompileError
from pydeploy.plan.planner import BuildPlan, Overrides, make_plan


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


# --- light jobs (the base image alone): when to move to the full builder -----------------

NO_WHEEL = """\
Using Python 3.11.2 environment at: /opt/venv
error: No solution found when resolving dependencies
  cause: Because psycopg2==2.9.9 has no usable wheels and you require psycopg2==2.9.9, we \
can conclude that your requirements are unsatisfiable.

hint: Wheels are required for `psycopg2` because building from source is disabled for all \
packages (i.e., with `--no-build`)
"""
LOCAL_BUILD_FAILED = """\
   Building fastsum @ file:///build/src/vendor/fastsum
error: Failed to build `fastsum @ file:///build/src/vendor/fastsum`
  cause: The build backend returned an error
         error: [Errno 2] No such file or directory: 'x86_64-linux-gnu-gcc'
"""
UNKNOWN_PACKAGE = """\
error: No solution found when resolving dependencies
  cause: Because pydeploy-no-such-package-xyz was not found in the package registry and you \
require pydeploy-no-such-package-xyz>=1, we can conclude that your requirements are \
unsatisfiable.
"""


def test_a_package_without_a_wheel_needs_the_full_builder() -> None:
    why = failures.needs_full_builder("install", NO_WHEEL, [])
    assert why == "`psycopg2` must be built from source"


def test_a_failed_local_build_needs_the_full_builder() -> None:
    why = failures.needs_full_builder("install", LOCAL_BUILD_FAILED, [])
    assert why == "`fastsum` must be built from source"
    disabled = "error: Building source distributions is disabled, but attempted to build `x`\n"
    assert failures.needs_full_builder("install", disabled, []) == "`x` must be built from source"


def test_a_stand_in_compiler_that_ran_needs_the_full_builder() -> None:
    """Even when the step succeeded (an optional C extension fell back silently)."""
    why = failures.needs_full_builder("install", "", ["gcc", "x86_64-linux-gnu-gcc"])
    assert why == "a build ran a compiler (gcc, x86_64-linux-gnu-gcc)"


def test_uv_tools_failure_retries_in_the_full_builder() -> None:
    assert failures.needs_full_builder("uv tools", "No module named venv", []) is not None


@pytest.mark.parametrize(
    "output",
    [UNKNOWN_PACKAGE, "invalid peer certificate: UnknownIssuer", "Traceback ...\nImportError"],
)
def test_failures_the_full_builder_would_repeat_do_not_escalate(output: str) -> None:
    assert failures.needs_full_builder("install", output, []) is None
    assert failures.needs_full_builder("resolve", output, []) is None


def test_transcript_records_the_compilers_a_light_job_ran() -> None:
    steps: list[tuple[str, float, str | None]] = []
    transcript = failures.Transcript(
        lambda *step: steps.append(step), Masker(()), None, verbose=False
    )
    for line in ["##pydeploy:begin install", "##pydeploy:compilers cc gcc", "##pydeploy:failed"]:
        transcript(line)
    assert transcript.compilers == ["cc", "gcc"]
    assert transcript.failed_step == "install"
    assert steps == []
