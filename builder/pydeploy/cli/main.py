"""The command line. The only module that prints or exits: every PydeployError is
caught in `main` and reported as one paragraph with its own exit code."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

import click

from pydeploy import __version__, atomic
from pydeploy.config import init as initcmd
from pydeploy.config import schema as schema_mod
from pydeploy.config.project import find_project_root, load_project
from pydeploy.deploy import MANIFEST_FORMATS
from pydeploy.errors import EXIT_CODES, ConfigError, InterruptError, PublishError, PydeployError
from pydeploy.plan.planner import BuildPlan, Overrides, make_plan, server_command_preview

PROJECT_DIR = click.argument(
    "directory",
    required=False,
    default=".",
    type=click.Path(file_okay=False, path_type=Path),
)


class _Group(click.Group):
    """Turns our exceptions into one-paragraph messages and exit codes."""

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        del standalone_mode  # errors are always handled here, never by click
        argv = sys.argv[1:] if args is None else list(args)
        debug = "--debug" in argv
        try:
            return super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except PydeployError as exc:
            if debug:
                traceback.print_exc()
            log = _save_log("build-failure", exc.output) if exc.output else None
            where = f" The full tool output is in {log}." if log else ""
            click.echo(f"pydeploy: {exc.kind} error: {exc.message}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("pydeploy: interrupted.", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("pydeploy: interrupted.", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the one place a bug becomes a report
            _report_internal_error(exc, debug)


def _report_internal_error(exc: Exception, debug: bool) -> NoReturn:
    """Not a PydeployError, so a bug: one line naming it, the traceback in a log file
    (printed too with --debug), and how to report it; exit 1."""
    trace = traceback.format_exc()
    if debug:
        click.echo(trace.rstrip(), err=True)
    lines = str(exc).strip().splitlines()
    what = type(exc).__name__ + (f": {lines[0][:200]}" if lines else "")
    log = _save_log("internal-error", f"pydeploy {__version__}\n{' '.join(sys.argv)}\n\n{trace}")
    where = f"the traceback is in {log}" if log else "the traceback could not be saved"
    click.echo(
        f"pydeploy: internal error: {what}. This is a bug in pydeploy {__version__}: {where}"
        + ("" if debug else " (--debug prints it)")
        + "; please report it with that traceback and the command you ran.",
        err=True,
    )
    sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pydeploy")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """Build slim, reproducible, non-root images for Python web apps."""
    del debug


cli.help = (
    (cli.help or "")
    + "\n\nExit codes: 0 ok, 1 internal error, "
    + ", ".join(f"{code} {kind}" for kind, code in EXIT_CODES.items())
    + "."
)


@cli.command()
@PROJECT_DIR
def check(directory: Path) -> None:
    """Validate pyproject.toml and its [tool.pydeploy] table."""
    project = load_project(find_project_root(directory))
    plan = make_plan(project)
    click.echo(
        f"{project.pyproject}: [tool.pydeploy] is valid "
        f"(app {plan.app}, {plan.interface}, server {plan.server})."
    )


@cli.command()
@PROJECT_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--base", "base_image", help="Base image (overrides tool.pydeploy.base-image).")
@click.option("--tag", "tags", multiple=True, help="Image tag or reference; repeatable.")
@click.option("--network", help="Network mode for builder containers (e.g. host).")
def plan(
    directory: Path,
    as_json: bool,
    base_image: str | None,
    tags: tuple[str, ...],
    network: str | None,
) -> None:
    """Show what `pydeploy build` would do, without an engine."""
    the_plan = make_plan(
        load_project(find_project_root(directory)),
        Overrides(base_image=base_image, tags=tags, network=network),
    )
    if as_json:
        click.echo(json.dumps(the_plan.to_json(), indent=2))
    else:
        click.echo(_render_plan(the_plan))


_SOURCES = {
    "uv.lock": "uv.lock (frozen)",
    "pylock": "pylock.toml (PEP 751)",
    "requirements": "requirements files",
    "project": "[project.dependencies], resolved in the builder; pins recorded",
}


def _render_plan(plan: BuildPlan) -> str:
    p = plan.project
    rows = [
        ("base image", f"{plan.base_image} ({plan.base_image_origin})"),
        ("python", f"{plan.python} ({plan.python_origin})"),
        ("app", f"{plan.app} [{plan.interface}] ({plan.app_origin})"),
        ("server", plan.server),
        ("command", " ".join(server_command_preview(plan))),
        ("tags", ", ".join(plan.tags)),
        ("user", f"{plan.user_id}:{plan.user_id} (non-root)"),
        ("port", f"{plan.port} (PORT overrides)"),
        ("dependencies", _SOURCES.get(plan.dependency_source, plan.dependency_source)),
        ("build packages", " ".join(plan.build_packages) or "-"),
        ("runtime packages", " ".join(plan.runtime_packages) or "-"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"pydeploy plan for {p.name} {p.version} ({p.root})"]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    lines.append("  layers")
    for i, layer in enumerate(plan.layers, 1):
        paths = ", ".join(layer.paths) if layer.paths else ""
        lines.append(
            f"    {i}. {layer.role.ljust(12)} {layer.description}"
            + (f" [{paths}]" if paths else "")
        )
    return "\n".join(lines)


@cli.command("schema")
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Exit 1 when schema/pydeploy.schema.json differs from the models.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write (default: schema/pydeploy.schema.json of this checkout).",
)
def schema_cmd(check_only: bool, output: Path | None) -> None:
    """Write (or check) the JSON Schema of [tool.pydeploy]."""
    target = output or schema_mod.repo_schema_path(Path.cwd())
    text = schema_mod.render()
    if target is None:
        if check_only:
            raise ConfigError(
                "No schema/pydeploy.schema.json found above the current directory.",
                hint="Run from the pydeploy checkout or pass --output.",
            )
        click.echo(text, nl=False)
        return
    if check_only:
        current = target.read_text(encoding="utf-8") if target.is_file() else ""
        if current != text:
            click.echo(
                f"{target} is out of date with the [tool.pydeploy] models; "
                "run `pydeploy schema` and commit the result.",
                err=True,
            )
            sys.exit(1)
        click.echo(f"{target} is up to date.")
        return
    atomic.write_text(target, text)
    click.echo(f"wrote {target}")


@cli.command()
@PROJECT_DIR
@click.option("--app", "app", help="The app as module:attribute, when detection fails.")
def init(directory: Path, app: str | None) -> None:
    """Detect the app and append a commented [tool.pydeploy] table to pyproject.toml."""
    result = initcmd.init_project(directory, app)
    click.echo(
        f"added [tool.pydeploy] to {result.path}: app = {result.target!r} "
        f"({result.reason}). Next: `pydeploy plan`, then `pydeploy build`."
    )


@cli.command()
@PROJECT_DIR
@click.option("--base", "base_image", help="Base image (overrides tool.pydeploy.base-image).")
@click.option("--network", help="Network mode for builder containers (e.g. host).")
@click.option("--tag", "tags", multiple=True, help="Image tag or full reference; repeatable.")
@click.option(
    "--registry",
    help="Prefix for image names that are not full references (e.g. ghcr.io/my-org).",
)
@click.option(
    "--output",
    "outputs",
    multiple=True,
    help="docker (default), registry, oci:DIR or docker-archive:FILE; repeatable.",
)
@click.option("--push", is_flag=True, help="Push every tag (same as --output registry).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option(
    "--metadata-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the JSON result to this file.",
)
@click.option("--all", "build_all", is_flag=True, help="Build every workspace member with a table.")
@click.option("--only", multiple=True, help="With --all: build only this member; repeatable.")
@click.option("--changed-since", metavar="GIT_REF", help="With --all: only members changed since.")
@click.option("--jobs", type=click.IntRange(1, 64), help="With --all: parallel builds (CPUs).")
@click.option("-v", "--verbose", is_flag=True, help="Stream the builder's full output.")
def build(
    directory: Path,
    base_image: str | None,
    network: str | None,
    tags: tuple[str, ...],
    registry: str | None,
    outputs: tuple[str, ...],
    push: bool,
    as_json: bool,
    metadata_file: Path | None,
    build_all: bool,
    only: tuple[str, ...],
    changed_since: str | None,
    jobs: int | None,
    verbose: bool,
) -> None:
    """Build the image: wheels in a builder container, then deterministic layers."""
    from pydeploy import build as build_mod  # noqa: PLC0415 - keeps `plan`/`check` light
    from pydeploy.publish import outputs as publish  # noqa: PLC0415

    specs = [publish.parse_output(spec) for spec in outputs] or [publish.Output("docker")]
    if push and not any(o.kind == "registry" for o in specs):
        specs.append(publish.Output("registry"))
    if (only or changed_since or jobs) and not build_all:
        raise ConfigError("--only, --changed-since and --jobs go with --all.",
                          hint="Add --all to build workspace members.")  # fmt: skip
    overrides = Overrides(base_image=base_image, tags=tags, network=network, registry=registry)
    options = build_mod.BuildOptions(
        outputs=tuple(specs),
        verbose=verbose,
        output=(lambda line: click.echo(f"    | {line}", err=True)) if verbose else None,
    )
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if build_all:
            code = _build_all(directory, overrides, options, only, changed_since, jobs,
                              as_json, metadata_file)  # fmt: skip
            if code:
                sys.exit(code)
            return
        _build_one(directory, overrides, options, as_json, metadata_file)
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Lines:
    """Progress lines on stderr: timestamps when not on a terminal or under CI (logs),
    bold step names on a terminal unless NO_COLOR is set. Never spinners."""

    def __init__(self) -> None:
        # Looked up per command, not at import: CliRunner swaps sys.stderr per invocation.
        self.stream = sys.stderr
        tty = self.stream.isatty()
        self.plain = not tty or bool(os.environ.get("CI"))
        self.color = tty and not os.environ.get("NO_COLOR") and not self.plain
        self.lock = threading.Lock()

    def __call__(self, step: str, elapsed: float, detail: str | None, who: str = "") -> None:
        name = click.style(step, bold=True) if self.color else step
        stamp = time.strftime("%H:%M:%S ") if self.plain else ""
        prefix = f"[{who}] " if who else ""
        if step == "warning":  # a build's warnings read as warnings, not as a step
            line = f"{stamp}{prefix}pydeploy: warning: {detail}"
        else:
            line = f"{stamp}{prefix}[{elapsed:7.1f}s] {name}" + (f": {detail}" if detail else "")
        with self.lock:
            click.echo(line, file=self.stream)

    def say(self, text: str) -> None:
        with self.lock:
            click.echo(text, file=self.stream)


def _build_one(
    directory: Path,
    overrides: Overrides,
    options: Any,
    as_json: bool,
    metadata_file: Path | None,
) -> None:
    from pydeploy.engine.client import Engine  # noqa: PLC0415

    the_plan = make_plan(load_project(find_project_root(directory)), overrides)
    lines = _Lines()
    engine = Engine.connect()
    try:
        result = _run_build(the_plan, engine, options, lines)
    finally:
        engine.cleanup()
    document = result.to_json()
    if metadata_file:
        _write_json(metadata_file, document)
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        lines.say(f"built {result.image.image_id} ({', '.join(result.tags)})")
        for layer in result.image.own_layers:
            lines.say(f"  {layer.role:<13} {layer.digest[:19]}  {layer.size / 1e6:8.2f} MB")


def _build_all(
    directory: Path,
    overrides: Overrides,
    options: Any,
    only: tuple[str, ...],
    changed_since: str | None,
    jobs: int | None,
    as_json: bool,
    metadata_file: Path | None,
) -> int:
    from pydeploy import multibuild  # noqa: PLC0415

    members = multibuild.select_members(directory.resolve(), only, changed_since)
    lines = _Lines()
    if not members:
        lines.say(
            "pydeploy: no workspace member to build"
            + (f" (nothing changed since {changed_since})" if changed_since else "")
        )
        outcomes: list[multibuild.ServiceOutcome] = []
    else:
        lines.say(f"pydeploy: building {len(members)} services: "
                  + ", ".join(m.name for m in members))  # fmt: skip
        outcomes = multibuild.build_members(
            members, overrides, options,
            lambda who, step, elapsed, detail: lines(step, elapsed, detail, who), jobs,
        )  # fmt: skip
    document = {
        "ok": all(o.ok for o in outcomes),
        "services": [o.to_json() for o in outcomes],
    }
    if metadata_file:
        _write_json(metadata_file, document)
    if as_json:
        click.echo(json.dumps(document, indent=2))
    lines.say("summary:")
    for o in outcomes:
        if o.ok and o.result is not None:
            lines.say(f"  ok      {o.name:<20} {o.seconds:6.1f}s  {', '.join(o.result.tags)}")
        elif o.error is not None:
            lines.say(f"  FAILED  {o.name:<20} {o.seconds:6.1f}s  "
                      f"{o.error.kind} error: {o.error.message}")  # fmt: skip
    return multibuild.exit_code(outcomes)


@cli.command("inspect")
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help="Print the layers as JSON.")
def inspect_cmd(image: str, as_json: bool) -> None:
    """Show an image's layers, their roles and sizes."""
    from pydeploy.cache.imageinfo import inspect_image  # noqa: PLC0415
    from pydeploy.engine.client import Engine  # noqa: PLC0415

    info = inspect_image(Engine.connect(), image)
    if as_json:
        click.echo(json.dumps(info.to_json(), indent=2))
        return
    click.echo(f"{info.name} {info.image_id[:19]}  user {info.user}")
    for layer in info.layers:
        click.echo(f"  {layer.role:<13} {layer.diff_id[:19]}  {layer.size / 1e6:9.2f} MB")
    click.echo(f"  added on top of the base: {info.own_size / 1e6:.2f} MB")


