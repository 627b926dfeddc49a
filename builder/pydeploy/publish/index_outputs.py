"""A multi-platform build's outputs: its OCI image index pushed to a registry or written
as an OCI layout (an engine and a docker-archive hold one platform per name: refused
before the build, pydeploy.hostbuild)."""

from __future__ import annotations

from pathlib import Path

from pydeploy.oci.index import ImageIndex
from pydeploy.oci.layout import write_oci_index_layout
from pydeploy.plan.references import parse_reference
from pydeploy.publish import registry
from pydeploy.publish.outputs import Output
from pydeploy.publish.publisher import Published, Report


def step(output: Output) -> str:
    return "push" if output.kind == "registry" else "write"


def publish_index(
    output: Output, index: ImageIndex, tags: tuple[str, ...], cache: Path, report: Report
) -> Published:
    """Send the index (and every image it names) to `output`, under every tag."""
    if output.kind == "registry":
        locations = registry.BlobLocations(cache)
        pushed = {}
        for ref in tags:
            pushed[ref] = registry.push_index(index, ref, locations=locations)
            report(f"pushed {ref}@{pushed[ref]} ({len(index.images)} platforms)")
        return Published(", ".join(tags), pushed)
    if output.kind == "oci" and output.path is not None:
        tag = parse_reference(tags[0]).tag if tags else None
        write_oci_index_layout(output.path, index, tag or "latest")
        return Published(f"oci:{output.path} ({len(index.images)} platforms)")
    raise AssertionError(f"{output} holds no image index")  # refused before the build
