"""The builder stage: a builder image (base + compilers), the dependencies installed into
a virtualenv inside a builder container, and the project's own wheel built there (the app
is imported later, in the runtime image: pydeploy.builder.appcheck).

Caching: the builder image is tagged by a content key (base image ID + build packages);
each dependency set gets its own volume `pydeploy-venv-<key>` keyed by everything that
decides it, so an unchanged set is reused without running uv at all. uv's download and
wheel cache lives in one shared volume (`pydeploy-cache`), so changed sets rebuild only
what changed. Index credentials reach builder containers on their attached stdin only
(never in a container's configuration) and are masked in every text this module returns.

A venv volume is claimed by the build that fills it (labels: build id and owner process).
Another build that needs it waits, says so, and takes the claim over once the filler is
dead: at once for an owner process on this host that has ended, else once none of the
filler's containers has run for CLAIM_GRACE_SECONDS (they die with their owner, and its
pin runs for as long as it fills the volume). Between its
containers a build pins what it uses (Engine.pin), so `prune` and the engine leave it be,
and it records its use inside the volume (USED), where `prune` on any host reads it.

The engine may be remote (DOCKER_HOST=tcp://..., docker-in-docker in CI), so no container
bind-mounts a host path: the dependency inputs and the CA bundle are copied into a
container (put_archive) before it starts; only engine-side named volumes are mounted.

This module runs containers; the decisions it acts on are pure and live elsewhere:
depinputs (the dependency set and its key), credentials (index settings, secrets, CA
bundle) and failures (container output and the errors made of it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from pydeploy import atomic, payload
from pydeploy.builder import uvseed
from pydeploy.builder.credentials import (
    Masker,
    index_environment,
    index_settings,
    read_credentials,
)
from pydeploy.builder.engine import StageBox, StageEngine
from pydeploy.builder.transcript import (
    Reporting,
    Transcript,
    attach,
    explain_failure,
    needs_full_builder,
    protocol_result,
    tail,
)
from pydeploy.cachekeys import (
    APT_VOLUME_PREFIX,
    BUILD_LABEL,
    BUILDER_REPOSITORY,
    CACHE_VOLUME,
    LABEL_BUILDER_BASE,
    LABEL_CACHE,
    LABEL_CLAIMED,
    LABEL_KEY,
    LABEL_OWNER,
    LABEL_OWNER_PROCESS,
    LABEL_PACKAGES,
    LABEL_PYTHON,
    LABEL_PYTHON_BASE,
    LABEL_VENV,
    LABEL_VENV_KEY,
    MARKER,
    PYTHON_VOLUME_PREFIX,
    RECIPE_VERSION,
    USED,
    UV_VERSION,
    VENV_VOLUME_PREFIX,
)
from pydeploy.config.project import check_python_allowed
from pydeploy.engine import owners
from pydeploy.engine.types import CommitSettings, ImageFacts, Mount
from pydeploy.errors import BuildError, ConfigError, PydeployError
from pydeploy.oci.entries import FileEntry, entries_from_tar
from pydeploy.oci.streams import as_reader
from pydeploy.payload.builder_script import (
    EXIT_NEEDS_UV_SEED,
    ElfScanJob,
    InstallJob,
    ProjectJob,
    ProjectResult,
    SkipLists,
)
from pydeploy.plan import servers, skiplist
from pydeploy.plan.depinputs import (
    DependencyInputs,
    dependency_inputs,
    dependency_key,
    input_files,
)
from pydeploy.plan.index import CA_ENV_VARS
from pydeploy.plan.planner import VENV, BuildPlan
from pydeploy.progress import Progress

CACHE_DIR = "/cache"
APT_CACHE = "/var/cache/apt"
SRC = "/src"  # where the dependency inputs are unpacked
WORK = "/build/src"
RUN_DIR = "/run/pydeploy"
CA_NAME = "ca.pem"
CA_TARGET = f"{RUN_DIR}/{CA_NAME}"
SCRIPT = f"{RUN_DIR}/builder_script.py"
JOB = f"{RUN_DIR}/job.json"
PREVIOUS_VENV = "/run/pydeploy/previous-venv"  # a previous venv, read-only, for its bytecode
FIXED_EPOCH = "315532800"  # 1980-01-01, the earliest time a wheel (zip) can hold

# The longest a build waits for a live one that fills the same volume.
OWNER_WAIT_SECONDS = 1200
# Another host's filler with no running container for this long is dead (a build starts
# its next container within moments; its containers die with it).
CLAIM_GRACE_SECONDS = 30


# --- the result contract -------------------------------------------------------------


@dataclass(frozen=True)
class PythonInfo:
    executable: str
    version: str  # "3.11.2"
    site_packages: str  # "lib/python3.11/site-packages", relative to the venv


@dataclass(frozen=True)
class BuilderImage:
    """An image builder containers run. `light`: the base image itself, no compilers
    added (wheels only; builds that need more move to the full builder)."""

    name: str
    image_id: str
    python: PythonInfo
    key: str  # the full builder's content key, also part of the venv key
    light: bool = False
    packages: tuple[str, ...] = ()  # what the image adds to the base


@dataclass(frozen=True)
class Dependencies:
    key: str
    volume: str
    pins: tuple[str, ...]
    source: str
    cached: bool  # nothing was installed this time
    builder: BuilderImage  # the builder that installed them (or this build's, if cached)
    needs_compilers: bool = False  # installed by the full builder: build_project uses it too
    # The shared-library scan the install ran (a builder that is the base image itself,
    # which it left as it was): elfdeps.py's result and the LD_LIBRARY_PATH it used.
    elf_scan: dict[str, Any] | None = None
    restored_from: str = ""  # a restore's origin (the registry cache, the host cache)
    # False: the venv exists as layers only (a restore that nothing needed in a volume);
    # `volume` is then the name it would have.
    filled: bool = True


@dataclass(frozen=True)
class _Run:
    """One install or app check under way: its engine and plan, whom it tells, and when
    it started (what it reports is timed from then)."""

    engine: StageEngine
    plan: BuildPlan
    report: Reporting
    started: float

    def say(self, step: str, detail: str) -> None:
        self.report.progress(step, time.monotonic() - self.started, detail)

    def transcript(self, masker: Masker) -> Transcript:
        """A fresh transcript for one of its containers."""
        report = self.report
        return Transcript(report.progress, masker, report.output, report.verbose)


# --- builder image ------------------------------------------------------------------------


def _script() -> bytes:
    return payload.source("builder_script.py")


def skip_lists() -> SkipLists:
    """The shared skip list for the builder script's copies (it cannot import it)."""
    return {
        "skip_dirs": sorted(skiplist.SKIP_DIRS),
        "package_root_skip_dirs": list(skiplist.BUILD_OUTPUT_DIRS),
    }


