"""`pydeploy build`: plan -> builder stage -> layers -> image -> outputs.

The one place that sequences side effects. Each stage reports progress through a
callback (the CLI prints it); everything started is cleaned up on failure or interrupt.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydeploy.builder import appcheck, commands, sharedlibs
from pydeploy.builder import stage as wheels
from pydeploy.builder.credentials import Masker
from pydeploy.builder.transcript import Reporting
from pydeploy.cache import prune as cachegc
from pydeploy.cache import records
from pydeploy.cache.remote import RegistryCache
from pydeploy.cachedir import cache_root
from pydeploy.cachekeys import (
    BUILD_COMMANDS_RECIPE,
    BUILD_LABEL,
    CHECK_IMAGE_LABEL,
    DEPENDENCY_LAYERS_RECIPE,
    INDEX_APP_CHECK,
    INDEX_APP_CHECK_LAST,
    INDEX_BASE_ACCOUNTS,
    INDEX_BUILD_LAYER,
    INDEX_DEPENDENCY_LAYER,
    INDEX_PROJECT_LAYER,
    INDEX_SETUID,
    INDEX_SHARED_LIBS,
    INDEX_VENV_LAST,
    INDEX_VENV_LAYERS,
    OWNER_LABEL,
    PROJECT_RECIPE,
    SETUID_RECIPE,
)
from pydeploy.config.project import git_commit_time, git_revision
from pydeploy.engine.client import Engine
from pydeploy.engine.types import ImageRef
from pydeploy.errors import ConfigError
from pydeploy.layers import assemble, dependencies
from pydeploy.oci.archive import (
    cached_base,
    cached_base_config,
    import_docker_save,
    remember_base_config,
    scan_docker_save,
)
from pydeploy.oci.blobs import BlobStore, digest_hex
from pydeploy.oci.config import ImageSettings, rfc3339
from pydeploy.oci.entries import FileEntry, entries_from_tar
from pydeploy.oci.image import BaseImage, Image, assemble_image
from pydeploy.oci.layer import Layer, open_uncompressed
from pydeploy.plan import servers
from pydeploy.plan.appfiles import app_files
from pydeploy.plan.memory import WorkerMemory
from pydeploy.plan.memory import describe as describe_memory
from pydeploy.plan.planner import BUILD_ROLE, SETUID_ROLE, VENV, WRITABLE_ROLE, BuildPlan
from pydeploy.plan.registrycache import cache_refs
from pydeploy.progress import Progress
from pydeploy.publish import daemon, preload
from pydeploy.publish import outputs as publish


@dataclass(frozen=True)
class BuildOptions:
    outputs: tuple[publish.Output, ...] = (publish.Output("docker"),)
    verbose: bool = False
    # Receives every line the builder's tools print when `verbose` is set.
    output: Callable[[str], None] | None = None
    cache_dir: Path | None = None
    # Read the base's layers into the host cache (compressed, with digests): None for
    # "when an output needs them" (all but `docker`, which names them by diff ID alone).
    base_blobs: bool | None = None

    def needs_base_blobs(self) -> bool:
        if self.base_blobs is not None:
            return self.base_blobs
        return any(output.kind != "docker" for output in self.outputs)

    def needs_manifest(self) -> bool:
        """Whether the layers are gzipped and a manifest made: a registry or an OCI layout
        needs them (or an explicit `base_blobs`, for the digest); the engine and a
        docker-archive take the plain tars."""
        if self.base_blobs is not None:
            return self.base_blobs
        return any(output.kind in {"registry", "oci"} for output in self.outputs)


@dataclass
class BuildResult:
    image: Image
    tags: tuple[str, ...]
    plan: BuildPlan
    interface: str
    server: str
    pins: tuple[str, ...]
    dependencies_cached: bool
    dependencies_volume: str
    timings: dict[str, float] = field(default_factory=dict)
    pushed: dict[str, str] = field(default_factory=dict)
    memory: WorkerMemory | None = None  # what a worker costs, as the image records it
    # The system layer's packages: the user's and those added for missing libraries.
    runtime_packages: sharedlibs.RuntimePackages | None = None
    check: appcheck.AppCheck | None = None  # how the app check went
    base_image_id: str = ""  # the engine's ID of plan.base_image when the build read it
    # "engine": installed in a builder container; "host": on this host (pydeploy.hostbuild)
    path: str = "engine"
    registry_cache: dict[str, Any] | None = None  # RegistryCache.to_json

    def check_json(self) -> dict[str, Any]:
        """`check` of the result: `passed` (also when a cached answer was reused) or
        `skipped` (tool.pydeploy.check.skip, or no engine and no matching interpreter
        here); `where` it ran (`image`, `host`, or null when it did not) and why."""
        check = self.check
        where = check.where if check else "image"
        return {
            "status": check.status if check else "passed",
            "cached": bool(check and check.cached),
            "where": where or None,
            "reason": (check.reason if check else "") or None,
        }

    def _layers_json(self) -> list[dict[str, Any]]:
        image = self.image
        # The base's layers, when the build read none of their blobs: diff IDs alone.
        unread = (
            image.base_diff_ids if image.manifest is None and not image.base_layer_count else []
        )
        return [
            *(
                {"role": "base", "digest": None, "diff_id": diff_id, "size": None,
                 "uncompressed_size": None}
                for diff_id in unread
            ),
            *(
                {"role": la.role, "digest": la.digest, "diff_id": la.diff_id, "size": la.size,
                 "uncompressed_size": la.uncompressed_size}
                for la in image.layers
            ),
        ]  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The documented shape of `pydeploy build --json` (and --metadata-file)."""
        return {
            "project": self.plan.project.name,
            "image_id": self.image.image_id,
            "manifest_digest": self.image.manifest_digest,
            "tags": list(self.tags),
            "pushed": self.pushed,
            "base_image": self.plan.base_image,
            "platform": _platform(self.image),
            "path": self.path,
            "app": self.plan.app,
            "interface": self.interface,
            "server": self.server,
            "check": self.check_json(),
            "dependencies": {
                "pins": list(self.pins),
                "cached": self.dependencies_cached,
                "volume": self.dependencies_volume,
            },
            "layers": self._layers_json(),
            "runtime_packages": (
                self.runtime_packages or sharedlibs.RuntimePackages(self.plan.runtime_packages)
            ).to_json(),
            "cache": self.registry_cache or NO_REGISTRY_CACHE,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            # What `pydeploy.attest` attached once the build returned (cli/build.py fills it).
            "attestations": [],
        }


