"""The docker-archive format (`docker save` / `docker load`): the reader that imports a base
image from the engine, and the writer that hands an image back to it or to a file."""

from __future__ import annotations

import gzip
import io
import json
import os
import posixpath
import shutil
import tarfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, BinaryIO, TypeVar, cast

from pydeploy import atomic
from pydeploy.cachekeys import INDEX_BASE_CONFIG, INDEX_DOCKER_SAVE
from pydeploy.errors import BaseImageError, PublishError
from pydeploy.oci.blobs import Blob, BlobStore, BlobWriter, digest_hex
from pydeploy.oci.compress import GZIP_MAGIC, gunzip_into
from pydeploy.oci.config import canonical_json
from pydeploy.oci.entries import clean_path
from pydeploy.oci.image import BaseImage, Image
from pydeploy.oci.layer import Layer, gzipped, open_uncompressed
from pydeploy.oci.streams import CHUNK, TarSource, as_reader
from pydeploy.oci.tar import BLOCK, Reader, TarScanner, pad, tar_header
from pydeploy.oci.writing import require_blobs, unwritable

_SMALL_MEMBER = 1 << 20
T = TypeVar("T")


def cached_base(store: BlobStore, image_id: str) -> BaseImage | None:
    """The base image imported earlier under this image ID, if all its blobs are there;
    lets the caller skip `docker save` entirely."""
    try:
        key = digest_hex(image_id)
    except ValueError:
        return None
    document = store.read_index(INDEX_DOCKER_SAVE, key)
    if not isinstance(document, dict):
        return None
    try:
        # Entries written before the index recorded each layer's role lack it: all are base.
        found = [Layer.from_doc({"role": "base", **d}) for d in document["layers"]]
        layers = tuple(layer for layer in found if layer is not None)
        if len(layers) != len(found):
            return None
        needed = [image_id, *(layer.digest for layer in layers)]
        if not all(store.has(digest) for digest in needed):
            return None
        return BaseImage(store.read_bytes(image_id), layers)
    except (KeyError, TypeError, ValueError, OSError):
        return None


def cached_base_config(store: BlobStore, image_id: str) -> BaseImage | None:
    """The base's config read earlier under this image ID, without its layers (what a
    build whose outputs need no base blobs uses)."""
    try:
        key = digest_hex(image_id)
    except ValueError:
        return None
    if not isinstance(store.read_index(INDEX_BASE_CONFIG, key), dict) or not store.has(image_id):
        return None
    try:
        return BaseImage(store.read_bytes(image_id), None)
    except OSError:
        return None


def remember_base_config(store: BlobStore, base: BaseImage) -> None:
    """Keep the base's config, so `cached_base_config` finds it by image ID next time."""
    store.put_bytes(base.config_bytes)
    store.write_index(INDEX_BASE_CONFIG, digest_hex(base.image_id), {"diff_ids": base.diff_ids})


class _Prefixed:
    """A reader that gives `head` first, then the rest of `tail`."""

    def __init__(self, head: bytes, tail: Reader) -> None:
        self._head, self._tail = head, tail

    def read(self, size: int = -1, /) -> bytes:
        if not self._head:
            return self._tail.read(size)
        if size < 0:
            data, self._head = self._head + self._tail.read(), b""
            return data
        head, self._head = self._head[:size], self._head[size:]
        rest = size - len(head)
        return head + self._tail.read(rest) if rest else head