def _save_log(kind: str, text: str) -> Path | None:
    """Keep a failed build's full (masked) tool output, or an internal error's traceback,
    where the user can read it: `logs/` of pydeploy's cache, which `prune` ages out."""
    from pydeploy.build import cache_root  # noqa: PLC0415

    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = cache_root() / "logs" / f"{kind}-{stamp}-{os.getpid()}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Owner-only: a traceback can show paths and values of the user's project.
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            fh.write(text)
    except OSError:
        return None
    return path


def _raise_interrupt(_signum: int, _frame: object) -> None:
    # SIGTERM (CI cancelling a job) takes the same cleanup path as Ctrl-C.
    raise KeyboardInterrupt


def _write_json(path: Path, document: dict[str, Any]) -> None:
    try:
        atomic.write_text(path, json.dumps(document, indent=2) + "\n")
    except OSError as exc:
        raise PublishError(f"Cannot write {path}: {exc.strerror}.") from None


# --- deploy: manifest, dockerfile, run (issue 7) ---------------------------------------


def _deploy_plan(
    directory: Path, base_image: str | None, network: str | None, tags: tuple[str, ...]
) -> BuildPlan:
    return make_plan(
        load_project(find_project_root(directory)),
        Overrides(base_image=base_image, network=network, tags=tags),
    )


