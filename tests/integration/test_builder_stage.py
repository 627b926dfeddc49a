"""The builder stage against a real engine and the local Debian base image: builder
images, dependency venvs in volumes, C extensions compiled in the builder, the app
import check, secrets, failures and interrupts.

One builder image (default build packages) is shared by the session; the uv cache volume
is shared too, so only the first test pays for downloads. Everything the session created
(builder images, venv volumes, the cache volume when it did not exist before) is removed
at the end; set PYDEPLOY_TEST_KEEP_CACHE=1 to keep the builder images and the cache
volume between local runs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import io
import json
import marshal
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import docker
import docker.errors
import pytest

import pydeploy.progress
from pydeploy import build, cachekeys
from pydeploy.builder import stage as wheels
from pydeploy.builder.credentials import index_settings
from pydeploy.builder.transcript import Reporting
from pydeploy.cachekeys import BUILD_LABEL
from pydeploy.config.project import load_project
from pydeploy.engine.client import Box, Engine
from pydeploy.engine.types import Mount, Outcome
from pydeploy.errors import (
    AppCheckError,
    BaseImageError,
    BuildError,
    CompileError,
    ConfigError,
    InterruptError,
)
from pydeploy.oci.layer import open_uncompressed
from pydeploy.plan import depinputs, servers
from pydeploy.plan.index import CA_ENV_VARS, find_ca_bundle
from pydeploy.plan.planner import BuildPlan, Overrides, make_plan
from pydeploy.publish import outputs as publish

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SITE = "venv/lib/python3.11/site-packages"


# --- session plumbing -------------------------------------------------------------------


class Created:
    """Builder images and venv volumes this session's tests made, removed at the end.
    Tracked by name (not by "what appeared meanwhile"), so another test session on the
    same engine keeps its own."""

    def __init__(self) -> None:
        self.images: set[str] = set()
        self.volumes: set[str] = set()


CREATED = Created()


@pytest.fixture(scope="session")
def engine(docker_client: docker.DockerClient, ca_bundle: Path) -> Iterator[Engine]:
    """An Engine for the session; builder containers trust the host's CA bundle (the
    proxy's CA), as `pydeploy build` does from SSL_CERT_FILE."""
    cache_existed = any(v.name == cachekeys.CACHE_VOLUME for v in docker_client.volumes.list())
    probes = {v.name for v in docker_client.volumes.list()}
    with pytest.MonkeyPatch.context() as patch:
        if not Path(os.environ.get("SSL_CERT_FILE", "/nonexistent")).is_file():
            patch.setenv("SSL_CERT_FILE", str(ca_bundle))
        stage = Engine.connect()
        yield stage
        stage.cleanup()
        stage.close()
    keep = os.environ.get("PYDEPLOY_TEST_KEEP_CACHE") == "1"
    volumes = set(CREATED.volumes)
    if not cache_existed and not keep:
        volumes.add(cachekeys.CACHE_VOLUME)
    if not keep:  # the base image's interpreter facts, if this session probed it first
        volumes |= {
            v.name
            for v in docker_client.volumes.list()
            if v.name.startswith(cachekeys.PYTHON_VOLUME_PREFIX) and v.name not in probes
        }
    # Gone already, or in use by another session on this engine (the shared cache): both
    # are fine, that session cleans up after itself.
    for volume in sorted(volumes):
        with contextlib.suppress(docker.errors.APIError):
            docker_client.volumes.get(volume).remove(force=True)
    for image in sorted(CREATED.images) if not keep else ():
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(image, force=True)


def builder_images(engine: Engine) -> set[str]:
    return {t for i in engine.client.images.list(name=cachekeys.BUILDER_REPOSITORY) for t in i.tags}


@contextlib.contextmanager
def tracking_builders(engine: Engine) -> Iterator[None]:
    """Remember the builder images made inside the block (for cleanup)."""
    existed = builder_images(engine)
    try:
        yield
    finally:
        CREATED.images.update(builder_images(engine) - existed)


def ensure_builder(engine: Engine, plan: BuildPlan, progress: Progress) -> wheels.BuilderImage:
    """wheels.ensure_builder (the base image, unless the full builder exists already)."""
    with tracking_builders(engine):
        return wheels.ensure_builder(engine, plan, progress)


def ensure_full_builder(engine: Engine, plan: BuildPlan, progress: Progress) -> wheels.BuilderImage:
    """wheels.ensure_full_builder, remembering a builder image it had to create."""
    with tracking_builders(engine):
        return wheels.ensure_full_builder(engine, plan, progress)


@pytest.fixture(autouse=True)
def _no_containers_left(engine: Engine) -> Iterator[None]:
    """Every test: the stage leaves no container of its build behind."""
    yield
    assert engine.containers_with_label() == [], "builder containers were left behind"


def plan_for(project: Path, base_image: str) -> BuildPlan:
    """As `pydeploy build` plans: with the host environment (the engine fixture's CA)."""
    return make_plan(load_project(project), Overrides(base_image=base_image), os.environ)


