"""The OCI image layout writer: oci-layout, index.json and blobs/sha256/..., swapped into
place as a whole."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from pydeploy.errors import PublishError
from pydeploy.oci.blobs import BlobStore, digest_hex, sha256_digest
from pydeploy.oci.config import (
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST,
    REF_NAME_ANNOTATION,
    canonical_json,
)
from pydeploy.oci.image import Image
from pydeploy.oci.index import ImageIndex
from pydeploy.oci.writing import require_blobs, unwritable


def write_oci_layout(dest_dir: Path, image: Image, ref_name: str) -> None:
    """Write an OCI image layout (oci-layout, index.json, blobs/sha256/...) at `dest_dir`,
    built in a temp sibling and renamed into place. An existing OCI layout there is
    replaced; any other existing non-empty directory is refused."""
    manifest = image.registry_manifest()
    top = (MEDIA_TYPE_MANIFEST, sha256_digest(manifest), len(manifest))
    _write_layout(Path(dest_dir), image.store, top, _image_blobs(image), ref_name)


def write_oci_index_layout(dest_dir: Path, index: ImageIndex, ref_name: str) -> None:
    """The same for a multi-platform build: index.json names the image index (by
    `ref_name`), whose manifests are each platform's image; shared blobs are written once."""
    top = (MEDIA_TYPE_INDEX, index.digest, len(index.data))
    blobs = [index.digest, *(d for image in index.images for d in _image_blobs(image))]
    _write_layout(Path(dest_dir), index.store, top, blobs, ref_name)


def _image_blobs(image: Image) -> list[str]:
    manifest_digest = sha256_digest(image.registry_manifest())
    digests = [image.config_digest, manifest_digest, *(la.digest for la in image.layers)]
    require_blobs(image, digests)
    return digests


def _write_layout(
    dest_dir: Path, store: BlobStore, top: tuple[str, str, int], digests: list[str], ref_name: str
) -> None:
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
            shutil.copyfile(store.path(digest), blobs / digest_hex(digest))
        media_type, digest, size = top
        index = {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [
                {"mediaType": media_type, "digest": digest, "size": size,
                 "annotations": {REF_NAME_ANNOTATION: ref_name}}
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
