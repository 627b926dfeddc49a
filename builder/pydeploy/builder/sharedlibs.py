"""Shared libraries: what the venv's compiled files need that the runtime image lacks.

After the dependencies are installed, payload/elfdeps.py reads every ELF file of the venv
in a container of the base image (plus the user's system-packages layer), with the venv
mounted read-only and no network, and resolves each DT_NEEDED as that image's loader
will. A soname it cannot find is looked up in the builder, which has the -dev packages a
build linked against and so their runtime libraries: the Debian package that ships the
file there is the one the runtime image needs (libpq.so.5 -> libpq5).

`runtime-packages` always win (a library they provide is never missing); the packages
found here are added to the system layer unless `auto-runtime-packages = false`; a
library no builder package provides fails the build, naming the key to set.

The check's answer is cached by what decides it (the dependency key, which includes the
builder's, the base image and the runtime packages): a no-change rebuild runs nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydeploy import payload
from pydeploy.builder.engine import StageEngine
from pydeploy.builder.stage import Dependencies, ensure_full_builder, library_path
from pydeploy.builder.transcript import protocol_result, tail
from pydeploy.cachekeys import INDEX_SHARED_LIBS, SHARED_LIBS_RECIPE
from pydeploy.engine.types import Mount
from pydeploy.errors import BuildError
from pydeploy.oci.blobs import BlobStore
from pydeploy.plan.planner import VENV, BuildPlan
from pydeploy.progress import Progress

RUN_DIR = "/run/pydeploy"
SCRIPT = f"{RUN_DIR}/elfdeps.py"
JOB = f"{RUN_DIR}/job.json"
_SITE = re.compile(r"^lib/python[0-9.]+/site-packages/")


@dataclass(frozen=True)
class MissingLibrary:
    """A soname the runtime image's loader cannot find."""

    soname: str
    needed_by: tuple[str, ...]  # ELF files that need it, relative to the venv
    package: str | None = None  # the builder's Debian package that ships it
    builder_path: str | None = None  # where the builder's loader finds it

    def to_doc(self) -> dict[str, Any]:
        return {
            "soname": self.soname,
            "needed_by": list(self.needed_by),
            "package": self.package,
            "builder_path": self.builder_path,
        }

    @classmethod
    def from_doc(cls, doc: Any) -> MissingLibrary:
        return cls(
            str(doc["soname"]),
            tuple(str(p) for p in doc["needed_by"]),
            doc.get("package"),
            doc.get("builder_path"),
        )


@dataclass(frozen=True)
class LibraryCheck:
    """What the scan found: how many ELF files it read, what they miss."""

    files: int
    missing: tuple[MissingLibrary, ...]
    seconds: float = 0.0  # the scan's own time inside its container
    cached: bool = False

    def to_doc(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "missing": [m.to_doc() for m in self.missing],
            "seconds": self.seconds,
        }

    @classmethod
    def from_doc(cls, doc: Any) -> LibraryCheck | None:
        try:
            missing = tuple(MissingLibrary.from_doc(m) for m in doc["missing"])
            return cls(int(doc["files"]), missing, float(doc["seconds"]), cached=True)
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class RuntimePackages:
    """The settled runtime packages: the user's, and those added for missing libraries."""

    configured: tuple[str, ...]
    automatic: tuple[str, ...] = ()
    libraries: tuple[MissingLibrary, ...] = ()  # what the automatic packages provide

    @property
    def packages(self) -> tuple[str, ...]:
        """What the system layer installs: sorted, each once."""
        return tuple(sorted({*self.configured, *self.automatic}))

    def to_json(self) -> dict[str, Any]:
        return {
            "configured": list(self.configured),
            "automatic": list(self.automatic),
            "libraries": [
                {"soname": m.soname, "package": m.package, "needed_by": list(m.needed_by)}
                for m in self.libraries
            ],
        }


def short(path: str) -> str:
    """A venv-relative path as the progress line shows it (relative to site-packages)."""
    return _SITE.sub("", path)


def settle(plan: BuildPlan, check: LibraryCheck) -> RuntimePackages:
    """The runtime packages for this build, or the BuildError that names what to set."""
    configured = plan.runtime_packages
    if not check.missing:
        return RuntimePackages(configured)
    unknown = [m for m in check.missing if m.package is None]
    if unknown:
        raise _unknown(plan, unknown)
    if not plan.auto_runtime_packages:
        raise _not_added(plan, check.missing)
    added = tuple(sorted({m.package for m in check.missing if m.package} - set(configured)))
    return RuntimePackages(configured, added, check.missing)


def _where(missing: MissingLibrary) -> str:
    first, more = missing.needed_by[0], len(missing.needed_by) - 1
    return f"{missing.soname}, which {first} needs" + (
        f" (and {more} more file{'s' if more > 1 else ''})" if more else ""
    )


def _unknown(plan: BuildPlan, unknown: list[MissingLibrary]) -> BuildError:
    names = " ".join(m.soname for m in unknown)
    lines = []
    for m in unknown:
        why = (
            f"the builder has it at {m.builder_path}, which no Debian package owns"
            if m.builder_path
            else "the builder lacks it too"
        )
        lines.append(f"{_where(m)} in the venv: {why}")
    return BuildError(
        "The runtime image's loader cannot find " + "; ".join(lines) + ".",
        hint=(
            f"Add the Debian package that provides {names} to `tool.pydeploy.runtime-packages` "
            f"in {plan.project.pyproject} (`apt-file search {unknown[0].soname}` names it), "
            "or add its -dev package to `tool.pydeploy.build-packages`, and pydeploy adds "
            "the runtime package itself."
        ),
    )


