"""Pure planning: a loaded Project plus command-line overrides become a frozen BuildPlan.

No engine, no network, no writes, and the host environment is an argument: `pydeploy
plan` prints exactly what `pydeploy build` will do, and unit tests check plans without
Docker. Every setting a later step reads (indexes, launch, healthcheck, server policy,
dependency selection, resources) is resolved here; facts only the engine knows (the base
image digest, its interpreter) and secret values are filled in by the build.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from pydeploy.config.models import PydeployConfig, ResourcesConfig, command_argv
from pydeploy.config.project import Project, read_lock, resolve_python
from pydeploy.errors import ConfigError
from pydeploy.payload import launcher
from pydeploy.plan import apptarget, depsource, health, references, servers, writable
from pydeploy.plan.buildcommands import BuildCommand, plan_build_commands
from pydeploy.plan.detect import Factory, Scan, display_name, scan_project
from pydeploy.plan.detect import interface_of as interface_of_framework
from pydeploy.plan.index import IndexPlan, resolve_index
from pydeploy.plan.launch import Healthcheck, Interface, LaunchSettings, Process, ServerPolicy
from pydeploy.plan.memory import launch_keys as memory_launch_keys
from pydeploy.plan.registrycache import NO_CACHE, CachePlan, plan_cache
from pydeploy.plan.skiplist import DEFAULT_EXCLUDES, NEVER_WHY, TEST_EXCLUDES

VENV = "/opt/venv"
APP_DIR = "/app"
LAUNCHER_DIR = "/opt/pydeploy"
# pydeploy's gunicorn worker classes (server_workers.py), alone in a directory so that
# putting it on gunicorn's --pythonpath shadows none of the app's modules.
WORKER_LIB = f"{LAUNCHER_DIR}/lib"
WORKER_MODULE_PATH = f"{WORKER_LIB}/{launcher.WORKER_MODULE}.py"
# The buffered access log, beside them (the launcher puts WORKER_LIB on the servers' path).
ACCESS_LOG_MODULE_PATH = f"{WORKER_LIB}/{launcher.ACCESS_LOG_MODULE}.py"
UVICORN_LOG_CONFIG_PATH = f"{WORKER_LIB}/{launcher.UVICORN_LOG_CONFIG}"
DEFAULT_BUILD_PACKAGES = ("gcc", "libc6-dev")
# The layer that drops the base's setuid/setgid bits (when it has any).
SETUID_ROLE = "no-setuid"
# The `writable` directories, owned by the runtime user (between the app and the launcher:
# it must come after the app layer, whose copy of a listed directory it re-owns).
WRITABLE_ROLE = "writable"
BUILD_ROLE = "build"  # what build-commands wrote, between the app and the launcher
# uv's default dependency group, which `uv export` (and `uv sync`) install unless told not
# to; it holds development tools, so an image gets it only when `groups` names it.
DEV_GROUP = "dev"


@dataclass(frozen=True)
class Overrides:
    """Command-line flags; each one wins over `[tool.pydeploy]`."""

    base_image: str | None = None
    network: str | None = None
    tags: tuple[str, ...] = ()
    python: str | None = None
    registry: str | None = None  # prefix for tags that are not full references
    platforms: tuple[str, ...] = ()
    cache_from: str | None = None  # the registry cache's repositories (plan.registrycache)
    cache_to: str | None = None


@dataclass(frozen=True)
class LayerPlan:
    role: str
    paths: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class PythonPin:
    """A Python version the user asked for by name: the base image's must be it."""

    version: str
    origin: str  # `--python`, `tool.pydeploy.python` or `.python-version`


@dataclass(frozen=True)
class DependencyPlan:
    """What of the project's dependencies the image gets, beside their source."""

    extras: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()  # the requirements files (source `requirements`)

    @property
    def dev_group(self) -> bool:
        """Whether uv's default `dev` group is installed: only when `groups` names it
        (the builder's and the ejected Dockerfile's `uv export` both follow this)."""
        return DEV_GROUP in self.groups