class Progress:
    """Records progress calls (and verbose output) as the CLI would print them."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, float, str | None]] = []
        self.lines: list[str] = []

    def __call__(self, step: str, elapsed: float, detail: str | None) -> None:
        self.steps.append((step, elapsed, detail))

    def names(self) -> list[str]:
        return [step for step, _, _ in self.steps]

    def text(self) -> str:
        return "\n".join([f"{s} {e:.2f} {d}" for s, e, d in self.steps] + self.lines)


@pytest.fixture
def builder(engine: Engine, base_image: str) -> wheels.BuilderImage:
    """The builder for the default build packages, shared by most tests: the base image
    (light) until some test needed the full builder image, that one afterwards."""
    plan = plan_for(FIXTURES / "pure_app", base_image)
    progress = Progress()
    built = ensure_builder(engine, plan, progress)
    assert progress.names() == ["builder image"]
    return built


@pytest.fixture
def full_builder(engine: Engine, base_image: str) -> wheels.BuilderImage:
    """The full builder image for the default build packages (compilers)."""
    built = ensure_full_builder(engine, plan_for(FIXTURES / "pure_app", base_image), Progress())
    assert not built.light
    assert built.name.startswith(f"{cachekeys.BUILDER_REPOSITORY}:")
    return built


def copy_fixture(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(FIXTURES / name, dest)
    return dest


def venv_volume(engine: Engine, plan: BuildPlan, builder: wheels.BuilderImage) -> str:
    inputs = depinputs.dependency_inputs(plan)
    key = depinputs.dependency_key(
        builder.key,
        inputs,
        servers.plan_packages(plan),
        index_settings(plan.index),
    )
    name = cachekeys.VENV_VOLUME_PREFIX + key[:16]
    CREATED.volumes.add(name)
    return name


@pytest.fixture(scope="module")
def host_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One host cache for the module's whole builds (the base image is imported once)."""
    return tmp_path_factory.mktemp("host-cache")


def built(
    engine: Engine, plan: BuildPlan, cache: Path, tmp_path: Path, progress: Progress | None = None
) -> build.BuildResult:
    """A whole build into an OCI layout: only a build assembles the runtime image the
    app check runs in."""
    options = build.BuildOptions(
        outputs=(publish.Output("oci", tmp_path / "oci"),), cache_dir=cache
    )
    return build.build(plan, engine, options, progress or Progress())


def layer_files(result: build.BuildResult, role: str) -> dict[str, bytes]:
    """The regular files of the image's layer of `role`, by path."""
    (layer,) = [la for la in result.image.layers if la.role == role]
    found: dict[str, bytes] = {}
    with (
        open_uncompressed(result.image.store, layer) as handle,
        tarfile.open(fileobj=cast("IO[bytes]", handle), mode="r|") as tar,
    ):
        for member in tar:
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is not None:
                found[member.name] = extracted.read()
    return found


def install(
    engine: Engine,
    plan: BuildPlan,
    builder: wheels.BuilderImage,
    progress: pydeploy.progress.Progress,
    **options: Any,
) -> wheels.Dependencies:
    """wheels.install_dependencies, with the venv volume (and a full builder image it
    had to make) registered for cleanup."""
    venv_volume(engine, plan, builder)
    with tracking_builders(engine):
        return wheels.install_dependencies(engine, plan, builder, Reporting(progress, **options))


