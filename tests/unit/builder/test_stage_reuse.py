"""What an install takes from work already done: the previous venv (mounted read-only for
its bytecode, only when the same builder image filled it) and, when the builder is the
runtime base itself, the shared-library scan run in the install's own container (trusted
only when the install wrote nothing where the loader looks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
from tests.unit.builder.conftest import MakePlan
from tests.unit.builder.fake_engine import FakeContainer, FakeEngine, Reply, installs, result

from pydeploy import cachekeys
from pydeploy.builder import stage, uvseed
from pydeploy.builder.transcript import Reporting
from pydeploy.payload import builder_script
from pydeploy.payload.builder_script import EXIT_NEEDS_UV_SEED, MARK, InstallJob
from pydeploy.plan.planner import BuildPlan

SCAN = {"files": 3, "missing": [], "seconds": 0.01}


def _scanning_install(changed: list[tuple[str, str]]) -> Any:
    """An install that reports a scan when asked for one, leaving `changed` behind."""
    plain = installs()

    def handler(box: FakeContainer) -> Reply:
        reply = plain(box)
        box.changed = changed
        scan = box.job["elf_scan"]
        if scan is None:
            return reply
        marker = {**_marker(reply), "elf_scan": {**SCAN, "library_path": scan["library_path"]}}
        return Reply([*reply.lines[:-1], result(marker)], reply.exit_code)

    return handler


def _marker(reply: Reply) -> dict[str, Any]:
    line = reply.lines[-1]
    loaded: dict[str, Any] = json.loads(line[len(MARK) + len("result ") :])
    return loaded


def _install(
    engine: FakeEngine, plan: BuildPlan, previous: stage.PreviousVenv | None = None
) -> stage.Dependencies:
    builder = stage.ensure_builder(engine, plan, lambda *_: None)
    return stage.install_dependencies(engine, plan, builder, Reporting(lambda *_: None), previous)


@pytest.mark.parametrize(
    ("changed", "trusted"),
    [
        ([("/run", "modified"), ("/run/pydeploy", "added"), ("/build/src/x", "added"),
          ("/tmp/uv-1", "added"), ("/root/.cache", "added"), ("/opt", "modified")], True),
        ([("/usr", "modified"), ("/usr/lib/libx.so.1", "added")], False),
        ([("/etc/ld.so.cache", "modified")], False),
    ],
    ids=["install-writes", "a-library-added", "the-loader-cache-changed"],
)  # fmt: skip
def test_the_install_s_scan_stands_only_when_the_loader_s_files_are_untouched(
    engine: FakeEngine, make: MakePlan, changed: list[tuple[str, str]], trusted: bool
) -> None:
    engine.handlers["install"] = _scanning_install(changed)
    plan = make()
    deps = _install(engine, plan)
    (box,) = engine.started("install")
    assert box.job["elf_scan"]["script"] == f"{stage.RUN_DIR}/elfdeps.py"
    assert f"{stage.RUN_DIR}/elfdeps.py" in box.files
    assert (deps.elf_scan is not None) is trusted
    if trusted:
        assert deps.elf_scan == {**SCAN, "library_path": ""}


def test_no_scan_is_asked_for_when_the_runtime_image_adds_packages(
    engine: FakeEngine, make: MakePlan
) -> None:
    engine.handlers["install"] = _scanning_install([])
    deps = _install(engine, make('runtime-packages = ["libpq5"]\n'))
    (box,) = engine.started("install")
    assert box.job["elf_scan"] is None
    assert deps.elf_scan is None


def test_no_scan_is_asked_for_in_a_builder_with_compilers(
    engine: FakeEngine, make: MakePlan
) -> None:
    engine.handlers["install"] = installs(needs_compilers=True)
    plan = make('build-packages = ["gcc"]\n')
    deps = _install(engine, plan)
    light, full = engine.started("install")
    assert light.image == plan.base_image
    assert light.job["elf_scan"] is not None  # the light builder is the base image
    assert full.image != plan.base_image
    assert full.job["elf_scan"] is None
    assert deps.elf_scan is None


def test_the_previous_venv_is_mounted_only_for_the_builder_that_filled_it(
    engine: FakeEngine, make: MakePlan
) -> None:
    engine.handlers["install"] = installs()
    plan = make()
    first = _install(engine, plan)
    builder_id = first.builder.image_id
    old = cachekeys.VENV_VOLUME_PREFIX + "1" * 16
    engine.create_volume(old, {cachekeys.LABEL_VENV: "1"})
    cases = [
        (stage.PreviousVenv(old, builder_id), True),
        (stage.PreviousVenv(old, "sha256:" + "f" * 64), False),  # another interpreter
        (stage.PreviousVenv(cachekeys.VENV_VOLUME_PREFIX + "0" * 16, builder_id), False),  # gone
        (stage.PreviousVenv(first.volume, builder_id), False),  # the one being filled
    ]
    for previous, mounted in cases:
        del engine.volumes[first.volume]  # installed again
        _install(engine, plan, previous)
        box = engine.started("install")[-1]
        found = [m for m in box.mounts if m.target == stage.PREVIOUS_VENV]
        assert box.job["previous"] == (stage.PREVIOUS_VENV if mounted else "")
        assert [(m.source, m.read_only) for m in found] == ([(old, True)] if mounted else [])


@pytest.mark.parametrize("has_uv", [True, False], ids=["volume-has-uv", "fresh-volume"])
def test_the_host_s_uv_is_sent_only_when_the_cache_volume_lacks_it(
    engine: FakeEngine, make: MakePlan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    has_uv: bool,
) -> None:  # fmt: skip
    seed = tmp_path / "uv"
    seed.write_bytes(b"\x7fELF uv")
    monkeypatch.setattr(uvseed, "host_binary", lambda _arch: seed)
    plain = installs()

    def handler(box: FakeContainer) -> Reply:
        job = box.job
        if job["uv_seed_offered"] and not job["uv_seed"] and not has_uv:
            return Reply([], EXIT_NEEDS_UV_SEED)  # as builder_script.main exits
        return plain(box)

    engine.handlers["install"] = handler
    _install(engine, make())
    boxes = engine.started("install")
    sent = [uvseed.SEED in box.files for box in boxes]
    assert sent == ([False] if has_uv else [False, True])
    assert boxes[-1].job["uv_seed"] == ("" if has_uv else uvseed.SEED)
    assert not engine.live() or all(box.pinned for box in engine.live())


def test_the_script_asks_for_the_seed_only_without_uv_and_with_one_offered(
    tmp_path: Path,
) -> None:
    uv_dir = tmp_path / "tools"
    job: dict[str, Any] = {"uv_dir": str(uv_dir), "uv_seed": "", "uv_seed_offered": True}
    assert builder_script.needs_uv_seed(cast("InstallJob", job))
    assert not builder_script.needs_uv_seed(cast("InstallJob", {**job, "uv_seed_offered": False}))
    assert not builder_script.needs_uv_seed(cast("InstallJob", {**job, "uv_seed": "/run/x/uv"}))
    (uv_dir / "bin").mkdir(parents=True)
    (uv_dir / "bin" / "uv").write_bytes(b"")
    (uv_dir / "bin" / "uv").chmod(0o755)
    assert not builder_script.needs_uv_seed(cast("InstallJob", job))


def test_changes_in_an_ld_library_path_directory_void_the_install_s_scan() -> None:
    written = [("/tmp", "modified"), ("/tmp/lib", "added"), ("/tmp/lib/libx.so.1", "added")]
    assert stage._loader_untouched(written)
    assert not stage._loader_untouched(written, "/opt/own:/tmp/lib")
    assert stage._loader_untouched(written, "/opt/own")
