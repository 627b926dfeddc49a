"""The image config and manifest documents, their media types, and canonical JSON."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only the annotations: layer.py imports its media type from here
    from pydeploy.oci.layer import Layer

MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
# An artifact's config when it has none (OCI 1.1): this media type and these two bytes.
MEDIA_TYPE_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


def canonical_json(document: Any) -> bytes:
    """Sorted keys, compact separators, UTF-8: one byte string per document."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def rfc3339(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


# Base config keys that carry over; the rest (Hostname, AttachStdin, OnBuild, Shell, ...)
# are Docker build-time noise or would change what our entrypoint means.
_INHERITED_KEYS = ("Env", "ExposedPorts", "Labels", "Volumes", "Healthcheck")


def _merge_env(base_env: Sequence[str], env: Mapping[str, str]) -> list[str]:
    merged: dict[str, str] = {}
    for item in base_env:
        key, _, value = item.partition("=")
        merged[key] = value
    for key in sorted(env):
        merged[key] = env[key]
    return [f"{k}={v}" for k, v in merged.items()]


def _port_key(port: str) -> str:
    return port if "/" in port else f"{port}/tcp"


@dataclass(frozen=True)
class ImageSettings:
    """What an image config says besides its base and layers: how a container of it
    runs, and when the image was made. `env` is merged over the base's Env (PATH is never
    guessed: pass it). `cmd=None` drops the base's Cmd, as Docker does when ENTRYPOINT is
    set. `healthcheck=None` keeps the base's. Labels and exposed ports are merged over the
    base's."""

    user: str
    env: Mapping[str, str]
    entrypoint: Sequence[str]
    cmd: Sequence[str] | None = None
    workdir: str = "/"
    exposed_ports: Sequence[str] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    stop_signal: str = "SIGTERM"
    healthcheck: Mapping[str, Any] | None = None
    created: str = "1970-01-01T00:00:00Z"  # RFC 3339, see rfc3339()


def build_config(
    base_config: Mapping[str, Any],
    base_diff_ids: Sequence[str],
    base_history: Sequence[Mapping[str, Any]],
    layers: Sequence[Layer],
    settings: ImageSettings,
) -> bytes:
    """The image config as canonical JSON; its sha256 is the image ID."""
    base_runtime: Mapping[str, Any] = base_config.get("config") or {}
    runtime: dict[str, Any] = {
        k: base_runtime[k] for k in _INHERITED_KEYS if base_runtime.get(k) not in (None, "", {})
    }
    runtime["Env"] = _merge_env(base_runtime.get("Env") or [], settings.env)
    runtime["User"] = settings.user
    runtime["Entrypoint"] = list(settings.entrypoint)
    if settings.cmd is not None:
        runtime["Cmd"] = list(settings.cmd)
    runtime["WorkingDir"] = settings.workdir
    ports = dict(base_runtime.get("ExposedPorts") or {})
    ports.update({_port_key(p): {} for p in settings.exposed_ports})
    if ports:
        runtime["ExposedPorts"] = ports
    merged_labels = {**(base_runtime.get("Labels") or {}), **settings.labels}
    if merged_labels:
        runtime["Labels"] = merged_labels
    runtime["StopSignal"] = settings.stop_signal
    if settings.healthcheck is not None:
        runtime["Healthcheck"] = dict(settings.healthcheck)
    document: dict[str, Any] = {
        "architecture": base_config.get("architecture", "amd64"),
        "os": base_config.get("os", "linux"),
        "created": settings.created,
        "config": runtime,
        "rootfs": {
            "type": "layers",
            "diff_ids": [*base_diff_ids, *(layer.diff_id for layer in layers)],
        },
        "history": [
            *base_history,
            *(
                {"created": settings.created, "created_by": f"pydeploy: {layer.role}"}
                for layer in layers
            ),
        ],
    }
    for key in ("variant", "os.version", "os.features"):
        if base_config.get(key):
            document[key] = base_config[key]
    return canonical_json(document)


def build_manifest(config_digest: str, config_size: int, layers: Sequence[Layer]) -> bytes:
    """The OCI image manifest (base layers first, then ours) as canonical JSON."""
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": config_digest,
                       "size": config_size},
            "layers": [layer.descriptor() for layer in layers],
        }
    )  # fmt: skip
