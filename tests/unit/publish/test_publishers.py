"""The outputs and their publishers: parsing `--output`, the one mapping from an output to
its Publisher, and what each publisher sends where (a fake engine and a fake push; the
real engine and registry are the integration tests' job)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import IO, Any

import pytest
from tests.unit.oci.samples import synthetic_image

from pydeploy.build import BuildOptions
from pydeploy.errors import ConfigError, PublishError
from pydeploy.oci.blobs import BlobStore, digest_hex
from pydeploy.oci.image import Image
from pydeploy.publish import registry
from pydeploy.publish.daemon import DaemonPublisher, ImageLayers
from pydeploy.publish.docker_archive import DockerArchivePublisher
from pydeploy.publish.oci_layout import OciLayoutPublisher
from pydeploy.publish.outputs import Destinations, Output, parse_output, publisher_for
from pydeploy.publish.push import RegistryPublisher


class FakeEngine:
    """Holds the images in `images` (ID -> layers); a load records the archive it was
    sent, and the loaded image then has the ID `loads_as`."""

    def __init__(self, images: dict[str, tuple[str, ...]], loads_as: str) -> None:
        self.images, self.loads_as = images, loads_as
        self.names: list[str] = []
        self.tags: list[str] = []
        self.asked: list[str] = []
        self.is_podman = False

    def local_image_ids(self) -> list[str]:
        return list(self.images)

    def diff_ids(self, image_id: str) -> tuple[str, ...] | None:
        self.asked.append(image_id)
        return self.images.get(image_id)

    def tag_image(self, image_id: str, reference: str) -> None:
        assert image_id in self.images
        self.tags.append(reference)

    def load_image(self, data: IO[bytes]) -> object:
        with tarfile.open(fileobj=data) as archive:
            self.names = archive.getnames()
            manifest = archive.extractfile("manifest.json")
            assert manifest is not None
            self.tags = json.load(manifest)[0]["RepoTags"]
        return []

    def image_id(self, name: str) -> str | None:
        return self.loads_as if name in self.tags else None


def ignore(line: str) -> None:
    """A report for publishers that have nothing to say within their step."""


@pytest.fixture
def image(tmp_path: Path) -> Image:
    return synthetic_image(BlobStore(tmp_path / "store"))


def layer_file(diff_id: str) -> str:
    return f"{digest_hex(diff_id)}/layer.tar"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("docker", Output("docker")),
        ("registry", Output("registry")),
        ("oci:out/layout", Output("oci", Path("out/layout"))),
        ("docker-archive:/tmp/i.tar", Output("docker-archive", Path("/tmp/i.tar"))),
    ],
)
def test_parse_output(spec: str, expected: Output) -> None:
    assert parse_output(spec) == expected
    assert str(parse_output(spec)) == spec


@pytest.mark.parametrize("spec", ["oci", "docker-archive:", "docker:x", "tarball:x", ""])
def test_unknown_outputs_are_refused(spec: str) -> None:
    with pytest.raises(ConfigError, match="not a known output"):
        parse_output(spec)


def test_each_output_maps_to_its_publisher(tmp_path: Path) -> None:
    engine = FakeEngine({}, "")
    known = ImageLayers(BlobStore(tmp_path / "cache"))
    where = Destinations(engine, tmp_path / "scratch", tmp_path / "cache", known)
    chosen = {spec: publisher_for(parse_output(spec), where) for spec in
              ("docker", "registry", "oci:layout", "docker-archive:image.tar")}  # fmt: skip
    assert chosen == {
        "docker": DaemonPublisher(engine, tmp_path / "scratch", known),
        "registry": RegistryPublisher(tmp_path / "cache"),
        "oci:layout": OciLayoutPublisher(Path("layout")),
        "docker-archive:image.tar": DockerArchivePublisher(Path("image.tar")),
    }
    assert [p.step for p in chosen.values()] == ["load", "push", "write", "write"]


OTHER = "sha256:" + "1" * 64


def test_daemon_sends_only_the_layers_the_engine_lacks(image: Image, tmp_path: Path) -> None:
    held, missing = image.layers[0].diff_id, image.layers[1].diff_id
    engine = FakeEngine({OTHER: (held, "sha256:" + "2" * 64)}, image.image_id)
    publisher = DaemonPublisher(engine, tmp_path / "scratch", ImageLayers(BlobStore(tmp_path)))
    done = publisher.publish(image, ("demo:1", "demo:latest"), ignore)
    assert engine.asked == [OTHER]
    assert done.detail == "into the engine as demo:1, demo:latest"
    assert done.pushed == {}
    assert engine.tags == ["demo:1", "demo:latest"]
    assert layer_file(missing) in engine.names
    assert layer_file(held) not in engine.names
    assert list((tmp_path / "scratch").iterdir()) == []  # the spooled archive is gone


def test_daemon_refuses_an_image_the_engine_loaded_differently(
    image: Image, tmp_path: Path
) -> None:
    engine = FakeEngine({}, "sha256:" + "0" * 64)
    with pytest.raises(PublishError, match="not as"):
        DaemonPublisher(engine, tmp_path, ImageLayers(BlobStore(tmp_path))).publish(
            image, ("demo:1",), ignore
        )


def test_daemon_only_tags_an_image_the_engine_has(image: Image, tmp_path: Path) -> None:
    """The app check ran in the final image: nothing is sent again."""
    engine = FakeEngine({image.image_id: ()}, image.image_id)
    publisher = DaemonPublisher(engine, tmp_path / "scratch", ImageLayers(BlobStore(tmp_path)))
    done = publisher.publish(image, ("demo:1", "demo:latest"), ignore)
    assert engine.names == []  # no archive
    assert engine.tags == ["demo:1", "demo:latest"]
    assert done.detail == "into the engine as demo:1, demo:latest"


def test_registry_pushes_every_tag_and_reports_each(
    image: Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, Path]] = []

    def fake_push(pushed: Image, ref: str, **kwargs: Any) -> str:
        calls.append((ref, kwargs["locations"].path))
        for kind in ("exists", "uploading", "uploaded", "mounted", "uploading", "uploaded"):
            kwargs["progress"](registry.PushEvent(kind, "sha256:x", 1))
        return pushed.registry_manifest_digest()

    monkeypatch.setattr(registry, "push", fake_push)
    lines: list[str] = []
    done = RegistryPublisher(tmp_path).publish(image, ("r.io/a:1", "r.io/a:2"), lines.append)
    digest = image.manifest_digest
    assert done.pushed == {"r.io/a:1": digest, "r.io/a:2": digest}
    assert done.detail == "r.io/a:1, r.io/a:2"
    assert calls == [(ref, tmp_path / registry.BlobLocations.FILE) for ref in done.pushed]
    assert lines[0] == (
        f"pushed r.io/a:1@{digest} (2 blobs uploaded, 1 mounted from other repositories, "
        f"1 already there)"
    )
    assert len(lines) == 2


@pytest.mark.parametrize(
    ("tags", "ref_name"), [(("r.io/demo:1.0", "r.io/demo:x"), "1.0"), (("r.io/demo",), "latest")]
)
def test_oci_layout_is_named_by_the_first_tag(
    image: Image, tmp_path: Path, tags: tuple[str, ...], ref_name: str
) -> None:
    done = OciLayoutPublisher(tmp_path / "layout").publish(image, tags, ignore)
    assert done.detail == f"oci:{tmp_path / 'layout'}"
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == ref_name


def test_docker_archive_holds_every_layer_and_tag(image: Image, tmp_path: Path) -> None:
    dest = tmp_path / "image.tar"
    done = DockerArchivePublisher(dest).publish(image, ("demo:1",), ignore)
    assert done.detail == f"docker-archive:{dest}"
    with tarfile.open(dest) as archive:
        names = archive.getnames()
        manifest = archive.extractfile("manifest.json")
        assert manifest is not None
        assert json.load(manifest)[0]["RepoTags"] == ["demo:1"]
    assert all(layer_file(la.diff_id) in names for la in image.layers)


@pytest.mark.parametrize(
    ("specs", "explicit", "needed"),
    [
        (["docker"], None, False),  # the engine holds the base: its blobs are never read
        (["docker", "registry"], None, True),
        (["oci:out"], None, True),
        (["docker-archive:img.tar"], None, True),
        (["docker"], True, True),  # `pydeploy manifest`: a digest, so a manifest
    ],
)
def test_only_outputs_beyond_the_engine_read_the_base_s_blobs(
    specs: list[str], explicit: bool | None, needed: bool
) -> None:
    outputs = tuple(parse_output(spec) for spec in specs)
    assert BuildOptions(outputs=outputs, base_blobs=explicit).needs_base_blobs() is needed
