"""The venv volume claim (stage._reuse_or_claim) against the fake engine and a fake
clock: a free volume is claimed and pinned, a dead owner's claim is taken over at once, a
live one is waited for (visibly, for a bounded time), another host's owner is judged by
its running containers, and a volume removed under a build is claimed afresh."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

import pytest
from tests.unit.builder.fake_engine import BASE, BASE_ID, Clock, FakeContainer, FakeEngine

from pydeploy import cachekeys
from pydeploy.builder import stage
from pydeploy.engine import owners
from pydeploy.engine.owners import Owner
from pydeploy.engine.types import Mount
from pydeploy.errors import BuildError

ME = owners.this_process()
ELSEWHERE = Owner("0123456789ab", 4242, "777")
VOLUME = "pydeploy-venv-0123456789abcdef"
KEY = "k" * 64
BUILDER = stage.BuilderImage(BASE, BASE_ID, stage.PythonInfo("/p", "3.11.2", "lib"), "x")


def dead_owner() -> Owner:
    """A process of this host that has ended (its pid may be reused: the start time
    tells the new one apart)."""
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as child:
        started = owners.start_time(child.pid)
        child.kill()
        child.wait()
    return Owner(ME.host, child.pid, started)


def complete(engine: FakeEngine) -> None:
    """The filler finishes: its marker lands in the volume."""
    marker = {"key": KEY, "pins": ["a==1"]}
    engine.volumes[VOLUME].files[cachekeys.MARKER] = json.dumps(marker).encode()


def owner_of(engine: FakeEngine) -> str:
    return engine.volumes[VOLUME].labels[cachekeys.LABEL_OWNER]


def claim(engine: FakeEngine) -> tuple[Any, dict[str, Any] | None, list[str]]:
    said: list[str] = []
    pin, marker = stage._reuse_or_claim(
        engine, BUILDER, VOLUME, KEY, lambda _s, _e, detail: said.append(detail or "")
    )
    return pin, marker, said


def test_a_free_volume_is_claimed_and_pinned(engine: FakeEngine, clock: Clock) -> None:
    pin, marker, said = claim(engine)
    assert marker is None
    labels = engine.volumes[VOLUME].labels
    assert labels[cachekeys.LABEL_OWNER] == engine.build_id
    assert Owner.parse(labels[cachekeys.LABEL_OWNER_PROCESS]) == ME
    assert engine.pins == [pin]
    assert any(m.source == VOLUME for m in pin.mounts)
    assert said == []
    assert clock.sleeps == 0


def test_a_dead_owners_claim_is_taken_over_at_once(engine: FakeEngine, clock: Clock) -> None:
    engine.claim(VOLUME, "killedbuild0", dead_owner(), KEY)
    engine.volumes[VOLUME].files["bin/python"] = b"half-written"
    pin, marker, _said = claim(engine)
    assert marker is None
    assert owner_of(engine) == engine.build_id
    assert "bin/python" not in engine.volumes[VOLUME].files
    assert engine.reaped == 1, "the dead build's containers were reaped"
    assert clock.sleeps == 0, "no waiting for a build known to be dead"
    assert engine.pins == [pin]


def test_a_live_owner_is_waited_for_visibly_and_its_venv_reused(
    engine: FakeEngine, clock: Clock
) -> None:
    engine.claim(VOLUME, "livebuild000", ME, KEY)  # this very process (build --all): alive
    engine.others["livebuild000"] = 2  # its pin and its install
    clock.on_sleep = lambda n: complete(engine) if n == 5 else None
    pin, marker, said = claim(engine)
    assert marker is not None
    assert marker["pins"] == ["a==1"]
    assert said[0] == f"waiting for build livebuild000 (pid {ME.pid} on this host) holding {VOLUME}"
    assert owner_of(engine) == "livebuild000", "not taken over"
    assert engine.pins == [pin]


def test_the_wait_for_a_live_owner_is_bounded(engine: FakeEngine, clock: Clock) -> None:
    engine.claim(VOLUME, "stuckbuild00", ME, KEY)
    engine.others["stuckbuild00"] = 1
    with pytest.raises(BuildError, match=r"stuckbuild00.*20 minutes") as caught:
        claim(engine)
    assert "pydeploy.build=stuckbuild00" in caught.value.message
    assert clock.now - 1000.0 <= stage.OWNER_WAIT_SECONDS + 2
    assert engine.pins == []


def test_another_hosts_owner_is_judged_by_its_running_containers(
    engine: FakeEngine, clock: Clock
) -> None:
    engine.claim(VOLUME, "remotebuild0", ELSEWHERE, KEY)
    engine.others["remotebuild0"] = 1

    def remote(sleeps: int) -> None:
        if sleeps == 100:
            engine.others["remotebuild0"] = 0  # killed: its containers ended with it

    clock.on_sleep = remote
    started = clock.now
    _pin, marker, said = claim(engine)
    assert marker is None
    assert owner_of(engine) == engine.build_id
    waited = clock.now - started
    grace = stage.CLAIM_GRACE_SECONDS
    assert 99 + grace <= waited <= 100 + grace + 3, "taken over once quiet for the grace"
    assert f"(pid 4242 on host {ELSEWHERE.host})" in said[0]
    gone = f"build remotebuild0 (pid 4242 on host {ELSEWHERE.host}) is gone; taking over"
    assert said[-1] == f"{gone} {VOLUME}"


def test_a_live_process_whose_build_runs_nothing_is_not_filling(
    engine: FakeEngine, clock: Clock
) -> None:
    """E.g. a library user's engine whose failed install could not remove the volume."""
    engine.claim(VOLUME, "idlebuild000", ME, KEY)
    _pin, marker, said = claim(engine)
    assert marker is None
    assert owner_of(engine) == engine.build_id
    assert stage.CLAIM_GRACE_SECONDS <= clock.now - 1000.0 <= stage.CLAIM_GRACE_SECONDS + 2
    assert said[-1].endswith(f"is gone; taking over {VOLUME}")


class PrunedFirst(FakeEngine):
    """`prune` removes the volume between its marker read and this build's pin."""

    def pin(self, image: str, mounts: Iterable[Mount] = ()) -> FakeContainer:
        labels = self.volume_labels(VOLUME) or {}
        if labels.get(cachekeys.LABEL_OWNER) not in {None, self.build_id}:
            self.remove_unused_volume(VOLUME)
        return super().pin(image, mounts)


def test_a_volume_removed_before_the_pin_is_claimed_afresh(clock: Clock) -> None:
    engine = PrunedFirst()
    engine.claim(VOLUME, "olderbuild00", None, KEY)
    complete(engine)
    pin, marker, _said = claim(engine)
    assert marker is None, "the complete volume vanished: this build fills a new one"
    assert owner_of(engine) == engine.build_id
    assert engine.pins == [pin]
    assert clock.sleeps == 0
