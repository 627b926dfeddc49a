"""Deployment manifests for a built image: a Kubernetes Deployment + Service, or a
compose service. Pure: a plan and an image reference in, documents (and YAML) out.

What the documents promise matches what the image does: the launcher sizes `auto`
workers from the cgroup CPU quota and memory limit (with what one worker costs, measured
at build), so `resources` limits here are the numbers the workers are computed from;
the grace period outlasts the server's graceful timeout; the numeric user is the image's;
the root filesystem is read-only with writable mounts only where the server and libraries
write (/tmp and $HOME; gunicorn's worker heartbeat lives in /dev/shm, a tmpfs every
runtime provides) and where the app does (`tool.pydeploy.writable`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from pydeploy.config.models import ResourcesConfig
from pydeploy.deploy import MANIFEST_FORMATS
from pydeploy.engine.types import ResourceLimits
from pydeploy.errors import ConfigError
from pydeploy.layers.assemble import HEALTHCHECK_ARGV, USER_NAME
from pydeploy.payload import launcher
from pydeploy.plan import memory, references
from pydeploy.plan.launch import Healthcheck, Process
from pydeploy.plan.planner import BuildPlan, repository_name

# docker stop / Kubernetes wait this long past the server's own graceful timeout before
# SIGKILL, so the server always finishes its drain itself.
GRACE_MARGIN_SECONDS = 5
# Everything else stays read-only; these are empty, writable, per-container mounts.
WRITABLE_PATHS = ("/tmp", f"/home/{USER_NAME}")  # noqa: S108 -- mount points, not temp files
CONTAINER_NAME = "app"
SERVICE_PORT = 80
MANAGED_BY = "pydeploy"
RELEASE = "release"  # the release command's Job suffix and compose service

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class DeploySpec:
    """What the manifests need from the plan, in deployment terms."""

    name: str  # a DNS-1123 label: Kubernetes object name and compose service name
    image: str  # always pinned by digest
    port: int
    uid: int
    version: str
    graceful_timeout: int
    healthcheck: Healthcheck | None
    resources: ResourcesConfig
    replicas: int = 1
    workers: int | None = None  # `server.workers`; None: `auto`
    # What a worker costs: the build's measurement, or `server.worker-memory`, or unknown.
    worker_memory: memory.WorkerMemory | None = None
    writable: tuple[str, ...] = ()  # `tool.pydeploy.writable`, absolute

    @property
    def mounts(self) -> tuple[str, ...]:
        """Every writable mount point: the server's and libraries', then the app's."""
        return (*WRITABLE_PATHS, *self.writable)

    release: tuple[str, ...] | None = None  # `release-command`
    processes: tuple[Process, ...] = ()

    @property
    def grace_period(self) -> int:
        return grace_period(self.graceful_timeout)


def grace_period(graceful_timeout: int) -> int:
    """Seconds an orchestrator should wait after SIGTERM before it kills the server."""
    return graceful_timeout + GRACE_MARGIN_SECONDS


def check_digest_ref(ref: str) -> str:
    parsed = references.try_parse(ref)
    if parsed is None or parsed.digest is None:
        raise ConfigError(
            f"--image {ref!r} is not pinned by digest.",
            hint=(
                "Pass a reference ending in @sha256:<64 hex digits> (as `pydeploy build "
                "--json` prints in manifest_digest), or leave --image out to build first."
            ),
        )
    return ref


def digest_ref(tag: str, digest: str) -> str:
    """`name:tag@sha256:...`: readable, yet every runtime pulls the digest, not the tag."""
    return check_digest_ref(f"{tag}@{digest}")


