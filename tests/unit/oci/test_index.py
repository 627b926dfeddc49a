"""The OCI image index of a multi-platform build, and its OCI layout."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.oci.samples import synthetic_image

from pydeploy.oci.blobs import BlobStore, sha256_digest
from pydeploy.oci.config import MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, REF_NAME_ANNOTATION
from pydeploy.oci.index import ImageIndex
from pydeploy.oci.layout import write_oci_index_layout


def test_the_index_names_each_image_with_its_platform_in_order(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    amd64 = synthetic_image(store)
    arm64 = synthetic_image(store, "arm64", "v8")
    index = ImageIndex(store, (amd64, arm64))
    document = json.loads(index.data)
    assert document["mediaType"] == MEDIA_TYPE_INDEX
    assert document["manifests"] == [
        {"mediaType": MEDIA_TYPE_MANIFEST, "digest": amd64.registry_manifest_digest(),
         "size": len(amd64.registry_manifest()),
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": MEDIA_TYPE_MANIFEST, "digest": arm64.registry_manifest_digest(),
         "size": len(arm64.registry_manifest()),
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
    ]  # fmt: skip
    assert index.digest == sha256_digest(index.data)
    assert store.path(index.digest).read_bytes() == index.data
    # The same images give the same bytes: the index digest is reproducible.
    assert ImageIndex(store, (amd64, arm64)).digest == index.digest
    assert ImageIndex(store, (arm64, amd64)).digest != index.digest


def test_the_layout_of_an_index_holds_every_blob_once(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    amd64, arm64 = synthetic_image(store), synthetic_image(store, "arm64")
    index = ImageIndex(store, (amd64, arm64))
    dest = tmp_path / "layout"
    write_oci_index_layout(dest, index, "1.0")
    top = json.loads((dest / "index.json").read_text())
    assert top["manifests"] == [
        {"mediaType": MEDIA_TYPE_INDEX, "digest": index.digest, "size": len(index.data),
         "annotations": {REF_NAME_ANNOTATION: "1.0"}}
    ]  # fmt: skip
    blobs = {f"sha256:{p.name}" for p in (dest / "blobs" / "sha256").iterdir()}
    wanted = {index.digest}
    for image in (amd64, arm64):
        wanted |= {image.config_digest, image.registry_manifest_digest()}
        wanted |= {layer.digest for layer in image.layers}
    assert blobs == wanted
    for blob in (dest / "blobs" / "sha256").iterdir():
        assert sha256_digest(blob.read_bytes()) == f"sha256:{blob.name}"
