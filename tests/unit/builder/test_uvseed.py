"""The host's uv lent to the builder: only the pinned version, only where it can run, and
checked again inside the container before it is used."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from pydeploy.builder import uvseed
from pydeploy.cachekeys import UV_VERSION
from pydeploy.config.toml import read_toml
from pydeploy.payload import builder_script

ROOT = Path(__file__).resolve().parents[3]


def test_pydeploy_depends_on_exactly_the_builder_s_uv() -> None:
    project = read_toml(ROOT / "pyproject.toml")
    assert f"uv=={UV_VERSION}" in project["project"]["dependencies"]


def test_the_host_binary_is_offered_for_the_host_s_architecture_only() -> None:
    native = {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine()]
    found = uvseed.host_binary(native)
    if sys.platform != "linux":  # a macOS binary never runs in a Linux builder
        assert found is None
        return
    assert found is not None
    assert found.is_file()
    foreign = "arm64" if native == "amd64" else "amd64"
    assert uvseed.host_binary(foreign) is None


def test_the_builder_uses_a_seed_only_when_it_runs_and_is_the_pinned_version(
    tmp_path: Path,
) -> None:
    def fake(name: str, prints: str, code: int = 0) -> str:
        path = tmp_path / name
        path.write_text(f"#!/bin/sh\necho '{prints}'\nexit {code}\n", encoding="utf-8")
        path.chmod(0o755)
        return str(path)

    assert builder_script.seed_runs(fake("good", f"uv {UV_VERSION} (abc 2026-01-01)"), UV_VERSION)
    assert not builder_script.seed_runs(fake("old", "uv 0.4.0"), UV_VERSION)
    assert not builder_script.seed_runs(fake("broken", f"uv {UV_VERSION}", 1), UV_VERSION)
    assert not builder_script.seed_runs(str(tmp_path / "missing"), UV_VERSION)
    assert not builder_script.seed_runs("", UV_VERSION)