def dns_name(text: str) -> str:
    """A DNS-1123 label (lowercase letters, digits, '-'; at most 63) from an image name."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower().rsplit("/", 1)[-1]).strip("-")
    return name[:63].rstrip("-") or "app"


def spec_from_plan(
    plan: BuildPlan,
    image: str,
    *,
    replicas: int = 1,
    worker_memory: memory.WorkerMemory | None = None,
) -> DeploySpec:
    """`worker_memory`: the build's (BuildResult.memory); without one, only an explicit
    `server.worker-memory` is known."""
    if worker_memory is None:
        configured = plan.server_policy.worker_memory
        worker_memory = memory.estimate(None, server=plan.server, configured=configured)
    return DeploySpec(
        name=dns_name(repository_name(plan.project)),
        image=check_digest_ref(image),
        port=plan.port,
        uid=plan.user_id,
        version=plan.project.version,
        graceful_timeout=plan.launch.graceful_timeout,
        healthcheck=plan.healthcheck,
        resources=plan.resources,
        replicas=replicas,
        workers=plan.launch.workers,
        worker_memory=worker_memory,
        writable=plan.writable,
        release=plan.release,
        processes=plan.processes,
    )


def warnings(spec: DeploySpec) -> list[str]:
    """Advice worth printing next to the manifests (not errors)."""
    found = []
    if spec.resources.cpu is None:
        found.append(
            "tool.pydeploy.resources.cpu is not set: without a CPU limit, `auto` workers "
            "are sized from the node's CPU count (2 x CPUs + 1), which can be many."
        )
    found.extend(_memory_warnings(spec))
    return found


def _memory_warnings(spec: DeploySpec) -> list[str]:
    """The launcher's sizing rule applied to `resources`: no limit at all, a limit that
    cannot hold one worker, or one that holds fewer workers than the CPU limit (or
    `server.workers`) asks for."""
    limit = spec.resources.memory
    cost = spec.worker_memory
    if cost is None or cost.worker_mib is None:
        if limit is None:
            return ["tool.pydeploy.resources.memory is not set: the container has no memory limit."]
        return []
    master = cost.master_mib or launcher.DEFAULT_MASTER_MEMORY_MB
    worker = cost.worker_mib
    costs = f"~{master} MiB for the master + ~{worker} MiB per worker, {cost.origin}"
    if limit is None:
        message = (
            "tool.pydeploy.resources.memory is not set: the container has no memory limit, "
            f"so nothing but the node's memory bounds the workers ({costs})."
        )
        return [message]
    allows = launcher.memory_allows(limit, master, worker)
    if allows < 1:
        message = (
            f"tool.pydeploy.resources.memory = {limit} MiB does not fit one worker ({costs}): "
            "the container starts 1 worker anyway, and the kernel may OOM-kill it under "
            f"load. Set memory to at least {master + worker}."
        )
        return [message]
    wanted, source = spec.workers, "tool.pydeploy.server.workers"
    if wanted is None and spec.resources.cpu is not None:
        quota = launcher.CpuQuota(spec.resources.cpu, "resources.cpu")
        affinity = math.ceil(spec.resources.cpu)
        decision = launcher.decide_workers(
            web_concurrency=None, configured=None, affinity=affinity, quota=quota
        )
        wanted, source = decision.count, f"cpu = {spec.resources.cpu:g}"
    if wanted is None or allows >= wanted:
        return []
    outcome = f"the image starts {allows}" if spec.workers is None else "they may be OOM-killed"
    message = (
        f"tool.pydeploy.resources.memory = {limit} MiB fits {allows} of the {wanted} workers "
        f"that {source} asks for ({costs}): {outcome}. Set memory to "
        f"{master + wanted * worker} for {wanted}."
    )
    return [message]


# --------------------------------------------------------------------------- quantities


def cpu_quantity(cores: float) -> str:
    millis = round(cores * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def _requests_and_limits(resources: ResourcesConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(requests, limits) as numbers: cores and MiB. A missing request equals its limit,
    as Kubernetes itself defaults it."""
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    if resources.cpu is not None:
        limits["cpu"] = resources.cpu
    if resources.memory is not None:
        limits["memory"] = resources.memory
    cpu_request = resources.cpu_request if resources.cpu_request is not None else resources.cpu
    memory_request = (
        resources.memory_request if resources.memory_request is not None else resources.memory
    )
    if cpu_request is not None:
        requests["cpu"] = cpu_request
    if memory_request is not None:
        requests["memory"] = memory_request
    return requests, limits


# --------------------------------------------------------------------------- Kubernetes


def labels(spec: DeploySpec) -> dict[str, str]:
    found = {"app.kubernetes.io/name": spec.name}
    if len(spec.version) <= 63 and _LABEL_VALUE.match(spec.version):
        found["app.kubernetes.io/version"] = spec.version
    found["app.kubernetes.io/managed-by"] = MANAGED_BY
    return found


