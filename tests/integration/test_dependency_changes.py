"""A dependency change against a real engine: the install reuses the previous venv's
bytecode, the `docker` output leaves the layers uncompressed, and the image is the one a
from-scratch build of the same pins makes, down to the manifest a registry gets."""

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
    from tests.integration.conftest import Resources

ROOT = Path(__file__).resolve().parents[2]
FASTAPI = ROOT / "examples" / "fastapi-app"
REUSED = "unchanged files' bytecode from the previous venv"


def build(
    project: Path, base: str, cache: Path, resources: Resources, *extra: str
) -> tuple[dict[str, Any], str]:
    """`pydeploy build --json` with its own host cache; the result and the transcript.
    Every venv volume and image it makes is the test's to remove."""
    env = {**os.environ, "PYDEPLOY_CACHE_DIR": str(cache)}
    proc = subprocess.run(
        [sys.executable, "-m", "pydeploy", "build", str(project), "--base", base,
         "--network", "host", "--json", *extra],
        capture_output=True, text=True, check=False, env=env, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    resources.volume(result["dependencies"]["volume"])
    resources.image(result["image_id"])
    return result, proc.stderr


def own_layers(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(la["role"], la["diff_id"]) for la in result["layers"] if la["role"] != "base"]


def test_an_added_dependency_builds_the_from_scratch_image(
    base_image: str, tmp_path: Path, resources: Resources
) -> None:
    project = tmp_path / "app"
    shutil.copytree(FASTAPI, project)
    # A requirement no other build has: fresh venv volumes, whatever the engine holds.
    marker = f"!=0.0.{int(uuid.uuid4().hex[:8], 16)}"
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('"fastapi>=0.110"', f'"fastapi>=0.110,{marker}"'))
    cache = tmp_path / "cache"
    first, said = build(project, base_image, cache, resources)
    assert first["dependencies"]["cached"] is False
    assert REUSED not in said  # nothing to start from

    pyproject.write_text(
        text.replace('"fastapi>=0.110"', f'"fastapi>=0.110,{marker}", "python-dateutil{marker}"')
    )
    tag = resources.image(f"pydeploy-test/deps-change:{uuid.uuid4().hex[:8]}")
    changed, said = build(project, base_image, cache, resources, "--tag", tag)
    assert changed["dependencies"]["cached"] is False
    assert REUSED in said
    # The `docker` output needs no gzip: each layer is its plain tar.
    assert all(la["digest"] == la["diff_id"] for la in changed["layers"] if la["role"] != "base")
    # The same cache pushing the same image: the layers gzipped now, lazily.
    layout = tmp_path / "incremental"
    pushed, _ = build(project, base_image, cache, resources, "--output", f"oci:{layout}")
    assert pushed["image_id"] == changed["image_id"]
    assert all(la["digest"] != la["diff_id"] for la in pushed["layers"])

    # From scratch: no previous venv (another host cache), no venv volume of these pins.
    resources.cleanup()
    scratch_layout = tmp_path / "scratch"
    scratch, said = build(
        project, base_image, tmp_path / "cache-b", resources, "--output", f"oci:{scratch_layout}"
    )
    assert scratch["dependencies"]["cached"] is False
    assert REUSED not in said
    assert scratch["dependencies"]["pins"] == changed["dependencies"]["pins"]
    assert own_layers(scratch) == own_layers(changed)
    assert scratch["image_id"] == changed["image_id"]
    assert scratch["manifest_digest"] == pushed["manifest_digest"]
    index = (layout / "index.json").read_bytes()
    assert (scratch_layout / "index.json").read_bytes() == index
