"""Small synthetic base images for the base tests: layer tars written with the project's
own tar writer, and OCI layouts of them."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

from pydeploy.oci.blobs import sha256_digest
from pydeploy.oci.config import MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, REF_NAME_ANNOTATION
from pydeploy.oci.entries import FileEntry
from pydeploy.oci.tar import plan_entries, write_tar_entries

GLIBC_BANNER = b"\0GNU C Library (Debian GLIBC 2.36-9+deb12u13) stable release version 2.36.\n\0"
DPKG_STATUS = (
    b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u13\n\n"
    b"Package: python3.11-minimal\nStatus: install ok installed\nVersion: 3.11.2-6+deb12u6\n"
)


def file(path: str, data: bytes, mode: int = 0o644) -> FileEntry:
    return FileEntry(path, "file", mode, data=data)


def link(path: str, target: str) -> FileEntry:
    return FileEntry(path, "symlink", 0o777, linkname=target)


def whiteout(path: str) -> FileEntry:
    parent, _, leaf = path.rpartition("/")
    return file(f"{parent}/.wh.{leaf}" if parent else f".wh.{leaf}", b"")


def layer_tar(entries: list[FileEntry]) -> bytes:
    out = io.BytesIO()
    write_tar_entries(out, plan_entries(entries), epoch=0)
    return out.getvalue()


def accounts() -> list[FileEntry]:
    return [
        file("etc/passwd", b"root:x:0:0:root:/root:/bin/bash\n"),
        file("etc/group", b"root:x:0:\n"),
    ]


def debian_layer() -> list[FileEntry]:
    """bookworm's shape: merged /usr, python3 -> python3.11, the version only in dpkg."""
    return [
        *accounts(),
        link("bin", "usr/bin"),
        link("lib", "usr/lib"),
        link("usr/bin/python3", "python3.11"),
        file("usr/bin/python3.11", b"\x7fELF no version here", 0o755),
        file("usr/lib/python3.11/os.py", b""),
        file("usr/lib/x86_64-linux-gnu/libc.so.6", b"\x7fELF" + GLIBC_BANNER, 0o755),
        link("lib64", "usr/lib64"),
        link("usr/lib64/ld-linux-x86-64.so.2", "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        file("var/lib/dpkg/status", DPKG_STATUS),
    ]


def config_for(
    diff_ids: list[str],
    *,
    architecture: str = "amd64",
    variant: str = "",
    env: list[str] | None = None,
) -> bytes:
    document: dict[str, Any] = {
        "architecture": architecture,
        "os": "linux",
        "config": {"Env": env or ["PATH=/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "test"} for _ in diff_ids],
    }
    if variant:
        document["variant"] = variant
    return json.dumps(document).encode()


class Blobs(dict[str, bytes]):
    """Blobs by digest, as a layout or a registry holds them."""

    def add(self, data: bytes) -> dict[str, Any]:
        digest = sha256_digest(data)
        self[digest] = data
        return {"digest": digest, "size": len(data)}


def image(blobs: Blobs, layers: list[bytes], **config: Any) -> bytes:
    """The manifest of an image of `layers` (gzipped), its blobs added to `blobs`."""
    diff_ids = [sha256_digest(tar) for tar in layers]
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **blobs.add(config_for(diff_ids, **config))},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    **blobs.add(gzip.compress(tar, mtime=0))} for tar in layers],
    }  # fmt: skip
    data = json.dumps(manifest).encode()
    blobs.add(data)
    return data


def index_of(blobs: Blobs, manifests: dict[str, bytes]) -> bytes:
    """An image index of the given manifests by platform text (`linux/arm64/v8`)."""
    entries = []
    for platform, manifest in manifests.items():
        os_name, arch, *variant = platform.split("/")
        shown: dict[str, str] = {"os": os_name, "architecture": arch}
        if variant:
            shown["variant"] = variant[0]
        entries.append({"mediaType": MEDIA_TYPE_MANIFEST, **blobs.add(manifest), "platform": shown})
    data = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX,
                       "manifests": entries}).encode()  # fmt: skip
    blobs.add(data)
    return data


def write_layout(root: Path, blobs: Blobs, top: dict[str, bytes]) -> Path:
    """An OCI layout whose index.json lists `top` (manifests or indexes) by ref name."""
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    for digest, data in blobs.items():
        (root / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(data)
    entries = []
    for name, data in top.items():
        kind = json.loads(data).get("mediaType", MEDIA_TYPE_MANIFEST)
        entries.append({"mediaType": kind, "digest": sha256_digest(data), "size": len(data),
                        "annotations": {REF_NAME_ANNOTATION: name}})  # fmt: skip
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    return root