def _probes(spec: DeploySpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """(readiness, liveness). The image's HEALTHCHECK settings, as kubelet probes on the
    same path; readiness checks more often so a new pod gets traffic sooner."""
    hc = spec.healthcheck
    action: dict[str, Any]
    if hc is None:
        action = {"tcpSocket": {"port": "http"}}
    elif hc.any_answer:
        # httpGet counts a 4xx as failure: the image's own stdlib healthcheck runs instead
        # (one short python process per period), the rule `docker inspect` reports.
        action = {"exec": {"command": list(HEALTHCHECK_ARGV)}}
    else:
        action = {"httpGet": {"path": hc.path, "port": "http"}}
    interval = hc.interval if hc else 30
    timeout = hc.timeout if hc else 3
    retries = hc.retries if hc else 3
    start = hc.start_period if hc else 10
    readiness = {
        **action,
        "periodSeconds": min(interval, 10),
        "timeoutSeconds": timeout,
        "failureThreshold": retries,
    }
    liveness = {
        **action,
        "initialDelaySeconds": start,
        "periodSeconds": interval,
        "timeoutSeconds": timeout,
        "failureThreshold": retries,
    }
    return readiness, liveness


def _volume_name(path: str) -> str:
    return dns_name(path.strip("/").replace("/", "-")) or "root"


def _resources(resources: ResourcesConfig) -> dict[str, Any]:
    requests, limits = _requests_and_limits(resources)
    return {
        key: {k: cpu_quantity(v) if k == "cpu" else f"{v}Mi" for k, v in values.items()}
        for key, values in (("requests", requests), ("limits", limits))
        if values
    }


def _container(
    spec: DeploySpec, resources: ResourcesConfig, args: tuple[str, ...] | None
) -> dict[str, Any]:
    """The image's container, hardened. `args`: a command for the launcher (a process,
    the release command); None: the server, with its port and probes."""
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
    }
    if args is None:
        readiness, liveness = _probes(spec)
        container["ports"] = [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}]
    else:
        container["args"] = list(args)
    container["env"] = [{"name": "PORT", "value": str(spec.port)}]
    if args is None:
        container["readinessProbe"] = readiness
        container["livenessProbe"] = liveness
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    container["volumeMounts"] = [{"name": _volume_name(p), "mountPath": p} for p in spec.mounts]
    if found := _resources(resources):
        container["resources"] = found
    return container


def _pod_spec(spec: DeploySpec, container: dict[str, Any]) -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": spec.grace_period,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": spec.uid,
            "runAsGroup": spec.uid,
            "fsGroup": spec.uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": _volume_name(p), "emptyDir": {}} for p in spec.mounts],
    }


def _child_name(spec: DeploySpec, suffix: str) -> str:
    """`<name>-<suffix>`, within a DNS label's 63 characters."""
    return f"{spec.name[: 62 - len(suffix)].rstrip('-')}-{suffix}"


def _component_labels(spec: DeploySpec, component: str) -> dict[str, str]:
    """Labels of a process's or the release's pods: their own name, so the server's
    Service and Deployment (which select `app.kubernetes.io/name: <name>`) never pick
    them up, and `part-of` the app."""
    found = labels(spec)
    found["app.kubernetes.io/name"] = _child_name(spec, component)
    found["app.kubernetes.io/component"] = component
    found["app.kubernetes.io/part-of"] = spec.name
    return found


def _deployment(
    spec: DeploySpec, name: str, meta_labels: dict[str, str], replicas: int, container: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": meta_labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {"metadata": {"labels": meta_labels}, "spec": _pod_spec(spec, container)},
        },
    }


def release_job(spec: DeploySpec, command: tuple[str, ...]) -> dict[str, Any]:
    """The release command as a Job, not an init container: an init container runs in
    every replica, concurrently (two `migrate`s racing on one database) and again on
    every restart or scale-up; a Job runs once per image. A Job's pod template cannot
    change, so its name carries the image digest: each release is a new Job. Plain
    manifests cannot make the Deployment's rollout wait for it (`kubectl wait` can, and
    Argo CD does by the PreSync hook annotation); a failed migration is not retried."""
    digest = spec.image.rpartition("@sha256:")[2][:12]
    name = _child_name(spec, f"{RELEASE}-{digest}")
    meta_labels = _component_labels(spec, RELEASE)
    pod = _pod_spec(spec, _container(spec, spec.resources, command))
    pod["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": meta_labels,
            "annotations": {
                "argocd.argoproj.io/hook": "PreSync",
                "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation",
            },
        },
        "spec": {
            "backoffLimit": 0,
            "template": {"metadata": {"labels": meta_labels}, "spec": pod},
        },
    }


def kubernetes(spec: DeploySpec) -> list[dict[str, Any]]:
    """The release Job (when there is a release command), the server's Deployment and
    ClusterIP Service (port 80 -> the container's `http` port), then one Deployment per
    process (the same image with the process's command, no probes: it serves no HTTP)."""
    meta_labels = labels(spec)
    selector = {"app.kubernetes.io/name": spec.name}
    deployment = _deployment(
        spec, spec.name, meta_labels, spec.replicas, _container(spec, spec.resources, None)
    )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": spec.name, "labels": meta_labels},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }
    docs = [release_job(spec, spec.release)] if spec.release else []
    docs += [deployment, service]
    for process in spec.processes:
        container = _container(spec, process.resources, process.argv)
        name = _child_name(spec, process.name)
        docs.append(
            _deployment(
                spec, name, _component_labels(spec, process.name), process.replicas, container
            )
        )
    return docs


# --------------------------------------------------------------------------- compose


def _tmpfs(path: str, uid: int) -> str:
    """A compose tmpfs entry. Docker mounts a tmpfs root-owned, mode 0755 (1777 only where
    the image's directory is /tmp-like), so the user's home is mounted as the user's."""
    return path if path == "/tmp" else f"{path}:uid={uid},gid={uid}"  # noqa: S108


