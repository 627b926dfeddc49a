"""Shared plumbing for the benchmark scripts: subprocesses with deadlines, the docker
objects a run creates (and removes), pydeploy builds, and the examples' hand-written
server commands. Scripts, not tests: nothing here asserts, it measures and reports."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project supports 3.10, whose stdlib has no tomllib
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
BASELINE_DIR = Path(__file__).resolve().parent / "baseline"
HOST_CA = Path(
    os.environ.get("SSL_CERT_FILE")
    or os.environ.get("PIP_CERT")
    or "/etc/ssl/certs/ca-certificates.crt"
)
# Every name a benchmark gives a docker object starts with this, so leftovers of a killed
# run are easy to spot (`docker images 'pydeploy-bench*'`) and never collide with tests.
PREFIX = "pydeploy-bench"


class BenchError(RuntimeError):
    """A step failed; the message says which and shows the tail of its output."""


@dataclass(frozen=True)
class Handwritten:
    """The seed article's way of serving an example: the packages its requirements.txt
    needs on top of the project's dependencies, and the gunicorn arguments."""

    server_packages: tuple[str, ...]
    gunicorn_args: tuple[str, ...]


# `uvicorn.workers` is deprecated (uvicorn >= 0.30 warns) but still ships in uvicorn;
# the article's command uses it, so the baseline does too.
HANDWRITTEN = {
    "fastapi-app": Handwritten(
        ("gunicorn", "uvicorn"), ("-w", "4", "-k", "uvicorn.workers.UvicornWorker", "main:app")
    ),
    "flask-app": Handwritten(("gunicorn",), ("--workers", "4", "app:app")),
}


# --- processes --------------------------------------------------------------------------


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    check: bool = True,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs argv with a deadline. On timeout the child gets SIGTERM (pydeploy and the
    docker CLI both clean up on it), then SIGKILL after 30 s."""
    with subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=None if env is None else {**os.environ, **env},
        start_new_session=True,  # a Ctrl-C meant for the benchmark reaches us first
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            raise BenchError(
                f"{what or argv[0]} did not finish within {timeout:.0f} s\n{_tail(out + err)}"
            ) from None
        except BaseException:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            proc.kill()
            raise
    result = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    if check and result.returncode != 0:
        raise BenchError(
            f"{what or ' '.join(argv[:3])} failed (exit {result.returncode})\n{_tail(out + err)}"
        )
    return result


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    return run(["docker", *args], timeout=timeout, check=check, what=f"docker {args[0]}").stdout


def sigterm_as_interrupt() -> None:
    """A SIGTERM (a cancelled CI job, `timeout`) unwinds like Ctrl-C, so cleanup runs."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


# --- docker objects a run owns ----------------------------------------------------------


@dataclass
class Owned:
    """Images and containers this run created; `cleanup` removes them and nothing else."""

    images: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)

    def image(self, ref: str) -> str:
        if ref not in self.images:
            self.images.append(ref)
        return ref

    def container(self, name: str) -> str:
        self.containers.append(name)
        return name

    def cleanup(self) -> list[str]:
        """Removes what this run created, newest first (children before parents); returns
        what could not go. Images go without `-f`: a reproducible build can give the same
        image ID as someone else's build, and removing by our own tag only untags it."""
        failed = []
        for container in reversed(self.containers):
            proc = run(["docker", "rm", "-f", container], timeout=60, check=False)
            if proc.returncode and "No such container" not in proc.stderr:
                failed.append(container)
        self.containers.clear()
        for ref in reversed(self.images):
            proc = run(["docker", "rmi", ref], timeout=120, check=False)
            if proc.returncode and "No such image" not in proc.stderr:
                failed.append(ref)
        self.images.clear()
        return failed


def start_container(  # noqa: PLR0913 - keyword-only, one per `docker run` flag it sets
    owned: Owned,
    image: str,
    *,
    name: str,
    port: int,
    command: Sequence[str] = (),
    entrypoint: str | None = None,
    cpus: str | None = None,
) -> str:
    """Starts image detached with host networking (the only network here) and PORT set,
    waits until it answers on 127.0.0.1:port, and returns the container name."""
    argv = ["run", "-d", "--name", owned.container(name), "--network", "host",
            "-e", f"PORT={port}"]  # fmt: skip
    if cpus:
        argv += ["--cpus", cpus]
    if entrypoint:
        argv += ["--entrypoint", entrypoint]
    docker(*argv, image, *command)
    wait_http(f"http://127.0.0.1:{port}/", timeout=90, container=name)
    return name


def image_exists(ref: str) -> bool:
    return run(["docker", "image", "inspect", ref], timeout=60, check=False).returncode == 0


def image_size(ref: str) -> int:
    """The engine's size of an image: the sum of its layers' unpacked sizes."""
    return int(docker("image", "inspect", "--format", "{{.Size}}", ref).strip())


