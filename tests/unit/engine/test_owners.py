"""Owner liveness (owners.py) on this machine's real /proc and a fake one. The venv
claim logic that acts on it is tested with the builder stage (tests/unit/builder)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pydeploy.engine import owners
from pydeploy.engine.owners import Owner

ME = owners.this_process()
ELSEWHERE = Owner("0123456789ab", 4242, "777")


def dead_owner() -> Owner:
    """A process of this host that has ended (its pid may be reused: the start time
    tells the new one apart)."""
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as child:
        started = owners.start_time(child.pid)
        child.kill()
        child.wait()
    return Owner(ME.host, child.pid, started)


# --- owners -----------------------------------------------------------------------


def test_an_owner_label_round_trips_and_junk_is_not_an_owner() -> None:
    assert Owner.parse(ME.label()) == ME
    assert Owner.parse(ELSEWHERE.label()) == ELSEWHERE
    for junk in (None, "", "host", "host/x/1", "/12/3"):
        assert Owner.parse(junk) is None
    assert ELSEWHERE.describe(ME) == "pid 4242 on host 0123456789ab"
    assert ME.describe(ME) == f"pid {ME.pid} on this host"


def test_start_time_reads_field_22_past_a_command_name_with_spaces(tmp_path: Path) -> None:
    (tmp_path / "77").mkdir()
    fields = ["S", *[str(n) for n in range(4, 22)], "123456", "999"]
    (tmp_path / "77" / "stat").write_text("77 (a (weird) name) " + " ".join(fields))
    assert owners.start_time(77, tmp_path) == "123456"
    assert owners.start_time(78, tmp_path) == ""


def test_liveness_is_exact_on_this_host_and_unknown_elsewhere() -> None:
    assert ME.started, "this machine has /proc"
    assert owners.is_alive(ME, ME) is True
    assert owners.is_alive(dead_owner(), ME) is False
    reused = Owner(ME.host, ME.pid, str(int(ME.started) - 1))  # same pid, earlier process
    assert owners.is_alive(reused, ME) is False
    assert owners.is_alive(ELSEWHERE, ME) is None


def test_orphaned_containers() -> None:
    grace = owners.IDLE_GRACE_SECONDS
    dead = dead_owner().label()
    assert owners.orphaned(dead, running=True, idle_seconds=0, me=ME)
    assert owners.orphaned(dead, running=False, idle_seconds=0, me=ME)
    assert not owners.orphaned(ME.label(), running=False, idle_seconds=grace * 9, me=ME)
    # Another host's: running ones die with their owner; stopped ones are read briefly.
    other = ELSEWHERE.label()
    assert not owners.orphaned(other, running=True, idle_seconds=grace * 9, me=ME)
    assert not owners.orphaned(other, running=False, idle_seconds=grace - 1, me=ME)
    assert owners.orphaned(other, running=False, idle_seconds=grace + 1, me=ME)
    assert not owners.orphaned(None, running=False, idle_seconds=grace * 9, me=ME)