# Build packages are installed in two containers sharing a scratch volume at
# /var/cache/apt (package lists go there too, so neither they nor the .debs reach the
# image): the first, which gets the CA bundle, downloads; the second, which is committed
# as the builder image, installs from the downloads and never sees the CA.
_APT_PREAMBLE = r"""set -e
if [ -z "$PYDEPLOY_PACKAGES" ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "pydeploy: the base image has no apt-get; build packages need a Debian/Ubuntu base."
  exit 100
fi
set -- -q -o Dpkg::Use-Pty=0 -o Dir::State::Lists=/var/cache/apt/lists
"""
_APT_DOWNLOAD = (
    _APT_PREAMBLE
    + r"""mkdir -p /var/cache/apt/lists/partial
if [ -s /run/pydeploy/ca.pem ]; then set -- "$@" -o Acquire::https::CAInfo=/run/pydeploy/ca.pem; fi
apt-get "$@" update
apt-get "$@" install -y --no-install-recommends --download-only $PYDEPLOY_PACKAGES
"""
)
_APT_INSTALL = (
    _APT_PREAMBLE
    + r"""apt-get "$@" install -y --no-install-recommends --no-download $PYDEPLOY_PACKAGES
"""
)


def ensure_builder(engine: StageEngine, plan: BuildPlan, progress: Progress) -> BuilderImage:
    """The builder to start with. The full builder image (base + build packages) is made
    only when something has to be compiled: until then the base image itself is the
    builder (`light`), and install_dependencies/build_project switch to the full one when a
    build needs it. A full builder image already on the engine is used directly (the
    venv it makes is the same, and a failing light attempt is saved)."""
    started = time.monotonic()
    base_id, key, _, cached = _existing_full(engine, plan, started, progress)
    if cached:
        return cached
    python, _ = _base_python(engine, plan, base_id)
    # Without build packages the full builder would be the base image again.
    light = bool(plan.build_packages)
    builder = BuilderImage(plan.base_image, base_id, python, key, light=light)
    progress("builder image", time.monotonic() - started, describe(builder))
    return builder


def _existing_full(
    engine: StageEngine, plan: BuildPlan, started: float, progress: Progress
) -> tuple[str, str, str, BuilderImage | None]:
    """(base image ID, builder key, builder name, the full builder if the engine has it)."""
    base_id = engine.ensure_image(plan.base_image).image_id
    key, name = _builder_name(base_id, plan)
    cached = _cached_full(engine, plan, key, name)
    if cached:
        progress("builder image", time.monotonic() - started, f"{name} (cached)")
    return base_id, key, name, cached


def _base_python(
    engine: StageEngine, plan: BuildPlan, base_id: str
) -> tuple[PythonInfo, dict[str, Any]]:
    """The base image's interpreter (checked against requires-python and the config) and
    the probed facts behind it."""
    facts = _base_facts(engine, plan, base_id)
    python = PythonInfo(facts["executable"], facts["version"], facts["site_packages"])
    check_python(plan, python)
    return python, facts


def ensure_full_builder(engine: StageEngine, plan: BuildPlan, progress: Progress) -> BuilderImage:
    """The builder image for this base and these build packages (compilers), built once
    and reused."""
    started = time.monotonic()
    base_id, key, name, cached = _existing_full(engine, plan, started, progress)
    if cached:
        return cached
    python, facts = _base_python(engine, plan, base_id)
    requested = sorted(set(plan.build_packages))
    if not requested:
        return BuilderImage(plan.base_image, base_id, python, key, light=False)
    packages = list(requested)
    # Debian's own python3 keeps its headers in python3-dev; official images ship them.
    if not facts["headers"] and python.executable.startswith("/usr/bin/"):
        packages = sorted({*packages, "python3-dev"})
    base_info = engine.inspect_image(plan.base_image) or ImageFacts(base_id)
    recipe = _Recipe(name, tuple(packages), python, base_info)
    image_id = _build_builder(engine, plan, recipe, engine.network_mode(plan.network))
    detail = f"{name} (built: {' '.join(packages)}; python {python.version})"
    progress("builder image", time.monotonic() - started, detail)
    return BuilderImage(name, image_id, python, key, light=False, packages=tuple(packages))


def _cached_full(engine: StageEngine, plan: BuildPlan, key: str, name: str) -> BuilderImage | None:
    info = engine.inspect_image(name)
    python = _python_from_labels(info.labels) if info else None
    if not info or not python:
        return None
    check_python(plan, python)
    packages = tuple(info.labels.get(LABEL_PACKAGES, "").split())
    return BuilderImage(name, info.image_id, python, key, light=False, packages=packages)


def describe(builder: BuilderImage) -> str:
    """What `pydeploy build` says about a builder."""
    if builder.light:
        return "base image (compilers only if a build needs them)"
    if not builder.packages:
        return f"base image {builder.name} (no build-packages)"
    return f"{builder.name} ({' '.join(builder.packages)})"


