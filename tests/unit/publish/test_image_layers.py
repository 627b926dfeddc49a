"""The load's layer lists: which leading layers the engine holds, and the host cache of
image -> diff IDs that spares a load inspecting images it has seen before."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import IO

from tests.unit.oci.samples import synthetic_image

from pydeploy.oci.blobs import BlobStore
from pydeploy.publish import daemon
from pydeploy.publish.daemon import ImageLayers, leading_chain

A, B, C, D = ("sha256:" + ch * 64 for ch in "abcd")


class CountingEngine:
    """Local images by ID; counts the inspections a load makes and records the load."""

    def __init__(self, images: dict[str, tuple[str, ...]], *, podman: bool = False) -> None:
        self.images = images
        self.is_podman = podman
        self.sent: bytes = b""
        self.inspected: list[str] = []
        self.tagged: list[tuple[str, str]] = []
        self.loads = 0
        self.listed = 0

    def local_image_ids(self) -> list[str]:
        self.listed += 1
        return list(self.images)

    def diff_ids(self, image_id: str) -> tuple[str, ...] | None:
        self.inspected.append(image_id)
        return self.images.get(image_id)

    def load_image(self, data: IO[bytes]) -> object:
        self.sent = data.read()
        self.loads += 1
        return []

    def tag_image(self, image_id: str, reference: str) -> None:
        self.tagged.append((image_id, reference))

    def image_id(self, name: str) -> str | None:
        return name if name in self.images else None


def test_leading_chain_counts_only_a_common_prefix() -> None:
    assert leading_chain([(A, B, C), (A, D)], [A, B, D]) == 2
    assert leading_chain([(B, A)], [A, B]) == 0  # the same layers in another order
    assert leading_chain([], [A]) == 0
    assert leading_chain([(A, B, C, D)], [A, B]) == 2  # a longer image holds the chain


def test_leading_chain_stops_reading_once_every_layer_is_held() -> None:
    read: list[int] = []

    def chains() -> object:
        for n, chain in enumerate([(A, B), (C,), (D,)]):
            read.append(n)
            yield chain

    assert leading_chain(chains(), [A, B]) == 2  # type: ignore[arg-type]
    assert read == [0]


def test_layer_lists_round_trip_and_refuse_what_is_not_a_digest(tmp_path: Path) -> None:
    known = ImageLayers(BlobStore(tmp_path))
    assert known.get(A) is None
    known.put(A, [B, C])
    assert known.get(A) == (B, C)
    assert ImageLayers(BlobStore(tmp_path)).get(A) == (B, C)  # on disk, for the next build
    known.put("not-a-digest", [B])  # a bare ID of another engine: not remembered
    assert known.get("not-a-digest") is None


def test_a_damaged_entry_is_a_miss(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    store.write_index("image-layers", "a" * 64, {"not": "a list"})
    assert ImageLayers(store).get(A) is None


def test_a_second_load_inspects_only_images_it_has_not_seen(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    image = synthetic_image(store)
    engine = CountingEngine({A: (B,), C: (D,)})
    known = ImageLayers(store)
    assert daemon.load(engine, image, (), tmp_path / "scratch", known) is True
    assert sorted(engine.inspected) == [A, C]
    assert engine.loads == 1
    # What was sent is remembered without asking.
    assert known.get(image.image_id) == tuple(la.diff_id for la in image.layers)
    # The next build (the image was removed meanwhile, another appeared): only D is asked.
    engine.images[D] = (A,)
    engine.inspected.clear()
    assert daemon.load(engine, image, (), tmp_path / "scratch", known) is True
    assert engine.inspected == [D]
    assert engine.loads == 2


def test_an_image_the_engine_has_is_only_tagged(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    image = synthetic_image(store)
    engine = CountingEngine({image.image_id: ()})
    assert (
        daemon.load(engine, image, ("demo:1",), tmp_path / "scratch", ImageLayers(store)) is False
    )
    assert (engine.loads, engine.inspected) == (0, [])
    assert engine.tagged == [(image.image_id, "demo:1")]


def test_an_image_the_build_holds_is_tagged_without_listing_the_engine_s_images(
    tmp_path: Path,
) -> None:
    store = BlobStore(tmp_path / "store")
    image = synthetic_image(store)
    engine = CountingEngine({image.image_id: ()})
    held = frozenset({image.image_id})
    scratch = tmp_path / "scratch"
    assert daemon.load(engine, image, ("demo:1",), scratch, ImageLayers(store), held=held) is False
    assert (engine.listed, engine.loads, engine.tagged) == (0, 0, [(image.image_id, "demo:1")])


def _archived_layers(archive: bytes) -> tuple[int, int]:
    """(layers listed in the archive's manifest.json, layer files it carries)."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = tar.getnames()
        handle = tar.extractfile("manifest.json")
        assert handle is not None
        listed = json.loads(handle.read())[0]["Layers"]
    return len(listed), sum(1 for name in listed if name in names)


def test_podman_gets_every_layer_even_those_it_holds(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    image = synthetic_image(store)
    chain = tuple(la.diff_id for la in image.layers)
    assert len(chain) > 1
    for podman, carried in ((False, 1), (True, len(chain))):
        # An image of the same chain but for its last layer is in the engine.
        engine = CountingEngine({A: chain[:-1]}, podman=podman)
        daemon.load(engine, image, ("demo:1",), tmp_path / "scratch", ImageLayers(store))
        assert _archived_layers(engine.sent) == (len(chain), carried)