@dataclass(frozen=True)
class BuildPlan:
    project: Project
    python: str
    python_origin: str
    python_pin: PythonPin | None
    base_image: str
    base_image_origin: str
    # `--platform` or `platforms`, each `os/arch[/variant]`; empty: the base image's own.
    platforms: tuple[str, ...]
    app: str
    app_origin: str
    interface: Interface
    server: str
    tags: tuple[str, ...]
    tags_origin: str
    image_name: str
    image_name_origin: str
    network: str | None
    user_id: int
    keep_setuid: bool
    port: int
    build_packages: tuple[str, ...]
    runtime_packages: tuple[str, ...]
    auto_runtime_packages: bool
    dependency_source: str
    install_project: bool
    dependencies: DependencyPlan
    index: IndexPlan
    excludes: tuple[str, ...]
    includes: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    layers: tuple[LayerPlan, ...]
    # What only the app check sees: placeholder values (never in the image), or no check.
    check_env: tuple[tuple[str, str], ...]
    check_skip: bool
    writable: tuple[str, ...]  # absolute image paths, sorted
    healthcheck: Healthcheck | None
    build_commands: tuple[BuildCommand, ...]
    build_outputs: tuple[str, ...]  # absolute directories outside /app the commands keep
    server_policy: ServerPolicy
    launch: LaunchSettings
    resources: ResourcesConfig
    release: tuple[str, ...] | None = None  # `release-command`'s argv
    processes: tuple[Process, ...] = ()
    # Why `dependency_source`: the key that set it, or the file `auto` found first.
    dependency_origin: str = ""
    cache: CachePlan = NO_CACHE  # the registry cache (plan.registrycache)

    def to_json(self) -> dict[str, Any]:
        """A stable, documented shape for `pydeploy plan --json`."""
        return {
            "project": {
                "name": self.project.name,
                "name_origin": self.project.name_origin,
                "version": self.project.version,
                "version_origin": self.project.version_origin,
                "metadata": self.project.metadata,
                "root": str(self.project.root),
            },
            "image_name": {"name": self.image_name, "origin": self.image_name_origin},
            "python": {
                "version": self.python,
                "origin": self.python_origin,
                "pin": (
                    {"version": self.python_pin.version, "origin": self.python_pin.origin}
                    if self.python_pin
                    else None
                ),
            },
            "base_image": {"name": self.base_image, "origin": self.base_image_origin},
            "platforms": list(self.platforms),
            "app": {"target": self.app, "origin": self.app_origin, "interface": self.interface},
            "server": {
                "type": self.server,
                "command": server_command_preview(self),
                "policy": self.server_policy.to_json(),
            },
            "tags": list(self.tags),
            "tags_origin": self.tags_origin,
            "user": {"uid": self.user_id, "gid": self.user_id},
            "port": self.port,
            "network": self.network or "auto",
            "dependencies": {
                "source": self.dependency_source,
                "source_origin": self.dependency_origin,
                "install_project": self.install_project,
                "build_packages": list(self.build_packages),
                "runtime_packages": list(self.runtime_packages),
                "auto_runtime_packages": self.auto_runtime_packages,
                "extras": list(self.dependencies.extras),
                "groups": list(self.dependencies.groups),
                "dev_group": self.dependencies.dev_group,
                "requirements": list(self.dependencies.requirements),
            },
            "index": self.index.to_json(),
            "layers": [
                {"role": layer.role, "paths": list(layer.paths), "description": layer.description}
                for layer in self.layers
            ],
            "env": dict(self.env),
            "labels": dict(self.labels),
            # Names only: check-env values are placeholders that nothing prints.
            "check": {"skip": self.check_skip, "env": [name for name, _ in self.check_env]},
            "writable": list(self.writable),
            "healthcheck": self.healthcheck.to_json() if self.healthcheck else None,
            "build_commands": [command.to_json() for command in self.build_commands],
            "build_outputs": list(self.build_outputs),
            "cache": self.cache.to_json(),
            "launch": self.launch.document(),
            "resources": self.resources.model_dump(),
            "release_command": list(self.release) if self.release else None,
            "processes": [process.to_json() for process in self.processes],
        }