def _builder_name(base_id: str, plan: BuildPlan) -> tuple[str, str]:
    """The full builder's content key and image name: base image ID + build packages +
    recipe. The venv key uses the same key, whichever builder installs."""
    requested = sorted(set(plan.build_packages))
    recipe = f"{base_id}\n{' '.join(requested)}\n{RECIPE_VERSION}".encode()
    key = hashlib.sha256(recipe).hexdigest()[:16]
    return key, f"{BUILDER_REPOSITORY}:{key}"


def _base_facts(engine: StageEngine, plan: BuildPlan, base_id: str) -> dict[str, Any]:
    """The base image's interpreter facts (the probe), remembered in the labels of an
    empty volume named by the base image ID, so a warm build runs no probe container."""
    recipe = f"{base_id}\n{RECIPE_VERSION}".encode()
    volume = PYTHON_VOLUME_PREFIX + hashlib.sha256(recipe).hexdigest()[:16]
    labels = engine.volume_labels(volume) or {}
    with contextlib.suppress(ValueError, TypeError):
        facts: dict[str, Any] = json.loads(labels.get(LABEL_PYTHON, ""))
        if {"executable", "version", "site_packages", "headers"} <= set(facts):
            return facts
    facts = _probe(engine, plan, engine.network_mode(plan.network))
    engine.create_volume(
        volume, {LABEL_PYTHON: json.dumps(facts, sort_keys=True), LABEL_PYTHON_BASE: base_id}
    )
    return facts


def _probe(engine: StageEngine, plan: BuildPlan, network: str) -> dict[str, Any]:
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
    found = protocol_result(result.output)
    if result.exit_code != 0 or not found:
        raise BuildError(
            f"Cannot find a python3 interpreter in the base image `{plan.base_image}` "
            f"(exit {result.exit_code}): {tail(result.output.splitlines(), 5)}",
            hint=(
                "pydeploy needs a base image with python3 and /bin/sh (official python:* "
                "images, or Debian/Ubuntu with python3); set it with `--base` or "
                "`tool.pydeploy.base-image`."
            ),
        )
    return found


def check_python(plan: BuildPlan, python: PythonInfo) -> None:
    """The base image decides the interpreter: it must match what the user asked for."""
    check_python_allowed(plan.project, python.version, f"base image {plan.base_image}")
    minor = ".".join(python.version.split(".")[:2])
    pin = plan.python_pin
    wanted, origin = (pin.version, pin.origin) if pin else ("", "")
    if wanted and wanted != minor:
        if origin == ".python-version":
            # The project is developed (and its lock resolved) on that interpreter; running
            # it on another one is a choice to state, not a default to fall into.
            path = plan.project.python_version_path or plan.project.root / origin
            raise ConfigError(
                f"{path} pins Python {wanted}, but the base image `{plan.base_image}` has "
                f"Python {python.version} ({python.executable}).",
                hint=(
                    f"Use a base image with Python {wanted} (e.g. python:{wanted}-slim), "
                    f"change {path.name} to {minor}, or set `tool.pydeploy.python = "
                    f'"{minor}"` to build on this base anyway.'
                ),
            )
        raise ConfigError(
            f"`{origin}` asks for Python {wanted}, but the base image `{plan.base_image}` "
            f"has Python {python.version} ({python.executable}).",
            hint=(
                f"Use a base image with Python {wanted} (e.g. python:{wanted}-slim), or set "
                f"{origin} to {minor}."
            ),
        )


def _python_from_labels(labels: Mapping[str, str]) -> PythonInfo | None:
    try:
        data = json.loads(labels[LABEL_PYTHON])
        return PythonInfo(data["executable"], data["version"], data["site_packages"])
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _Recipe:
    """What a full builder image is made of (build packages on the base, whose
    interpreter and config it keeps) and the name it is committed as."""

    name: str
    packages: tuple[str, ...]
    python: PythonInfo
    base: ImageFacts


def _build_builder(engine: StageEngine, plan: BuildPlan, recipe: _Recipe, network: str) -> str:
    packages = recipe.packages
    if not packages:
        return _commit_builder(engine, plan, recipe, network, [])
    ca = plan.index.ca_bundle
    volume = APT_VOLUME_PREFIX + engine.build_id
    engine.create_volume(volume, {BUILD_LABEL: engine.build_id})
    try:
        mounts = [Mount(APT_CACHE, volume)]
        lines: list[str] = []
        argv = ["/bin/sh", "-c", _APT_DOWNLOAD]
        with engine.container(
            plan.base_image, argv, env=_apt_env(packages), mounts=mounts, network=network
        ) as box:
            if ca:
                box.put_files(RUN_DIR, _ca_file(ca))
            _check_apt(box.follow(lines.append).exit_code, lines, plan, packages)
            # Inside the block: the stopped download container keeps the volume in use,
            # so `prune` cannot take the downloads away before the install reads them.
            return _commit_builder(engine, plan, recipe, network, mounts)
    finally:
        _remove_quietly(engine, volume)


def _apt_env(packages: tuple[str, ...]) -> dict[str, str]:
    return {"DEBIAN_FRONTEND": "noninteractive", "PYDEPLOY_PACKAGES": " ".join(packages)}


def _check_apt(code: int, lines: list[str], plan: BuildPlan, packages: tuple[str, ...]) -> None:
    if code != 0:
        raise attach(
            BuildError(
                f"Installing the build packages ({' '.join(packages)}) into the builder "
                f"failed (exit {code}):\n{tail(lines, 12)}\n",
                hint=(
                    f"Fix `tool.pydeploy.build-packages` in {plan.project.pyproject}: "
                    "each entry must be a Debian package of the base image's release "
                    "(e.g. libpq-dev). The builder also needs network access to the "
                    "apt mirrors (`tool.pydeploy.network`)."
                ),
            ),
            "\n".join(lines),
        )