NO_REGISTRY_CACHE: dict[str, Any] = {"from": None, "to": None, "restored": [], "saved": []}


def registry_cache(
    plan: BuildPlan, options: BuildOptions, store: BlobStore, note: Callable[[str], None]
) -> RegistryCache:
    """The build's registry cache (pydeploy.plan.registrycache says which repositories)."""
    pushing = any(output.kind == "registry" for output in options.outputs)
    return RegistryCache(cache_refs(plan.cache, plan.tags, pushing), store, note)


def _platform(image: Image) -> str:
    config = json.loads(image.config)
    variant = f"/{config['variant']}" if config.get("variant") else ""
    return f"{config.get('os', 'linux')}/{config.get('architecture', 'amd64')}{variant}"


def created_epoch(plan: BuildPlan) -> int:
    """Config/label timestamp: SOURCE_DATE_EPOCH, else the commit time, else 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value:
        if not value.isdigit():
            raise ConfigError(
                f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds since 1970.",
                hint="Set it to an integer, e.g. `$(git log -1 --format=%ct)`.",
            )
        return int(value)
    return git_commit_time(plan.project.root) or 0


class Clock:
    def __init__(self, progress: Progress, timings: dict[str, float]) -> None:
        self.progress, self.timings, self.start = progress, timings, time.monotonic()

    def step(self, name: str, detail: str | None = None) -> None:
        now = time.monotonic()
        self.timings[name] = now - self.start
        self.progress(name, now - self.start, detail)

    def sub(self, name: str, detail: str | None = None) -> None:
        """Sub-steps of a stage (builder image, resolve, install...) on the same clock."""
        self.progress(name, time.monotonic() - self.start, detail)

    def stage_progress(self) -> Progress:
        """`sub` as the stages' Progress: they time from their own start, while the
        build's output shows one clock."""
        return lambda name, _since_stage_start, detail: self.sub(name, detail)


@dataclass(frozen=True)
class _Build:
    """One build under way: what its steps all use."""

    plan: BuildPlan
    engine: Engine
    options: BuildOptions
    clock: Clock
    store: BlobStore
    remote: RegistryCache

    def reporting(self) -> Reporting:
        """How the builder stage reports: on the build's clock, tool lines with --verbose."""
        return Reporting(self.clock.stage_progress(), self.options.verbose, self.options.output)


@dataclass(frozen=True)
class _Base:
    """The base image: its reference, what is read of it (running in the pool: its
    config, its layers when the outputs need them, the no-setuid layer), and its
    /etc/passwd and /etc/group."""

    ref: ImageRef
    layers: Future[tuple[BaseImage, list[Layer]]]
    accounts: tuple[bytes, bytes]


def build(
    plan: BuildPlan, engine: Engine, options: BuildOptions, progress: Progress
) -> BuildResult:
    timings: dict[str, float] = {}
    clock = Clock(progress, timings)
    root = cache_root(options.cache_dir)
    store = BlobStore(root / "blobs")
    # What builds killed earlier left (their containers hold volumes and claims).
    reaped = engine.reap_orphans()
    if reaped:
        clock.sub("cleanup", f"removed {len(reaped)} containers of killed builds")
    if preload.reap(engine, store):
        clock.sub("cleanup", "removed the images killed builds preloaded")
    # The lease keeps `prune` off the host cache, the hold keeps what this build pins
    # (venv and cache volumes, builder images) in use until the end.
    waiting = "waiting for `pydeploy prune` to finish with the host cache"
    with (
        cachegc.lease(root, lambda: clock.sub("cache", waiting)),
        engine.hold(),
    ):
        base_ref = engine.ensure_image(plan.base_image)
        # Read now, so that a user-id the base already uses fails before any install.
        passwd, group = _base_accounts(engine, store, plan.base_image, base_ref.image_id)
        assemble.check_user_id(plan, passwd, group)
        clock.step("base image", f"{plan.base_image} ({base_ref.image_id[:19]})")
        # Reading the base (one docker save pass, once per base; with its layers' deterministic
        # gzip when an output needs them) is CPU work that overlaps with the container work
        # below; joined before assembly.
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="pydeploy") as pool:
            remote = registry_cache(plan, options, store, functools.partial(clock.sub, "cache"))
            base_job = pool.submit(
                _base_image, engine, store, plan, base_ref.image_id,
                # Podman's load takes only complete archives, base layers included.
                blobs=options.needs_base_blobs() or engine.is_podman,
                gzip=options.needs_manifest(), remote=_base_remote(engine, options, remote),
            )  # fmt: skip
            run = _Build(plan, engine, options, clock, store, remote)
            return _build(run, _Base(base_ref, base_job, (passwd, group)), pool)


