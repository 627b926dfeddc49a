"""pydeploy's own layers and the image config, from inputs already gathered.

No engine here: given the base's passwd/group files, the exported venv, the app files
and the plan, produce deterministic layers and the runtime settings (user, env,
entrypoint, healthcheck, labels). The orchestration lives in `build`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from pydeploy.blobs import BlobStore
from pydeploy.oci import FileEntry, Layer, build_layer, rfc3339
from pydeploy.plan import APP_DIR, LAUNCHER_DIR, VENV, WORKER_MODULE_PATH, BuildPlan

# Layer file mtimes are a constant, never the commit time: a new commit must not change
# the dependency layer's digest. Jib uses the same epoch + 1 s.
LAYER_EPOCH = 1
USER_NAME = "app"
LAUNCHER = f"{LAUNCHER_DIR}/launcher.py"
LAUNCH_JSON = f"{LAUNCHER_DIR}/launch.json"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class RuntimeSettings:
    """Everything in the image config besides layers."""

    user: str
    env: dict[str, str]
    entrypoint: list[str]
    workdir: str
    exposed_ports: list[str]
    labels: dict[str, str]
    healthcheck: dict[str, Any] | None
    stop_signal: str = "SIGTERM"


def user_entries(plan: BuildPlan, passwd: bytes, group: bytes) -> list[FileEntry]:
    """The base's /etc/passwd and /etc/group plus one numeric non-root user and group,
    and a home directory it owns (libraries like to write caches under $HOME)."""
    uid = plan.user_id
    passwd_text = passwd.decode("utf-8", "replace")
    group_text = group.decode("utf-8", "replace")
    if not _has_id(passwd_text, uid):
        passwd_text = _append(
            passwd_text,
            f"{USER_NAME}:x:{uid}:{uid}:pydeploy app user:/home/{USER_NAME}:/usr/sbin/nologin",
        )
    if not _has_id(group_text, uid):
        group_text = _append(group_text, f"{USER_NAME}:x:{uid}:")
    return [
        FileEntry("etc/passwd", "file", 0o644, data=passwd_text.encode()),
        FileEntry("etc/group", "file", 0o644, data=group_text.encode()),
        FileEntry(f"home/{USER_NAME}", "dir", 0o755, uid=uid, gid=uid),
    ]


def _has_id(text: str, ident: int) -> bool:
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2] == str(ident):
            return True
    return False


def _append(text: str, line: str) -> str:
    return (text if text.endswith("\n") or not text else text + "\n") + line + "\n"


def launcher_files(launch: dict[str, Any]) -> dict[str, bytes]:
    """The launcher layer's files by image path: the launcher, its settings and the
    gunicorn worker classes it names."""
    package = resources.files("pydeploy")
    return {
        LAUNCHER: package.joinpath("launcher.py").read_bytes(),
        LAUNCH_JSON: json.dumps(launch, indent=2, sort_keys=True).encode() + b"\n",
        WORKER_MODULE_PATH: package.joinpath("server_workers.py").read_bytes(),
    }


def launcher_entries(launch: dict[str, Any]) -> list[FileEntry]:
    return [
        FileEntry(path.lstrip("/"), "file", 0o644, data=data)
        for path, data in launcher_files(launch).items()
    ]


def layer(store: BlobStore, entries: list[FileEntry], role: str) -> Layer:
    return build_layer(entries, store=store, epoch=LAYER_EPOCH, role=role)


def oci_labels(
    plan: BuildPlan, *, created_epoch: int, revision: str | None, base_digest: str | None
) -> dict[str, str]:
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
    labels.update(dict(plan.labels))
    return labels


def runtime_settings(
    plan: BuildPlan, base_env: list[str], labels: dict[str, str]
) -> RuntimeSettings:
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
    if plan.healthcheck:
        second = 1_000_000_000
        healthcheck = {
            "Test": ["CMD", python, LAUNCHER, "healthcheck"],
            "Interval": plan.healthcheck["interval"] * second,
            "Timeout": plan.healthcheck["timeout"] * second,
            "StartPeriod": plan.healthcheck["start_period"] * second,
            "Retries": plan.healthcheck["retries"],
        }
    return RuntimeSettings(
        user=f"{plan.user_id}:{plan.user_id}",
        env=env,
        entrypoint=[python, LAUNCHER],
        workdir=APP_DIR,
        exposed_ports=[f"{plan.port}/tcp"],
        labels=labels,
        healthcheck=healthcheck,
    )
