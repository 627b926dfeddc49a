"""What the output writers share: no start without every blob, one error for a
destination that cannot be written."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydeploy.errors import PublishError
from pydeploy.oci.image import Image


def unwritable(dest: Path, exc: OSError) -> PublishError:
    reason = exc.strerror or str(exc)
    return PublishError(
        f"cannot write the output {dest}: {reason}.",
        hint="Choose a path in a writable directory (or fix its permissions) and run again.",
    )


def require_blobs(image: Image, digests: Iterable[str]) -> None:
    missing = [d for d in digests if not image.store.has(d)]
    if missing:
        raise PublishError(
            f"the build cache at {image.store.root} lacks blob {missing[0]}.",
            hint="It was removed after the build; run `pydeploy build` again.",
        )