def tar_contents(path: Path) -> dict[str, tuple[str, int, str]]:
    """name -> (type, mode, sha256 of the content or the link target)."""
    found: dict[str, tuple[str, int, str]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() else None
            data = handle.read() if handle else member.linkname.encode()
            found[member.name] = (
                member.type.decode(),
                member.mode,
                hashlib.sha256(data).hexdigest(),
            )
    return found


def read_member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        handle = tar.extractfile(name)
        assert handle is not None, name
        return handle.read()


def marker_of(engine: Engine, builder: wheels.BuilderImage, volume: str) -> bytes | None:
    with engine.container(
        builder.name,
        ["/bin/true"],
        mounts=[Mount("/opt/venv", volume, read_only=True)],
        network="none",
    ) as box:
        return box.read_file(f"/opt/venv/{cachekeys.MARKER}")


# --- dependency sources -------------------------------------------------------------------


def test_pure_python_project_installs_once_and_reproducibly(
    engine: Engine, builder: wheels.BuilderImage, base_image: str, tmp_path: Path, host_cache: Path
) -> None:
    plan = plan_for(FIXTURES / "pure_app", base_image)
    assert plan.dependency_source == "project"
    engine.remove_volume(venv_volume(engine, plan, builder))  # a real first install

    first_progress = Progress()
    started = time.monotonic()
    first = install(engine, plan, builder, first_progress)
    first_seconds = time.monotonic() - started
    assert not first.cached
    # The base image is the builder unless a compiler image for this base already exists
    # on the engine (then it is reused); only a base-image install reports that it needed
    # no compilers.
    expected = ["uv tools", "resolve", "install", "compile bytecode"]
    assert first_progress.names() == expected + (["builder"] if builder.light else [])
    if builder.light:
        assert "no compilers needed" in str(first_progress.steps[-1][2])
    names = {pin.split("==")[0] for pin in first.pins}
    assert {"itsdangerous", "packaging", "gunicorn"} <= names, first.pins
    assert all("==" in pin for pin in first.pins), "project deps are resolved to pins"

    second_progress = Progress()
    started = time.monotonic()
    second = install(engine, plan, builder, second_progress)
    cached_seconds = time.monotonic() - started
    print(f"\npure_app dependencies: first {first_seconds:.2f}s, cached {cached_seconds:.2f}s")
    assert second.cached
    assert (second.key, second.volume, second.pins) == (first.key, first.volume, first.pins)
    assert second_progress.names() == ["install"]
    assert cached_seconds < first_seconds

    venv_a = wheels.export_venv(engine, builder, first, tmp_path / "a.tar")
    contents = tar_contents(venv_a)
    assert f"venv/{cachekeys.MARKER}" not in contents
    assert f"venv/{cachekeys.USED}" not in contents, "the last-use record stays in the volume"
    assert "venv/bin/python" in contents
    assert read_member(venv_a, "venv/pyvenv.cfg").startswith(b"home = /usr/bin\n")
    assert not [n for n in contents if n.endswith((".whl", "/.lock"))]
    assert not [n for n in contents if n.startswith(f"{SITE}/pip/")], "no pip in the venv"
    # Hash-based .pyc (PEP 552 flags 0b01: unchecked-hash), no timestamps.
    pyc = read_member(venv_a, f"{SITE}/itsdangerous/__pycache__/signer.cpython-311.pyc")
    assert int.from_bytes(pyc[4:8], "little") == 1
    script = read_member(venv_a, "venv/bin/gunicorn")
    assert script.startswith(b"#!/opt/venv/bin/python"), "shebangs are the runtime paths"

    # A clean rebuild of the same key gives byte-identical files.
    engine.remove_volume(first.volume)
    third = install(engine, plan, builder, Progress())
    assert not third.cached
    venv_b = wheels.export_venv(engine, builder, third, tmp_path / "b.tar")
    assert tar_contents(venv_b) == contents

    checked = built(engine, plan, host_cache, tmp_path)
    assert checked.interface == "wsgi"
    assert checked.memory is not None
    assert checked.memory.origin == "measured at build"
    assert checked.memory.worker_mib is not None
    assert checked.memory.master_mib is not None


def test_a_wheels_only_project_never_makes_the_compiler_image(
    engine: Engine, base_image: str, tmp_path: Path, host_cache: Path
) -> None:
    """Every dependency ships a wheel: the base image is the builder, and the build
    packages (here one that does not even exist) are never installed."""
    project = copy_fixture("pure_app", tmp_path)
    pyproject = project / "pyproject.toml"
    never = f"pydeploy-never-installed-{uuid.uuid4().hex[:8]}"
    text = pyproject.read_text(encoding="utf-8").replace(
        'app = "app:app"', f'app = "app:app"\nbuild-packages = ["gcc", "libc6-dev", "{never}"]'
    )
    pyproject.write_text(text, encoding="utf-8")
    plan = plan_for(project, base_image)
    progress = Progress()
    builder = ensure_builder(engine, plan, progress)
    assert builder.light
    assert builder.name == base_image
    assert builder.python.executable == "/usr/bin/python3"
    engine.remove_volume(venv_volume(engine, plan, builder))
    deps = install(engine, plan, builder, progress)
    assert not deps.cached
    assert deps.builder == builder
    assert not deps.needs_compilers
    assert ("builder", "base image (no compilers needed)") in [
        (step, detail) for step, _, detail in progress.steps
    ]
    checked = built(engine, plan, host_cache, tmp_path)
    assert checked.interface == "wsgi"
    # The key is new (a unique package name): no image of it before, none after.
    assert not [t for t in builder_images(engine) if t.endswith(builder.key)]
    # The venv's key does not depend on which builder installed it.
    assert deps.key == depinputs.dependency_key(
        builder.key,
        depinputs.dependency_inputs(plan),
        servers.plan_packages(plan),
        index_settings(plan.index),
    )
    assert install(engine, plan, builder, Progress()).cached


def test_a_c_extension_escalates_to_the_full_builder(
    docker_client: docker.DockerClient,
    engine: Engine,
    base_image: str,
    tmp_path: Path,
    host_cache: Path,
) -> None:
    """The base image has no compiler: the light attempt notices the compile and the
    dependencies are installed in the full builder, which the app check then uses."""
    project = copy_fixture("cext_app", tmp_path)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8").replace(
        'app = "app:app"', 'app = "app:app"\nbuild-packages = ["gcc", "libc6-dev", "file"]'
    )
    pyproject.write_text(text, encoding="utf-8")
    plan = plan_for(project, base_image)
    with tracking_builders(engine):
        light = wheels.ensure_builder(engine, plan, Progress())
        if not light.light:  # a full builder of this key from an earlier run
            docker_client.images.remove(light.name, force=True)
            light = wheels.ensure_builder(engine, plan, Progress())
    assert light.light
    engine.remove_volume(venv_volume(engine, plan, light))
    progress = Progress()
    deps = install(engine, plan, light, progress)
    assert not deps.builder.light
    assert deps.needs_compilers
    assert deps.builder.name == f"{cachekeys.BUILDER_REPOSITORY}:{light.key}"
    assert "gcc" in deps.builder.packages
    switched = [d or "" for step, _, d in progress.steps if step == "builder"]
    assert len(switched) == 1, progress.text()
    assert "a build ran a compiler" in switched[0], switched
    assert "gcc" in switched[0]
    venv = tar_contents(wheels.export_venv(engine, light, deps, tmp_path / "venv.tar"))
    assert [n for n in venv if n.startswith(f"{SITE}/fastsum.") and n.endswith(".so")]
    # The extension imports in the runtime image, where no compiler is.
    checked = built(engine, plan, host_cache, tmp_path)
    assert checked.interface == "wsgi"
    # Cached: the marker remembers that the full builder was needed.
    again = install(engine, plan, light, Progress())
    assert (again.cached, again.needs_compilers) == (True, True)


def test_local_c_extension_is_compiled_into_a_wheel(
    engine: Engine, builder: wheels.BuilderImage, base_image: str, tmp_path: Path, host_cache: Path
) -> None:
    plan = plan_for(FIXTURES / "cext_app", base_image)
    assert plan.dependency_source == "requirements"
    deps = install(engine, plan, builder, Progress())
    assert any(pin.startswith("fastsum") for pin in deps.pins), deps.pins
    venv = tar_contents(wheels.export_venv(engine, builder, deps, tmp_path / "venv.tar"))
    extensions = [n for n in venv if n.startswith(f"{SITE}/fastsum.") and n.endswith(".so")]
    assert extensions, "the C extension was built and installed"
    # `-e ./vendor/fastsum` in requirements.txt must not become an editable install.
    assert not [n for n in venv if "__editable__" in n or n.endswith(".pth")]
    checked = built(engine, plan, host_cache, tmp_path)
    assert checked.interface == "wsgi"  # app.py calls fastsum.add() at import


