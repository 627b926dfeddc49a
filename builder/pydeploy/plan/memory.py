"""What one worker of the app costs in memory, so `auto` workers fit the container.

The app check measures it where the dependencies live (builder_script.measure_worker):
a fresh interpreter with a fixed hash seed imports the server's modules (what the
master holds), then the app, then serves one synthetic request in-process, reading its
private resident memory (RssAnon) after each step. File-backed pages (the interpreter,
shared libraries) are left out: every process shares them, and the kernel can reclaim
them under pressure, so they do not multiply by the worker count.

From the measurement, with margins:
- per worker: RssAnon after the first request x WORKER_MARGIN (request buffers,
  caches and allocator fragmentation grow with traffic);
- master: RssAnon with only the server imported, plus SHARED_ALLOWANCE_MIB (page tables,
  kernel stacks, the share of file pages the cgroup is charged for), plus one bare
  interpreter for each extra process the server runs (uvicorn: the launcher as PID 1 and
  multiprocessing's resource tracker).
Both are rounded up to STEP_MIB: the measurement varies by a few KiB between runs, and
two builds of the same inputs must record the same numbers (the same image ID).

The result goes into launch.json (the launcher sizes workers from it at start: see
launcher.memory_allows) and into image labels; an explicit `server.worker-memory`
replaces the per-worker number (and then no request is sent to the app at build).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydeploy.payload import launcher
from pydeploy.plan import servers

WORKER_MARGIN = 1.25
SHARED_ALLOWANCE_MIB = 8
STEP_MIB = 4

MEASURED = launcher.MEASURED_ORIGIN
CONFIGURED = launcher.CONFIGURED_ORIGIN

LABEL_WORKER = "pydeploy.worker-memory-mib"
LABEL_MASTER = "pydeploy.master-memory-mib"
LABEL_ORIGIN = "pydeploy.worker-memory-origin"


@dataclass(frozen=True)
class WorkerMemory:
    """MiB per worker and for the master; None where unknown."""

    worker_mib: int | None
    master_mib: int | None
    origin: str | None  # MEASURED or CONFIGURED, None when worker_mib is
    note: str | None = None  # how the measured first request went, for the build output

    def to_doc(self) -> dict[str, Any]:
        return {
            "worker_mib": self.worker_mib,
            "master_mib": self.master_mib,
            "origin": self.origin,
            "note": self.note,
        }

    @classmethod
    def from_doc(cls, doc: object) -> WorkerMemory | None:
        if not isinstance(doc, dict):
            return None
        worker, master = doc.get("worker_mib"), doc.get("master_mib")
        origin, note = doc.get("origin"), doc.get("note")
        if not all(v is None or (isinstance(v, int) and v > 0) for v in (worker, master)):
            return None
        if origin not in (MEASURED, CONFIGURED, None) or not isinstance(note, (str, type(None))):
            return None
        return cls(worker, master, origin, note)


def _mib(kib: float) -> int:
    """KiB rounded up to the next STEP_MIB."""
    return max(STEP_MIB, math.ceil(kib / 1024 / STEP_MIB) * STEP_MIB)


def _kib(measured: Mapping[str, Any], key: str) -> int | None:
    value = measured.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def estimate(
    measured: Mapping[str, Any] | None, *, server: str, configured: int | None
) -> WorkerMemory:
    """The numbers the image records, from the app check's raw measurement (KiB)."""
    measured = measured or {}
    baseline, server_kib = _kib(measured, "baseline_kib"), _kib(measured, "server_kib")
    master = None
    if server_kib is not None:
        extra = servers.extra_processes(server) * (baseline or 0)
        master = _mib(server_kib + extra + SHARED_ALLOWANCE_MIB * 1024)
    if configured is not None:
        return WorkerMemory(configured, master, CONFIGURED)
    worker_kib = _kib(measured, "worker_kib")
    if worker_kib is None:
        return WorkerMemory(None, master, None)
    request = measured.get("request")
    note = f"first request GET {measured.get('path', '/')}: {request}" if request else None
    return WorkerMemory(_mib(worker_kib * WORKER_MARGIN), master, MEASURED, note)


def launch_keys(memory: WorkerMemory | None, configured: int | None) -> dict[str, Any]:
    """launch.json's memory keys. Before the check (plans, an ejected Dockerfile) only an
    explicit `server.worker-memory` is known."""
    if memory is None:
        memory = WorkerMemory(configured, None, CONFIGURED if configured is not None else None)
    return {
        "worker_memory_mb": memory.worker_mib,
        "worker_memory_origin": memory.origin,
        "master_memory_mb": memory.master_mib,
    }


def labels(memory: WorkerMemory | None) -> dict[str, str]:
    """Image labels, so `docker inspect` (and tooling) can see what a worker costs."""
    if memory is None:
        return {}
    found = {}
    if memory.worker_mib is not None and memory.origin is not None:
        found[LABEL_WORKER] = str(memory.worker_mib)
        found[LABEL_ORIGIN] = memory.origin
    if memory.master_mib is not None:
        found[LABEL_MASTER] = str(memory.master_mib)
    return found


def describe(memory: WorkerMemory) -> str:
    """One phrase for the build's progress line."""
    if memory.worker_mib is None:
        return "worker memory not measured"
    master = f" + ~{memory.master_mib} MiB master" if memory.master_mib else ""
    return f"~{memory.worker_mib} MiB per worker{master} ({memory.origin})"
