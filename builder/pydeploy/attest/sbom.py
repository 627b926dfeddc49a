"""The CycloneDX 1.6 JSON SBOM of an image, from pydeploy's side (pure): the image is
the metadata component; its components are the base image by digest, every Python
distribution in the venv and the Debian packages pydeploy added. The same image gives
the same bytes (serial number and timestamp come from the image), so attaching it twice
stores one artifact."""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import License, LicenseExpression
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from pydeploy.attest.contents import Contents, DebPackage, Distribution
from pydeploy.plan.references import try_parse

MEDIA_TYPE = "application/vnd.cyclonedx+json"
SPEC_VERSION = "1.6"
_SERIAL_NAMESPACE = uuid.UUID("6f1c1d2e-6b5e-4c55-9a57-3f0d8f3b5a61")  # pydeploy's own


@dataclass(frozen=True)
class ImageFacts:
    """What the SBOM says about the image itself and its base."""

    name: str  # the repository the image is known by (the first tag's, without the tag)
    reference: str  # that first tag in full (the purl's `tag`)
    digest: str  # the manifest digest (the image ID when the image has no manifest)
    image_id: str
    created: datetime  # the image config's `created`
    base_image: str  # the reference the build used
    # The base's digest: the reference's own when pinned, else its image ID (the engine
    # keeps no manifest digest for an image it did not pull); `base_digest_kind` says which.
    base_digest: str | None
    base_digest_kind: str  # "manifest", "image-id" or "unknown"
    pydeploy_version: str


def oci_purl(reference: str, digest: str | None) -> PackageURL:
    """`pkg:oci/NAME@DIGEST?repository_url=REGISTRY/REPO&tag=TAG` (purl's oci type); a
    base that is no registry reference (`oci:DIR`, `docker-archive:FILE`) by name alone."""
    ref = try_parse(reference)
    if ref is None:
        name = reference.rstrip("/").rsplit("/", 1)[-1].split(":", 1)[0] or "image"
        return PackageURL("oci", name=name, version=digest)
    qualifiers = {"repository_url": ref.familiar}
    if ref.tag:
        qualifiers["tag"] = ref.tag
    name = ref.repository.rsplit("/", 1)[-1]
    return PackageURL("oci", name=name, version=digest, qualifiers=qualifiers)


def _licenses(dist: Distribution) -> list[License]:
    factory = LicenseFactory()
    if dist.license_expression:
        return [factory.make_from_string(dist.license_expression)]
    made = [factory.make_from_string(text) for text in dist.licenses]
    # CycloneDX allows one expression alone, or any number of named/SPDX-id licences.
    return [m for m in made if not isinstance(m, LicenseExpression)] or made[:1]


def distribution_component(dist: Distribution) -> Component:
    purl = PackageURL("pypi", name=dist.name.lower().replace("_", "-"), version=dist.version)
    hashes = (
        [HashType(alg=HashAlgorithm.SHA_256, content=dist.record_sha256)]
        if dist.record_sha256
        else []
    )
    return Component(
        type=ComponentType.LIBRARY,
        name=dist.name,
        version=dist.version,
        purl=purl,
        bom_ref=purl.to_string(),
        licenses=_licenses(dist),
        hashes=hashes,
        properties=_where(dist),
    )


def _where(dist: Distribution) -> list[Property]:
    if not dist.path:  # its layer was not read here: the lock's pin alone
        return [Property(name="pydeploy:source", value="pins")]
    found = [
        Property(name="pydeploy:path", value=dist.path),
        Property(name="pydeploy:layer", value=dist.layer),
    ]
    if dist.record_sha256:
        found.append(Property(name="pydeploy:hash-of", value="dist-info/RECORD"))
    return found


def deb_component(package: DebPackage) -> Component:
    purl = None
    if package.version:
        qualifiers = {"arch": package.architecture} if package.architecture else {}
        purl = PackageURL(
            "deb", namespace="debian", name=package.name, version=package.version,
            qualifiers=qualifiers,
        )  # fmt: skip
    return Component(
        type=ComponentType.LIBRARY,
        name=package.name,
        version=package.version,
        purl=purl,
        bom_ref=purl.to_string() if purl else f"deb:{package.name}",
        properties=[Property(name="pydeploy:layer", value="system")],
    )


def base_component(facts: ImageFacts) -> Component:
    purl = oci_purl(facts.base_image, facts.base_digest)
    return Component(
        type=ComponentType.CONTAINER,
        name=facts.base_image,
        version=facts.base_digest,
        purl=purl,
        bom_ref="base-image",
        properties=[
            Property(name="pydeploy:role", value="base-image"),
            Property(name="pydeploy:digest-kind", value=facts.base_digest_kind),
        ],
    )


def build_bom(facts: ImageFacts, contents: Contents) -> Bom:
    bom = Bom(serial_number=uuid.uuid5(_SERIAL_NAMESPACE, f"{facts.digest}\n{facts.image_id}"))
    bom.metadata.timestamp = facts.created
    image = Component(
        type=ComponentType.CONTAINER,
        name=facts.name,
        version=facts.digest,
        purl=oci_purl(facts.reference, facts.digest),
        bom_ref="image",
        properties=[
            Property(name="pydeploy:image-id", value=facts.image_id),
            # Layers this host had no bytes of: their distributions are the lock's pins.
            *(
                [Property(name="pydeploy:unread-layers", value=" ".join(contents.unread))]
                if contents.unread
                else []
            ),
        ],
    )
    bom.metadata.component = image
    bom.metadata.tools.components.add(
        Component(type=ComponentType.APPLICATION, name="pydeploy", version=facts.pydeploy_version)
    )
    parts: list[Component] = [
        base_component(facts),
        *(distribution_component(d) for d in contents.distributions),
        *(deb_component(p) for p in contents.system_packages),
    ]
    for part in parts:
        bom.components.add(part)
    # The image is made of its parts: the one edge of its dependency graph pydeploy knows.
    bom.register_dependency(image, parts)
    return bom


def cyclonedx_json(facts: ImageFacts, contents: Contents) -> bytes:
    """The SBOM document, CycloneDX 1.6 JSON."""
    bom = build_bom(facts, contents)
    with warnings.catch_warnings():
        # The library warns when components lack a dependency graph of their own: pydeploy
        # states what the image holds, not what each distribution requires.
        warnings.simplefilter("ignore", UserWarning)
        text = JsonV1Dot6(bom).output_as_string(indent=2)
    return (text + "\n").encode()


def component_count(document: dict[str, object]) -> int:
    components = document.get("components")
    return len(components) if isinstance(components, list) else 0


def created_time(value: str | None) -> datetime:
    """An image config's `created` (RFC 3339), the epoch when it has none."""
    if value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
    return datetime.fromtimestamp(0, timezone.utc)
