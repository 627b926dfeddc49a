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
PLATFORMS = click.option(
    "--platform",
    "platforms",
    multiple=True,
    help="os/arch to build (e.g. linux/amd64,linux/arm64); repeatable or comma-separated. "
    "Several give an OCI image index.",
)
NO_ENGINE = click.option(
    "--no-engine",
    is_flag=True,
    help="Build without a Docker/Podman engine: base from its registry (or oci:DIR / "
    "docker-archive:FILE), wheels installed on this host.",
)