def _not_added(plan: BuildPlan, missing: Iterable[MissingLibrary]) -> BuildError:
    found = list(missing)
    packages = sorted({m.package for m in found if m.package})
    lines = [f"{_where(m)} in the venv (the builder has it from {m.package})" for m in found]
    listed = ", ".join(f'"{p}"' for p in packages)
    return BuildError(
        "The runtime image's loader cannot find " + "; ".join(lines) + ", and "
        "`tool.pydeploy.auto-runtime-packages` is false.",
        hint=(
            f"Add {listed} to `tool.pydeploy.runtime-packages` in {plan.project.pyproject}, "
            "or remove `auto-runtime-packages = false` to have them added."
        ),
    )


def describe(check: LibraryCheck, settled: RuntimePackages) -> str:
    """The build's one line about shared libraries."""
    seen = "cached" if check.cached else f"{check.files} ELF files in {check.seconds * 1e3:.0f} ms"
    if settled.automatic:
        reasons = ", ".join(f"{short(m.needed_by[0])} needs {m.soname}" for m in settled.libraries)
        return f"added runtime packages {' '.join(settled.automatic)} (for {reasons}; {seen})"
    return f"{seen}: every library found" if check.files else f"{seen}: no compiled files"


# --- running the scan -------------------------------------------------------------------


def check_key(plan: BuildPlan, deps: Dependencies, base_id: str, library_path: str) -> str:
    text = json.dumps(
        [SHARED_LIBS_RECIPE, deps.key, base_id, sorted(set(plan.runtime_packages)), library_path]
    )
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ScanInputs:
    """What the scan runs against: the base image (by name and ID), its environment, and
    the tar of the user's system-packages layer (made on demand, only when the answer is
    not cached; None without runtime packages)."""

    base_image: str
    base_id: str
    base_env: tuple[str, ...]
    system_tar: Callable[[], Path | None]


@dataclass(frozen=True)
class LibraryRun:
    """One library check under way: the build's engine and plan, the venv, whom it tells."""

    engine: StageEngine
    plan: BuildPlan
    deps: Dependencies
    progress: Progress
    started: float = field(default_factory=time.monotonic)


def check_libraries(run: LibraryRun, store: BlobStore, inputs: ScanInputs) -> LibraryCheck:
    """The venv's missing libraries, from the cache or from the scan (and the builder)."""
    path = library_path(run.plan, inputs.base_env)
    key = check_key(run.plan, run.deps, inputs.base_id, path)
    cached = LibraryCheck.from_doc(store.read_index(INDEX_SHARED_LIBS, key))
    if cached is not None:
        return cached
    found = _scanned_at_install(run, inputs, path)
    if found is None:
        job = {"venv": VENV, "library_path": path}
        found = _run(run, inputs.base_image, "scan", job, inputs.system_tar())
    missing = [
        MissingLibrary(str(m["soname"]), tuple(m["needed_by"])) for m in found.get("missing", [])
    ]
    if missing:
        missing = _from_builder(run, missing)
    check = LibraryCheck(int(found.get("files", 0)), tuple(missing), float(found["seconds"]))
    store.write_index(INDEX_SHARED_LIBS, key, check.to_doc())
    return check


def _scanned_at_install(run: LibraryRun, inputs: ScanInputs, path: str) -> dict[str, Any] | None:
    """The scan the install ran in its own container, when that container was this
    scan's: the base image itself, no runtime packages, the same LD_LIBRARY_PATH."""
    found = run.deps.elf_scan
    if found is None or run.plan.runtime_packages or found.get("library_path") != path:
        return None
    if run.deps.builder.name != inputs.base_image or "seconds" not in found:
        return None
    return found


def _from_builder(run: LibraryRun, missing: list[MissingLibrary]) -> list[MissingLibrary]:
    """The builder's package for each missing soname. The light builder is the base
    image itself, so the full builder (with the build packages) answers then."""
    builder = run.deps.builder
    if builder.light:
        if not run.plan.build_packages:
            return missing
        builder = ensure_full_builder(run.engine, run.plan, run.progress)
        run.engine.pin(builder.name)  # kept to the end of the build's hold, as _escalate does
    names = sorted(m.soname for m in missing)
    run.progress("shared libraries", time.monotonic() - run.started,
                 f"looking up {' '.join(names)} in the builder")  # fmt: skip
    answer = _run(run, builder.name, "which", {"sonames": names}, None)
    libraries = answer.get("libraries", {})
    out = []
    for m in missing:
        known = libraries.get(m.soname) or {}
        out.append(MissingLibrary(m.soname, m.needed_by, known.get("package"), known.get("path")))
    return out


def _run(
    run: LibraryRun, image: str, command: str, job: dict[str, Any], system_tar: Path | None
) -> dict[str, Any]:
    """One elfdeps.py command in a container of `image`: the venv read-only, no network."""
    lines: list[str] = []
    with run.engine.container(
        image,
        [run.deps.builder.python.executable, SCRIPT, command, JOB],
        mounts=[Mount(VENV, run.deps.volume, read_only=True)],
        network="none",
    ) as box:
        if system_tar is not None:
            with system_tar.open("rb") as handle:
                box.put_archive("/", handle)
        box.put_files(
            RUN_DIR,
            {"elfdeps.py": payload.source("elfdeps.py"), "job.json": json.dumps(job).encode()},
        )
        code = box.follow(lines.append).exit_code
    result = protocol_result("\n".join(lines))
    if code != 0 or result is None:
        raise BuildError(
            f"Checking the venv's shared libraries ({command}) failed in {image} "
            f"(exit {code}): {tail(lines, 8)}",
            hint="The check runs the base image's python3 over the venv: a base image whose "
            "python3 cannot run this cannot run the app either.",
        )
    return result