def _build(run: _Build, base_image: _Base, pool: ThreadPoolExecutor) -> BuildResult:
    plan, engine, options, clock, store = run.plan, run.engine, run.options, run.clock, run.store
    base_ref, timings = base_image.ref, clock.timings

    # The app's files and their secret scan (detect-secrets' import alone is ~0.15 s) need
    # only the plan: selected while the builder and the install wait on the engine.
    app_job = pool.submit(app_files, plan, store=store)
    builder = wheels.ensure_builder(engine, plan, clock.stage_progress())
    clock.step("builder", f"{wheels.describe(builder)}, Python {builder.python.version}")
    deps = _dependencies(run, builder, base_ref.image_id)

    # `kept` holds the check image until the end: loading the final image then sends
    # only what differs from it (the launcher layer and the config), or nothing when the
    # check ran in the final image itself (a preload).
    with (
        tempfile.TemporaryDirectory(prefix="pydeploy-", dir=scratch_dir(store)) as tmp,
        contextlib.ExitStack() as kept,
    ):
        scratch = Path(tmp)
        # The venv's export starts right after the install: it overlaps the shared-library
        # check and the app layer.
        venv_job = pool.submit(_venv_layers, run, builder, deps, scratch)
        try:
            runtime = _shared_libraries(run, base_ref.image_id, deps)
            selected = app_job.result()
            for warning in [*selected.warnings, *hidden_by_mounts(plan, selected.entries)]:
                clock.sub("warning", warning)
            app_layer = _app_layer(run, builder, deps, selected.entries, scratch)
            venv_layers = venv_job.result()
            # The library check's answer is about these layers: recorded with them.
            run.remote.remember(records.LIBS, runtime.libs_key, venv_layers, runtime.libs)
        except BaseException:
            # The export writes into `scratch` (and runs a container): it ends before
            # the directory is removed, not while (the pool would wait for it anyway).
            wait([venv_job])
            raise
        base, setuid = base_image.layers.result()
        below_launcher = [
            # Right on the base: later layers (apt's) may replace these files again.
            *setuid,
            *_system_layers(run, runtime, base_ref.image_id),
            assemble.layer(store, assemble.user_entries(plan, *base_image.accounts), "user"),
            *venv_layers,
            app_layer,
            *writable_layer(store, plan),
        ]
        below_launcher += _build_command_layers(run, base, below_launcher, scratch, kept)
        final = _FinalImage(run, base, base_ref, below_launcher)
        check, preloaded = _checked_app(run, base, below_launcher, scratch, kept=kept, final=final)
        interface, memory = check.interface, check.memory
        server = servers.resolve(plan.server, interface)
        found = f"{plan.app} is {interface.upper()}; server {server}; {describe_memory(memory)}"
        if check.status == "skipped":
            found = f"skipped (tool.pydeploy.check.skip): {found}"
        clock.step("app check", found)
        image = final(interface, memory)
        if preloaded is not None and preloaded != image.image_id:
            clock.sub("app check", "the answer changed the launcher: the final image is sent")
        layers = list(image.own_layers)  # gzipped when the outputs need a manifest
        clock.step("layers", ", ".join(f"{la.role} {la.size / 1e6:.1f} MB" for la in layers))
        digest = image.manifest_digest
        manifest = f"manifest {digest[:19]}" if digest else "no manifest (not needed)"
        clock.step("image", f"{image.image_id[:19]}, {manifest}")

        result = BuildResult(
            image=image, tags=plan.tags, plan=plan, interface=interface, server=server,
            pins=deps.pins, dependencies_cached=deps.cached, dependencies_volume=deps.volume,
            timings=timings, memory=memory, runtime_packages=runtime.packages, check=check,
            base_image_id=base_ref.image_id,
        )  # fmt: skip
        held = frozenset({preloaded} if preloaded is not None else ())
        destinations = publish.Destinations(
            engine, scratch, store.root.parent, daemon.ImageLayers(store), held,
            fetch=run.remote.fetch_missing,
        )  # fmt: skip
        for publisher in [publish.publisher_for(o, destinations) for o in options.outputs]:
            done = publisher.publish(image, plan.tags, functools.partial(clock.sub, publisher.step))
            result.pushed.update(done.pushed)
            clock.step(publisher.step, done.detail)
        result.registry_cache = save_records(run.remote, clock)
    return result


def save_records(remote: RegistryCache, clock: Clock) -> dict[str, Any]:
    """The registry cache's records, written after the outputs (the image's blobs are in
    its repository then, so a record there names no blob the registry lacks)."""
    remote.save()
    if remote.refs.enabled:
        saved = ", ".join(remote.saved) or "nothing new"
        clock.step("registry cache", f"{remote.refs.push or 'read only'}: saved {saved}")
    return remote.to_json()


def _dependencies(run: _Build, builder: wheels.BuilderImage, base_id: str) -> wheels.Dependencies:
    """The venv volume of this dependency set: cached, restored (host cache, registry
    cache) or installed, starting from the project's last venv's bytecode; or, when
    nothing needs a volume, its layers alone (`_venv_as_layers`)."""
    as_layers = _venv_as_layers(run, builder, base_id)
    if as_layers is not None:
        detail = f"restored from {as_layers.restored_from}, {len(as_layers.pins)} packages"
        run.clock.step("dependencies", f"{detail} (layers only: no venv volume needed)")
        return as_layers
    store = run.store
    last_key = _last_venv_key(run.plan, builder)
    recorded = store.read_index(INDEX_VENV_LAST, last_key)
    deps = wheels.install_dependencies(
        run.engine, run.plan, builder, run.reporting(), _last_venv(recorded),
        restore=functools.partial(_restored_venv, run),
    )  # fmt: skip
    last = {"volume": deps.volume, "builder_image_id": deps.builder.image_id}
    if last != recorded:  # a rebuild of the same dependency set writes nothing
        store.write_index(INDEX_VENV_LAST, last_key, last)
    how = "cached" if deps.cached else "installed"
    how = f"restored from {deps.restored_from}" if deps.restored_from else how
    run.clock.step("dependencies", f"{how}, {len(deps.pins)} packages")
    return deps


