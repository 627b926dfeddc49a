"""The dependencies installed on this host for an image's platform: no engine.

The builder script's `install` job runs here, under this interpreter, in its target mode
(payload/builder_script.py, TargetJob): uv resolves and installs wheels for the base's
Python version and platform (`--python-platform`, binary wheels only) into a venv laid
out as it will be at /opt/venv in the image. Each complete venv is kept in the host cache
by its dependency key (`venvs/KEY`, written beside and renamed into place, so a killed
build leaves no half venv that a later one could use).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydeploy.builder.credentials import (
    Masker,
    index_environment,
    index_settings,
    read_credentials,
)
from pydeploy.builder.stage import BUILD_ENV, BuilderImage, PythonInfo, install_job
from pydeploy.builder.transcript import Reporting, Transcript, attach, explain_failure
from pydeploy.cachekeys import HOST_VENVS_DIR, MARKER, RECIPE_VERSION
from pydeploy.errors import BuildError
from pydeploy.oci.entries import FileEntry, entries_from_dir
from pydeploy.oci.layer import Layer
from pydeploy.payload import source as payload_source
from pydeploy.payload.builder_script import InstallJob, TargetJob
from pydeploy.plan import servers
from pydeploy.plan.depinputs import (
    DependencyInputs,
    dependency_inputs,
    dependency_key,
    input_files,
)
from pydeploy.plan.index import CA_ENV_VARS
from pydeploy.plan.planner import VENV, BuildPlan


class NeedsBuilderError(BuildError):
    """A dependency has no wheel for the target (or a local package compiled on this
    host): only a builder container of the target's platform can install it. The build
    uses an engine for it when one answers; else this is the user's error."""


@dataclass(frozen=True)
class Target:
    """What a venv is installed for: the base's interpreter, machine and C library."""

    python: PythonInfo
    machine: str  # uname -m of the image's platform: x86_64, aarch64
    libc: tuple[str, str]  # ("glibc", "2.36") or ("musl", "1.2")

    def python_platform(self) -> str:
        """uv's --python-platform: the manylinux/musllinux tag of this libc and machine."""
        family, version = self.libc
        major, _, minor = version.partition(".")
        kind = "musllinux" if family == "musl" else "manylinux"
        return f"{self.machine}-{kind}_{major}_{minor or 0}"

    def key(self) -> str:
        """Stands where the engine path has its builder's content key."""
        document = ["host-target", RECIPE_VERSION, self.python_platform(), self.python.version,
                    self.python.executable, self.python.site_packages]  # fmt: skip
        return hashlib.sha256(json.dumps(document).encode()).hexdigest()


@dataclass(frozen=True)
class HostVenv:
    key: str
    path: Path  # the complete venv in the host cache
    pins: tuple[str, ...]
    source: str
    cached: bool
    compiled: bool  # whether its bytecode was compiled (a matching host interpreter)
    # Installed by a builder container instead (a dependency without a wheel): its
    # dependency layers, made from the engine's venv (`path` is then not on disk).
    layers: tuple[Layer, ...] | None = None
    restored: bool = False  # from the registry cache, not installed here


# `restore(key, venv)`: fill the empty directory `venv` with the venv of `key` made
# elsewhere (the registry cache) and return its marker, or return None.
Restore = Callable[[str, Path], "dict[str, Any] | None"]