def _commit_builder(
    engine: StageEngine, plan: BuildPlan, recipe: _Recipe, network: str, mounts: list[Mount]
) -> str:
    """Install the downloaded packages in a fresh container (no CA, nothing put into it)
    and commit it as the builder image."""
    name, packages, python, base_info = recipe.name, recipe.packages, recipe.python, recipe.base
    lines: list[str] = []
    argv = ["/bin/sh", "-c", _APT_INSTALL]
    with engine.container(
        plan.base_image, argv, env=_apt_env(packages), mounts=mounts, network=network
    ) as box:
        _check_apt(box.follow(lines.append).exit_code, lines, plan, packages)
        labels = {
            **base_info.labels,
            LABEL_KEY: name.split(":", 1)[1],
            LABEL_BUILDER_BASE: base_info.image_id,
            LABEL_PACKAGES: " ".join(packages),
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
            CommitSettings(
                env=base_info.env or ("PATH=/usr/local/bin:/usr/bin:/bin",),
                cmd=base_info.cmd or ("/bin/sh",),
                entrypoint=base_info.entrypoint,
                workdir=base_info.workdir,
                user=base_info.user,
                labels=labels,
            ),
        )


# --- dependencies -------------------------------------------------------------------------


# How installs and sdist builds run, in pydeploy's builder and in an ejected Dockerfile.
BUILD_ENV = {
    "UV_LINK_MODE": "copy",
    "UV_COMPILE_BYTECODE": "0",
    "UV_NO_INSTALLER_METADATA": "1",
    "UV_PYTHON_DOWNLOADS": "never",
    "UV_NO_MANAGED_PYTHON": "1",
    "UV_NO_PROGRESS": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_NO_INPUT": "1",
    "SOURCE_DATE_EPOCH": FIXED_EPOCH,
    # No debug info in extensions compiled from sdists: it records the random build
    # directory (so two clean builds differed) and only bloats a runtime image.
    "CFLAGS": "-g0",
    "CXXFLAGS": "-g0",
    "PYTHONDONTWRITEBYTECODE": "1",
}


def _builder_env(plan: BuildPlan, ca: Path | None) -> tuple[dict[str, str], bytes, Masker]:
    """(the container's environment, the secrets line for its stdin, the masker)."""
    index = plan.index
    credentials = read_credentials(index, os.environ)  # the values, by the plan's names
    env = {
        "UV_CACHE_DIR": f"{CACHE_DIR}/uv",
        "PIP_CACHE_DIR": f"{CACHE_DIR}/pip",
        **BUILD_ENV,
        "PYTHONUNBUFFERED": "1",
    }
    if ca:
        env |= dict.fromkeys(CA_ENV_VARS, CA_TARGET)
    indexes = index_environment(index, credentials)
    env |= indexes.public
    secrets = json.dumps(indexes.secret, sort_keys=True).encode() + b"\n"
    return env, secrets, Masker(credentials.secrets())


def _mounts(venv_volume: str, *, venv_ro: bool) -> list[Mount]:
    return [Mount(CACHE_DIR, CACHE_VOLUME), Mount(VENV, venv_volume, read_only=venv_ro)]


def _ca_file(ca: Path | None) -> dict[str, bytes]:
    """{"ca.pem": bundle} for put_files(RUN_DIR, ...), or {} without a CA bundle. Only
    containers that are never committed receive it."""
    if ca is None:
        return {}
    try:
        return {CA_NAME: ca.read_bytes()}
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the CA bundle {ca}: {exc.strerror or exc}.",
            hint=(
                "Make it readable, or point `tool.pydeploy.index.ca-bundle` (or "
                "SSL_CERT_FILE/PIP_CERT/REQUESTS_CA_BUNDLE) at a readable PEM bundle."
            ),
        ) from exc


@contextlib.contextmanager
def _inputs_tar(inputs: DependencyInputs) -> Iterator[IO[bytes]]:
    """A temporary tar of the dependency inputs under `src/`, owned by root, modes and
    contents as on the host."""

    def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    top = SRC.strip("/")
    with tempfile.TemporaryFile() as handle:
        with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as tar:
            try:
                for name, path in input_files(inputs):
                    arcname = f"{top}/{name}" if name else top
                    tar.add(path, arcname=arcname, recursive=False, filter=owned_by_root)
            except OSError as exc:
                raise BuildError(
                    f"Cannot read a dependency input ({exc.filename}): {exc.strerror or exc}.",
                    hint="Make the project's files readable, or remove the broken path.",
                ) from exc
        handle.seek(0)
        yield handle


def _ensure_cache_volume(engine: StageEngine) -> None:
    if engine.volume_labels(CACHE_VOLUME) is None:
        engine.create_volume(CACHE_VOLUME, {LABEL_CACHE: "1"})


def _read_marker(engine: StageEngine, builder: BuilderImage, volume: str) -> dict[str, Any] | None:
    """The completion marker of a venv volume, or None when the build never finished."""
    with engine.container(
        builder.name, ["/bin/true"], mounts=[Mount(VENV, volume, read_only=True)], network="none"
    ) as box:
        return _parse_marker(box.read_file(f"{VENV}/{MARKER}"))