@dataclass(frozen=True)
class _FinalImage:
    """The image the build publishes, once the check's answer is known: the layers below
    the launcher, the launcher that answer settles, the runtime config with OCI labels."""

    run: _Build
    base: BaseImage
    base_ref: ImageRef
    below_launcher: list[Layer]
    # The image of each answer, made once: the preload's is the final one when the check
    # gives the answer it was predicted from.
    made: dict[tuple[str, WorkerMemory], Image] = field(default_factory=dict, compare=False)

    def __call__(self, interface: str, memory: WorkerMemory) -> Image:
        known = self.made.get((interface, memory))
        if known is None:
            known = self.made[interface, memory] = self._make(interface, memory)
        return known

    def _make(self, interface: str, memory: WorkerMemory) -> Image:
        below = FinalParts(self.base, self.base_ref.repo_digest, self.below_launcher)
        manifest = self.run.options.needs_manifest()
        return final_image(self.run.plan, self.run.store, below, (interface, memory), manifest)


@dataclass(frozen=True)
class FinalParts:
    """What the final image stands on: the base, its digest (labels record it), and
    every layer below the launcher."""

    base: BaseImage
    base_digest: str | None
    below_launcher: list[Layer]


def final_image(
    plan: BuildPlan,
    store: BlobStore,
    parts: FinalParts,
    answer: tuple[str, WorkerMemory],
    manifest: bool,
) -> Image:
    """The published image: the launcher the check's answer settles, on `parts`, with the
    runtime config and its OCI labels."""
    interface, memory = answer
    server = servers.resolve(plan.server, interface)
    settled = plan.launch.settled(interface, server, memory)
    launcher = assemble.layer(store, assemble.launcher_entries(settled), "launcher")
    created = created_epoch(plan)
    labels = assemble.oci_labels(
        plan, created_epoch=created, revision=git_revision(plan.project.root),
        base_digest=parts.base_digest, memory=memory,
    )  # fmt: skip
    settings = assemble.runtime_settings(plan, base_env(parts.base), labels)
    layers = [*parts.below_launcher, launcher]
    created_at = dataclasses.replace(settings, created=rfc3339(created))
    return assemble_image(store, parts.base, layers, created_at, manifest=manifest)


def base_env(base: BaseImage) -> list[str]:
    env: list[str] = base.config.get("config", {}).get("Env") or []
    return env


def _app_layer(
    run: _Build,
    builder: wheels.BuilderImage,
    deps: wheels.Dependencies,
    app: list[FileEntry],
    scratch: Path,
) -> Layer:
    """The app's layer: its files, plus the project's own wheel when it has a build
    system (built in the builder, cached by the app files and the dependency set)."""
    store, plan = run.store, run.plan
    app_only = assemble.layer(store, app, "app")
    if not plan.install_project:
        return app_only
    key = hashlib.sha256(
        json.dumps([PROJECT_RECIPE, app_only.diff_id, deps.key, builder.image_id]).encode()
    ).hexdigest()
    cached = Layer.from_doc(store.read_index(INDEX_PROJECT_LAYER, key))
    if cached is not None and store.has(cached.digest) and store.has(cached.diff_id):
        return cached
    app_tar = _uncompressed(store, app_only, scratch / "app.tar")
    site_tar = wheels.build_project(run.engine, plan, deps, app_tar, run.reporting())
    layer = _with_project(store, app, builder, site_tar, scratch)
    store.write_index(INDEX_PROJECT_LAYER, key, layer.to_doc())
    return layer


def _checked_app(  # noqa: PLR0913 - the build's parts, and how to make its final image
    run: _Build,
    base: BaseImage,
    layers: list[Layer],
    scratch: Path,
    *,
    kept: contextlib.ExitStack,
    final: _FinalImage,
) -> tuple[appcheck.AppCheck, str | None]:
    """The app's interface and what one worker of it costs, from the check in the
    runtime image (`layers`: all of it but the launcher, whose settings the check's
    answer decides), and the ID of the final image when the check ran in it.

    The check runs `python -c`, never the launcher, and the app cannot see the config's
    labels: so any launcher gives the same answer. With the last check's answer of this
    app (index `app-check-last`) the check runs in the final image that answer predicts,
    loaded under this build's own reference (publish.preload): when the new answer is
    the same, the `docker` output only tags it. Without one (a first build), the check
    image has the planned launcher and the transient config, as the final one cannot be
    known yet.

    The same image with the same check settings gives the same answer, so the result is
    cached by exactly those inputs (every layer, the image's environment and user, the
    check's environment and mounts): a no-change rebuild starts no container here, and
    changed code, dependencies, system packages or env always re-check."""
    store, plan, clock, engine = run.store, run.plan, run.clock, run.engine
    if plan.check_skip:
        return appcheck.skipped(plan), None
    settings = _transient_settings(run, base)
    diff_ids = [base.image_id, *(la.diff_id for la in layers)]
    key = appcheck.cache_key(plan, diff_ids, settings.env, settings.user)
    cached = check_answer(store.read_index(INDEX_APP_CHECK, key))
    if cached is not None:
        clock.sub("app check", "cached: the same image and check settings")
        return appcheck.AppCheck(*cached, cached=True), None
    last_key = last_check_key(plan)
    last = check_answer(store.read_index(INDEX_APP_CHECK_LAST, last_key))
    preloaded = None
    if last is not None:
        image = final(*last)
        known = daemon.ImageLayers(store)
        preloaded = kept.enter_context(preload.preloaded(engine, image, scratch, known))
        image_id = preloaded
    else:
        launcher = assemble.layer(store, assemble.launcher_entries(plan.launch), "launcher")
        image = assemble_image(store, base, [*layers, launcher], settings, manifest=False)
        image_id = kept.enter_context(loaded(engine, store, image, scratch))
    check = appcheck.run_check(engine, plan, image_id, run.reporting())
    answer = {"interface": check.interface, "memory": check.memory.to_doc()}
    store.write_index(INDEX_APP_CHECK, key, answer)
    store.write_index(INDEX_APP_CHECK_LAST, last_key, answer)
    if check.memory.note:
        clock.sub("app check", check.memory.note)
    return check, preloaded


