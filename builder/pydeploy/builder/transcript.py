"""What a builder container said: its output collected as a transcript (protocol lines
become progress, the rest is kept masked), and a failed step turned into the error the
user should see, with the tool output's relevant tail.

No engine and no files: the builder stage (wheels.py) feeds it container output.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydeploy.builder.credentials import Masker
from pydeploy.cachekeys import UV_VERSION
from pydeploy.errors import BuildError, CompileError, PydeployError
from pydeploy.payload.builder_script import MARK
from pydeploy.plan.planner import BuildPlan
from pydeploy.progress import Progress

TAIL_LINES = 25

OnLine = Callable[[str], None]


@dataclass(frozen=True)
class Reporting:
    """Whom a builder-stage call tells what happens: its steps go to `progress`; with
    `verbose`, every line its tools print goes to `output` too (else to `progress`)."""

    progress: Progress
    verbose: bool = False
    output: OnLine | None = None


# --- output handling ----------------------------------------------------------------------


class Transcript:
    """Collects one container's output: protocol lines become progress calls, the rest
    is kept (masked) for error messages and streamed when verbose."""

    def __init__(
        self, progress: Progress, masker: Masker, output: OnLine | None, verbose: bool
    ) -> None:
        self.progress = progress
        self.mask = masker
        self.output: OnLine | None = None
        if verbose:
            # Without an output callback, --verbose lines still reach the user as progress.
            self.output = output or (lambda line: progress("log", 0.0, line))
        self.lines: list[str] = []
        self.result: dict[str, Any] | None = None
        self.failed_step: str | None = None
        self.compilers: list[str] = []  # stand-in compilers a light job's builds ran
        self.current: str | None = None
        self._started = time.monotonic()

    def __call__(self, raw: str) -> None:
        line = self.mask(raw)
        if not line.startswith(MARK):
            self.lines.append(line)
            if self.output:
                self.output(line)
            return
        kind, _, rest = line[len(MARK) :].partition(" ")
        if kind == "begin":
            self.current, self._started = rest, time.monotonic()
        elif kind == "end":
            step = self.current or rest
            detail = rest[len(step) :].strip() if rest.startswith(step) else rest
            self.progress(step, time.monotonic() - self._started, detail or None)
            self.current = None
        elif kind == "result":
            self.result = json.loads(rest)
        elif kind == "failed":
            self.failed_step = rest or self.current
        elif kind == "compilers":
            self.compilers = rest.split()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def attach(error: PydeployError, output: str) -> PydeployError:
    """Keep the full (masked) tool output on the error for --verbose / --debug."""
    error.output = output
    return error


def tail(lines: list[str], count: int = TAIL_LINES) -> str:
    kept = [ln.rstrip() for ln in lines if ln.strip() and not ln.startswith(MARK)]
    return "\n".join(kept[-count:])


_COMPILER_SIGNS = re.compile(
    r"(\berror: command '[^']*(gcc|cc|c\+\+|g\+\+|clang)[^']*' failed|fatal error: |"
    r"\.(c|cc|cpp|cxx|h|pyx):\d+(:\d+)?: error|collect2: error|/usr/bin/ld: |"
    r"Python\.h: No such file|unable to execute '(gcc|cc)')"
)


_NO_WHEEL = re.compile(
    r"(?:Wheels are required for|attempted to build|Failed to (?:download and )?build) "
    r"`([^`\s=<>@\[;~!]+)"
)
_WHEELS_ONLY = re.compile(
    r"Building source distributions is disabled|building from source is disabled|"
    r"has no usable wheels|Failed to (?:download and )?build `"
)


def needs_full_builder(step: str | None, output: str, compilers: list[str]) -> str | None:
    """Why a light job (the base image, no compilers, wheels only) must be redone in the
    full builder, or None when its failure would happen there too (an unknown package, a
    TLS or index problem, a broken app)."""
    if compilers:
        return f"a build ran a compiler ({', '.join(compilers)})"
    if step == "uv tools":
        # The builder's build-packages may be what `python3 -m venv` needs.
        return "installing uv needs more than the base image has"
    if _WHEELS_ONLY.search(output):
        found = _NO_WHEEL.search(output)
        what = f"`{found.group(1)}`" if found else "a dependency"
        return f"{what} must be built from source"
    return None


def explain_failure(step: str | None, output: str, plan: BuildPlan) -> PydeployError:
    """Turn a builder container's failure into the error the user should see."""
    lines = output.splitlines()
    pyproject = plan.project.pyproject
    built = re.search(r"Failed to (?:build|download and build) `([^`]+)`", output)
    if built:
        spec = built.group(1)
        name = re.split(r"[\s=<>@\[;~!]", spec, maxsplit=1)[0]
        start = next((i for i, ln in enumerate(lines) if built.group(0) in ln), 0)
        block = [ln for ln in lines[start:] if not re.match(r"^\s*(hint|help):|error: `", ln)]
        if _COMPILER_SIGNS.search(output):
            return CompileError(
                f"Compiling the C extension of `{name}` failed in the builder. Last lines of "
                f"the compiler output:\n{tail(block)}\n",
                hint=(
                    "A missing header or library is the usual cause: add the missing -dev "
                    "package (e.g. libpq-dev for psycopg2, libffi-dev, libssl-dev) to "
                    f"`tool.pydeploy.build-packages` in {pyproject} (now: "
                    f"{', '.join(plan.build_packages) or 'none'}), or use a version of "
                    f"`{name}` that ships a wheel for this Python."
                ),
            )
        return BuildError(
            f"Building `{name}` from source failed in the builder:\n{tail(block)}\n",
            hint=(
                "Check that the package supports this Python version; build-time system "
                f"packages go in `tool.pydeploy.build-packages` in {pyproject}."
            ),
        )
    if step == "uv tools":
        return BuildError(
            f"Installing uv {UV_VERSION} into the builder's cache failed:\n{tail(lines)}\n",
            hint=(
                "The builder needs `python3 -m venv` (Debian-based images: add python3-venv "
                "to `tool.pydeploy.build-packages`) and access to the package index "
                "(`tool.pydeploy.network`, `tool.pydeploy.index`)."
            ),
        )
    if re.search(r"UnknownIssuer|CERTIFICATE_VERIFY_FAILED|invalid peer certificate", output):
        return BuildError(
            f"The builder does not trust the package index's TLS certificate:\n{tail(lines, 8)}\n",
            hint=(
                "Behind a TLS-intercepting proxy, point `tool.pydeploy.index.ca-bundle` (or "
                "SSL_CERT_FILE) at a CA bundle that includes the proxy's CA."
            ),
        )
    uv_error = _uv_error(lines)
    if uv_error:
        return BuildError(
            f"The dependencies could not be resolved or installed ({plan.dependency_source}):"
            f"\n{uv_error}\n",
            hint=(
                "Fix the requirement named above in "
                f"{_source_file(plan)}, or the index settings in `tool.pydeploy.index`."
            ),
        )
    return BuildError(f"The builder step `{step or 'setup'}` failed:\n{tail(lines)}\n")


