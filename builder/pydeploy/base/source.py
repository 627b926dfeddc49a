"""Where a base image comes from without an engine (a registry, an OCI layout, a `docker
save` archive), and fetching it into the host blob store for one platform.

Every blob is stored under its digest only after its bytes were checked against it, so a
damaged download or layout never enters the cache. A registry tag is looked up every time
(one manifest GET); manifests, configs and layers already in the store are not fetched
again. Layers keep the source's gzip blob beside their plain tar (what
`pydeploy.oci.archive.cached_base` also gives): a push to the same registry then finds
the base's layers already there."""

from __future__ import annotations

import abc
import json
import re
import shutil
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydeploy.base.facts import BaseFacts, base_facts
from pydeploy.base.platforms import Platform
from pydeploy.cachekeys import INDEX_BASE_ARCHIVE
from pydeploy.errors import BaseImageError, ConfigError, PublishError
from pydeploy.oci.archive import cached_base, import_docker_save
from pydeploy.oci.blobs import BlobStore, digest_hex, sha256_digest
from pydeploy.oci.compress import gunzip_into
from pydeploy.oci.config import MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, REF_NAME_ANNOTATION
from pydeploy.oci.image import BaseImage
from pydeploy.oci.layer import Layer
from pydeploy.oci.streams import CHUNK
from pydeploy.plan.references import DOCKER_HUB, Reference, parse_reference
from pydeploy.publish.registry import PARALLEL_BLOBS, RegistryClient

__all__ = ["BaseFacts", "BaseSource", "FetchedBase", "fetch_base", "parse_base_source"]

Progress = Callable[[str], None]
_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_ACCEPT = ", ".join((MEDIA_TYPE_MANIFEST, MEDIA_TYPE_INDEX, _DOCKER_MANIFEST, _DOCKER_LIST))
_INDEX_TYPES = frozenset({MEDIA_TYPE_INDEX, _DOCKER_LIST})
_GZIP_LAYERS = frozenset(
    {"application/vnd.oci.image.layer.v1.tar+gzip",
     "application/vnd.docker.image.rootfs.diff.tar.gzip"}
)  # fmt: skip
_TAR_LAYERS = frozenset(
    {"application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar"}
)
_MAX_DEPTH = 4  # nested indexes followed
_LAYOUT_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class BaseSource:
    kind: Literal["registry", "oci", "docker-archive"]
    location: str  # a normalised reference, or a path
    ref_name: str = ""  # oci: the layout's ref name annotation to pick ("" = any)

    def __str__(self) -> str:
        if self.kind == "registry":
            return self.location
        suffix = f":{self.ref_name}" if self.ref_name else ""
        return f"{self.kind}:{self.location}{suffix}"


def parse_base_source(text: str) -> BaseSource:
    """`oci:DIR[:REF]`, `docker-archive:FILE`, else an image reference (`docker://` may
    prefix it), normalised as Docker does: python:3.12-slim ->
    docker.io/library/python:3.12-slim."""
    text = text.strip()
    if text.startswith("oci:"):
        rest = text[len("oci:") :]
        path, sep, ref_name = rest.rpartition(":")
        if not (sep and path and _LAYOUT_TAG.fullmatch(ref_name)):
            path, ref_name = rest, ""
        if not path:
            raise ConfigError("`oci:` needs a directory: oci:DIR or oci:DIR:REF.")
        return BaseSource("oci", path, ref_name)
    if text.startswith("docker-archive:"):
        path = text[len("docker-archive:") :]
        if not path:
            raise ConfigError("`docker-archive:` needs a file: docker-archive:FILE.")
        return BaseSource("docker-archive", path)
    ref = parse_reference(text.removeprefix("docker://"), "the base image")
    return BaseSource("registry", _familiar_location(ref))


def _familiar_location(ref: Reference) -> str:
    registry = "docker.io" if ref.registry == DOCKER_HUB else ref.registry
    text = f"{registry}/{ref.repository}"
    if ref.tag and not (ref.digest and ref.tag == "latest"):
        text += f":{ref.tag}"
    return text + (f"@{ref.digest}" if ref.digest else "")