def test_compiled_extension_is_identical_across_clean_builds(
    engine: Engine,
    builder: wheels.BuilderImage,
    base_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two builds with nothing cached (fresh uv cache volumes): same venv bytes, the
    compiled extension included (no build paths or timestamps in it)."""
    plan = plan_for(FIXTURES / "cext_app", base_image)
    volume = venv_volume(engine, plan, builder)
    results = []
    for attempt in ("a", "b"):
        cache = f"pydeploy-test-cache-{uuid.uuid4().hex[:8]}"
        CREATED.volumes.add(cache)
        monkeypatch.setattr(wheels, "CACHE_VOLUME", cache)
        engine.remove_volume(volume)
        try:
            deps = install(engine, plan, builder, Progress())
            assert not deps.cached
            venv = wheels.export_venv(engine, builder, deps, tmp_path / f"{attempt}.tar")
            results.append(tar_contents(venv))
        finally:
            engine.remove_volume(cache)
    assert [n for n in results[0] if n.endswith(".so")], "an extension was compiled"
    assert results[0] == results[1]


def test_psycopg2_compiles_from_its_sdist(
    engine: Engine, builder: wheels.BuilderImage, base_image: str, tmp_path: Path, host_cache: Path
) -> None:
    plan = plan_for(FIXTURES / "psycopg_app", base_image)
    progress = Progress()
    own = ensure_builder(engine, plan, progress)
    assert own.key != builder.key, "build packages are part of the builder's key"
    deps = install(engine, plan, own, progress)
    # psycopg2 ships no wheel: the base image alone cannot install it.
    assert not deps.builder.light
    assert deps.builder.name != builder.name
    facts = engine.inspect_image(deps.builder.name)
    assert facts is not None
    packages = facts.labels[cachekeys.LABEL_PACKAGES].split()
    assert {"libpq-dev", "python3-dev", "gcc"} <= set(packages)
    assert any(pin.startswith("psycopg2==2.9.") for pin in deps.pins), deps.pins
    checked = built(engine, plan, host_cache, tmp_path)
    # app.py imports psycopg2.extensions: libpq5 (runtime-packages) is in the image.
    assert checked.interface == "wsgi"


def test_uv_lock_project_and_its_own_wheel(
    engine: Engine, builder: wheels.BuilderImage, base_image: str, tmp_path: Path, host_cache: Path
) -> None:
    plan = plan_for(FIXTURES / "uvlock_app", base_image)
    assert (plan.dependency_source, plan.install_project) == ("uv.lock", True)
    deps = install(engine, plan, builder, Progress())
    assert "itsdangerous==2.2.0" in deps.pins, "the locked version, not the newest"
    assert not [p for p in deps.pins if p.startswith("uvlock")], "the project is not a dep"
    checked = built(engine, plan, host_cache, tmp_path)
    assert checked.interface == "asgi"
    app_layer = layer_files(checked, "app")
    prefix = f"{SITE.replace('venv/', 'opt/venv/', 1)}/"
    site = {n.removeprefix(prefix): data for n, data in app_layer.items() if n.startswith(prefix)}
    assert {
        "uvlock_app/__init__.py",
        "uvlock_app/main.py",
        "uvlock_app/__pycache__/main.cpython-311.pyc",
        "uvlock_app-0.1.0.dist-info/METADATA",
    } <= set(site)
    assert not [n for n in site if n.startswith(("bin", "project-site", "/")) or n == ".lock"]
    pyc = site["uvlock_app/__pycache__/main.cpython-311.pyc"]
    code = marshal.loads(pyc[16:])  # noqa: S302 - a .pyc this test just built
    assert code.co_filename == "/opt/venv/lib/python3.11/site-packages/uvlock_app/main.py"


def test_pylock_project_with_a_local_directory(
    engine: Engine, builder: wheels.BuilderImage, base_image: str, tmp_path: Path, host_cache: Path
) -> None:
    plan = plan_for(FIXTURES / "pylock_app", base_image)
    assert plan.dependency_source == "pylock"
    deps = install(engine, plan, builder, Progress())
    assert "itsdangerous==2.2.0" in deps.pins
    assert any(pin.startswith("localpkg") for pin in deps.pins), deps.pins
    checked = built(engine, plan, host_cache, tmp_path)
    assert checked.interface == "wsgi"  # app.py imports localpkg


# --- failures ------------------------------------------------------------------------------


def test_compile_failure_names_package_and_build_packages(
    engine: Engine, builder: wheels.BuilderImage, base_image: str
) -> None:
    plan = plan_for(FIXTURES / "badext_app", base_image)
    with pytest.raises(CompileError) as caught:
        install(engine, plan, builder, Progress())
    message = caught.value.message
    print(f"\n{message}")
    assert caught.value.exit_code == 6
    assert "`badext`" in message
    assert "badext.c:9:" in message, "the compiler's own lines"
    assert "tool.pydeploy.build-packages" in message
    assert len(message.splitlines()) <= 30
    assert caught.value.output is not None
    assert "badext.c" in caught.value.output
    # The half-built venv is not kept as a cache entry.
    assert engine.volume_labels(venv_volume(engine, plan, builder)) is None


def test_unknown_dependency_shows_the_resolver_message(
    engine: Engine, builder: wheels.BuilderImage, base_image: str, tmp_path: Path
) -> None:
    project = copy_fixture("pure_app", tmp_path)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(
        text.replace('"packaging>=23"', '"pydeploy-no-such-package-xyz>=1"'), encoding="utf-8"
    )
    with pytest.raises(BuildError) as caught:
        install(engine, plan_for(project, base_image), builder, Progress())
    assert type(caught.value) is BuildError
    assert "pydeploy-no-such-package-xyz" in caught.value.message
    assert "not found in the package registry" in caught.value.message
    assert "Traceback" not in caught.value.message


@pytest.mark.parametrize(
    ("target", "expected"),
    [("app:nope", "has no attribute 'nope'"), ("no_such_module:app", "ModuleNotFoundError")],
)
def test_wrong_app_target_fails_the_build(
    engine: Engine,
    builder: wheels.BuilderImage,
    base_image: str,
    tmp_path: Path,
    target: str,
    expected: str,
    host_cache: Path,
) -> None:
    project = copy_fixture("pure_app", tmp_path)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(text.replace('app = "app:app"', f'app = "{target}"'), encoding="utf-8")
    plan = plan_for(project, base_image)
    install(engine, plan, builder, Progress())
    with pytest.raises(AppCheckError) as caught:
        built(engine, plan, host_cache, tmp_path)
    assert caught.value.exit_code == 7
    assert "tool.pydeploy.app" in caught.value.message
    assert target in caught.value.message
    assert expected in caught.value.message
    assert "builder_script" not in caught.value.message, "pydeploy's own frames are hidden"


def test_missing_base_image_says_what_was_tried(engine: Engine, free_port: int) -> None:
    name = f"127.0.0.1:{free_port}/pydeploy-no-such-image:1"
    with pytest.raises(BaseImageError) as caught:
        engine.ensure_image(name)
    message = caught.value.message
    assert caught.value.exit_code == 4
    assert name in message
    assert "local engine" in message
    assert "--base" in message
    assert "docker pull" in message


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ('python = "3.12"', "`tool.pydeploy.python` asks for Python 3.12"),
        ('build-packages = ["gcc", "pydeploy-no-such-deb"]', "pydeploy-no-such-deb"),
    ],
)
def test_builder_image_problems_name_the_key(
    engine: Engine, base_image: str, tmp_path: Path, setting: str, expected: str
) -> None:
    project = copy_fixture("pure_app", tmp_path)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(
        text.replace('app = "app:app"', f'app = "app:app"\n{setting}'), encoding="utf-8"
    )
    plan = plan_for(project, base_image)
    with pytest.raises((ConfigError, BuildError)) as caught:
        # The Python check happens for any builder; apt runs for the full one only.
        ensure_full_builder(engine, plan, Progress())
    message = caught.value.message
    assert expected in message
    if "python" in setting:
        assert isinstance(caught.value, ConfigError)
        assert "3.11.2" in message, "the base image's version"
        assert base_image in message
    else:
        assert type(caught.value) is BuildError
        assert "tool.pydeploy.build-packages" in message
        assert "Unable to locate package" in message, "apt's own words"


def test_requires_python_is_checked_against_the_base(
    engine: Engine, builder: wheels.BuilderImage, base_image: str, tmp_path: Path
) -> None:
    project = copy_fixture("pure_app", tmp_path)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(text.replace('">=3.10"', '">=3.12"'), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        ensure_builder(engine, plan_for(project, base_image), Progress())
    assert "requires-python" in caught.value.message
    assert f"base image {base_image}" in caught.value.message


def test_a_python_version_file_the_base_does_not_match_is_refused(
    engine: Engine, builder: wheels.BuilderImage, base_image: str, tmp_path: Path
) -> None:
    project = copy_fixture("pure_app", tmp_path)
    (project / ".python-version").write_text("3.12\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        ensure_builder(engine, plan_for(project, base_image), Progress())
    message = caught.value.message
    assert f"{project / '.python-version'} pins Python 3.12" in message
    assert f"`{base_image}` has Python 3.11.2" in message
    assert 'tool.pydeploy.python = "3.11"' in message


# --- secrets -----------------------------------------------------------------------------


def _wheel(dest: Path, name: str, version: str) -> Path:
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": b"VALUE = 'from the private index'\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    wheel = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


@contextlib.contextmanager
def private_index(wheel: Path, user: str, password: str) -> Iterator[tuple[str, list[str]]]:
    """A PEP 503 index on 127.0.0.1 serving one wheel, only with Basic auth. Yields its
    URL and the paths requested with the right credentials."""
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    project = wheel.name.split("-")[0]
    authorized: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.do_GET(head=True)

        def do_GET(self, head: bool = False) -> None:
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="private"')
                self.end_headers()
                return
            authorized.append(self.path)
            if self.path.rstrip("/") == f"/simple/{project}":
                body = f'<a href="/files/{wheel.name}">{wheel.name}</a>'.encode()
                kind = "text/html"
            elif self.path == f"/files/{wheel.name}":
                body, kind = wheel.read_bytes(), "application/octet-stream"
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args  # quiet: the test reads `authorized`

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple", authorized
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class Seen:
    """One container a RecordingEngine created: `docker inspect` right after creation,
    and, read just before its removal, the CA file and (install containers) the names
    and modes of the dependency inputs it received."""

    argv: list[str]
    inspect: dict[str, Any]
    ca: bytes | None = None
    inputs: dict[str, int] | None = None

    @property
    def command(self) -> str:
        return " ".join(self.argv)


class RecordingEngine(Engine):
    """Records every container it creates (no behaviour changed)."""

    def __init__(self, client: docker.DockerClient) -> None:
        super().__init__(client)
        self.seen: list[Seen] = []

    @contextlib.contextmanager
    def container(self, image: str, argv: list[str], **kwargs: Any) -> Iterator[Box]:
        with super().container(image, argv, **kwargs) as box:
            seen = Seen(argv, self.client.api.inspect_container(box.id))
            self.seen.append(seen)
            yield box
            seen.ca = box.read_file(wheels.CA_TARGET)
            if argv[2:3] == ["install"]:
                with tarfile.open(fileobj=io.BytesIO(b"".join(box.get_archive(wheels.SRC)))) as tar:
                    seen.inputs = {m.name: m.mode for m in tar}


def host_mounts(seen: Seen) -> list[Any]:
    """Everything in a container's HostConfig that names a host path."""
    host = seen.inspect["HostConfig"]
    binds = list(host.get("Binds") or [])
    mounts = [m for m in host.get("Mounts") or [] if m.get("Type") not in {"volume", "tmpfs"}]
    return binds + mounts


def test_index_secret_never_leaks(
    docker_client: docker.DockerClient,
    engine: Engine,
    builder: wheels.BuilderImage,
    base_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    host_cache: Path,
) -> None:
    secret = f"pdt-secret-{uuid.uuid4().hex}"
    user = "pydeploy-test-user"
    monkeypatch.setenv("PYDEPLOY_TEST_SECRET_USER", user)
    monkeypatch.setenv("PYDEPLOY_TEST_SECRET_TOKEN", secret)
    wheel = _wheel(tmp_path, "secretdep", "1.0")
    project = copy_fixture("pure_app", tmp_path)
    spy = RecordingEngine(docker.from_env())
    progress = Progress()
    with private_index(wheel, user, secret) as (url, authorized):
        pyproject = project / "pyproject.toml"
        text = pyproject.read_text(encoding="utf-8").replace(
            '"packaging>=23"', '"packaging>=23", "secretdep==1.0"'
        )
        text += textwrap.dedent(
            f"""
            [tool.pydeploy.index]
            extra-urls = ["{url}"]
            username-env = "PYDEPLOY_TEST_SECRET_USER"
            password-env = "PYDEPLOY_TEST_SECRET_TOKEN"
            """
        )
        pyproject.write_text(text, encoding="utf-8")
        plan = plan_for(project, base_image)
        try:
            deps = install(spy, plan, builder, progress, verbose=True, output=progress.lines.append)
            venv = wheels.export_venv(spy, builder, deps, tmp_path / "venv.tar")
            checked = built(spy, plan, host_cache, tmp_path, progress)
            marker = marker_of(spy, builder, deps.volume)
        finally:
            spy.cleanup()
            spy.close()
    assert "secretdep==1.0" in deps.pins
    assert f"/files/{wheel.name}" in authorized, "the credentials reached the index"

    found: list[str] = []

    def search(what: str, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        if secret.encode() in raw or base64.b64encode(f"{user}:{secret}".encode()) in raw:
            found.append(what)

    search("progress and verbose output", progress.text())
    search("dependencies result", repr(deps))
    search("app check result", repr(checked))
    search("completion marker (build metadata)", marker or b"")
    search("exported venv", venv.read_bytes())
    with tarfile.open(venv) as tar:
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() else None
            content = handle.read() if handle else member.linkname.encode()
            search(f"venv file {member.name}", member.name.encode() + b"\0" + content)
    for ref in {builder.name, base_image}:
        image = docker_client.images.get(ref)
        search(f"image {ref}", json.dumps(image.attrs))
        search(f"history {ref}", json.dumps(image.history()))
    assert spy.seen, "the spy saw the builder containers"
    for doc in (seen.inspect for seen in spy.seen):
        # Not even in the environment: the builder gets them on its stdin.
        search(f"container {doc['Id'][:12]} config", json.dumps(doc))
    assert found == []
    assert engine.containers_with_label() == []
    assert (
        docker_client.containers.list(all=True, filters={"label": f"{BUILD_LABEL}={spy.build_id}"})
        == []
    )


# --- interrupts and partial cache entries ----------------------------------------------------


INTERRUPTED_BUILD = """\
import os
import sys
from pathlib import Path
import pydeploy.progress
from pydeploy.builder import stage as wheels
from pydeploy.builder.transcript import Reporting
from pydeploy.engine.client import Engine
from pydeploy.plan.planner import Overrides, make_plan
from pydeploy.config.project import load_project

plan = make_plan(load_project(Path(sys.argv[1])), Overrides(base_image=sys.argv[2]), os.environ)
engine = Engine.connect()
print("build-id", engine.build_id, flush=True)
builder = wheels.ensure_builder(engine, plan, lambda *args: None)
try:
    wheels.install_dependencies(
        engine, plan, builder,
        Reporting(lambda step, elapsed, detail: print("step", step, flush=True)),
    )
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
print("finished", flush=True)
"""


def test_ctrl_c_removes_containers_and_the_partial_venv(
    docker_client: docker.DockerClient,
    engine: Engine,
    builder: wheels.BuilderImage,
    base_image: str,
) -> None:
    plan = plan_for(FIXTURES / "slow_app", base_image)
    volume = venv_volume(engine, plan, builder)
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED_BUILD, str(plan.project.root), base_image],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == "step resolve":
                break  # slowpkg's backend now sleeps for minutes inside `uv pip install`
        build_id = next(ln.split()[1] for ln in lines if ln.startswith("build-id"))
        label: dict[str, str | list[str] | bool] = {"label": f"{BUILD_LABEL}={build_id}"}
        assert docker_client.containers.list(filters=label), "the install is running"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # a failure above must not leak the pipe into a later test
    output = "\n".join(lines) + rest
    assert proc.returncode == 130, output
    assert "interrupted" in output
    assert docker_client.containers.list(all=True, filters=label) == []
    assert engine.volume_labels(volume) is None, "the partial venv volume was removed"


def test_cleanup_from_another_thread_interrupts_the_install(
    engine: Engine, builder: wheels.BuilderImage, base_image: str
) -> None:
    plan = plan_for(FIXTURES / "slow_app", base_image)
    other = Engine.connect()
    resolved = threading.Event()
    outcome: list[BaseException | wheels.Dependencies] = []

    def progress(step: str, elapsed: float, detail: str | None) -> None:
        if step == "resolve":
            resolved.set()

    def build() -> None:
        try:
            outcome.append(install(other, plan, builder, progress))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=build)
    worker.start()
    try:
        assert resolved.wait(timeout=180), "the install never got past resolve"
        time.sleep(1.0)
        assert other.containers_with_label(), "the install container is running"
        other.cleanup()
        worker.join(timeout=120)
        assert not worker.is_alive()
        assert len(outcome) == 1
        assert isinstance(outcome[0], InterruptError), outcome
        assert other.containers_with_label() == []
        other.cleanup()  # idempotent
        with pytest.raises(InterruptError), other.container(builder.name, ["/bin/true"]):
            pass
        volume = venv_volume(engine, plan, builder)
        assert engine.volume_labels(volume) is None or marker_of(engine, builder, volume) is None
    finally:
        other.cleanup()
        worker.join(timeout=60)
        other.close()


