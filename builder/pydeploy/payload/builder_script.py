"""Runs inside builder containers, under the base image's own python3.

pydeploy uploads this file (and a JSON job) into a container; it never imports pydeploy
and uses only the standard library, with 3.8-compatible code at run time, because it
runs under whatever interpreter the base image has.

    builder_script.py probe EXECUTABLE     print the interpreter's facts as one JSON line
    builder_script.py install JOB.json     uv tools, resolve, install, compile bytecode
    builder_script.py project JOB.json     build the project's wheel into a site tree
    python -c SOURCE check-app JOB_JSON    (in the runtime image) import the app target

A job with `"light": true` runs in the base image itself (no compilers added): nothing
third-party is built from source (`--only-binary :all:`, except the local path packages),
and stand-in compilers on PATH record any build that tried to compile. The host then
retries in the full builder (see failures.needs_full_builder).

`check-app` runs in a container of the runtime image as it will ship (the runtime uid,
a read-only root filesystem), from this file's source given to `python -c`, so nothing
of it stays in an image: it imports the target as the server will, measures one worker
(measure_worker) and reports why an import failed (`diagnose`).

The host reads stdout: lines starting with `##pydeploy:` are protocol, the rest is tool
output, kept for error messages and --verbose:

    ##pydeploy:begin STEP         a step starts
    ##pydeploy:end STEP DETAIL    it finished (DETAIL is optional free text)
    ##pydeploy:result JSON        the command's result, last line on success
    ##pydeploy:compilers NAMES    (light jobs) builds ran these stand-in compilers

`install`, `project` and `check-app` first read one line from stdin: a JSON object of the
environment variables that carry index credentials. They reach the tools' environments only, never
this container's configuration, and are never printed here. stdin then stays open for as
long as the pydeploy process that started the container lives: its end means that
process is gone (SIGKILL, a lost engine connection), and the job stops at once.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypedDict, cast

# The protocol host and container share, stated here once (the host imports it):
# the line marker and the job documents. Under python3.8 the TypedDicts' annotations
# stay strings (the __future__ import), so `list[str]` and `X | None` are never evaluated.
MARK = "##pydeploy:"
# This file's path; under `python -c` (the runtime image's app check) there is none.
_HERE = str(Path(__file__).resolve()) if "__file__" in globals() else "<string>"


class SkipLists(TypedDict):
    """The host's never-shipped names (pydeploy.plan.skiplist), for copy_tree."""

    skip_dirs: list[str]
    package_root_skip_dirs: list[str]


class InstallJob(SkipLists):
    """`install JOB.json`: resolve the dependency inputs and fill the venv."""

    uv_dir: str
    uv_version: str
    uv_seed: str  # the host's uv binary, sent into the container ("" when none)
    # The host has one to lend but did not send it (the volume mostly has uv already):
    # without uv, the script asks for it (EXIT_NEEDS_UV_SEED) instead of installing uv.
    uv_seed_offered: bool
    inputs: str
    work: str
    copies: list[str]
    cwd: str
    source: str
    requirements: list[str]
    requirement_lines: list[str]
    extras: list[str]
    groups: list[str]
    export: list[str]  # uv.lock: the host's `uv export` options (depinputs.uv_export_options)
    server_packages: list[str]
    local_names: list[str]
    venv: str
    key: str
    marker: str
    python: str
    light: bool
    # A complete venv of the same builder mounted read-only ("" for none): the bytecode
    # of its unchanged files is reused (see compile_bytecode).
    previous: str
    # When this container is the runtime base itself: the shared-library scan to run on
    # the finished venv (see scan_libraries); None otherwise.
    elf_scan: ElfScanJob | None
    # On the host, for an image's platform (engine-free builds): see install_for_target.
    target: TargetJob | None


class TargetJob(TypedDict):
    """An install on the host for another interpreter and platform: the venv is laid out
    as it will be in the image, its packages are wheels for that platform only."""

    python_platform: str  # uv's --python-platform, e.g. "aarch64-manylinux_2_36"
    python_version: str  # the base's interpreter, "3.11.2"
    executable: str  # that interpreter's path in the image: bin/python links to it
    site_packages: str  # "lib/python3.11/site-packages", relative to the venv
    venv_path: str  # where the venv is in the image, "/opt/venv"
    compile_python: str  # a host interpreter of the same X.Y for bytecode, "" for none


class ElfScanJob(TypedDict):
    script: str  # elfdeps.py, uploaded beside this script
    library_path: str  # the runtime image's LD_LIBRARY_PATH


class Measure(TypedDict):
    """How the app check measures one worker (see measure_worker)."""

    server: str
    modules: list[str]  # what a worker of that server imports besides the app
    path: str
    request: bool


class ProjectJob(SkipLists):
    """`project JOB.json`: build the project's wheel and install it into a site tree."""

    uv: str
    python: str
    venv: str
    site_packages: str
    app_dir: str
    light: bool


class CheckJob(TypedDict):
    """`check-app JOB_JSON` (in the runtime image): import the app and measure a worker."""

    target: str
    app_dir: str
    measure: Measure | None


class HostCheckJob(CheckJob, total=False):
    """A check on the build host (no engine): writes anywhere but these directories are
    refused as the image's read-only root filesystem refuses them (confine_writes)."""

    writable: list[str]


class _InstallResult(TypedDict):
    key: str
    source: str
    pins: list[str]
    added: list[str]
    compilers: bool


class InstallResult(_InstallResult, total=False):
    """The `result` line of `install` (also the venv's marker file)."""

    elf_scan: dict[str, Any]  # elfdeps.py's scan result, with the library path it used


class ProjectResult(TypedDict):
    """The `result` line of `project`."""

    project_site: str
    wheel: str


class CheckResult(TypedDict):
    """The `result` line of `check-app`: inspect_app's report."""

    app: dict[str, Any]


REQUIREMENTS = ".pydeploy-requirements.txt"
SERVER_IN = ".pydeploy-server.in"
PINS = ".pydeploy-pins.txt"
CONSTRAINTS = ".pydeploy-constraints.txt"
EXIT_STEP_FAILED = 3
# The measured worker's first request (and ASGI lifespan startup) gets this long: an app
# that waits on a database the builder cannot reach is measured as far as it got.
FIRST_REQUEST_TIMEOUT = 10.0
EXIT_OWNER_GONE = 75
EXIT_NEEDS_UV_SEED = 76
# Variables that carry secrets: for the tools this script runs, and nothing else.
SECRETS: dict[str, str] = {}
# Light jobs: stand-in compilers, and the file they append their names to.
NO_COMPILERS_DIR = "/run/pydeploy/no-compilers"
COMPILERS_USED = "/run/pydeploy/compilers-used"
STAND_IN_COMPILERS = (
    *("cc", "gcc", "c++", "g++", "cpp", "clang", "clang++", "gfortran"),
    *("cargo", "rustc"),
)


