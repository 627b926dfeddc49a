"""The image config and manifest documents, and the Image tying them to the layers."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from tests.unit.oci.samples import (
    EPOCH,
    base_layer_tars,
    docker_save_tar,
    sample_entries,
    synthetic_image,
    two_layers,
)

from pydeploy.oci.archive import import_docker_save
from pydeploy.oci.blobs import BlobStore, sha256_digest
from pydeploy.oci.config import ImageSettings, build_config, build_manifest, rfc3339
from pydeploy.oci.image import Image, assemble_image
from pydeploy.oci.layer import Layer, build_layer

BASE_CONFIG: dict[str, Any] = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
        "Cmd": ["/usr/bin/python3"],
        "Hostname": "",
        "OnBuild": None,
        "Labels": {"base": "yes"},
    },
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]},
    "history": [{"created": "2020-01-01T00:00:00Z", "created_by": "import"}],
}


def config_for(layers: list[Layer], **overrides: Any) -> bytes:
    settings: dict[str, Any] = {
        "user": "10001",
        "env": {"PATH": "/opt/venv/bin:/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "A": "1"},
        "entrypoint": ["/opt/venv/bin/python", "-m", "launcher"],
        "cmd": None,
        "workdir": "/app",
        "exposed_ports": ["8000"],
        "labels": {"org.opencontainers.image.title": "demo", "b": "2"},
        "stop_signal": "SIGTERM",
        "healthcheck": {
            "Test": ["CMD", "/opt/venv/bin/python", "-m", "health"],
            "Interval": 30_000_000_000,
            "Timeout": 5_000_000_000,
            "StartPeriod": 10_000_000_000,
            "Retries": 3,
        },
        "created": rfc3339(EPOCH),
    }
    settings.update(overrides)
    return build_config(
        BASE_CONFIG,
        BASE_CONFIG["rootfs"]["diff_ids"],
        BASE_CONFIG["history"],
        layers,
        ImageSettings(**settings),
    )


def test_config_is_canonical_and_complete(tmp_path: Path) -> None:
    layers = two_layers(BlobStore(tmp_path))
    data = config_for(layers)
    document = json.loads(data)
    assert data == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    runtime = document["config"]
    assert runtime["Env"] == [
        "PATH=/opt/venv/bin:/usr/bin:/bin",
        "LANG=C.UTF-8",
        "A=1",
        "PYTHONUNBUFFERED=1",
    ]
    assert "Cmd" not in runtime  # the base's Cmd would become arguments of our entrypoint
    assert "Hostname" not in runtime
    assert "OnBuild" not in runtime
    assert runtime["User"] == "10001"
    assert runtime["ExposedPorts"] == {"8000/tcp": {}}
    assert runtime["Labels"] == {"base": "yes", "org.opencontainers.image.title": "demo", "b": "2"}
    assert runtime["StopSignal"] == "SIGTERM"
    assert runtime["Healthcheck"]["Retries"] == 3
    assert document["created"] == "2023-11-14T22:13:20Z"
    assert document["rootfs"]["diff_ids"] == [
        "sha256:" + "1" * 64,
        layers[0].diff_id,
        layers[1].diff_id,
    ]
    assert document["history"][1:] == [
        {"created": "2023-11-14T22:13:20Z", "created_by": "pydeploy: dependencies"},
        {"created": "2023-11-14T22:13:20Z", "created_by": "pydeploy: app"},
    ]
    assert (document["architecture"], document["os"]) == ("amd64", "linux")


def test_config_digest_does_not_depend_on_mapping_order(tmp_path: Path) -> None:
    layers = two_layers(BlobStore(tmp_path))
    a = config_for(layers)
    b = config_for(
        layers,
        env={"A": "1", "PYTHONUNBUFFERED": "1", "PATH": "/opt/venv/bin:/usr/bin:/bin"},
        labels={"b": "2", "org.opencontainers.image.title": "demo"},
    )
    assert sha256_digest(a) == sha256_digest(b)
    assert sha256_digest(config_for(layers, user="10002")) != sha256_digest(a)


def test_manifest_shape(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    layers = two_layers(store)
    config = config_for(layers)
    manifest = build_manifest(sha256_digest(config), len(config), layers)
    document = json.loads(manifest)
    assert manifest == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    assert document["schemaVersion"] == 2
    assert document["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert document["config"] == {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": sha256_digest(config),
        "size": len(config),
    }
    assert [la["digest"] for la in document["layers"]] == [la.digest for la in layers]
    assert {la["mediaType"] for la in document["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    }


def test_image_ties_digests_together(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    image = synthetic_image(store)
    assert image.image_id == sha256_digest(image.config)
    assert image.manifest_digest == sha256_digest(image.registry_manifest())
    assert store.read_bytes(image.image_id) == image.config
    assert store.read_bytes(image.manifest_digest) == image.manifest
    again = synthetic_image(BlobStore(tmp_path / "again"))
    assert (again.image_id, again.manifest_digest) == (image.image_id, image.manifest_digest)


def test_image_refuses_layers_that_do_not_match_the_config(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    image = synthetic_image(store)
    with pytest.raises(ValueError, match="diff_ids"):
        Image.from_config(store, image.config, list(image.layers[:1]))


def test_assemble_image_on_an_imported_base(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    base = import_docker_save(io.BytesIO(docker_save_tar(base_layer_tars(tmp_path))), store)
    app = build_layer(sample_entries(), store=store, epoch=EPOCH, role="app")
    image = assemble_image(
        store, base, [app],
        ImageSettings(user="10001", env={"PATH": "/usr/bin"}, entrypoint=["/bin/true"],
                      created=rfc3339(EPOCH)),
    )  # fmt: skip
    assert image.base_layer_count == 2
    assert image.own_layers == (app,)
    config = json.loads(image.config)
    assert config["rootfs"]["diff_ids"] == [*base.diff_ids, app.diff_id]
    assert len(config["history"]) == 3
    manifest = json.loads(image.registry_manifest())
    assert [la["digest"] for la in manifest["layers"]] == [la.digest for la in image.layers]