def test_follow_until_returns_at_done_and_the_container_goes_in_the_background(
    base_image: str,
) -> None:
    """The app check's end: once `done` holds after a line, follow_until returns without
    awaiting the exit (this container never exits by itself: it waits on its lifeline),
    and the container is removed in the background, gone once the engine settles; when
    `done` never holds, it is `follow`."""
    other = Engine.connect()
    lines: list[str] = []
    returned: list[object] = []
    waiting = ["/bin/sh", "-c", "echo first; echo done; echo never-read; exec cat >/dev/null"]

    def run() -> None:
        with other.container(base_image, waiting, network="none", stdin=b"") as box:
            returned.append(box.follow_until(lines.append, lambda: "done" in lines))
            returned.append(box.left_running)
        with other.container(base_image, ["/bin/sh", "-c", "echo one; exit 3"]) as box:
            returned.append(box.follow_until(lines.append, lambda: False))
            returned.append(box.left_running)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        worker.join(timeout=120)
        assert not worker.is_alive(), "follow_until kept reading after done"
        assert returned == [None, True, Outcome(3), False]
        assert lines == ["first", "done", "one"]
        other.settle()
        assert other.containers_with_label() == []
    finally:
        other.cleanup()
        worker.join(timeout=60)
        other.close()


def test_a_volume_without_marker_is_rebuilt(
    engine: Engine, builder: wheels.BuilderImage, base_image: str
) -> None:
    """What a killed build (SIGKILL, power loss) leaves: a volume without the marker."""
    plan = plan_for(FIXTURES / "pure_app", base_image)
    volume = venv_volume(engine, plan, builder)
    engine.remove_volume(volume)
    engine.create_volume(volume, {cachekeys.LABEL_VENV_KEY: "partial"})
    with engine.container(
        builder.name, ["/bin/true"], mounts=[Mount("/opt/venv", volume)], network="none"
    ) as box:
        box.put_files("/opt/venv/bin", {"python": b"half-written"})
    assert marker_of(engine, builder, volume) is None

    deps = install(engine, plan, builder, Progress())
    assert not deps.cached
    assert deps.volume == volume
    marker = marker_of(engine, builder, volume)
    assert marker is not None
    assert json.loads(marker)["key"] == deps.key
    assert install(engine, plan, builder, Progress()).cached


