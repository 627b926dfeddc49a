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
def init(directory: Path, app: str | None) -> None:
    """Detect the app and append a commented [tool.pydeploy] table to pyproject.toml."""
    from pydeploy.config.init import init_project  # noqa: PLC0415 - keep start-up light

    render.init_done(init_project(directory, app))


@click.command()
@PROJECT_DIR
def check(directory: Path) -> None:
    """Validate pyproject.toml and its [tool.pydeploy] table."""
    from pydeploy.config.project import find_project_root, load_project  # noqa: PLC0415
    from pydeploy.plan.planner import make_plan  # noqa: PLC0415

    render.check_ok(make_plan(load_project(find_project_root(directory))))


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