def base_image() -> str:
    """The local base image (built once by .ci/base-image.sh; no registry is reachable)."""
    name = run([str(REPO / ".ci" / "base-image.sh")], timeout=900, what="base-image.sh").stdout
    return name.strip().splitlines()[-1]


def host_load() -> str:
    """The 1-minute load average: other work on this machine skews every number here."""
    return f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, *, timeout: float, container: str) -> None:
    """Waits until url answers 200; fails early when the container has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        state = docker("inspect", "--format", "{{.State.Running}}", container, check=False)
        if state.strip() != "true":
            break
        time.sleep(0.3)
    logs = run(["docker", "logs", "--tail", "30", container], timeout=30, check=False)
    raise BenchError(
        f"{url} did not answer within {timeout:.0f} s\n{_tail(logs.stdout + logs.stderr)}"
    )


# --- registries -------------------------------------------------------------------------


def stored_blob_bytes(root: Path) -> int:
    """Bytes in a docker-registry's blob storage under `root`: its growth across a push is
    what that push uploaded (layers, config and manifest; nothing it skipped or mounted)."""
    blobs = root / "docker" / "registry" / "v2" / "blobs"
    return sum(path.stat().st_size for path in blobs.rglob("*") if path.is_file())


def registry_config(root: Path, address: str) -> str:
    """A docker-registry config: filesystem storage under `root`, plain HTTP on `address`
    (a loopback one, which the engine pushes to without TLS)."""
    return (
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n"
        f"http:\n  addr: {address}\n"
    )


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class LocalRegistry:
    """A private `docker-registry` on a free loopback port for one benchmark run (one per
    side, so no side's blobs save another's uploads); stopped by `stop`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.address = f"127.0.0.1:{free_port()}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise BenchError("docker-registry is not installed (apt-get install docker-registry)")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        config.write_text(registry_config(self.root / "data", self.address), encoding="utf-8")
        with (self.root / "registry.log").open("wb") as log:
            self._proc = subprocess.Popen(
                [binary, "serve", str(config)], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self._proc.poll() is None:
            if _answers(f"http://{self.address}/v2/"):
                return self.address
            time.sleep(0.1)
        self.stop()
        log_tail = _tail((self.root / "registry.log").read_text(errors="replace"))
        raise BenchError(f"docker-registry did not start on {self.address}\n{log_tail}")

    def stored_bytes(self) -> int:
        return stored_blob_bytes(self.root / "data")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


# --- examples ---------------------------------------------------------------------------


def project_table(project: Path) -> dict[str, Any]:
    with (project / "pyproject.toml").open("rb") as fh:
        table: dict[str, Any] = tomllib.load(fh)
    return table


def app_module_file(project: Path) -> Path:
    """The file of `[tool.pydeploy].app` ("main:app" -> main.py): a code-only edit target."""
    app = str(project_table(project)["tool"]["pydeploy"]["app"])
    module = app.split(":", 1)[0]
    path = project.joinpath(*module.split(".")).with_suffix(".py")
    if not path.is_file():
        raise BenchError(f"cannot find the app module {module!r} of {project} at {path}")
    return path


def add_dependency(project: Path, requirement: str) -> None:
    """Adds requirement to [project].dependencies by editing the text (keeps the file as
    the user wrote it), then checks the result parses and contains it."""
    path = project / "pyproject.toml"
    text, count = re.subn(
        r"^(dependencies\s*=\s*\[)", rf'\1"{requirement}", ', path.read_text(), flags=re.MULTILINE
    )
    if count != 1:
        raise BenchError(f"cannot find one `dependencies = [` line in {path}")
    path.write_text(text)
    if requirement not in project_table(project)["project"]["dependencies"]:
        raise BenchError(f"editing {path} did not add {requirement!r}")


def bootstrapped_uv(version: str) -> Path:
    """The uv binary .ci/test bootstraps (pinned, the one the builder containers use):
    the uv baseline locks with it and copies it into its builder stage."""
    state = Path(
        os.environ.get("PYDEPLOY_CI_STATE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pydeploy-ci"
    )
    uv = state / f"uv-{version}" / "bin" / "uv"
    if not uv.is_file():
        raise BenchError(f"no uv {version} at {uv}: run `bash .ci/test` once to bootstrap it")
    found = run([str(uv), "--version"], timeout=30, what="uv --version").stdout.split()
    if found[1:2] != [version]:
        raise BenchError(f"{uv} is uv {' '.join(found[1:2])}, not {version}")
    return uv


def uv_lock(uv: Path, project: Path) -> None:
    """`uv lock` in project, through the host's CA bundle, resolving for the base's
    interpreter range (the project's requires-python)."""
    env = {"SSL_CERT_FILE": str(HOST_CA), "UV_PYTHON_DOWNLOADS": "never"}
    run([str(uv), "lock", "--quiet", "--directory", str(project)], timeout=300, env=env,
        what=f"uv lock {project.name}")  # fmt: skip


# --- pydeploy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PydeployBuild:
    seconds: float
    document: dict[str, Any]
    progress: list[str]  # its stderr: one `[  elapsed] step: detail` line per step

    @property
    def image_id(self) -> str:
        return str(self.document["image_id"])

    @property
    def timings(self) -> dict[str, float]:
        return {str(k): float(v) for k, v in self.document.get("timings", {}).items()}

    def own_layers(self) -> list[dict[str, Any]]:
        return [la for la in self.document["layers"] if la.get("role") != "base"]

    def warm_caches(self) -> list[str]:
        """What this build reused from a cache: empty for a truly cold build."""
        reused = [line.strip() for line in self.progress if "(cached)" in line]
        if self.document.get("dependencies", {}).get("cached"):
            reused.append("dependencies: cached (--json)")
        return reused


def compile_pydeploy() -> None:
    """Bytecode for pydeploy and its environment, as an installed copy has it (pip and
    `uv tool install --compile-bytecode` write it; Python does on first import unless
    PYTHONDONTWRITEBYTECODE is set, as on these machines). Without it every timed command
    would pay ~0.6 s compiling modules, a cost no user's second run has."""
    dirs = [sysconfig.get_path("purelib"), str(REPO / "builder")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j0", *dirs],
        env=env, stdout=subprocess.DEVNULL, check=False, timeout=600,
    )  # fmt: skip


def pydeploy_build(  # noqa: PLR0913 - keyword-only, each with a default
    project: Path,
    *,
    base: str,
    tag: str,
    cache_dir: Path | None = None,
    timeout: float = 1200,
    output: str = "docker",
    env: dict[str, str] | None = None,
) -> PydeployBuild:
    """`pydeploy build --json` with the same interpreter, loading into the engine (or
    pushing, with output="registry"); the wall time covers the whole command, as a user
    would see it. `env` adds to the environment (DOCKER_HOST, UV_CACHE_DIR...)."""
    env = {**({"PYDEPLOY_CACHE_DIR": str(cache_dir)} if cache_dir else {}), **(env or {})}
    argv = [sys.executable, "-m", "pydeploy", "build", str(project), "--base", base,
            "--network", "host", "--tag", tag, "--output", output, "--json"]  # fmt: skip
    start = time.monotonic()
    proc = run(argv, timeout=timeout, env=env or None, what=f"pydeploy build {project.name}")
    seconds = time.monotonic() - start
    try:
        document = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise BenchError(
            f"pydeploy build --json printed no JSON ({exc})\n{_tail(proc.stdout)}"
        ) from None
    if not isinstance(document, dict) or "image_id" not in document:
        raise BenchError(f"pydeploy build --json lacks image_id:\n{_tail(proc.stdout)}")
    return PydeployBuild(seconds, document, proc.stderr.splitlines())


def pydeploy_cache_objects() -> tuple[list[str], list[str]]:
    """pydeploy's engine-side caches: the uv cache and venv volumes, the builder images."""
    volumes = [
        name
        for name in docker("volume", "ls", "--format", "{{.Name}}").split()
        if name == "pydeploy-cache" or name.startswith("pydeploy-venv-")
    ]
    images = docker("images", "--format", "{{.Repository}}:{{.Tag}}", "pydeploy-builder").split()
    return volumes, images


def pydeploy_cache_users(volumes: list[str], images: list[str]) -> list[str]:
    """Containers (running or not) built from a builder image or mounting a cache volume."""
    filters = [f"ancestor={ref}" for ref in images] + [f"volume={name}" for name in volumes]
    users: set[str] = set()
    for flt in filters:
        users.update(docker("ps", "-a", "--format", "{{.Names}}", "--filter", flt).split())
    return sorted(users)


def clear_pydeploy_engine_caches(*, quiet: float = 10, patience: float = 600) -> None:
    """Empties pydeploy's engine-side caches (its host-side cache is a fresh directory per
    cold build). They are shared by every pydeploy build on this engine, and removing a
    volume between two containers of someone else's build would break that build: so
    wait until no container has used them for `quiet` seconds, give up after `patience`."""
    deadline = time.monotonic() + patience
    idle_since = time.monotonic()
    while True:
        volumes, images = pydeploy_cache_objects()
        users = pydeploy_cache_users(volumes, images)
        now = time.monotonic()
        if users:
            idle_since = now
        elif now - idle_since >= quiet:
            removals = [("image", ref) for ref in images] + [("volume", ref) for ref in volumes]
            busy = [
                ref
                for kind, ref in removals
                if run(["docker", kind, "rm", ref], timeout=120, check=False).returncode
            ]
            if not busy:
                return
            users, idle_since = busy, now
        if now > deadline:
            raise BenchError(
                f"pydeploy's caches are still in use after {patience:.0f} s"
                f" ({', '.join(users)}). A cold build needs them empty: rerun when no other"
                " pydeploy build (or integration test) runs on this engine."
            )
        time.sleep(1)
