"""Build commands on the real engine: a Django site with DEBUG off whose static files are
collected at build without being asked (WhiteNoise serves the hashed, compressed copies),
a failing command that fails the build with its own exit code, and the build layer cached
by what reaches the commands."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from pydeploy.errors import BuildCommandError

if TYPE_CHECKING:
    from tests.integration.conftest import BuildImage, Resources, RunPydeploy, WaitHttp

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    with _direct.open(request, timeout=10) as response:
        # Header names as sent (uvicorn sends them lower-case): compare them lower-cased.
        headers = {name.lower(): value for name, value in response.headers.items()}
        return response.status, headers, response.read()


def test_django_static_files_are_collected_and_served_with_debug_off(
    tmp_path: Path,
    run_pydeploy: RunPydeploy,
    pydeploy_build: BuildImage,
    resources: Resources,
    free_port: int,
    wait_http: WaitHttp,
) -> None:
    project = tmp_path / "shop"
    shutil.copytree(FIXTURES / "django_static_app", project)
    plan = run_pydeploy("plan", "--json", str(project), cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    (command,) = json.loads(plan.stdout)["build_commands"]
    assert command["command"] == ["python", "manage.py", "collectstatic", "--noinput"]
    assert command["origin"].startswith("automatic: Django staticfiles")

    image = pydeploy_build(project, "django-static")
    env = {"PORT": str(free_port), "DJANGO_SECRET_KEY": "a-real-secret-at-run-time"}
    container = resources.create(image, environment=env, read_only=True, tmpfs={"/tmp": ""})
    container.start()
    page = wait_http(f"http://127.0.0.1:{free_port}/")
    match = re.search(r'href="(/static/pages/site\.[0-9a-f]{12}\.css)"', page)
    assert match, page  # the manifest storage found its hashed copy: collectstatic ran
    status, headers, body = get(
        f"http://127.0.0.1:{free_port}{match.group(1)}", {"Accept-Encoding": "gzip"}
    )
    assert status == 200
    assert headers.get("content-encoding") == "gzip"
    assert body[:2] == b"\x1f\x8b"
    # The placeholder secret exists only during the build.
    config = resources.client.images.get(image).attrs["Config"]
    assert not any("placeholder" in item for item in config.get("Env") or [])


def test_a_failing_build_command_fails_the_build_with_its_output(
    tmp_path: Path, run_pydeploy: RunPydeploy, base_image: str
) -> None:
    project = tmp_path / "shop"
    shutil.copytree(FIXTURES / "django_static_app", project)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            "[tool.pydeploy.check-env]",
            'build-commands = ["echo compiling; echo broken >&2; exit 3"]\n\n'
            "[tool.pydeploy.check-env]",
        )
    )
    proc = run_pydeploy(
        "build", str(project), "--base", base_image, "--network", "host", "--tag",
        "pydeploy-test/never:1", "--output", f"oci:{tmp_path / 'out'}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == BuildCommandError.exit_code, proc.stderr
    assert "echo compiling; echo broken >&2; exit 3" in proc.stderr
    assert "tool.pydeploy.build-commands[0]" in proc.stderr
    assert "exit code 3" in proc.stderr
    assert "broken" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