class StepFailedError(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


def emit(kind: str, text: str = "") -> None:
    sys.stdout.write(f"{MARK}{kind} {text}".rstrip() + "\n")
    sys.stdout.flush()


def tool_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a tool that may talk to the package index: with the secrets."""
    return {**(os.environ if env is None else env), **SECRETS}


def run(
    step: str, argv: list[str], cwd: str | None = None, env: dict[str, str] | None = None
) -> None:
    """Run a tool with its output on our stdout; a failure ends the step."""
    sys.stdout.flush()
    code = subprocess.call(
        argv,
        cwd=cwd,
        env=tool_env(env),
        stdin=subprocess.DEVNULL,
        stdout=sys.stdout,
        stderr=subprocess.STDOUT,
    )
    if code != 0:
        raise StepFailedError(step, f"`{' '.join(argv[:3])} ...` exited with {code}")


def capture(step: str, argv: list[str], cwd: str | None = None) -> str:
    """Run a tool and return its stdout (stderr goes to our output)."""
    sys.stdout.flush()
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=tool_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=sys.stdout,
        check=False,
    )
    if proc.returncode != 0:
        raise StepFailedError(step, f"`{' '.join(argv[:3])} ...` exited with {proc.returncode}")
    return proc.stdout.decode("utf-8", "replace")


# --- pure helpers (unit-tested on the host) --------------------------------------------


def normalize(name: str) -> str:
    """PEP 503 name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


_EXACT_PIN = re.compile(r"===?\s*([0-9][^\s,;]*)\s*$")
_NAME = re.compile(r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[|[=<>~!]=?|@|;|$)")


def requirement_names(lines: list[str]) -> dict[str, str | None]:
    """Normalized names a requirements file names (options and bare paths name nothing),
    each with its exact `==` pin when it has one."""
    names: dict[str, str | None] = {}
    for raw in lines:
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-", ".", "/")) or "://" in line.split("@")[0]:
            continue
        match = _NAME.match(line)
        if match:
            pin = _EXACT_PIN.search(line.split(";", 1)[0])
            names[normalize(match.group(1))] = pin.group(1) if pin else None
    return names


def requirement_file_names(path: str, seen: set[str] | None = None) -> dict[str, str | None]:
    """requirement_names of a file and the files it includes with -r."""
    seen = set() if seen is None else seen
    file = Path(path)
    if path in seen or not file.is_file():
        return {}
    seen.add(path)
    lines = file.read_text(encoding="utf-8").splitlines()
    names = requirement_names(lines)
    for line in lines:
        match = re.match(r"^\s*(?:-r|--requirement)[\s=]+(\S+)", line)
        if match:
            names.update(requirement_file_names(str(file.parent / match.group(1)), seen))
    return names


_SPEC_START = re.compile(r"[<>=!~;\[ ]")
# uvicorn's gunicorn worker moved out into uvicorn-worker, whose 0.4 needs uvicorn 0.36: a
# project pinning an older uvicorn keeps uvicorn's own `uvicorn.workers` (the same class,
# which server_workers.py falls back to) and gets no uvicorn-worker.
OWN_WORKER_UVICORN = (0, 36)


def _release(version: str | None) -> tuple[int, ...] | None:
    match = re.match(r"^(\d+(?:\.\d+)*)", version or "")
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def missing_server_packages(named: Mapping[str, str | None], wanted: list[str]) -> list[str]:
    """The server packages the dependency set does not already name."""
    # `wanted` may carry version ranges ("uvicorn-worker>=0.4,<0.5"): compare names only.
    missing = [
        pkg for pkg in wanted if normalize(_SPEC_START.split(pkg, maxsplit=1)[0]) not in named
    ]
    uvicorn = _release(named.get("uvicorn"))
    if uvicorn is not None and uvicorn < OWN_WORKER_UVICORN:
        missing = [p for p in missing if not p.startswith("uvicorn-worker")]
    return missing


_PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?(==[^\s;#]+)")


def pinned_constraints(lines: list[str]) -> list[str]:
    """`name==version` constraints from `uv pip compile` output (extras dropped; local
    paths, URLs and options name no index version and are left out)."""
    found = []
    for line in lines:
        match = _PINNED.match(line.strip())
        if match:
            found.append(f"{match.group(1)}{match.group(2)}")
    return found


def locked_constraints(lines: list[str]) -> list[str]:
    """The index pins of locked requirement lines (`name==version ; marker`, hashes
    dropped) as constraints: installing the server packages afterwards may add packages
    but never move a locked one."""
    return [ln.split(" --hash=", 1)[0].strip() for ln in lines if _PINNED.match(ln.strip())]


def light_install_args(local_names: list[str]) -> list[str]:
    """uv options of a light install: wheels only, except the local path packages (built
    from their directories; the stand-in compilers catch one that compiles)."""
    args = ["--only-binary", ":all:"]
    for name in sorted(set(local_names)):
        args += ["--no-binary", name]
    return args


def compiler_names(config: dict[str, Any], machine: str) -> list[str]:
    """The commands a build may run to compile: the usual names, the target-prefixed gcc
    names, and whatever the interpreter's sysconfig says (CC, CXX, LDSHARED...)."""
    names = set(STAND_IN_COMPILERS)
    names |= {f"{machine}-linux-gnu-{tool}" for tool in ("gcc", "g++", "cc", "c++", "cpp")}
    for var in ("CC", "CXX", "CPP", "LDSHARED", "LDCXXSHARED"):
        value = config.get(var)
        if isinstance(value, str) and value.split():
            names.add(Path(value.split()[0]).name)
    return sorted(names)


_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class TargetError(ValueError):
    """An app target that is neither `module:attribute` nor `module:factory(literals)`."""


def parse_target(text: str) -> tuple[str, list[str], tuple[list[Any], dict[str, Any]] | None]:
    """Split `module:attr.sub` or `module:factory("x", debug=False)` as gunicorn reads it:
    a call names its factory by a simple name and passes literals only (parsed with `ast`,
    never evaluated), so the app check and the server call the factory alike."""
    module, colon, rest = text.partition(":")
    if not colon or not _DOTTED.match(module):
        raise TargetError("must be `module:attribute` or `module:factory()` (e.g. `main:app`)")
    if "(" not in rest:
        if not _DOTTED.match(rest):
            raise TargetError(f"`{rest}` is not an attribute name (e.g. `app` or `api.app`)")
        return module, rest.split("."), None
    try:
        call = ast.parse(rest, mode="eval").body
    except SyntaxError as exc:
        raise TargetError(f"`{rest}` is not a valid call: {exc.msg}") from None
    if not isinstance(call, ast.Call):
        raise TargetError(f"`{rest}` is neither an attribute name nor a factory call")
    if not isinstance(call.func, ast.Name):
        raise TargetError(
            f"the factory in `{rest}` must be a simple name (gunicorn looks it up in the "
            "module): put its module before the colon, e.g. `pkg.factories:create_app()`"
        )
    if any(isinstance(n, ast.Starred) for n in call.args) or any(
        k.arg is None for k in call.keywords
    ):
        raise TargetError(f"`{rest}` unpacks arguments (`*`/`**`): pass literals")

    def literal(node: ast.expr) -> Any:
        try:
            return ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise TargetError(
                f"`{ast.get_source_segment(rest, node) or '?'}` in `{rest}` is not a literal: "
                "a factory's arguments are strings, numbers, True/False/None, or lists, "
                "tuples and dicts of them (the server parses them; it evaluates no code)"
            ) from None

    args = [literal(node) for node in call.args]
    kwargs = {str(k.arg): literal(k.value) for k in call.keywords}
    return module, [call.func.id], (args, kwargs)


def _positional(obj: Any) -> tuple[int, bool] | None:
    """(required positional parameters, takes *args), None when unreadable."""
    try:
        params = list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):
        return None
    required = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(required), any(p.kind == p.VAR_POSITIONAL for p in params)


def interface_of(obj: Any) -> str:
    """`wsgi`, `asgi`, or why it is neither: `not-callable`, `class`, `no-arguments` (it
    requires no positional argument, so it is shaped like an app factory: a server would
    pass it the request's and get no answer), `unknown` (see `accepts`)."""
    if inspect.isclass(obj):
        return "class"
    if not callable(obj):
        return "not-callable"
    call = obj if inspect.isroutine(obj) else getattr(type(obj), "__call__", None)  # noqa: B004
    if inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(obj):
        return "asgi"
    shape = _positional(obj)
    if shape is None or shape[1]:
        return "unknown"
    if shape[0] == 0:
        return "no-arguments"
    return {2: "wsgi", 3: "asgi"}.get(shape[0], "unknown")


def accepts(obj: Any) -> list[str]:
    """The interfaces whose call `obj`'s signature takes: WSGI's two arguments, ASGI's
    three (or ASGI 2's one). A forced `server.interface` must be one of these; an
    unreadable signature takes either."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return ["wsgi", "asgi"]
    found = []
    for interface, arities in (("wsgi", (2,)), ("asgi", (3, 1))):
        for arity in arities:
            try:
                signature.bind(*range(arity))
            except TypeError:
                continue
            found.append(interface)
            break
    return found


# --- probe -----------------------------------------------------------------------------


def probe(executable: str) -> dict[str, Any]:
    import platform  # noqa: PLC0415 - only this command needs them
    import sysconfig  # noqa: PLC0415

    base = "/venv"
    scheme = "venv" if "venv" in sysconfig.get_scheme_names() else "posix_prefix"
    variables = {"base": base, "platbase": base, "installed_base": base, "installed_platbase": base}
    purelib = sysconfig.get_path("purelib", scheme, variables)
    include = sysconfig.get_paths()["include"]
    return {
        "executable": executable,
        "version": platform.python_version(),
        "site_packages": os.path.relpath(purelib, base),
        "headers": (Path(include) / "Python.h").is_file(),
        "machine": platform.machine(),
    }


# --- light jobs: no compilers ------------------------------------------------------------


def no_compilers_path() -> str:
    """A PATH whose first directory holds stand-in compilers that record their use and
    fail, so a build that would compile (even one whose C speedups are optional, which
    falls back silently) is noticed."""
    import platform  # noqa: PLC0415 - only light jobs need them
    import sysconfig  # noqa: PLC0415

    shims = Path(NO_COMPILERS_DIR)
    shims.mkdir(parents=True, exist_ok=True)
    Path(COMPILERS_USED).unlink(missing_ok=True)
    script = (
        "#!/bin/sh\n"
        f'echo "${{0##*/}}" >> {COMPILERS_USED}\n'
        'echo "pydeploy: no compiler in the base image (${0##*/}); retrying in the '
        'builder with build-packages" >&2\n'
        "exit 127\n"
    )
    for name in compiler_names(sysconfig.get_config_vars(), platform.machine()):
        shim = shims / name
        shim.write_text(script, encoding="utf-8")
        shim.chmod(0o755)
    return f"{shims}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"


def compilers_used() -> list[str]:
    path = Path(COMPILERS_USED)
    if not path.is_file():
        return []
    return sorted({ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln})


def report_compilers(job: InstallJob | ProjectJob) -> None:
    """Tell the host (light jobs) which stand-in compilers ran."""
    used = compilers_used() if job.get("light") else []
    if used:
        emit("compilers", " ".join(used))


# --- install ---------------------------------------------------------------------------


def copy_tree(job: SkipLists, source: str, dest: str) -> None:
    """Copy the uploaded dependency inputs to the build directory, where builds write.
    The host already leaves VCS data, caches and build output out; this is the builder's
    own guard, with the host's list (`skip_dirs`, `package_root_skip_dirs`) from the job."""
    always = set(job["skip_dirs"])
    in_package_root = set(job["package_root_skip_dirs"])

    def skip(_directory: str, names: list[str]) -> set[str]:
        skipped = {n for n in names if n in always or n.endswith(".egg-info")}
        if "pyproject.toml" in names or "setup.py" in names:
            skipped |= {n for n in names if n in in_package_root}
        return skipped

    if Path(dest).exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, symlinks=True, ignore=skip)


def ensure_uv(job: InstallJob) -> str:
    """The pinned uv in the cache volume, installed once with the base's venv + pip."""
    step = "uv tools"
    target = Path(job["uv_dir"])
    uv = target / "bin" / "uv"
    emit("begin", step)
    if os.access(uv, os.X_OK):
        emit("end", f"{step} uv {job['uv_version']} (cached)")
        return str(uv)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Installed beside the target and renamed: a concurrent or interrupted build never
    # sees a half-installed tools directory.
    tmp = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    how = "installed"
    try:
        if seed_runs(job.get("uv_seed") or "", job["uv_version"]):
            (tmp / "bin").mkdir(parents=True)
            shutil.copy2(job["uv_seed"], tmp / "bin" / "uv")
            how = "copied from the host"
        else:
            run(step, [job["python"], "-m", "venv", str(tmp)])
            pip = [str(tmp / "bin" / "python"), "-m", "pip", "install", "-q"]
            pip += ["--disable-pip-version-check", "--no-input", f"uv=={job['uv_version']}"]
            run(step, pip)
        try:
            tmp.rename(target)
        except OSError:
            if not os.access(uv, os.X_OK):  # unless a concurrent build won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    emit("end", f"{step} uv {job['uv_version']} ({how})")
    return str(uv)


def needs_uv_seed(job: InstallJob) -> bool:
    """Whether the cache volume lacks the pinned uv while the host has one to lend."""
    uv = Path(job["uv_dir"]) / "bin" / "uv"
    return bool(job.get("uv_seed_offered")) and not job["uv_seed"] and not os.access(uv, os.X_OK)


def seed_runs(path: str, version: str) -> bool:
    """Whether the host's uv binary at `path` runs here and is the pinned version (a
    musl or foreign-architecture base cannot run it: then uv is installed with pip)."""
    if not path or not os.access(path, os.X_OK):
        return False
    try:
        proc = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and proc.stdout.split()[1:2] == [version]


def drop_editable(path: Path, seen: set[Path] | None = None) -> None:
    """Rewrite `-e PATH` lines of a requirements file (and those it includes) to `PATH`:
    an editable install would point into the builder's copy of the source."""
    seen = set() if seen is None else seen
    if path in seen or not path.is_file():
        return
    seen.add(path)
    text = path.read_text(encoding="utf-8")
    path.write_text(re.sub(r"(?m)^\s*(?:-e|--editable)(?:\s+|=)", "", text), encoding="utf-8")
    for match in re.finditer(r"(?m)^\s*(?:-r|--requirement|-c|--constraint)[\s=]+(\S+)", text):
        drop_editable(path.parent / match.group(1), seen)


# Sources a lock read on the host turned into requirement lines to install as they are.
HOST_LOCKS = ("poetry.lock", "pdm.lock", "Pipfile.lock")


class Resolved(NamedTuple):
    """What `resolve` prepared: where to run, `uv pip install` arguments, pins recorded at
    resolution ([project] only), the server packages added, and for locked sources a
    second, resolving install of those servers (arguments, or [])."""

    cwd: Path
    args: list[str]
    pins: list[str]
    added: list[str]
    servers: list[str]


def resolve(job: InstallJob, uv: str) -> Resolved:
    """Prepare what to install, one small function per kind of source."""
    step = "resolve"
    emit("begin", step)
    work = Path(job["work"])
    if work.exists():
        shutil.rmtree(work)
    for rel in job["copies"]:
        origin = Path(job["inputs"]) / rel
        if origin.is_dir():
            copy_tree(job, str(origin), str(work / rel))
        else:  # a local wheel or sdist named by path, or an included requirements file
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, work / rel)
    cwd = work / job["cwd"]
    source = job["source"]
    if source == "project":
        return _resolve_project(job, uv, cwd)
    if source in HOST_LOCKS:
        resolved = _resolve_host_lock(job, cwd)
    elif source == "uv.lock":
        resolved = _resolve_uv_lock(job, uv, cwd)
    elif source == "pylock":
        resolved = _resolve_lines(job, cwd)
    else:
        resolved = _resolve_requirements(job, cwd)
    added = resolved.added
    emit("end", f"{step} {source}" + (f" + {', '.join(added)}" if added else ""))
    return resolved


def _resolve_uv_lock(job: InstallJob, uv: str, cwd: Path) -> Resolved:
    # The options come from the plan, so an ejected Dockerfile exports the same set.
    run("resolve", [uv, "export", *job["export"], "--output-file", REQUIREMENTS], cwd=str(cwd))
    missing = missing_server_packages(requirement_file_names(str(cwd / REQUIREMENTS)), _wanted(job))
    return Resolved(cwd, ["-r", REQUIREMENTS, *missing], [], missing, [])


def _resolve_lines(job: InstallJob, cwd: Path) -> Resolved:
    """pylock.toml's lines, resolved together with the server packages."""
    lines = job["requirement_lines"]
    (cwd / REQUIREMENTS).write_text("".join(f"{ln}\n" for ln in lines), encoding="utf-8")
    missing = missing_server_packages(requirement_names(lines), _wanted(job))
    return Resolved(cwd, ["-r", REQUIREMENTS, *missing], [], missing, [])


def _resolve_host_lock(job: InstallJob, cwd: Path) -> Resolved:
    """poetry.lock, pdm.lock, Pipfile.lock: the locked set as it is (`--no-deps`, hashes
    verified), then the server packages the lock lacks in a resolving install that the
    locked versions constrain (so --no-deps does not strip their own dependencies)."""
    lines = job["requirement_lines"]
    (cwd / REQUIREMENTS).write_text("".join(f"{ln}\n" for ln in lines), encoding="utf-8")
    missing = missing_server_packages(requirement_names(lines), _wanted(job))
    servers: list[str] = []
    if missing:
        (cwd / CONSTRAINTS).write_text(
            "".join(f"{c}\n" for c in locked_constraints(lines)), encoding="utf-8"
        )
        servers = [*missing, "-c", CONSTRAINTS]
    return Resolved(cwd, ["--no-deps", "-r", REQUIREMENTS], [], missing, servers)


def _resolve_requirements(job: InstallJob, cwd: Path) -> Resolved:
    args: list[str] = []
    named: dict[str, str | None] = {}
    for rel in job["requirements"]:
        drop_editable(cwd / rel)
        args += ["-r", rel]
        named.update(requirement_file_names(str(cwd / rel)))
    missing = missing_server_packages(named, _wanted(job))
    return Resolved(cwd, [*args, *missing], [], missing, [])


def _resolve_project(job: InstallJob, uv: str, cwd: Path) -> Resolved:
    """Resolve [project.dependencies] now and keep the pins."""
    compile_args = [uv, "pip", "compile", "pyproject.toml", *python_args(job)]
    compile_args += ["--no-header", "--no-annotate", "--quiet", "--output-file", PINS]
    for extra in job["extras"]:
        compile_args += ["--extra", extra]
    for group in job["groups"]:
        compile_args += ["--group", group]
    run("resolve", compile_args, cwd=str(cwd))
    missing = missing_server_packages(requirement_file_names(str(cwd / PINS)), _wanted(job))
    if missing:
        (cwd / SERVER_IN).write_text("".join(f"{p}\n" for p in missing), encoding="utf-8")
        run("resolve", [*compile_args, SERVER_IN], cwd=str(cwd))
    text = (cwd / PINS).read_text(encoding="utf-8")
    pins = [ln.strip() for ln in text.splitlines() if ln.strip() and ln[0] != "#"]
    emit("end", f"resolve {len(pins)} pins from [project.dependencies]")
    return Resolved(cwd, ["-r", PINS], pins, missing, [])


def _wanted(job: InstallJob) -> list[str]:
    return list(job["server_packages"])


def python_args(job: InstallJob) -> list[str]:
    """Whom uv resolves for: the builder's interpreter, or a target's version and platform."""
    target = job.get("target")
    if target:
        return ["--python-version", target["python_version"],
                "--python-platform", target["python_platform"]]  # fmt: skip
    return ["--python", job["python"]]


def compile_bytecode(
    python: str, tree: str, extra: list[str], reuse: tuple[str, str] | None = None
) -> int:
    """Hash-based .pyc (PEP 552): no timestamps, so two builds give the same bytes, and
    never stale when image layers normalize mtimes. Files that are not valid Python
    (templates, py2 leftovers some packages ship) are skipped, as pip and uv do.

    `reuse` (this venv, a previous venv of the same interpreter at the same path): a
    source whose bytes equal the previous venv's gets that venv's .pyc instead of a
    compile, written as py_compile writes it. The same source, path and interpreter give
    the same bytes (what reproducible builds rest on), so the result is the same."""
    args = ["-q", "--invalidation-mode", "unchecked-hash", *extra, tree]
    argv = [python, "-m", "compileall", *args]
    if reuse is not None:
        argv = [python, "-c", _REUSING_COMPILEALL, *reuse, *args]
    sys.stdout.flush()
    return subprocess.call(
        argv, stdin=subprocess.DEVNULL, stdout=sys.stdout, stderr=subprocess.STDOUT
    )


# `python -c` this VENV PREVIOUS COMPILEALL_ARGS...: compileall's own command line (same
# walk, same files, same exit code) with py_compile.compile reusing a previous venv's
# .pyc of identical source (its header checked: this interpreter's magic number, the
# unchecked-hash flag, the source's hash). Workers are forked, and inherit the patch.
_REUSING_COMPILEALL = """
import compileall, importlib.util, os, py_compile, sys
from importlib import _bootstrap_external as bx
venv, previous = sys.argv[1], sys.argv[2]
original = py_compile.compile

def _previous_pyc(file, cfile):
    try:
        old_file = os.path.join(previous, os.path.relpath(file, venv))
        old_cfile = os.path.join(previous, os.path.relpath(cfile, venv))
        if os.path.islink(cfile) or os.path.exists(cfile):
            return None
        with open(file, "rb") as f:
            source = f.read()
        with open(old_file, "rb") as f:
            if f.read() != source:
                return None
        with open(old_cfile, "rb") as f:
            data = f.read()
    except (OSError, ValueError):
        return None
    header = importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little")
    if data[:8] != header or data[8:16] != importlib.util.source_hash(source):
        return None
    return data

def compile(file, cfile=None, dfile=None, doraise=False, optimize=-1,
            invalidation_mode=None, quiet=0):
    same = (cfile is not None and dfile is None and optimize == -1
            and invalidation_mode == py_compile.PycInvalidationMode.UNCHECKED_HASH)
    data = _previous_pyc(file, cfile) if same else None
    if data is None:
        return original(file, cfile, dfile, doraise, optimize, invalidation_mode, quiet)
    dirname = os.path.dirname(cfile)
    if dirname:
        os.makedirs(dirname, exist_ok=True)
    bx._write_atomic(cfile, data, bx._calc_mode(file))
    return cfile

py_compile.compile = compile
sys.argv = ["compileall", *sys.argv[3:]]
sys.exit(int(not compileall.main()))
"""


def light_constraints(job: InstallJob, uv: str, cwd: Path, added: list[str]) -> list[str]:
    """For requirements files (not pinned): resolve them as the full builder would (sdists
    allowed, for metadata) and pin that resolution as constraints, so the wheels-only
    install cannot settle on an older version that happens to have a wheel."""
    sources = list(job["requirements"])
    if added:
        (cwd / SERVER_IN).write_text("".join(f"{p}\n" for p in added), encoding="utf-8")
        sources.append(SERVER_IN)
    argv = [uv, "pip", "compile", *sources, *python_args(job), "--no-header"]
    argv += ["--no-annotate", "--quiet", "--output-file", CONSTRAINTS]
    run("resolve", argv, cwd=str(cwd))
    lines = (cwd / CONSTRAINTS).read_text(encoding="utf-8").splitlines()
    (cwd / CONSTRAINTS).write_text("".join(f"{c}\n" for c in pinned_constraints(lines)))
    return ["-c", CONSTRAINTS]


def clear_directory(path: Path) -> None:
    """Empty a directory (a volume's mountpoint stays): a retry in the full builder
    starts from nothing."""
    if not path.is_dir():
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def install(job: InstallJob) -> InstallResult:
    uv = ensure_uv(job)
    target = job.get("target")
    light = bool(job.get("light")) and not target
    if light:
        os.environ["PATH"] = no_compilers_path()
    cwd, args, pins, added, servers = resolve(job, uv)
    if light:
        if job["source"] == "requirements":
            args = [*args, *light_constraints(job, uv, cwd, added)]
        wheels_only = light_install_args(job.get("local_names") or [])
        args = [*args, *wheels_only]
        servers = [*servers, *wheels_only] if servers else []
    venv = Path(job["venv"])
    clear_directory(venv)

    emit("begin", "install")
    if target:
        installed = install_for_target(job, target, uv, cwd, (args, servers))
    else:
        installed = _install_in_venv(job, uv, cwd, (args, servers))
    emit("end", f"install {len(installed)} packages")

    emit("begin", "compile bytecode")
    previous = job.get("previous") or ""
    reuse = (
        (str(venv), previous) if previous and (Path(previous) / job["marker"]).is_file() else None
    )
    if target:
        detail = compile_for_target(venv, target)
    else:
        code = compile_bytecode(str(venv / "bin" / "python"), str(venv / "lib"), ["-j0"], reuse)
        detail = " (skipped files that are not valid Python)" if code else ""
        detail += " (unchanged files' bytecode from the previous venv)" if reuse else ""
    emit("end", "compile bytecode" + detail)

    if light and compilers_used():
        # A build fell back to pure Python (or a step compiled on purpose): this venv is
        # not what the full builder makes, so it never gets its marker.
        raise StepFailedError("install", "a build tried to compile; the builder retries it")
    result: InstallResult = {
        "key": job["key"],
        "source": job["source"],
        "pins": pins or installed,
        "added": added,
        "compilers": not light,  # installed by the full builder: the app check uses it
    }
    scan = job.get("elf_scan")
    scanned = scan_libraries(job["venv"], job["python"], scan) if scan else None
    if scanned is not None:
        result["elf_scan"] = scanned
    # The marker goes last: a volume without it is an interrupted build, never used.
    marker = venv / job["marker"]
    partial = marker.with_name(marker.name + ".tmp")
    with partial.open("w", encoding="utf-8") as handle:
        json.dump(result, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    partial.rename(marker)
    return result


def _install_in_venv(
    job: InstallJob, uv: str, cwd: Path, argsets: tuple[list[str], list[str]]
) -> list[str]:
    """uv's venv for the builder's interpreter, filled; the installed pins."""
    args, servers = argsets
    venv = Path(job["venv"])
    venv_python = str(venv / "bin" / "python")
    run(
        "install", [uv, "venv", str(venv), "--python", job["python"], "--quiet", "--allow-existing"]
    )
    run("install", [uv, "pip", "install", "--python", venv_python, *args], cwd=str(cwd))
    if servers:
        run("install", [uv, "pip", "install", "--python", venv_python, *servers], cwd=str(cwd))
    # uv's venv lock file is world-writable and means nothing at run time; wheel files
    # never belong in an image.
    leftovers = [venv / ".lock", *venv.rglob("*.whl")]
    for path in leftovers:
        if path.is_file() or path.is_symlink():
            path.unlink()
    frozen = capture("install", [uv, "pip", "freeze", "--python", venv_python])
    return sorted(ln.strip() for ln in frozen.splitlines() if ln.strip())


def install_for_target(
    job: InstallJob,
    target: TargetJob,
    uv: str,
    cwd: Path,
    argsets: tuple[list[str], list[str]],
) -> list[str]:
    """The venv as it will be in the image, filled on this host with the target's wheels:
    uv installs into its site-packages (`--target`, for the target's Python version and
    platform), its scripts move to bin/ with the image's interpreter in their shebang."""
    args, servers = argsets
    venv = Path(job["venv"])
    write_venv_layout(venv, target, job["uv_version"])
    site = venv / target["site_packages"]
    base = [uv, "pip", "install", "--python", sys.executable, "--target", str(site)]
    base += python_args(job)
    run("install", [*base, *args], cwd=str(cwd))
    if servers:
        run("install", [*base, *servers], cwd=str(cwd))
    for path in [*site.rglob("*.whl"), site / ".lock"]:
        if path.is_file() or path.is_symlink():
            path.unlink()
    move_scripts(site, venv, target)
    compiled = host_built_packages(site)
    if compiled:
        raise StepFailedError(
            "install",
            f"the package(s) {', '.join(compiled)} built a compiled wheel on this host, "
            f"which is not a wheel for {target['python_platform']}",
        )
    frozen = capture("install", [uv, "pip", "freeze", "--target", str(site)])
    return sorted(ln.strip() for ln in frozen.splitlines() if ln.strip())


def write_venv_layout(venv: Path, target: TargetJob, uv_version: str) -> None:
    """What `uv venv` writes that the image needs, for an interpreter this host lacks:
    pyvenv.cfg naming the base's interpreter, bin/python linking to it, lib64 -> lib."""
    executable = target["executable"]
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    (venv / target["site_packages"]).mkdir(parents=True, exist_ok=True)
    (venv / "pyvenv.cfg").write_text(
        f"home = {Path(executable).parent}\n"
        "implementation = CPython\n"
        f"uv = {uv_version}\n"
        f"version_info = {target['python_version']}\n"
        "include-system-site-packages = false\n",
        encoding="utf-8",
    )
    links = {"python": executable, "python3": "python"}
    links["python" + ".".join(target["python_version"].split(".")[:2])] = "python"
    for name, dest in links.items():
        (venv / "bin" / name).symlink_to(dest)
    (venv / "lib64").symlink_to("lib")


def move_scripts(site: Path, venv: Path, target: TargetJob) -> None:
    """`--target` leaves scripts in site-packages/bin with this host's interpreter in
    the shebang: they move to the venv's bin/ with the image's venv interpreter, and
    each RECORD names them where they are now (with the rewritten files' hashes)."""
    scripts = site / "bin"
    if not scripts.is_dir():
        return
    shebang = f"#!{target['venv_path']}/bin/python\n".encode()
    moved: dict[str, Path] = {}
    for path in sorted(scripts.iterdir()):
        dest = venv / "bin" / path.name
        data = path.read_bytes()
        if not path.is_symlink() and data.startswith(b"#!") and b"python" in data.split(b"\n")[0]:
            data = shebang + data.split(b"\n", 1)[1]
        dest.write_bytes(data)
        dest.chmod(path.stat().st_mode & 0o777)
        moved[f"bin/{path.name}"] = dest
    shutil.rmtree(scripts)
    up = "/".join([".."] * len(Path(target["site_packages"]).parts))
    for record in site.glob("*.dist-info/RECORD"):
        _rewrite_record(record, moved, up)


def _rewrite_record(record: Path, moved: dict[str, Path], up: str) -> None:
    import base64  # noqa: PLC0415 - target installs only
    import csv  # noqa: PLC0415
    import hashlib  # noqa: PLC0415

    rows = list(csv.reader(record.read_text(encoding="utf-8").splitlines()))
    changed = False
    for row in rows:
        if row and row[0] in moved:
            data = moved[row[0]].read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            row[:3] = [f"{up}/{row[0]}", f"sha256={digest.decode()}", str(len(data))]
            changed = True
    if changed:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        record.write_text(out.getvalue(), encoding="utf-8")


def host_built_packages(site: Path) -> list[str]:
    """The distributions whose wheel this host compiled from an sdist: tagged for a bare
    `linux_<machine>` platform, which no index publishes (theirs say manylinux/musllinux).
    They were linked against this host's libraries, not the image's."""
    found = []
    for wheel in site.glob("*.dist-info/WHEEL"):
        tags = [ln.split(":", 1)[1].strip() for ln in wheel.read_text(encoding="utf-8").splitlines()
                if ln.startswith("Tag:")]  # fmt: skip
        if any(tag.rsplit("-", 1)[-1].startswith("linux_") for tag in tags):
            found.append(normalize(wheel.parent.name[: -len(".dist-info")].rsplit("-", 1)[0]))
    return sorted(found)


def compile_for_target(venv: Path, target: TargetJob) -> str:
    """Bytecode by a host interpreter of the target's X.Y (the same magic number), with the
    image's paths recorded in it; none without one (the progress line says so)."""
    python = target["compile_python"]
    if not python:
        version = ".".join(target["python_version"].split(".")[:2])
        return f" skipped: no Python {version} on this host (the image imports from source)"
    argv = [python, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash", "-j0"]
    argv += ["-s", str(venv), "-p", target["venv_path"], str(venv / "lib")]
    sys.stdout.flush()
    code = subprocess.call(
        argv, stdin=subprocess.DEVNULL, stdout=sys.stdout, stderr=subprocess.STDOUT
    )
    return " (skipped files that are not valid Python)" if code else ""


def scan_libraries(venv: str, python: str, scan: ElfScanJob) -> dict[str, Any] | None:
    """elfdeps.py's scan of the finished venv, run here rather than in a container of its
    own (the host sends it only when this container is the runtime base image, and trusts
    the answer only when the install changed nothing the loader reads); None when it
    fails, for the host's own scan to run."""
    handle, job_path = tempfile.mkstemp(prefix="pydeploy-elfdeps-", suffix=".json")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump({"venv": venv, "library_path": scan["library_path"]}, out)
    argv = [python, scan["script"], "scan", job_path]
    proc = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    Path(job_path).unlink()
    if proc.returncode != 0:
        return None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK + "result "):
            found: dict[str, Any] = json.loads(line[len(MARK) + 7 :])
            found["library_path"] = scan["library_path"]
            return found
    return None


# --- the project's own wheel ------------------------------------------------------------


def build_project(job: ProjectJob) -> ProjectResult:
    """Build the project's wheel (build backends live in the builder) and install it,
    without dependencies, into a site tree the host puts into the app layer."""
    step = "project"
    emit("begin", step)
    venv_python = str(Path(job["venv"]) / "bin" / "python")
    project, dist, site = "/build/project", Path("/build/dist"), "/build/project-site"
    copy_tree(job, job["app_dir"], project)
    build = [job["uv"], "build", "--wheel", "--no-sources", "--out-dir", str(dist)]
    # Only the project's build sees the stand-in compilers.
    build_env = dict(os.environ, PATH=no_compilers_path()) if job.get("light") else None
    run(step, [*build, "--python", job["python"], project], cwd="/build", env=build_env)
    if compilers_used() and job.get("light"):
        raise StepFailedError(step, "the project's build tried to compile")
    built = sorted(dist.glob("*.whl"))
    if len(built) != 1:
        raise StepFailedError(step, f"expected one wheel in {dist}, found {built}")
    target = ["--no-deps", "--target", site, str(built[0])]
    run(step, [job["uv"], "pip", "install", "--python", venv_python, *target])
    # Console scripts belong to the venv's bin/, not to site-packages; uv's lock file
    # belongs nowhere.
    shutil.rmtree(Path(site) / "bin", ignore_errors=True)
    (Path(site) / ".lock").unlink(missing_ok=True)
    # Compiled as if already in the venv's site-packages, so tracebacks name the
    # paths the image will have.
    final = str(Path(job["venv"]) / job["site_packages"])
    compile_bytecode(venv_python, site, ["-s", site, "-p", final])
    emit("end", f"{step} {built[0].name}")
    return {"project_site": site, "wheel": built[0].name}


# --- app check (in the runtime image) ----------------------------------------------------


def check_app(job: CheckJob) -> CheckResult:
    """inspect_app's report on the job's target, from the app directory."""
    emit("begin", "app check")
    os.chdir(job["app_dir"])
    writable = cast("HostCheckJob", job).get("writable")
    if writable is not None:
        confine_writes(writable)
    found = inspect_app(job["target"], cast("dict[str, Any] | None", job.get("measure")))
    emit("end", f"app check {found.get('interface') or 'failed'}")
    return {"app": found}


# Audit events of calls that change the filesystem at their first argument's path.
_WRITE_EVENTS = frozenset({
    "os.mkdir", "os.rmdir", "os.remove", "os.rename", "os.symlink", "os.link",
    "os.chmod", "os.chown", "os.truncate", "os.utime", "shutil.rmtree",
})  # fmt: skip
_CONFINE_FRAMES = frozenset({"hook", "refuse"})  # confine_writes' own functions
_OPEN_WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def confine_writes(writable: list[str]) -> None:
    """Make this process's writes outside `writable` fail as a read-only root filesystem
    makes them fail (EROFS, naming the path), through an audit hook (PEP 578): the host
    check's stand-in for the image's read-only root, which a process running as root on
    the host would not meet otherwise. Opens for writing and the os calls that change a
    path are refused; what C code writes without Python's audit events is not seen."""
    import errno  # noqa: PLC0415 - host checks only

    roots = [os.path.realpath(path) for path in writable]

    def allowed(path: object) -> bool:
        if isinstance(path, int) or path is None:
            return True  # a file descriptor: its open was judged
        try:
            full = os.path.realpath(os.fsdecode(path))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return True
        return full.startswith("/dev/") or any(
            full == root or full.startswith(root + os.sep) for root in roots
        )

    def refuse(path: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))  # type: ignore[arg-type]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and len(args) >= 3:
            path, mode, flags = args[0], args[1], args[2]
            writes = isinstance(flags, int) and bool(flags & _OPEN_WRITES)
            writes = writes or (isinstance(mode, str) and any(c in mode for c in "wax+"))
            if writes and not allowed(path):
                refuse(path)
        elif event in _WRITE_EVENTS and args and not allowed(args[0]):
            refuse(args[0])
        elif event in {"os.rename", "os.replace"} and len(args) > 1 and not allowed(args[1]):
            refuse(args[1])

    sys.addaudithook(hook)


def inspect_app(target: str, measure: dict[str, Any] | None = None) -> dict[str, Any]:
    """Import `module:attr` from the cwd (or call `module:factory(...)` as the server will)
    and say whether it is a WSGI or ASGI app; with `measure`, also what one worker of it
    costs (see measure_worker), measured on the factory's result."""
    sys.path.insert(0, str(Path.cwd()))
    memory: dict[str, Any] = {}
    if measure is not None:
        # Before the app, as in a server process: what the master costs on its own.
        memory["baseline_kib"] = anon_kib()
        memory["server_modules"] = import_quietly(server_modules(measure))
        memory["server_kib"] = anon_kib()
    found = find_app(target)
    app = found.pop("app", None)
    if measure is not None and found["ok"]:
        found["memory"] = measure_worker(app, found["kind"], measure, memory)
    return found


def find_app(target: str) -> dict[str, Any]:
    """inspect_app's report on `target`, with the app object itself under `app` when it
    is one. A factory target is called as the server calls it (gunicorn with its
    literal arguments, uvicorn's `--factory` with none), and what it returns is checked."""
    try:
        module_name, attributes, call = parse_target(target)
    except TargetError as exc:
        return {"ok": False, "kind": "target", "error": str(exc)}
    obj, failure = _resolve(module_name, attributes)
    found: dict[str, Any] = {"factory": call is not None}
    if failure is None and call is not None:
        obj, failure = _call_factory(obj, call)
    if failure is not None:
        return {**found, **failure}
    kind = interface_of(obj)
    ok = kind in ("wsgi", "asgi")
    found.update(
        ok=ok,
        kind=kind,
        interface=kind if ok else None,
        type=_type_name(obj),
        accepts=accepts(obj) if kind == "unknown" else None,
    )
    if ok:
        found["app"] = obj
    return found


def _resolve(module_name: str, attributes: list[str]) -> tuple[Any, dict[str, Any] | None]:
    """The object the target names, or the failure report of importing it."""
    try:
        obj: Any = importlib.import_module(module_name)
    except BaseException as exc:  # noqa: BLE001 - the app's own failure is the report
        return None, {"ok": False, "kind": "import", "error": _user_traceback(exc), **diagnose(exc)}
    try:
        for part in attributes:
            obj = getattr(obj, part)
    except AttributeError as exc:
        return None, {"ok": False, "kind": "attribute", "error": f"{type(exc).__name__}: {exc}"}
    return obj, None


def _call_factory(
    factory: Any, call: tuple[list[Any], dict[str, Any]]
) -> tuple[Any, dict[str, Any] | None]:
    """What the factory returns, called as the server will, or the failure report."""
    if not callable(factory):
        return None, {"ok": False, "kind": "not-a-factory", "type": _type_name(factory)}
    if inspect.iscoroutinefunction(factory):
        # Both servers call a factory without awaiting it: they would get a coroutine.
        return None, {"ok": False, "kind": "async-factory", "type": _type_name(factory)}
    try:
        return factory(*call[0], **call[1]), None
    except BaseException as exc:  # noqa: BLE001 - the factory's failure is the report
        failure = {"ok": False, "kind": "factory", "error": _user_traceback(exc)}
        return None, {**failure, **diagnose(exc)}


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


# --- what one worker costs -------------------------------------------------------------


def server_modules(measure: dict[str, Any]) -> list[str]:
    """The modules a worker of the chosen server imports besides the app (the host's
    server table decides them: plan/servers.py)."""
    return [str(name) for name in measure.get("modules") or ()]


def import_quietly(names: list[str]) -> list[str]:
    """Import what is installed; the server may be absent (the app check still runs)."""
    imported = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S112 - a missing server part is measured as absent
            continue
        imported.append(name)
    return imported


def status_kib(text: str) -> int | None:
    """Private resident memory from /proc/self/status: RssAnon (what a worker cannot share
    with the page cache; file pages are shared and reclaimable), else VmRSS."""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            fields[key] = int(parts[0])
    return fields.get("RssAnon", fields.get("VmRSS"))


def anon_kib() -> int | None:
    try:
        return status_kib(Path("/proc/self/status").read_text(encoding="utf-8"))
    except OSError:
        return None


def measure_worker(
    app: Any, interface: str, measure: dict[str, Any], memory: dict[str, Any]
) -> dict[str, Any]:
    """Private memory after the app is imported and has answered one synthetic request in
    this process, as a freshly started worker holds it. The request runs in a thread with a
    deadline; an app that hangs or fails is measured as far as it got, and says so."""
    memory["imported_kib"] = anon_kib()
    if measure.get("request", True):
        path = measure.get("path") or "/"
        serve = serve_wsgi_once if interface == "wsgi" else serve_asgi_once
        outcome: list[str] = []

        def run() -> None:
            try:
                outcome.append(serve(app, path))
            except BaseException as exc:  # noqa: BLE001 - the app's failure is only noted
                outcome.append(f"raised {type(exc).__name__}")

        thread = threading.Thread(target=run, name="pydeploy-first-request", daemon=True)
        thread.start()
        thread.join(FIRST_REQUEST_TIMEOUT)
        memory["request"] = (
            outcome[0] if outcome else f"timed out after {FIRST_REQUEST_TIMEOUT:g} s"
        )
        memory["path"] = path
    memory["worker_kib"] = anon_kib()
    return memory


def wsgi_environ(target: str) -> dict[str, Any]:
    """A PEP 3333 environ for `GET target` from loopback."""
    path, _, query = target.partition("?")
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_TYPE": "",
        "CONTENT_LENGTH": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "localhost",
        "HTTP_USER_AGENT": "pydeploy-app-check",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def serve_wsgi_once(app: Any, target: str) -> str:
    """Call the WSGI app once and drain its body; `HTTP <status>`."""
    statuses: list[str] = []

    def start_response(status: str, _headers: Any, _exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda _data: None

    body = app(wsgi_environ(target), start_response)
    try:
        for _chunk in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return f"HTTP {statuses[-1].split()[0]}" if statuses else "no response"


_KEPT: list[Any] = []


def serve_asgi_once(app: Any, target: str) -> str:
    """Run the ASGI lifespan startup (as a worker does first; an app without lifespan
    support may raise, which servers tolerate too), then one `GET path`."""
    import asyncio  # noqa: PLC0415 - only ASGI measurements need it

    async def lifespan() -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        queue.put_nowait({"type": "lifespan.startup"})
        started = asyncio.Event()

        async def send(message: dict[str, Any]) -> None:
            if message.get("type", "").startswith("lifespan.startup."):
                started.set()

        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        task = asyncio.ensure_future(app(scope, queue.get, send))
        _KEPT.append((task, queue))
        waiter = asyncio.ensure_future(started.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: an app without lifespan support raises here

    path, _, query = target.partition("?")

    async def request() -> str:
        statuses: list[int] = []
        received = False

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                statuses.append(int(message.get("status", 0)))

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode("utf-8", "replace"),
            "query_string": query.encode("utf-8", "replace"),
            "root_path": "",
            "headers": [(b"host", b"localhost"), (b"user-agent", b"pydeploy-app-check")],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
        }
        await app(scope, receive, send)
        return f"HTTP {statuses[-1]}" if statuses else "no response"

    async def both() -> str:
        await lifespan()
        return await request()

    # Never closed, and the lifespan task kept referenced: it stays pending, as in a running
    # worker, until the process exits (collected, it would complain).
    loop = asyncio.new_event_loop()
    _KEPT.append(loop)
    return loop.run_until_complete(both())


# --- why an import failed ---------------------------------------------------------------

_ENV_MESSAGES = (
    # django-environ: "Set the SECRET_KEY environment variable"
    re.compile(r"\bSet the ([A-Za-z_][A-Za-z0-9_]*) environment variable"),
    # Django itself: "The SECRET_KEY setting must not be empty."
    re.compile(r"\bThe ([A-Za-z_][A-Za-z0-9_]*) setting must not be empty"),
    # "environment variable DATABASE_URL is not set" and the like
    re.compile(
        r"\benvironment variable ['\"`]?([A-Z_][A-Z0-9_]*)['\"`]? (?:is )?(?:not set|missing)"
    ),
)
_UNWRITABLE_ERRNOS = (13, 1, 30)  # EACCES, EPERM, EROFS


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and those it was raised from or while handling, outermost first."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found and len(found) < 20:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _last_frame(exc: BaseException) -> Any:
    """The innermost frame of the app's own call (confine_writes' hook, which raised it
    on a host check, is left out)."""
    tb, last = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_name not in _CONFINE_FRAMES:
            last = tb
        tb = tb.tb_next
    return last


def _environ_key(exc: BaseException) -> str | None:
    """`os.environ["NAME"]` of a missing variable: a KeyError raised by os._Environ."""
    if not isinstance(exc, KeyError) or len(exc.args) != 1 or not isinstance(exc.args[0], str):
        return None
    tb = _last_frame(exc)
    if tb is None:
        return None
    code = tb.tb_frame.f_code
    # os is a frozen module from Python 3.11 on.
    in_os = code.co_filename == "<frozen os>" or Path(code.co_filename).name == "os.py"
    return exc.args[0] if in_os and code.co_name == "__getitem__" else None


def _settings_prefix(exc: BaseException, title: str) -> str:
    """The env_prefix of the pydantic-settings class `title` that raised `exc`, read from
    the frames' locals (the settings instance under construction), else ""."""
    tb = exc.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            config = getattr(type(value), "model_config", None)
            if type(value).__name__ == title and isinstance(config, dict):
                return str(config.get("env_prefix") or "")
        tb = tb.tb_next
    return ""


def _settings_missing(exc: BaseException) -> list[str]:
    """The variables a pydantic(-settings) ValidationError reports as `missing`."""
    errors = getattr(exc, "errors", None)
    if type(exc).__name__ != "ValidationError" or not callable(errors):
        return []
    try:
        reported = list(errors())
    except Exception:  # noqa: BLE001 - not pydantic's after all
        return []
    prefix = _settings_prefix(exc, str(getattr(exc, "title", "")))
    names = []
    for error in reported:
        loc = error.get("loc") if isinstance(error, dict) else None
        if error.get("type") == "missing" and loc and isinstance(loc[0], str):
            names.append((prefix + loc[0]).upper())
    return names


def missing_variables(exc: BaseException) -> list[str]:
    """Environment variables the failure says are missing, in the order met."""
    names: list[str] = []
    for link in _chain(exc):
        key = _environ_key(link)
        found = [key] if key else _settings_missing(link)
        if not found:
            text = str(link)
            found = [m.group(1) for pattern in _ENV_MESSAGES for m in pattern.finditer(text)]
        names += [name for name in found if name not in names]
    return names


def _writes_directory(exc: BaseException) -> bool:
    """Whether the failed call made a directory (mkdir, makedirs): the path is then the
    directory to make writable, else the directory holding the file."""
    tb = _last_frame(exc)
    if tb is None:
        return False
    frame = tb.tb_frame
    if frame.f_code.co_name in ("mkdir", "makedirs"):
        return True
    try:
        import linecache  # noqa: PLC0415 - only a failed write needs it

        line = linecache.getline(frame.f_code.co_filename, tb.tb_lineno)
    except Exception:  # noqa: BLE001 - no source line, no guess
        return False
    return "mkdir" in line or "makedirs" in line


def unwritable_path(exc: BaseException, cwd: str) -> dict[str, str] | None:
    """A write the read-only image refused (EROFS, or EACCES/EPERM on a root-owned path):
    the path, and the directory that would have to be writable."""
    for link in _chain(exc):
        if not isinstance(link, OSError) or link.errno not in _UNWRITABLE_ERRNOS:
            continue
        filename = link.filename
        if not isinstance(filename, str) or not filename:
            continue
        path = os.path.normpath(str(Path(cwd) / filename))
        directory = path if _writes_directory(link) else str(Path(path).parent)
        return {"path": path, "directory": directory, "error": os.strerror(link.errno)}
    return None


def diagnose(exc: BaseException) -> dict[str, Any]:
    """What the host can say about an import's failure beyond its traceback."""
    found: dict[str, Any] = {}
    names = missing_variables(exc)
    if names:
        found["missing_env"] = names
    unwritable = unwritable_path(exc, str(Path.cwd()))
    if unwritable:
        found["unwritable"] = unwritable
    return found


def _user_traceback(exc: BaseException, limit: int = 15) -> str:
    """The exception's traceback without this script's and importlib's frames."""
    summary = traceback.TracebackException.from_exception(exc)
    here = {_HERE, "<string>"}  # this file, or its source given to `python -c`
    frames = [
        f
        for f in summary.stack
        if f.filename not in here
        and not f.filename.startswith("<frozen ")
        and not f.filename.endswith("importlib/__init__.py")
    ]
    summary.stack = traceback.StackSummary.from_list(frames)
    lines = "".join(summary.format()).strip().splitlines()
    return "\n".join(lines[-limit:])


# --- the lifeline ---------------------------------------------------------------------


def take_lifeline(fd: int, on_gone: Callable[[], None] | None = None) -> threading.Thread | None:
    """Read the secrets line from `fd` into SECRETS, then watch `fd` in the background:
    its end calls `on_gone` (default: say so and end this process, the container's PID
    1, which takes every tool it started along). Returns the watcher, None if already
    gone. Raw reads: a daemon thread blocked in a buffered reader would hang shutdown."""
    gone = on_gone or _owner_gone
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            gone()  # the host died before it sent everything
            return None
        line += chunk
    SECRETS.update({str(k): str(v) for k, v in json.loads(line).items()})

    def watch() -> None:
        while os.read(fd, 65536):
            pass
        gone()

    watcher = threading.Thread(target=watch, name="lifeline", daemon=True)
    watcher.start()
    return watcher


def _owner_gone() -> None:
    sys.stdout.write("pydeploy: the build that started this container is gone; stopping\n")
    sys.stdout.flush()
    os._exit(EXIT_OWNER_GONE)


# --- main ------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    if command == "probe":
        emit("result", json.dumps(probe(argv[2] if len(argv) > 2 else sys.executable)))
        return 0
    take_lifeline(sys.stdin.fileno())
    if command == "check-app":
        # The job is the argument: the runtime image's root filesystem is read-only.
        emit("result", json.dumps(check_app(json.loads(argv[2])), sort_keys=True))
        # Threads or atexit hooks the app started must not keep the check waiting.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    job = json.loads(Path(argv[2]).read_text(encoding="utf-8"))
    if command == "install" and needs_uv_seed(job):
        return EXIT_NEEDS_UV_SEED  # before any output: the host runs the job again, with it
    try:
        result = install(job) if command == "install" else build_project(job)
    except StepFailedError as exc:
        sys.stdout.write(f"error: {exc}\n")
        report_compilers(job)
        emit("failed", exc.step)
        return EXIT_STEP_FAILED
    report_compilers(job)
    emit("result", json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
