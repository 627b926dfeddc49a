"""What the command line asks of the attestations (light: read before the build's imports)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydeploy.publish.outputs import Output


@dataclass(frozen=True)
class Wanted:
    """`--sbom FILE`, `--provenance FILE`, and whether to attach (not `--no-attest`)."""

    sbom_file: Path | None = None
    provenance_file: Path | None = None
    attach: bool = True

    @property
    def files(self) -> bool:
        return self.sbom_file is not None or self.provenance_file is not None


@dataclass(frozen=True)
class BuildRun:
    """What the command knows of the build beside its result."""

    invocation_id: str
    started: datetime
    finished: datetime


def attaches(outputs: Sequence[Output], wanted: Wanted) -> bool:
    """Whether the build attaches anything: a registry or OCI layout output, no --no-attest."""
    return wanted.attach and any(o.kind in {"registry", "oci"} for o in outputs)
