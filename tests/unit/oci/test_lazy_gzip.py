"""Layers stored as plain tars and gzipped only when an output needs a manifest: the
engine's `docker load` and a docker-archive take the tars, a registry push the gzip, which
must be the same bytes as a layer compressed when it was written."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

from tests.unit.oci.samples import EPOCH, base_layer_tars, docker_save_tar, sample_entries

from pydeploy.cachekeys import INDEX_GZIP
from pydeploy.oci.archive import cached_base, import_docker_save, write_docker_archive
from pydeploy.oci.blobs import BlobStore, digest_hex
from pydeploy.oci.config import (
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_LAYER_TAR,
    ImageSettings,
    rfc3339,
)
from pydeploy.oci.image import BaseImage, assemble_image
from pydeploy.oci.layer import Layer, build_layer, gzipped


def _blobs(store: BlobStore) -> set[str]:
    return {p.name for p in (store.root / "sha256").iterdir()}


def _settings() -> ImageSettings:
    return ImageSettings(
        user="10001", env={"PATH": "/usr/bin"}, entrypoint=["/bin/true"], cmd=None,
        workdir="/", exposed_ports=[], labels={}, stop_signal="SIGTERM",
        healthcheck=None, created=rfc3339(0),
    )  # fmt: skip


def test_an_uncompressed_layer_stores_its_tar_alone(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    plain = build_layer(sample_entries(), store=store, epoch=EPOCH, role="app", compress=False)
    assert plain.digest == plain.diff_id
    assert plain.size == plain.uncompressed_size
    assert not plain.compressed
    assert plain.media_type == MEDIA_TYPE_LAYER_TAR
    assert _blobs(store) == {digest_hex(plain.diff_id)}
    assert Layer.from_doc(plain.to_doc()) == plain  # the caches' records keep it plain


def test_a_late_gzip_is_the_bytes_of_one_made_with_the_tar(tmp_path: Path) -> None:
    eager = build_layer(sample_entries(), store=BlobStore(tmp_path / "a"), epoch=EPOCH, role="app")
    store = BlobStore(tmp_path / "b")
    plain = build_layer(sample_entries(), store=store, epoch=EPOCH, role="app", compress=False)
    late = gzipped(store, plain)
    assert late == eager  # same digest and size: services and builds push one blob
    assert late.media_type == MEDIA_TYPE_LAYER_GZIP
    assert store.has(late.digest)
    assert gzipped(store, late) is late


def test_the_gzip_is_made_once_per_diff_id(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    plain = build_layer(sample_entries(), store=store, epoch=EPOCH, role="app", compress=False)
    first = gzipped(store, plain)
    assert store.read_index(INDEX_GZIP, digest_hex(plain.diff_id))["digest"] == first.digest
    made = store.path(first.digest).stat().st_mtime_ns
    again = gzipped(store, dataclasses.replace(plain, role="other"))
    assert again.digest == first.digest
    assert again.role == "other"
    assert store.path(first.digest).stat().st_mtime_ns == made
    store.path(first.digest).unlink()  # pruned: made again, the same bytes
    assert gzipped(store, plain) == first
    assert store.has(first.digest)


def test_an_image_without_a_manifest_leaves_its_layers_plain(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    saved = docker_save_tar(base_layer_tars(tmp_path))
    base = import_docker_save(io.BytesIO(saved), store, compress=False)
    assert base.layers is not None
    assert not any(layer.compressed for layer in base.layers)
    own = build_layer(sample_entries(), store=store, epoch=EPOCH, role="app", compress=False)
    before = _blobs(store)
    image = assemble_image(store, base, [own], _settings(), manifest=False)
    assert image.manifest is None
    assert image.base_layer_count == len(base.layers)
    assert _blobs(store) - before == {digest_hex(image.image_id)}  # the config alone
    write_docker_archive(tmp_path / "image.tar", image, ["app:1"])  # what docker-archive needs

    # A later registry build of the same layers gzips them, base layers included.
    pushed = assemble_image(store, _cached(store, base), [own], _settings())
    assert pushed.image_id == image.image_id
    assert pushed.manifest is not None
    assert all(layer.compressed for layer in pushed.layers)
    eager_store = BlobStore(tmp_path / "eager")
    eager_base = import_docker_save(io.BytesIO(saved), eager_store)
    eager_own = build_layer(sample_entries(), store=eager_store, epoch=EPOCH, role="app")
    eager = assemble_image(eager_store, eager_base, [eager_own], _settings())
    assert pushed.manifest == eager.manifest  # identical manifest digest either way


def _cached(store: BlobStore, base: BaseImage) -> BaseImage:
    found = cached_base(store, base.image_id)
    assert found is not None
    assert found.layers == base.layers
    return found
