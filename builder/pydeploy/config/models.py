"""The `[tool.pydeploy]` table: pydantic models, TOML loading, and error messages.

The models are the single source of truth: the JSON Schema in `schema/` is generated
from them, and every validation failure is turned into one paragraph that names the
full key path (`tool.pydeploy.server.workers`), what was given and what is allowed.
"""

from __future__ import annotations

import difflib
import re
import shlex
import types
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, Union, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_snake

from pydeploy.config.toml import read_toml
from pydeploy.errors import ConfigError
from pydeploy.plan import apptarget, references, serverargs, writable
from pydeploy.plan.servers import ServerType

PYPROJECT = "pyproject.toml"
TABLE = "tool.pydeploy"

# The schema's outline of a target; apptarget.parse decides (a factory's literal arguments).
_TARGET = re.compile(
    r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*(\(.*\))?$"
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PYTHON = re.compile(r"^3\.\d{1,2}$")
# A Debian package name, optionally pinned (`libpq5=15.*`); keeps apt arguments safe.
_DEB_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.\-]+(:[a-z0-9]+)?(=[A-Za-z0-9.+~:*\-]+)?$")


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def _check_target(value: str) -> str:
    try:
        apptarget.parse(value)
    except apptarget.TargetError as exc:
        if str(exc).startswith("must be"):
            raise
        raise ValueError(
            f"{exc} (targets are `module:attribute`, e.g. `myproject.wsgi:application`, "
            "or an app factory's call, e.g. `myapp:create_app()`)"
        ) from None
    return value


def _check_env_name(value: str) -> str:
    if not ENV_NAME.match(value):
        raise ValueError("must be the NAME of an environment variable, e.g. `PYPI_TOKEN`")
    return value


def _check_packages(values: list[str]) -> list[str]:
    for value in values:
        if not _DEB_PACKAGE.match(value):
            raise ValueError(f"`{value}` is not a Debian package name (e.g. `libpq5`)")
    return values


AppTarget = Annotated[str, AfterValidator(_check_target)]
EnvName = Annotated[str, AfterValidator(_check_env_name)]
Packages = Annotated[list[str], AfterValidator(_check_packages)]
Seconds = Annotated[int, Field(ge=0, le=86400)]


