"""Atomic file writes: a temp file in the target's directory, renamed over the target.

A reader (or a concurrent build) sees the old file or the new one, never half of one, and an
interrupted write leaves at most a `.tmp-*` file, which `pydeploy prune` recognises as the
partial write of an interrupted build.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

# `cache/prune.py` classifies names with this prefix as partial writes.
TEMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def replacing(dest: Path, *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces `dest` when the block succeeds; when it raises, the
    temp file is deleted and `dest` is untouched. `mode` is applied before the rename
    (mkstemp creates 0600)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{dest.name}.", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        tmp.chmod(mode)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(dest: Path, data: bytes, *, mode: int = 0o644) -> None:
    with replacing(dest, mode=mode) as handle:
        handle.write(data)


def write_text(dest: Path, text: str, *, mode: int = 0o644) -> None:
    """Write `text` as UTF-8, byte for byte (no newline translation)."""
    write_bytes(dest, text.encode("utf-8"), mode=mode)
