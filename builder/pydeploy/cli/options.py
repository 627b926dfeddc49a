"""Arguments and options that several commands share, each with its one help text."""

from __future__ import annotations

from pathlib import Path

import click

PROJECT_DIR = click.argument(
    "directory",
    required=False,
    default=".",
    type=click.Path(file_okay=False, path_type=Path),
)
BASE_IMAGE = click.option(
    "--base", "base_image", help="Base image (overrides tool.pydeploy.base-image)."
)
NETWORK = click.option("--network", help="Network mode for builder containers (e.g. host).")
TAGS = click.option("--tag", "tags", multiple=True, help="Image tag or full reference; repeatable.")
