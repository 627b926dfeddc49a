"""Images: a base image imported from the engine, and a finished image (config, manifest
and layers, all in the blob store) assembled from a base and pydeploy's layers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydeploy.oci.blobs import BlobStore, sha256_digest
from pydeploy.oci.config import ImageSettings, build_config, build_manifest
from pydeploy.oci.layer import Layer, gzipped


@dataclass(frozen=True)
class BaseImage:
    """A base image read from the engine: its raw config and stored layers, or None for
    the layers when the build's outputs need no base blobs (the engine has them)."""

    config_bytes: bytes
    layers: tuple[Layer, ...] | None

    @property
    def config(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.config_bytes)
        return document

    @property
    def image_id(self) -> str:
        return sha256_digest(self.config_bytes)

    @property
    def diff_ids(self) -> list[str]:
        diff_ids: list[str] = self.config["rootfs"]["diff_ids"]
        return diff_ids

    @property
    def history(self) -> list[dict[str, Any]]:
        history: list[dict[str, Any]] = self.config.get("history") or []
        return history


@dataclass(frozen=True)
class Image:
    """A finished image: config and manifest bytes (both also in `store`) and every
    layer, base layers first. Built on a base read without its blobs, it has no
    manifest and `layers` holds only pydeploy's own: it can only be loaded into the
    engine that has the base (`diff_ids` names every layer)."""

    store: BlobStore
    config: bytes
    manifest: bytes | None
    layers: tuple[Layer, ...]
    base_layer_count: int = 0
    image_id: str = field(init=False)
    manifest_digest: str | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_id", sha256_digest(self.config))
        digest = sha256_digest(self.manifest) if self.manifest is not None else None
        object.__setattr__(self, "manifest_digest", digest)

    @property
    def diff_ids(self) -> list[str]:
        diff_ids: list[str] = json.loads(self.config)["rootfs"]["diff_ids"]
        return diff_ids

    @property
    def base_diff_ids(self) -> list[str]:
        return self.diff_ids[: len(self.diff_ids) - len(self.own_layers)]

    def registry_manifest(self) -> bytes:
        """The manifest, which every output but the engine's needs."""
        if self.manifest is None:
            raise AssertionError("an image built without its base's blobs has no manifest")
        return self.manifest

    def registry_manifest_digest(self) -> str:
        return sha256_digest(self.registry_manifest())

    @property
    def config_digest(self) -> str:
        return self.image_id

    @property
    def own_layers(self) -> tuple[Layer, ...]:
        return self.layers[self.base_layer_count :]

    @classmethod
    def from_config(
        cls, store: BlobStore, config: bytes, layers: Sequence[Layer], *, base_layer_count: int = 0
    ) -> Image:
        """Store `config`, derive the manifest, and tie them together."""
        diff_ids = json.loads(config).get("rootfs", {}).get("diff_ids", [])
        if diff_ids != [layer.diff_id for layer in layers]:
            raise ValueError("the config's rootfs.diff_ids do not match the given layers")
        store.put_bytes(config)
        manifest = build_manifest(sha256_digest(config), len(config), layers)
        store.put_bytes(manifest)
        return cls(store, config, manifest, tuple(layers), base_layer_count)


def assemble_image(
    store: BlobStore,
    base: BaseImage,
    layers: Sequence[Layer],
    settings: ImageSettings,
    *,
    manifest: bool = True,
) -> Image:
    """`base` plus `layers` with the given settings. With `manifest` (and the base's
    blobs read) every layer is gzipped and the manifest made; without, the image holds
    what `docker load` and a docker-archive need: the config and plain tars."""
    config = build_config(base.config, base.diff_ids, base.history, layers, settings)
    if base.layers is None or not manifest:
        store.put_bytes(config)
        below = base.layers or ()
        return Image(store, config, None, (*below, *layers), len(below))
    return Image.from_config(
        store,
        config,
        [gzipped(store, layer) for layer in (*base.layers, *layers)],
        base_layer_count=len(base.layers),
    )