def _build_for_deploy(plan: BuildPlan, engine: Any, lines: _Lines, push: bool = False) -> Any:
    """`pydeploy build` into the engine (and the registry with `push`); the BuildResult."""
    from pydeploy import build as build_mod  # noqa: PLC0415
    from pydeploy.publish import outputs as publish  # noqa: PLC0415

    outputs = (publish.Output("docker"),) + ((publish.Output("registry"),) if push else ())
    return _run_build(plan, engine, build_mod.BuildOptions(outputs=outputs), lines)


def _run_build(plan: BuildPlan, engine: Any, options: Any, lines: _Lines) -> Any:
    """One project's build with progress lines; Ctrl-C/SIGTERM become InterruptError (the
    caller's `engine.cleanup()` removes what was started)."""
    from pydeploy import build as build_mod  # noqa: PLC0415

    lines.say(
        f"pydeploy: building {', '.join(plan.tags)} from {plan.project.root} "
        f"(build {engine.build_id})"
    )
    try:
        return build_mod.build(plan, engine, options, lines)
    except KeyboardInterrupt:
        raise InterruptError("Build interrupted; its containers were removed.") from None


@cli.command("manifest")
@PROJECT_DIR
@click.option(
    "--format",
    "fmt",
    type=click.Choice(MANIFEST_FORMATS),
    default=MANIFEST_FORMATS[0],
    show_default=True,
    help="Kubernetes Deployment + Service, or a compose file.",
)
@click.option(
    "--image",
    help="Image reference pinned by digest (name@sha256:...). Default: build, then use "
    "<first tag>@<manifest digest>.",
)
@click.option("--push", is_flag=True, help="Also push the build, so the digest can be pulled.")
@click.option("--replicas", type=click.IntRange(0, 1000), default=1, show_default=True)
@click.option("--base", "base_image", help="Base image (overrides tool.pydeploy.base-image).")
@click.option("--network", help="Network mode for builder containers (e.g. host).")
@click.option("--tag", "tags", multiple=True, help="Image tag or full reference; repeatable.")
def manifest_cmd(
    directory: Path,
    fmt: str,
    image: str | None,
    push: bool,
    replicas: int,
    base_image: str | None,
    network: str | None,
    tags: tuple[str, ...],
) -> None:
    """Print deployment manifests (YAML) for the image, pinned by digest."""
    from pydeploy.deploy import manifests  # noqa: PLC0415 - keep start-up light

    the_plan = _deploy_plan(directory, base_image, network, tags)
    lines = _Lines()
    worker_memory = None
    if image is None:
        from pydeploy.engine.client import Engine  # noqa: PLC0415

        engine = Engine.connect()
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            result = _build_for_deploy(the_plan, engine, lines, push)
        finally:
            signal.signal(signal.SIGTERM, previous)
            engine.cleanup()
        tag = result.tags[0]
        image = manifests.digest_ref(tag, result.pushed.get(tag, result.image.manifest_digest))
        worker_memory = result.memory
        if not push:
            lines.say(
                f"pydeploy: {image} is in the local engine only; push it (`pydeploy build "
                "--push`, or --push here) before a cluster can pull it by digest."
            )
    spec = manifests.spec_from_plan(the_plan, image, replicas=replicas, worker_memory=worker_memory)
    for warning in manifests.warnings(spec):
        lines.say(f"pydeploy: warning: {warning}")
    click.echo(manifests.render(manifests.documents(spec, fmt)), nl=False)


