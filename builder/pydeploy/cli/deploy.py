"""`pydeploy manifest`, `dockerfile` and `run`: the deploy side of a built image."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pydeploy.cli import render
from pydeploy.cli.build import project_plan, run_build
from pydeploy.cli.options import BASE_IMAGE, NETWORK, PROJECT_DIR, TAGS
from pydeploy.cli.session import Session
from pydeploy.deploy import MANIFEST_FORMATS

if TYPE_CHECKING:
    from pydeploy.build import BuildResult
    from pydeploy.deploy.run import RunSpec
    from pydeploy.engine.client import Engine
    from pydeploy.plan.planner import BuildPlan


def _deploy_plan(
    directory: Path, base_image: str | None, network: str | None, tags: tuple[str, ...]
) -> BuildPlan:
    from pydeploy.plan.planner import Overrides  # noqa: PLC0415

    return project_plan(directory, Overrides(base_image=base_image, network=network, tags=tags))


def _build_for_deploy(
    plan: BuildPlan,
    session: Session,
    lines: render.Lines,
    push: bool = False,
    *,
    digest: bool = False,
) -> BuildResult:
    """`pydeploy build` into the engine (and the registry with `push`); `digest`: with
    the manifest digest, which reading the base's blobs costs."""
    from pydeploy import build as build_mod  # noqa: PLC0415
    from pydeploy.publish import outputs as publish  # noqa: PLC0415

    outputs = (publish.Output("docker"),) + ((publish.Output("registry"),) if push else ())
    options = build_mod.BuildOptions(outputs=outputs, base_blobs=digest or None)
    return run_build(plan, session, options, lines)