def make_plan(
    project: Project,
    overrides: Overrides | None = None,
    environ: Mapping[str, str] | None = None,
) -> BuildPlan:
    """Resolve every default. Raises ConfigError for contradictions.

    `environ`: the host environment, of which only the CA bundle variables are read
    (the caller passes os.environ; None: an empty one). Credential values are never
    read here: the plan names their variables, the build reads them."""
    overrides = overrides or Overrides()
    config = project.config
    base_image = overrides.base_image or config.base_image
    if overrides.python:
        python, python_origin = overrides.python, "--python"
        pin: PythonPin | None = PythonPin(overrides.python, "--python")
    else:
        python, python_origin = resolve_python(project)
        pin = None
        if config.python:
            pin = PythonPin(config.python, "tool.pydeploy.python")
        elif python_origin == ".python-version":
            # The interpreter the project is developed and locked against: a base image
            # with another one is refused at build, as a named pin is.
            pin = PythonPin(python, ".python-version")
    if overrides.base_image:
        references.check(
            references.base_problem(overrides.base_image), overrides.base_image, "--base"
        )
    if base_image:
        base_origin = "--base" if overrides.base_image else "tool.pydeploy.base-image"
        python_origin = f"{python_origin}; the base image's interpreter decides at build"
    else:
        base_image, base_origin = f"python:{python}-slim", "default for Python " + python

    scan = scan_project(project.root)  # one walk of the source serves every detection
    app, app_origin, interface = _resolve_app(project, scan)
    server = _resolve_server(config.server.type, interface)
    _check_factory_server(app, server)
    name, name_origin = image_name(project)
    tags, tags_origin = _resolve_tags(project, overrides.tags, overrides.registry)
    choice = depsource.choose(project)
    _check_lock(project, choice.source)
    build_packages = tuple(
        config.build_packages if config.build_packages is not None else DEFAULT_BUILD_PACKAGES
    )
    excludes = (
        DEFAULT_EXCLUDES + (TEST_EXCLUDES if config.exclude_tests else ()) + tuple(config.exclude)
    )
    _check_includes(project)
    build_commands = plan_build_commands(config, scan.django_static)
    dirs = tuple(sorted({writable.resolve(entry) for entry in config.writable}))
    layers = _layers(
        config.runtime_packages, project.has_build_system, config.keep_setuid, dirs,
        bool(build_commands),
    )  # fmt: skip
    if config.check.skip:
        _check_skippable(project, interface)
    probe = health.choose(config.healthcheck, project.root)
    s = config.server
    return BuildPlan(
        project=project,
        python=python,
        python_origin=python_origin,
        python_pin=pin,
        base_image=base_image,
        base_image_origin=base_origin,
        platforms=_platforms(overrides.platforms or tuple(config.platforms)),
        app=app,
        app_origin=app_origin,
        interface=interface,
        server=server,
        tags=tags,
        tags_origin=tags_origin,
        image_name=name,
        image_name_origin=name_origin,
        network=overrides.network or config.network,
        user_id=config.user_id,
        keep_setuid=config.keep_setuid,
        port=config.port,
        build_packages=build_packages,
        runtime_packages=tuple(config.runtime_packages),
        auto_runtime_packages=config.auto_runtime_packages,
        dependency_source=choice.source,
        install_project=project.has_build_system,
        dependencies=_dependency_plan(project, choice.source),
        index=resolve_index(config.index, project.root, environ or {}),
        excludes=excludes,
        includes=tuple(config.include),
        env=tuple(sorted(config.env.items())),
        labels=tuple(sorted(config.labels.items())),
        layers=layers,
        check_env=tuple(sorted(config.check_env.items())),
        check_skip=config.check.skip,
        writable=dirs,
        healthcheck=probe if config.healthcheck.enabled else None,
        build_commands=build_commands,
        build_outputs=tuple(config.build_outputs),
        release=_release(config.release_command),
        processes=_processes(config),
        server_policy=ServerPolicy(s.type, s.interface, s.worker_memory, s.wsgi_worker),
        launch=_launch_settings(project, app, interface, server, probe),
        resources=config.resources,
        dependency_origin=choice.origin,
        cache=plan_cache(overrides.cache_from, overrides.cache_to, config.cache),
    )


def _platforms(named: tuple[str, ...]) -> tuple[str, ...]:
    """Each platform once, in the order named (`--platform a,b` or repeated)."""
    found = [p.strip() for text in named for p in text.split(",") if p.strip()]
    for text in found:
        references.check(references.platform_problem(text), text, "--platform / platforms")
    return tuple(dict.fromkeys(found))