@cli.command("dockerfile")
@PROJECT_DIR
@click.option(
    "--write",
    is_flag=True,
    help="Write Dockerfile, .dockerignore and .pydeploy/ (the launcher files it copies) "
    "into the project instead of printing the Dockerfile.",
)
@click.option("--force", is_flag=True, help="With --write: replace a hand-written Dockerfile.")
@click.option("--base", "base_image", help="Base image (overrides tool.pydeploy.base-image).")
@click.option("--tag", "tags", multiple=True, help="Image tag shown in the build hint.")
def dockerfile_cmd(
    directory: Path, write: bool, force: bool, base_image: str | None, tags: tuple[str, ...]
) -> None:
    """Print an equivalent multi-stage Dockerfile (an escape hatch; needs BuildKit)."""
    from pydeploy.build import created_epoch  # noqa: PLC0415
    from pydeploy.config.project import git_revision  # noqa: PLC0415
    from pydeploy.deploy import dockerfile  # noqa: PLC0415
    from pydeploy.oci.config import rfc3339  # noqa: PLC0415

    the_plan = _deploy_plan(directory, base_image, None, tags)
    ejected = dockerfile.render(
        the_plan,
        created=rfc3339(created_epoch(the_plan)),
        revision=git_revision(the_plan.project.root),
    )
    if not write:
        click.echo(ejected.dockerfile, nl=False)
        note = dockerfile.printed_note(the_plan.project.root)
        if note:
            click.echo(f"pydeploy: note: {note}", err=True)
        return
    for path in dockerfile.write(ejected, the_plan.project.root, force=force):
        click.echo(f"wrote {path}", err=True)


