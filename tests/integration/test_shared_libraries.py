"""Shared libraries found at build time: psycopg2 compiled from its sdist against
libpq-dev, with `runtime-packages` left out. The build finds that the runtime image lacks
libpq.so.5, adds libpq5 (the builder's package for it) and says so; the image serves. With
`auto-runtime-packages = false` the same build fails naming the library and the key."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.integration.conftest import Resources, WaitHttp

ROOT = Path(__file__).resolve().parents[2]
LIBPQ = ROOT / "tests" / "fixtures" / "libpq_app"


def build(project: Path, base: str, tag: str, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pydeploy", "build", str(project), "--base", base,
         "--network", "host", "--tag", tag, "--json"],
        capture_output=True, text=True, check=False, timeout=900,
        env={**os.environ, "PYDEPLOY_CACHE_DIR": str(cache)},
    )  # fmt: skip


def library_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "shared libraries" in line]


def test_the_runtime_package_of_a_linked_library_is_added_and_the_image_serves(
    base_image: str, tmp_path: Path, resources: Resources, free_port: int, wait_http: WaitHttp
) -> None:
    tag = f"pydeploy-test/libpq:{uuid.uuid4().hex[:10]}"
    resources.image(tag)
    first = build(LIBPQ, base_image, tag, tmp_path / "cache")
    assert first.returncode == 0, first.stderr[-4000:]
    result: dict[str, Any] = json.loads(first.stdout)
    packages = result["runtime_packages"]
    assert packages["configured"] == []
    assert packages["automatic"] == ["libpq5"]
    [library] = packages["libraries"]
    assert library["soname"] == "libpq.so.5"
    assert library["package"] == "libpq5"
    assert any("psycopg2/_psycopg" in path for path in library["needed_by"])
    added = [line for line in library_lines(first.stderr) if "added runtime packages" in line]
    assert len(added) == 1, first.stderr[-3000:]
    assert "libpq5 (for psycopg2/_psycopg" in added[0]
    assert "needs libpq.so.5" in added[0]
    assert "system" in [layer["role"] for layer in result["layers"]]

    container = resources.create(tag, environment={"PORT": str(free_port)})
    container.start()
    assert wait_http(f"http://127.0.0.1:{free_port}/").startswith("libpq ")

    # No change: the check's answer comes from the cache (no scan, no builder lookup).
    again = build(LIBPQ, base_image, tag, tmp_path / "cache")
    assert again.returncode == 0, again.stderr[-4000:]
    lines = library_lines(again.stderr)
    assert [line for line in lines if "cached" in line and "added runtime packages" in line]
    assert not [line for line in lines if "looking up" in line]
    assert json.loads(again.stdout)["image_id"] == result["image_id"]


def test_with_auto_off_the_build_names_the_library_and_the_key(
    base_image: str, tmp_path: Path, resources: Resources
) -> None:
    project = tmp_path / "libpq_app"
    shutil.copytree(LIBPQ, project)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(
        text.replace("[tool.pydeploy]\n", "[tool.pydeploy]\nauto-runtime-packages = false\n"),
        encoding="utf-8",
    )
    tag = f"pydeploy-test/libpq-off:{uuid.uuid4().hex[:10]}"
    resources.image(tag)
    failed = build(project, base_image, tag, tmp_path / "cache")
    assert failed.returncode == 5, failed.stderr[-4000:]
    assert "libpq.so.5" in failed.stderr
    assert "psycopg2/_psycopg" in failed.stderr
    assert "`tool.pydeploy.runtime-packages`" in failed.stderr
    assert '"libpq5"' in failed.stderr
    assert "Traceback" not in failed.stderr