def _parse_marker(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        marker: dict[str, Any] = json.loads(data)
    except ValueError:
        return None
    return marker


@dataclass(frozen=True)
class _Fill:
    """What an install puts into the venv volume it claimed."""

    inputs: DependencyInputs
    key: str
    wanted: tuple[str, ...]  # the server packages
    volume: str
    previous: PreviousVenv | None = None


@dataclass(frozen=True)
class RestoredVenv:
    """A venv made elsewhere (the registry cache): its layers' tars, with image paths
    (`opt/venv/...`), and the marker its install wrote."""

    tars: tuple[Path, ...]
    marker: dict[str, Any]
    origin: str  # where from, for the progress line


@dataclass(frozen=True)
class PreviousVenv:
    """A venv volume an earlier install filled, and the builder image that filled it: its
    bytecode is reused only by an install in that same image (the same interpreter)."""

    volume: str
    builder_image_id: str


def install_dependencies(  # noqa: PLR0913 - the build's parts, and two ways to start
    engine: StageEngine,
    plan: BuildPlan,
    builder: BuilderImage,
    report: Reporting,
    previous: PreviousVenv | None = None,
    *,
    restore: Callable[[str], RestoredVenv | None] | None = None,
) -> Dependencies:
    """The venv for this dependency set, in its own volume: reused when complete,
    otherwise (re)built in a builder container: first in the base image alone (wheels
    only) when `builder` is light, then, if a build needs compilers, in the full builder.
    `previous`: the venv volume an earlier install of this builder filled, whose
    unchanged files' bytecode the install reuses (what a changed dependency set
    mostly keeps). `restore(key)`: the venv of that key made elsewhere, put into the
    volume instead of an install. `report.output` gets every tool line when
    `report.verbose`."""
    run = _Run(engine, plan, report, time.monotonic())
    inputs, key, volume = planned_venv(plan, builder)
    wanted = servers.plan_packages(plan)

    _ensure_cache_volume(engine)
    with engine.hold():  # the pins stay to the end of an enclosing hold (the build's)
        pin, marker = _reuse_or_claim(engine, builder, volume, key, report.progress)
        if marker is not None:
            _record_use(pin)
            pins = tuple(str(p) for p in marker.get("pins", []))
            run.say("install", f"cached in volume {volume}")
            full = bool(marker.get("compilers"))
            return Dependencies(key, volume, pins, inputs.source, True, builder, full)
        try:
            restored = restore(key) if restore is not None else None
            if restored is not None:
                _fill_from_layers(pin, restored, key)
                _record_use(pin)
                pins = tuple(str(p) for p in restored.marker.get("pins", []))
                run.say("install", f"restored into volume {volume} from {restored.origin}")
                full = bool(restored.marker.get("compilers"))
                return Dependencies(
                    key, volume, pins, inputs.source, True, builder, full,
                    restored_from=restored.origin,
                )  # fmt: skip
            fill = _Fill(inputs, key, wanted, volume, _complete_venv(engine, previous, volume))
            builder, transcript, scanned = _install(run, builder, fill)
        except BaseException:
            # Whatever happened (failure, Ctrl-C, cleanup() from a signal handler), the
            # half-filled volume must not survive as a cache entry. The marker check
            # would catch it anyway; removing it frees the space now.
            engine.unpin(pin)
            _remove_quietly(engine, volume)
            raise
        _record_use(pin)
    if builder.light:
        run.say("builder", "base image (no compilers needed)")
    result = transcript.result or {}
    pins = tuple(str(p) for p in result.get("pins", []))
    scan = result.get("elf_scan") if scanned else None
    return Dependencies(
        key, volume, pins, inputs.source, False, builder, not builder.light,
        scan if isinstance(scan, dict) else None,
    )  # fmt: skip


def planned_venv(plan: BuildPlan, builder: BuilderImage) -> tuple[DependencyInputs, str, str]:
    """The dependency inputs, the dependency key and the venv volume's name of this plan
    with this builder, without touching the engine."""
    # A lock read on the host judges its markers for the base image's probed Python.
    inputs = dependency_inputs(plan, builder.python.version)
    wanted = servers.plan_packages(plan)
    key = dependency_key(builder.key, inputs, wanted, index_settings(plan.index))
    return inputs, key, VENV_VOLUME_PREFIX + key[:16]


def _fill_from_layers(pin: StageBox, restored: RestoredVenv, key: str) -> None:
    """The layers' files into the claimed volume (mounted at VENV in `pin`), then the
    marker, last, as an install writes it: an interrupted fill is never used."""
    for tar in restored.tars:
        with tar.open("rb") as handle:
            pin.put_archive("/", handle)
    pin.put_files(VENV, {MARKER: _json({**restored.marker, "key": key})})


def _install(
    run: _Run, builder: BuilderImage, fill: _Fill
) -> tuple[BuilderImage, Transcript, bool]:
    """Fill the claimed volume; returns the builder that did it, its transcript, and
    whether the shared-library scan it ran can stand for the runtime image's."""
    env, secrets, masker = _builder_env(run.plan, run.plan.index.ca_bundle)
    if builder.light and fill.inputs.local_names is None:
        builder = _escalate(run, "a local package's name cannot be read without building it")
    while True:
        transcript = run.transcript(masker)
        code, scanned = _run_install(run, builder, fill, (env, secrets), transcript)
        failed = code != 0 or transcript.result is None
        reason = _light_failure(builder, transcript) if failed else None
        if not reason:
            break
        builder = _escalate(run, reason)
    _raise_on_failure(code, transcript, run.plan)
    return builder, transcript, scanned


def install_job(  # noqa: PLR0913 - the job document's parts
    inputs: DependencyInputs,
    key: str,
    wanted: tuple[str, ...],
    builder: BuilderImage,
    uv_seed: str = "",
    *,
    previous: str = "",
    elf_scan: ElfScanJob | None = None,
    uv_seed_offered: bool = False,
    architecture: str = "",
) -> InstallJob:
    """The `install` job document (the builder script's InstallJob). `uv_seed`: where the
    container finds the host's uv binary, if it got one (see uvseed); `previous`: where
    it finds a previous venv, if one is mounted."""
    return {
        # One uv binary per machine in the shared cache volume: an arm64 builder (under
        # emulation) cannot run the amd64 one.
        "uv_dir": f"{CACHE_DIR}/tools/uv-{UV_VERSION}"
        + (f"-{architecture}" if architecture not in {"", "amd64"} else ""),
        "uv_version": UV_VERSION,
        "uv_seed": uv_seed,
        "uv_seed_offered": uv_seed_offered,
        "inputs": SRC,
        "work": WORK,
        "copies": list(inputs.copies),
        **skip_lists(),
        "cwd": inputs.cwd,
        "source": inputs.source,
        "requirements": list(inputs.requirements),
        "requirement_lines": list(inputs.requirement_lines),
        "extras": list(inputs.extras),
        "groups": list(inputs.groups),
        "export": list(inputs.export),
        "server_packages": list(wanted),
        "local_names": list(inputs.local_names or ()),
        "venv": VENV,
        "key": key,
        "marker": MARKER,
        "python": builder.python.executable,
        "light": builder.light,
        "previous": previous,
        "elf_scan": elf_scan,
        "target": None,
    }


def _run_install(
    run: _Run,
    builder: BuilderImage,
    fill: _Fill,
    environment: tuple[dict[str, str], bytes],
    transcript: Transcript,
) -> tuple[int, bool]:
    """The install container in `builder`; its exit code, and whether the shared-library
    scan it ran in there stands (see _elf_scan). The host's uv (38 MB) is sent only when
    the cache volume turns out to lack uv: the first container then exits at once, and a
    second one gets it."""
    facts = run.engine.inspect_image(builder.name)
    seed = uvseed.host_binary(facts.architecture if facts else "")
    first = _Attempt(facts, None, offered=seed is not None)
    code, scanned = _install_container(run, builder, fill, environment, transcript, first)
    if code == EXIT_NEEDS_UV_SEED and seed is not None:
        again = _Attempt(facts, seed, offered=False)
        return _install_container(run, builder, fill, environment, transcript, again)
    return code, scanned


@dataclass(frozen=True)
class _Attempt:
    """One install container's share of the uv seed: the host's uv sent along (`seed`),
    or, without it, whether the script may ask for it (`offered`)."""

    facts: ImageFacts | None
    seed: Path | None
    offered: bool


def _install_container(  # noqa: PLR0913, PLR0917 - one attempt of _run_install's
    run: _Run,
    builder: BuilderImage,
    fill: _Fill,
    environment: tuple[dict[str, str], bytes],
    transcript: Transcript,
    attempt: _Attempt,
) -> tuple[int, bool]:
    env, secrets = environment
    facts, seed = attempt.facts, attempt.seed
    previous = fill.previous
    if previous is not None and previous.builder_image_id != builder.image_id:
        previous = None  # another interpreter: its bytecode is not this one's
    job = install_job(
        fill.inputs, fill.key, fill.wanted, builder, uvseed.SEED if seed is not None else "",
        previous=PREVIOUS_VENV if previous else "",
        elf_scan=_elf_scan(run.plan, builder, facts),
        uv_seed_offered=attempt.offered,
        architecture=facts.architecture if facts else "",
    )  # fmt: skip
    mounts = _mounts(fill.volume, venv_ro=False)
    if previous is not None:
        mounts.append(Mount(PREVIOUS_VENV, previous.volume, read_only=True))
    ca = run.plan.index.ca_bundle
    files = {"builder_script.py": _script(), "job.json": _json(job), **_ca_file(ca)}
    if job["elf_scan"] is not None:
        files["elfdeps.py"] = payload.source("elfdeps.py")
    with (
        _inputs_tar(fill.inputs) as tar,
        run.engine.container(
            builder.name,
            [builder.python.executable, SCRIPT, "install", JOB],
            env=env,
            mounts=mounts,
            network=run.engine.network_mode(run.plan.network),
            stdin=secrets,
        ) as box,
    ):
        box.put_files(RUN_DIR, files)
        if seed is not None:
            box.put_files(uvseed.SEED_DIR, {"uv": seed.read_bytes()}, mode=0o755)
        box.put_archive("/", tar)
        code = box.follow(transcript).exit_code
        scan = job["elf_scan"]
        trusted = scan is not None and code == 0
        return code, trusted and _loader_untouched(
            box.changes(), scan["library_path"] if scan else ""
        )


# What an install container writes outside its volumes: none of it is where the dynamic
# loader looks (the container is the base image, whose libraries the runtime image has).
_INSTALL_WRITES = (RUN_DIR, SRC, "/build", "/tmp", "/root", VENV, CACHE_DIR)  # noqa: S108


def _elf_scan(
    plan: BuildPlan, builder: BuilderImage, facts: ImageFacts | None
) -> ElfScanJob | None:
    """The shared-library scan for the install to run on the finished venv, saving the
    scan's own container: only when the builder is the base image itself and the
    runtime image adds no system packages to it (then the two filesystems agree)."""
    if builder.name != plan.base_image or plan.runtime_packages or facts is None:
        return None
    return {"script": f"{RUN_DIR}/elfdeps.py", "library_path": library_path(plan, facts.env)}


def _loader_untouched(changes: Iterable[tuple[str, str]], library_path: str = "") -> bool:
    """Whether a container's changes (`docker diff`) stay where the install writes, and
    out of the LD_LIBRARY_PATH directories: a build backend that put a library under
    /usr/lib would make the scan find what the runtime image lacks."""
    searched = [d.rstrip("/") for d in library_path.split(":") if d.strip("/")]

    def below(path: str, tops: Iterable[str]) -> bool:
        return any(path == top or path.startswith(top + "/") for top in tops)

    for path, _kind in changes:
        above = any(top.startswith(path.rstrip("/") + "/") for top in _INSTALL_WRITES)
        if below(path, searched) or not (below(path, _INSTALL_WRITES) or above):
            return False
    return True


def library_path(plan: BuildPlan, base_env: Iterable[str]) -> str:
    """The runtime image's LD_LIBRARY_PATH: the project's `env` over the base image's."""
    own = dict(plan.env).get("LD_LIBRARY_PATH")
    if own is not None:
        return own
    for item in base_env:
        name, _, value = item.partition("=")
        if name == "LD_LIBRARY_PATH":
            return value
    return ""


def _complete_venv(
    engine: StageEngine, previous: PreviousVenv | None, filling: str
) -> PreviousVenv | None:
    """`previous` when it is another venv volume that still exists (its marker, that its
    install completed, is checked in the container), else None."""
    volume = previous.volume if previous else ""
    if not volume or volume == filling or not volume.startswith(VENV_VOLUME_PREFIX):
        return None
    labels = engine.volume_labels(volume)
    return previous if labels and labels.get(LABEL_VENV) == "1" else None


def _light_failure(builder: BuilderImage, transcript: Transcript) -> str | None:
    """Why a failed light job must be redone in the full builder (None: not light, or
    the failure would happen there too)."""
    if not builder.light:
        return None
    return needs_full_builder(transcript.failed_step, transcript.text, transcript.compilers)


def _escalate(run: _Run, why: str) -> BuilderImage:
    full = ensure_full_builder(run.engine, run.plan, run.report.progress)
    run.engine.pin(full.name)  # `prune --all` must not take it between this build's containers
    run.say("builder", f"{describe(full)}: {why}")
    return full


def _reuse_or_claim(
    engine: StageEngine, builder: BuilderImage, volume: str, key: str, progress: Progress
) -> tuple[StageBox, dict[str, Any] | None]:
    """(this build's pin on the volume, the volume's marker when it is complete). No
    marker: this build owns the empty volume and fills it. A volume another live build
    is filling is waited for; one whose filler is dead, or left without a marker (an
    interrupted build), is removed and claimed afresh."""
    for _attempt in range(8):
        labels = engine.volume_labels(volume)
        if labels is None:
            # Creating an existing volume returns it unchanged: the owner label tells
            # whether this build won a race with a concurrent one.
            engine.create_volume(volume, _claim_labels(engine, key))
            labels = engine.volume_labels(volume) or {}
            if labels.get(LABEL_OWNER) == engine.build_id:
                pin = _pin_volume(engine, builder, volume, labels)
                if pin is not None:
                    return pin, None
                continue
        # The common case, a complete volume: its marker is read through this build's
        # pin, one container where reading first and pinning after took two (~0.3 s).
        pin = _pin_volume(engine, builder, volume, labels)
        if pin is not None:
            marker = _parse_marker(pin.read_file(f"{VENV}/{MARKER}"))
            if marker is not None and marker.get("key") == key:
                return pin, marker
            engine.unpin(pin)
        marker = _wait_for_volume(engine, builder, volume, labels, progress)
        if marker is not None and marker.get("key") == key:
            pin = _pin_volume(engine, builder, volume, labels)
            if pin is not None:
                return pin, marker
            continue
        _take_over(engine, volume, labels)
    raise BuildError(f"Could not claim the dependency volume {volume}: it keeps reappearing.")


def _claim_labels(engine: StageEngine, key: str) -> dict[str, str]:
    return {
        LABEL_VENV_KEY: key,
        LABEL_OWNER: engine.build_id,
        LABEL_OWNER_PROCESS: engine.owner.label(),
        LABEL_CLAIMED: str(int(time.time())),
        LABEL_VENV: "1",
    }


def _pin_volume(
    engine: StageEngine, builder: BuilderImage, volume: str, labels: dict[str, str]
) -> StageBox | None:
    """Pin the volume (and the cache volume and builder image) for this build. None when
    the volume was removed just before (`prune`, a take-over): mounting a missing volume
    creates an empty unlabelled one, which is removed again for the caller to retry."""
    pin = engine.pin(builder.name, _mounts(volume, venv_ro=False))
    held = engine.volume_labels(volume) or {}
    if held.get(LABEL_VENV_KEY) == labels.get(LABEL_VENV_KEY) and held.get(
        LABEL_OWNER
    ) == labels.get(LABEL_OWNER):
        return pin
    engine.unpin(pin)
    if not held:
        engine.remove_unused_volume(volume)
    return None


def _wait_for_volume(
    engine: StageEngine,
    builder: BuilderImage,
    volume: str,
    labels: dict[str, str],
    progress: Progress,
) -> dict[str, Any] | None:
    """The volume's marker once its filler finishes; None when the filler is dead, or
    the claim changed meanwhile (the caller looks again)."""
    build = labels.get(LABEL_OWNER)
    owner = owners.Owner.parse(labels.get(LABEL_OWNER_PROCESS))
    who = f"build {build}" + (f" ({owner.describe(engine.owner)})" if owner else "")
    started = last_sign = time.monotonic()
    next_note = 0.0
    while True:
        if engine.volume_labels(volume) != labels:
            return None
        marker = _read_marker(engine, builder, volume)
        if marker or build is None or build == engine.build_id:
            return marker
        # A dead process on this host is known at once. Otherwise the filler shows it is
        # at work by a running container (its pin spans the fill, and dies with it).
        alive = owner is None or owners.is_alive(owner, engine.owner) is not False
        if alive and engine.containers_with_label(build, running_only=True):
            last_sign = time.monotonic()
        alive = alive and time.monotonic() - last_sign < CLAIM_GRACE_SECONDS
        waited = time.monotonic() - started
        if not alive:
            if waited > 1.0:
                progress("install", waited, f"{who} is gone; taking over {volume}")
            return None
        if waited >= next_note:
            progress("install", waited, f"waiting for {who} holding {volume}")
            next_note += 60.0
        if waited > OWNER_WAIT_SECONDS:
            raise BuildError(
                f"Another pydeploy build ({who}) has been filling {volume} for over "
                f"{OWNER_WAIT_SECONDS // 60} minutes.",
                hint=(
                    "Wait for it to finish and build again, or stop it (its containers "
                    f"carry the label {BUILD_LABEL}={build})."
                ),
            )
        time.sleep(1.0)


def _take_over(engine: StageEngine, volume: str, judged: dict[str, str]) -> None:
    """Remove a venv volume whose filler is dead (or that has no marker and no filler),
    with the dead filler's containers; unless the claim changed since it was judged."""
    if engine.volume_labels(volume) != judged:
        return
    build = judged.get(LABEL_OWNER)
    engine.reap_orphans()
    if build and build != engine.build_id:
        for ident in engine.containers_with_label(build):
            engine.remove(ident)  # another host's dead build: only stopped ones are left
    if not engine.remove_unused_volume(volume):
        time.sleep(1.0)  # a container still uses it; the caller looks again


def _record_use(pin: StageBox) -> None:
    """Write when this build used the venv into the volume, for `prune` on any host."""
    with contextlib.suppress(PydeployError):
        pin.put_files(VENV, {USED: _json({"time": int(time.time())})})


def _raise_on_failure(code: int, transcript: Transcript, plan: BuildPlan) -> dict[str, Any]:
    if code != 0 or transcript.result is None:
        error = explain_failure(transcript.failed_step, transcript.text, plan)
        raise attach(error, transcript.text)
    return transcript.result


def _remove_quietly(engine: StageEngine, volume: str) -> None:
    try:
        engine.remove_volume(volume)
    except PydeployError:
        return  # still in use or engine gone: the missing marker protects the next build


def _json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, indent=1).encode()


