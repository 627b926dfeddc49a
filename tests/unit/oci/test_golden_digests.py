"""Golden digests: a known layer and a known image config, pinned byte for byte.

Every cache key and every published image ID rests on these bytes, so a change to the tar
headers, the gzip stream or the canonical JSON must be a deliberate edit of these values,
never a side effect of a refactor."""

from __future__ import annotations

from pathlib import Path

from pydeploy.oci.blobs import BlobStore, sha256_digest
from pydeploy.oci.config import ImageSettings, build_config, rfc3339
from pydeploy.oci.entries import FileEntry
from pydeploy.oci.layer import Layer, build_layer

EPOCH = 1_700_000_000

# Pinned from the bytes pydeploy writes today; update only with a changelog line, since a new
# value means every cached layer and every image ID changes.
LAYER_DIFF_ID = "sha256:7aa338fdc2dfe2b2499f8c0ab2998b0a5b6586373d0c7b44b30a02e9d211b16d"
LAYER_DIGEST = "sha256:2ea4b710a6c1c94c0555d7af7035f84716408377665aa721bb7198f5c8687b6f"
LAYER_SIZES = (426, 10752)  # (gzip size, tar size)
CONFIG_DIGEST = "sha256:b6d533161db88fcb1adfc54988f141b4cc2a667c779b17f5d4cc1752260c301e"


def golden_entries() -> list[FileEntry]:
    return [
        FileEntry("app", "dir", 0o755, uid=1000, gid=1000),
        FileEntry("app/main.py", "file", 0o644, uid=1000, gid=1000, data=b"print('hi')\n"),
        FileEntry("app/bin/run", "file", 0o755, data=b"#!/bin/sh\nexec true\n"),
        FileEntry("app/link", "symlink", 0o777, linkname="main.py"),
        FileEntry("app/hard", "hardlink", 0o644, linkname="app/main.py"),
        # Longer than ustar's 100-byte name field, so the PAX path is pinned too.
        FileEntry("app/" + "d" * 120 + "/f.txt", "file", 0o600, data=b"x"),
        FileEntry("app/données.txt", "file", 0o644, data="é\n".encode()),
    ]


def golden_layer(tmp_path: Path) -> Layer:
    store = BlobStore(tmp_path / "blobs")
    return build_layer(golden_entries(), store=store, epoch=EPOCH, role="app")


def golden_config(layer: Layer) -> bytes:
    base = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"], "Cmd": ["python3"]},
    }
    return build_config(
        base,
        ["sha256:" + "1" * 64],
        [{"created": "2023-01-01T00:00:00Z", "created_by": "base"}],
        [layer],
        ImageSettings(
            user="1000:1000",
            env={"PYTHONUNBUFFERED": "1", "PATH": "/app/.venv/bin:/usr/bin:/bin"},
            entrypoint=["/app/.venv/bin/python", "/opt/pydeploy/launcher.py"],
            cmd=None,
            workdir="/app",
            exposed_ports=["8000/tcp"],
            labels={"org.opencontainers.image.title": "golden"},
            stop_signal="SIGTERM",
            healthcheck={"Test": ["CMD", "true"], "Interval": 30_000_000_000},
            created=rfc3339(EPOCH),
        ),
    )


def test_layer_digest_and_diff_id_are_pinned(tmp_path: Path) -> None:
    layer = golden_layer(tmp_path)
    assert layer.diff_id == LAYER_DIFF_ID
    assert layer.digest == LAYER_DIGEST
    assert (layer.size, layer.uncompressed_size) == LAYER_SIZES


def test_image_config_digest_is_pinned(tmp_path: Path) -> None:
    layer = golden_layer(tmp_path)
    assert sha256_digest(golden_config(layer)) == CONFIG_DIGEST
