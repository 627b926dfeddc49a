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
    from pydeploy.plan.planner import BuildPlan


def _deploy_plan(
    directory: Path, base_image: str | None, network: str | None, tags: tuple[str, ...]
) -> BuildPlan:
    from pydeploy.plan.planner import Overrides  # noqa: PLC0415

    return project_plan(directory, Overrides(base_image=base_image, network=network, tags=tags))


def _build_for_deploy(
    plan: BuildPlan, session: Session, lines: render.Lines, push: bool = False
) -> BuildResult:
    """`pydeploy build` into the engine (and the registry with `push`)."""
    from pydeploy import build as build_mod  # noqa: PLC0415
    from pydeploy.publish import outputs as publish  # noqa: PLC0415

    outputs = (publish.Output("docker"),) + ((publish.Output("registry"),) if push else ())
    return run_build(plan, session, build_mod.BuildOptions(outputs=outputs), lines)


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
            result = _build_for_deploy(the_plan, session, lines, push)
        tag = result.tags[0]
        image = manifests.digest_ref(tag, result.pushed.get(tag, result.image.manifest_digest))
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


@click.command("run")
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
@BASE_IMAGE
@NETWORK
@TAGS
def run_cmd(  # noqa: PLR0913, PLR0917 - click passes every option as a parameter
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

    the_plan = _deploy_plan(directory, base_image, network, tags)
    variables = runner.parse_env_file(env_file, os.environ) if env_file else {}
    variables |= runner.parse_env_args(env, os.environ)
    lines = render.Lines()
    with Session() as session:
        engine = session.connect()
        bridge = engine.has_bridge()
        spec = runner.make_spec(
            the_plan, "", bridge=bridge, port=port, cpus=cpus, memory=memory, env=variables
        )
        runner.check_port_free(spec.port, host_network=not bridge)
        if no_build:
            image = runner.find_image(engine, the_plan)
        else:
            image = _build_for_deploy(the_plan, session, lines).image.image_id
        spec = dataclasses.replace(spec, image=image)
        # The Runner stops the container gracefully on the first Ctrl-C/SIGTERM and returns
        # its exit code; only one that lands outside its handling ends up here.
        with session.cancelling("Interrupted; the container was removed."):
            code = runner.Runner(engine, spec).run(
                render.ContainerOutput(), lambda text: render.run_event(lines, text)
            )
    render.run_exited(lines, spec.name, code)
    sys.exit(code)