class _Table(BaseModel):
    """Strict, kebab-case, immutable: unknown keys are errors, strings are not numbers."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=_kebab,
        populate_by_name=True,
        frozen=True,
        strict=True,
    )


class ServerConfig(_Table):
    """`[tool.pydeploy.server]`: which server runs the app and how."""

    type: ServerType = Field(
        "auto",
        description=(
            "Server that runs the app. `auto`: gunicorn for WSGI apps, gunicorn with "
            "uvicorn workers for ASGI apps. `uvicorn` uses uvicorn's own worker supervisor."
        ),
    )
    interface: Literal["auto", "wsgi", "asgi"] = Field(
        "auto",
        description=(
            "Whether the app is WSGI or ASGI. `auto` detects it from the source and "
            "confirms it by importing the app in the runtime image."
        ),
    )
    workers: Literal["auto"] | Annotated[int, Field(ge=1, le=512)] = Field(
        "auto",
        description=(
            "Worker processes. `auto`: decided at container start from WEB_CONCURRENCY, "
            "else 2 x effective CPUs + 1 (CPU affinity and cgroup quota), capped by what "
            "the cgroup memory limit holds (at least 1)."
        ),
    )
    worker_memory: Annotated[int, Field(ge=16)] | None = Field(
        None,
        description=(
            "Memory per worker in MiB, replacing what the build measures (the app check "
            "imports the app and serves it one request; with this set, it sends none). "
            "`auto` workers are capped to what the cgroup memory limit holds."
        ),
    )
    wsgi_worker: Literal["async", "sync"] = Field(
        "async",
        description=(
            "How gunicorn serves a WSGI app. `async`: uvicorn's event loop reads requests "
            "(a slow client holds a socket, not a worker) and the app runs in `threads` "
            "threads per worker through a2wsgi. `sync`: gunicorn's sync worker (gthread "
            "when `threads` is above 1), one connection per worker or thread."
        ),
    )
    threads: Annotated[int, Field(ge=1, le=256)] | None = Field(
        None,
        description=(
            "Threads per worker that run a WSGI app (default: 4 with the `async` "
            "wsgi-worker, 1 with `sync`). ASGI apps ignore it."
        ),
    )
    timeout: Seconds = Field(
        30, description="Seconds a worker may be silent before it is killed and restarted."
    )
    graceful_timeout: Seconds = Field(
        8,
        description=(
            "Seconds in-flight requests get to finish after SIGTERM. The default fits, "
            "with the server's exit, inside docker stop's 10 s and Kubernetes' 30 s; "
            "generated manifests give the orchestrator a grace period above it."
        ),
    )
    keepalive: Seconds = Field(
        5,
        description=(
            "Seconds to hold idle keep-alive connections. Behind a load balancer, "
            "set it above the balancer's idle timeout."
        ),
    )
    max_requests: Annotated[int, Field(ge=0)] = Field(
        0, description="Restart a worker after this many requests (0: never)."
    )
    max_requests_jitter: Annotated[int, Field(ge=0)] = Field(
        0, description="Random extra requests added to `max-requests` per worker."
    )
    forwarded_allow_ips: list[str] | None = Field(
        None,
        description=(
            "Proxy addresses (IPs or CIDRs) trusted for X-Forwarded-* headers; "
            "`['*']` trusts all. Default: the server's own (127.0.0.1)."
        ),
    )
    proxy_headers: bool = Field(
        True, description="Honour X-Forwarded-* headers from trusted proxies (uvicorn)."
    )
    access_log: bool | Literal["buffered", "unbuffered", "off"] = Field(
        True,
        description=(
            "One access-log line per request on stdout. `true` (the default) or "
            "`buffered`: lines are written in batches, within 0.1 s "
            "(`PYDEPLOY_ACCESS_LOG_FLUSH_SECONDS` at run time) and at every orderly exit; "
            "`unbuffered`: the server's own handler, one write per line; `false` or "
            "`off`: none. Errors always go to stderr."
        ),
    )
    extra_args: list[str] = Field(
        default_factory=list,
        description="Extra command-line arguments appended to the server's command line.",
    )

    @field_validator("extra_args")
    @classmethod
    def _server_options(cls, value: list[str], info: ValidationInfo) -> list[str]:
        why = serverargs.problem(info.data.get("type", "auto"), value)
        if why:
            raise ValueError(f"cannot go on the server's command line: {why}")
        return value

    @model_validator(mode="after")
    def _jitter_needs_max(self) -> ServerConfig:
        if self.max_requests_jitter and not self.max_requests:
            raise ValueError("`max-requests-jitter` needs `max-requests` above 0")
        return self


class HealthcheckConfig(_Table):
    """`[tool.pydeploy.healthcheck]`: the image's HEALTHCHECK (a stdlib probe, no curl)."""

    enabled: bool = Field(True, description="Add a HEALTHCHECK to the image.")
    path: str | None = Field(
        None,
        description=(
            "HTTP path probed on the live port; any 2xx or 3xx answer is healthy. Default: "
            "a health route found in the source (`/healthz`, `/health`, `/ping`...), else "
            "`/` with any answer below 500 counted as alive (an API without `/` answers "
            "404, Django 400 for an unknown Host)."
        ),
    )
    interval: Annotated[int, Field(ge=1, le=3600)] = Field(
        30, description="Seconds between probes."
    )
    timeout: Annotated[int, Field(ge=1, le=600)] = Field(
        3, description="Seconds one probe may take."
    )
    start_period: Annotated[int, Field(ge=0, le=3600)] = Field(
        10, description="Seconds after start during which failures do not count."
    )
    retries: Annotated[int, Field(ge=1, le=100)] = Field(
        3, description="Consecutive failures before the container is unhealthy."
    )

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith("/") or any(ch.isspace() for ch in value):
            raise ValueError("must be a URL path starting with `/`, e.g. `/healthz`")
        return value


class IndexConfig(_Table):
    """`[tool.pydeploy.index]`: where the builder finds packages. Secrets never go here."""

    url: str | None = Field(
        None, description="Primary package index URL (default: PyPI). No credentials in it."
    )
    extra_urls: list[str] = Field(
        default_factory=list, description="Extra package index URLs. No credentials in them."
    )
    ca_bundle: str | None = Field(
        None,
        description=(
            "CA bundle file trusted by the builder (for TLS-intercepting proxies). Default: "
            "the host's SSL_CERT_FILE, PIP_CERT or REQUESTS_CA_BUNDLE. Mounted read-only "
            "into builder containers; never copied into the image."
        ),
    )
    username_env: EnvName | None = Field(
        None, description="NAME of the environment variable that holds the index username."
    )
    password_env: EnvName | None = Field(
        None,
        description=(
            "NAME of the environment variable that holds the index password or token. "
            "Its value is passed to the builder container only, never to a layer."
        ),
    )

    @field_validator("url", "extra_urls")
    @classmethod
    def _no_inline_credentials(cls, value: str | list[str] | None) -> str | list[str] | None:
        urls = [value] if isinstance(value, str) else value or []
        for url in urls:
            if not re.match(r"^(https?|file)://", url):
                raise ValueError(f"`{url}` is not an http(s):// or file:// URL")
            if re.match(r"^https?://[^/@]+@", url):
                raise ValueError(
                    "a URL must not contain credentials; name environment variables in "
                    "`username-env` / `password-env` instead"
                )
        return value