def install_on_host(
    plan: BuildPlan, target: Target, cache: Path, report: Reporting, restore: Restore | None = None
) -> HostVenv:
    """The venv for this dependency set and target: from the host cache when complete,
    else restored (`restore`), else installed here. A dependency with no wheel for the
    target is a BuildError that names it (the ways out: a wheel, or an engine)."""
    inputs, wanted, planned = _planned(plan, target, cache)
    key, done = planned.key, planned.path
    if planned.cached:
        with contextlib.suppress(OSError):  # its last use, for `pydeploy prune`
            os.utime(done / MARKER)
        report.progress("install", 0.0, f"cached in {done}")
        return planned
    root = done.parent
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(root)
    with _workdir(root) as work:
        restored = restore(key, work / "venv") if restore is not None else None
        if restored is not None:
            _into_place(work / "venv", restored, done)
            report.progress("install", 0.0, f"restored into {done} from the registry cache")
            pins = tuple(str(p) for p in restored.get("pins", []))
            compiled = bool(restored.get("bytecode"))
            return HostVenv(key, done, pins, inputs.source, True, compiled, restored=True)
        src = work / "src"
        for name, path in input_files(inputs):
            dest = src / name
            if path.is_dir() and not path.is_symlink():
                dest.mkdir(parents=True, exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest, follow_symlinks=False)
        venv = work / "venv"
        compile_python = host_python(target.python.version)
        job = _job(inputs, key, wanted, target, (src, work / "build", venv), compile_python)
        result = _run_job(plan, job, work, report)
        _into_place(venv, {**result, "bytecode": bool(compile_python)}, done)
    pins = tuple(str(p) for p in result.get("pins", []))
    return HostVenv(key, done, pins, inputs.source, False, bool(compile_python))


def _into_place(venv: Path, marker: Mapping[str, Any], done: Path) -> None:
    """The marker last, then the rename: a venv under its key is always complete."""
    (venv / MARKER).write_text(json.dumps(marker, sort_keys=True), encoding="utf-8")
    try:
        venv.rename(done)
    except OSError:
        if _marker(done) is None:  # unless a concurrent build finished it first
            raise


def planned_venv(plan: BuildPlan, target: Target, cache: Path) -> HostVenv:
    """The venv `install_on_host` would give, by its key, without installing anything:
    `cached` when the host cache has it complete."""
    return _planned(plan, target, cache)[2]


def _planned(
    plan: BuildPlan, target: Target, cache: Path
) -> tuple[DependencyInputs, tuple[str, ...], HostVenv]:
    """The dependency inputs, the server packages, and the venv of their key (complete
    or not) in the host cache."""
    inputs = dependency_inputs(plan, target.python.version)
    wanted = servers.plan_packages(plan)
    key = dependency_key(target.key(), inputs, wanted, index_settings(plan.index))
    done = cache / HOST_VENVS_DIR / key[:32]
    marker = _marker(done)
    found = marker or {}
    pins = tuple(str(p) for p in found.get("pins", []))
    compiled = bool(found.get("bytecode"))
    return inputs, wanted, HostVenv(key, done, pins, inputs.source, marker is not None, compiled)


def venv_entries(venv: HostVenv) -> list[FileEntry]:
    """The venv's entries at their image paths, without pydeploy's own record."""
    entries = entries_from_dir(venv.path, VENV.lstrip("/"))
    record = f"{VENV.lstrip('/')}/{MARKER}"
    return [entry for entry in entries if entry.path != record]