def _resolve_app(project: Project, scan: Scan) -> tuple[str, str, Interface]:
    config = project.config
    forced = config.server.interface
    detection = scan.best
    if config.app:
        target = apptarget.parse(config.app)  # validated when the config was read
        factory = scan.factory(target.reference)
        if factory is not None and not target.factory:
            _uncalled_factory(project, factory)
        interface: Interface = forced
        if interface == "auto":
            match = next((d for d in scan.detections if d.target == config.app), None)
            if match is not None:
                interface = match.interface
            elif factory is not None:
                interface = interface_of_framework(factory.framework)
        if interface == "auto":
            interface = servers.interface_of(config.server.type)
        return config.app, "tool.pydeploy.app", interface
    if detection is None:
        if scan.candidates:  # factories that need arguments only the user knows
            found = scan.candidates[0]
            raise ConfigError(
                f"Cannot find the app object in {project.root}, only an app factory: "
                f"{found.reason}.",
                hint=f"Set `tool.pydeploy.app` in {project.pyproject} to its call.",
            )
        raise ConfigError(
            f"Cannot find the app object in {project.root}: no Flask, Django, FastAPI, "
            "Starlette, Quart or Litestar app or app factory was found in the source.",
            hint=(
                'Set `tool.pydeploy.app = "module:attribute"` in '
                f"{project.pyproject} (for example `main:app`, or `myapp:create_app()`)."
            ),
        )
    interface = forced if forced != "auto" else detection.interface
    return detection.target, f"detected: {detection.reason}", interface


def never_shipped(pattern: str) -> str | None:
    """Why an `include` pattern names only files no layer ever holds (skiplist.NEVER), or
    None. A glob that also matches other files (`.env*` and `.envrc`) is left alone."""
    if pattern.startswith("!"):
        return None
    import pathspec  # noqa: PLC0415 - only for `include` patterns; keeps `check` light

    probe = pattern.lstrip("/")
    while probe.startswith("**/"):
        probe = probe[3:]
    for never, why in NEVER_WHY.items():
        if pathspec.GitIgnoreSpec.from_lines([never]).match_file(probe):
            return f"it matches `{never}`: {why}"
    return None


def _check_includes(project: Project) -> None:
    for pattern in project.config.include:
        why = never_shipped(pattern)
        if why is not None:
            raise ConfigError(
                f"`tool.pydeploy.include` names {pattern!r}, which pydeploy never puts in an "
                f"image or sends to a builder: {why}. `include` cannot bring it back.",
                hint=(
                    "Remove it from `include`. Give secrets at run time (`docker run "
                    "--env-file`, a Kubernetes Secret), other settings as "
                    "`tool.pydeploy.env`, or ship the file under another name."
                ),
            )


def _uncalled_factory(project: Project, factory: Factory) -> NoReturn:
    """`app = "pkg:create_app"`: a server would call the factory with each request's
    arguments, and every request would fail."""
    module, _, name = factory.reference.partition(":")
    call = f"{name}()" if not factory.required else f"{name}(...)"
    needs = f", with literal values for {', '.join(factory.required)}" if factory.required else ""
    raise ConfigError(
        f"`tool.pydeploy.app` = {factory.reference!r} names an app factory (`def {name}` in "
        f"{factory.source} returns a {display_name(factory.framework)} app), not the app: a "
        "server would call it with each request's arguments and every request would fail.",
        hint=f'Name its call: `app = "{module}:{call}"` in {project.pyproject}{needs}.',
    )


def _check_skippable(project: Project, interface: Interface) -> None:
    """Without the check nothing imports the app: its interface must be known already."""
    if interface == "auto":
        raise ConfigError(
            "`tool.pydeploy.check.skip` = true, but nothing else tells whether the app "
            f"{project.config.app!r} is WSGI or ASGI (the source scan did not recognise it).",
            hint=(
                'Set `tool.pydeploy.server.interface = "wsgi"` (or "asgi") in '
                f"{project.pyproject}, or let the check run."
            ),
        )


def _check_factory_server(app: str, server: str) -> None:
    """uvicorn's `--factory` calls a factory with no arguments."""
    target = apptarget.parse(app)
    if target.arguments and server == "uvicorn":
        raise ConfigError(
            f"`tool.pydeploy.app` = {app!r} calls its factory with arguments, which uvicorn "
            "cannot pass (its `--factory` calls the factory with none).",
            hint=(
                'Use `server.type = "gunicorn-uvicorn"` (or `auto`): gunicorn passes the '
                "arguments; or give the factory defaults and name `"
                f"{target.reference}()`."
            ),
        )


