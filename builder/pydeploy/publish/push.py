"""`registry`: push the image under every tag (the client is pydeploy.publish.registry)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydeploy.oci.image import Image
from pydeploy.publish import registry
from pydeploy.publish.publisher import Published, Report
from pydeploy.publish.registry import Fetch


@dataclass(frozen=True)
class RegistryPublisher:
    cache: Path  # holds registry-blobs.json, where this host's pushes left each blob
    fetch: Fetch | None = None  # downloads the blobs a registry cache left in its registry

    @property
    def step(self) -> str:
        return "push"

    def publish(self, image: Image, tags: tuple[str, ...], report: Report) -> Published:
        """Push under every tag; blobs already there are skipped, blobs this host pushed to
        another repository of the registry are mounted. Reports one line per tag."""
        pushed: dict[str, str] = {}
        locations = registry.BlobLocations(self.cache)
        for ref in tags:
            counts = {"exists": 0, "uploaded": 0, "mounted": 0}

            def progress(event: registry.PushEvent, counts: dict[str, int] = counts) -> None:
                if event.kind in counts:
                    counts[event.kind] += 1

            pushed[ref] = registry.push(
                image, ref, progress=progress, locations=locations, fetch=self.fetch
            )
            report(
                f"pushed {ref}@{pushed[ref]} ({counts['uploaded']} blobs uploaded, "
                f"{counts['mounted']} mounted from other repositories, "
                f"{counts['exists']} already there)"
            )
        return Published(", ".join(tags), pushed)
