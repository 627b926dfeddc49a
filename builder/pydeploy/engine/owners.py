"""Who owns a builder container or a venv claim, and whether that owner still lives.

An owner is one pydeploy process: a host id, its pid and its start time. Pids compare
only within one pid namespace of one boot, so the host id is made of exactly those (two
CI jobs in two containers of one machine are two hosts). On the owner's own host the
answer is exact (/proc/<pid> with the same start time, so a reused pid is not mistaken
for the owner); elsewhere it cannot be read, and callers judge by what the engine shows
instead: an owner's running containers die with it (their stdin is its lifeline), so a
long-stopped container of another host's owner is an orphan.

Pure apart from reading /proc; the root is a parameter so tests can fake it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
# A stopped (or never started) container of another host's live build is read for at
# most this long (a venv export, a file read); after that nobody comes back for it.
IDLE_GRACE_SECONDS = 3600.0


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    started: str  # the process start time in clock ticks since boot; "" when unknown

    def label(self) -> str:
        return f"{self.host}/{self.pid}/{self.started}"

    @classmethod
    def parse(cls, text: str | None) -> Owner | None:
        host, _, rest = (text or "").partition("/")
        pid, _, started = rest.partition("/")
        if not host or not pid.isdigit():
            return None
        return cls(host, int(pid), started)

    def describe(self, me: Owner) -> str:
        """`pid 123 on this host` / `pid 123 on host 1a2b3c4d5e6f`."""
        where = "this host" if self.host == me.host else f"host {self.host}"
        return f"pid {self.pid} on {where}"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return ""


def start_time(pid: int, proc: Path = PROC) -> str:
    """Field 22 of /proc/<pid>/stat ("" when the process or /proc is missing). The
    command name (field 2) may hold spaces and parentheses: fields count from its end."""
    stat = _read(proc / str(pid) / "stat")
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def host_id(proc: Path = PROC) -> str:
    boot = _read(proc / "sys" / "kernel" / "random" / "boot_id")
    try:
        namespace = str((proc / "self" / "ns" / "pid").readlink())
    except OSError:
        namespace = ""
    # Without /proc (macOS, Windows) the host name is the best there is.
    seed = f"{boot}\n{namespace}" if boot else socket.gethostname()
    return hashlib.sha256(seed.encode()).hexdigest()[:12]


@functools.cache
def this_process() -> Owner:
    pid = os.getpid()
    return Owner(host_id(), pid, start_time(pid))


def is_alive(owner: Owner, me: Owner, proc: Path = PROC) -> bool | None:
    """Whether `owner` still runs: exact on this host, None (cannot tell) on another."""
    if owner.host != me.host:
        return None
    if owner.pid == me.pid and owner.started == me.started:
        return True
    if owner.started:
        return start_time(owner.pid, proc) == owner.started
    try:  # no start time recorded (no /proc there): the pid alone
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def orphaned(
    label: str | None, running: bool, idle_seconds: float, me: Owner, proc: Path = PROC
) -> bool:
    """Whether a container whose owner label is `label` may be removed by another build:
    its owner on this host is dead, or (another host) it has stood stopped for longer
    than any live build reads one. Containers without an owner label are not judged."""
    owner = Owner.parse(label)
    if owner is None:
        return False
    alive = is_alive(owner, me, proc)
    if alive is not None:
        return not alive
    return not running and idle_seconds > IDLE_GRACE_SECONDS
