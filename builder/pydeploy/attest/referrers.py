"""Documents attached to an image as OCI 1.1 artifacts: an image manifest with an
`artifactType`, the empty config, one layer (the document) and `subject` (the image's
manifest descriptor).

In a registry, the artifact is pushed by digest. A registry with the referrers API says
so by answering that PUT with an `OCI-Subject` header; for any other (the local
docker-registry 2.8 among them) pydeploy keeps the referrers tag schema: the tag
`sha256-<hex of the subject>` holds an image index of the subject's referrers,
read-modified-written with the entries others put there kept. In an OCI layout the
artifact's blobs go in blobs/ and its manifest in index.json beside the image's.

The manifest and index builders are pure; `attach`, `list_referrers` and
`attach_to_layout` do the I/O."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydeploy import atomic
from pydeploy.errors import PublishError
from pydeploy.oci.blobs import digest_hex, sha256_digest
from pydeploy.oci.config import (
    EMPTY_JSON,
    MEDIA_TYPE_EMPTY,
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST,
    canonical_json,
)
from pydeploy.plan.references import Reference
from pydeploy.publish.registry import RegistryClient, fetch_manifest, push_artifact

ANNOTATION_CREATED = "org.opencontainers.image.created"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}  # fmt: skip
        if self.artifact_type:
            doc["artifactType"] = self.artifact_type
        return doc

    @classmethod
    def of(cls, media_type: str, data: bytes, artifact_type: str | None = None) -> Descriptor:
        return cls(media_type, sha256_digest(data), len(data), artifact_type)


@dataclass(frozen=True)
class Artifact:
    """One document as an artifact manifest that refers to `subject`."""

    artifact_type: str
    document: bytes
    subject: Descriptor
    created: str  # RFC 3339: the image's own time, so the same document gives one digest

    @property
    def manifest(self) -> bytes:
        return canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_MANIFEST,
                "artifactType": self.artifact_type,
                "config": Descriptor.of(MEDIA_TYPE_EMPTY, EMPTY_JSON).to_json(),
                "layers": [Descriptor.of(self.artifact_type, self.document).to_json()],
                "subject": self.subject.to_json(),
                "annotations": {ANNOTATION_CREATED: self.created},
            }
        )

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor.of(MEDIA_TYPE_MANIFEST, self.manifest, self.artifact_type)

    def referrer_entry(self) -> dict[str, Any]:
        """The artifact as a referrers index lists it (with its annotations)."""
        return {**self.descriptor.to_json(), "annotations": {ANNOTATION_CREATED: self.created}}


def fallback_tag(subject_digest: str) -> str:
    """The referrers tag schema's tag: `sha256-<hex>`."""
    algorithm, _, value = subject_digest.partition(":")
    return f"{algorithm}-{value}"


