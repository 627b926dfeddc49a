"""`pydeploy inspect` of an image in a registry: its manifest and the artifacts that
refer to it (the SBOM and provenance `build` attached), read over the Registry API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydeploy.attest import provenance, sbom
from pydeploy.attest.referrers import fetch_document, list_referrers
from pydeploy.errors import ConfigError
from pydeploy.oci.config import MEDIA_TYPE_INDEX
from pydeploy.plan.references import DOCKER_HUB, Reference, parse_reference, try_parse
from pydeploy.publish.registry import fetch_manifest

REGISTRY_PREFIX = "registry:"


@dataclass(frozen=True)
class Referrer:
    artifact_type: str
    digest: str
    size: int
    components: int | None  # an SBOM's component count, a statement's subjects
    document: bytes  # empty for others' artifacts (their manifest's size is `size`)

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact_type": self.artifact_type,
            "digest": self.digest,
            "size": self.size,
            "components": self.components,
        }


@dataclass(frozen=True)
class RemoteImage:
    reference: str
    digest: str
    media_type: str
    layers: int
    size: int  # the manifest's layers, compressed
    referrers: tuple[Referrer, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.reference,
            "manifest_digest": self.digest,
            "media_type": self.media_type,
            "layers": self.layers,
            "size": self.size,
            "referrers": [r.to_json() for r in self.referrers],
        }

    def sbom(self) -> bytes:
        """The attached SBOM (the first, when there are several)."""
        for referrer in self.referrers:
            if referrer.artifact_type == sbom.MEDIA_TYPE:
                return referrer.document
        raise ConfigError(
            f"{self.reference} has no SBOM attached.",
            hint="`pydeploy build --push` attaches one unless --no-attest is given.",
        )


def registry_reference(text: str, *, engine_has_it: bool | None) -> Reference | None:
    """The reference `inspect` reads from a registry: `registry:REF` always; a plain
    name only when the engine has no such image (or none answers) and the name says
    which registry (no Docker Hub guess)."""
    if text.startswith(REGISTRY_PREFIX):
        return parse_reference(text.removeprefix(REGISTRY_PREFIX), "inspect")
    if engine_has_it:
        return None
    ref = try_parse(text)
    if ref is None or ref.registry == DOCKER_HUB:
        return None
    return ref


def _count(artifact_type: str, document: bytes) -> int | None:
    try:
        parsed = json.loads(document)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    if artifact_type == sbom.MEDIA_TYPE:
        return sbom.component_count(parsed)
    if artifact_type == provenance.MEDIA_TYPE and isinstance(parsed.get("subject"), list):
        return len(parsed["subject"])
    return None


def inspect_remote(ref: Reference) -> RemoteImage:
    fetched = fetch_manifest(ref)
    if fetched.media_type == MEDIA_TYPE_INDEX:
        raise ConfigError(
            f"{ref} is a multi-platform index; pydeploy attaches SBOMs to single images.",
            hint="Inspect one platform's image by its digest (REPO@sha256:...).",
        )
    manifest = fetched.json()
    layers = manifest.get("layers") or []
    referrers = []
    for entry in list_referrers(ref, fetched.digest):
        digest = str(entry.get("digest", ""))
        artifact_type = str(entry.get("artifactType", ""))
        if artifact_type not in {sbom.MEDIA_TYPE, provenance.MEDIA_TYPE}:
            # Others' referrers (signatures, say): listed as the index has them, not read.
            size = int(entry.get("size", 0))
            referrers.append(Referrer(artifact_type, digest, size, None, b""))
            continue
        document = fetch_document(ref, digest)
        referrers.append(
            Referrer(artifact_type, digest, len(document), _count(artifact_type, document),
                     document)
        )  # fmt: skip
    return RemoteImage(
        reference=str(ref),
        digest=fetched.digest,
        media_type=fetched.media_type,
        layers=len(layers),
        size=sum(int(layer.get("size", 0)) for layer in layers),
        referrers=tuple(referrers),
    )
