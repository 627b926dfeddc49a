"""The one exception tree. Every failure a user can cause or meet is a PydeployError
subclass with its own exit code; `cli` catches them in one place and prints `message`
as a single paragraph. Anything else is a bug: exit code 1, one line naming it and the
log file that holds its traceback (printed as well under --debug)."""

from __future__ import annotations

from typing import ClassVar


class PydeployError(Exception):
    """Base class: `exit_code` is what the CLI exits with, `message` what it prints."""

    exit_code: ClassVar[int] = 1
    kind: ClassVar[str] = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint
        # The full (secret-masked) tool output behind a build failure, for --verbose.
        self.output: str | None = None

    @property
    def message(self) -> str:
        text = str(self)
        return f"{text} {self.hint}" if self.hint else text


class ConfigError(PydeployError):
    """pyproject.toml or [tool.pydeploy] is missing, malformed or invalid."""

    exit_code = 2
    kind = "config"


class EngineError(PydeployError):
    """No Docker engine answers, or the engine refused an operation."""

    exit_code = 3
    kind = "engine"


class NoEngineError(EngineError):
    """No engine answers at all (as opposed to one that refused an operation): a build
    that can go without one does (pydeploy.plan.buildpath)."""


class BaseImageError(PydeployError):
    """The base image cannot be found locally or pulled."""

    exit_code = 4
    kind = "base-image"


class BuildError(PydeployError):
    """Dependency resolution or installation failed inside the builder container."""

    exit_code = 5
    kind = "build"


class CompileError(BuildError):
    """A package with a C extension failed to compile in the builder."""

    exit_code = 6
    kind = "compile"


class AppCheckError(BuildError):
    """The configured app target does not import or is not a WSGI/ASGI callable."""

    exit_code = 7
    kind = "app-check"


class BuildCommandError(BuildError):
    """A `build-commands` command (or the automatic collectstatic) failed."""

    exit_code = 10
    kind = "build-command"


class PublishError(PydeployError):
    """Loading into the engine, pushing to a registry or writing an output failed."""

    exit_code = 8
    kind = "publish"


class RegistryAuthError(PublishError):
    """The registry refused our credentials."""

    exit_code = 9
    kind = "registry-auth"


class InterruptError(PydeployError):
    """Ctrl-C or SIGTERM: everything started was cleaned up."""

    exit_code = 130
    kind = "interrupted"


EXIT_CODES: dict[str, int] = {
    cls.kind: cls.exit_code
    for cls in (
        ConfigError,
        EngineError,
        BaseImageError,
        BuildError,
        CompileError,
        AppCheckError,
        BuildCommandError,
        PublishError,
        RegistryAuthError,
        InterruptError,
    )
}
