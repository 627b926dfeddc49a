"""`oci:DIR`: write an OCI image layout directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydeploy.oci.image import Image
from pydeploy.oci.layout import write_oci_layout
from pydeploy.plan.references import parse_reference
from pydeploy.publish.publisher import Published, Report


@dataclass(frozen=True)
class OciLayoutPublisher:
    path: Path

    @property
    def step(self) -> str:
        return "write"

    def publish(self, image: Image, tags: tuple[str, ...], report: Report) -> Published:  # noqa: ARG002 - Publisher's signature
        """The layout's one manifest is named by the first tag's tag part (`latest` when
        there is none)."""
        tag = parse_reference(tags[0]).tag if tags else None
        write_oci_layout(self.path, image, tag or "latest")
        return Published(f"oci:{self.path}")
