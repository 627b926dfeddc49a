"""pydeploy's own layers and the image config, from inputs already gathered.

No engine here: given the base's passwd/group files, the exported venv, the app files
and the plan, produce deterministic layers and the runtime settings (user, env,
entrypoint, healthcheck, labels). The orchestration lives in `build`.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable

from pydeploy import payload
from pydeploy.errors import ConfigError
from pydeploy.oci.blobs import BlobStore
from pydeploy.oci.config import ImageSettings, rfc3339
from pydeploy.oci.entries import FileEntry
from pydeploy.oci.image import BaseImage
from pydeploy.oci.layer import Layer, build_layer, open_uncompressed
from pydeploy.oci.tar import Reader, TarMember, TarScanner
from pydeploy.plan.launch import LaunchSettings
from pydeploy.plan.memory import WorkerMemory
from pydeploy.plan.memory import labels as memory_labels
from pydeploy.plan.planner import (
    ACCESS_LOG_MODULE_PATH,
    APP_DIR,
    LAUNCHER_DIR,
    UVICORN_LOG_CONFIG_PATH,
    VENV,
    WORKER_MODULE_PATH,
    BuildPlan,
)

# Layer file mtimes are a constant, never the commit time: a new commit must not change
# the dependency layer's digest. Jib uses the same epoch + 1 s.
LAYER_EPOCH = 1
USER_NAME = "app"
LAUNCHER = f"{LAUNCHER_DIR}/launcher.py"
LAUNCH_JSON = f"{LAUNCHER_DIR}/launch.json"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The launcher's stdlib probe: the image's HEALTHCHECK, and the manifests' exec probes.
HEALTHCHECK_ARGV = (f"{VENV}/bin/python", LAUNCHER, "--healthcheck")


def check_user_id(plan: BuildPlan, passwd: bytes, group: bytes) -> None:
    """Refuse a `user-id` that the base already gives to another user or group: the app
    would get that account's rights (gid 42 is Debian's `shadow`, which reads
    /etc/shadow). An entry named like ours (a pydeploy image used as a base) is ours."""
    uid = plan.user_id
    taken = [
        f"{kind} `{name}` ({ident} {uid} in /etc/{file})"
        for kind, ident, file, text in (("user", "uid", "passwd", passwd),
                                        ("group", "gid", "group", group))
        if (name := _name_of(text.decode("utf-8", "replace"), uid)) not in {None, USER_NAME}
    ]  # fmt: skip
    if taken:
        raise ConfigError(
            f"tool.pydeploy.user-id = {uid} is already the base image's "
            f"{' and '.join(taken)} in {plan.base_image}: the app would run with that "
            "account's rights.",
            hint=(
                "Choose an id the base does not use, e.g. the default 10001 (ids of "
                "10000 and above are free on common bases)."
            ),
        )


def user_entries(plan: BuildPlan, passwd: bytes, group: bytes) -> list[FileEntry]:
    """The base's /etc/passwd and /etc/group plus one numeric non-root user and group,
    and a home directory it owns (libraries like to write caches under $HOME)."""
    check_user_id(plan, passwd, group)
    uid = plan.user_id
    passwd_text = passwd.decode("utf-8", "replace")
    group_text = group.decode("utf-8", "replace")
    if _name_of(passwd_text, uid) is None:
        passwd_text = _append(
            passwd_text,
            f"{USER_NAME}:x:{uid}:{uid}:pydeploy app user:/home/{USER_NAME}:/usr/sbin/nologin",
        )
    if _name_of(group_text, uid) is None:
        group_text = _append(group_text, f"{USER_NAME}:x:{uid}:")
    return [
        FileEntry("etc/passwd", "file", 0o644, data=passwd_text.encode()),
        FileEntry("etc/group", "file", 0o644, data=group_text.encode()),
        FileEntry(f"home/{USER_NAME}", "dir", 0o755, uid=uid, gid=uid),
    ]


def writable_entries(plan: BuildPlan) -> list[FileEntry]:
    """The `writable` directories, owned by the runtime user (0755). Their layer comes
    after the app's, so a listed directory the app ships is re-owned and its files
    stay (root's, read-only); missing parents are added root-owned, as the base's are."""
    uid = plan.user_id
    return [FileEntry(path.lstrip("/"), "dir", 0o755, uid=uid, gid=uid) for path in plan.writable]


def _name_of(text: str, ident: int) -> str | None:
    """The name of the passwd/group entry with this numeric id, if any."""
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2] == str(ident):
            return fields[0]
    return None


def _append(text: str, line: str) -> str:
    return (text if text.endswith("\n") or not text else text + "\n") + line + "\n"


_PRIVILEGE_BITS = 0o6000  # setuid, setgid
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"

LayerScan = list[tuple[str, TarMember]]  # a base layer's members by clean path


def scan_layer(stream: Reader) -> LayerScan:
    """A base layer's members by clean path, from its headers alone (no data is read)."""
    members: LayerScan = []
    for member in TarScanner(stream):
        name = posixpath.normpath(member.name.lstrip("/"))
        if name not in {".", ""} and not name.startswith(".."):
            members.append((name, member))
    return members


def stored_layer_scans(store: BlobStore, base: BaseImage) -> list[LayerScan]:
    """`scan_layer` of each base layer in the blob store, bottom first."""
    scans = []
    for stored in base.layers or ():
        with open_uncompressed(store, stored) as handle:
            scans.append(scan_layer(handle))
    return scans


def unprivileged_entries(layers: Iterable[LayerScan]) -> list[FileEntry]:
    """What drops the setuid/setgid bits of the base's merged filesystem (CIS Docker 4.8),
    given its layers bottom first. A base layer cannot be edited, so a layer on top
    removes such files (a whiteout: 512 bytes, where a copy without the bits would carry
    the program again) and re-adds such directories without the bits, same owner and
    other bits. Their parent directories come with the base's own modes and owners, so
    the layer changes nothing else."""
    dirs: dict[str, tuple[int, int, int]] = {}  # every directory: mode, uid, gid
    privileged: dict[str, FileEntry] = {}  # by the path it hides or re-adds
    for members in layers:
        # Whiteouts hide what the layers below have; this layer's own entries stay.
        for name, _member in members:
            parent, leaf = posixpath.split(name)
            if leaf == _OPAQUE:
                _forget(privileged, dirs, parent, keep_top=True)
            elif leaf.startswith(_WHITEOUT):
                _forget(privileged, dirs, posixpath.join(parent, leaf[len(_WHITEOUT) :]))
        for name, member in members:
            if not posixpath.basename(name).startswith(_WHITEOUT):
                _add_member(privileged, dirs, name, member)
    entries = dict(privileged)
    for name in privileged:
        parent = posixpath.dirname(name)
        while parent and parent not in entries:
            mode, uid, gid = dirs.get(parent, (0o755, 0, 0))
            entries[parent] = FileEntry(parent, "dir", mode, uid=uid, gid=gid)
            parent = posixpath.dirname(parent)
    return [entries[name] for name in sorted(entries)] if privileged else []


def _add_member(
    privileged: dict[str, FileEntry],
    dirs: dict[str, tuple[int, int, int]],
    name: str,
    member: TarMember,
) -> None:
    """A layer's entry over what the layers below left at `name`."""
    if member.kind != "dir" and name in dirs:
        _forget(privileged, dirs, name)  # a file replacing a directory
    # A hard link shares its target's inode, bits included, whatever its header says.
    target = posixpath.normpath(member.linkname.lstrip("/")) if member.kind == "hardlink" else ""
    linked = privileged.get(target)
    privileged.pop(name, None)
    mode = member.mode & ~_PRIVILEGE_BITS
    if member.kind == "dir":
        dirs[name] = (mode, member.uid, member.gid)
        if member.mode & _PRIVILEGE_BITS:
            privileged[name] = FileEntry(name, "dir", mode, uid=member.uid, gid=member.gid)
    elif member.kind in {"file", "hardlink"} and (
        member.mode & _PRIVILEGE_BITS or (linked is not None and linked.kind == "file")
    ):
        parent, leaf = posixpath.split(name)
        whiteout = posixpath.join(parent, _WHITEOUT + leaf)
        privileged[name] = FileEntry(whiteout, "file", 0o644, data=b"")


def _forget(
    privileged: dict[str, FileEntry],
    dirs: dict[str, tuple[int, int, int]],
    path: str,
    *,
    keep_top: bool = False,
) -> None:
    """Drop `path` and everything below it (only below with `keep_top`)."""
    below = path + "/"
    for table in (privileged, dirs):
        for name in [n for n in table if n.startswith(below) or (n == path and not keep_top)]:
            del table[name]


def launcher_files(launch: LaunchSettings) -> dict[str, bytes]:
    """The launcher layer's files by image path: the launcher, its settings and the
    gunicorn worker classes and the buffered access log it names."""
    return {
        LAUNCHER: payload.source("launcher.py"),
        LAUNCH_JSON: json.dumps(launch.document(), indent=2, sort_keys=True).encode() + b"\n",
        WORKER_MODULE_PATH: payload.source("server_workers.py"),
        ACCESS_LOG_MODULE_PATH: payload.source("access_log.py"),
        UVICORN_LOG_CONFIG_PATH: payload.source("uvicorn_logging.json"),
    }


def launcher_entries(launch: LaunchSettings) -> list[FileEntry]:
    return [
        FileEntry(path.lstrip("/"), "file", 0o644, data=data)
        for path, data in launcher_files(launch).items()
    ]


def layer(store: BlobStore, entries: list[FileEntry], role: str) -> Layer:
    """The layer's plain tar alone: its gzip is made when an output needs a manifest
    (pydeploy.oci.layer.gzipped)."""
    return build_layer(entries, store=store, epoch=LAYER_EPOCH, role=role, compress=False)


def oci_labels(
    plan: BuildPlan,
    *,
    created_epoch: int,
    revision: str | None,
    base_digest: str | None,
    memory: WorkerMemory | None = None,
) -> dict[str, str]:
    """The OCI annotations, pydeploy's own (what a worker costs), then the user's."""
    project = plan.project
    labels = {
        "org.opencontainers.image.title": project.name,
        "org.opencontainers.image.version": project.version,
        "org.opencontainers.image.created": rfc3339(created_epoch),
        "org.opencontainers.image.base.name": plan.base_image,
    }
    if project.description:
        labels["org.opencontainers.image.description"] = project.description
    if project.source_url:
        labels["org.opencontainers.image.source"] = project.source_url
    if revision:
        labels["org.opencontainers.image.revision"] = revision
    if base_digest:
        labels["org.opencontainers.image.base.digest"] = base_digest
    labels.update(memory_labels(memory))
    labels.update(dict(plan.labels))
    return labels


def runtime_settings(plan: BuildPlan, base_env: list[str], labels: dict[str, str]) -> ImageSettings:
    """How the image's containers run; `created` is left to the caller."""
    base_path = next((e.split("=", 1)[1] for e in base_env if e.startswith("PATH=")), DEFAULT_PATH)
    env = {
        "PATH": f"{VENV}/bin:{base_path}",
        "VIRTUAL_ENV": VENV,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONFAULTHANDLER": "1",
        "HOME": f"/home/{USER_NAME}",
        "LANG": "C.UTF-8",
        **dict(plan.env),
    }
    python = f"{VENV}/bin/python"
    healthcheck = None
    hc = plan.healthcheck
    if hc:
        second = 1_000_000_000
        healthcheck = {
            "Test": ["CMD", *HEALTHCHECK_ARGV],
            "Interval": hc.interval * second,
            "Timeout": hc.timeout * second,
            "StartPeriod": hc.start_period * second,
            "Retries": hc.retries,
        }
    return ImageSettings(
        user=f"{plan.user_id}:{plan.user_id}",
        env=env,
        entrypoint=[python, LAUNCHER],
        workdir=APP_DIR,
        exposed_ports=[f"{plan.port}/tcp"],
        labels=labels,
        healthcheck=healthcheck,
    )