@dataclass(frozen=True)
class FetchedBase:
    base: BaseImage  # `layers` set: plain tars in the store, and gzip blobs (but for a
    # docker-archive, whose gzips `pydeploy.oci.layer.gzipped` makes when an output needs them)
    repo_digest: str  # NAME@sha256:... of what the source names ("" for docker-archive)
    manifest_digest: str  # the platform's own manifest ("" for docker-archive)
    platform: Platform
    facts: BaseFacts


def fetch_base(
    source: BaseSource, platform: Platform, store: BlobStore, progress: Progress | None = None
) -> FetchedBase:
    """`source`'s image for `platform`, its blobs in `store`, and its facts."""
    report = progress or (lambda _text: None)
    if source.kind == "docker-archive":
        base = _from_archive(source, platform, store, report)
        return FetchedBase(base, "", "", platform, base_facts(store, base, str(source)))
    if source.kind == "oci":
        origin: _Origin = _Layout(source, store)
    else:
        origin = _Registry(source, store)
    with origin:
        top, top_digest = origin.top()
        manifest, config = _Selector(origin, platform, str(source)).select(top)
        base = _stored_base(origin, manifest, config, report)
    manifest_digest = sha256_digest(manifest)
    if source.kind == "registry":  # the name without its tag, at what the tag named
        repo_digest = re.sub(r":[^:/]+$", "", source.location.split("@")[0]) + f"@{top_digest}"
    else:  # a layout's index.json is no image: the manifest picked from it is
        repo_digest = f"{source}@{manifest_digest}"
    facts = base_facts(store, base, str(source))
    return FetchedBase(base, repo_digest, manifest_digest, platform, facts)


# --------------------------------------------------------------------------- origins


class _Origin(abc.ABC):
    """Manifests and blobs of one source; blobs go into the store verified."""

    def __init__(self, source: BaseSource, store: BlobStore) -> None:
        self.source, self.store = source, store

    def __enter__(self) -> _Origin:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    @abc.abstractmethod
    def top(self) -> tuple[bytes, str]:
        """What the source names (a manifest or an index) and its digest."""

    def checked(self, digest: object) -> str:
        """`digest` when it is a sha256 digest (what a blob may be stored under)."""
        try:
            digest_hex(str(digest))
        except ValueError:
            raise _not_image(self.source, f"a descriptor with the digest {digest!r}") from None
        return str(digest)

    def manifest(self, digest: str) -> bytes:
        """A manifest or index by digest (kept in the store: it is content-addressed)."""
        digest = self.checked(digest)
        if self.store.has(digest):
            return self.store.read_bytes(digest)
        data = self._fetch_manifest(digest)
        if sha256_digest(data) != digest:
            raise _corrupt(self.source, digest)
        self.store.put_bytes(data)
        return data

    @abc.abstractmethod
    def _fetch_manifest(self, digest: str) -> bytes: ...

    def blob(self, digest: str, size: int) -> None:
        """Put blob `digest` into the store unless it is there."""
        if not self.store.has(self.checked(digest)):
            self._fetch_blob(digest, size)

    @abc.abstractmethod
    def _fetch_blob(self, digest: str, size: int) -> None: ...