def scan_docker_save(
    tar_stream: TarSource, scan: Callable[[Reader], T]
) -> tuple[BaseImage, list[T]]:
    """One pass over `docker save IMAGE` for a build that needs no base blobs: the config,
    and `scan` of each layer's tar, bottom first. Nothing is stored or hashed: the engine
    holds these layers, and the image pydeploy loads names them by the config's diff IDs."""
    small: dict[str, bytes] = {}
    scanned: dict[str, T] = {}
    links: dict[str, str] = {}
    outer = TarScanner(as_reader(tar_stream))
    for member in outer:
        name = clean_path(member.name) if member.name.strip("./") else ""
        if member.kind in {"symlink", "hardlink"}:
            base_dir = posixpath.dirname(name) if member.kind == "symlink" else ""
            links[name] = posixpath.normpath(posixpath.join(base_dir, member.linkname))
        elif member.kind == "file" and member.size <= _SMALL_MEMBER:
            small[name] = outer.read()
        elif member.kind == "file":
            # Large members are layers (the config and manifests are a few KB): scanned
            # as they stream past, gunzipped on the way when the engine saved them so.
            head = outer.read(len(GZIP_MAGIC))
            stream: Reader = _Prefixed(head, outer)
            if head == GZIP_MAGIC:
                stream = gzip.GzipFile(fileobj=cast(IO[bytes], stream), mode="rb")
            scanned[name] = scan(stream)
    resolve = _resolver(links)
    config_bytes, layer_names = _saved_manifest(small, resolve)
    scans = []
    for layer_name in layer_names:
        name = resolve(layer_name)
        if name in small:
            data = small[name]
            raw = gzip.decompress(data) if data.startswith(GZIP_MAGIC) else data
            scanned[name] = scan(io.BytesIO(raw))
        if name not in scanned:
            raise BaseImageError(f"the saved base image lacks its layer file {layer_name!r}")
        scans.append(scanned[name])
    return BaseImage(config_bytes, None), scans


def _resolver(links: dict[str, str]) -> Callable[[str], str]:
    def resolve(name: str) -> str:
        seen: set[str] = set()
        name = clean_path(name)
        while name in links and name not in seen:
            seen.add(name)
            name = links[name]
        return name

    return resolve