@click.command("manifest")
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
@BASE_IMAGE
@NETWORK
@TAGS
def manifest_cmd(  # noqa: PLR0913, PLR0917 - click passes every option as a parameter
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
    lines = render.Lines()
    worker_memory = None
    if image is None:
        with Session() as session:
            result = _build_for_deploy(the_plan, session, lines, push, digest=True)
        tag = result.tags[0]
        image = manifests.digest_ref(
            tag, result.pushed.get(tag) or result.image.registry_manifest_digest()
        )
        worker_memory = result.memory
        if not push:
            render.local_only(lines, image)
    spec = manifests.spec_from_plan(the_plan, image, replicas=replicas, worker_memory=worker_memory)
    for warning in manifests.warnings(spec):
        render.warning(lines, warning)
    render.document(manifests.render(manifests.documents(spec, fmt)))


@click.command("dockerfile")
@PROJECT_DIR
@click.option(
    "--write",
    is_flag=True,
    help="Write Dockerfile, .dockerignore and .pydeploy/ (the launcher files it copies) "
    "into the project instead of printing the Dockerfile.",
)
@click.option("--force", is_flag=True, help="With --write: replace a hand-written Dockerfile.")
@BASE_IMAGE
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
        render.document(ejected.dockerfile)
        note = dockerfile.printed_note(the_plan.project.root)
        if note:
            render.note(f"pydeploy: note: {note}")
        return
    for path in dockerfile.write(ejected, the_plan.project.root, force=force):
        render.wrote(path, err=True)


class _CommandAfterDashes(click.Command):
    """`pydeploy run [DIR] [OPTIONS] -- CMD...`: everything after `--` is the command,
    kept whole (click would otherwise give its first word to DIR)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            at = args.index("--")
            args, ctx.meta["pydeploy.command"] = args[:at], args[at + 1 :]
        return super().parse_args(ctx, args)


@click.command("run", cls=_CommandAfterDashes)
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
@click.option(
    "-v",
    "--volume",
    "volumes",
    multiple=True,
    metavar="NAME:/PATH[:ro]",
    help="Named volume on every container of the run (created for the runtime user when "
    "missing); repeatable.",
)
@click.option(
    "--process",
    metavar="NAME",
    help="Run a process of [tool.pydeploy.processes] instead of the server.",
)
@click.option("--no-release", is_flag=True, help="Do not run tool.pydeploy.release-command first.")
@click.option("--no-build", is_flag=True, help="Run the last build of the first tag.")
@BASE_IMAGE
@NETWORK
@TAGS
@click.pass_context
def run_cmd(  # noqa: PLR0913, PLR0917 - click passes every option as a parameter
    ctx: click.Context,
    directory: Path,
    port: int | None,
    cpus: float | None,
    memory: int | None,
    env: tuple[str, ...],
    env_file: Path | None,
    volumes: tuple[str, ...],
    process: str | None,
    no_release: bool,
    no_build: bool,
    base_image: str | None,
    network: str | None,
    tags: tuple[str, ...],
) -> None:
    """Build (unless --no-build) and run the image here; Ctrl-C stops it gracefully.

    The release command runs first (for the server and --process); `-- CMD...` runs a
    one-off command instead, as `docker run IMAGE CMD...` would, with the same
    environment, volumes and limits."""
    from pydeploy.deploy import run as runner  # noqa: PLC0415

    command: list[str] = ctx.meta.get("pydeploy.command", [])
    the_plan = _deploy_plan(directory, base_image, network, tags)
    chosen = _chosen_command(the_plan, process, command)
    variables = runner.parse_env_file(env_file, os.environ) if env_file else {}
    variables |= runner.parse_env_args(env, os.environ)
    mounts = runner.parse_volumes(volumes)
    lines = render.Lines()
    with Session() as session:
        engine = session.connect()
        bridge = engine.has_bridge()
        spec = runner.make_spec(
            the_plan, "", bridge=bridge, port=port, cpus=cpus, memory=memory, env=variables
        )
        spec = dataclasses.replace(spec, volumes=mounts)
        if chosen is None:
            runner.check_port_free(spec.port, host_network=not bridge)
        if no_build:
            image = runner.find_image(engine, the_plan)
        else:
            image = _build_for_deploy(the_plan, session, lines).image.image_id
        spec = dataclasses.replace(spec, image=image)
        runner.prepare_volumes(engine, image, mounts, the_plan.user_id)
        # The Runner stops the container gracefully on the first Ctrl-C/SIGTERM and returns
        # its exit code; only one that lands outside its handling ends up here.
        with session.cancelling("Interrupted; the container was removed."):
            if the_plan.release and not command and not no_release:
                _release(engine, spec.running(the_plan.release, "release"), lines)
            if chosen is not None:
                role = process or "command"
                spec = spec.running(chosen, role)
            code = runner.Runner(engine, spec).run(
                render.ContainerOutput(), lambda text: render.run_event(lines, text)
            )
    render.run_exited(lines, spec.name, code)
    sys.exit(code)


def _chosen_command(plan: BuildPlan, process: str | None, command: list[str]) -> list[str] | None:
    """What runs instead of the server: `-- CMD...`, or a process's command."""
    from pydeploy.errors import ConfigError  # noqa: PLC0415

    if process is None:
        return command or None
    if command:
        raise ConfigError(
            f"--process {process} and a command after `--` both say what to run.",
            hint="Give one of them.",
        )
    found = next((p for p in plan.processes if p.name == process), None)
    if found is None:
        known = ", ".join(p.name for p in plan.processes) or "none are configured"
        raise ConfigError(
            f"--process {process}: tool.pydeploy.processes has no `{process}` ({known}).",
            hint=f'Add `{process} = "command ..."` to [tool.pydeploy.processes] in '
            f"{plan.project.pyproject}, or name one of those.",
        )
    return list(found.argv)


def _release(engine: Engine, spec: RunSpec, lines: render.Lines) -> None:
    """The release command, to its end; a failure stops the run with its exit code."""
    from pydeploy.deploy import run as runner  # noqa: PLC0415

    result = runner.run_command(
        engine, spec, render.ContainerOutput(), lambda text: render.run_event(lines, text)
    )
    if result.exit_code != 0:
        render.release_failed(lines, spec.command, result.exit_code, result.tail)
        sys.exit(result.exit_code)