def test_concurrent_builds_of_one_dependency_set_install_once(
    engine: Engine, builder: wheels.BuilderImage, base_image: str, tmp_path: Path
) -> None:
    project = copy_fixture("pure_app", tmp_path)
    pyproject = project / "pyproject.toml"
    # A specifier that changes nothing but the key, so this test starts from no volume.
    unique = f'"packaging>=23,!=0.0.{uuid.uuid4().int % 10**9}"'
    text = pyproject.read_text(encoding="utf-8").replace('"packaging>=23"', unique)
    pyproject.write_text(text, encoding="utf-8")
    plan = plan_for(project, base_image)
    venv_volume(engine, plan, builder)
    barrier = threading.Barrier(2)
    results: list[wheels.Dependencies | BaseException] = []

    def build() -> None:
        own = Engine.connect()
        try:
            barrier.wait(timeout=60)
            results.append(wheels.install_dependencies(own, plan, builder, Reporting(Progress())))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            results.append(exc)
        finally:
            own.cleanup()
            own.close()

    workers = [threading.Thread(target=build) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert all(isinstance(r, wheels.Dependencies) for r in results), results
    done = [r for r in results if isinstance(r, wheels.Dependencies)]
    assert sorted(d.cached for d in done) == [False, True], "one installs, one reuses"
    assert done[0].pins == done[1].pins
    assert marker_of(engine, builder, done[0].volume) is not None


def test_builder_image_holds_no_ca_bundle(
    engine: Engine, full_builder: wheels.BuilderImage, docker_client: docker.DockerClient
) -> None:
    info = docker_client.images.get(full_builder.name).attrs
    assert not [e for e in info["Config"]["Env"] or [] if e.startswith(CA_ENV_VARS)]
    out = docker_client.containers.run(
        full_builder.name,
        ["/bin/sh", "-c", "cat /run/pydeploy/ca.pem 2>/dev/null | wc -c"],
        remove=True,
        network_mode="none",
    )
    assert out.strip() == b"0", "the CA's mountpoint stayed out of the committed layer"


# --- remote engines: no host path reaches any container ---------------------------------


def host_ca(project: Path) -> bytes:
    """The CA bundle a build of `project` sends into builder containers."""
    found = find_ca_bundle(None, project, os.environ)
    assert found is not None, "the engine fixture points SSL_CERT_FILE at the host bundle"
    return found[0].read_bytes()


def test_builder_image_is_committed_from_a_container_that_never_had_the_ca(
    docker_client: docker.DockerClient, engine: Engine, base_image: str, tmp_path: Path
) -> None:
    """Build packages: one container (with the CA, written into it) downloads them into
    a scratch volume, another one (no CA, no host path) installs them and is committed."""
    project = copy_fixture("pure_app", tmp_path)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    # A package set of its own, so this test really builds a builder image.
    text = text.replace('app = "app:app"', 'app = "app:app"\nbuild-packages = ["file"]')
    pyproject.write_text(text, encoding="utf-8")
    plan = plan_for(project, base_image)
    recorder = RecordingEngine(docker.from_env())
    try:
        progress = Progress()
        built = ensure_full_builder(recorder, plan, progress)
        if "(cached)" in progress.text():
            docker_client.images.remove(built.name, force=True)
            recorder.seen.clear()
            built = ensure_full_builder(recorder, plan, Progress())
        scratch = cachekeys.APT_VOLUME_PREFIX + recorder.build_id
        assert recorder.volume_labels(scratch) is None, "the scratch volume was removed"
    finally:
        recorder.cleanup()
        recorder.close()

    assert [host_mounts(seen) for seen in recorder.seen] == [[]] * len(recorder.seen)
    download = next(s for s in recorder.seen if "--download-only" in s.command)
    committed_id = docker_client.images.get(built.name).attrs["Container"]
    committed = next(s for s in recorder.seen if s.inspect["Id"] == committed_id)
    assert "--no-download" in committed.command
    assert download.ca == host_ca(project), "the download container got the CA as a file"
    assert committed.ca is None, "the committed container never received the CA"
    for seen in (download, committed):
        env = seen.inspect["Config"]["Env"] or []
        assert not [e for e in env if e.startswith(CA_ENV_VARS)]
        mounts = seen.inspect["HostConfig"]["Mounts"]
        assert mounts == [{"Type": "volume", "Source": scratch, "Target": wheels.APT_CACHE}]

    out = docker_client.containers.run(
        built.name,
        [
            "/bin/sh",
            "-c",
            (
                "file --version | head -1; ls /run/pydeploy 2>/dev/null | wc -l; "
                "find /var/cache/apt /var/lib/apt/lists -name '*.deb' -o -name '*_Packages*' "
                "| wc -l"
            ),
        ],
        remove=True,
        network_mode="none",
    )
    lines = out.decode().split()
    assert lines[0] == "file-5.44", out
    assert lines[-2:] == ["0", "0"], "no CA, package lists or .debs in the builder image"


def plant_junk(package: Path) -> dict[str, bytes]:
    """Files no dependency input may include (returned), and an executable tool whose
    mode (0o750) must reach the builder as it is on the host."""
    junk = {
        ".git/objects/pack/big.pack": b"\0" * (1 << 20),
        ".venv/pyvenv.cfg": b"home = /usr/bin\n",
        "node_modules/left-pad/index.js": b"",
        "__pycache__/mod.cpython-311.pyc": b"",
        ".env": b"TOKEN=not-for-the-builder\n",
        "debug.log": b"ignored by .gitignore\n",
    }
    for name, data in junk.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_bytes(data)
    (package / ".gitignore").write_text("*.log\n", encoding="utf-8")
    tool = package / "tools" / "gen.sh"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n", encoding="utf-8")
    tool.chmod(0o750)
    return junk


@pytest.mark.parametrize("case", ["workspace member", "local path package"])
def test_a_build_mounts_no_host_path_and_sends_only_dependency_inputs(
    engine: Engine, base_image: str, tmp_path: Path, case: str
) -> None:
    """The whole pipeline (`pydeploy build` without the CLI) with a recording Engine:
    every container it creates has engine-side volumes only; the install container got
    the dependency inputs (filtered, modes kept) and the CA as files."""
    if case == "workspace member":
        root = tmp_path / "monorepo"
        ignore = shutil.ignore_patterns("__pycache__", ".venv")
        shutil.copytree(EXAMPLES / "monorepo", root, ignore=ignore)
        project, package = root / "services" / "api", root / "libs" / "shared"
        changed, comment = package / "src" / "shared" / "__init__.py", "\n# {}\n"
        needed = {"uv.lock", "pyproject.toml", "services/web/pyproject.toml"}
        needed |= {"services/api/pyproject.toml", "libs/shared/src/shared/__init__.py"}
        not_needed = {"README.md", "services/api/main.py", "services/web/app.py"}
        interface = "asgi"
    else:
        project = root = copy_fixture("cext_app", tmp_path)
        package = project / "vendor" / "fastsum"
        changed, comment = package / "fastsum.c", "\n/* {} */\n"
        needed = {"requirements.txt", "app.py", "vendor/fastsum/fastsum.c"}
        not_needed = set()
        interface = "wsgi"
    # New content in the local package: a dependency set of its own, so it installs.
    changed.write_text(
        changed.read_text(encoding="utf-8") + comment.format(uuid.uuid4().hex), encoding="utf-8"
    )
    junk = plant_junk(package)

    plan = plan_for(project, base_image)
    # The full builder exists, so the build uses it directly: one install container.
    venv_volume(engine, plan, ensure_full_builder(engine, plan, Progress()))  # for cleanup
    recorder = RecordingEngine(docker.from_env())
    try:
        result = build.build(
            plan,
            recorder,
            build.BuildOptions(outputs=(publish.Output("oci", tmp_path / "oci"),)),
            Progress(),
        )
    finally:
        recorder.cleanup()
        recorder.close()
    assert (result.interface, result.dependencies_cached) == (interface, False)

    assert recorder.seen
    assert [(s.command, host_mounts(s)) for s in recorder.seen if host_mounts(s)] == []
    (install,) = [s for s in recorder.seen if s.inputs is not None]
    sent = {name.removeprefix("src/"): mode for name, mode in (install.inputs or {}).items()}
    rel = package.relative_to(root).as_posix()
    assert needed <= set(sent), sorted(sent)
    assert not not_needed & set(sent)
    assert not [name for name in sent if name.startswith(tuple(f"{rel}/{j}" for j in junk))]
    assert sent[f"{rel}/tools/gen.sh"] & 0o7777 == 0o750, "modes as on the host"
    builders = [s for s in recorder.seen if s.argv[2:3] in (["install"], ["project"])]
    ca = host_ca(project)
    for seen in builders:
        assert seen.ca == ca, "the CA reached the builder containers as a file"
        env = dict(e.split("=", 1) for e in seen.inspect["Config"]["Env"] or [])
        assert {env.get(var) for var in CA_ENV_VARS} == {wheels.CA_TARGET}
    # The app check runs in the runtime image, which never sees the CA.
    (check,) = [s for s in recorder.seen if s.argv[3:4] == ["check-app"]]
    env = dict(e.split("=", 1) for e in check.inspect["Config"]["Env"] or [])
    assert check.ca is None
    assert not {var for var in CA_ENV_VARS if var in env}
