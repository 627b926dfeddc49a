"""Owner liveness (owners.py) on this machine's real /proc and a fake one, and the venv
claim logic of wheels.py against a fake engine and a fake clock: a dead owner's claim is
taken over at once, a live one is waited for (visibly, for a bounded time), another
host's owner is judged by its running containers, and a volume removed under a build
is claimed afresh."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from pydeploy import cachekeys
from pydeploy.builder import stage as wheels
from pydeploy.engine import owners
from pydeploy.engine.client import Engine
from pydeploy.engine.owners import Owner
from pydeploy.engine.types import Mount
from pydeploy.errors import BuildError

ME = owners.this_process()
ELSEWHERE = Owner("0123456789ab", 4242, "777")
VOLUME = "pydeploy-venv-0123456789abcdef"
KEY = "k" * 64


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


# --- the venv claim -----------------------------------------------------------------


class FakeBox:
    def __init__(self, engine: FakeEngine, mounts: list[Mount]) -> None:
        self.engine, self.mounts = engine, mounts

    def _volume(self, path: str) -> tuple[str, str]:
        for mount in self.mounts:
            if path.startswith(mount.target + "/"):
                return mount.source, path[len(mount.target) + 1 :]
        raise AssertionError(path)

    def read_file(self, path: str) -> bytes | None:
        return self.engine.files.get(self._volume(path))

    def put_files(self, directory: str, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            self.engine.files[self._volume(f"{directory}/{name}")] = data


class FakeEngine:
    """The part of Engine the claim logic uses. Volumes are label dicts; mounting a
    missing volume creates it without labels, as the real engine does."""

    def __init__(self) -> None:
        self.build_id = "thisbuild000"
        self.owner = ME
        self.volumes: dict[str, dict[str, str]] = {}
        self.files: dict[tuple[str, str], bytes] = {}
        self.running: dict[str, int] = {}  # build id -> running containers
        self.pins: list[FakeBox] = []
        self.removed: list[str] = []
        self.reaped = 0

    def _mount(self, mounts: Any) -> list[Mount]:
        found: list[Mount] = list(mounts)
        for mount in found:
            self.volumes.setdefault(mount.source, {})
        return found

    def volume_labels(self, name: str) -> dict[str, str] | None:
        return dict(self.volumes[name]) if name in self.volumes else None

    def create_volume(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.volumes.setdefault(name, dict(labels or {}))

    def remove_unused_volume(self, name: str) -> bool:
        if any(m.source == name for box in self.pins for m in box.mounts):
            return False
        self.volumes.pop(name, None)
        self.files = {k: v for k, v in self.files.items() if k[0] != name}
        self.removed.append(name)
        return True

    @contextlib.contextmanager
    def container(self, _image: str, _argv: list[str], **options: Any) -> Iterator[FakeBox]:
        yield FakeBox(self, self._mount(options.get("mounts", ())))

    def pin(self, _image: str, mounts: Any = ()) -> FakeBox:
        box = FakeBox(self, self._mount(mounts))
        self.pins.append(box)
        return box

    def unpin(self, box: FakeBox) -> None:
        self.pins.remove(box)

    def containers_with_label(self, build_id: str | None = None, **_: bool) -> list[str]:
        """Running or not: the claim logic asks only for running ones."""
        return ["c"] * self.running.get(build_id or self.build_id, 0)

    def reap_orphans(self) -> list[str]:
        self.reaped += 1
        return []

    def remove(self, ident: str) -> None:
        pass

    def claim(self, build: str, owner: Owner | None) -> dict[str, str]:
        labels = {cachekeys.LABEL_VENV_KEY: KEY, cachekeys.LABEL_OWNER: build, "pydeploy.venv": "1"}
        if owner is not None:
            labels[cachekeys.LABEL_OWNER_PROCESS] = owner.label()
        self.volumes[VOLUME] = labels
        return labels

    def complete(self) -> None:
        self.files[VOLUME, cachekeys.MARKER] = json.dumps({"key": KEY, "pins": ["a==1"]}).encode()


class Clock:
    """time.monotonic / time.sleep for wheels: sleeping advances the clock and runs the
    test's `on_sleep` (what the other build does meanwhile)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        self.sleeps = 0
        self.on_sleep: Any = None
        monkeypatch.setattr(time, "monotonic", lambda: self.now)
        monkeypatch.setattr(time, "sleep", self.sleep)

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        if self.on_sleep:
            self.on_sleep(self.sleeps)


BUILDER = wheels.BuilderImage("base", "sha256:b", wheels.PythonInfo("/p", "3.11.2", "lib"), "x")


def claim(engine: FakeEngine) -> tuple[Any, dict[str, Any] | None, list[str]]:
    said: list[str] = []
    pin, marker = wheels._reuse_or_claim(
        cast(Engine, engine), BUILDER, VOLUME, KEY, lambda _s, _e, detail: said.append(detail or "")
    )
    return pin, marker, said


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