def _saved_manifest(
    small: dict[str, bytes], resolve: Callable[[str], str]
) -> tuple[bytes, list[str]]:
    """The config bytes and layer file names of a `docker save` archive."""
    try:
        manifest = json.loads(small[resolve("manifest.json")])[0]
        config_bytes = small[resolve(manifest["Config"])]
        diff_ids: list[str] = json.loads(config_bytes)["rootfs"]["diff_ids"]
        layer_names: list[str] = manifest["Layers"]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise BaseImageError(
            f"the engine's `docker save` output is not in a format pydeploy understands "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if len(diff_ids) != len(layer_names):
        raise BaseImageError("the saved base image lists a different number of layers and diff_ids")
    return config_bytes, layer_names


def import_docker_save(
    tar_stream: TarSource, store: BlobStore, *, compress: bool = True
) -> BaseImage:
    """Read `docker save IMAGE` output (legacy `<id>/layer.tar` or OCI `blobs/sha256/...`
    layouts; manifest.json drives both) and store each layer's tar and (with `compress`)
    its deterministic gzip, else made when needed (pydeploy.oci.layer.gzipped). The result
    is indexed by image ID, so `cached_base` finds it next time."""
    small: dict[str, bytes] = {}
    large: dict[str, Blob] = {}
    links: dict[str, str] = {}
    with tarfile.open(fileobj=as_reader(tar_stream), mode="r|*") as archive:
        for member in archive:
            name = clean_path(member.name) if member.name.strip("./") else ""
            if member.issym() or member.islnk():
                # docker save links repeated layers: `<id>/layer.tar -> ../<other>/layer.tar`
                base_dir = posixpath.dirname(name) if member.issym() else ""
                links[name] = posixpath.normpath(posixpath.join(base_dir, member.linkname))
            elif member.isreg():
                handle = archive.extractfile(member)
                if handle is None:  # pragma: no cover
                    continue
                if member.size <= _SMALL_MEMBER:
                    small[name] = handle.read()
                else:
                    with store.writer() as sink:
                        shutil.copyfileobj(handle, sink, CHUNK)
                    large[name] = sink.blob

    resolve = _resolver(links)
    config_bytes, layer_names = _saved_manifest(small, resolve)
    diff_ids: list[str] = json.loads(config_bytes)["rootfs"]["diff_ids"]
    layers: list[Layer] = []
    for diff_id, layer_name in zip(diff_ids, layer_names, strict=True):
        name = resolve(layer_name)
        blob = large.get(name) or (store.put_bytes(small[name]) if name in small else None)
        if blob is None:
            raise BaseImageError(f"the saved base image lacks its layer file {layer_name!r}")
        stored = _ensure_uncompressed(store, blob)
        if stored != diff_id:
            raise BaseImageError(
                f"base layer {layer_name!r} hashes to {stored}, not to its diff_id {diff_id}; "
                f"the saved image is damaged"
            )
        plain = Layer("base", diff_id, diff_id, store.size(diff_id), store.size(diff_id))
        layers.append(gzipped(store, plain) if compress else plain)
    store.put_bytes(config_bytes)
    base = BaseImage(config_bytes, tuple(layers))
    store.write_index(
        INDEX_DOCKER_SAVE,
        digest_hex(base.image_id),
        {"layers": [layer.to_doc() for layer in layers]},
    )
    return base


def _ensure_uncompressed(store: BlobStore, blob: Blob) -> str:
    """The digest of the uncompressed form of a stored layer blob (gunzipping if needed)."""
    with store.open(blob.digest) as handle:
        magic = handle.read(len(GZIP_MAGIC))
    if magic != GZIP_MAGIC:
        return blob.digest
    return gunzip_into(store, store.path(blob.digest))


def write_docker_archive(
    dest: str | os.PathLike[str] | BinaryIO,
    image: Image,
    repo_tags: Sequence[str],
    *,
    omit_diff_ids: Iterable[str] = (),
) -> None:
    """Write the `docker save`/`docker load` format: manifest.json, `<hex>.json` config,
    `<diff-id-hex>/layer.tar` per layer. Layers in `omit_diff_ids` are listed but not
    included (the engine must already have them). A path is written atomically; a stream
    is written as is."""
    omit = set(omit_diff_ids)
    unique = {la.diff_id: la for la in image.layers}  # a repeated layer is stored once
    included = [la for la in unique.values() if la.diff_id not in omit]
    lacking = [d for d in image.diff_ids if d not in omit and d not in unique]
    if lacking:
        # Only an image built without its base's blobs lists layers it does not hold.
        raise PublishError(
            f"the engine no longer has the base image's layer {lacking[0]}, which this "
            "build did not copy (its outputs did not need it).",
            hint="The base image was removed during the build; run `pydeploy build` again.",
        )
    require_blobs(image, [image.config_digest])
    for layer in included:
        if not (image.store.has(layer.diff_id) or image.store.has(layer.digest)):
            require_blobs(image, [layer.diff_id])
    if not isinstance(dest, (str, os.PathLike)):
        _write_docker_archive_to(dest, image, repo_tags, included)
        return
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic.replacing(dest) as handle:
            _write_docker_archive_to(handle, image, repo_tags, included)
    except OSError as exc:
        raise unwritable(dest, exc) from exc


def _write_docker_archive_to(
    out: IO[bytes] | BlobWriter, image: Image, repo_tags: Sequence[str], included: list[Layer]
) -> None:
    config_name = f"{digest_hex(image.image_id)}.json"
    manifest = [
        {
            "Config": config_name,
            "RepoTags": list(repo_tags),
            "Layers": [f"{digest_hex(diff_id)}/layer.tar" for diff_id in image.diff_ids],
        }
    ]

    def small_file(name: str, data: bytes) -> None:
        out.write(tar_header(name, kind="file", mode=0o644, size=len(data), mtime=0))
        out.write(pad(data))

    small_file("manifest.json", canonical_json(manifest))
    small_file(config_name, image.config)
    for layer in included:
        directory = digest_hex(layer.diff_id)
        out.write(tar_header(directory + "/", kind="dir", mode=0o755, size=0, mtime=0))
        size = layer.uncompressed_size
        out.write(tar_header(f"{directory}/layer.tar", kind="file", mode=0o644, size=size,
                             mtime=0))  # fmt: skip
        remaining = size
        with open_uncompressed(image.store, layer) as handle:
            while remaining:
                chunk = handle.read(min(CHUNK, remaining))
                if not chunk:
                    raise PublishError(
                        f"layer {layer.diff_id} in {image.store.root} is shorter than recorded.",
                        hint="The build cache is damaged; run `pydeploy build` again.",
                    )
                out.write(chunk)
                remaining -= len(chunk)
        out.write(b"\0" * (-size % BLOCK))
    out.write(b"\0" * (2 * BLOCK))
