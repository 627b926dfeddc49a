"""The OCI image layout writer: oci-layout, index.json and blobs/sha256/..., swapped into
place as a whole."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from pydeploy.errors import PublishError
from pydeploy.oci.blobs import digest_hex, sha256_digest
from pydeploy.oci.config import (
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST,
    REF_NAME_ANNOTATION,
    canonical_json,
)
from pydeploy.oci.image import Image
from pydeploy.oci.writing import require_blobs, unwritable


def write_oci_layout(dest_dir: Path, image: Image, ref_name: str) -> None:
    """Write an OCI image layout (oci-layout, index.json, blobs/sha256/...) at `dest_dir`,
    built in a temp sibling and renamed into place. An existing OCI layout there is
    replaced; any other existing non-empty directory is refused."""
    dest_dir = Path(dest_dir)
    manifest = image.registry_manifest()
    manifest_digest = sha256_digest(manifest)
    digests = [image.config_digest, manifest_digest, *(la.digest for la in image.layers)]
    require_blobs(image, digests)
    if dest_dir.exists() and not _replaceable_layout(dest_dir):
        raise PublishError(
            f"{dest_dir} exists and is not an OCI image layout, so pydeploy will not overwrite it.",
            hint="Choose another output directory or remove it first.",
        )
    try:
        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.tmp-", dir=dest_dir.parent))
        tmp.chmod(0o755)  # mkdtemp makes 0700; the layout is meant to be shared
    except OSError as exc:
        raise unwritable(dest_dir, exc) from exc
    try:
        blobs = tmp / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        (tmp / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
        for digest in dict.fromkeys(digests):
            shutil.copyfile(image.store.path(digest), blobs / digest_hex(digest))
        index = {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [
                {"mediaType": MEDIA_TYPE_MANIFEST, "digest": manifest_digest,
                 "size": len(manifest), "annotations": {REF_NAME_ANNOTATION: ref_name}}
            ],
        }  # fmt: skip
        (tmp / "index.json").write_bytes(canonical_json(index))
        _swap_into_place(tmp, dest_dir)
    except OSError as exc:
        raise unwritable(dest_dir, exc) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _replaceable_layout(path: Path) -> bool:
    if not path.is_dir():
        return False
    return (path / "oci-layout").is_file() or not any(path.iterdir())


def _swap_into_place(tmp: Path, dest: Path) -> None:
    """Rename `tmp` to `dest`; an existing `dest` is moved aside first and removed after."""
    if not dest.exists():
        tmp.rename(dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    old.rmdir()
    dest.rename(old)
    try:
        tmp.rename(dest)
    except OSError:
        old.rename(dest)
        raise
    shutil.rmtree(old, ignore_errors=True)
