"""What both output writers guarantee: nothing left behind, and a clear error for an
unwritable destination."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.unit.oci.samples import synthetic_image

from pydeploy.errors import PublishError
from pydeploy.oci.archive import write_docker_archive
from pydeploy.oci.blobs import BlobStore
from pydeploy.oci.layout import write_oci_layout


def test_writers_leave_nothing_when_they_fail_midway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(tmp_path / "store")
    image = synthetic_image(store)
    out = tmp_path / "out"
    out.mkdir()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("shutil.copyfileobj", broken)
    monkeypatch.setattr("shutil.copyfile", broken)
    monkeypatch.setattr("pydeploy.oci.archive.open_uncompressed", broken)
    with pytest.raises(PublishError, match="No space left on device"):
        write_docker_archive(out / "image.tar", image, ["demo:1"])
    with pytest.raises(PublishError, match="No space left on device"):
        write_oci_layout(out / "layout", image, "demo")
    assert list(out.iterdir()) == []


def test_unwritable_destination_names_the_path(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    image = synthetic_image(store)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # A regular file where a directory is needed fails for root too (unlike chmod).
    writers: list[Callable[[], None]] = [
        lambda: write_docker_archive(blocker / "image.tar", image, []),
        lambda: write_oci_layout(blocker / "layout", image, "x"),
    ]
    for write in writers:
        with pytest.raises(PublishError) as caught:
            write()
        assert str(blocker) in caught.value.message
        assert "writable" in caught.value.message
