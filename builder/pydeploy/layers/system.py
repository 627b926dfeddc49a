"""The runtime system-packages layer (`tool.pydeploy.runtime-packages`, e.g. libpq5).

apt runs in a throw-away container from the base image; the layer keeps only what that
changed, minus apt lists, logs and caches. Cached by (base image ID, package list), so
the same inputs reuse the same layer without running apt again.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydeploy.cache import records
from pydeploy.cache.remote import RegistryCache
from pydeploy.cachekeys import INDEX_SYSTEM_LAYER, SYSTEM_LAYER_RECIPE
from pydeploy.engine.client import Engine
from pydeploy.errors import BuildError
from pydeploy.oci.blobs import BlobStore
from pydeploy.oci.entries import FileEntry
from pydeploy.oci.layer import Layer, build_layer
from pydeploy.oci.streams import as_reader
from pydeploy.plan.planner import BuildPlan
from pydeploy.progress import Progress

LAYER_EPOCH = 1
# What apt and dpkg leave behind that an image never needs (dockle DKL-DI-0005/LI-0003),
# plus files whose bytes change with the clock (logs, ld.so's aux cache, backups).
_DROP = re.compile(
    r"^(var/lib/apt/lists/|var/cache/apt/|var/cache/debconf/.*-old$|var/log/|"
    r"var/cache/ldconfig/|var/lib/dpkg/.*-old$|tmp/|root/|run/|proc/|sys/|dev/|"
    r"etc/hostname$|etc/hosts$|etc/resolv\.conf$|etc/mtab$)"
)


def layer_key(base_id: str, packages: Iterable[str]) -> str:
    text = json.dumps([SYSTEM_LAYER_RECIPE, base_id, sorted(packages)])
    return hashlib.sha256(text.encode()).hexdigest()


def system_layer(  # noqa: PLR0913 - the build's engine, store, plan, clock; and the list
    engine: Engine,
    store: BlobStore,
    plan: BuildPlan,
    base_id: str,
    progress: Progress,
    *,
    packages: tuple[str, ...] | None = None,
    remote: RegistryCache | None = None,
) -> Layer:
    """The layer for `packages` (default: the plan's `runtime-packages`; the build passes
    the settled list, automatic packages included); `remote`: the registry cache that
    may hold it and records it."""
    wanted = plan.runtime_packages if packages is None else packages
    key = layer_key(base_id, wanted)
    cached = Layer.from_doc(store.read_index(INDEX_SYSTEM_LAYER, key))
    if (cached is None or not store.has(cached.digest)) and remote is not None:
        cached = remote.restore_layer(records.SYSTEM, key)
        if cached is not None:
            store.write_index(INDEX_SYSTEM_LAYER, key, cached.to_doc())
    if cached is not None and store.has(cached.digest):
        progress("runtime packages", 0.0, "cached: " + " ".join(wanted))
        if remote is not None:
            remote.remember(records.SYSTEM, key, [cached], {"packages": list(wanted)})
        return cached
    names = " ".join(wanted)
    script = (
        "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; "
        f"apt-get install -y -qq --no-install-recommends {names}; "
        "rm -rf /var/lib/apt/lists/* /var/cache/apt/*"
    )
    output: list[str] = []
    with engine.container(
        plan.base_image, ["/bin/sh", "-c", script], network=engine.network_mode(plan.network)
    ) as box:
        code = box.follow(output.append).exit_code
        if code != 0:
            tail = "\n".join(output[-20:])
            raise BuildError(
                f"Installing the runtime packages ({names}) failed with exit code {code}:\n{tail}",
                hint="Check the names in `tool.pydeploy.runtime-packages` (Debian packages "
                "of the base image's release).",
            )
        changed = {path.lstrip("/") for path, kind in box.changes() if kind != "deleted"}
        with tempfile.TemporaryDirectory(prefix="pydeploy-sys-") as tmp:
            entries = list(_changed_entries(box.export(), changed, Path(tmp)))
            layer = build_layer(entries, store=store, epoch=LAYER_EPOCH, role="system")
    store.write_index(INDEX_SYSTEM_LAYER, key, layer.to_doc())
    if remote is not None:
        remote.remember(records.SYSTEM, key, [layer], {"packages": list(wanted)})
    progress("runtime packages", 0.0, f"installed {names}")
    return layer


def _changed_entries(
    chunks: Iterator[bytes], changed: set[str], spool: Path
) -> Iterator[FileEntry]:
    """Entries of the container export that the apt run added or modified. Owners and
    modes are kept as dpkg set them (system files may legitimately be setgid-free but
    owned by other system users); only timestamps are normalized by the layer writer."""
    with tarfile.open(fileobj=as_reader(chunks), mode="r|") as tar:
        for index, member in enumerate(tar):
            name = member.name.lstrip("./")
            if name not in changed or _DROP.match(name + ("/" if member.isdir() else "")):
                continue
            # setuid/setgid bits are dropped (CIS 4.8): a runtime library never needs them.
            mode = member.mode & 0o1777
            if member.isdir():
                yield FileEntry(name, "dir", mode, uid=member.uid, gid=member.gid)
            elif member.issym():
                yield FileEntry(name, "symlink", 0o777, linkname=member.linkname)
            elif member.islnk():
                yield FileEntry(name, "hardlink", mode, linkname=member.linkname.lstrip("./"))
            elif member.isfile():
                handle = tar.extractfile(member)
                data = handle.read() if handle else b""
                path = spool / f"{index}"
                path.write_bytes(data)
                yield FileEntry(name, "file", mode, uid=member.uid, gid=member.gid, source=path)