def _uv_error(lines: list[str]) -> str | None:
    """uv's own error block (from `error:` or its cross mark to the end)."""
    for i, line in enumerate(lines):
        if re.match(r"^\s*(\u00d7|error:)", line) and not line.startswith("error: `"):
            block = [ln for ln in lines[i:] if not ln.startswith("error: `")]
            return tail(block)
    return None


def _source_file(plan: BuildPlan) -> str:
    return {
        "uv.lock": "uv.lock (run `uv lock` after changing pyproject.toml)",
        "pylock": "pylock.toml",
        "poetry.lock": "poetry.lock (run `poetry lock` after changing pyproject.toml)",
        "pdm.lock": "pdm.lock (run `pdm lock` after changing pyproject.toml)",
        "Pipfile.lock": "Pipfile.lock (run `pipenv lock` after changing the Pipfile)",
        "requirements": "the requirements files",
    }.get(plan.dependency_source, f"[project.dependencies] of {plan.project.pyproject}")


def protocol_result(output: str) -> dict[str, Any] | None:
    """The payload of the last `result` protocol line, for commands run without a
    transcript."""
    for line in reversed(output.splitlines()):
        if line.startswith(MARK + "result "):
            loaded: dict[str, Any] = json.loads(line[len(MARK) + 7 :])
            return loaded
    return None
