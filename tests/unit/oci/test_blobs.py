"""The content-addressed blob store."""

from __future__ import annotations

from pathlib import Path

import pytest

from pydeploy.oci.blobs import BlobCorruptError, BlobStore, sha256_digest


def test_blob_writer_discards_interrupted_blobs(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)

    def interrupted_write() -> None:
        with store.writer() as sink:
            sink.write(b"half a blob")
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted_write()
    assert list((tmp_path / "sha256").iterdir()) == []
    with store.writer() as sink:
        sink.write(b"whole")
    assert store.has(sha256_digest(b"whole"))
    assert [p.name for p in (tmp_path / "sha256").iterdir()] == [
        sha256_digest(b"whole").removeprefix("sha256:")
    ]


def test_blob_store_verifies_on_request(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    blob = store.put_bytes(b"payload")
    source = tmp_path / "file"
    source.write_bytes(b"payload")
    assert store.put_file(source) == blob
    store.verify(blob.digest)
    store.path(blob.digest).write_bytes(b"tampered")
    with pytest.raises(BlobCorruptError):
        store.verify(blob.digest)
    with pytest.raises(BlobCorruptError), store.open(blob.digest, verify=True):
        pass
    with pytest.raises(ValueError, match="not a sha256 digest"):
        store.path("sha256:../../etc/passwd")