def _resolve_server(configured: str, interface: Interface) -> str:
    if servers.mismatch(configured, interface):
        raise ConfigError(
            f"`tool.pydeploy.server.type` = {configured!r} runs "
            f"{servers.interface_of(configured).upper()} apps, but the app is {interface.upper()}.",
            hint=f"Use {servers.choices(interface)} (or `auto`).",
        )
    # `auto` with an unknown interface is settled by the builder's import check.
    return servers.resolve(configured, interface)


def repository_name(project: Project) -> str:
    """The image repository name (see `image_name`)."""
    return image_name(project)[0]


def image_name(project: Project) -> tuple[str, str]:
    """The image repository name and where it came from: `tool.pydeploy.name` (validated as
    a name when read), else the project's name (metadata, else its directory's) made into
    an image name: accents dropped (`café` -> `cafe`), other characters to `-`."""
    if project.config.name:
        return project.config.name, "tool.pydeploy.name"
    name = references.name_from_project(project.name)
    if not name:
        where = (
            f"The directory name {references.show(project.root.name)} of {project.root}"
            if project.name_origin == "directory name"
            else f"{project.pyproject}: `{project.name_origin}` = {references.show(project.name)}"
        )
        raise ConfigError(
            f"{where} has no letter or digit an image name can hold (image names are "
            "lowercase ASCII).",
            hint='Set `tool.pydeploy.name = "my-app"` to name the image.',
        )
    return name, project.name_origin


def _resolve_tags(
    project: Project, cli_tags: tuple[str, ...], registry: str | None = None
) -> tuple[tuple[str, ...], str]:
    repo = repository_name(project)
    if registry:
        prefix = registry.rstrip("/")
        references.check(references.name_problem(f"{prefix}/{repo}"), prefix, "--registry")
        repo = f"{prefix}/{repo}"
    if cli_tags:
        wanted, origin, shown = cli_tags, "--tag", "--tag"
    elif project.config.tags:
        wanted, shown = tuple(project.config.tags), "tool.pydeploy.tags"
        origin = f"`tool.pydeploy.tags` in {project.pyproject}"
    else:
        wanted, shown = (project.version,), project.version_origin
        origin = f"`{project.version_origin}` in {project.pyproject}"
        if project.version_origin.startswith(("git", "default")):
            origin = f"the version ({project.version_origin}) of {project.root}"
    refs: list[str] = []
    for tag in wanted:
        ref = tag if (":" in tag or "/" in tag) else f"{repo}:{tag}"
        references.check(references.tag_problem(tag), tag, origin)
        # The name part too: a long --registry prefix or project name can overflow it.
        references.check(references.tag_problem(ref), ref, origin)
        refs.append(ref)
    return tuple(dict.fromkeys(refs)), shown


def _check_lock(project: Project, source: str) -> None:
    """Read the lock the build will use now, so a broken one (a stale poetry.lock, a
    package without hashes) fails before any engine work."""
    if source in depsource.HOST_LOCKS:
        depsource.locked_selection(project, source, None).lines(source)
        return
    if source == "uv.lock":
        name, candidates = "uv.lock", [project.root, project.workspace_root]
    elif source == "pylock":
        name, candidates = "pylock.toml", [project.root]
    else:
        return
    path = next((d / name for d in candidates if d and (d / name).is_file()), None)
    if path is not None:
        read_lock(path)


def _dependency_plan(project: Project, source: str) -> DependencyPlan:
    deps = project.config.dependencies
    requirements = deps.requirements or list(project.requirements_files)
    return DependencyPlan(
        extras=tuple(deps.extras),
        groups=tuple(deps.groups),
        requirements=tuple(requirements) if source == "requirements" else (),
    )