def _compose_memory(mib: int) -> str:
    return f"{mib}M"


def _compose_resources(resources: ResourcesConfig) -> dict[str, Any]:
    requests, limits = _requests_and_limits(resources)
    return {
        key: {
            ("cpus" if k == "cpu" else k): (f"{v:g}" if k == "cpu" else _compose_memory(v))
            for k, v in values.items()
        }
        for key, values in (("limits", limits), ("reservations", requests))
        if values
    }


def _compose_service(
    spec: DeploySpec, resources: ResourcesConfig, command: tuple[str, ...] | None
) -> dict[str, Any]:
    """The image as a hardened service; `command` (for the launcher) runs instead of the
    server: no port, and no healthcheck (the image's probes HTTP, which it does not serve)."""
    service: dict[str, Any] = {"image": spec.image}
    if command is not None:
        service["command"] = list(command)
    service |= {
        "user": f"{spec.uid}:{spec.uid}",
        "read_only": True,
        "tmpfs": [_tmpfs(path, spec.uid) for path in spec.mounts],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "environment": {"PORT": str(spec.port)},
    }
    if command is None:
        service["ports"] = [{"target": spec.port, "published": str(spec.port), "protocol": "tcp"}]
    else:
        service["healthcheck"] = {"disable": True}
    service |= {
        "stop_signal": "SIGTERM",
        "stop_grace_period": f"{spec.grace_period}s",
        "restart": "unless-stopped",
        "labels": labels(spec),
    }
    if spec.release and command != spec.release:
        # The server and the processes start once the release command has succeeded.
        service["depends_on"] = {RELEASE: {"condition": "service_completed_successfully"}}
    if found := _compose_resources(resources):
        service["deploy"] = {"resources": found}
    return service


def compose(spec: DeploySpec) -> dict[str, Any]:
    """The server's service with the same hardening as the Kubernetes documents (the
    image's own HEALTHCHECK applies: compose keeps it when the service sets none), a
    one-shot `release` service it waits for, and one service per process."""
    services = {spec.name: _compose_service(spec, spec.resources, None)}
    if spec.release:
        release = _compose_service(spec, spec.resources, spec.release)
        release["restart"] = "no"
        services[RELEASE] = release
    for process in spec.processes:
        if process.name in services:
            raise ConfigError(
                f"`tool.pydeploy.processes.{process.name}` has the name of the server's "
                "compose service (the image name).",
                hint="Rename the process, e.g. `worker`.",
            )
        service = _compose_service(spec, process.resources, process.argv)
        if process.replicas != 1:
            service.setdefault("deploy", {})["replicas"] = process.replicas
        services[process.name] = service
    return {"name": spec.name, "services": services}


# --------------------------------------------------------------------------- output


def documents(spec: DeploySpec, fmt: str) -> list[dict[str, Any]]:
    if fmt == "kubernetes":
        return kubernetes(spec)
    if fmt == "compose":
        return [compose(spec)]
    raise ConfigError(
        f"Unknown manifest format {fmt!r}.", hint=f"Use one of {', '.join(MANIFEST_FORMATS)}."
    )


def render(docs: list[dict[str, Any]]) -> str:
    """YAML, documents separated by `---`, keys in the order they were built."""
    import yaml  # noqa: PLC0415 - only rendering needs it

    class Dumper(yaml.SafeDumper):
        """Plain YAML: repeated values are written out, never as &anchors/*aliases."""

        def ignore_aliases(self, data: Any) -> bool:  # noqa: ARG002 -- PyYAML hook signature
            return True

    return yaml.dump_all(docs, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=100)


def run_limits(
    resources: ResourcesConfig, cpus: float | None = None, memory: int | None = None
) -> ResourceLimits:
    """The engine limits `pydeploy run` applies: flags win over `[tool.pydeploy.resources]`,
    requests become the soft values (CPU shares, memory reservation), capped by the
    limits."""
    requests, limits = _requests_and_limits(resources)
    chosen_cpus = cpus if cpus is not None else limits.get("cpu")
    chosen_memory = memory if memory is not None else limits.get("memory")
    hard_cpus = float(chosen_cpus) if chosen_cpus is not None else None
    hard_memory = int(chosen_memory) if chosen_memory is not None else None
    cpu_request = memory_request = None
    if "cpu" in requests:
        cpu_request = min(float(requests["cpu"]), hard_cpus if hard_cpus is not None else math.inf)
    if "memory" in requests:
        cap = hard_memory if hard_memory is not None else math.inf
        memory_request = int(min(requests["memory"], cap))
    return ResourceLimits(hard_cpus, hard_memory, cpu_request, memory_request)
