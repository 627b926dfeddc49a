"""Integration harness: a real engine, the local base image, a real registry, and a
per-test record of everything a test creates, removed at teardown even when the test fails.

Policy for missing infrastructure (engine, base image, registry): locally the test skips
with a message saying how to get it; under CI (`CI=true` or `CI=1`) it fails, because a
CI run that silently skipped its integration tests proves nothing.

Tests cannot import this module at run time (tests/ is not a package), so helpers are
handed out as fixtures; for annotations import the types under `TYPE_CHECKING`:

    if TYPE_CHECKING:
        from tests.integration.conftest import Resources, WaitHttp
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn, Protocol

import certifi
import docker
import docker.errors
import pytest
import requests.exceptions
from docker.models.containers import Container

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE_SCRIPT = REPO_ROOT / ".ci" / "base-image.sh"
DEFAULT_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# Every container a test creates carries both labels. The session label keeps the leak
# check from touching containers of another test run on the same engine.
TEST_LABEL = "pydeploy.test"
SESSION_LABEL = "pydeploy.test.session"
SESSION_ID = uuid.uuid4().hex[:12]

_leaked: list[str] = []


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def unavailable(what: str, fix: str) -> NoReturn:
    """Skip locally, fail under CI: the one policy for missing infrastructure."""
    if in_ci():
        pytest.fail(f"{what}. Under CI this is a failure, not a skip. Fix: {fix}", pytrace=False)
    pytest.skip(f"{what}. To run this test: {fix}")


# --- HTTP and ports ---------------------------------------------------------------------

# Loopback servers must never be reached through a proxy from the environment.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """One GET without proxies: (status, body). Raises OSError/HTTPException when no answer;
    an HTTP error status is returned, not raised."""
    try:
        with _direct.open(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode("utf-8", "replace")


def wait_http(url: str, timeout: float = 30.0) -> str:
    """Poll `url` until it answers 200 and return the body; raise TimeoutError naming the
    last status or error otherwise."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while True:
        try:
            status, body = http_get(url, timeout=min(5.0, max(0.5, deadline - time.monotonic())))
        except (OSError, http.client.HTTPException) as exc:
            # URLError wraps the interesting part (ConnectionRefusedError, timeout, ...).
            cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            last = f"{type(cause).__name__}: {cause}"
        else:
            if status == 200:
                return body
            last = f"HTTP {status}: {body[:200]}"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout:g} s; last: {last}")
        time.sleep(0.2)


class WaitHttp(Protocol):
    def __call__(self, url: str, timeout: float = 30.0) -> str: ...