def check_answer(doc: Any) -> tuple[Literal["wsgi", "asgi"], WorkerMemory] | None:
    """The interface and worker memory of a stored check answer, or None when it is not one."""
    memory = WorkerMemory.from_doc(doc.get("memory")) if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or memory is None:
        return None
    interface = doc.get("interface")
    if interface == "wsgi" or interface == "asgi":  # noqa: PLR1714 - narrows for mypy
        return interface, memory
    return None


def _last_venv_key(plan: BuildPlan, builder: wheels.BuilderImage) -> str:
    """Whose last venv a dependency change starts its bytecode from: this project's, with
    the same builder inputs (base image, Python)."""
    return hashlib.sha256(json.dumps([str(plan.project.root), builder.key]).encode()).hexdigest()


def _last_venv(doc: Any) -> wheels.PreviousVenv | None:
    if not isinstance(doc, dict):
        return None
    volume, image_id = doc.get("volume"), doc.get("builder_image_id")
    if not isinstance(volume, str) or not isinstance(image_id, str):
        return None
    return wheels.PreviousVenv(volume, image_id)


def last_check_key(plan: BuildPlan) -> str:
    """Whose last answer predicts the launcher: this project's app (its root and target)."""
    return hashlib.sha256(json.dumps([str(plan.project.root), plan.app]).encode()).hexdigest()


def _transient_settings(run: _Build, base: BaseImage) -> ImageSettings:
    """The config of an image the build loads only to run something in (the app check,
    the build commands): the runtime image's, labelled so the next build reaps it when
    this one is killed."""
    return assemble.runtime_settings(run.plan, base_env(base), transient_labels(run.engine))


def transient_labels(engine: Engine) -> dict[str, str]:
    """The labels of an image loaded only to run something in: the next build reaps it."""
    return {
        BUILD_LABEL: engine.build_id,
        OWNER_LABEL: engine.owner.label(),
        CHECK_IMAGE_LABEL: "1",  # what the next build's reap_orphans looks for
    }


def _build_command_layers(
    run: _Build, base: BaseImage, layers: list[Layer], scratch: Path, kept: contextlib.ExitStack
) -> list[Layer]:
    """The layer of what the build commands wrote, run in the image of `layers`; none
    without commands. Cached by everything the commands see: the image, its environment
    and user, the commands, their output directories and check-env values (in a digest)."""
    plan, store, clock = run.plan, run.store, run.clock
    if not plan.build_commands:
        return []
    settings = _transient_settings(run, base)
    key = hashlib.sha256(
        json.dumps(
            [BUILD_COMMANDS_RECIPE, base.image_id, [la.diff_id for la in layers],
             sorted(settings.env.items()), settings.user,
             [c.to_json() for c in plan.build_commands], list(plan.build_outputs),
             sorted(plan.check_env), plan.network],
        ).encode()
    ).hexdigest()  # fmt: skip
    cached = Layer.from_doc(store.read_index(INDEX_BUILD_LAYER, key))
    if cached is None or not (store.has(cached.digest) and store.has(cached.diff_id)):
        cached = run.remote.restore_layer(records.BUILD, key)
        if cached is not None:
            store.write_index(INDEX_BUILD_LAYER, key, cached.to_doc())
    if cached is not None:
        clock.step("build commands", "cached: the same image and commands")
        run.remote.remember(records.BUILD, key, [cached], {})
        return [cached]
    image = assemble_image(store, base, layers, settings, manifest=False)
    image_id = kept.enter_context(loaded(run.engine, store, image, scratch))
    mask = Masker(value for _, value in plan.check_env)
    report = run.reporting()

    def on_line(line: str) -> None:
        if line.startswith("$ "):
            clock.sub("build command", mask(line[2:]))
        elif report.verbose:
            (report.output or functools.partial(clock.sub, "log"))(mask(line))

    entries = commands.run_build_commands(
        run.engine, image_id, plan=plan, check_env=dict(plan.check_env), scratch=scratch,
        on_line=on_line, mask=mask,
    )  # fmt: skip
    layer = assemble.layer(store, entries, BUILD_ROLE)
    store.write_index(INDEX_BUILD_LAYER, key, layer.to_doc())
    run.remote.remember(records.BUILD, key, [layer], {})
    clock.step("build commands", f"{len(plan.build_commands)} run, {len(entries)} paths kept")
    return [layer]


