"""The plan is the single source of truth: index settings, the CA bundle, credential
variable NAMES, launch and healthcheck settings, the server policy, the Python pin, the
dependency selection and the resources are resolved into the frozen, typed BuildPlan, from
the environment the caller passes (never os.environ behind its back)."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest

from pydeploy.config.project import load_project
from pydeploy.errors import ConfigError
from pydeploy.layers import assemble
from pydeploy.payload import launcher
from pydeploy.plan.index import IndexPlan
from pydeploy.plan.launch import Healthcheck, LaunchSettings, ServerPolicy
from pydeploy.plan.memory import CONFIGURED, MEASURED, WorkerMemory
from pydeploy.plan.planner import BuildPlan, DependencyPlan, Overrides, PythonPin, make_plan


def write_project(root: Path, table: str = "", files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [project]
            name = "shop"
            version = "2.0"
            requires-python = ">=3.10"
            dependencies = ["flask>=3"]

            [tool.pydeploy]
            app = "app:app"
            """
        )
        + textwrap.dedent(table),
        encoding="utf-8",
    )
    (root / "app.py").write_text("from flask import Flask\napp = Flask(__name__)\n", "utf-8")
    for name, text in (files or {}).items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def plan_of(
    root: Path, environ: dict[str, str] | None = None, python: str | None = None
) -> BuildPlan:
    return make_plan(
        load_project(root), Overrides(base_image="local/base:1", python=python), environ
    )


PRIVATE = """\
    [tool.pydeploy.index]
    url = "https://pkgs.example/simple"
    extra-urls = ["https://extra.example/simple"]
    ca-bundle = "certs/proxy.pem"
    username-env = "SHOP_USER"
    password-env = "SHOP_TOKEN"
    """


# --- index settings ------------------------------------------------------------------------


