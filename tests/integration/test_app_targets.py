"""App targets on the real engine (issue 12): an app factory called with literal
arguments under gunicorn, and a hatch src layout whose wheel renames the package, found
by detection as a zero-argument factory and served by uvicorn's `--factory`. Each image
is built with `pydeploy build` and asked over HTTP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.integration.conftest import BuildImage, Resources, RunPydeploy, WaitHttp

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _copy(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(FIXTURES / name, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_flask_factory_with_arguments_serves_what_the_call_built(
    tmp_path: Path,
    pydeploy_build: BuildImage,
    resources: Resources,
    free_port: int,
    wait_http: WaitHttp,
) -> None:
    project = _copy("factory_app", tmp_path)
    tag = pydeploy_build(project, "factory-app")
    container = resources.create(tag, environment={"PORT": str(free_port)})
    container.start()
    body = json.loads(wait_http(f"http://127.0.0.1:{free_port}/", timeout=60))
    # gunicorn called create_app("production", greeting=...) in the worker.
    assert body == {
        "config": "production",
        "greeting": "hello from the factory",
        "debug": False,
        "module": "factory_app",
    }
    logs = container.logs().decode("utf-8", "replace")
    assert "pydeploy-launcher: gunicorn" in logs, logs


def test_src_layout_renamed_by_the_wheel_is_detected_and_served_by_uvicorn_factory(
    tmp_path: Path,
    pydeploy_build: BuildImage,
    run_pydeploy: RunPydeploy,
    resources: Resources,
    free_port: int,
    wait_http: WaitHttp,
) -> None:
    project = _copy("srclayout_app", tmp_path)
    plan = run_pydeploy("plan", str(project), "--json", cwd=project)
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)
    # The wheel ships src/webapp as `shop`: detection names the installed import name.
    assert planned["app"]["target"] == "shop.main:create_app()"
    assert planned["server"]["command"][1:3] == ["shop.main:create_app", "--factory"]

    tag = pydeploy_build(project, "srclayout-app")
    container = resources.create(tag, environment={"PORT": str(free_port)})
    container.start()
    body = json.loads(wait_http(f"http://127.0.0.1:{free_port}/", timeout=60))
    assert body == {"package": "shop.main", "app": "srclayout"}
    logs = container.logs().decode("utf-8", "replace")
    assert "pydeploy-launcher: uvicorn" in logs, logs