def _layers(
    runtime_packages: list[str],
    install_project: bool,
    keep_setuid: bool,
    dirs: tuple[str, ...],
    build_commands: bool,
) -> tuple[LayerPlan, ...]:
    layers = [LayerPlan("base", (), "the base image's layers, unchanged")]
    if not keep_setuid:
        layers.append(
            LayerPlan(SETUID_ROLE, (), "the base's setuid/setgid files again, without those bits")
        )
    if runtime_packages:
        layers.append(
            LayerPlan(
                "system", ("/usr", "/etc", "/var/lib/dpkg"), "apt: " + " ".join(runtime_packages)
            )
        )
    layers += [
        LayerPlan("user", ("/etc/passwd", "/etc/group"), "the numeric non-root user"),
        LayerPlan(
            "dependencies",
            (VENV,),
            "third-party wheels installed into the venv (split by distribution: up to 8 layers)",
        ),
        LayerPlan(
            "app",
            (APP_DIR,) + ((VENV + "/lib/*/site-packages/<project>",) if install_project else ()),
            "the project's files" + (" and its wheel" if install_project else ""),
        ),
        *(
            [LayerPlan(WRITABLE_ROLE, dirs, "`writable` directories, owned by the runtime user")]
            if dirs
            else []
        ),
        *(
            [LayerPlan(BUILD_ROLE, (APP_DIR,), "what the build commands wrote")]
            if build_commands
            else []
        ),
        LayerPlan("launcher", (LAUNCHER_DIR,), "server launcher and its settings"),
    ]
    return tuple(layers)


def _launch_settings(
    project: Project, app: str, interface: Interface, server: str, probe: Healthcheck
) -> LaunchSettings:
    """The launcher's settings as planned: before the app check, only an explicit
    `server.worker-memory` is known of what a worker costs (LaunchSettings.settled adds
    the check's decisions)."""
    s = project.config.server
    return LaunchSettings(
        app=app,
        interface=interface,
        server=server,
        factory=apptarget.parse(app).factory,
        port=project.config.port,
        workers=None if s.workers == "auto" else s.workers,
        **memory_launch_keys(None, s.worker_memory),
        wsgi_worker=s.wsgi_worker,
        threads=s.threads,
        timeout=s.timeout,
        graceful_timeout=s.graceful_timeout,
        keepalive=s.keepalive,
        max_requests=s.max_requests,
        max_requests_jitter=s.max_requests_jitter,
        forwarded_allow_ips=(
            ",".join(s.forwarded_allow_ips) if s.forwarded_allow_ips is not None else None
        ),
        proxy_headers=s.proxy_headers,
        access_log=_access_log_mode(s.access_log),
        extra_args=tuple(s.extra_args),
        app_dir=APP_DIR,
        venv=VENV,
        worker_lib=WORKER_LIB,
        healthcheck_path=probe.path,
        healthcheck_timeout=probe.timeout,
        healthcheck_healthy_below=probe.healthy_below,
    )


def _access_log_mode(value: bool | str) -> str:
    """`server.access-log` as the launcher's mode: true is buffered, false is off."""
    if isinstance(value, bool):
        return "buffered" if value else "off"
    return value


def _release(command: str | list[str] | None) -> tuple[str, ...] | None:
    return None if command is None else tuple(command_argv(command))


def _processes(config: PydeployConfig) -> tuple[Process, ...]:
    """`[tool.pydeploy.processes]` in name order; resources default to the server's."""
    return tuple(
        Process(
            name=name,
            argv=tuple(command_argv(entry.command)),
            replicas=entry.replicas,
            resources=entry.resources or config.resources,
        )
        for name, entry in sorted(config.processes.items())
    )


def server_command_preview(plan: BuildPlan) -> list[str]:
    """The server's argv as the image will run it; the worker count, decided at container
    start, is shown symbolically. Versions are unknown before the build, so the preview
    assumes current servers (gunicorn with a control socket to disable)."""
    settings = plan.launch.document()
    if settings["server"] == "auto":
        settings["server"] = "gunicorn"
    if settings["interface"] == "auto":  # an app the source scan did not recognise
        settings["interface"] = servers.interface_of(settings["server"])
    config = launcher.parse_config(settings)
    workers = config.workers or 1
    if settings["server"] == "uvicorn":
        argv = launcher.uvicorn_argv(config, workers=workers, port=plan.port, uvicorn_version=None)
    else:
        argv = launcher.gunicorn_argv(
            config, workers=workers, port=plan.port, gunicorn_version=(99,)
        )
    if config.workers is None:
        argv[argv.index("--workers") + 1] = "<WEB_CONCURRENCY or 2 x CPUs + 1, as memory allows>"
    return argv
