"""The registry cache's records: what one looks like, pure (no I/O; pydeploy.cache.remote
sends and fetches them).

A record maps one cache key of one kind to the layers it names, as a small OCI artifact
in the cache repository under the tag `pydeploy-cache-<kind>-<key>`:

    {"schemaVersion": 2,
     "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "artifactType": "application/vnd.pydeploy.cache.v1+json",
     "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": <of {}>, "size": 2},
     "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                 "digest": ..., "size": ...,
                 "annotations": {"io.pydeploy.cache.role": "dependencies-group-1",
                                 "io.pydeploy.cache.diff-id": "sha256:...",
                                 "io.pydeploy.cache.uncompressed-size": "123"}}, ...],
     "annotations": {"io.pydeploy.cache.format": "1", "io.pydeploy.cache.kind": "venv",
                     "io.pydeploy.cache.key": <64 hex>, "io.pydeploy.cache.recipe": ...,
                     "io.pydeploy.cache.document": <JSON: what the kind needs besides>,
                     "io.pydeploy.version": ...}}

The layers are the image's own layer blobs, so the registry keeps them as long as the
record, and a push to the same repository finds them there. A record is used only when
all of it is this build's: format, kind, key and recipe; anything else reads as a miss.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydeploy import __version__
from pydeploy.cachekeys import (
    BUILD_COMMANDS_RECIPE,
    DEPENDENCY_LAYERS_RECIPE,
    RECIPE_VERSION,
    REGISTRY_CACHE_FORMAT,
    REGISTRY_CACHE_TAG_PREFIX,
    SETUID_RECIPE,
    SHARED_LIBS_RECIPE,
    SYSTEM_LAYER_RECIPE,
    UV_VERSION,
)
from pydeploy.oci.blobs import sha256_digest
from pydeploy.oci.config import (
    EMPTY_JSON,
    MEDIA_TYPE_EMPTY,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_MANIFEST,
    canonical_json,
)
from pydeploy.oci.layer import Layer

ARTIFACT_TYPE = "application/vnd.pydeploy.cache.v1+json"
_PREFIX = "io.pydeploy.cache."
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

# The kinds, each with the recipe its layers are made by: a record of another recipe
# (an older pydeploy's) is a miss, never a layer made another way.
VENV = "venv"  # the dependency layers of a dependency key, and the install's pins
SYSTEM = "system"  # the runtime system-packages layer
BUILD = "build"  # what the build commands wrote
# The shared-library check's answer for the dependency layers it names (and the runtime
# image's packages and LD_LIBRARY_PATH in its key): with it and the `venv` record, the
# engine path needs no venv volume at all.
LIBS = "libs"
# The base image's layers as pydeploy gzipped them (digests its pushes gave them) and the
# layer that drops its setuid bits, by the base's image ID: a push to where they are
# already needs neither a `docker save` of the base nor its gzip.
BASE = "base"
RECIPES = {
    BASE: f"base-gzip-v1+{SETUID_RECIPE}",
    VENV: f"{RECIPE_VERSION}+uv{UV_VERSION}+{DEPENDENCY_LAYERS_RECIPE}",
    SYSTEM: SYSTEM_LAYER_RECIPE,
    BUILD: BUILD_COMMANDS_RECIPE,
    LIBS: SHARED_LIBS_RECIPE,
}


@dataclass(frozen=True)
class Record:
    kind: str
    key: str
    layers: tuple[Layer, ...]  # gzipped: digest != diff_id
    document: dict[str, Any]  # what the kind keeps besides its layers (JSON)


def tag(kind: str, key: str) -> str:
    """The record's tag: `pydeploy-cache-venv-<64 hex>` (84 characters, under 128)."""
    return f"{REGISTRY_CACHE_TAG_PREFIX}{kind}-{key}"


def manifest(record: Record) -> bytes:
    """The record as the OCI artifact manifest above (canonical JSON: the same record is
    the same bytes, so writing it again changes nothing)."""
    if any(not layer.compressed for layer in record.layers):
        raise ValueError("a cache record names gzipped layers only")
    document = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": empty_descriptor(),
        "layers": [
            {
                "mediaType": MEDIA_TYPE_LAYER_GZIP,
                "digest": layer.digest,
                "size": layer.size,
                "annotations": {
                    f"{_PREFIX}role": layer.role,
                    f"{_PREFIX}diff-id": layer.diff_id,
                    f"{_PREFIX}uncompressed-size": str(layer.uncompressed_size),
                },
            }
            for layer in record.layers
        ],
        "annotations": {
            f"{_PREFIX}format": REGISTRY_CACHE_FORMAT,
            f"{_PREFIX}kind": record.kind,
            f"{_PREFIX}key": record.key,
            f"{_PREFIX}recipe": RECIPES[record.kind],
            f"{_PREFIX}document": json.dumps(record.document, sort_keys=True),
            "io.pydeploy.version": __version__,
        },
    }
    return canonical_json(document)


def empty_descriptor() -> dict[str, Any]:
    return {"mediaType": MEDIA_TYPE_EMPTY, "digest": sha256_digest(EMPTY_JSON), "size": 2}


def parse(data: bytes, kind: str, key: str) -> Record | str:
    """The record `data` holds for (`kind`, `key`), or why it is not one (a foreign tag,
    another recipe, a damaged document): the caller builds without it."""
    try:
        document = json.loads(data)
    except ValueError:
        return "not JSON"
    if not isinstance(document, dict) or document.get("artifactType") != ARTIFACT_TYPE:
        return "not a pydeploy cache record"
    extra = _document(document.get("annotations"), kind, key)
    if isinstance(extra, str):
        return extra
    layers = _layers(document.get("layers"))
    if isinstance(layers, str):
        return layers
    return Record(kind, key, layers, extra)


def _document(notes: Any, kind: str, key: str) -> dict[str, Any] | str:
    """The record's document, once its annotations say it is this build's record."""
    if not isinstance(notes, dict):
        return "no annotations"
    wanted = {
        "format": REGISTRY_CACHE_FORMAT, "kind": kind, "key": key, "recipe": RECIPES[kind],
    }  # fmt: skip
    for name, value in wanted.items():
        found = notes.get(f"{_PREFIX}{name}")
        if found != value:
            return f"its {name} is {found!r}, this build's {value!r}"
    try:
        extra = json.loads(str(notes.get(f"{_PREFIX}document", "")))
    except ValueError:
        return "its document is not JSON"
    return extra if isinstance(extra, dict) else "its document is not an object"


def _layers(items: Any) -> tuple[Layer, ...] | str:
    if not isinstance(items, list) or not items:
        return "it names no layers"
    layers = []
    for item in items:
        notes = item.get("annotations") if isinstance(item, dict) else None
        if not isinstance(notes, dict) or item.get("mediaType") != MEDIA_TYPE_LAYER_GZIP:
            return "a layer is not a gzipped tar with pydeploy's annotations"
        size, raw_size = item.get("size"), notes.get(f"{_PREFIX}uncompressed-size")
        digest, diff_id = item.get("digest"), notes.get(f"{_PREFIX}diff-id")
        role = notes.get(f"{_PREFIX}role")
        if not (
            _is_digest(digest) and _is_digest(diff_id) and digest != diff_id
            and isinstance(size, int) and size > 0 and isinstance(raw_size, str)
            and raw_size.isdigit() and isinstance(role, str) and role
        ):  # fmt: skip
            return "a layer's digest, diff ID, sizes or role are missing or malformed"
        layers.append(Layer(role, str(diff_id), str(digest), size, int(raw_size)))
    return tuple(layers)


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("sha256:") and bool(_HEX64.match(value[7:]))