def find_free_port() -> int:
    """A loopback port free right now (the engine has no bridge: servers use host ports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def free_port() -> int:
    return find_free_port()


@pytest.fixture(name="wait_http")
def wait_http_fixture() -> WaitHttp:
    return wait_http


# --- engine, base image, CA bundle ----------------------------------------------------


def connect_engine() -> docker.DockerClient | str:
    """A client whose engine answered a ping, or why none did."""
    # A failed connection leaves an unclosed socket to the garbage collector; release it
    # here, where its ResourceWarning is expected, and not at some later point where
    # filterwarnings=error would pin it on an unrelated test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=120)
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            error = str(exc)
        else:
            return client
        gc.collect()
    return error


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = connect_engine()
    if isinstance(client, str):
        unavailable(
            f"no Docker engine answers ({client})",
            "run .ci/test (it starts one), or as root: dockerd --bridge=none --iptables=false &",
        )
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client: docker.DockerClient) -> str:
    """The local Debian base image (python3 at /usr/bin/python3): no registry can be
    pulled from here, so tests never use python:*-slim."""
    name = os.environ.get("PYDEPLOY_TEST_BASE", "").strip()
    if name:
        try:
            docker_client.images.get(name)
        except docker.errors.ImageNotFound:
            pass  # a stale name: the script builds (or finds) the current image
        else:
            return name
    proc = subprocess.run(
        ["bash", str(BASE_IMAGE_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        unavailable(
            f"the test base image could not be built (exit {proc.returncode}): "
            f"{proc.stderr.strip()[-800:]}",
            "run .ci/base-image.sh as root (needs debootstrap), or .ci/test",
        )
    return lines[-1]


def host_ca_bundle() -> Path | None:
    """The CA bundle the host trusts (it includes the TLS-intercepting proxy's CA here)."""
    for var in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    return DEFAULT_CA_BUNDLE if DEFAULT_CA_BUNDLE.is_file() else None


@pytest.fixture(scope="session")
def ca_bundle() -> Path:
    path = host_ca_bundle()
    if path is None:
        unavailable(
            "no host CA bundle found (PIP_CERT, SSL_CERT_FILE, REQUESTS_CA_BUNDLE, "
            f"{DEFAULT_CA_BUNDLE})",
            "install ca-certificates or point SSL_CERT_FILE at your CA bundle",
        )
    return path


# Debian's copy of the public (Mozilla) roots, before local CAs are added to the bundle in
# /etc/ssl/certs. certifi is no substitute here: this machine appends the proxy CA to it.
STOCK_ROOTS_DIR = Path("/usr/share/ca-certificates/mozilla")


def tls_intercepted_now(host: str = "pypi.org") -> bool:
    """True when `host` presents a chain that the public roots reject: a TLS-intercepting
    proxy sits in between (what a container with only its stock bundle meets)."""
    roots = sorted(STOCK_ROOTS_DIR.glob("*.crt"))
    if roots:
        public = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        public.load_verify_locations(cadata="\n".join(r.read_text(encoding="ascii") for r in roots))
    else:
        public = ssl.create_default_context(cafile=certifi.where())
    try:
        with (
            socket.create_connection((host, 443), timeout=15) as raw,
            public.wrap_socket(raw, server_hostname=host),
        ):
            return False
    except ssl.SSLCertVerificationError:
        return True


@pytest.fixture(scope="session")
def tls_intercepted() -> bool:
    return tls_intercepted_now()


# --- registry -----------------------------------------------------------------------


def registry_answers(address: str) -> bool:
    try:
        return http_get(f"http://{address}/v2/", timeout=3)[0] == 200
    except (OSError, http.client.HTTPException):
        return False


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a registry that answers /v2/ (the engine treats 127.0.0.0/8 as an
    insecure registry, so plain HTTP works): the one named by PYDEPLOY_TEST_REGISTRY, else
    a private one started for this session on a free port. Never one that merely answers
    on a well-known port: whoever started it (another test run, a developer) may stop it
    while this session still uses it."""
    address = os.environ.get("PYDEPLOY_TEST_REGISTRY", "").strip()
    if address:
        if not registry_answers(address):
            unavailable(
                f"PYDEPLOY_TEST_REGISTRY={address} does not answer",
                "start that registry, or unset PYDEPLOY_TEST_REGISTRY (the tests then "
                "start their own)",
            )
        yield address
        return
    binary = shutil.which("docker-registry")
    if binary is None:
        unavailable(
            "docker-registry is not installed (the tests start a private registry with it)",
            "apt-get install docker-registry, or run .ci/test (it installs it)",
        )
    root = tmp_path_factory.mktemp("registry")
    address = f"127.0.0.1:{find_free_port()}"
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {address}\n",
        encoding="utf-8",
    )
    log_path = root / "registry.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary, "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            try:
                wait_http(f"http://{address}/v2/", timeout=30)
            except TimeoutError as exc:
                error = str(exc)
            else:
                error = ""
            if error:
                tail = log_path.read_text(encoding="utf-8", errors="replace")[-800:]
                pytest.fail(f"docker-registry did not start: {error}\n{tail}", pytrace=False)
            yield address
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- what a test creates ------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    output: str  # stdout and stderr, interleaved as the container wrote them


class Resources:
    """Containers, images and volumes one test created. Register each as soon as it exists;
    teardown force-removes them (containers first, since they pin images and volumes)."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.labels = {TEST_LABEL: "1", SESSION_LABEL: SESSION_ID}
        self._containers: list[str] = []
        self._images: list[str] = []
        self._volumes: list[str] = []

    def container(self, container: Container) -> Container:
        self._containers.append(container.id or container.name or "")
        return container

    def image(self, ref: str) -> str:
        self._images.append(ref)
        return ref

    def volume(self, name: str) -> str:
        self._volumes.append(name)
        return name

    def create(self, image: str, command: list[str] | None = None, **kwargs: Any) -> Container:
        """A labelled, registered container; host networking unless told otherwise (the
        engine has no bridge)."""
        kwargs["labels"] = {**kwargs.get("labels", {}), **self.labels}
        kwargs.setdefault("network_mode", "host")
        return self.container(self.client.containers.create(image, command, **kwargs))

    def run(
        self,
        image: str,
        command: list[str] | None = None,
        *,
        timeout: float = 300,
        **kwargs: Any,
    ) -> RunResult:
        """Run a container to completion and return its exit code and output."""
        container = self.create(image, command, **kwargs)
        container.start()
        try:
            status = container.wait(timeout=timeout)
        except requests.exceptions.RequestException as exc:
            container.kill()
            output = container.logs().decode("utf-8", "replace")
            raise TimeoutError(f"container did not exit within {timeout:g} s:\n{output}") from exc
        return RunResult(status["StatusCode"], container.logs().decode("utf-8", "replace"))

    def cleanup(self) -> list[str]:
        """Remove everything registered, newest first; return the failures."""
        errors: list[str] = []
        for ident in reversed(self._containers):
            with _collect(errors, f"container {ident}"):
                self.client.containers.get(ident).remove(force=True, v=True)
        for ref in reversed(self._images):
            with _collect(errors, f"image {ref}"):
                self.client.images.remove(ref, force=True)
        for name in reversed(self._volumes):
            with _collect(errors, f"volume {name}"):
                self.client.volumes.get(name).remove(force=True)
        self._containers.clear()
        self._images.clear()
        self._volumes.clear()
        return errors


@contextlib.contextmanager
def _collect(errors: list[str], what: str) -> Iterator[None]:
    """Record a removal failure and go on with the rest; already-gone is fine (auto_remove,
    or the test removed it itself)."""
    try:
        yield
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        errors.append(f"{what}: {exc}")


@pytest.fixture
def resources(docker_client: docker.DockerClient) -> Iterator[Resources]:
    tracker = Resources(docker_client)
    yield tracker
    errors = tracker.cleanup()
    if errors:
        pytest.fail("cleanup failed:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _no_leaked_containers() -> Iterator[None]:
    """At session end, remove and report containers of this session that a test created
    without registering them. A local run reports; a CI run fails."""
    yield
    client = connect_engine()
    if isinstance(client, str):
        return  # no engine: nothing could have been created
    try:
        leaked = client.containers.list(
            all=True, filters={"label": [f"{TEST_LABEL}=1", f"{SESSION_LABEL}={SESSION_ID}"]}
        )
        for container in leaked:
            _leaked.append(f"{container.name} (image {container.attrs['Config']['Image']})")
            container.remove(force=True, v=True)
    finally:
        client.close()
    if _leaked and in_ci():
        pytest.fail(
            "test containers left behind (now removed): " + ", ".join(_leaked), pytrace=False
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _leaked:
        terminalreporter.section("leaked test containers (removed at session end)")
        for name in _leaked:
            terminalreporter.write_line(name)


# --- images built by pydeploy -------------------------------------------------------

EXAMPLES_DIR = REPO_ROOT / "examples"
EXAMPLE_APPS = ("flask-app", "django-app", "fastapi-app")
# A cold build resolves and downloads wheels through the proxy; a warm one takes seconds.
BUILD_TIMEOUT = 1200.0


class BuildImage(Protocol):
    def __call__(self, project: Path, name: str) -> str: ...


class RunPydeploy(Protocol):
    def __call__(
        self, *args: str, cwd: Path, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]: ...


def run_pydeploy_cli(
    *args: str, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m pydeploy ARGS` as a user does; on timeout give it SIGTERM first,
    which pydeploy turns into the same cleanup as Ctrl-C (a SIGKILL would leave its
    builder containers behind)."""
    argv = [sys.executable, "-m", "pydeploy", *args]
    with subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                stdout, stderr = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
            stderr += f"\n(timed out after {BUILD_TIMEOUT:g} s)"
        return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


@pytest.fixture(scope="session")
def run_pydeploy() -> RunPydeploy:
    """The CLI runner for tests (test modules cannot import this conftest)."""
    return run_pydeploy_cli


@pytest.fixture(scope="session")
def pydeploy_build(docker_client: docker.DockerClient, base_image: str) -> Iterator[BuildImage]:
    """Build a project into the local engine the way a user does (`python -m pydeploy build
    DIR --json` in a subprocess) under a unique test tag, and return the tag. Every image is
    removed at session end. A failed build fails the test with the CLI's stderr."""
    tags: list[str] = []

    def build(project: Path, name: str) -> str:
        tag = f"pydeploy-test/{name}:{uuid.uuid4().hex[:12]}"
        tags.append(tag)  # before the build: a half-finished one may still have tagged it
        proc = run_pydeploy_cli(
            "build", str(project), "--base", base_image, "--network", "host",
            "--tag", tag, "--json",
        )  # fmt: skip
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        if code != 0:
            pytest.fail(
                f"`pydeploy build {project}` failed (exit {code}):\n{stderr[-4000:]}",
                pytrace=False,
            )
        try:
            result = json.loads(stdout)
        except ValueError:
            pytest.fail(
                f"`pydeploy build --json` printed no JSON:\n{stdout[-2000:]}", pytrace=False
            )
        if tag not in result.get("tags", []):
            pytest.fail(f"the build result does not list the tag {tag}: {result}", pytrace=False)
        return tag

    yield build
    errors: list[str] = []
    for tag in reversed(tags):
        with _collect(errors, f"image {tag}"):
            docker_client.images.remove(tag, force=True)
    if errors:
        pytest.fail("image cleanup failed:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture(scope="session")
def example_images(pydeploy_build: BuildImage) -> dict[str, str]:
    """examples/flask-app, django-app and fastapi-app built once per session: name -> tag."""
    return {name: pydeploy_build(EXAMPLES_DIR / name, name) for name in EXAMPLE_APPS}


@pytest.fixture(scope="session")
def session_resources(docker_client: docker.DockerClient) -> Iterator[Resources]:
    """Like `resources`, for containers that module- or session-scoped fixtures share
    between tests; removed at session end (sooner when the fixture removes them itself)."""
    tracker = Resources(docker_client)
    yield tracker
    errors = tracker.cleanup()
    if errors:
        pytest.fail("cleanup failed:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture(scope="session")
def free_port_factory() -> Callable[[], int]:
    """find_free_port for fixtures wider than a test, where `free_port` is out of scope."""
    return find_free_port


# --- a private engine -------------------------------------------------------------------


@pytest.fixture(scope="session")
def private_engine(docker_client: docker.DockerClient, base_image: str) -> Iterator[str]:
    """DOCKER_HOST of a Docker engine of this session alone (its own data root and
    containerd, no bridge), with the base image loaded: for tests whose subject removes
    engine-wide caches (`prune --all`), which on the shared engine belong to others."""
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        unavailable(
            "a private engine needs root and dockerd",
            "run as root with docker.io installed (.ci/test does)",
        )
    # Short: unix socket paths (containerd's is under the exec root) have a length limit.
    root = Path(tempfile.mkdtemp(prefix="pdk-", dir="/tmp"))
    host = f"unix://{root}/docker.sock"
    namespace = f"pydeploy-test-{SESSION_ID}"
    argv = [
        dockerd, "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
        "-H", host, "--pidfile", str(root / "docker.pid"), "--bridge=none",
        "--iptables=false", "--ip-masq=false", "--containerd-namespace", namespace,
        "--containerd-plugins-namespace", f"{namespace}-plugins",
    ]  # fmt: skip
    log_path = root / "dockerd.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    client: docker.DockerClient | None = None
    try:
        deadline = time.monotonic() + 120
        while client is None:
            # The SDK asks for the API version at once and leaks a failed connection.
            candidate = None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                try:
                    if Path(host.removeprefix("unix://")).exists():
                        candidate = docker.DockerClient(base_url=host, timeout=600)
                        candidate.ping()
                        client = candidate
                except (docker.errors.DockerException, requests.exceptions.RequestException):
                    if candidate is not None:
                        candidate.close()
                gc.collect()  # here, where a failed attempt's ResourceWarning is expected
            if client is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(encoding="utf-8", errors="replace")[-800:]
                    pytest.fail(f"the private dockerd did not start:\n{tail}", pytrace=False)
                time.sleep(0.5)
        # By name, so the image keeps its tag there.
        client.images.load(b"".join(docker_client.api.get_image(base_image)))
        yield host
    finally:
        if client is not None:
            client.close()
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # dockerd leaves its network namespace mounted under the exec root.
        subprocess.run(["umount", "-l", str(root / "exec" / "netns" / "default")],
                       capture_output=True, check=False)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


# --- Podman as the engine -----------------------------------------------------------------

# Podman's default open-files limit (1048576) is above these machines' hard limit, and
# runc then refuses every container (`error setting rlimit type 7`): an environment
# setting, as a user's containers.conf would carry it (README "Other engines").
PODMAN_CONTAINERS_CONF = "[containers]\ndefault_ulimits = []\n"


@dataclass(frozen=True)
class PodmanEngine:
    host: str  # DOCKER_HOST of its API service
    base_image: str  # the test base image, loaded into it under the same name
    client: docker.DockerClient


def _podman_client(host: str, proc: subprocess.Popen[bytes], log_path: Path) -> docker.DockerClient:
    """A client once the service answers a ping (it starts in well under a second)."""
    deadline = time.monotonic() + 60
    while True:
        candidate = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            try:
                if Path(host.removeprefix("unix://")).exists():
                    candidate = docker.DockerClient(base_url=host, timeout=600)
                    candidate.ping()
                    return candidate
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                if candidate is not None:
                    candidate.close()
            gc.collect()  # here, where a failed attempt's ResourceWarning is expected
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-800:]
            pytest.fail(f"`podman system service` did not start:\n{tail}", pytrace=False)
        time.sleep(0.2)


@pytest.fixture(scope="session")
def podman_engine(docker_client: docker.DockerClient, base_image: str) -> Iterator[PodmanEngine]:
    """Podman's Docker-compatible API service of this session alone: private storage
    (`--root`/`--runroot` in one temporary directory, so removing it removes every image,
    container and volume the session made there), the test base image loaded from the
    Docker engine, stopped at the end."""
    podman = shutil.which("podman")
    if podman is None or os.geteuid() != 0:
        unavailable(
            "the Podman tests need root and podman",
            "run as root with Debian's podman installed (.ci/test installs it)",
        )
    # Short: the socket's path has a length limit.
    root = Path(tempfile.mkdtemp(prefix="pdp-", dir="/tmp"))
    # Images, containers and volumes in memory: deleting some 500 MB of small files from
    # a shared machine's disk took 10-17 s, and unmounting takes none (should the mount
    # fail, the storage stays on disk: slower to remove, the same otherwise).
    (root / "storage").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700", "pydeploy-podman",
                              str(root / "storage")], capture_output=True, check=False)  # fmt: skip
    conf = root / "containers.conf"
    conf.write_text(PODMAN_CONTAINERS_CONF, encoding="utf-8")
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    storage = [podman, "--root", str(root / "storage"), "--runroot", str(root / "run")]
    host = f"unix://{root}/podman.sock"
    log_path = root / "service.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*storage, "system", "service", "--time=0", host],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
        )  # fmt: skip
    client: docker.DockerClient | None = None
    try:
        client = _podman_client(host, proc, log_path)
        # By name: Podman lists it as localhost/NAME, and finds it by NAME too.
        client.images.load(b"".join(docker_client.api.get_image(base_image)))
        yield PodmanEngine(host, base_image, client)
    finally:
        if client is not None:
            client.close()
        # Containers first: each has a conmon process of its own, outside the service.
        subprocess.run([*storage, "rm", "--all", "--force", "--time", "0"],
                       capture_output=True, env=env, timeout=120, check=False)  # fmt: skip
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # The overlay driver mounts its directory onto itself, inside the tmpfs.
        for mount in (root / "storage" / "overlay", root / "storage"):
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


# --- other platforms, registry-side bases, an engine made unreachable -------------------

BASE_IMAGE_ARM64_SCRIPT = REPO_ROOT / ".ci" / "base-image-arm64.sh"
BINFMT_QEMU_AARCH64 = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
# The ELF header's e_machine values the tests tell apart.
ELF_X86_64 = 0x3E
ELF_AARCH64 = 0xB7
# Where the multi-platform base goes in the session registry, and its per-platform tags.
MULTIPLATFORM_REPOSITORY = "pydeploy-test/base"
MULTIPLATFORM_TAG = "bookworm"
# Platform -> (OCI platform object). arm64 carries variant v8, as public arm64 images do.
PLATFORMS: dict[str, dict[str, str]] = {
    "linux/amd64": {"architecture": "amd64", "os": "linux"},
    "linux/arm64": {"architecture": "arm64", "os": "linux", "variant": "v8"},
}


def skopeo_binary() -> str:
    binary = shutil.which("skopeo")
    if binary is None:
        unavailable(
            "skopeo is not installed",
            "apt-get install skopeo, or run .ci/test (it installs it)",
        )
    return binary


def run_skopeo(*args: str, timeout: float = 600) -> str:
    """skopeo ARGS; a failure fails the test with its stderr. Its output (stdout)."""
    argv = [skopeo_binary(), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        pytest.fail(
            f"`{' '.join(argv)}` failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}",
            pytrace=False,
        )
    return proc.stdout


@pytest.fixture(scope="session")
def base_image_arm64(docker_client: docker.DockerClient) -> str:
    """The arm64 half of the test base (.ci/base-image-arm64.sh: debootstrap --arch arm64
    under QEMU user emulation, its config saying arm64): runs here only through
    binfmt_misc's qemu-aarch64 entry."""
    if not BINFMT_QEMU_AARCH64.exists():
        unavailable(
            "binfmt_misc has no qemu-aarch64 entry, so arm64 programs cannot run here",
            "run .ci/test as root (its qemu step registers it)",
        )
    name = os.environ.get("PYDEPLOY_TEST_BASE_ARM64", "").strip()
    if name:
        try:
            docker_client.images.get(name)
        except docker.errors.ImageNotFound:
            pass  # a stale name: the script builds (or finds) the current image
        else:
            return name
    proc = subprocess.run(
        ["bash", str(BASE_IMAGE_ARM64_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=1800,  # debootstrap under emulation: minutes
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        unavailable(
            f"the arm64 test base image could not be built (exit {proc.returncode}): "
            f"{proc.stderr.strip()[-800:]}",
            "run .ci/base-image-arm64.sh as root (needs debootstrap and qemu-user-static), "
            "or .ci/test",
        )
    return lines[-1]


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def split_reference(reference: str) -> tuple[str, str, str]:
    """REGISTRY/REPO:TAG or REGISTRY/REPO@DIGEST -> (registry, repository, tag or digest)."""
    registry, _, rest = reference.partition("/")
    if "@" in rest:
        repository, _, ref = rest.partition("@")
    else:
        repository, _, ref = rest.rpartition(":") if ":" in rest else (rest, "", "latest")
    return registry, repository, ref


def registry_get(reference: str, accept: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """GET the manifest or index at `reference` from a plain-HTTP registry, accepting the
    OCI and Docker media types unless told otherwise: (body, content type)."""
    registry, repository, ref = split_reference(reference)
    accept = accept or (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)
    request = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{ref}",
        headers={"Accept": ", ".join(accept)},
    )
    with _direct.open(request, timeout=60) as response:
        body: bytes = response.read()
        return body, response.headers.get("Content-Type", "")


def registry_put_manifest(reference: str, body: bytes, media_type: str) -> str:
    """PUT a manifest or index; the digest the registry reports (checked against the body's)."""
    registry, repository, ref = split_reference(reference)
    request = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{ref}",
        data=body,
        method="PUT",
        headers={"Content-Type": media_type},
    )
    with _direct.open(request, timeout=60) as response:
        reported = response.headers.get("Docker-Content-Digest", "")
    digest = sha256_digest(body)
    if reported and reported != digest:
        pytest.fail(f"the registry stored {reference} as {reported}, not {digest}", pytrace=False)
    return digest


def open_registry_blob(reference: str, digest: str) -> Any:
    """A streaming response for blob `digest` of `reference`'s repository (close it)."""
    registry, repository, _ = split_reference(reference)
    return _direct.open(f"http://{registry}/v2/{repository}/blobs/{digest}", timeout=60)


@dataclass(frozen=True)
class MultiPlatformBase:
    """The test base as a multi-platform image in the session registry."""

    reference: str  # REGISTRY/pydeploy-test/base:bookworm: the OCI index
    index_digest: str  # sha256:... of the index
    manifests: dict[str, str]  # "linux/amd64" / "linux/arm64" -> its image manifest digest
    # platform -> config digest in the registry: skopeo rewrites the engine's config as an
    # OCI config (same platform, env, cmd, diff_ids), so it is not the local image's ID.
    configs: dict[str, str]
    images: dict[str, str]  # platform -> the local engine image it was pushed from

    def by_digest(self, platform: str | None = None) -> str:
        """REGISTRY/REPO@DIGEST of the index, or of one platform's manifest."""
        registry, repository, _ = split_reference(self.reference)
        digest = self.manifests[platform] if platform else self.index_digest
        return f"{registry}/{repository}@{digest}"


@pytest.fixture(scope="session")
def multiplatform_base(registry: str, base_image: str, base_image_arm64: str) -> MultiPlatformBase:
    """REGISTRY/pydeploy-test/base:bookworm (base-SESSION in a shared registry, named by
    PYDEPLOY_TEST_REGISTRY): an OCI image index (platforms set) naming the
    amd64 test base and the arm64 one, each pushed by skopeo as an OCI manifest (also
    tagged :bookworm-amd64 / :bookworm-arm64). The registry is the session's, so nothing
    needs removing afterwards."""
    repo = f"{registry}/{MULTIPLATFORM_REPOSITORY}"
    if os.environ.get("PYDEPLOY_TEST_REGISTRY", "").strip():
        repo += f"-{SESSION_ID}"  # a shared registry: another session must not retag ours
    images = {"linux/amd64": base_image, "linux/arm64": base_image_arm64}
    manifests: dict[str, str] = {}
    configs: dict[str, str] = {}
    entries: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pydeploy-mp-") as tmp:
        for platform, image in images.items():
            arch = PLATFORMS[platform]["architecture"]
            target = f"{repo}:{MULTIPLATFORM_TAG}-{arch}"
            digest_file = Path(tmp) / f"{arch}.digest"
            run_skopeo(
                "copy", "--quiet", "--format", "oci", "--dest-tls-verify=false",
                "--digestfile", str(digest_file), f"docker-daemon:{image}", f"docker://{target}",
            )  # fmt: skip
            digest = digest_file.read_text(encoding="ascii").strip()
            body, media_type = registry_get(f"{repo}@{digest}")
            if sha256_digest(body) != digest or media_type != OCI_MANIFEST:
                pytest.fail(f"{target}: unexpected manifest {media_type} {digest}", pytrace=False)
            manifests[platform] = digest
            configs[platform] = json.loads(body)["config"]["digest"]
            entries.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": len(body),
                    "platform": PLATFORMS[platform],
                }
            )
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    body = json.dumps(index, indent=2).encode()
    reference = f"{repo}:{MULTIPLATFORM_TAG}"
    index_digest = registry_put_manifest(reference, body, OCI_INDEX)
    return MultiPlatformBase(reference, index_digest, manifests, configs, images)


@dataclass(frozen=True)
class RegistryIndex:
    """An image index read back from a registry and validated with skopeo."""

    reference: str
    digest: str  # of the raw index
    media_type: str  # the index's own mediaType (OCI index or Docker manifest list)
    raw: dict[str, Any]  # the index as skopeo inspect --raw printed it
    manifests: dict[str, str]  # "os/arch[/variant]" -> manifest digest, from the index
    configs: dict[str, dict[str, Any]]  # the same keys -> skopeo inspect --override-arch's view


class ReadIndex(Protocol):
    def __call__(self, reference: str) -> RegistryIndex: ...


def read_index(reference: str) -> RegistryIndex:
    """Read the index at `reference` with `skopeo inspect --raw`, and check each platform it
    names: its manifest (`skopeo inspect --raw REPO@DIGEST`) has the entry's digest and
    size, and `skopeo inspect --override-os/--override-arch/--override-variant` picks that
    manifest (its layers) and reaches a config that says that platform.
    Fails the test, naming what differs, otherwise."""
    raw_text = run_skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{reference}")
    raw = json.loads(raw_text)
    media_type = raw.get("mediaType", "")
    if media_type not in {OCI_INDEX, DOCKER_MANIFEST_LIST} or not raw.get("manifests"):
        pytest.fail(f"{reference} is not an image index: {raw_text[:600]}", pytrace=False)
    manifests: dict[str, str] = {}
    configs: dict[str, dict[str, Any]] = {}
    for entry in raw["manifests"]:
        platform = entry.get("platform") or {}
        if not platform.get("os") or not platform.get("architecture"):
            pytest.fail(f"{reference}: an entry without a platform: {entry}", pytrace=False)
        key = "/".join(
            part
            for part in (platform["os"], platform["architecture"], platform.get("variant"))
            if part
        )
        overrides = ["--override-os", platform["os"], "--override-arch", platform["architecture"]]
        if platform.get("variant"):
            overrides += ["--override-variant", platform["variant"]]
        seen = json.loads(
            run_skopeo("inspect", "--tls-verify=false", *overrides, f"docker://{reference}")
        )
        # skopeo's "Digest" is the index's own; what it picked shows in its layers.
        registry, repository, _ = split_reference(reference)
        by_digest = f"docker://{registry}/{repository}@{entry['digest']}"
        manifest_text = run_skopeo("inspect", "--raw", "--tls-verify=false", by_digest)
        if sha256_digest(manifest_text.encode()) != entry["digest"] or len(
            manifest_text.encode()
        ) != entry.get("size"):
            pytest.fail(
                f"{reference}: the {key} manifest does not match its entry's digest/size",
                pytrace=False,
            )
        layers = [layer["digest"] for layer in json.loads(manifest_text)["layers"]]
        if seen.get("Layers") != layers:
            pytest.fail(
                f"{reference}: skopeo's choice for {key} has layers {seen.get('Layers')}, "
                f"the index's {entry['digest']} has {layers}",
                pytrace=False,
            )
        if (seen.get("Os"), seen.get("Architecture")) != (platform["os"], platform["architecture"]):
            pytest.fail(
                f"{reference}: the {key} entry's config says "
                f"{seen.get('Os')}/{seen.get('Architecture')}",
                pytrace=False,
            )
        manifests[key] = entry["digest"]
        configs[key] = seen
    # skopeo prints the raw bytes as stored: their digest is the index's.
    digest = sha256_digest(raw_text.encode())
    return RegistryIndex(reference, digest, media_type, raw, manifests, configs)


@pytest.fixture(name="read_index", scope="session")
def read_index_fixture() -> ReadIndex:
    return read_index


class ElfMachines(Protocol):
    def __call__(
        self, reference: str, *, platform: str | None = None, under: str = "/"
    ) -> dict[str, int]: ...


def _manifest_for(reference: str, platform: str | None) -> dict[str, Any]:
    """The image manifest at `reference`; for an index, the entry of `platform` (os/arch)."""
    body, _ = registry_get(reference)
    document: dict[str, Any] = json.loads(body)
    if "manifests" not in document:
        return document
    if platform is None:
        pytest.fail(f"{reference} is an index: name the platform", pytrace=False)
    os_name, _, arch = platform.partition("/")
    arch = arch.split("/")[0]
    for entry in document["manifests"]:
        found = entry.get("platform", {})
        if (found.get("os"), found.get("architecture")) == (os_name, arch):
            registry, repository, _ = split_reference(reference)
            return _manifest_for(f"{registry}/{repository}@{entry['digest']}", None)
    pytest.fail(f"{reference} has no manifest for {platform}", pytrace=False)


def elf_machines(
    reference: str, *, platform: str | None = None, under: str = "/"
) -> dict[str, int]:
    """Every ELF regular file under `under` in the image at `reference` (a registry
    reference; for an index, give `platform`), as path -> e_machine (ELF_X86_64 0x3e,
    ELF_AARCH64 0xb7), with the layers applied in order (whiteouts included). Symbolic
    links are left out; a hard link counts when its target is under `under` too."""
    manifest = _manifest_for(reference, platform)
    prefix = "/" + under.strip("/")
    found: dict[str, int] = {}
    for layer in manifest["layers"]:
        with (
            open_registry_blob(reference, layer["digest"]) as response,
            tarfile.open(fileobj=response, mode="r|*") as archive,
        ):
            for member in archive:
                path = "/" + member.name.removeprefix("./").strip("/")
                parent, _, base = path.rpartition("/")
                if base == ".wh..wh..opq":  # an opaque directory hides all lower entries
                    found = {p: m for p, m in found.items() if not p.startswith(parent + "/")}
                    continue
                if base.startswith(".wh."):
                    hidden = f"{parent}/{base[4:]}"
                    found = {
                        p: m
                        for p, m in found.items()
                        if p != hidden and not p.startswith(hidden + "/")
                    }
                    continue
                found.pop(path, None)  # replaced by this layer's entry (maybe not a file)
                if path != prefix and not path.startswith(prefix.rstrip("/") + "/"):
                    continue
                if member.islnk():  # a hard link: its target's machine, if that is an ELF
                    target = "/" + member.linkname.removeprefix("./").strip("/")
                    if target in found:
                        found[path] = found[target]
                    continue
                if not member.isfile() or member.size < 20:
                    continue
                stream = archive.extractfile(member)
                header = stream.read(20) if stream is not None else b""
                if header[:4] == b"\x7fELF":
                    byteorder: Literal["little", "big"] = "little" if header[5] == 1 else "big"
                    found[path] = int.from_bytes(header[18:20], byteorder)
    return found


@pytest.fixture(name="elf_machines", scope="session")
def elf_machines_fixture() -> ElfMachines:
    return elf_machines


@dataclass(frozen=True)
class OciBaseLayout:
    path: Path  # the layout directory (oci-layout, index.json, blobs/)
    tag: str  # its index.json's org.opencontainers.image.ref.name
    manifest_digest: str
    config_digest: str  # skopeo's OCI rewrite of the engine's config, not the image's ID
    image: str  # the local engine image it was copied from

    @property
    def reference(self) -> str:
        """oci:DIR:TAG, as --base and skopeo take it."""
        return f"oci:{self.path}:{self.tag}"


@pytest.fixture(scope="session")
def oci_base_layout(base_image: str) -> Iterator[OciBaseLayout]:
    """An OCI layout directory of the amd64 test base (skopeo copy docker-daemon: -> oci:),
    removed at session end."""
    root = Path(tempfile.mkdtemp(prefix="pydeploy-oci-base-"))
    try:
        layout = root / "layout"
        run_skopeo(
            "copy", "--quiet", f"docker-daemon:{base_image}", f"oci:{layout}:{MULTIPLATFORM_TAG}"
        )
        index = json.loads((layout / "index.json").read_text(encoding="utf-8"))
        (entry,) = index["manifests"]
        algorithm, _, hexdigest = entry["digest"].partition(":")
        manifest = json.loads((layout / "blobs" / algorithm / hexdigest).read_bytes())
        yield OciBaseLayout(
            layout, MULTIPLATFORM_TAG, entry["digest"], manifest["config"]["digest"], base_image
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_archive_base(docker_client: docker.DockerClient, base_image: str) -> Iterator[Path]:
    """A `docker save` file of the amd64 test base (docker-archive:FILE for --base), removed
    at session end."""
    root = Path(tempfile.mkdtemp(prefix="pydeploy-archive-base-"))
    try:
        path = root / "base.tar"
        with path.open("wb") as out:
            for chunk in docker_client.api.get_image(base_image):
                out.write(chunk)
        yield path
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def unreachable_engine() -> Iterator[str]:
    """A DOCKER_HOST value naming a unix socket nobody listens on (a path in a fresh
    temporary directory, no file there): for builds with the engine made unreachable."""
    root = Path(tempfile.mkdtemp(prefix="pdx-", dir="/tmp"))  # short: socket path limit
    try:
        yield f"unix://{root}/docker.sock"
    finally:
        shutil.rmtree(root, ignore_errors=True)