def test_index_settings_are_resolved_with_names_not_values(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", PRIVATE)
    (root / "certs").mkdir()
    (root / "certs" / "proxy.pem").write_text("pem", encoding="utf-8")
    environ = {"SHOP_USER": "robot-user-1234", "SHOP_TOKEN": "s3cr3t-token-value"}
    plan = plan_of(root, environ)
    assert plan.index == IndexPlan(
        url="https://pkgs.example/simple",
        extra_urls=("https://extra.example/simple",),
        ca_bundle=root / "certs" / "proxy.pem",
        ca_bundle_origin="tool.pydeploy.index.ca-bundle",
        username_env="SHOP_USER",
        password_env="SHOP_TOKEN",  # noqa: S106 - a variable's NAME
    )
    shown = json.dumps(plan.to_json())
    for value in environ.values():
        assert value not in shown
        assert value not in repr(plan)
    index = plan.to_json()["index"]
    assert index["credentials"] == {"username_env": "SHOP_USER", "password_env": "SHOP_TOKEN"}
    assert index["ca_bundle"]["path"] == str(root / "certs" / "proxy.pem")


def test_the_ca_bundle_comes_from_the_environment_passed_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_project(tmp_path / "p")
    bundle = tmp_path / "host.pem"
    bundle.write_text("pem", encoding="utf-8")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("PIP_CERT", str(bundle))
    # Planning never reads os.environ itself: without an environment, no host bundle.
    assert plan_of(root).index.ca_bundle is None
    assert plan_of(root, {}).index.ca_bundle is None
    given = plan_of(root, {"REQUESTS_CA_BUNDLE": str(bundle)}).index
    assert (given.ca_bundle, given.ca_bundle_origin) == (bundle, "REQUESTS_CA_BUNDLE")
    # The same project and environment always give the same plan.
    assert (
        plan_of(root, {"REQUESTS_CA_BUNDLE": str(bundle)}).to_json()
        == plan_of(root, {"REQUESTS_CA_BUNDLE": str(bundle)}).to_json()
    )


def test_a_configured_ca_bundle_wins_and_must_exist(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", '[tool.pydeploy.index]\nca-bundle = "ca.pem"\n')
    with pytest.raises(ConfigError, match=r"tool\.pydeploy\.index\.ca-bundle"):
        plan_of(root)
    (root / "ca.pem").write_text("pem", encoding="utf-8")
    other = tmp_path / "other.pem"
    other.write_text("pem", encoding="utf-8")
    assert plan_of(root, {"SSL_CERT_FILE": str(other)}).index.ca_bundle == root / "ca.pem"


def test_credentials_are_not_needed_to_plan(tmp_path: Path) -> None:
    """The values are read by the build (builder/credentials.py); a plan only names them."""
    root = write_project(tmp_path / "p", PRIVATE.replace('ca-bundle = "certs/proxy.pem"\n', ""))
    assert plan_of(root, {}).index.password_env == "SHOP_TOKEN"  # noqa: S105


# --- launch, healthcheck, server policy ---------------------------------------------------------

SERVER = """\
    [tool.pydeploy.server]
    type = "gunicorn"
    interface = "wsgi"
    workers = 3
    worker-memory = 96
    wsgi-worker = "sync"
    threads = 2
    forwarded-allow-ips = ["10.0.0.0/8", "127.0.0.1"]
    extra-args = ["--backlog", "64"]
    [tool.pydeploy.healthcheck]
    path = "/healthz"
    interval = 7
    timeout = 2
    start-period = 4
    retries = 5
    """


def test_server_policy_and_healthcheck_are_typed(tmp_path: Path) -> None:
    plan = plan_of(write_project(tmp_path / "p", SERVER))
    assert plan.server_policy == ServerPolicy("gunicorn", "wsgi", 96, "sync")
    origin = "tool.pydeploy.healthcheck.path: a 2xx or 3xx answer is healthy"
    assert plan.healthcheck == Healthcheck("/healthz", 7, 2, 4, 5, 400, origin)
    data = plan.to_json()
    assert data["server"]["policy"] == {
        "type": "gunicorn",
        "interface": "wsgi",
        "worker_memory": 96,
        "wsgi_worker": "sync",
    }
    assert data["healthcheck"] == {
        "path": "/healthz",
        "interval": 7,
        "timeout": 2,
        "start_period": 4,
        "retries": 5,
        "healthy_below": 400,
        "origin": origin,
    }


def test_a_disabled_healthcheck_still_gives_the_launcher_its_path(tmp_path: Path) -> None:
    table = '[tool.pydeploy.healthcheck]\nenabled = false\npath = "/up"\ntimeout = 9\n'
    plan = plan_of(write_project(tmp_path / "p", table))
    assert plan.healthcheck is None
    assert plan.to_json()["healthcheck"] is None
    assert (plan.launch.healthcheck_path, plan.launch.healthcheck_timeout) == ("/up", 9)


# launch.json of SERVER's project, byte for byte: the typed settings must not change it.
GOLDEN_LAUNCH_JSON = """\
{
  "access_log": "buffered",
  "app": "app:app",
  "app_dir": "/app",
  "extra_args": [
    "--backlog",
    "64"
  ],
  "forwarded_allow_ips": "10.0.0.0/8,127.0.0.1",
  "graceful_timeout": 8,
  "healthcheck_healthy_below": 400,
  "healthcheck_path": "/healthz",
  "healthcheck_timeout": 2,
  "interface": "wsgi",
  "keepalive": 5,
  "master_memory_mb": null,
  "max_requests": 0,
  "max_requests_jitter": 0,
  "port": 8000,
  "proxy_headers": true,
  "server": "gunicorn",
  "threads": 2,
  "timeout": 30,
  "venv": "/opt/venv",
  "worker_lib": "/opt/pydeploy/lib",
  "worker_memory_mb": 96,
  "worker_memory_origin": "server.worker-memory",
  "workers": 3,
  "wsgi_worker": "sync"
}
"""


def test_launch_json_bytes_are_pinned(tmp_path: Path) -> None:
    plan = plan_of(write_project(tmp_path / "p", SERVER))
    data = assemble.launcher_files(plan.launch)[assemble.LAUNCH_JSON]
    assert data.decode() == GOLDEN_LAUNCH_JSON
    # Every field is a launch.json key, and the launcher accepts the document.
    # (`factory` only when the target is a factory's call: see test_factory_targets.py)
    fields = {f.name for f in dataclasses.fields(LaunchSettings)}
    assert set(plan.launch.document()) == fields - {"factory"}
    assert launcher.parse_config(json.loads(data)).workers == 3
    assert plan.to_json()["launch"] == json.loads(data)


def test_settled_launch_settings_take_the_check_s_decisions(tmp_path: Path) -> None:
    plan = plan_of(write_project(tmp_path / "p"))
    assert (plan.launch.interface, plan.launch.server) == ("wsgi", "gunicorn")
    assert (plan.launch.worker_memory_mb, plan.launch.worker_memory_origin) == (None, None)
    measured = plan.launch.settled("asgi", "uvicorn", WorkerMemory(48, 20, MEASURED))
    assert (measured.interface, measured.server) == ("asgi", "uvicorn")
    assert (measured.worker_memory_mb, measured.master_memory_mb) == (48, 20)
    assert measured.worker_memory_origin == MEASURED
    # Without a measurement the planned memory keys stay (server.worker-memory or none).
    configured = plan_of(write_project(tmp_path / "q", SERVER)).launch
    kept = configured.settled("wsgi", "gunicorn")
    assert (kept.worker_memory_mb, kept.worker_memory_origin) == (96, CONFIGURED)
    assert dataclasses.replace(kept) == configured


# --- python, dependencies, resources ----------------------------------------------------------


def test_python_pin_names_what_the_user_asked_for(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    assert plan_of(root).python_pin is None  # requires-python only: the base decides
    assert plan_of(root, python="3.12").python_pin == PythonPin("3.12", "--python")
    pinned = write_project(tmp_path / "q", 'python = "3.11"\n')
    assert plan_of(pinned).python_pin == PythonPin("3.11", "tool.pydeploy.python")
    assert plan_of(pinned, python="3.12").python_pin == PythonPin("3.12", "--python")
    assert plan_of(pinned).to_json()["python"]["pin"] == {
        "version": "3.11",
        "origin": "tool.pydeploy.python",
    }


def test_dependency_selection_and_the_dev_group_rule(tmp_path: Path) -> None:
    table = '[tool.pydeploy.dependencies]\nextras = ["fast"]\ngroups = ["web", "dev"]\n'
    plan = plan_of(write_project(tmp_path / "p", table))
    assert plan.dependencies == DependencyPlan(("fast",), ("web", "dev"), ())
    assert plan.dependencies.dev_group
    assert not DependencyPlan(groups=("web",)).dev_group
    assert not DependencyPlan().dev_group
    deps = plan.to_json()["dependencies"]
    assert (deps["extras"], deps["groups"], deps["dev_group"]) == (["fast"], ["web", "dev"], True)


def test_requirements_files_are_resolved_for_that_source_only(tmp_path: Path) -> None:
    found = write_project(tmp_path / "p", files={"requirements.txt": "flask\n"})
    assert plan_of(found).dependencies.requirements == ("requirements.txt",)
    named = write_project(
        tmp_path / "q",
        '[tool.pydeploy.dependencies]\nrequirements = ["deploy.txt"]\n',
        files={"deploy.txt": "flask\n", "requirements.txt": "flask\n"},
    )
    assert plan_of(named).dependencies.requirements == ("deploy.txt",)
    assert plan_of(write_project(tmp_path / "r")).dependencies.requirements == ()


def test_resources_are_in_the_plan(tmp_path: Path) -> None:
    plan = plan_of(write_project(tmp_path / "p", "[tool.pydeploy.resources]\ncpu = 0.5\n"))
    assert plan.resources.cpu == 0.5
    assert plan.to_json()["resources"] == {
        "cpu": 0.5,
        "memory": None,
        "cpu_request": None,
        "memory_request": None,
    }


@pytest.mark.parametrize(
    ("value", "mode"),
    [("true", "buffered"), ("false", "off"), ('"buffered"', "buffered"),
     ('"unbuffered"', "unbuffered"), ('"off"', "off")],
)  # fmt: skip
def test_access_log_setting_becomes_the_launchers_mode(
    tmp_path: Path, value: str, mode: str
) -> None:
    table = f'[tool.pydeploy.server]\ninterface = "wsgi"\naccess-log = {value}\n'
    assert plan_of(write_project(tmp_path / "p", table)).launch.access_log == mode


def test_unknown_access_log_setting_is_a_config_error(tmp_path: Path) -> None:
    table = '[tool.pydeploy.server]\naccess-log = "fast"\n'
    with pytest.raises(ConfigError, match="access-log"):
        plan_of(write_project(tmp_path / "p", table))