def _marker(venv: Path) -> dict[str, Any] | None:
    try:
        document = json.loads((venv / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


@contextlib.contextmanager
def _workdir(root: Path) -> Iterator[Path]:
    """A private directory beside the cache entries, named by this process (so a later
    build can tell one a killed build left), removed however the block ends."""
    path = root / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _remove_abandoned(root: Path) -> None:
    """Work directories of builds whose process is gone (SIGKILL, OOM)."""
    for path in root.glob(".tmp-*"):
        pid = path.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def host_python(version: str) -> str:
    """A host interpreter of the target's X.Y (bytecode is per minor version), or ""."""
    minor = ".".join(version.split(".")[:2])
    if f"{sys.version_info.major}.{sys.version_info.minor}" == minor:
        return sys.executable
    found = shutil.which(f"python{minor}")
    return found or ""


def _uv_binary() -> Path:
    try:
        from uv import find_uv_bin  # noqa: PLC0415 - only installs need it

        return Path(find_uv_bin())
    except (ImportError, FileNotFoundError) as exc:
        found = shutil.which("uv")
        if found:
            return Path(found)
        raise BuildError(
            "An install without an engine runs uv on this host, and none was found.",
            hint="Install pydeploy with its dependencies (uv is one), or put uv on PATH.",
        ) from exc


def _job(  # noqa: PLR0913, PLR0917 - the job document's parts
    inputs: DependencyInputs,
    key: str,
    wanted: tuple[str, ...],
    target: Target,
    dirs: tuple[Path, Path, Path],
    compile_python: str,
) -> InstallJob:
    src, work, venv = dirs
    uv = _uv_binary()
    uv_dir = uv.parent.parent
    if uv.parent.name != "bin":  # ensure_uv looks for UV_DIR/bin/uv
        uv_dir = venv.parent / "uv"
        (uv_dir / "bin").mkdir(parents=True)
        (uv_dir / "bin" / "uv").symlink_to(uv)
    # The engine path's job document, pointed at this host's directories.
    builder = BuilderImage("(host)", "", target.python, target.key())
    job = install_job(inputs, key, wanted, builder)
    target_job: TargetJob = {
        "python_platform": target.python_platform(),
        "python_version": target.python.version,
        "executable": target.python.executable,
        "site_packages": target.python.site_packages,
        "venv_path": VENV,
        "compile_python": compile_python,
    }
    return {
        **job, "uv_dir": str(uv_dir), "uv_seed": "", "uv_seed_offered": False,
        "inputs": str(src), "work": str(work), "venv": str(venv), "light": False,
        "previous": "", "elf_scan": None, "target": target_job,
    }  # fmt: skip


def _environment(plan: BuildPlan) -> tuple[dict[str, str], bytes, Masker]:
    credentials = read_credentials(plan.index, os.environ)
    env = {**os.environ, **BUILD_ENV, "PYTHONUNBUFFERED": "1"}
    ca = plan.index.ca_bundle
    if ca:
        env |= dict.fromkeys(CA_ENV_VARS, str(ca))
    indexes = index_environment(plan.index, credentials)
    env |= indexes.public
    secrets = json.dumps(indexes.secret, sort_keys=True).encode() + b"\n"
    return env, secrets, Masker(credentials.secrets())


def _run_job(plan: BuildPlan, job: InstallJob, work: Path, report: Reporting) -> dict[str, Any]:
    """The builder script's install, here; its result, or the error its output explains."""
    script = work / "builder_script.py"
    script.write_bytes(payload_source("builder_script.py"))
    job_file = work / "job.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    env, secrets, masker = _environment(plan)
    transcript = Transcript(report.progress, masker, report.output, report.verbose)
    with subprocess.Popen(
        [sys.executable, str(script), "install", str(job_file)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=env, cwd=work, start_new_session=True,
    ) as proc:  # fmt: skip
        assert proc.stdin is not None  # noqa: S101 - PIPEs
        assert proc.stdout is not None  # noqa: S101
        # The secrets line; stdin then stays open as the script's lifeline (it stops
        # when this process is gone).
        proc.stdin.write(secrets)
        proc.stdin.flush()
        try:
            for raw in proc.stdout:
                transcript(raw.decode("utf-8", "replace").rstrip("\n"))
        except BaseException:
            proc.kill()
            raise
        finally:
            threading.Thread(target=proc.stdin.close, daemon=True).start()
        code = proc.wait()
    if code == 0 and transcript.result is not None:
        return transcript.result
    missing = no_wheel(transcript.text) or _compiled_here(transcript.text)
    if missing:
        raise attach(_no_wheel_error(plan, missing, job), transcript.text)
    raise attach(explain_failure(transcript.failed_step, transcript.text, plan), transcript.text)


_NO_WHEEL = re.compile(
    r"Wheels are required for `([^`]+)`"
    r"|Because (?:all versions of )?(\S+?)(?:[=<>!~]=?\S*)? has no (?:usable )?wheels"
    # A package uv built on this host, for this host's platform, or failed to build:
    r"|The built wheel `([A-Za-z0-9_.]+?)-\d[^`]*` is not compatible with the target"
    r"|Failed to (?:build|download and build) `([A-Za-z0-9_.-]+)"
)


def no_wheel(output: str) -> str | None:
    """The package uv found no wheel for (builds from source are off), or built one that
    is not for the target, if that is how the install failed."""
    match = _NO_WHEEL.search(output)
    return next((g for g in match.groups() if g), None) if match else None


def _compiled_here(output: str) -> str | None:
    """The local package the script found compiled on this host (install_for_target)."""
    match = re.search(r"the package\(s\) (\S+?),? .*built a compiled wheel", output)
    return match.group(1) if match else None


def _no_wheel_error(plan: BuildPlan, name: str, job: InstallJob) -> NeedsBuilderError:
    target = job.get("target")
    platform = target["python_platform"] if target else "?"
    version = target["python_version"] if target else "?"
    return NeedsBuilderError(
        f"`{name}` has no wheel for {platform} (Python {version}) and does not build as "
        "pure Python on this host: compiling it needs a builder container of that platform "
        "(its compilers and headers: `tool.pydeploy.build-packages`).",
        hint=(
            "Build where a Docker or Podman engine answers (local or DOCKER_HOST): pydeploy "
            "then compiles it in a builder; or use a version of "
            f"`{name}` that publishes a wheel for this platform (or an index that has one), "
            f"in {plan.project.pyproject}."
        ),
    )


def build_project_on_host(
    plan: BuildPlan, target: Target, app_dir: Path, work: Path, report: Reporting
) -> Path:
    """The project's own wheel, built on this host by its build backend and installed
    without dependencies into a site tree for the image's site-packages (as the engine
    path's `project` job does). A wheel that is not pure Python is for this host's
    platform: NeedsBuilderError, as for a dependency without a wheel."""
    uv = str(_uv_binary())
    env, _, masker = _environment(plan)
    dist, site = work / "dist", work / "project-site"
    lines: list[str] = []

    def run(argv: list[str]) -> None:
        proc = subprocess.run(
            argv, env=env, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, check=False,
        )  # fmt: skip
        output = masker(proc.stdout)
        lines.extend(output.splitlines())
        if report.verbose and report.output:
            for line in output.splitlines():
                report.output(line)
        if proc.returncode != 0:
            error = BuildError(
                f"Building the project's own wheel on this host failed:\n{output[-3000:]}",
                hint=f"Check the [build-system] table of {plan.project.pyproject}.",
            )
            raise attach(error, "\n".join(lines))

    started = time.monotonic()
    run([uv, "build", "--wheel", "--no-sources", "--python", sys.executable,
         "--out-dir", str(dist), str(app_dir)])  # fmt: skip
    built = sorted(dist.glob("*.whl"))
    if len(built) != 1 or not built[0].name.endswith("-none-any.whl"):
        name = built[0].name if built else "no wheel"
        raise NeedsBuilderError(
            f"The project's own wheel ({name}) is not pure Python, so this host built it "
            f"for its own platform, not for {target.python_platform()}.",
            hint="Build where a Docker or Podman engine answers: pydeploy then builds it "
            "in a builder container of the image's platform.",
        )
    run([uv, "pip", "install", "--python", sys.executable, "--no-deps", "--target", str(site),
         "--python-version", target.python.version, "--python-platform",
         target.python_platform(), str(built[0])])  # fmt: skip
    shutil.rmtree(site / "bin", ignore_errors=True)
    (site / ".lock").unlink(missing_ok=True)
    python = host_python(target.python.version)
    if python:
        final = f"{VENV}/{target.python.site_packages}"
        run([python, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash",
             "-s", str(site), "-p", final, str(site)])  # fmt: skip
    report.progress("project", time.monotonic() - started, built[0].name)
    return site