@cli.command("run")
@PROJECT_DIR
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="Port on this machine (default: the configured port).",
)
@click.option(
    "--cpus", type=float, help="CPU limit in cores (default: tool.pydeploy.resources.cpu)."
)
@click.option(
    "--memory", type=int, help="Memory limit in MiB (default: tool.pydeploy.resources.memory)."
)
@click.option(
    "-e",
    "--env",
    "env",
    multiple=True,
    metavar="NAME[=VALUE]",
    help="Environment variable; repeatable.",
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="NAME=value lines, as docker run reads them.",
)
@click.option("--no-build", is_flag=True, help="Run the last build of the first tag.")
@click.option("--base", "base_image", help="Base image (overrides tool.pydeploy.base-image).")
@click.option("--network", help="Network mode for builder containers (e.g. host).")
@click.option("--tag", "tags", multiple=True, help="Image tag or full reference; repeatable.")
def run_cmd(
    directory: Path,
    port: int | None,
    cpus: float | None,
    memory: int | None,
    env: tuple[str, ...],
    env_file: Path | None,
    no_build: bool,
    base_image: str | None,
    network: str | None,
    tags: tuple[str, ...],
) -> None:
    """Build (unless --no-build) and run the image here; Ctrl-C stops it gracefully."""
    from pydeploy.deploy import run as runner  # noqa: PLC0415
    from pydeploy.engine.client import Engine  # noqa: PLC0415

    the_plan = _deploy_plan(directory, base_image, network, tags)
    variables = runner.parse_env_file(env_file, os.environ) if env_file else {}
    variables |= runner.parse_env_args(env, os.environ)
    lines = _Lines()
    out_lock = threading.Lock()

    def output(line: str, is_stderr: bool) -> None:
        with out_lock:
            click.echo(line, err=is_stderr)

    engine = Engine.connect()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        bridge = engine.has_bridge()
        spec = runner.make_spec(
            the_plan, "", bridge=bridge, port=port, cpus=cpus, memory=memory, env=variables
        )
        runner.check_port_free(spec.port, host_network=not bridge)
        if no_build:
            image = runner.find_image(engine, the_plan)
        else:
            image = _build_for_deploy(the_plan, engine, lines).image.image_id
        spec = dataclasses.replace(spec, image=image)
        try:
            code = runner.Runner(engine, spec).run(
                output, lambda text: lines.say(f"pydeploy: {text}")
            )
        except KeyboardInterrupt:
            raise InterruptError("Interrupted; the container was removed.") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        engine.cleanup()
    lines.say(f"pydeploy: {spec.name} exited with {code}")
    sys.exit(code)


