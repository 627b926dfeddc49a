"""An OCI image index: one image per platform, as a multi-platform build publishes it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pydeploy.oci.blobs import BlobStore, sha256_digest
from pydeploy.oci.config import MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, canonical_json
from pydeploy.oci.image import Image


def platform_of(image: Image) -> dict[str, str]:
    """The descriptor's `platform`, from the image's own config (os, architecture, variant)."""
    config = json.loads(image.config)
    platform = {"architecture": config["architecture"], "os": config["os"]}
    if config.get("variant"):
        platform["variant"] = config["variant"]
    return platform


@dataclass(frozen=True)
class ImageIndex:
    """The images in the order the build's platforms name them, and the index's bytes
    (canonical JSON, also in the store): the same images give the same digest."""

    store: BlobStore
    images: tuple[Image, ...]
    data: bytes = field(init=False)
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        manifests = [
            {"mediaType": MEDIA_TYPE_MANIFEST, "digest": image.registry_manifest_digest(),
             "size": len(image.registry_manifest()), "platform": platform_of(image)}
            for image in self.images
        ]  # fmt: skip
        data = canonical_json(
            {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": manifests}
        )
        self.store.put_bytes(data)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "digest", sha256_digest(data))
