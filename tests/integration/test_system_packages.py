"""Runtime system packages (`runtime-packages`): psycopg2 compiled against libpq-dev in
the builder runs against libpq5 in the image, and the apt layer is clean and repeatable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.integration.conftest import Resources, WaitHttp

ROOT = Path(__file__).resolve().parents[2]
PSYCOPG = ROOT / "tests" / "fixtures" / "psycopg_app"


def build(base: str, tag: str, cache: Path, *extra: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "pydeploy", "build", str(PSYCOPG), "--base", base,
         "--network", "host", "--tag", tag, "--json", *extra],
        capture_output=True, text=True, check=False, timeout=900,
        env={**os.environ, "PYDEPLOY_CACHE_DIR": str(cache)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_libpq_at_run_time_and_a_clean_repeatable_apt_layer(
    base_image: str, tmp_path: Path, resources: Resources, free_port: int, wait_http: WaitHttp
) -> None:
    tag = f"pydeploy-test/psycopg:{uuid.uuid4().hex[:10]}"
    resources.image(tag)
    first = build(base_image, tag, tmp_path / "cache-a", "--output", "docker",
                  "--output", f"oci:{tmp_path / 'layout'}")  # fmt: skip
    roles = [layer["role"] for layer in first["layers"] if layer["role"] != "base"]
    deps = [role for role in roles if role.startswith("dependencies-")]
    assert deps[0] == "dependencies-venv"
    assert [r for r in roles if r not in deps[1:]] == [
        "no-setuid", "system", "user", "dependencies-venv", "app", "launcher"
    ]  # fmt: skip

    container = resources.create(tag, environment={"PORT": str(free_port)})
    container.start()
    assert wait_http(f"http://127.0.0.1:{free_port}/").startswith("libpq ")
    _, out = container.exec_run(["/bin/sh", "-c", "command -v gcc cc; ls /var/lib/apt/lists"])
    assert isinstance(out, bytes)
    assert out.decode().strip() == "", "no compiler, no apt lists in the runtime image"

    system = next(la for la in first["layers"] if la["role"] == "system")
    blob = tmp_path / "layout" / "blobs" / "sha256" / system["digest"].split(":", 1)[1]
    with tarfile.open(blob, "r:gz") as tar:
        names = tar.getnames()
        modes = [m.mode for m in tar.getmembers()]
    assert any(n.startswith("usr/lib/") and "libpq.so.5" in n for n in names)
    assert not [
        n for n in names if n.startswith(("var/lib/apt/lists/", "var/log/", "var/cache/apt/"))
    ]
    assert not [m for m in modes if m & 0o6000], "no setuid/setgid files"

    # A clean pydeploy cache runs apt again and gets the same bytes.
    again = build(base_image, tag, tmp_path / "cache-b", "--output", f"oci:{tmp_path / 'again'}")
    assert again["image_id"] == first["image_id"]
