"""`pydeploy inspect` and `prune`: images pydeploy built, and the caches it keeps."""

from __future__ import annotations

import time

import click

from pydeploy.cli import render
from pydeploy.cli.session import Session


@click.command("inspect")
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help="Print the layers as JSON.")
@click.option(
    "--sbom",
    "show_sbom",
    is_flag=True,
    help="Print the SBOM attached to the image in its registry.",
)
def inspect_cmd(image: str, as_json: bool, show_sbom: bool) -> None:
    """Show an image's layers, their roles and sizes; for an image in a registry
    (`registry:REF`, or a REF the engine does not have) its manifest and attached SBOM
    and provenance."""
    from pydeploy.attest import remote  # noqa: PLC0415
    from pydeploy.cache.imageinfo import inspect_image  # noqa: PLC0415
    from pydeploy.errors import ConfigError, EngineError  # noqa: PLC0415

    with Session() as session:
        if image.startswith(remote.REGISTRY_PREFIX) or show_sbom:
            ref = remote.registry_reference(image, engine_has_it=False)
            if ref is None:
                raise ConfigError(
                    f"--sbom reads the image's registry, and `{image}` names none.",
                    hint="Give the full reference, e.g. `registry:localhost:5000/app:1`.",
                )
        else:
            try:
                info = inspect_image(session.connect(), image)
            except (ConfigError, EngineError):  # no such image, or no engine answers
                ref = remote.registry_reference(image, engine_has_it=False)
                if ref is None:
                    raise
            else:
                render.inspected(info, as_json)
                return
        found = remote.inspect_remote(ref)
    render.inspected_remote(found, as_json=as_json, show_sbom=show_sbom)


@click.command("prune")
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
    from pydeploy.cache import prune as cachegc  # noqa: PLC0415
    from pydeploy.cachedir import cache_root  # noqa: PLC0415
    from pydeploy.engine.client import Engine  # noqa: PLC0415
    from pydeploy.errors import EngineError  # noqa: PLC0415

    root = cache_root()
    with Session() as session:
        engine: Engine | None
        try:
            engine = session.connect()
        except EngineError as exc:
            engine = None
            render.host_cache_only(exc.message, root)
        # Held to the end: no build starts using the host cache while prune removes from it.
        with cachegc.exclusive(root) as alone:
            inventory = cachegc.take_inventory(
                engine, root, check_markers=not everything, host_busy=not alone
            )
            policy = cachegc.Policy(everything=everything, older_than_days=days, now=time.time())
            the_plan = cachegc.plan_prune(inventory, policy)
            if dry_run:
                removed, kept = the_plan.remove, the_plan.kept
            else:
                outcome = cachegc.apply(engine, root, the_plan)
                removed, kept = tuple(outcome.removed), (*the_plan.kept, *outcome.kept)
    result = cachegc.Pruned(removed, kept, policy, root, engine is not None, dry_run)
    render.pruned(result, as_json)