@cli.command("prune")
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Remove everything pydeploy cached: its volumes, builder images and host cache.",
)
@click.option(
    "--older-than",
    "days",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="DAYS",
    help="Age after which unused venv volumes, logs and cache index entries go.",
)
@click.option("--dry-run", is_flag=True, help="List what would be removed, with sizes.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def prune_cmd(everything: bool, days: float, dry_run: bool, as_json: bool) -> None:
    """Remove pydeploy's unused or broken caches (never anything a container uses)."""
    from pydeploy.build import cache_root  # noqa: PLC0415
    from pydeploy.cache import prune as cachegc  # noqa: PLC0415
    from pydeploy.engine.client import Engine  # noqa: PLC0415
    from pydeploy.errors import EngineError  # noqa: PLC0415

    root = cache_root()
    engine: Engine | None
    try:
        engine = Engine.connect()
    except EngineError as exc:
        engine = None
        click.echo(f"pydeploy: {exc.message} Only the host cache ({root}) is pruned.", err=True)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        # Held to the end: no build starts using the host cache while prune removes from it.
        with cachegc.exclusive(root) as alone:
            inventory = cachegc.take_inventory(
                engine, root, check_markers=not everything, host_busy=not alone
            )
            policy = cachegc.Policy(everything=everything, older_than_days=days, now=time.time())
            the_plan = cachegc.plan_prune(inventory, policy)
            if dry_run:
                items, kept = list(the_plan.remove), list(the_plan.kept)
            else:
                outcome = cachegc.apply(engine, root, the_plan)
                items, kept = outcome.removed, [*the_plan.kept, *outcome.kept]
    finally:
        signal.signal(signal.SIGTERM, previous)
        if engine is not None:
            engine.cleanup()
    total = sum(item.size or 0 for item in items)
    if as_json:
        document = {
            "dry_run": dry_run, "all": everything, "older_than_days": days,
            "cache_dir": str(root), "engine": engine is not None,
            "items": [i.to_json() for i in items],
            "kept": [i.to_json() for i in kept], "bytes": total,
        }  # fmt: skip
        click.echo(json.dumps(document, indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    for line in cachegc.describe(items):
        click.echo(f"{verb} {line}")
    for line in cachegc.describe(kept):
        click.echo(f"kept {line}")
    reclaim = "would reclaim" if dry_run else "reclaimed"
    click.echo(f"pydeploy: {reclaim} {cachegc.format_size(total)} ({len(items)} items)")


def main() -> None:
    cli(prog_name="pydeploy")
