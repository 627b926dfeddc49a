"""The base's /etc/passwd and /etc/group are read from the engine once per base image ID
(a container each time otherwise), then from the host cache."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from pydeploy import build
from pydeploy.engine.client import Engine
from pydeploy.oci.blobs import BlobStore

PASSWD, GROUP = b"root:x:0:0::/root:/bin/sh\n", b"root:x:0:\n"


class Reader:
    """Answers read_files with the base's files, counting the containers it would start."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    def read_files(self, image: str, paths: list[str]) -> list[bytes]:
        self.reads.append(image)
        files = {"/etc/passwd": PASSWD, "/etc/group": GROUP}
        return [files[path] for path in paths]


def test_accounts_are_read_once_per_base_image(tmp_path: Path) -> None:
    store, reader = BlobStore(tmp_path), Reader()
    engine = cast("Engine", reader)
    first = "sha256:" + "a" * 64
    assert build._base_accounts(engine, store, "base:1", first) == (PASSWD, GROUP)
    assert build._base_accounts(engine, store, "base:1", first) == (PASSWD, GROUP)
    assert reader.reads == ["base:1"]
    # Another image under the same name (the tag moved): read again.
    assert build._base_accounts(engine, store, "base:1", "sha256:" + "b" * 64) == (PASSWD, GROUP)
    assert reader.reads == ["base:1", "base:1"]


def test_a_damaged_entry_is_read_again(tmp_path: Path) -> None:
    store, reader = BlobStore(tmp_path), Reader()
    image = "sha256:" + "c" * 64
    build._base_accounts(cast("Engine", reader), store, "base:1", image)
    for path in (tmp_path / "index" / "base-accounts").glob("*.json"):
        path.write_text('["only one"]')
    assert build._base_accounts(cast("Engine", reader), store, "base:1", image) == (PASSWD, GROUP)
    assert len(reader.reads) == 2