@contextlib.contextmanager
def loaded(engine: Engine, store: BlobStore, image: Image, scratch: Path) -> Iterator[str]:
    """The image in the engine by its ID alone (no tag), removed when the block ends,
    however it ends (one left by a killed build is reaped by the next: its owner label)."""
    try:
        daemon.load(engine, image, (), scratch, daemon.ImageLayers(store))
        yield image.image_id
    finally:
        preload.remove_settled(engine, image.image_id)


def writable_layer(store: BlobStore, plan: BuildPlan) -> list[Layer]:
    if not plan.writable:
        return []
    return [assemble.layer(store, assemble.writable_entries(plan), WRITABLE_ROLE)]


def hidden_by_mounts(plan: BuildPlan, app: list[FileEntry]) -> list[str]:
    """`writable` directories that hold app files: every writable mount (the check's,
    `pydeploy run`'s, the manifests') starts empty and hides them."""
    found = []
    for path in plan.writable:
        inside = path.lstrip("/") + "/"
        held = sorted(e.path for e in app if e.path.startswith(inside) and e.kind != "dir")
        if held:
            shown = ", ".join(held[:3]) + (" ..." if len(held) > 3 else "")
            found.append(
                f"`tool.pydeploy.writable` lists {path}, which holds app files ({shown}): "
                "the image keeps them, but a writable mount there (the app check, `pydeploy "
                "run`, the manifests' emptyDir) starts empty and hides them."
            )
    return found


def scratch_dir(store: BlobStore) -> Path:
    path = store.root.parent / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _base_accounts(
    engine: Engine, store: BlobStore, name: str, image_id: str
) -> tuple[bytes, bytes]:
    """The base's /etc/passwd and /etc/group, read once per base image ID (a container
    create and two archive reads, ~0.2 s, on every build otherwise)."""
    cached = store.read_index(INDEX_BASE_ACCOUNTS, image_id.removeprefix("sha256:"))
    if isinstance(cached, dict):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            return base64.b64decode(cached["passwd"]), base64.b64decode(cached["group"])
    passwd, group = engine.read_files(name, ["/etc/passwd", "/etc/group"])
    document = {
        "passwd": base64.b64encode(passwd).decode(),
        "group": base64.b64encode(group).decode(),
    }
    store.write_index(INDEX_BASE_ACCOUNTS, image_id.removeprefix("sha256:"), document)
    return passwd, group


def _base_image(  # noqa: PLR0913 - the base, and what of it the outputs need
    engine: Engine,
    store: BlobStore,
    plan: BuildPlan,
    image_id: str,
    *,
    blobs: bool,
    gzip: bool,
    remote: RegistryCache | None,
) -> tuple[BaseImage, list[Layer]]:
    """The base and the layer that drops its setuid/setgid bits. With `blobs`, its layers
    are imported into the store (tars, and with `gzip` their gzip, once per base);
    without, one docker save pass reads only its config and its layers' headers (a
    setuid scan), both cached by image ID. A fresh host cache takes both from the
    registry cache's `base` record when it has one, the base's layers left in the
    registry (the engine has the base; a push finds them there or mounts them)."""
    setuid = cached_setuid_layer(store, plan, image_id)
    if blobs:
        base = cached_base(store, image_id)
        recorded = _recorded_base(plan, image_id, remote) if base is None and gzip else None
        if recorded is not None:
            return recorded
        if base is None:
            with engine.save_image(plan.base_image) as stream:
                base = import_docker_save(stream, store, compress=gzip)
        if setuid is None:
            setuid = setuid_layer(store, plan, image_id, assemble.stored_layer_scans(store, base))
        compressed = bool(base.layers) and all(la.compressed for la in base.layers or ())
        if remote is not None and compressed and not plan.keep_setuid:
            _remember_base(remote, base, setuid)
        return base, setuid
    base = cached_base_config(store, image_id)
    recorded = _recorded_base(plan, image_id, remote) if base is None else None
    if recorded is not None:
        return BaseImage(recorded[0].config_bytes, None), recorded[1]
    if base is None or setuid is None:
        with engine.save_image(plan.base_image) as stream:
            base, scans = scan_docker_save(stream, assemble.scan_layer)
        remember_base_config(store, base)
        if setuid is None:
            setuid = setuid_layer(store, plan, image_id, scans)
    return base, setuid


def _base_remote(
    engine: Engine, options: BuildOptions, remote: RegistryCache
) -> RegistryCache | None:
    """The registry cache for the base, when the outputs need none of its bytes: a push
    (the registry has them, or mounts them) and the engine (it has the base). Podman's
    load takes only complete archives."""
    kinds = {output.kind for output in options.outputs}
    return None if engine.is_podman or not kinds <= {"registry", "docker"} else remote


def _remember_base(remote: RegistryCache, base: BaseImage, setuid: list[Layer]) -> None:
    """The base's gzipped layers and its no-setuid layer (when it has one), with the
    base's config, as the registry cache's `base` record."""
    config = base64.b64encode(base.config_bytes).decode()
    layers = [*(base.layers or ()), *setuid]
    remote.remember(records.BASE, digest_hex(base.image_id), layers, {"config": config,
                    "setuid": bool(setuid)})  # fmt: skip


