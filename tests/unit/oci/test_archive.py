"""The docker-archive format: the `docker save` reader (base import) and the writer."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
from tests.unit.oci.samples import (
    base_layer_tars,
    docker_save_tar,
    make_tar,
    synthetic_image,
    venv_archive,
)

from pydeploy.errors import BaseImageError
from pydeploy.oci.archive import cached_base, import_docker_save, write_docker_archive
from pydeploy.oci.blobs import BlobStore, digest_hex, sha256_digest
from pydeploy.oci.entries import entries_from_tar


def test_docker_archive_shape(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    image = synthetic_image(store)
    dest = tmp_path / "image.tar"
    omitted = image.layers[0].diff_id
    write_docker_archive(dest, image, ["demo:1.0"], omit_diff_ids={omitted})
    with tarfile.open(dest) as archive:
        names = archive.getnames()
        manifest_file = archive.extractfile("manifest.json")
        assert manifest_file is not None
        [manifest] = json.load(manifest_file)
        config_file = archive.extractfile(manifest["Config"])
        assert config_file is not None
        assert config_file.read() == image.config
        layer_paths = [f"{la.diff_id.removeprefix('sha256:')}/layer.tar" for la in image.layers]
        assert manifest == {
            "Config": image.image_id.removeprefix("sha256:") + ".json",
            "RepoTags": ["demo:1.0"],
            "Layers": layer_paths,
        }
        assert layer_paths[0] not in names
        included = archive.extractfile(layer_paths[1])
        assert included is not None
        assert sha256_digest(included.read()) == image.layers[1].diff_id


def test_docker_archive_to_a_stream_and_from_gzip_only(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    image = synthetic_image(store)
    for layer in image.layers:
        store.path(layer.diff_id).unlink()  # only the gzip is left: decompressed on the fly
    buffer = io.BytesIO()
    write_docker_archive(buffer, image, [])
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as archive:
        for layer in image.layers:
            extracted = archive.extractfile(f"{layer.diff_id.removeprefix('sha256:')}/layer.tar")
            assert extracted is not None
            assert sha256_digest(extracted.read()) == layer.diff_id


@pytest.mark.parametrize(("oci_style", "repeat"), [(False, False), (False, True), (True, False)])
def test_import_docker_save(tmp_path: Path, oci_style: bool, repeat: bool) -> None:
    tars = base_layer_tars(tmp_path)
    saved = docker_save_tar(tars, oci_style=oci_style, repeat=repeat)
    store = BlobStore(tmp_path / "store")
    base = import_docker_save(io.BytesIO(saved), store)
    expected = [sha256_digest(t) for t in tars] + ([sha256_digest(tars[0])] if repeat else [])
    assert base.diff_ids == expected
    assert base.layers is not None
    for layer in base.layers:
        assert (
            gzip.decompress(store.path(layer.digest).read_bytes())
            == store.path(layer.diff_id).read_bytes()
        )
        assert layer.size == store.size(layer.digest)
    assert base.config["config"]["Env"] == ["PATH=/usr/bin"]
    assert cached_base(store, base.image_id) == base
    assert cached_base(BlobStore(tmp_path / "other"), base.image_id) is None


def test_cached_base_reads_index_entries_written_without_a_role(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    base = import_docker_save(io.BytesIO(docker_save_tar(base_layer_tars(tmp_path))), store)
    key = digest_hex(base.image_id)
    assert base.layers is not None
    assert store.read_index("docker-save", key) == {"layers": [la.to_doc() for la in base.layers]}
    # The shape earlier versions wrote: a warm cache must stay warm.
    old = [{k: v for k, v in la.to_doc().items() if k != "role"} for la in base.layers]
    store.write_index("docker-save", key, {"layers": old})
    assert cached_base(store, base.image_id) == base
    store.write_index("docker-save", key, {"layers": [{**old[0], "size": "many"}]})
    assert cached_base(store, base.image_id) is None


def test_import_docker_save_accepts_gzipped_layers(tmp_path: Path) -> None:
    tars = base_layer_tars(tmp_path)[:1]
    saved = docker_save_tar([gzip.compress(tars[0])])
    # rewrite the config so its diff_id is that of the uncompressed tar
    with tarfile.open(fileobj=io.BytesIO(saved)) as archive:
        files = {m.name: archive.extractfile(m) for m in archive.getmembers()}
        contents = {k: f.read() for k, f in files.items() if f is not None}
    manifest = json.loads(contents["manifest.json"])[0]
    config = json.loads(contents[manifest["Config"]])
    config["rootfs"]["diff_ids"] = [sha256_digest(tars[0])]
    contents[manifest["Config"]] = json.dumps(config).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    base = import_docker_save(buffer, BlobStore(tmp_path / "store"))
    assert base.diff_ids == [sha256_digest(tars[0])]


def test_import_docker_save_detects_damage(tmp_path: Path) -> None:
    tars = base_layer_tars(tmp_path)
    saved = docker_save_tar(tars)
    damaged = saved.replace(tars[0][600:700], b"\0" * 100, 1)
    with pytest.raises(BaseImageError, match="damaged"):
        import_docker_save(io.BytesIO(damaged), BlobStore(tmp_path / "store"))
    with pytest.raises(BaseImageError, match="not in a format"):
        import_docker_save(io.BytesIO(make_tar([]).getvalue()), BlobStore(tmp_path / "s2"))


def test_chunk_iterators_are_accepted_as_streams(tmp_path: Path) -> None:
    """The docker SDK hands out generators of chunks (`image.save()`, `get_archive()`)."""
    saved = docker_save_tar(base_layer_tars(tmp_path))
    chunks = (saved[i : i + 1000] for i in range(0, len(saved), 1000))
    base = import_docker_save(chunks, BlobStore(tmp_path / "store"))
    assert base.layers is not None
    assert len(base.layers) == 2
    archive = venv_archive().getvalue()
    entries = entries_from_tar(
        iter([archive[:7], b"", archive[7:]]),
        strip_prefix="venv",
        dest_prefix="opt/venv",
        spool_dir=tmp_path / "spool",
    )
    assert len(entries) == 6