def _venv_reader(
    engine: StageEngine, builder: BuilderImage, deps: Dependencies
) -> contextlib.AbstractContextManager[StageBox]:
    """A stopped container with the venv volume mounted read-only, to read it from."""
    return engine.container(
        builder.name,
        ["/bin/true"],
        mounts=[Mount(VENV, deps.volume, read_only=True)],
        network="none",
    )


def export_venv(engine: StageEngine, builder: BuilderImage, deps: Dependencies, dest: Path) -> Path:
    """A tar of the venv (entries `venv/...`), without pydeploy's own records in it."""
    with _venv_reader(engine, builder, deps) as box:
        _copy_tar(
            box.get_archive(VENV), dest, lambda name: name not in {f"venv/{MARKER}", f"venv/{USED}"}
        )
    return dest


def venv_entries(
    engine: StageEngine, builder: BuilderImage, deps: Dependencies, spool_dir: Path
) -> list[FileEntry]:
    """The venv's entries at their image paths, read straight off the engine's archive
    stream (no tar copy on disk first), without pydeploy's own records. Large files are
    spooled into `spool_dir`, which must outlive the entries."""
    records = {f"{VENV.lstrip('/')}/{MARKER}", f"{VENV.lstrip('/')}/{USED}"}
    with _venv_reader(engine, builder, deps) as box:
        entries = entries_from_tar(
            box.get_archive(VENV),
            strip_prefix="venv",
            dest_prefix=VENV.lstrip("/"),
            spool_dir=spool_dir,
        )
    return [entry for entry in entries if entry.path not in records]