class DependenciesConfig(_Table):
    """`[tool.pydeploy.dependencies]`: where the dependency set comes from."""

    source: Literal[
        "auto",
        "uv.lock",
        "pylock",
        "poetry.lock",
        "pdm.lock",
        "Pipfile.lock",
        "requirements",
        "project",
    ] = Field(
        "auto",
        description=(
            "`auto` uses the first present of uv.lock, pylock.toml, poetry.lock, pdm.lock, "
            "Pipfile.lock, the production requirements file (requirements.txt, else "
            "requirements/production.txt or requirements/prod.txt); else resolves "
            "[project.dependencies] and records the pins."
        ),
    )
    requirements: list[str] = Field(
        default_factory=list,
        description=(
            "requirements files (relative to the project) used when there is no lock; "
            "default: the production requirements file (never requirements-dev.txt)."
        ),
    )
    extras: list[str] = Field(
        default_factory=list,
        description="Extras of the project to install ([project.optional-dependencies], "
        "[tool.poetry.extras]).",
    )
    groups: list[str] = Field(
        default_factory=list,
        description=(
            "Dependency groups to install as well: PEP 735 groups, Poetry groups, PDM "
            "groups, Pipfile.lock sections (`develop` for [dev-packages])."
        ),
    )


Cores = Annotated[float, Field(gt=0, le=512)]
MiB = Annotated[int, Field(ge=16)]


class ResourcesConfig(_Table):
    """`[tool.pydeploy.resources]`: what the orchestrator should give the container.

    `pydeploy run` and `pydeploy manifest` apply the same numbers, and the image's
    launcher sizes `auto` workers from the limits it then sees in its cgroup."""

    cpu: Cores | None = Field(
        None,
        description=(
            "CPU limit in cores (e.g. 1 or 0.5): the cgroup quota `auto` workers are sized "
            "from. Applied by `pydeploy run --cpus` and the generated manifests."
        ),
    )
    memory: MiB | None = Field(
        None,
        description=(
            "Memory limit in MiB; it also caps `auto` workers (what one worker costs is "
            "measured at build, or `server.worker-memory`)."
        ),
    )
    cpu_request: Cores | None = Field(
        None,
        description="CPU the scheduler reserves, in cores. Default: the `cpu` limit.",
    )
    memory_request: MiB | None = Field(
        None,
        description="Memory the scheduler reserves, in MiB. Default: the `memory` limit.",
    )

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourcesConfig:
        if self.cpu is not None and self.cpu_request is not None and self.cpu_request > self.cpu:
            raise ValueError("`cpu-request` must not exceed the `cpu` limit")
        if (
            self.memory is not None
            and self.memory_request is not None
            and self.memory_request > self.memory
        ):
            raise ValueError("`memory-request` must not exceed the `memory` limit")
        return self


class CheckConfig(_Table):
    """`[tool.pydeploy.check]`: the app check (the app imported in the runtime image)."""

    skip: bool = Field(
        False,
        description=(
            "Skip importing the app at build (for an app that cannot import without live "
            "services). The interface must then come from `server.interface`, "
            "`server.type` or detection; worker memory is not measured."
        ),
    )


# A process name becomes part of Kubernetes object names and a compose service name.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_PROCESS_NAME = 40
# Names the manifests use themselves: the server, and the release command's Job/service.
RESERVED_PROCESS_NAMES = ("web", "release")


def command_argv(command: str | list[str]) -> list[str]:
    """A command's argv: a list as is, a string split as a POSIX shell splits words
    (quotes, backslashes; no variables, globs or pipes: nothing runs a shell)."""
    return list(command) if isinstance(command, list) else shlex.split(command)


def _check_command(value: str | list[str]) -> str | list[str]:
    try:
        argv = command_argv(value)
    except ValueError as exc:  # shlex: "No closing quotation", "No escaped character"
        raise ValueError(f"cannot be split into words: {str(exc).lower()}") from None
    if not argv or not argv[0]:
        raise ValueError('must name a program, e.g. "python manage.py migrate"')
    if any("\0" in word for word in argv):
        raise ValueError("holds a NUL character, which no argument can")
    return value


