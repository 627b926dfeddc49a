"""`pydeploy build` with the dependencies installed on this host: the build without an
engine, and the build for platforms other than the engine's (multi-platform images).

plan -> per platform: base (registry, OCI layout or docker-archive; pydeploy.base) ->
venv installed here for that platform (builder.hostinstall) -> layers -> one app check
-> final images (-> an OCI image index for several platforms) -> outputs.

The app, user, writable and launcher layers are the same bytes on every platform (their
digests are shared); the dependency and no-setuid layers are each platform's own. The
check runs once, where it can run honestly: in the engine for the platform it runs
natively, else with a host interpreter of the image's Python X.Y when the platform is
this host's, else not at all (reported as skipped, with the reason). Its answer (the
interface and what one worker costs) settles one launcher for every platform.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import platform as host_machine
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from pydeploy import build as engine_build
from pydeploy.base.platforms import Platform, host_platform
from pydeploy.base.source import FetchedBase, fetch_base, parse_base_source
from pydeploy.builder import appcheck, hostinstall
from pydeploy.builder import stage as wheels
from pydeploy.builder.transcript import Reporting
from pydeploy.cache import prune as cachegc
from pydeploy.cache import records
from pydeploy.cache.remote import RegistryCache
from pydeploy.cachedir import cache_root
from pydeploy.cachekeys import (
    BASE_REPOSITORY,
    DEPENDENCY_LAYERS_RECIPE,
    HOST_CHECK_RECIPE,
    INDEX_APP_CHECK,
    INDEX_HOST_NEEDS_BUILDER,
    INDEX_PROJECT_LAYER,
    INDEX_VENV_LAYERS,
    PROJECT_RECIPE,
)
from pydeploy.engine.client import Engine
from pydeploy.errors import BuildError, ConfigError
from pydeploy.layers import assemble, dependencies
from pydeploy.oci.blobs import BlobStore
from pydeploy.oci.entries import FileEntry, entries_from_dir
from pydeploy.oci.image import Image, assemble_image
from pydeploy.oci.index import ImageIndex
from pydeploy.oci.layer import Layer, open_uncompressed
from pydeploy.plan import references, servers
from pydeploy.plan.appfiles import app_files
from pydeploy.plan.memory import describe as describe_memory
from pydeploy.plan.planner import VENV, BuildPlan
from pydeploy.progress import Progress
from pydeploy.publish import daemon, index_outputs
from pydeploy.publish import outputs as publish


@dataclass(frozen=True)
class _Platformed:
    """One platform's part of the build, up to the launcher."""

    platform: Platform
    fetched: FetchedBase
    venv: hostinstall.HostVenv
    below_launcher: list[Layer]