class _Registry(_Origin):
    def __init__(self, source: BaseSource, store: BlobStore) -> None:
        super().__init__(source, store)
        self.ref = parse_reference(source.location)
        self.client = RegistryClient(self.ref)

    def __exit__(self, *_exc: object) -> None:
        self.client.close()

    def _get(self, target: str) -> bytes:
        try:
            response = self.client.request(
                "GET", self.client.url(f"manifests/{target}"), headers={"Accept": _ACCEPT}
            )
        except PublishError as exc:
            raise _registry_failure(self.source, exc) from exc
        with response:
            if response.status_code == 404:
                what = (
                    f"tag {target!r}" if not target.startswith("sha256:") else f"manifest {target}"
                )
                raise BaseImageError(
                    f"the registry {self.ref.registry} has no {what} in {self.ref.repository}, "
                    f"so the base image {self.source} cannot be fetched.",
                    hint="Check the base image's name and tag (`skopeo list-tags "
                    f"docker://{self.ref.registry}/{self.ref.repository}` lists its tags), "
                    "or push it there first.",
                )
            if response.status_code != 200:
                raise BaseImageError(
                    f"the registry {self.ref.registry} answered HTTP {response.status_code} "
                    f"to the manifest {target} of {self.ref.repository} (base image "
                    f"{self.source}).",
                    hint="Try again later, or use a local copy with --base oci:DIR.",
                )
            return response.content

    def top(self) -> tuple[bytes, str]:
        data = self._get(self.ref.target)
        digest = sha256_digest(data)
        if self.ref.digest and digest != self.ref.digest:
            raise _corrupt(self.source, self.ref.digest)
        self.store.put_bytes(data)
        return data, digest

    def _fetch_manifest(self, digest: str) -> bytes:
        return self._get(digest)

    def _fetch_blob(self, digest: str, size: int) -> None:
        del size
        try:
            self.client.download_blob(digest, self.store.path(digest))
        except PublishError as exc:
            if "different content" in str(exc):
                raise _corrupt(self.source, digest) from exc
            raise _registry_failure(self.source, exc) from exc


class _Layout(_Origin):
    def __init__(self, source: BaseSource, store: BlobStore) -> None:
        super().__init__(source, store)
        self.root = Path(source.location)

    def _path(self, digest: str) -> Path:
        try:
            return self.root / "blobs" / "sha256" / digest_hex(digest)
        except ValueError as exc:
            raise _not_layout(self.source, f"it names the blob {digest!r}") from exc

    def top(self) -> tuple[bytes, str]:
        if not (self.root / "oci-layout").is_file():
            raise _not_layout(self.source, f"{self.root} has no oci-layout file")
        try:
            data = (self.root / "index.json").read_bytes()
        except OSError as exc:
            raise _not_layout(self.source, f"its index.json is unreadable ({exc})") from exc
        document = _json(data, self.source, "index.json")
        if self.source.ref_name:
            # The ref name picks among the top-level entries; platforms among the rest.
            entries = [
                e for e in document.get("manifests") or []
                if isinstance(e, dict)
                and (e.get("annotations") or {}).get(REF_NAME_ANNOTATION) == self.source.ref_name
            ]  # fmt: skip
            if not entries:
                names = sorted(
                    {str((e.get("annotations") or {}).get(REF_NAME_ANNOTATION, ""))
                     for e in document.get("manifests") or [] if isinstance(e, dict)} - {""}
                )  # fmt: skip
                raise BaseImageError(
                    f"the OCI layout {self.root} has no image named "
                    f"{self.source.ref_name!r} (it has: {', '.join(names) or 'no names'}).",
                    hint=f"Use one of those names, or oci:{self.root} to take its only image.",
                )
            document = {**document, "manifests": entries}
            data = json.dumps(document).encode()
        return data, sha256_digest(data)

    def _fetch_manifest(self, digest: str) -> bytes:
        try:
            return self._path(digest).read_bytes()
        except OSError as exc:
            raise _not_layout(self.source, f"it lacks the blob {digest}") from exc

    def _fetch_blob(self, digest: str, size: int) -> None:
        del size
        try:
            with self._path(digest).open("rb") as handle, self.store.writer() as sink:
                shutil.copyfileobj(handle, sink, CHUNK)
                if sink.digest != digest:  # raised inside: the writer drops the copy
                    raise _corrupt(self.source, digest)
        except OSError as exc:
            raise _not_layout(self.source, f"it lacks the blob {digest}") from exc


# --------------------------------------------------------------------------- selection


