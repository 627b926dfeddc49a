"""The one shape every output takes: a Publisher sends a finished image to one place,
all-or-nothing at that place."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pydeploy.oci.image import Image

Report = Callable[[str], None]


@dataclass(frozen=True)
class Published:
    """What a publisher did: one line for the progress step, and (for a registry) the
    manifest digest pushed under each reference."""

    detail: str
    pushed: Mapping[str, str] = field(default_factory=dict)


class Publisher(Protocol):
    @property
    def step(self) -> str:
        """The progress step it reports as: `load`, `push` or `write`."""
        ...

    def publish(self, image: Image, tags: tuple[str, ...], report: Report) -> Published:
        """Send `image` under `tags`; `report` takes progress lines within the step."""
        ...
