"""The host's own uv binary, offered to the builder instead of a download.

The builder keeps the pinned uv in its cache volume; on a fresh machine (every CI runner)
installing it there was the cold build's largest cost (a venv plus `pip install uv`,
about 12 s through a proxy). pydeploy depends on the same pinned uv, so where the host can
lend its binary (Linux, the base image's machine) the install container receives it and
the builder script copies it into the volume after checking that it runs and is the
pinned version; anywhere else (macOS, another architecture, a musl base) the builder
installs uv itself, as before.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from pathlib import Path

from pydeploy.base.platforms import architecture_of
from pydeploy.cachekeys import UV_VERSION

SEED_DIR = "/run/pydeploy/uv-seed"
SEED = f"{SEED_DIR}/uv"
# `uname -m` -> the OCI architecture an image config names.


def host_binary(base_architecture: str) -> Path | None:
    """The host's uv when a builder of an image of `base_architecture` can run it."""
    if sys.platform != "linux":
        return None
    machine = platform.machine()
    if architecture_of(machine) != (base_architecture or "amd64"):
        return None
    try:
        if importlib.metadata.version("uv") != UV_VERSION:
            return None
        from uv import find_uv_bin  # noqa: PLC0415 - only builds that install need it

        path = Path(find_uv_bin())
    except (ImportError, importlib.metadata.PackageNotFoundError, FileNotFoundError):
        return None
    return path if path.is_file() else None