def _recorded_base(
    plan: BuildPlan, image_id: str, remote: RegistryCache | None
) -> tuple[BaseImage, list[Layer]] | None:
    """The base and its no-setuid layer from the registry cache's `base` record (for a
    host cache that lacks them): the layers stay in the registry, but for the small
    no-setuid layer, which the check image needs."""
    if remote is None or plan.keep_setuid:
        return None
    store = remote.store
    record = remote.restore(records.BASE, digest_hex(image_id), fetch=False)
    if record is None:
        return None
    try:
        config = base64.b64decode(str(record.document["config"]), validate=True)
    except (KeyError, ValueError):
        return None
    has_setuid = record.document.get("setuid") is True
    layers = list(record.layers)
    setuid = [layers.pop()] if has_setuid else []
    base = BaseImage(config, tuple(dataclasses.replace(la, role="base") for la in layers))
    if base.image_id != image_id or base.diff_ids != [la.diff_id for la in layers]:
        remote.note(f"base record of {image_id[:19]} not used: it is another image's")
        return None
    store.put_bytes(config)
    if setuid:
        remote.fetch_missing([setuid[0].digest])
        store.write_index(INDEX_SETUID, _setuid_key(image_id), setuid[0].to_doc())
    else:
        store.write_index(INDEX_SETUID, _setuid_key(image_id), {"empty": True})
    return base, setuid


def _uncompressed(store: BlobStore, layer: Layer, dest: Path) -> Path:
    """The layer's plain tar, as the builder's app check receives it."""
    if store.has(layer.diff_id):
        return store.path(layer.diff_id)
    with open_uncompressed(store, layer) as src, dest.open("wb") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
    return dest


def _venv_layers(
    run: _Build, builder: wheels.BuilderImage, deps: wheels.Dependencies, scratch: Path
) -> list[Layer]:
    """The dependency layers (pydeploy.layers.dependencies), cached by the dependency key:
    unchanged dependencies reuse the stored layers without exporting the venv, changed
    ones re-tar and re-compress only the layers whose content changed. The registry
    cache records them with the install's marker (what a restore needs)."""
    store = run.store
    key = venv_layers_key(deps.key)
    marker = {"pins": list(deps.pins), "compilers": deps.needs_compilers, "source": deps.source}
    layers = stored_layers(store, store.read_index(INDEX_VENV_LAYERS, key))
    if layers is None:
        entries = wheels.venv_entries(run.engine, builder, deps, scratch / "venv")
        layers = [dependency_layer(store, part) for part in dependencies.split(entries)]
        doc = {"layers": [la.to_doc() for la in layers], "marker": marker}
        store.write_index(INDEX_VENV_LAYERS, key, doc)
    run.remote.remember(records.VENV, key, layers, marker)
    return layers


def venv_layers_key(dependency_key: str) -> str:
    return hashlib.sha256(f"{DEPENDENCY_LAYERS_RECIPE}\0{dependency_key}".encode()).hexdigest()


def _venv_as_layers(
    run: _Build, builder: wheels.BuilderImage, base_id: str
) -> wheels.Dependencies | None:
    """The dependency set as recorded layers, no venv volume made, when nothing of this
    build needs one: the project has no wheel of its own to build against the venv, the
    engine has no volume of the key (a fresh runner), and both the layers and the
    shared-library check's answer for them are recorded (host cache or registry cache).
    Filling a volume costs a second write of every venv file (the check image's load is
    the first): seconds for a large venv on a slow disk."""
    plan, store = run.plan, run.store
    if plan.install_project:
        return None
    inputs, key, volume = wheels.planned_venv(plan, builder)
    if run.engine.volume_labels(volume) is not None:
        return None  # the engine has it, or another build is filling it
    restored = _restored_venv(run, key)
    if restored is None:
        return None
    deps = wheels.Dependencies(
        key, volume, tuple(restored.marker["pins"]), inputs.source, True, builder,
        bool(restored.marker["compilers"]), restored_from=restored.origin, filled=False,
    )  # fmt: skip
    facts = run.engine.inspect_image(plan.base_image)
    libs_key = _libs_key(plan, deps, base_id, facts.env if facts else ())
    if sharedlibs.LibraryCheck.from_doc(store.read_index(INDEX_SHARED_LIBS, libs_key)):
        return deps
    record = run.remote.restore(records.LIBS, libs_key, fetch=False)
    if record is None or sharedlibs.LibraryCheck.from_doc(record.document) is None:
        return None  # the volume is filled from the layers the restore just stored
    store.write_index(INDEX_SHARED_LIBS, libs_key, record.document)
    return deps


def _libs_key(
    plan: BuildPlan, deps: wheels.Dependencies, base_id: str, base_env: Iterable[str]
) -> str:
    """The shared-library check's cache key, as sharedlibs.check_libraries computes it."""
    return sharedlibs.check_key(plan, deps, base_id, wheels.library_path(plan, base_env))


def _restored_venv(run: _Build, dependency_key: str) -> wheels.RestoredVenv | None:
    """The venv of `dependency_key` made before, for an empty volume: from the host
    store's layers when it has them with their marker (the engine lost its volumes, the
    host cache kept its layers), else from the registry cache's record."""
    store, key = run.store, venv_layers_key(dependency_key)
    doc = store.read_index(INDEX_VENV_LAYERS, key)
    layers = stored_layers(store, doc)
    marker = doc.get("marker") if isinstance(doc, dict) else None
    if layers is None or not is_marker(marker) or not all(store.has(la.diff_id) for la in layers):
        record = run.remote.restore(records.VENV, key)
        if record is None or not is_marker(record.document):
            return None
        layers, marker = list(record.layers), record.document
        doc = {"layers": [la.to_doc() for la in layers], "marker": marker}
        store.write_index(INDEX_VENV_LAYERS, key, doc)
        origin = "the registry cache"
    else:
        origin = "the host cache's layers"
    assert isinstance(marker, dict)  # noqa: S101 - is_marker said so
    return wheels.RestoredVenv(tuple(store.path(la.diff_id) for la in layers), marker, origin)