class _Selector:
    """The manifest for a platform, through (nested) indexes; the platforms seen on the
    way make the error when none matches."""

    def __init__(self, origin: _Origin, platform: Platform, name: str) -> None:
        self.origin, self.platform, self.name = origin, platform, name
        self.seen: list[str] = []

    def select(self, top: bytes) -> tuple[bytes, bytes]:
        found = self._find(top, 0)
        if found is None:
            present = ", ".join(dict.fromkeys(self.seen)) or "none"
            raise BaseImageError(
                f"the base image {self.name} has no image for {self.platform} (it has: {present}).",
                hint="Build for one of those platforms (--platform), or choose a base image "
                f"that is published for {self.platform}.",
            )
        return found

    def _find(self, data: bytes, depth: int) -> tuple[bytes, bytes] | None:
        document = _json(data, self.origin.source, "a manifest")
        if "manifests" in document or document.get("mediaType") in _INDEX_TYPES:
            if depth >= _MAX_DEPTH:
                return None
            for entry in document.get("manifests") or []:
                if not isinstance(entry, dict):
                    continue
                platform = entry.get("platform")
                if isinstance(platform, dict):
                    shown = _platform_text(platform)
                    if shown != "unknown/unknown":  # attestations, not images
                        self.seen.append(shown)
                    if not self.platform.matches(
                        str(platform.get("os")), str(platform.get("architecture")),
                        str(platform.get("variant") or ""),
                    ):  # fmt: skip
                        continue
                found = self._find(self.origin.manifest(str(entry.get("digest"))), depth + 1)
                if found is not None:
                    return found
            return None
        config_descriptor = document.get("config")
        if not isinstance(config_descriptor, dict) or "layers" not in document:
            raise _not_image(self.origin.source, "a manifest without config or layers")
        digest = str(config_descriptor.get("digest"))
        self.origin.blob(digest, _size(config_descriptor, self.origin.source))
        config_bytes = self.origin.store.read_bytes(digest)
        config = _json(config_bytes, self.origin.source, "the image config")
        self.seen.append(_platform_text(config))
        matches = self.platform.matches(
            str(config.get("os")), str(config.get("architecture")), str(config.get("variant") or "")
        )
        return (data, config_bytes) if matches else None


def _platform_text(fields: dict[str, Any]) -> str:
    parts = [str(fields.get("os") or "unknown"), str(fields.get("architecture") or "unknown")]
    if fields.get("variant"):
        parts.append(str(fields["variant"]))
    return "/".join(parts)


def _stored_base(origin: _Origin, manifest: bytes, config: bytes, report: Progress) -> BaseImage:
    """Every layer of `manifest` in the store, gzip blob and plain tar both. Layers are
    fetched and unpacked PARALLEL_BLOBS at a time: a base such as python:3.12-slim has
    four, and zlib and the socket reads leave the GIL."""
    descriptors = json.loads(manifest).get("layers") or []
    diff_ids = json.loads(config).get("rootfs", {}).get("diff_ids") or []
    if len(descriptors) != len(diff_ids):
        raise _not_image(origin.source, "a manifest and config with different layer counts")
    lock = threading.Lock()

    def reported(text: str) -> None:
        with lock:  # the caller's progress need not be thread-safe
            report(text)

    def one(pair: tuple[Any, Any]) -> Layer:
        return _stored_layer(origin, pair[0], str(pair[1]), reported)

    pairs = list(zip(descriptors, diff_ids, strict=True))
    if len(pairs) <= 1:
        layers = [one(pair) for pair in pairs]
    else:
        with ThreadPoolExecutor(PARALLEL_BLOBS, thread_name_prefix="base") as pool:
            layers = list(pool.map(one, pairs))  # the first failure is raised, in order
    origin.store.put_bytes(config)
    return BaseImage(config, tuple(layers))