# --- the project's own wheel --------------------------------------------------------------


def build_project(
    engine: StageEngine, plan: BuildPlan, deps: Dependencies, app_tar: Path, report: Reporting
) -> Path:
    """Build the project's own wheel (its build backend runs in the builder) and install
    it, without dependencies, into a separate tree: a tar of it, entries relative to
    site-packages. Runs in the builder that installed `deps` (the full one if they needed
    compilers), and moves to the full builder if the project's build needs compilers.
    The app itself is checked later, in the runtime image (pydeploy.builder.appcheck)."""
    with engine.hold():  # the pins stay to the end of an enclosing hold (the build's)
        return _build_project(_Run(engine, plan, report, time.monotonic()), deps, app_tar)


def _build_project(run: _Run, deps: Dependencies, app_tar: Path) -> Path:
    engine, plan = run.engine, run.plan
    chosen = deps.builder
    if chosen.light and deps.needs_compilers:
        chosen = ensure_full_builder(engine, plan, run.report.progress)
        engine.pin(chosen.name)
    ca = plan.index.ca_bundle
    env, secrets, masker = _builder_env(plan, ca)
    site_tar = app_tar.with_name(f"{app_tar.stem}.project-site.tar")
    while True:
        transcript = run.transcript(masker)
        with engine.container(
            chosen.name,
            [chosen.python.executable, SCRIPT, "project", JOB],
            env=env,
            mounts=_mounts(deps.volume, venv_ro=True),
            network=engine.network_mode(plan.network),
            stdin=secrets,
        ) as box:
            job = project_job(chosen)
            box.put_files(
                RUN_DIR, {"builder_script.py": _script(), "job.json": _json(job), **_ca_file(ca)}
            )
            with app_tar.open("rb") as handle:
                box.put_archive("/", handle)
            code = box.follow(transcript).exit_code
            failed = code != 0 or transcript.result is None
            why = _light_failure(chosen, transcript) if failed else None
            if why:
                chosen = _escalate(run, f"the project's {why}")
                continue
            result = cast("ProjectResult", _raise_on_failure(code, transcript, plan))
            _copy_tar(box.get_archive(str(result["project_site"])), site_tar, _site_entry)
        return site_tar