Command = Annotated[Union[str, list[str]], AfterValidator(_check_command)]  # noqa: UP007


class ProcessConfig(_Table):
    """One entry of `[tool.pydeploy.processes]` written as a table."""

    command: Command = Field(
        description=(
            "The command, as a string (split like a shell's words) or a list: run by the "
            "image's launcher with the venv active, in /app, as the runtime user."
        ),
    )
    replicas: Annotated[int, Field(ge=0, le=1000)] = Field(
        1,
        description=(
            "Copies of the process the manifests run (its own concurrency, such as "
            "Celery's `--concurrency`, belongs in the command)."
        ),
    )
    resources: ResourcesConfig | None = Field(
        None, description="Its container's resources. Default: `tool.pydeploy.resources`."
    )


def _short_process_form(schema: dict[str, Any]) -> None:
    """The schema of `processes` also allows the short form, a command alone, which the
    model turns into a table before validation."""
    table = schema["additionalProperties"]
    command = [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
    schema["additionalProperties"] = {"anyOf": [*command, table]}


class PydeployConfig(_Table):
    """`[tool.pydeploy]`: how pydeploy builds and runs this project's image."""

    model_config = ConfigDict(title="[tool.pydeploy]")

    app: AppTarget | None = Field(
        None,
        json_schema_extra={"pattern": _TARGET.pattern},
        description=(
            "The WSGI/ASGI app as `module:attribute` (e.g. `mysite.wsgi:application`), "
            "or an app factory's call with literal arguments (e.g. `flaskr:create_app()`, "
            '`app:create_app("production")`), which the server calls in each worker. '
            "Detected from the source when absent."
        ),
    )
    python: str | None = Field(
        None,
        description=(
            "Python version `3.X`. Default: `.python-version`, else a version that "
            "`requires-python` allows. Ignored when `base-image` decides it."
        ),
    )
    base_image: str | None = Field(
        None,
        description=(
            "Runtime base image. Default `python:<python>-slim`. Its interpreter decides "
            "the Python version, which must satisfy `requires-python`. Without an engine "
            "(and for `platforms`) it is read from its registry, or from `oci:DIR` (an OCI "
            "image layout) or `docker-archive:FILE` (a `docker save` file)."
        ),
    )
    platforms: list[str] = Field(
        default_factory=list,
        description=(
            'Platforms to build, e.g. `["linux/amd64", "linux/arm64"]` (`--platform` '
            "wins). Empty: the base image's. Several give one image per platform under an "
            "OCI image index (push or `oci:DIR` outputs); each platform's wheels are "
            "installed on the build host."
        ),
    )
    cache: str | Literal[False] | None = Field(
        None,
        description=(
            "The registry cache: a repository (e.g. `ghcr.io/my-org/pydeploy-cache`) that "
            "records the dependency, system-package and build-command layers by their "
            "inputs, so another machine reuses them instead of installing again. "
            "`--cache-from`/`--cache-to` win. Default: the push repository when the build "
            "pushes; `false`: none."
        ),
    )
    name: str | None = Field(
        None,
        description=(
            "Image repository name. Default: `project.name` (or `tool.poetry.name`) made "
            "into an image name, else the project directory's name."
        ),
    )
    tags: list[str] = Field(
        default_factory=list,
        description=(
            "Image tags (`1.2.3`) or full references. Default: `project.version` (or "
            "`tool.poetry.version`); without metadata, `git describe`, else `latest`."
        ),
    )
    port: Annotated[int, Field(ge=1, le=65535)] = Field(
        8000, description="Port the server listens on; PORT overrides it at run time."
    )
    user_id: Annotated[int, Field(ge=1, le=2**31 - 1)] = Field(
        10001,
        description=(
            "Numeric uid (and gid) of the non-root runtime user; one the base image "
            "already uses (e.g. 42, Debian's `shadow` group) is refused."
        ),
    )
    keep_setuid: bool = Field(
        False,
        description=(
            "Keep the setuid/setgid bits of files inherited from the base image (su, mount, "
            "passwd...). Default: dropped, by a layer that re-adds those files without them "
            "(CIS Docker 4.8)."
        ),
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables set in the image."
    )
    check_env: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Placeholder environment values that exist only while the build imports the "
            "app (settings read at import, e.g. SECRET_KEY or DATABASE_URL), on top of "
            "`env`; never in the image, never printed."
        ),
    )
    writable: list[str] = Field(
        default_factory=list,
        description=(
            "Directories the app writes, relative to /app (`logs`) or absolute "
            "(`/var/lib/app`): owned by the runtime user in the image, and mounted as "
            "tmpfs (emptyDir) wherever the root filesystem is read-only."
        ),
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra image labels (OCI labels are added anyway)."
    )
    include: list[str] = Field(
        default_factory=list,
        description="gitignore-style patterns the app layer keeps even when ignored.",
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="gitignore-style patterns dropped from the app layer, on top of defaults.",
    )
    exclude_tests: bool = Field(
        True, description="Drop `tests/` and `test_*.py` files from the app layer."
    )
    build_packages: Packages | None = Field(
        None,
        description=(
            "Debian packages installed in the builder only (compilers, -dev headers). "
            "Default: gcc, libc6-dev (and python3-dev for a Debian-built interpreter)."
        ),
    )
    runtime_packages: Packages = Field(
        default_factory=list,
        description="Debian packages installed in the runtime image (e.g. `libpq5`).",
    )
    build_commands: list[Annotated[str, Field(min_length=1)] | list[str]] = Field(
        default_factory=list,
        description=(
            "Commands run at build after the dependencies are installed (e.g. `python "
            "manage.py collectstatic --noinput`, `pybabel compile -d translations`): in "
            "the runtime image, in /app, as the runtime uid, with `env` and `check-env`. A "
            "string runs through /bin/sh, a list is run as is. What they write under /app "
            "(and in `build-outputs`) becomes a layer of its own."
        ),
    )
    build_outputs: list[str] = Field(
        default_factory=list,
        description=(
            "Absolute directories outside /app that `build-commands` write and the image "
            "keeps (e.g. `/srv/static`)."
        ),
    )
    collectstatic: bool | None = Field(
        None,
        description=(
            "Run Django's `collectstatic --noinput` at build. Default: when the settings "
            "list `django.contrib.staticfiles` and set STATIC_ROOT (`pydeploy plan` says)."
        ),
    )
    auto_runtime_packages: bool = Field(
        True,
        description=(
            "Add the Debian package of every shared library that the venv's compiled "
            "files need and the runtime image lacks (found at build time, e.g. libpq5 "
            "for psycopg2 built from source). False: such a library fails the build."
        ),
    )
    network: str | None = Field(
        None,
        description=(
            "Network mode of builder containers (`host`, `bridge`, `none`...). Default: "
            "the engine's bridge when it has one, else host."
        ),
    )
    server: ServerConfig = Field(default_factory=ServerConfig, description="Server settings.")
    healthcheck: HealthcheckConfig = Field(
        default_factory=HealthcheckConfig, description="Image HEALTHCHECK."
    )
    index: IndexConfig = Field(default_factory=IndexConfig, description="Package index settings.")
    dependencies: DependenciesConfig = Field(
        default_factory=DependenciesConfig, description="Dependency source."
    )
    resources: ResourcesConfig = Field(
        default_factory=ResourcesConfig, description="Container resources."
    )
    check: CheckConfig = Field(default_factory=CheckConfig, description="The app check.")
    release_command: Command | None = Field(
        None,
        description=(
            "Runs once before a new version serves (migrations): `pydeploy run` runs it "
            "first and stops if it fails; the manifests run it as a Kubernetes Job and a "
            "compose service the server waits for. A string (split like a shell's words) "
            'or a list, e.g. "python manage.py migrate --noinput".'
        ),
    )
    processes: dict[str, ProcessConfig] = Field(
        default_factory=dict,
        description=(
            'Other processes of the app, as a Procfile names them: `worker = "celery -A '
            'proj worker"` or a table with `command`, `replicas`, `resources`. Same image, '
            "another command, no HTTP healthcheck; one Deployment / compose service each. "
            "Names are DNS labels; `web` and `release` are taken."
        ),
        json_schema_extra=_short_process_form,
    )

    @field_validator("processes", mode="before")
    @classmethod
    def _process_tables(cls, value: Any) -> Any:
        """`worker = "celery ..."` is `worker = {command = "celery ..."}`."""
        if not isinstance(value, dict):
            return value
        tables = {}
        for name, entry in value.items():
            if isinstance(entry, (str, list)):
                entry = {"command": entry}  # noqa: PLW2901 -- the short form's table
            elif not isinstance(entry, dict):
                raise ValueError(  # noqa: TRY004 -- pydantic reports ValueErrors, not TypeErrors
                    f"entry {references.show(str(name))} must be a command (a string or a "
                    "list of strings) or a table with `command`"
                )
            tables[name] = entry
        return tables

    @field_validator("python")
    @classmethod
    def _python_version(cls, value: str | None) -> str | None:
        if value is not None and not _PYTHON.match(value):
            raise ValueError("must be a `3.X` version such as `3.12`")
        return value

    @field_validator("build_commands")
    @classmethod
    def _commands(cls, value: list[str | list[str]]) -> list[str | list[str]]:
        for command in value:
            if isinstance(command, list) and (not command or not all(command)):
                raise ValueError("a command given as a list needs a non-empty program and words")
        return value

    @field_validator("build_outputs")
    @classmethod
    def _outputs(cls, value: list[str]) -> list[str]:
        for path in value:
            parts = PurePosixPath(path).parts
            if not path.startswith("/") or ".." in parts or len(parts) < 2:
                raise ValueError(f"`{path}` must be an absolute directory below / (no `..`)")
            if parts[1] in {"proc", "sys", "dev", "tmp", "run", "app"} or path.startswith(
                "/opt/venv"
            ):
                raise ValueError(
                    f"`{path}` is a place the image does not keep build output in; "
                    "write under /app, or another directory such as /srv/static"
                )
        return value

    @field_validator("env", "check_env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not ENV_NAME.match(name):
                raise ValueError(
                    f"`{references.show(name)}` is not a valid environment variable name"
                )
            if "\0" in text:
                raise ValueError(f"`{name}` holds a NUL character, which no environment value can")
        return value

    @field_validator("writable")
    @classmethod
    def _writable_dirs(cls, value: list[str]) -> list[str]:
        for entry in value:
            why = writable.problem(entry)
            if why:
                raise ValueError(f"entry {references.show(entry)} {why}")
        clash = writable.overlaps([writable.resolve(entry) for entry in value])
        if clash:
            raise ValueError(f"lists {clash[1]} inside {clash[0]}: list only {clash[0]}")
        return value

    @field_validator("processes")
    @classmethod
    def _process_names(cls, value: dict[str, ProcessConfig]) -> dict[str, ProcessConfig]:
        for name in value:
            if name in RESERVED_PROCESS_NAMES:
                raise ValueError(
                    f"entry `{name}` is reserved ({' and '.join(RESERVED_PROCESS_NAMES)} are the "
                    "server and the release command); name the process otherwise, e.g. "
                    "`worker`"
                )
            if len(name) > MAX_PROCESS_NAME or not _DNS_LABEL.match(name):
                raise ValueError(
                    f"name {references.show(name)} is not a DNS label of at most "
                    f"{MAX_PROCESS_NAME} characters (lowercase letters, digits and `-`, "
                    "starting and ending with a letter or digit), which Kubernetes and "
                    "compose names need"
                )
        return value

    @field_validator("labels")
    @classmethod
    def _label_text(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not name or "\0" in name + text:
                raise ValueError(f"label {references.show(name)} is empty or holds a NUL character")
        return value

    @field_validator("base_image")
    @classmethod
    def _base_reference(cls, value: str | None) -> str | None:
        why = None if value is None else references.base_problem(value)
        if why:
            raise ValueError(f"is not an image reference: {why}")
        return value

    @field_validator("platforms")
    @classmethod
    def _platform_names(cls, value: list[str]) -> list[str]:
        for text in value:
            why = references.platform_problem(text)
            if why:
                raise ValueError(f"{text!r} is not a platform: {why}")
        return value

    @field_validator("cache")
    @classmethod
    def _cache_repository(cls, value: str | Literal[False] | None) -> str | Literal[False] | None:
        why = references.repository_problem(value) if isinstance(value, str) else None
        if why:
            raise ValueError(f"is not a repository: {why}")
        return value

    @field_validator("name")
    @classmethod
    def _image_name(cls, value: str | None) -> str | None:
        why = None if value is None else references.name_problem(value)
        if why:
            raise ValueError(f"is not an image name: {why}; use {references.GRAMMAR}")
        return value

    @field_validator("tags")
    @classmethod
    def _image_tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            why = references.tag_problem(tag)
            if why:
                raise ValueError(f"entry {references.show(tag)} is not a tag or `name:tag`: {why}")
        return value

    @field_validator("include", "exclude")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not _is_pattern(pattern):
                raise ValueError(
                    f"entry {references.show(pattern)} is not a gitignore-style pattern"
                )
        return value


def _is_pattern(text: str) -> bool:
    # Imported here: pathspec costs ~70 ms, and every command (even --version) imports this.
    import pathspec  # noqa: PLC0415

    try:
        pathspec.GitIgnoreSpec.from_lines([text])
    except ValueError:  # pathspec's GitIgnorePatternError (`!`, a lone backslash)
        return False
    return True


# ---------------------------------------------------------------------------
# Loading


def read_pyproject(project_dir: Path) -> dict[str, Any]:
    """Parse `project_dir/pyproject.toml`, turning every failure into a ConfigError."""
    path = project_dir / PYPROJECT
    if not path.is_file():
        raise ConfigError(
            f"No {PYPROJECT} in {project_dir}.",
            hint=(
                "Run pydeploy in a Python project directory, or create one and run "
                "`pydeploy init` to add a [tool.pydeploy] table."
            ),
        )
    data = read_toml(path)
    _check_shape(data, path)
    return data


# The pyproject.toml keys pydeploy reads and what each must hold, parents before children:
# checked once when the file is read, so no reader meets a string where it wants a table.
_KINDS: dict[str, Callable[[Any], bool]] = {
    "a table": lambda v: isinstance(v, dict),
    "a string": lambda v: isinstance(v, str),
    "a list of strings": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "a table of strings": lambda v: (
        isinstance(v, dict) and all(isinstance(x, str) for x in v.values())
    ),
    "a table of lists of strings": lambda v: (
        isinstance(v, dict) and all(_KINDS["a list of strings"](x) for x in v.values())
    ),
}
_SHAPE = {
    "project": "a table",
    "project.name": "a string",
    "project.version": "a string",
    "project.description": "a string",
    "project.requires-python": "a string",
    "project.dependencies": "a list of strings",
    "project.optional-dependencies": "a table of lists of strings",
    "project.dynamic": "a list of strings",
    "project.urls": "a table of strings",
    "build-system": "a table",
    "dependency-groups": "a table",
    "tool": "a table",
    "tool.pydeploy": "a table",
    "tool.uv": "a table",
    "tool.uv.sources": "a table",
    "tool.uv.workspace": "a table",
    "tool.uv.workspace.members": "a list of strings",
    "tool.uv.workspace.exclude": "a list of strings",
    "tool.poetry": "a table",
    "tool.poetry.name": "a string",
    "tool.poetry.version": "a string",
    "tool.poetry.description": "a string",
    "tool.poetry.dependencies": "a table",
}


def _check_shape(data: dict[str, Any], path: Path) -> None:
    for key, kind in _SHAPE.items():
        *parents, last = key.split(".")
        table: Any = data
        for part in parents:
            table = table.get(part, {})
        if last in table and not _KINDS[kind](table[last]):
            given = table[last]
            raise ConfigError(
                f"{path}: `{key}` must be {kind}, not {_type_name(given)} (given: {_show(given)}).",
                hint=(
                    "Fix it there (PEP 621 and uv's documentation describe these keys); "
                    "`pydeploy check` re-validates."
                ),
            )


def _type_name(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
    names |= {list: "a list", dict: "a table"}
    return next((n for t, n in names.items() if type(value) is t), type(value).__name__)


def tool_table(pyproject: dict[str, Any], path: Path) -> dict[str, Any]:
    """Return the raw `[tool.pydeploy]` table or explain how to add one."""
    table: dict[str, Any] | None = pyproject.get("tool", {}).get("pydeploy")
    if table is None:
        raise ConfigError(
            f"{path} has no [tool.pydeploy] table.",
            hint=(
                "Run `pydeploy init` to detect the app and append a commented table, "
                'or add `[tool.pydeploy]` with `app = "module:attribute"` by hand.'
            ),
        )
    return table


def parse_config(table: dict[str, Any], path: Path) -> PydeployConfig:
    """Validate the raw table; errors name the full key path and what is allowed."""
    try:
        return PydeployConfig.model_validate(table)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path)) from None


def load_config(project_dir: Path) -> tuple[dict[str, Any], PydeployConfig]:
    """Read pyproject.toml and its validated `[tool.pydeploy]`."""
    pyproject = read_pyproject(project_dir)
    path = project_dir / PYPROJECT
    return pyproject, parse_config(tool_table(pyproject, path), path)


# ---------------------------------------------------------------------------
# Error messages


def _explain(exc: ValidationError, path: Path) -> str:
    problems: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        key, text = _explain_one(err)
        # A union reports once per member; the first one is the useful one.
        if not any(key == seen or key.startswith(seen + ".") for seen in problems):
            problems[key] = text
    count = f"{len(problems)} problems" if len(problems) > 1 else "a problem"
    return f"{path}: [tool.pydeploy] has {count}: " + " ".join(problems.values())


def _explain_one(err: Any) -> tuple[str, str]:
    loc, tagged = _key_path(err["loc"])
    key = ".".join([TABLE, *loc])
    shown_key = key if len(key) <= 80 else key[:77] + "..."  # keys can be any length
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        known = sorted(_aliases(parent)) if parent else []
        unknown = loc[-1]
        close = difflib.get_close_matches(unknown, known, n=1, cutoff=0.5)
        advice = f"did you mean `{close[0]}`?" if close else f"known keys: {', '.join(known)}."
        return key, f"`{shown_key}` is not a known key; {advice}{_secret_hint(unknown)}"
    given = err.get("input")
    shown = "" if isinstance(given, dict) else f" (given: {_show(given)})"
    if err["type"] == "value_error":
        message = str(err["msg"]).removeprefix("Value error, ")
        return key, f"`{shown_key}` {message}{shown}."
    allowed = _allowed(loc)
    message = str(err["msg"])
    message = message[0].lower() + message[1:]
    # A union member's complaint: say what the union allows instead.
    message = "is not valid" if tagged else message.replace("input should be", "should be")
    suffix = f"; allowed: {allowed}" if allowed else ""
    return key, f"`{shown_key}` {message}{shown}{suffix}."


def _key_path(loc: tuple[Any, ...]) -> tuple[list[str], bool]:
    """The keys of a pydantic error location, without the union member tags (`int`,
    `literal['auto']`) pydantic inserts after a union-typed field; True when it had one.
    Only after such a field: a user's key may well be named `int`."""
    keys: list[str] = []
    tagged = False
    model: type[BaseModel] | None = PydeployConfig
    table_of: type[BaseModel] | None = None
    union = False
    for part in loc:
        if union and isinstance(part, str) and _is_union_tag(part):
            tagged, union = True, False
            continue
        keys.append(str(part))
        if table_of is not None:  # `part` is a key of a table of models
            model, table_of = table_of, None
            continue
        field = _field(model, str(part)) if model else None
        annotation = field.annotation if field else None
        union = get_origin(annotation) in {Union, types.UnionType}
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        model = annotation if is_model else None
        table_of = _table_model(annotation)
    return keys, tagged


def _table_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a `dict[str, Model]` field (`processes`), else None."""
    if get_origin(annotation) is not dict:
        return None
    value = annotation.__args__[1]
    return value if isinstance(value, type) and issubclass(value, BaseModel) else None


def _field(model: type[BaseModel], key: str) -> Any:
    return next(
        (f for name, f in model.model_fields.items() if _kebab(name) == key or name == key), None
    )


def _is_union_tag(part: str) -> bool:
    return part in {"int", "str", "float", "bool"} or "[" in part


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _secret_hint(key: str) -> str:
    if any(word in key for word in ("password", "token", "secret", "username")):
        return (
            " Credentials never go in pyproject.toml: name the environment variables "
            "that hold them in `tool.pydeploy.index.username-env` / `password-env`."
        )
    return ""


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] = PydeployConfig
    table_of: type[BaseModel] | None = None
    for part in loc:
        if table_of is not None:
            model, table_of = table_of, None
            continue
        field = _field(model, part)
        annotation = field.annotation if field else None
        table_of = _table_model(annotation)
        if table_of is not None:
            continue
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return None if table_of is not None else model


def _aliases(model: type[BaseModel]) -> list[str]:
    return [_kebab(name) for name in model.model_fields]


def _allowed(loc: list[str]) -> str:
    parent = _model_at(loc[:-1])
    if parent is None or not loc:
        return ""
    field = parent.model_fields.get(to_snake(loc[-1]).replace("-", "_"))
    if field is None:
        return ""
    schema = parent.model_json_schema(by_alias=True).get("properties", {}).get(loc[-1], {})
    return _describe_schema(schema)


def _describe_schema(schema: dict[str, Any]) -> str:
    options = schema.get("anyOf") or [schema]
    parts: list[str] = []
    for option in options:
        if "enum" in option:
            parts.extend(f"`{v}`" for v in option["enum"])
        elif "const" in option:
            parts.append(f"`{option['const']}`")
        elif option.get("type") in {"integer", "number"}:
            low, high = option.get("minimum"), option.get("maximum")
            bounds = f" {low}..{high}" if low is not None and high is not None else ""
            bounds = bounds or (f" >= {low}" if low is not None else "")
            parts.append(f"an {option['type']}{bounds}")
        elif option.get("type") == "array":
            parts.append("a list of strings")
        elif option.get("type") in {"string", "boolean", "object"}:
            parts.append(
                {"string": "a string", "boolean": "true or false"}.get(option["type"], "a table")
            )
        elif option.get("type") == "null":
            continue
    return " or ".join(dict.fromkeys(parts))