def _stored_layer(origin: _Origin, descriptor: Any, diff_id: str, report: Progress) -> Layer:
    if not isinstance(descriptor, dict):
        raise _not_image(origin.source, "a layer descriptor that is not a JSON object")
    store = origin.store
    digest = origin.checked(descriptor.get("digest"))
    size = _size(descriptor, origin.source)
    media_type = str(descriptor.get("mediaType"))
    if media_type not in _GZIP_LAYERS | _TAR_LAYERS:
        raise BaseImageError(
            f"the base image {origin.source} has a layer of type {media_type}; pydeploy "
            "reads gzip and plain tar layers.",
            hint="Choose a base published with gzip layers (the default of docker push).",
        )
    if not store.has(digest):
        report(f"fetching base layer {digest[:19]} ({size / 1e6:.1f} MB)")
        origin.blob(digest, size)
    if media_type in _TAR_LAYERS:
        plain = digest
    elif store.has(diff_id):
        plain = diff_id
    else:
        try:
            plain = gunzip_into(store, store.path(digest))
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            plain = f"nothing ({type(exc).__name__}: {exc})"
    if plain != diff_id:
        raise BaseImageError(
            f"layer {digest} of the base image {origin.source} unpacks to {plain}, not "
            f"to its diff ID {diff_id}; the image is damaged.",
            hint="Push the base image again, or use another copy of it.",
        )
    return Layer("base", diff_id, digest, store.size(digest), store.size(diff_id))


def _from_archive(
    source: BaseSource, platform: Platform, store: BlobStore, report: Progress
) -> BaseImage:
    path = Path(source.location)
    try:
        # The same file unchanged (path, inode, size, mtime) is the same image: not re-read.
        info = path.resolve().stat()
        seen = f"{path.resolve()}\0{info.st_ino}\0{info.st_size}\0{info.st_mtime_ns}"
        key = digest_hex(sha256_digest(seen.encode()))
        known = store.read_index(INDEX_BASE_ARCHIVE, key)
        base = cached_base(store, str(known.get("image_id"))) if isinstance(known, dict) else None
        if base is None:
            report(f"reading {path}")
            with path.open("rb") as handle:
                # Plain tars only: an output that needs a layer's gzip makes it (once).
                base = import_docker_save(handle, store, compress=False)
            store.write_index(INDEX_BASE_ARCHIVE, key, {"image_id": base.image_id})
    except OSError as exc:
        raise BaseImageError(
            f"the base image archive {path} cannot be read ({exc.strerror or exc}).",
            hint="Give a file written by `docker save IMAGE -o FILE`.",
        ) from exc
    config = base.config
    if not platform.matches(
        str(config.get("os")), str(config.get("architecture")), str(config.get("variant") or "")
    ):
        raise BaseImageError(
            f"the base image {source} has no image for {platform} (it has: "
            f"{_platform_text(config)}).",
            hint=f"Build for {_platform_text(config)} (--platform), or save a base image "
            f"for {platform}.",
        )
    return base


# --------------------------------------------------------------------------- errors


def _size(descriptor: dict[str, Any], source: BaseSource) -> int:
    try:
        return int(descriptor.get("size") or 0)
    except (TypeError, ValueError):
        raise _not_image(source, f"a descriptor of size {descriptor.get('size')!r}") from None


def _json(data: bytes, source: BaseSource, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise _not_image(source, f"{what} that is not a JSON object")
    return document


def _corrupt(source: BaseSource, digest: str) -> BaseImageError:
    return BaseImageError(
        f"the blob {digest} of the base image {source} arrived with content that does not "
        "match its digest; nothing of it was cached.",
        hint="Fetch it again; if it persists, the source is damaged (push or copy the base "
        "image again).",
    )


def _registry_failure(source: BaseSource, exc: PublishError) -> BaseImageError:
    error = BaseImageError(f"the base image {source} cannot be fetched: {exc}", hint=exc.hint)
    if exc.hint is None:
        error.hint = "Check the registry's address and that it runs, or use --base oci:DIR."
    return error


def _not_layout(source: BaseSource, why: str) -> BaseImageError:
    return BaseImageError(
        f"{source} is not a usable OCI image layout: {why}.",
        hint="Give a directory written by `skopeo copy ... oci:DIR` (or pydeploy's oci output).",
    )


def _not_image(source: BaseSource, what: str) -> BaseImageError:
    return BaseImageError(
        f"the base image {source} has {what}; pydeploy cannot read it.",
        hint="Use an image with an OCI or Docker v2 manifest.",
    )
