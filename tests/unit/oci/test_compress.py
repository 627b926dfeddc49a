"""The layers' gzip: the stdlib's GzipFile with a fixed header, whose bytes must not depend
on how the input is split into writes (build_layer feeds it tar headers and 1 MiB chunks,
compress_stored whole 1 MiB reads)."""

from __future__ import annotations

import gzip
import io
import random
from pathlib import Path

from tests.unit.oci.samples import EPOCH, sample_entries

from pydeploy.oci.blobs import BlobStore
from pydeploy.oci.compress import GZIP_MAGIC, gzip_writer
from pydeploy.oci.layer import build_layer, compress_stored


def compressed(pieces: list[bytes]) -> bytes:
    out = io.BytesIO()
    with gzip_writer(out) as writer:
        for piece in pieces:
            writer.write(piece)
    assert not out.closed  # the sink (a blob writer) is closed by its owner
    return out.getvalue()


def test_empty_input_is_pinned_byte_for_byte() -> None:
    # Header: magic, deflate, no flags (no name), mtime 0, XFL 0, OS 255 (unknown);
    # then the empty deflate block and a zero CRC-32 and size. No zlib-version leeway here.
    header = GZIP_MAGIC + b"\x08\x00" + b"\x00" * 4 + b"\x00\xff"
    assert compressed([]) == header + b"\x03\x00" + b"\x00" * 8


def test_bytes_do_not_depend_on_how_the_input_is_split() -> None:
    rnd = random.Random(7)  # noqa: S311 - reproducible test data, not secrets
    data = b"".join(rnd.choice([b"import os\n", rnd.randbytes(300), b"\0" * 4096])
                    for _ in range(2000))  # fmt: skip
    whole = compressed([data])
    pieces, pos = [], 0
    while pos < len(data):
        size = rnd.choice([1, 7, 512, 65535, 1 << 20])
        pieces.append(data[pos : pos + size])
        pos += size
    assert compressed(pieces) == whole
    assert gzip.decompress(whole) == data


def test_a_stored_tar_compresses_to_the_layer_s_own_gzip(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    layer = build_layer(sample_entries(), store=store, epoch=EPOCH, role="app")
    again = BlobStore(tmp_path / "again")
    again.put_file(store.path(layer.diff_id))
    assert compress_stored(again, layer.diff_id, role="app") == layer