def test_a_free_volume_is_claimed_and_pinned(clock: Clock) -> None:
    engine = FakeEngine()
    pin, marker, said = claim(engine)
    assert marker is None
    labels = engine.volumes[VOLUME]
    assert labels[cachekeys.LABEL_OWNER] == engine.build_id
    assert Owner.parse(labels[cachekeys.LABEL_OWNER_PROCESS]) == ME
    assert engine.pins == [pin]
    assert any(m.source == VOLUME for m in pin.mounts)
    assert said == []
    assert clock.sleeps == 0


def test_a_dead_owners_claim_is_taken_over_at_once(clock: Clock) -> None:
    engine = FakeEngine()
    engine.claim("killedbuild0", dead_owner())
    engine.files[VOLUME, "bin/python"] = b"half-written"
    pin, marker, _said = claim(engine)
    assert marker is None
    assert engine.volumes[VOLUME][cachekeys.LABEL_OWNER] == engine.build_id
    assert (VOLUME, "bin/python") not in engine.files
    assert engine.reaped == 1, "the dead build's containers were reaped"
    assert clock.sleeps == 0, "no waiting for a build known to be dead"
    assert engine.pins == [pin]


def test_a_live_owner_is_waited_for_visibly_and_its_venv_reused(clock: Clock) -> None:
    engine = FakeEngine()
    engine.claim("livebuild000", ME)  # this very process (build --all): certainly alive
    engine.running["livebuild000"] = 2  # its pin and its install
    clock.on_sleep = lambda n: engine.complete() if n == 5 else None
    pin, marker, said = claim(engine)
    assert marker is not None
    assert marker["pins"] == ["a==1"]
    assert said[0] == f"waiting for build livebuild000 (pid {ME.pid} on this host) holding {VOLUME}"
    assert engine.volumes[VOLUME][cachekeys.LABEL_OWNER] == "livebuild000", "not taken over"
    assert engine.pins == [pin]


def test_the_wait_for_a_live_owner_is_bounded(clock: Clock) -> None:
    engine = FakeEngine()
    engine.claim("stuckbuild00", ME)
    engine.running["stuckbuild00"] = 1
    with pytest.raises(BuildError, match=r"stuckbuild00.*20 minutes") as caught:
        claim(engine)
    assert "pydeploy.build=stuckbuild00" in caught.value.message
    assert clock.now - 1000.0 <= wheels.OWNER_WAIT_SECONDS + 2
    assert engine.pins == []


def test_another_hosts_owner_is_judged_by_its_running_containers(clock: Clock) -> None:
    engine = FakeEngine()
    engine.claim("remotebuild0", ELSEWHERE)
    engine.running["remotebuild0"] = 1

    def remote(sleeps: int) -> None:
        if sleeps == 100:
            engine.running["remotebuild0"] = 0  # killed: its containers ended with it

    clock.on_sleep = remote
    started = clock.now
    _pin, marker, said = claim(engine)
    assert marker is None
    assert engine.volumes[VOLUME][cachekeys.LABEL_OWNER] == engine.build_id
    waited = clock.now - started
    grace = wheels.CLAIM_GRACE_SECONDS
    assert 99 + grace <= waited <= 100 + grace + 3, "taken over once quiet for the grace"
    assert f"(pid 4242 on host {ELSEWHERE.host})" in said[0]
    gone = f"build remotebuild0 (pid 4242 on host {ELSEWHERE.host}) is gone; taking over"
    assert said[-1] == f"{gone} {VOLUME}"


def test_a_live_process_whose_build_runs_nothing_is_not_filling(clock: Clock) -> None:
    """E.g. a library user's engine whose failed install could not remove the volume."""
    engine = FakeEngine()
    engine.claim("idlebuild000", ME)
    _pin, marker, said = claim(engine)
    assert marker is None
    assert engine.volumes[VOLUME][cachekeys.LABEL_OWNER] == engine.build_id
    assert wheels.CLAIM_GRACE_SECONDS <= clock.now - 1000.0 <= wheels.CLAIM_GRACE_SECONDS + 2
    assert said[-1].endswith(f"is gone; taking over {VOLUME}")


class PrunedFirst(FakeEngine):
    """`prune` removes the volume between its marker read and this build's pin."""

    def pin(self, _image: str, mounts: Any = ()) -> FakeBox:
        if self.volumes.get(VOLUME, {}).get(cachekeys.LABEL_OWNER) not in {None, self.build_id}:
            self.remove_unused_volume(VOLUME)
        return super().pin(_image, mounts)


def test_a_volume_removed_before_the_pin_is_claimed_afresh(clock: Clock) -> None:
    engine = PrunedFirst()
    engine.claim("olderbuild00", None)
    engine.complete()
    pin, marker, _said = claim(engine)
    assert marker is None, "the complete volume vanished: this build fills a new one"
    assert engine.volumes[VOLUME][cachekeys.LABEL_OWNER] == engine.build_id
    assert engine.pins == [pin]
    assert clock.sleeps == 0