def is_marker(doc: Any) -> bool:
    """An install's marker as records keep it: its pins (strings) and whether it needed
    the full builder."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("pins"), list)
        and all(isinstance(pin, str) for pin in doc["pins"])
        and isinstance(doc.get("compilers"), bool)
    )


def stored_layers(store: BlobStore, doc: Any) -> list[Layer] | None:
    """The layers of a `venv-layers` entry, or None when it is not one or a blob is gone."""
    docs = doc.get("layers") if isinstance(doc, dict) else None
    if not isinstance(docs, list) or not docs:
        return None
    layers = [Layer.from_doc(item) for item in docs]
    if any(layer is None or not store.has(layer.digest) for layer in layers):
        return None
    return [layer for layer in layers if layer is not None]


def dependency_layer(store: BlobStore, part: dependencies.Part) -> Layer:
    """One dependency layer, cached by its content: a distribution added to one group
    leaves the other layers' tar and gzip untouched."""
    key = dependencies.content_key(DEPENDENCY_LAYERS_RECIPE, part)
    cached = Layer.from_doc(store.read_index(INDEX_DEPENDENCY_LAYER, key))
    if cached is not None and store.has(cached.digest):
        return cached
    layer = assemble.layer(store, list(part.entries), part.role)
    store.write_index(INDEX_DEPENDENCY_LAYER, key, layer.to_doc())
    return layer


def _with_project(
    store: BlobStore,
    app: list[FileEntry],
    builder: wheels.BuilderImage,
    site_tar: Path,
    scratch: Path,
) -> Layer:
    """The app layer plus the project's own wheel, installed into site-packages."""
    site = f"{VENV.lstrip('/')}/{builder.python.site_packages}"
    with site_tar.open("rb") as handle:
        project_files = entries_from_tar(
            handle, strip_prefix="", dest_prefix=site, spool_dir=scratch / "project"
        )
    return assemble.layer(store, [*app, *project_files], "app")


def _setuid_key(image_id: str) -> str:
    return hashlib.sha256(f"{SETUID_RECIPE}\0{image_id}".encode()).hexdigest()


def cached_setuid_layer(store: BlobStore, plan: BuildPlan, image_id: str) -> list[Layer] | None:
    """The layer that drops the base's setuid/setgid bits, none when the base has no such
    files or `keep-setuid` is set; None when it must be made (it reads every base layer:
    cached by base image)."""
    if plan.keep_setuid:
        return []
    cached = store.read_index(INDEX_SETUID, _setuid_key(image_id))
    if isinstance(cached, dict) and cached.get("empty") is True:
        return []
    layer = Layer.from_doc(cached)
    if layer is not None and store.has(layer.digest):
        return [layer]
    return None


def setuid_layer(
    store: BlobStore, plan: BuildPlan, image_id: str, scans: list[assemble.LayerScan]
) -> list[Layer]:
    """The no-setuid layer from the base's layer scans, remembered by base image."""
    if plan.keep_setuid:
        return []
    key = _setuid_key(image_id)
    entries = assemble.unprivileged_entries(scans)
    if not entries:
        store.write_index(INDEX_SETUID, key, {"empty": True})
        return []
    layer = assemble.layer(store, entries, SETUID_ROLE)
    store.write_index(INDEX_SETUID, key, layer.to_doc())
    return [layer]


@dataclass(frozen=True)
class _Runtime:
    """The settled runtime packages, and the user's system layer when the library check
    made it (it is the final one when nothing was added)."""

    packages: sharedlibs.RuntimePackages
    user_layer: Layer | None = None
    libs_key: str = ""  # the library check's key and answer, for the registry cache
    libs: dict[str, Any] = field(default_factory=dict)


def _shared_libraries(run: _Build, base_id: str, deps: wheels.Dependencies) -> _Runtime:
    """The step between the install and the app check: the venv's ELF files against the
    runtime image's loader (base + the user's runtime packages); packages for what they
    miss are added (pydeploy.builder.sharedlibs). One progress line."""
    plan, engine, store = run.plan, run.engine, run.store
    made: list[Layer] = []
    with tempfile.TemporaryDirectory(prefix="pydeploy-libs-", dir=scratch_dir(store)) as tmp:

        def user_layer_tar() -> Path | None:
            if not plan.runtime_packages:
                return None
            layer = _system_layer(run, plan.runtime_packages, base_id)
            made.append(layer)
            return _uncompressed(store, layer, Path(tmp) / "system.tar")

        facts = engine.inspect_image(plan.base_image)
        inputs = sharedlibs.ScanInputs(
            plan.base_image, base_id, facts.env if facts else (), user_layer_tar
        )
        check = sharedlibs.check_libraries(
            sharedlibs.LibraryRun(engine, plan, deps, run.clock.stage_progress()), store, inputs
        )
    settled = sharedlibs.settle(plan, check)
    run.clock.step("shared libraries", sharedlibs.describe(check, settled))
    libs_key = _libs_key(plan, deps, base_id, inputs.base_env)
    return _Runtime(settled, made[0] if made else None, libs_key, check.to_doc())


def _system_layer(run: _Build, packages: tuple[str, ...], base_id: str) -> Layer:
    from pydeploy.layers import system as syspkgs  # noqa: PLC0415

    return syspkgs.system_layer(
        run.engine, run.store, run.plan, base_id, run.clock.stage_progress(),
        packages=packages, remote=run.remote,
    )  # fmt: skip


def _system_layers(run: _Build, runtime: _Runtime, base_id: str) -> list[Layer]:
    packages = runtime.packages.packages
    if not packages:
        return []
    if runtime.user_layer is not None and not runtime.packages.automatic:
        return [runtime.user_layer]
    return [_system_layer(run, packages, base_id)]