def merge_referrers(
    existing: dict[str, Any] | None, entries: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The fallback tag's index with `entries` added: every entry already there is kept
    (others' referrers too), an entry for the same digest is not repeated."""
    manifests = [m for m in (existing or {}).get("manifests") or [] if isinstance(m, dict)]
    known = {m.get("digest") for m in manifests}
    for entry in entries:
        if entry["digest"] not in known:
            manifests.append(entry)
            known.add(entry["digest"])
    return {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": manifests}


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Attached:
    kind: str  # "sbom" or "provenance"
    artifact: Artifact
    where: str  # the reference by digest, or oci:DIR
    referrers: str  # "api" (the registry's OCI-Subject), "tag-schema" or "layout"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "digest": self.artifact.descriptor.digest,
            "media_type": self.artifact.artifact_type,
            "where": self.where,
            "referrers": self.referrers,
        }


def attach(repository: Reference, kinds: Sequence[tuple[str, Artifact]]) -> list[Attached]:
    """Push each artifact to `repository` by digest, then (when the registry has no
    referrers API) add them to the subject's fallback tag."""
    attached: list[Attached] = []
    fallback: list[Artifact] = []
    for kind, artifact in kinds:
        pinned = dataclasses.replace(repository, tag=None, digest=artifact.descriptor.digest)
        blobs = {sha256_digest(data): (len(data), data) for data in (EMPTY_JSON, artifact.document)}
        headers = push_artifact(pinned, artifact.manifest, blobs)
        api = headers.get("OCI-Subject") == artifact.subject.digest
        if not api:
            fallback.append(artifact)
        attached.append(Attached(kind, artifact, str(pinned), "api" if api else "tag-schema"))
    by_subject: dict[str, list[Artifact]] = {}
    for artifact in fallback:
        by_subject.setdefault(artifact.subject.digest, []).append(artifact)
    for subject, artifacts in by_subject.items():
        tagged = dataclasses.replace(repository, tag=fallback_tag(subject), digest=None)
        with RegistryClient(tagged, push=True) as client:
            found = client.find_manifest(MEDIA_TYPE_INDEX)
            existing = json.loads(found) if found is not None else None
            merged = merge_referrers(existing, [a.referrer_entry() for a in artifacts])
            if merged != existing:
                client.put_manifest(canonical_json(merged), MEDIA_TYPE_INDEX)
    return attached


def list_referrers(repository: Reference, subject_digest: str) -> list[dict[str, Any]]:
    """The subject's referrers: the registry's referrers API when it answers, else the
    fallback tag's index (none when neither exists)."""
    with RegistryClient(repository) as client:
        response = client.request(
            "GET", client.url(f"referrers/{subject_digest}"),
            headers={"Accept": MEDIA_TYPE_INDEX},
        )  # fmt: skip
        with response:
            api = response.status_code == 200 and response.headers.get(
                "Content-Type", ""
            ).startswith(MEDIA_TYPE_INDEX)
            document = response.json() if api else None
    if document is None:
        tagged = dataclasses.replace(repository, tag=fallback_tag(subject_digest), digest=None)
        with RegistryClient(tagged) as client:
            found = client.find_manifest(MEDIA_TYPE_INDEX)
        document = json.loads(found) if found is not None else {}
    manifests = document.get("manifests") if isinstance(document, dict) else None
    return [m for m in manifests or [] if isinstance(m, dict)]


def fetch_document(repository: Reference, manifest_digest: str) -> bytes:
    """The document (the one layer) of the artifact `manifest_digest`."""
    pinned = dataclasses.replace(repository, tag=None, digest=manifest_digest)
    data = fetch_manifest(pinned).data  # verified against the pinned digest
    with RegistryClient(pinned) as client:
        layers = json.loads(data).get("layers") or []
        if len(layers) != 1:
            raise PublishError(f"{pinned} is not a one-document artifact.")
        layer = str(layers[0]["digest"])
        response = client.request("GET", client.url(f"blobs/{layer}"))
        with response:
            if response.status_code != 200:
                raise PublishError(f"registry {repository.registry} answered HTTP "
                                   f"{response.status_code} for blob {layer}")  # fmt: skip
            blob = response.content
    if sha256_digest(blob) != layer:
        raise PublishError(f"blob {layer} arrived with different content.")
    return blob


# --------------------------------------------------------------------------- OCI layout


def attach_to_layout(layout: Path, artifacts: Sequence[tuple[str, Artifact]]) -> list[Attached]:
    """Write the artifacts' blobs and manifests into the OCI layout at `layout` and list
    each manifest in its index.json (after the image's entries, which stay first)."""
    blobs = layout / "blobs" / "sha256"
    index_path = layout / "index.json"
    try:
        index = json.loads(index_path.read_bytes())
        for _, artifact in artifacts:
            for data in (EMPTY_JSON, artifact.document, artifact.manifest):
                target = blobs / digest_hex(sha256_digest(data))
                if not target.exists():
                    atomic.write_bytes(target, data)
        manifests = list(index.get("manifests") or [])
        known = {m.get("digest") for m in manifests if isinstance(m, dict)}
        for _, artifact in artifacts:
            if artifact.descriptor.digest not in known:
                manifests.append(artifact.descriptor.to_json())
        index["manifests"] = manifests
        atomic.write_bytes(index_path, canonical_json(index))
    except (OSError, ValueError) as exc:
        raise PublishError(
            f"Cannot add the attestations to the OCI layout {layout}: {exc}."
        ) from exc
    return [Attached(kind, artifact, f"oci:{layout}", "layout") for kind, artifact in artifacts]
