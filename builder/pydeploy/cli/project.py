"""`pydeploy init`, `check` and `schema`: the project's [tool.pydeploy] table, no engine."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pydeploy.cli import render
from pydeploy.cli.options import PROJECT_DIR


@click.command()
@PROJECT_DIR
@click.option("--app", "app", help="The app as module:attribute, when detection fails.")
@click.option(
    "--all",
    "every",
    is_flag=True,
    help="At a uv workspace root: add a table to every member where an app is found.",
)
def init(directory: Path, app: str | None, every: bool) -> None:
    """Detect the app and append a commented [tool.pydeploy] table to pyproject.toml
    (creating the file when there is none). At a uv workspace root without [project]:
    list the members that look deployable."""
    from pydeploy.config import init as init_mod  # noqa: PLC0415 - keep start-up light
    from pydeploy.errors import ConfigError  # noqa: PLC0415

    if init_mod.is_virtual_root(directory.resolve()):
        if app:
            raise ConfigError(
                f"{directory.resolve()} is a uv workspace root without [project]; --app "
                "names the app of one project.",
                hint="Run `pydeploy init MEMBER --app module:attribute` in the member.",
            )
        render.workspace_init(init_mod.init_workspace(directory, write=every))
        return
    if every:
        raise ConfigError(
            f"`init --all` sets up the members of a uv workspace, but {directory.resolve()} "
            "is not a workspace root without [project].",
            hint="Run `pydeploy init` without --all for one project.",
        )
    render.init_done(init_mod.init_project(directory, app))


@click.command()
@PROJECT_DIR
def check(directory: Path) -> None:
    """Validate pyproject.toml and its [tool.pydeploy] table (at a uv workspace root:
    every deployable member's)."""
    from pydeploy.cli import unchanged  # noqa: PLC0415 - stdlib only: before the models

    record = unchanged.record_file({"command": "check", "directory": str(directory)})
    known = unchanged.checked(record)
    if known is not None:
        render.checked(known)
        return
    # Imported before the recording: the reads it keeps are the project's, not pydeploy's.
    from pydeploy.config import workspace  # noqa: PLC0415
    from pydeploy.config.models import PYPROJECT, read_pyproject  # noqa: PLC0415
    from pydeploy.config.project import find_project_root, load_project  # noqa: PLC0415
    from pydeploy.plan.planner import make_plan  # noqa: PLC0415

    with unchanged.recording(record) as recorder:
        root = find_project_root(directory)
        problem = workspace.root_problem(root, read_pyproject(root))
        if problem is None:
            plans = [make_plan(load_project(root))]
            text = render.check_ok_text(plans[0])
        else:
            ready = workspace.deployable(root)
            if not ready or "pydeploy" in read_pyproject(root).get("tool", {}):
                raise problem
            plans = [make_plan(load_project(m.path)) for m in ready]
            text = render.workspace_check_text(root, plans)
    # Probed above: where the search for the project started (its parents are where a
    # new pyproject.toml would move the root) and every project and workspace root.
    roots = [directory.resolve() / PYPROJECT]
    roots += (r for p in plans for r in (p.project.root, p.project.workspace_root) if r)
    recorder.save_check(roots, text)
    render.checked(text)


@click.command("schema")
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
    from pydeploy import atomic  # noqa: PLC0415
    from pydeploy.config import schema  # noqa: PLC0415
    from pydeploy.errors import ConfigError  # noqa: PLC0415

    target = output or schema.repo_schema_path(Path.cwd())
    text = schema.render()
    if target is None:
        if check_only:
            raise ConfigError(
                "No schema/pydeploy.schema.json found above the current directory.",
                hint="Run from the pydeploy checkout or pass --output.",
            )
        render.document(text)
        return
    if check_only:
        current = target.read_text(encoding="utf-8") if target.is_file() else ""
        if current != text:
            render.schema_out_of_date(target)
            sys.exit(1)
        render.schema_up_to_date(target)
        return
    atomic.write_text(target, text)
    render.wrote(target)
