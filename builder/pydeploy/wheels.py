"""The builder stage: a builder image (base + compilers), the dependencies installed into
a virtualenv inside a builder container, and the app imported there before any image is
assembled.

Caching: the builder image is tagged by a content key (base image ID + build packages);
each dependency set gets its own volume `pydeploy-venv-<key>` keyed by everything that
decides it, so an unchanged set is reused without running uv at all. uv's download and
wheel cache lives in one shared volume (`pydeploy-cache`), so changed sets rebuild only
what changed. Index credentials reach builder containers as environment variables only
and are masked in every text this module returns.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any, Literal

from pydeploy.config import PYPROJECT, IndexConfig, read_pyproject
from pydeploy.engine import BUILD_LABEL, Engine, Mount
from pydeploy.errors import (
    AppCheckError,
    BuildError,
    CompileError,
    ConfigError,
    PydeployError,
)
from pydeploy.plan import VENV, BuildPlan
from pydeploy.project import Project, check_python_allowed

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

# Bump when anything below changes what lands in a builder image or a venv.
RECIPE_VERSION = "1"
UV_VERSION = "0.13.9"
CACHE_VOLUME = "pydeploy-cache"
CACHE_DIR = "/cache"
BUILDER_REPOSITORY = "pydeploy-builder"
VENV_VOLUME_PREFIX = "pydeploy-venv-"
MARKER = ".pydeploy-complete"
SRC = "/src"
WORK = "/build/src"
RUN_DIR = "/run/pydeploy"
CA_TARGET = f"{RUN_DIR}/ca.pem"
SCRIPT = f"{RUN_DIR}/builder_script.py"
JOB = f"{RUN_DIR}/job.json"
PROTOCOL = "##pydeploy:"
FIXED_EPOCH = "315532800"  # 1980-01-01, the earliest time a wheel (zip) can hold
TAIL_LINES = 25

LABEL_KEY = "pydeploy.builder.key"
LABEL_PYTHON = "pydeploy.python"
LABEL_VENV_KEY = "pydeploy.venv.key"
LABEL_OWNER = "pydeploy.venv.build"  # the build that creates (fills) a venv volume
LABEL_CLAIMED = "pydeploy.venv.claimed"  # when (epoch seconds)
OWNER_WAIT_SECONDS = 3600
# A build creates its container within moments of claiming a volume.
CLAIM_GRACE_SECONDS = 30

SERVER_PACKAGES: dict[str, tuple[str, ...]] = {
    "gunicorn": ("gunicorn",),
    "gunicorn-uvicorn": ("gunicorn", "uvicorn", "uvicorn-worker"),
    "uvicorn": ("uvicorn",),
    # The interface is only known once the app imports: have both servers ready.
    "auto": ("gunicorn", "uvicorn", "uvicorn-worker"),
}
CA_ENV_VARS = ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE")
# Never part of a local package's content hash (caches, VCS, build output).
_HASH_SKIP_DIRS = {
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    "__pycache__",
    "node_modules",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "build",
    "dist",
}

Progress = Callable[[str, float, "str | None"], None]
OnLine = Callable[[str], None]


# --- the result contract -------------------------------------------------------------


@dataclass(frozen=True)
class PythonInfo:
    executable: str
    version: str  # "3.11.2"
    site_packages: str  # "lib/python3.11/site-packages", relative to the venv


@dataclass(frozen=True)
class BuilderImage:
    name: str
    image_id: str
    python: PythonInfo


@dataclass(frozen=True)
class Dependencies:
    key: str
    volume: str
    pins: tuple[str, ...]
    source: str
    cached: bool  # nothing was installed this time


@dataclass(frozen=True)
class AppCheck:
    interface: Literal["wsgi", "asgi"]
    project_site_tar: Path | None  # entries relative to site-packages


# --- secrets --------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """Index credentials read from the host environment (values, never in config)."""

    username: str | None = None
    password: str | None = None

    def secrets(self) -> list[str]:
        values = [v for v in (self.username, self.password) if v]
        if self.password:
            # What an HTTP client may print: the basic-auth header.
            pair = f"{self.username or ''}:{self.password}".encode()
            values.append(base64.b64encode(pair).decode())
        return values


def read_credentials(index: IndexConfig, environ: Mapping[str, str]) -> Credentials:
    """The values of the variables named by `username-env` / `password-env`."""
    values: dict[str, str | None] = {}
    for key, name in (("username", index.username_env), ("password", index.password_env)):
        if name is None:
            values[key] = None
            continue
        value = environ.get(name)
        if not value:
            raise ConfigError(
                f"`tool.pydeploy.index.{key}-env` names the environment variable {name}, "
                "but it is not set (or empty).",
                hint=f"Export {name} before running pydeploy (in CI: from a secret).",
            )
        values[key] = value
    return Credentials(values["username"], values["password"])


class Masker:
    """Replaces every secret (and its URL-quoted form) with `****` in a text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        variants: set[str] = set()
        for secret in secrets:
            # Very short values would mask ordinary words; credentials are not that short.
            if len(secret) >= 4:
                variants |= {
                    secret,
                    urllib.parse.quote(secret, safe=""),
                    urllib.parse.quote(secret),
                }
        self._variants = sorted(variants, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for variant in self._variants:
            text = text.replace(variant, "****")
        return text


# --- CA bundle and indexes -------------------------------------------------------------


def find_ca_bundle(
    configured: str | None, project_root: Path, environ: Mapping[str, str]
) -> Path | None:
    """The CA bundle builder containers trust: `index.ca-bundle`, else the first of
    SSL_CERT_FILE, PIP_CERT, REQUESTS_CA_BUNDLE that names an existing file."""
    if configured:
        path = (project_root / Path(configured).expanduser()).resolve()
        if not path.is_file():
            raise ConfigError(
                f"`tool.pydeploy.index.ca-bundle` = {configured!r} is not a file ({path}).",
                hint="Point it at a PEM bundle, or remove it to use SSL_CERT_FILE/PIP_CERT.",
            )
        return path
    for name in CA_ENV_VARS:
        value = environ.get(name)
        if value and Path(value).is_file():
            return Path(value).resolve()
    return None


def index_environment(index: IndexConfig, credentials: Credentials) -> dict[str, str]:
    """uv and pip settings for the configured indexes. Credentials go to uv as per-index
    variables and to pip inside the index URL: both only as container environment."""
    env: dict[str, str] = {}
    named = [(0, index.url)] if index.url else []
    named += [(i, url) for i, url in enumerate(index.extra_urls, start=1)]
    for number, url in named:
        name = f"pydeploy-{number}"
        if number == 0:
            env["UV_DEFAULT_INDEX"] = f"{name}={url}"
        else:
            env["UV_INDEX"] = (env.get("UV_INDEX", "") + f" {name}={url}").strip()
        if credentials.username:
            env[f"UV_INDEX_PYDEPLOY_{number}_USERNAME"] = credentials.username
        if credentials.password:
            env[f"UV_INDEX_PYDEPLOY_{number}_PASSWORD"] = credentials.password
    if index.url:
        env["PIP_INDEX_URL"] = _with_credentials(index.url, credentials)
    if index.extra_urls:
        env["PIP_EXTRA_INDEX_URL"] = " ".join(
            _with_credentials(url, credentials) for url in index.extra_urls
        )
    return env


def _with_credentials(url: str, credentials: Credentials) -> str:
    if not (credentials.username or credentials.password):
        return url
    parts = urllib.parse.urlsplit(url)
    user = urllib.parse.quote(credentials.username or "", safe="")
    password = urllib.parse.quote(credentials.password or "", safe="")
    auth = f"{user}:{password}" if password else user
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{auth}@{parts.netloc}"))


def index_settings(index: IndexConfig) -> dict[str, Any]:
    """What of the index config decides the dependency set: URLs, never secrets."""
    return {"url": index.url, "extra_urls": list(index.extra_urls)}


def server_packages(server: str) -> tuple[str, ...]:
    return SERVER_PACKAGES.get(server, SERVER_PACKAGES["auto"])


# --- dependency inputs and key ----------------------------------------------------------


@dataclass(frozen=True)
class DependencyInputs:
    """Everything that decides the dependency set, read on the host."""

    source: str
    mount_root: Path  # host directory mounted read-only at /src
    copies: tuple[str, ...]  # directories (relative to mount_root) the builder copies
    cwd: str  # where tools run, relative to mount_root
    package: str | None = None  # uv --package, for a workspace member
    requirements: tuple[str, ...] = ()  # requirements files, relative to cwd
    requirement_lines: tuple[str, ...] = ()  # pylock.toml, as requirements
    extras: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    digests: tuple[tuple[str, str], ...] = field(default=())  # (what, sha256)


@dataclass
class _Found:
    """What one dependency source contributes to DependencyInputs."""

    cwd: Path
    digests: list[tuple[str, str]]
    local: list[Path] = field(default_factory=list)
    package: str | None = None
    requirements: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()


def dependency_inputs(plan: BuildPlan) -> DependencyInputs:
    """Read (on the host) every input of the dependency set, and where the builder finds
    them: the lowest directory holding the project and its local path packages is
    mounted, and only those directories are copied."""
    project = plan.project
    readers = {"uv.lock": _from_uv_lock, "pylock": _from_pylock, "requirements": _from_requirements}
    found = readers.get(plan.dependency_source, _from_project)(project)
    root = project.root
    local = sorted({p.resolve() for p in found.local if p.exists()})
    digests = found.digests + [
        (f"local:{os.path.relpath(path, root)}", content_digest(path)) for path in local
    ]
    cwd = found.cwd.resolve()
    mount_root = Path(os.path.commonpath([cwd, *local]))
    return DependencyInputs(
        source=plan.dependency_source,
        mount_root=mount_root,
        copies=_outermost([cwd, *local], mount_root),
        cwd=_rel(cwd, mount_root),
        package=found.package,
        requirements=found.requirements,
        requirement_lines=found.lines,
        extras=tuple(project.config.dependencies.extras),
        groups=tuple(project.config.dependencies.groups),
        digests=tuple(sorted(digests)),
    )


def _from_uv_lock(project: Project) -> _Found:
    root = project.root
    lock_dir = root if (root / "uv.lock").is_file() else project.workspace_root
    if lock_dir is None or not (lock_dir / "uv.lock").is_file():
        raise ConfigError(
            "`tool.pydeploy.dependencies.source` is 'uv.lock' but there is no uv.lock in "
            f"{root} or its workspace root.",
            hint="Run `uv lock`, or choose another source.",
        )
    lock = (lock_dir / "uv.lock").read_bytes()
    return _Found(
        cwd=lock_dir,
        digests=[("uv.lock", _sha(lock))],
        local=_uv_lock_paths(lock, lock_dir, project.name),
        # A workspace member is exported from the workspace root by its name.
        package=project.name if lock_dir != root else None,
    )


def _from_pylock(project: Project) -> _Found:
    lock = project.root / "pylock.toml"
    if not lock.is_file():
        raise ConfigError(
            f"`tool.pydeploy.dependencies.source` is 'pylock' but {lock} does not exist.",
            hint="Generate it (e.g. `uv export -o pylock.toml`) or choose another source.",
        )
    text = lock.read_text(encoding="utf-8")
    return _Found(
        cwd=project.root,
        digests=[("pylock.toml", _sha(text.encode()))],
        local=[project.root / p for p in _pylock_paths(text)],
        lines=tuple(parse_pylock(text, str(lock))),
    )


def _from_requirements(project: Project) -> _Found:
    root = project.root
    names = project.config.dependencies.requirements or list(project.requirements_files)
    for name in names:
        if not (root / name).is_file():
            raise ConfigError(
                f"`tool.pydeploy.dependencies.requirements` names {name}, which is not a "
                f"file in {root}.",
                hint="Fix the path (relative to the project directory).",
            )
    found = _Found(cwd=root, digests=[], requirements=tuple(names))
    for path in _requirement_closure([root / name for name in names]):
        found.digests.append(
            (f"requirements:{os.path.relpath(path, root)}", _sha(path.read_bytes()))
        )
        found.local += _requirement_paths(path, root)
    return found


def _from_project(project: Project) -> _Found:
    root = project.root
    data = read_pyproject(root)
    table = data.get("project", {})
    uv = data.get("tool", {}).get("uv", {})
    relevant: dict[str, Any] = {
        "dependencies": table.get("dependencies", []),
        "optional-dependencies": table.get("optional-dependencies", {}),
        "dynamic": table.get("dynamic", []),
        "dependency-groups": data.get("dependency-groups", {}),
        "uv": {"sources": uv.get("sources"), "index": uv.get("index")},
    }
    if "dependencies" in relevant["dynamic"]:
        # Computed by the build backend: only the whole pyproject.toml identifies them.
        relevant["pyproject"] = _sha((root / PYPROJECT).read_bytes())
    found = _Found(
        cwd=root, digests=[("project", _sha(json.dumps(relevant, sort_keys=True).encode()))]
    )
    for spec in (uv.get("sources") or {}).values():
        for entry in spec if isinstance(spec, list) else [spec]:
            if isinstance(entry, dict) and "path" in entry:
                found.local.append(root / str(entry["path"]))
    for requirement in relevant["dependencies"]:
        match = re.search(r"@\s*file://(\S+)", str(requirement))
        if match:
            found.local.append(Path(urllib.parse.unquote(match.group(1))))
    return found


def dependency_key(
    builder_image_id: str,
    inputs: DependencyInputs,
    servers: Iterable[str],
    index: Mapping[str, Any],
) -> str:
    """sha256 over everything that decides the installed venv (and nothing secret)."""
    document = {
        "recipe": RECIPE_VERSION,
        "uv": UV_VERSION,
        "builder": builder_image_id,
        "source": inputs.source,
        "package": inputs.package,
        "requirements": list(inputs.requirements),
        "lines": list(inputs.requirement_lines),
        "extras": sorted(inputs.extras),
        "groups": sorted(inputs.groups),
        "inputs": [list(pair) for pair in inputs.digests],
        "servers": sorted(servers),
        "index": dict(index),
    }
    return _sha(json.dumps(document, sort_keys=True).encode())


def content_digest(path: Path) -> str:
    """sha256 of a file, or of a directory's files (names, bytes, exec bits) skipping
    caches, VCS data and build output."""
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
        return digest.hexdigest()
    for current, dirs, files in os.walk(path):
        dirs[:] = sorted(
            d for d in dirs if d not in _HASH_SKIP_DIRS and not d.endswith(".egg-info")
        )
        for name in sorted(files):
            file = Path(current) / name
            if file.suffix in {".pyc", ".pyo", ".so"} or not file.is_file():
                continue
            digest.update(f"{file.relative_to(path)}\0{os.access(file, os.X_OK)}\0".encode())
            digest.update(_sha(file.read_bytes()).encode())
    return digest.hexdigest()


def parse_pylock(text: str, where: str = "pylock.toml") -> list[str]:
    """PEP 751 packages as requirement lines: `name==version` for index packages, a
    direct reference for archives and VCS, the relative path for local directories."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}.") from None
    lines: list[str] = []
    for package in data.get("packages", []):
        name = package.get("name")
        if not isinstance(name, str):
            raise ConfigError(f"{where}: a [[packages]] entry has no `name`.")
        marker = f" ; {package['marker']}" if package.get("marker") else ""
        if "directory" in package:
            path = str(package["directory"]["path"])
            lines.append(_local_ref(path) + marker)
        elif "vcs" in package:
            vcs = package["vcs"]
            url = vcs.get("url") or _local_ref(str(vcs.get("path", "")))
            commit = vcs.get("commit-id") or vcs.get("requested-revision", "")
            ref = f"{vcs.get('type', 'git')}+{url}" + (f"@{commit}" if commit else "")
            sub = vcs.get("subdirectory")
            lines.append(f"{name} @ {ref}" + (f"#subdirectory={sub}" if sub else "") + marker)
        elif "archive" in package:
            archive = package["archive"]
            ref = archive.get("url") or _local_ref(str(archive.get("path", "")))
            lines.append(f"{name} @ {ref}" + marker)
        elif package.get("version"):
            lines.append(f"{name}=={package['version']}{marker}")
        else:
            # wheels/sdist given only by URL or path (no index version): use the first.
            files = [
                *package.get("wheels", []),
                *([package["sdist"]] if "sdist" in package else []),
            ]
            refs = [f.get("url") or _local_ref(str(f.get("path", ""))) for f in files]
            if not refs:
                raise ConfigError(
                    f"{where}: package `{name}` has no version, directory, vcs, archive, "
                    "wheels or sdist."
                )
            lines.append(f"{name} @ {refs[0]}{marker}")
    return lines


def _local_ref(path: str) -> str:
    return path if path.startswith(("/", ".")) else f"./{path}"


def _pylock_paths(text: str) -> list[str]:
    paths: list[str] = []
    for package in tomllib.loads(text).get("packages", []):
        for key in ("directory", "archive", "sdist"):
            entry = package.get(key)
            if isinstance(entry, dict) and entry.get("path"):
                paths.append(str(entry["path"]))
        paths += [str(w["path"]) for w in package.get("wheels", []) if w.get("path")]
    return paths


def _uv_lock_paths(lock: bytes, lock_dir: Path, project_name: str) -> list[Path]:
    """Local packages in a uv.lock (path/directory/editable sources), except the project."""
    data = tomllib.loads(lock.decode("utf-8"))
    own = _normalize(project_name)
    return [
        lock_dir / str(package["source"][kind])
        for package in data.get("package", [])
        if _normalize(str(package.get("name", ""))) != own
        for kind in ("path", "directory", "editable")
        if kind in package.get("source", {})
    ]


def _requirement_closure(files: list[Path]) -> list[Path]:
    """The requirements files and every file they include (-r) or constrain with (-c)."""
    seen: list[Path] = []
    todo = list(files)
    while todo:
        path = todo.pop(0).resolve()
        if path in seen or not path.is_file():
            continue
        seen.append(path)
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.match(r"^\s*(?:-r|--requirement|-c|--constraint)[\s=]+(\S+)", line)
            if match:
                todo.append(path.parent / match.group(1))
    return seen


def _requirement_paths(path: Path, root: Path) -> list[Path]:
    """Local paths a requirements file installs (`./pkg`, `-e ./pkg`, `x @ file:...`)."""
    found = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = re.sub(r"^\s*(?:-e|--editable)(?:\s+|=)", "", raw.split(" #", 1)[0]).strip()
        match = re.search(r"@\s*file://(\S+)", line)
        if match:
            found.append(Path(urllib.parse.unquote(match.group(1))))
            continue
        if line.startswith("file:"):
            line = re.sub(r"^file:(//)?", "", line)
        if line.startswith((".", "/")):
            spec = urllib.parse.unquote(line.split(";")[0].split("[")[0].strip())
            # pip reads relative paths from the working directory, uv from the file's.
            for base in (path.parent, root):
                if (base / spec).exists():
                    found.append(base / spec)
                    break
    return found


def _outermost(paths: list[Path], root: Path) -> tuple[str, ...]:
    """Relative paths of `paths`, dropping those inside another one."""
    chosen: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(path == c or c in path.parents for c in chosen):
            chosen.append(path)
    return tuple(sorted(_rel(p, root) for p in chosen))


def _rel(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return "" if rel == "." else rel


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- output handling ----------------------------------------------------------------------


class _Transcript:
    """Collects one container's output: protocol lines become progress calls, the rest
    is kept (masked) for error messages and streamed when verbose."""

    def __init__(
        self, progress: Progress, masker: Masker, output: OnLine | None, verbose: bool
    ) -> None:
        self.progress = progress
        self.mask = masker
        self.output: OnLine | None = None
        if verbose:
            # Without an output callback, --verbose lines still reach the user as progress.
            self.output = output or (lambda line: progress("log", 0.0, line))
        self.lines: list[str] = []
        self.result: dict[str, Any] | None = None
        self.failed_step: str | None = None
        self.current: str | None = None
        self._started = time.monotonic()

    def __call__(self, raw: str) -> None:
        line = self.mask(raw)
        if not line.startswith(PROTOCOL):
            self.lines.append(line)
            if self.output:
                self.output(line)
            return
        kind, _, rest = line[len(PROTOCOL) :].partition(" ")
        if kind == "begin":
            self.current, self._started = rest, time.monotonic()
        elif kind == "end":
            step = self.current or rest
            detail = rest[len(step) :].strip() if rest.startswith(step) else rest
            self.progress(step, time.monotonic() - self._started, detail or None)
            self.current = None
        elif kind == "result":
            self.result = json.loads(rest)
        elif kind == "failed":
            self.failed_step = rest or self.current

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _attach(error: PydeployError, output: str) -> PydeployError:
    """Keep the full (masked) tool output on the error for --verbose / --debug."""
    error.output = output
    return error


def _tail(lines: list[str], count: int = TAIL_LINES) -> str:
    kept = [ln.rstrip() for ln in lines if ln.strip() and not ln.startswith(PROTOCOL)]
    return "\n".join(kept[-count:])


_COMPILER_SIGNS = re.compile(
    r"(\berror: command '[^']*(gcc|cc|c\+\+|g\+\+|clang)[^']*' failed|fatal error: |"
    r"\.(c|cc|cpp|cxx|h|pyx):\d+(:\d+)?: error|collect2: error|/usr/bin/ld: |"
    r"Python\.h: No such file|unable to execute '(gcc|cc)')"
)


def explain_failure(step: str | None, output: str, plan: BuildPlan) -> PydeployError:
    """Turn a builder container's failure into the error the user should see."""
    lines = output.splitlines()
    pyproject = plan.project.pyproject
    built = re.search(r"Failed to (?:build|download and build) `([^`]+)`", output)
    if built:
        spec = built.group(1)
        name = re.split(r"[\s=<>@\[;~!]", spec, maxsplit=1)[0]
        start = next((i for i, ln in enumerate(lines) if built.group(0) in ln), 0)
        block = [ln for ln in lines[start:] if not re.match(r"^\s*(hint|help):|error: `", ln)]
        if _COMPILER_SIGNS.search(output):
            return CompileError(
                f"Compiling the C extension of `{name}` failed in the builder. Last lines of "
                f"the compiler output:\n{_tail(block)}\n",
                hint=(
                    "A missing header or library is the usual cause: add the missing -dev "
                    "package (e.g. libpq-dev for psycopg2, libffi-dev, libssl-dev) to "
                    f"`tool.pydeploy.build-packages` in {pyproject} (now: "
                    f"{', '.join(plan.build_packages) or 'none'}), or use a version of "
                    f"`{name}` that ships a wheel for this Python."
                ),
            )
        return BuildError(
            f"Building `{name}` from source failed in the builder:\n{_tail(block)}\n",
            hint=(
                "Check that the package supports this Python version; build-time system "
                f"packages go in `tool.pydeploy.build-packages` in {pyproject}."
            ),
        )
    if step == "uv tools":
        return BuildError(
            f"Installing uv {UV_VERSION} into the builder's cache failed:\n{_tail(lines)}\n",
            hint=(
                "The builder needs `python3 -m venv` (Debian-based images: add python3-venv "
                "to `tool.pydeploy.build-packages`) and access to the package index "
                "(`tool.pydeploy.network`, `tool.pydeploy.index`)."
            ),
        )
    if re.search(r"UnknownIssuer|CERTIFICATE_VERIFY_FAILED|invalid peer certificate", output):
        return BuildError(
            f"The builder does not trust the package index's TLS certificate:\n{_tail(lines, 8)}\n",
            hint=(
                "Behind a TLS-intercepting proxy, point `tool.pydeploy.index.ca-bundle` (or "
                "SSL_CERT_FILE) at a CA bundle that includes the proxy's CA."
            ),
        )
    uv_error = _uv_error(lines)
    if uv_error:
        return BuildError(
            f"The dependencies could not be resolved or installed ({plan.dependency_source}):"
            f"\n{uv_error}\n",
            hint=(
                "Fix the requirement named above in "
                f"{_source_file(plan)}, or the index settings in `tool.pydeploy.index`."
            ),
        )
    return BuildError(f"The builder step `{step or 'setup'}` failed:\n{_tail(lines)}\n")


def _uv_error(lines: list[str]) -> str | None:
    """uv's own error block (from `error:` or its cross mark to the end)."""
    for i, line in enumerate(lines):
        if re.match(r"^\s*(\u00d7|error:)", line) and not line.startswith("error: `"):
            block = [ln for ln in lines[i:] if not ln.startswith("error: `")]
            return _tail(block)
    return None


def _source_file(plan: BuildPlan) -> str:
    return {
        "uv.lock": "uv.lock (run `uv lock` after changing pyproject.toml)",
        "pylock": "pylock.toml",
        "requirements": "the requirements files",
    }.get(plan.dependency_source, f"[project.dependencies] of {plan.project.pyproject}")


# --- builder image ------------------------------------------------------------------------


def _script() -> bytes:
    return resources.files("pydeploy").joinpath("builder_script.py").read_bytes()


def _protocol_result(output: str) -> dict[str, Any] | None:
    for line in reversed(output.splitlines()):
        if line.startswith(PROTOCOL + "result "):
            loaded: dict[str, Any] = json.loads(line[len(PROTOCOL) + 7 :])
            return loaded
    return None


_APT = r"""set -e
if [ -z "$PYDEPLOY_PACKAGES" ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "pydeploy: the base image has no apt-get; build packages need a Debian/Ubuntu base."
  exit 100
fi
set -- -q -o Dpkg::Use-Pty=0
if [ -s /run/pydeploy/ca.pem ]; then set -- "$@" -o Acquire::https::CAInfo=/run/pydeploy/ca.pem; fi
apt-get "$@" update
apt-get "$@" install -y --no-install-recommends $PYDEPLOY_PACKAGES
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb
"""


def ensure_builder(engine: Engine, plan: BuildPlan, progress: Progress) -> BuilderImage:
    """The builder image for this base and these build packages, built once and reused."""
    started = time.monotonic()
    base_id = engine.ensure_image(plan.base_image).image_id
    requested = sorted(set(plan.build_packages))
    key = _sha(f"{base_id}\n{' '.join(requested)}\n{RECIPE_VERSION}".encode())[:16]
    name = f"{BUILDER_REPOSITORY}:{key}"
    info = engine.inspect_image(name)
    python = _python_from_labels(info) if info else None
    if info and python:
        _check_python(plan, python)
        progress("builder image", time.monotonic() - started, f"{name} (cached)")
        return BuilderImage(name, str(info["Id"]), python)

    network = engine.network_mode(plan.network)
    probe = _probe(engine, plan, network)
    python = PythonInfo(probe["executable"], probe["version"], probe["site_packages"])
    _check_python(plan, python)
    packages = list(requested)
    # Debian's own python3 keeps its headers in python3-dev; official images ship them.
    if requested and not probe["headers"] and python.executable.startswith("/usr/bin/"):
        packages = sorted({*packages, "python3-dev"})
    base_info = engine.inspect_image(plan.base_image) or {}
    image_id = _build_builder(engine, plan, name, network, packages, python, base_info)
    detail = f"{name} (built: {' '.join(packages) or 'no packages'}; python {python.version})"
    progress("builder image", time.monotonic() - started, detail)
    return BuilderImage(name, image_id, python)


def _probe(engine: Engine, plan: BuildPlan, network: str) -> dict[str, Any]:
    argv = [
        "/bin/sh",
        "-c",
        (
            'p=$(command -v python3) || { echo "pydeploy: no python3 on PATH"; exit 127; }; '
            f'exec "$p" {SCRIPT} probe "$p"'
        ),
    ]
    result = engine.run(
        plan.base_image, argv, files={RUN_DIR: {"builder_script.py": _script()}}, network=network
    )
    found = _protocol_result(result.output)
    if result.exit_code != 0 or not found:
        raise BuildError(
            f"Cannot find a python3 interpreter in the base image `{plan.base_image}` "
            f"(exit {result.exit_code}): {_tail(result.output.splitlines(), 5)}",
            hint=(
                "pydeploy needs a base image with python3 and /bin/sh (official python:* "
                "images, or Debian/Ubuntu with python3); set it with `--base` or "
                "`tool.pydeploy.base-image`."
            ),
        )
    return found


def _check_python(plan: BuildPlan, python: PythonInfo) -> None:
    """The base image decides the interpreter: it must match what the user asked for."""
    check_python_allowed(plan.project, python.version, f"base image {plan.base_image}")
    minor = ".".join(python.version.split(".")[:2])
    wanted = plan.project.config.python
    origin = "tool.pydeploy.python"
    if plan.python_origin.startswith("--python"):
        wanted, origin = plan.python, "--python"
    if wanted and wanted != minor:
        raise ConfigError(
            f"`{origin}` asks for Python {wanted}, but the base image `{plan.base_image}` "
            f"has Python {python.version} ({python.executable}).",
            hint=(
                f"Use a base image with Python {wanted} (e.g. python:{wanted}-slim), or set "
                f"{origin} to {minor}."
            ),
        )


def _python_from_labels(info: dict[str, Any]) -> PythonInfo | None:
    labels = (info.get("Config") or {}).get("Labels") or {}
    try:
        data = json.loads(labels[LABEL_PYTHON])
        return PythonInfo(data["executable"], data["version"], data["site_packages"])
    except (KeyError, TypeError, ValueError):
        return None


def _build_builder(
    engine: Engine,
    plan: BuildPlan,
    name: str,
    network: str,
    packages: list[str],
    python: PythonInfo,
    base_info: dict[str, Any],
) -> str:
    ca = find_ca_bundle(plan.project.config.index.ca_bundle, plan.project.root, os.environ)
    mounts = []
    if ca:
        # A tmpfs under the bind keeps even the mountpoint out of the committed layer.
        mounts = [Mount(RUN_DIR, "", "tmpfs"), Mount(CA_TARGET, str(ca), "bind", read_only=True)]
    env = {"DEBIAN_FRONTEND": "noninteractive", "PYDEPLOY_PACKAGES": " ".join(packages)}
    lines: list[str] = []
    with engine.container(
        plan.base_image, ["/bin/sh", "-c", _APT], env=env, mounts=mounts, network=network
    ) as box:
        code = box.follow(lines.append)
        if code != 0:
            raise _attach(
                BuildError(
                    f"Installing the build packages ({' '.join(packages)}) into the builder "
                    f"failed (exit {code}):\n{_tail(lines, 12)}\n",
                    hint=(
                        f"Fix `tool.pydeploy.build-packages` in {plan.project.pyproject}: "
                        "each entry must be a Debian package of the base image's release "
                        "(e.g. libpq-dev). The builder also needs network access to the "
                        "apt mirrors (`tool.pydeploy.network`)."
                    ),
                ),
                "\n".join(lines),
            )
        config = base_info.get("Config") or {}
        labels = {
            **(config.get("Labels") or {}),
            LABEL_KEY: name.split(":", 1)[1],
            "pydeploy.builder.base": str(base_info.get("Id", "")),
            "pydeploy.builder.packages": " ".join(packages),
            LABEL_PYTHON: json.dumps(
                {
                    "executable": python.executable,
                    "version": python.version,
                    "site_packages": python.site_packages,
                },
                sort_keys=True,
            ),
        }
        repository, tag = name.split(":", 1)
        # The base's own config, so nothing of this container (its env, command) stays.
        return box.commit(
            repository,
            tag,
            {
                "Env": config.get("Env") or ["PATH=/usr/local/bin:/usr/bin:/bin"],
                "Cmd": config.get("Cmd") or ["/bin/sh"],
                "Entrypoint": config.get("Entrypoint") or [],
                "WorkingDir": config.get("WorkingDir") or "",
                "User": config.get("User") or "",
                "Labels": labels,
            },
        )


# --- dependencies -------------------------------------------------------------------------


def _builder_env(plan: BuildPlan, ca: Path | None) -> tuple[dict[str, str], Masker]:
    index = plan.project.config.index
    credentials = read_credentials(index, os.environ)
    env = {
        "UV_CACHE_DIR": f"{CACHE_DIR}/uv",
        "UV_LINK_MODE": "copy",
        "UV_COMPILE_BYTECODE": "0",
        "UV_NO_INSTALLER_METADATA": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_MANAGED_PYTHON": "1",
        "UV_NO_PROGRESS": "1",
        "PIP_CACHE_DIR": f"{CACHE_DIR}/pip",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
        "SOURCE_DATE_EPOCH": FIXED_EPOCH,
        # No debug info in extensions compiled from sdists: it records the random build
        # directory (so two clean builds differed) and only bloats a runtime image.
        "CFLAGS": "-g0",
        "CXXFLAGS": "-g0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    if ca:
        env |= dict.fromkeys(CA_ENV_VARS, CA_TARGET)
    env |= index_environment(index, credentials)
    return env, Masker(credentials.secrets())


def _mounts(ca: Path | None, venv_volume: str, *, venv_ro: bool) -> list[Mount]:
    # These containers are never committed, so the CA's mountpoint may live in their layer.
    mounts = [Mount(CACHE_DIR, CACHE_VOLUME), Mount(VENV, venv_volume, read_only=venv_ro)]
    if ca:
        mounts.append(Mount(CA_TARGET, str(ca), "bind", read_only=True))
    return mounts


def _ensure_cache_volume(engine: Engine) -> None:
    if engine.volume_labels(CACHE_VOLUME) is None:
        engine.create_volume(CACHE_VOLUME, {"pydeploy.cache": "1"})


def _read_marker(engine: Engine, builder: BuilderImage, volume: str) -> dict[str, Any] | None:
    """The completion marker of a venv volume, or None when the build never finished."""
    with engine.container(
        builder.name, ["/bin/true"], mounts=[Mount(VENV, volume, read_only=True)], network="none"
    ) as box:
        data = box.read_file(f"{VENV}/{MARKER}")
    if data is None:
        return None
    try:
        marker: dict[str, Any] = json.loads(data)
    except ValueError:
        return None
    return marker


def install_dependencies(
    engine: Engine,
    plan: BuildPlan,
    builder: BuilderImage,
    progress: Progress,
    *,
    verbose: bool = False,
    output: OnLine | None = None,
) -> Dependencies:
    """The venv for this dependency set, in its own volume: reused when complete,
    otherwise (re)built in a builder container. `output` gets every tool line when
    `verbose`."""
    started = time.monotonic()
    inputs = dependency_inputs(plan)
    servers = server_packages(plan.server)
    index = plan.project.config.index
    key = dependency_key(builder.image_id, inputs, servers, index_settings(index))
    volume = VENV_VOLUME_PREFIX + key[:16]

    _ensure_cache_volume(engine)
    marker = _reuse_or_claim(engine, builder, volume, key, progress)
    if marker is not None:
        pins = tuple(str(p) for p in marker.get("pins", []))
        progress("install", time.monotonic() - started, f"cached in volume {volume}")
        return Dependencies(key, volume, pins, inputs.source, cached=True)

    ca = find_ca_bundle(index.ca_bundle, plan.project.root, os.environ)
    env, masker = _builder_env(plan, ca)
    job = {
        "uv_dir": f"{CACHE_DIR}/tools/uv-{UV_VERSION}",
        "uv_version": UV_VERSION,
        "python": builder.python.executable,
        "mount": SRC,
        "work": WORK,
        "copies": list(inputs.copies),
        "cwd": inputs.cwd,
        "source": inputs.source,
        "package": inputs.package,
        "requirements": list(inputs.requirements),
        "requirement_lines": list(inputs.requirement_lines),
        "extras": list(inputs.extras),
        "groups": list(inputs.groups),
        "server_packages": list(servers),
        "venv": VENV,
        "key": key,
        "marker": MARKER,
    }
    transcript = _Transcript(progress, masker, output, verbose)
    mounts = [
        *_mounts(ca, volume, venv_ro=False),
        Mount(SRC, str(inputs.mount_root), "bind", read_only=True),
    ]
    try:
        with engine.container(
            builder.name,
            [builder.python.executable, SCRIPT, "install", JOB],
            env=env,
            mounts=mounts,
            network=engine.network_mode(plan.network),
        ) as box:
            box.put_files(RUN_DIR, {"builder_script.py": _script(), "job.json": _json(job)})
            code = box.follow(transcript)
        _raise_on_failure(code, transcript, plan)
    except BaseException:
        # Whatever happened (failure, Ctrl-C, cleanup() from a signal handler), the
        # half-filled volume must not survive as a cache entry. The marker check would
        # catch it anyway; removing it frees the space now.
        _remove_quietly(engine, volume)
        raise
    pins = tuple(str(p) for p in (transcript.result or {}).get("pins", []))
    return Dependencies(key, volume, pins, inputs.source, cached=False)


def _reuse_or_claim(
    engine: Engine, builder: BuilderImage, volume: str, key: str, progress: Progress
) -> dict[str, Any] | None:
    """The marker of a complete venv volume for `key`; else None once this build owns
    an empty volume of that name. A volume another build is still filling is waited for;
    one left without a marker (an interrupted build) is removed and claimed afresh."""
    for _attempt in range(3):
        labels = engine.volume_labels(volume)
        if labels is None:
            # Creating an existing volume returns it unchanged: the owner label tells
            # whether this build won a race with a concurrent one.
            engine.create_volume(
                volume,
                {
                    LABEL_VENV_KEY: key,
                    LABEL_OWNER: engine.build_id,
                    LABEL_CLAIMED: str(int(time.time())),
                    "pydeploy.venv": "1",
                },
            )
            labels = engine.volume_labels(volume) or {}
            if labels.get(LABEL_OWNER) == engine.build_id:
                return None
        marker = _wait_for_volume(engine, builder, volume, labels, progress)
        if marker and marker.get("key") == key:
            return marker
        # No marker: an interrupted or failed build. Never use it; start over.
        engine.remove_volume(volume)
    raise BuildError(f"Could not claim the dependency volume {volume}: it keeps reappearing.")


def _wait_for_volume(
    engine: Engine,
    builder: BuilderImage,
    volume: str,
    labels: dict[str, str],
    progress: Progress,
) -> dict[str, Any] | None:
    """The volume's marker, once no other build is filling it (its containers are gone
    and, right after its claim, it had a moment to start one)."""
    owner = labels.get(LABEL_OWNER)
    other = owner is not None and owner != engine.build_id
    claimed = int(labels.get(LABEL_CLAIMED, "0") or 0)
    started = time.monotonic()
    while True:
        if other and engine.containers_with_label(owner):
            marker = None
        else:
            marker = _read_marker(engine, builder, volume)
            if marker or not other or time.time() - claimed > CLAIM_GRACE_SECONDS:
                break
        if time.monotonic() - started > OWNER_WAIT_SECONDS:
            raise BuildError(
                f"Another pydeploy build ({owner}) has been filling {volume} for over "
                f"{OWNER_WAIT_SECONDS // 60} minutes.",
                hint=f"Wait for it, or remove its containers (label {BUILD_LABEL}={owner}).",
            )
        time.sleep(1.0)
    if time.monotonic() - started > 1.0:
        progress("install", time.monotonic() - started, f"waited for build {owner}")
    return marker


def _raise_on_failure(code: int, transcript: _Transcript, plan: BuildPlan) -> dict[str, Any]:
    if code != 0 or transcript.result is None:
        error = explain_failure(transcript.failed_step, transcript.text, plan)
        raise _attach(error, transcript.text)
    return transcript.result


def _remove_quietly(engine: Engine, volume: str) -> None:
    try:
        engine.remove_volume(volume)
    except PydeployError:
        return  # still in use or engine gone: the missing marker protects the next build


def _json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, indent=1).encode()


def export_venv(engine: Engine, builder: BuilderImage, deps: Dependencies, dest: Path) -> Path:
    """A tar of the venv (entries `venv/...`), without pydeploy's completion marker."""
    with engine.container(
        builder.name,
        ["/bin/true"],
        mounts=[Mount(VENV, deps.volume, read_only=True)],
        network="none",
    ) as box:
        _copy_tar(box.get_archive(VENV), dest, lambda name: name != f"venv/{MARKER}")
    return dest


# --- app check ----------------------------------------------------------------------------


def check_app(
    engine: Engine,
    plan: BuildPlan,
    builder: BuilderImage,
    deps: Dependencies,
    app_tar: Path,
    progress: Progress,
    *,
    verbose: bool = False,
    output: OnLine | None = None,
) -> AppCheck:
    """Import the app target inside the built venv (after building and installing the
    project's own wheel into a separate tree) and decide WSGI or ASGI."""
    index = plan.project.config.index
    ca = find_ca_bundle(index.ca_bundle, plan.project.root, os.environ)
    env, masker = _builder_env(plan, ca)
    job = {
        "uv": f"{CACHE_DIR}/tools/uv-{UV_VERSION}/bin/uv",
        "python": builder.python.executable,
        "venv": VENV,
        "site_packages": builder.python.site_packages,
        "app_dir": "/app",
        "install_project": plan.install_project,
        "target": plan.app,
    }
    transcript = _Transcript(progress, masker, output, verbose)
    site_tar = app_tar.with_name(f"{app_tar.stem}.project-site.tar")
    with engine.container(
        builder.name,
        [builder.python.executable, SCRIPT, "check", JOB],
        env=env,
        mounts=_mounts(ca, deps.volume, venv_ro=True),
        network=engine.network_mode(plan.network),
    ) as box:
        box.put_files(RUN_DIR, {"builder_script.py": _script(), "job.json": _json(job)})
        with app_tar.open("rb") as handle:
            box.put_archive("/", handle)
        code = box.follow(transcript)
        result = _raise_on_failure(code, transcript, plan)
        if result.get("project_site"):
            prefix = "project-site/"

            def keep(name: str) -> str | None:
                return name[len(prefix) :] if name.startswith(prefix) else None

            _copy_tar(box.get_archive(str(result["project_site"])), site_tar, keep)
    interface = _decide_interface(plan, result.get("app") or {}, transcript.text)
    return AppCheck(interface, site_tar if result.get("project_site") else None)


def _decide_interface(
    plan: BuildPlan, found: dict[str, Any], output: str
) -> Literal["wsgi", "asgi"]:
    key = "tool.pydeploy.app" if plan.app_origin == "tool.pydeploy.app" else None
    where = f"`{key}` = {plan.app!r}" if key else f"the detected app {plan.app!r}"
    fix = (
        f"Fix `tool.pydeploy.app` in {plan.project.pyproject}"
        if key
        else f'Set `tool.pydeploy.app = "module:attribute"` in {plan.project.pyproject}'
    )
    kind = found.get("kind")
    if kind == "attribute":
        raise AppCheckError(
            f"{where} names an attribute its module does not have: {found.get('error')}.",
            hint=f"{fix} to name the application object as `module:attribute`.",
        )
    if kind in {"import", "crash"}:
        raise _attach(
            AppCheckError(
                f"{where} does not import in the built environment:\n{found.get('error', '')}\n",
                hint=f"{fix}, or add the missing dependency.",
            ),
            output,
        )
    if kind == "not-callable":
        raise AppCheckError(
            f"{where} is not callable (it is a {found.get('type')}), so it cannot be a WSGI "
            "or ASGI app.",
            hint=f"{fix} to name the application object.",
        )
    if kind == "class":
        raise AppCheckError(
            f"{where} is a class, not an application instance.",
            hint=f"{fix} to name the instance (e.g. `main:app`), not its class.",
        )
    interface = found.get("interface")
    forced = plan.project.config.server.interface
    if interface is None:
        if plan.interface != "auto":
            return plan.interface
        raise AppCheckError(
            f"{where} is callable but neither a WSGI (environ, start_response) nor an ASGI "
            "(scope, receive, send) app could be recognised.",
            hint="Set `tool.pydeploy.server.interface` to `wsgi` or `asgi`.",
        )
    if forced not in ("auto", interface):
        raise AppCheckError(
            f"`tool.pydeploy.server.interface` = {forced!r}, but {where} is an "
            f"{interface.upper()} app.",
            hint=f"Set `tool.pydeploy.server.interface` to {interface!r} (or `auto`).",
        )
    configured = plan.project.config.server.type
    if configured != "auto" and _server_interface(configured) != interface:
        raise AppCheckError(
            f"`tool.pydeploy.server.type` = {configured!r} cannot run {where}: it is an "
            f"{interface.upper()} app.",
            hint="Use `gunicorn` for WSGI apps, `gunicorn-uvicorn` or `uvicorn` for ASGI "
            "(or `auto`).",
        )
    return "asgi" if interface == "asgi" else "wsgi"


def _server_interface(server: str) -> str:
    return "wsgi" if server == "gunicorn" else "asgi"


# --- tar plumbing ---------------------------------------------------------------------------


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (for streaming tarfile)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = chunk
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def _copy_tar(
    chunks: Iterator[bytes], dest: Path, rename: Callable[[str], str | bool | None]
) -> None:
    """Stream a tar from the engine to `dest`, keeping entries for which `rename` returns
    True (same name) or a new name."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    stream: IO[bytes] = io.BufferedReader(_ChunkReader(chunks), buffer_size=1 << 20)
    try:
        with (
            tarfile.open(fileobj=stream, mode="r|") as src,
            tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as out,
        ):
            for member in src:
                verdict = rename(member.name)
                if not verdict:
                    continue
                if isinstance(verdict, str):
                    member.name = verdict
                handle = src.extractfile(member) if member.isfile() else None
                out.addfile(member, handle)
        partial.replace(dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