@dataclass
class IndexResult:
    """A multi-platform build: each platform's result and the index that names them."""

    results: list[engine_build.BuildResult]
    index: ImageIndex
    tags: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)
    pushed: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        first = self.results[0]
        return {
            "project": first.plan.project.name,
            "index_digest": self.index.digest,
            "tags": list(self.tags),
            "pushed": self.pushed,
            "platforms": [result.to_json() for result in self.results],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def build_on_host(
    plan: BuildPlan,
    options: engine_build.BuildOptions,
    progress: Progress,
    *,
    platforms: tuple[Platform, ...],
    engine: Engine | None,
) -> engine_build.BuildResult | IndexResult:
    """The build of `platforms` (one result, or an index for several); `engine` (or None)
    runs only the app check of a platform it runs natively and the `docker` output."""
    timings: dict[str, float] = {}
    clock = engine_build.Clock(progress, timings)
    root = cache_root(options.cache_dir)
    store = BlobStore(root / "blobs")
    for problem in _refusals(plan, platforms, options):
        raise problem
    remote = engine_build.registry_cache(
        plan, options, store, functools.partial(clock.sub, "cache")
    )
    waiting = "waiting for `pydeploy prune` to finish with the host cache"
    with (
        cachegc.lease(root, lambda: clock.sub("cache", waiting)),
        tempfile.TemporaryDirectory(prefix="pydeploy-", dir=engine_build.scratch_dir(store)) as tmp,
        contextlib.ExitStack() as kept,
    ):
        scratch = Path(tmp)
        selected = app_files(plan, store=store)
        for warning in [*selected.warnings, *engine_build.hidden_by_mounts(plan, selected.entries)]:
            clock.sub("warning", warning)
        app_layer = assemble.layer(store, selected.entries, "app")
        writable = engine_build.writable_layer(store, plan)
        # Each platform's base and install are mostly waiting (registry, index, uv):
        # side by side, one thread each.
        with ThreadPoolExecutor(max_workers=len(platforms), thread_name_prefix="pydeploy") as pool:
            parts = list(
                pool.map(
                    lambda p: _platform_part(
                        plan,
                        store,
                        clock,
                        (app_layer, writable, selected.entries),
                        (p, options, root, engine),
                        remote,
                    ),
                    platforms,
                )
            )
        check = _check(plan, store, parts, (engine, clock, scratch, kept))
        interface, memory = check.interface, check.memory
        server = servers.resolve(plan.server, interface)
        found = f"{plan.app} is {interface.upper()}; server {server}; {describe_memory(memory)}"
        if check.where == "host":
            found += f"; ran on this host ({check.reason})"
        if check.status == "skipped":
            found = f"skipped ({check.reason}): {found}"
        clock.step("app check", found)
        results = []
        for part in parts:
            final_parts = engine_build.FinalParts(
                part.fetched.base, part.fetched.manifest_digest or None, part.below_launcher
            )
            image = engine_build.final_image(plan, store, final_parts, (interface, memory), True)
            results.append(_result(plan, part, image, check, timings))
            clock.step(
                "image", f"{part.platform}: {image.image_id[:19]}, manifest "
                f"{(image.manifest_digest or '')[:19]}",
            )  # fmt: skip
        if len(results) == 1:
            _publish(results[0], options, (engine, remote), scratch, store, clock)
            results[0].registry_cache = engine_build.save_records(remote, clock)
            return results[0]
        index = ImageIndex(store, tuple(result.image for result in results))
        clock.step("index", f"{index.digest[:19]}: {', '.join(str(p) for p in platforms)}")
        outcome = IndexResult(results, index, plan.tags, timings)
        # An index's push has no way to fetch a blob mid-way: what a restore left in the
        # registry is downloaded first (a single image's push fetches only on need).
        remote.fetch_missing([la.digest for r in results for la in r.image.layers])
        for output in options.outputs:
            report = functools.partial(clock.sub, index_outputs.step(output))
            done = index_outputs.publish_index(output, index, plan.tags, root, report)
            outcome.pushed.update(done.pushed)
            clock.step(index_outputs.step(output), done.detail)
        engine_build.save_records(remote, clock)
        return outcome


def _refusals(
    plan: BuildPlan, platforms: tuple[Platform, ...], options: engine_build.BuildOptions
) -> Iterator[ConfigError]:
    """What a build of its dependencies on this host cannot do (each needs a container)."""
    pyproject = plan.project.pyproject
    how = (
        "runs in a container of the image, and a build whose dependencies are installed on "
        "this host (no engine, several or foreign platforms, a base read from a file) runs "
        "none for it"
    )
    if plan.runtime_packages:
        yield ConfigError(
            f"`tool.pydeploy.runtime-packages` in {pyproject} installs Debian packages with "
            f"apt, which {how}.",
            hint="Build one platform where a Docker or Podman engine answers (local or "
            "DOCKER_HOST), or use a base image that has those packages already.",
        )
    if plan.build_commands:
        yield ConfigError(
            f"`tool.pydeploy.build-commands` in {pyproject}: a build command {how}.",
            hint="Build one platform where a Docker or Podman engine answers, or run the "
            "commands before `pydeploy build` and ship their output with the app's files.",
        )
    if len(platforms) > 1:
        for output in options.outputs:
            if output.kind in {"docker", "docker-archive"}:
                yield ConfigError(
                    f"--output {output}: an engine and a docker-archive hold one platform's "
                    f"image per name, and this build makes {len(platforms)} "
                    f"({', '.join(str(p) for p in platforms)}).",
                    hint="Push them (--push) or write an OCI layout (--output oci:DIR), which "
                    "hold the image index; or build one --platform for the engine.",
                )


def _platform_part(  # noqa: PLR0913, PLR0917 - the build's parts, one platform's
    plan: BuildPlan,
    store: BlobStore,
    clock: engine_build.Clock,
    shared: tuple[Layer, list[Layer], list[FileEntry]],
    where: tuple[Platform, engine_build.BuildOptions, Path, Engine | None],
    remote: RegistryCache,
) -> _Platformed:
    platform, options, root, engine = where
    app_layer, writable, app_entries = shared
    source = parse_base_source(plan.base_image)
    fetched = fetch_base(source, platform, store, progress=functools.partial(clock.sub, "base"))
    facts = fetched.facts
    assemble.check_user_id(plan, facts.passwd, facts.group)
    wheels.check_python(plan, facts.python)
    clock.step(
        "base image", f"{platform}: {source}@{fetched.manifest_digest[:19] or '(archive)'} (Python "
        f"{facts.python.version}, {facts.libc[0]} {facts.libc[1]})",
    )  # fmt: skip
    target = hostinstall.Target(facts.python, platform.machine(), facts.libc)

    def progress(step: str, _elapsed: float, detail: str | None) -> None:
        clock.sub(step, f"{platform}: {detail}" if detail else str(platform))

    report = Reporting(progress, options.verbose, options.output)
    # A dependency set this host could not install (no wheel for the target) goes to a
    # builder container at once on the next build, without another 1-3 s attempt here.
    planned = hostinstall.planned_venv(plan, target, root).key
    engine_can = engine is not None and _runs(engine, platform)
    known = store.read_index(INDEX_HOST_NEEDS_BUILDER, planned)

    def in_builder(why: str) -> hostinstall.HostVenv:
        what = why.split(":", maxsplit=1)[0]
        clock.sub("dependencies", f"{platform}: {what}; a builder installs them")
        assert engine is not None  # noqa: S101 - engine_can said so
        return _install_in_engine(plan, store, (engine, fetched, platform), report, root)

    if engine_can and isinstance(known, dict) and isinstance(known.get("why"), str):
        venv = in_builder(known["why"])
    else:
        try:
            venv = _left_in_registry(plan, (target, root), remote, options) or (
                hostinstall.install_on_host(
                    plan, target, root, report, functools.partial(_restored_venv, store, remote)
                )
            )
        except hostinstall.NeedsBuilderError as exc:
            if not engine_can:
                raise
            store.write_index(INDEX_HOST_NEEDS_BUILDER, planned, {"why": exc.message})
            venv = in_builder(exc.message)
    how = "cached" if venv.cached else "installed"
    how += " in a builder container" if venv.layers is not None else ""
    how = "restored from the registry cache" if venv.restored else how
    how += " (layers left there: only pushed)" if venv.restored and venv.layers else ""
    clock.step(
        "dependencies",
        f"{platform}: {how}, {len(venv.pins)} packages"
        + ("" if venv.compiled else " (no bytecode: no matching Python on this host)"),
    )
    base = fetched.base
    setuid = engine_build.cached_setuid_layer(store, plan, base.image_id)
    if setuid is None:
        scans = assemble.stored_layer_scans(store, base)
        setuid = engine_build.setuid_layer(store, plan, base.image_id, scans)
    if plan.install_project:
        app_layer = _with_project(plan, store, (app_layer, app_entries), (target, report))
    below = [
        *setuid,
        assemble.layer(store, assemble.user_entries(plan, facts.passwd, facts.group), "user"),
        *_venv_layers(store, venv, remote),
        app_layer,
        *writable,
    ]
    return _Platformed(platform, fetched, venv, below)


def _with_project(
    plan: BuildPlan,
    store: BlobStore,
    app: tuple[Layer, list[FileEntry]],
    how: tuple[hostinstall.Target, Reporting],
) -> Layer:
    """The app layer plus the project's own (pure Python) wheel in site-packages, cached by
    the app layer and where site-packages is: the same on every platform of one Python.
    `app`: the app layer and the entries it was made of."""
    (app_layer, entries), (target, report) = app, how
    key = hashlib.sha256(
        "\0".join(["host", PROJECT_RECIPE, app_layer.diff_id, target.python.site_packages,
                    ".".join(target.python.version.split(".")[:2])]).encode()
    ).hexdigest()  # fmt: skip
    with _PROJECT_LOCK:  # one build of it for all platforms
        cached = Layer.from_doc(store.read_index(INDEX_PROJECT_LAYER, key))
        if cached is not None and store.has(cached.diff_id):
            return cached
        with tempfile.TemporaryDirectory(dir=engine_build.scratch_dir(store)) as tmp:
            work = Path(tmp)
            _extract(store, app_layer, work)  # the app's files under work/app, as shipped
            site = hostinstall.build_project_on_host(plan, target, work / "app", work, report)
            prefix = f"{VENV.lstrip('/')}/{target.python.site_packages}"
            layer = assemble.layer(store, [*entries, *entries_from_dir(site, prefix)], "app")
        store.write_index(INDEX_PROJECT_LAYER, key, layer.to_doc())
        return layer


_PROJECT_LOCK = threading.Lock()


def _runs(engine: Engine, platform: Platform) -> bool:
    """Whether the engine can run containers of `platform`: its own, or (a local engine)
    one that binfmt_misc hands to QEMU user emulation; a remote engine is tried."""
    if _engine_platform(engine) == platform:
        return True
    host = os.environ.get("DOCKER_HOST", "")
    remote = bool(host) and not host.startswith("unix://")
    return remote or Path(f"/proc/sys/fs/binfmt_misc/qemu-{platform.machine()}").exists()


def _install_in_engine(
    plan: BuildPlan,
    store: BlobStore,
    where: tuple[Engine, FetchedBase, Platform],
    report: Reporting,
    root: Path,
) -> hostinstall.HostVenv:
    """The engine path's install (a builder container of the platform's base, with
    compilers when `build-packages` asks), for what has no wheel: the base is loaded into
    the engine under a name of its image ID, the venv read back into the host cache."""
    engine, fetched, platform = where
    base = fetched.base
    name = f"{BASE_REPOSITORY}:{platform.architecture}-{base.image_id.removeprefix('sha256:')[:16]}"
    if engine.image_id(name) != base.image_id:
        image = Image.from_config(store, base.config_bytes, list(base.layers or ()))
        with tempfile.TemporaryDirectory(dir=engine_build.scratch_dir(store)) as tmp:
            daemon.load(engine, image, (name,), Path(tmp), daemon.ImageLayers(store))
    on_base = dataclasses.replace(plan, base_image=name)
    with engine.hold():
        builder = wheels.ensure_builder(engine, on_base, report.progress)
        deps = wheels.install_dependencies(engine, on_base, builder, report)
        with tempfile.TemporaryDirectory(dir=engine_build.scratch_dir(store)) as tmp:
            spool = Path(tmp) / "venv"
            layers = _layers_of(
                store,
                f"engine\0{deps.key}",
                lambda: wheels.venv_entries(engine, builder, deps, spool),
            )
    return hostinstall.HostVenv(
        deps.key, root / "engine-venv" / deps.key, deps.pins, deps.source, deps.cached, True,
        layers=tuple(layers),
    )  # fmt: skip


def _venv_layers(
    store: BlobStore, venv: hostinstall.HostVenv, remote: RegistryCache
) -> list[Layer]:
    """The dependency layers, split as the engine path splits them, cached by the key;
    a venv installed on this host is recorded in the registry cache with its marker."""
    if venv.layers is not None:
        return list(venv.layers)  # a builder container's, or the registry's as they are
    name = f"host\0{venv.key}"
    layers = _layers_of(store, name, lambda: hostinstall.venv_entries(venv))
    marker = {"pins": list(venv.pins), "compilers": False, "bytecode": venv.compiled,
              "source": venv.source}  # fmt: skip
    remote.remember(records.VENV, _layers_key(name), layers, marker)
    return layers


def _layers_key(name: str) -> str:
    return hashlib.sha256(f"{name}\0{DEPENDENCY_LAYERS_RECIPE}".encode()).hexdigest()


def _left_in_registry(
    plan: BuildPlan,
    where: tuple[hostinstall.Target, Path],
    remote: RegistryCache,
    options: engine_build.BuildOptions,
) -> hostinstall.HostVenv | None:
    """The venv of the registry cache's record, its layers left there, when nothing of
    this build reads their bytes: the check is skipped and the image only pushed (to the
    cache's registry, which mounts them). None otherwise, or without such a record."""
    target, root = where
    if not plan.check_skip or any(o.kind != "registry" for o in options.outputs):
        return None
    pull = remote.refs.pull
    tags = [references.try_parse(tag) for tag in plan.tags]
    if pull is None or any(t is None or t.registry != pull.registry for t in tags):
        return None
    planned = hostinstall.planned_venv(plan, target, root)
    if planned.cached:
        return None  # the host cache has it: nothing to download either
    record = remote.restore(records.VENV, _layers_key(f"host\0{planned.key}"), fetch=False)
    if record is None or not engine_build.is_marker(record.document):
        return None
    doc = record.document
    return dataclasses.replace(
        planned, pins=tuple(doc["pins"]), cached=True, compiled=bool(doc.get("bytecode")),
        layers=record.layers, restored=True,
    )  # fmt: skip


def _restored_venv(
    store: BlobStore, remote: RegistryCache, key: str, venv: Path
) -> dict[str, Any] | None:
    """The registry cache's venv of host key `key` extracted into `venv`, its layers
    remembered as this key's (so the image has exactly the recorded ones); its marker."""
    name = f"host\0{key}"
    record = remote.restore(records.VENV, _layers_key(name))
    if record is None or not engine_build.is_marker(record.document):
        return None
    root = venv.parent / "layers"
    try:
        for layer in record.layers:
            _extract(store, layer, root)
        (root / VENV.lstrip("/")).rename(venv)
    except (BuildError, OSError) as exc:  # not a venv pydeploy recorded: install it here
        remote.note(f"venv record not used: {exc}")
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(venv, ignore_errors=True)
        return None
    doc = {"layers": [la.to_doc() for la in record.layers]}
    store.write_index(INDEX_VENV_LAYERS, _layers_key(name), doc)
    return record.document


def _layers_of(
    store: BlobStore, name: str, read_entries: Callable[[], list[FileEntry]]
) -> list[Layer]:
    """The dependency layers of the venv `name` keys, split as the engine path splits them;
    its entries are read only when the store lacks them."""
    digest = _layers_key(name)
    cached = engine_build.stored_layers(store, store.read_index(INDEX_VENV_LAYERS, digest))
    if cached is not None:
        return cached
    parts = dependencies.split(read_entries())
    layers = [engine_build.dependency_layer(store, part) for part in parts]
    store.write_index(INDEX_VENV_LAYERS, digest, {"layers": [la.to_doc() for la in layers]})
    return layers


def _check(
    plan: BuildPlan,
    store: BlobStore,
    parts: list[_Platformed],
    where: tuple[Engine | None, engine_build.Clock, Path, contextlib.ExitStack],
) -> appcheck.AppCheck:
    """One app check for every platform: in the engine for a platform it runs natively,
    else with a host interpreter for this host's platform, else none (and why)."""
    engine, clock, scratch, kept = where
    if plan.check_skip:
        return appcheck.skipped(plan)
    native = host_platform()
    report = Reporting(clock.stage_progress())
    if engine is not None:
        in_engine = _check_in_engine(plan, store, parts, (engine, scratch, kept), report)
        if in_engine is not None:
            return in_engine
    part = next((p for p in parts if p.platform == native), None)
    if part is None:
        listed = ", ".join(str(p.platform) for p in parts)
        return appcheck.not_run(
            plan, f"no engine runs {listed}, and this host is {native}: nothing here can "
            "import the app's venv",
        )  # fmt: skip
    python = hostinstall.host_python(part.fetched.facts.python.version)
    family = part.fetched.facts.libc[0]
    if not python or family != _host_libc():
        minor = ".".join(part.fetched.facts.python.version.split(".")[:2])
        return appcheck.not_run(
            plan, f"no engine, and this host has no Python {minor} with {family} to import "
            "the image's venv",
        )  # fmt: skip
    key = f"{HOST_CHECK_RECIPE}\0" + appcheck.cache_key(
        plan, [p.diff_id for p in part.below_launcher], dict(plan.check_env), python
    )
    digest = hashlib.sha256(key.encode()).hexdigest()
    cached = engine_build.check_answer(store.read_index(INDEX_APP_CHECK, digest))
    if cached is not None:
        reason = f"no engine: {python}"
        return appcheck.AppCheck(*cached, cached=True, where="host", reason=reason)
    # The app layer as it is in the image: the app's files, and the project's own wheel
    # in site-packages when it has one.
    root = scratch / "check-root"
    (app_layer,) = [layer for layer in part.below_launcher if layer.role == "app"]
    _extract(store, app_layer, root)
    site_packages = part.fetched.facts.python.site_packages
    site = part.venv.path / site_packages
    project_site = root / VENV.lstrip("/") / site_packages
    run = appcheck.HostRun(
        python, site, root / "app", scratch / "check",
        project_site if project_site.is_dir() else None,
    )  # fmt: skip
    run.scratch.mkdir()
    check = appcheck.run_host_check(plan, run, report)
    store.write_index(
        INDEX_APP_CHECK, digest, {"interface": check.interface, "memory": check.memory.to_doc()}
    )
    return check


def _check_in_engine(
    plan: BuildPlan,
    store: BlobStore,
    parts: list[_Platformed],
    where: tuple[Engine, Path, contextlib.ExitStack],
    report: Reporting,
) -> appcheck.AppCheck | None:
    """The check in the engine: for the platform it runs natively; with only foreign
    platforms, under QEMU user emulation when it can run one (what one worker costs
    reads high there: the emulator's own memory); None when it can do neither."""
    engine = where[0]
    runs = _engine_platform(engine)
    part = next((p for p in parts if p.platform == runs), None)
    if part is not None:
        return _engine_check(plan, store, part, where, report)
    if host_platform() in [p.platform for p in parts]:
        return None  # the host's own interpreter can check that one
    emulated = next((p for p in parts if _runs(engine, p.platform)), None)
    if emulated is None:
        return None
    check = _engine_check(plan, store, emulated, where, report)
    return dataclasses.replace(check, reason=f"{emulated.platform} under emulation on {runs}")


def _engine_check(
    plan: BuildPlan,
    store: BlobStore,
    part: _Platformed,
    where: tuple[Engine, Path, contextlib.ExitStack],
    report: Reporting,
) -> appcheck.AppCheck:
    """The check in the engine, in the runtime image of `part` (its planned launcher)."""
    engine, scratch, kept = where
    base = part.fetched.base
    settings = assemble.runtime_settings(
        plan, engine_build.base_env(base), engine_build.transient_labels(engine)
    )
    launcher = assemble.layer(store, assemble.launcher_entries(plan.launch), "launcher")
    image = assemble_image(store, base, [*part.below_launcher, launcher], settings, manifest=False)
    image_id = kept.enter_context(engine_build.loaded(engine, store, image, scratch))
    return appcheck.run_check(engine, plan, image_id, report)


def _engine_platform(engine: Engine) -> Platform:
    os_name, arch = engine.platform()
    return Platform(os_name, arch)


def _host_libc() -> str:
    name, _ = host_machine.libc_ver()
    return "glibc" if name == "glibc" else (name or "unknown")


def _extract(store: BlobStore, layer: Layer, dest: Path) -> None:
    """A layer pydeploy wrote (dirs, files, symlinks under clean relative paths) on disk."""
    with (
        open_uncompressed(store, layer) as handle,
        tarfile.open(fileobj=cast("IO[bytes]", handle), mode="r|") as tar,
    ):
        inside = dest.resolve()
        for member in tar:
            name = Path(member.name)
            if name.is_absolute() or ".." in name.parts:
                raise BuildError(f"layer {layer.digest[:19]} holds the path {member.name!r}")
            path = dest / name
            parent = path.parent.resolve() if path.parent.exists() else None
            if parent is not None and not parent.is_relative_to(inside):
                raise BuildError(f"layer {layer.digest[:19]} writes through a symlink: {name}")
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
            elif member.issym():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.symlink_to(member.linkname)
            elif member.isfile():
                path.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is not None:
                    path.write_bytes(source.read())
                path.chmod(member.mode & 0o755)


def _result(
    plan: BuildPlan,
    part: _Platformed,
    image: Image,
    check: appcheck.AppCheck,
    timings: dict[str, float],
) -> engine_build.BuildResult:
    server = servers.resolve(plan.server, check.interface)
    return engine_build.BuildResult(
        image=image, tags=plan.tags, plan=plan, interface=check.interface, server=server,
        pins=part.venv.pins, dependencies_cached=part.venv.cached,
        dependencies_volume=str(part.venv.path), timings=timings, memory=check.memory,
        check=check, base_image_id=part.fetched.base.image_id, path="host",
    )  # fmt: skip


def _publish(  # noqa: PLR0913, PLR0917 - the result and where its outputs go
    result: engine_build.BuildResult,
    options: engine_build.BuildOptions,
    where: tuple[Engine | None, RegistryCache],
    scratch: Path,
    store: BlobStore,
    clock: engine_build.Clock,
) -> None:
    engine, remote = where
    destinations = publish.Destinations(
        engine, scratch, store.root.parent, daemon.ImageLayers(store),
        fetch=remote.fetch_missing,
    )  # fmt: skip
    for publisher in [publish.publisher_for(o, destinations) for o in options.outputs]:
        done = publisher.publish(
            result.image, result.plan.tags, functools.partial(clock.sub, publisher.step)
        )
        result.pushed.update(done.pushed)
        clock.step(publisher.step, done.detail)
