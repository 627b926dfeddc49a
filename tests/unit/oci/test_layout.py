"""The OCI image layout writer."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from tests.unit.oci.samples import synthetic_image

from pydeploy.errors import PublishError
from pydeploy.oci.blobs import BlobStore, sha256_digest
from pydeploy.oci.layout import write_oci_layout


def test_oci_layout_is_valid_and_complete(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    image = synthetic_image(store)
    dest = tmp_path / "out" / "layout"
    write_oci_layout(dest, image, "demo:1.0")
    assert json.loads((dest / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((dest / "index.json").read_text())
    assert index["schemaVersion"] == 2
    [entry] = index["manifests"]
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "demo:1.0"}

    def blob(descriptor: dict[str, Any]) -> bytes:
        path: Path = dest / "blobs" / "sha256" / descriptor["digest"].removeprefix("sha256:")
        data = path.read_bytes()
        assert sha256_digest(data) == descriptor["digest"]
        assert len(data) == descriptor["size"]
        return data

    manifest = json.loads(blob(entry))
    config = json.loads(blob(manifest["config"]))
    diff_ids = [sha256_digest(gzip.decompress(blob(la))) for la in manifest["layers"]]
    assert diff_ids == config["rootfs"]["diff_ids"]
    stored = sorted(p.name for p in (dest / "blobs" / "sha256").iterdir())
    assert len(stored) == 2 + len(manifest["layers"])
    assert [p.name for p in dest.parent.iterdir()] == ["layout"]  # no temp leftovers


def test_oci_layout_replaces_a_layout_but_not_other_directories(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    image = synthetic_image(store)
    dest = tmp_path / "layout"
    write_oci_layout(dest, image, "one")
    write_oci_layout(dest, image, "two")
    index = json.loads((dest / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "two"
    other = tmp_path / "docs"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(PublishError, match="not an OCI image layout"):
        write_oci_layout(other, image, "x")
    assert (other / "keep.txt").read_text() == "mine"


def test_missing_cached_blob_is_a_publish_error(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    image = synthetic_image(store)
    store.path(image.layers[1].digest).unlink()
    with pytest.raises(PublishError, match="build cache"):
        write_oci_layout(tmp_path / "layout", image, "x")
    assert not (tmp_path / "layout").exists()