def project_job(builder: BuilderImage) -> ProjectJob:
    """The `project` job document (the builder script's ProjectJob)."""
    return {
        "uv": f"{CACHE_DIR}/tools/uv-{UV_VERSION}/bin/uv",
        "python": builder.python.executable,
        "venv": VENV,
        "site_packages": builder.python.site_packages,
        "app_dir": "/app",
        **skip_lists(),
        "light": builder.light,
    }


def _site_entry(name: str) -> str | None:
    """Entries of the project-site tree, relative to it."""
    prefix = "project-site/"
    return name[len(prefix) :] if name.startswith(prefix) else None


# --- tar plumbing ---------------------------------------------------------------------------


def _copy_tar(
    chunks: Iterator[bytes], dest: Path, rename: Callable[[str], str | bool | None]
) -> None:
    """Stream a tar from the engine to `dest`, keeping entries for which `rename` returns
    True (same name) or a new name."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    stream = as_reader(chunks)
    with (
        atomic.replacing(dest) as partial,
        tarfile.open(fileobj=stream, mode="r|") as src,
        tarfile.open(fileobj=partial, mode="w", format=tarfile.PAX_FORMAT) as out,
    ):
        for member in src:
            verdict = rename(member.name)
            if not verdict:
                continue
            if isinstance(verdict, str):
                member.name = verdict
            handle = src.extractfile(member) if member.isfile() else None
            out.addfile(member, handle)
