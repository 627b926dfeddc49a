"""Build-speed and image-size benchmark: pydeploy against two hand-written Dockerfiles on
the same base, in one run: uv's recommended multi-stage Dockerfile built with BuildKit
(baseline/Dockerfile.uv, the main baseline) and the seed article's (baseline/Dockerfile,
classic builder and pip).

    python tests/benchmarks/bench_build.py [--example fastapi-app] [--runs N]

Each run measures, on every side and in rotating order: a cold build (empty caches),
a no-change rebuild, a code-only rebuild (one line appended to the app module) and a
rebuild after adding one dependency; plus the image size each adds on top of the base.
Then, for pydeploy and uv + BuildKit, rebuild-and-push rows against a private local
docker-registry per side (BuildKit: the build, then `docker push`): a code-only change
and a second added dependency, with the bytes each push uploaded (the registry's blob
storage growth).
Then pydeploy with and without an engine (issue 15): a cold build and a code-only rebuild,
both pushing to a local registry, the engine-free one reading its base from there.
Then a fresh CI runner (issue 16; `--fresh-only` runs these rows alone): a code-only change
and an added dependency, each built and pushed from empty caches to the registry holding
the previous build, by pydeploy with and without its registry cache and by uv + BuildKit
with and without `--cache-from` the previous image.
It prints one table with the median of the runs, the pydeploy / baseline ratios, the
issues' targets with PASS/MISS, and where pydeploy's time went. A benchmark, not a test:
it exits 0 whether targets pass or miss, non-zero only when something failed to build.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import benchlib as bl

ADDED_DEPENDENCY = "python-dateutil"
PUSHED_DEPENDENCY = "itsdangerous"  # added before the dependency push row
FRESH_DEPENDENCY = "python-multipart"  # added before the fresh-runner dependency row
# Steps in the order a run takes them, with the targets (pydeploy / Dockerfile).
STEPS = ("cold", "no-change", "code-only", "dependency")
LABELS = {
    "cold": "cold build (empty caches)",
    "no-change": "no-change rebuild",
    "code-only": "code-only rebuild",
    "dependency": f"dependency added ({ADDED_DEPENDENCY})",
    "size": "size added to base",
}
# pydeploy / baseline targets: issue 14's against uv + BuildKit, issue 4's against the seed.
TARGETS = {
    "uv": {"cold": 1.0, "no-change": 1.0, "code-only": 1.0, "dependency": 1.0, "size": 1.0},
    "dockerfile": {"cold": 0.7, "no-change": 1.0, "code-only": 1.0, "dependency": 0.3,
                   "size": 1.0},
}  # fmt: skip
BASELINES = {"uv": "uv + BuildKit", "dockerfile": "seed Dockerfile"}
# Rebuild and push, pydeploy / uv + BuildKit (issue 14's registry targets).
PUSH_STEPS = ("code-only push", "dependency push")
PUSH_LABELS = {
    "code-only push": "code-only rebuild + push",
    "dependency push": f"dependency added + push ({PUSHED_DEPENDENCY})",
}
PUSH_TARGET = 0.5
# Issue 15: the build without an engine against the engine path, both pushing to a local
# registry from empty caches, then after a code-only change.
ENGINE_FREE_STEPS = ("cold push", "code-only push")
ENGINE_FREE_LABELS = {"cold push": "cold build + push", "code-only push": "code-only + push"}
ENGINE_FREE_SIDES = ("engine", "no engine")
UNREACHABLE_ENGINE = "unix:///nonexistent/pydeploy-bench/docker.sock"
PUSH_SIDES = ("pydeploy", "uv")
# Issue 16: a fresh CI runner (empty engine caches and host cache) rebuilding and pushing
# to the registry that holds the previous build: pydeploy with its registry cache (the
# push repository, the default) and without (`cache = false`); uv + BuildKit with
# `--cache-from` the previous image (inline cache: what BuildKit in the 20.10 CLI offers
# without buildx) and without.
FRESH_STEPS = ("fresh code-only", "fresh dependency")
FRESH_LABELS = {
    "fresh code-only": "code-only + push",
    "fresh dependency": f"dependency + push ({FRESH_DEPENDENCY})",
}
FRESH_SIDES = ("pydeploy cache", "pydeploy", "uv cache-from", "uv")
COLD_TIMEOUT, WARM_TIMEOUT = 1500.0, 900.0
# The docker CLI from Debian's docker.io (20.10) has BuildKit built in; the newer CLI first
# on PATH has no buildx plugin and would fall back to the classic builder.
BUILDKIT_CLI = "/usr/bin/docker"
UV_VERSION = "0.13.9"  # the version .ci/test bootstraps and the builder containers use


SIDES = ("pydeploy", "uv", "dockerfile")


@dataclass
class Sample:
    """One run's numbers, and what pydeploy said about its own time."""

    seconds: dict[str, dict[str, float]] = field(default_factory=lambda: {s: {} for s in SIDES})
    added: dict[str, int] = field(default_factory=dict)  # side -> bytes on top of the base
    timings: dict[str, dict[str, float]] = field(default_factory=dict)  # step -> --json timings
    progress: dict[str, list[str]] = field(default_factory=dict)  # step -> pydeploy's stderr
    own_layers: dict[str, int] = field(default_factory=dict)  # role -> uncompressed bytes
    warm: list[str] = field(default_factory=list)  # caches the "cold" pydeploy build reused
    # push step -> side -> (seconds, bytes uploaded)
    pushes: dict[str, dict[str, tuple[float, int]]] = field(default_factory=dict)
    # engine-free step -> "engine" / "no engine" -> seconds
    engine_free: dict[str, dict[str, float]] = field(default_factory=dict)
    # fresh-runner step -> FRESH_SIDES -> seconds
    fresh: dict[str, dict[str, float]] = field(default_factory=dict)


class Bench:
    """Owns the scratch projects, the docker objects and pydeploy's caches of one run of
    the script."""

    def __init__(self, example: str, base: str, work: Path) -> None:
        self.example, self.base, self.work = example, base, work
        self.source = bl.EXAMPLES / example
        self.handwritten = bl.HANDWRITTEN[example]
        self.baseline = bl.Owned()  # the seed Dockerfile's images (its only build cache)
        self.uv_images = bl.Owned()  # the uv Dockerfile's tagged images (cache: BuildKit's)
        self.pydeploy = bl.Owned()  # images pydeploy loaded into the engine
        self.aux = bl.Owned()  # the CA and uv images, smoke-test containers
        self.uv = bl.bootstrapped_uv(UV_VERSION)  # first: it may fail, creating nothing
        self.ca_image = self._one_file_image("hostca", bl.HOST_CA, "host-ca.crt")
        self.uv_image = self._one_file_image("uv", self.uv, "uv")
        self.base_size = bl.image_size(base)
        self.cache_dir = work / "cache"
        self.builds = 0

    # -- projects ----------------------------------------------------------------------

    def fresh_projects(self) -> dict[str, Path]:
        """Pristine copies of the example, one per side: as is for pydeploy; for the uv
        Dockerfile with the servers added to its dependencies and a uv.lock (`uv lock`
        here, untimed: a uv user commits the lock); for the seed Dockerfile with the
        Dockerfile and a requirements.txt (which it copies into its image, as the
        article's `COPY . .` does)."""
        dirs = {side: self.work / side / self.example for side in SIDES}
        for path in dirs.values():
            shutil.rmtree(path, ignore_errors=True)
            shutil.copytree(self.source, path, ignore=shutil.ignore_patterns("__pycache__"))
        dkr = dirs["dockerfile"]
        shutil.copy2(bl.BASELINE_DIR / "Dockerfile", dkr / "Dockerfile")
        deps = bl.project_table(dkr)["project"].get("dependencies", [])
        requirements = [*deps, *self.handwritten.server_packages]
        (dkr / "requirements.txt").write_text("\n".join(requirements) + "\n")
        uvp = dirs["uv"]
        for package in self.handwritten.server_packages:
            bl.add_dependency(uvp, package)
        (uvp / ".dockerignore").write_text(".venv\n**/__pycache__\n")
        bl.uv_lock(self.uv, uvp)
        return dirs

    def _one_file_image(self, name: str, source: Path, arcname: str) -> str:
        """A local image holding one file at its root: the host CA bundle for the seed
        Dockerfile (the classic builder has no build secrets, and this keeps the CA out
        of the context its final stage copies), the uv binary for the uv Dockerfile (as
        the published uv image would)."""
        tar_path = self.work / f"{name}.tar"
        with tarfile.open(tar_path, "w") as tar:
            tar.add(source, arcname=arcname)
        ref = self.aux.image(f"{bl.PREFIX}-{name}:{self.work.name}")
        bl.docker("import", str(tar_path), ref)
        return str(ref)

    # -- builds ------------------------------------------------------------------------

    def _tag(self, side: str, step: str) -> str:
        self.builds += 1
        return f"{bl.PREFIX}-{side}/{self.example}:{self.builds}-{step}"

    def build_dockerfile(self, context: Path, step: str) -> tuple[float, str]:
        """`docker build` with the classic builder; every image it creates (the tagged
        one and the intermediates that are its cache) is recorded for cleanup."""
        tag = self._tag("dockerfile", step)
        base_id = bl.docker("image", "inspect", "--format", "{{.Id}}", self.base).strip()
        ca_id = bl.docker("image", "inspect", "--format", "{{.Id}}", self.ca_image).strip()
        argv = ["docker", "build", "--network", "host", "--build-arg", f"BASE={self.base}",
                "--build-arg", f"CA_IMAGE={self.ca_image}", "-t", tag]  # fmt: skip
        if step == "cold":
            argv.append("--no-cache")
        start = time.monotonic()
        proc = bl.run(
            [*argv, str(context)],
            timeout=COLD_TIMEOUT if step == "cold" else WARM_TIMEOUT,
            env={"DOCKER_BUILDKIT": "0"},
            what=f"docker build ({step})",
        )
        seconds = time.monotonic() - start
        # The classic builder prints each step's image as " ---> <short id>"; the FROM
        # steps print the base and the CA image, which are not ours to remove.
        step_images = re.findall(r"^ ---> ([0-9a-f]{12})$", proc.stdout, re.MULTILINE)
        for short_id in step_images:
            if not any(ref.startswith(f"sha256:{short_id}") for ref in (base_id, ca_id)):
                self.baseline.image(short_id)
        self.baseline.image(tag)
        return seconds, tag

    def build_uv(
        self, context: Path, step: str, tag: str | None = None, extra: list[str] | None = None
    ) -> tuple[float, str]:
        """The uv Dockerfile with BuildKit; its cache is BuildKit's (layers and the uv
        cache mount), emptied for the cold build by `docker builder prune -af`."""
        tag = self.uv_images.image(tag or self._tag("uv", step))
        argv = [BUILDKIT_CLI, "build", "--network", "host", "--secret", f"id=ca,src={bl.HOST_CA}",
                "--build-arg", f"BASE={self.base}", "--build-arg", f"UV_IMAGE={self.uv_image}",
                "-f", str(bl.BASELINE_DIR / "Dockerfile.uv"), "-t", tag]  # fmt: skip
        argv += extra or []
        if step == "cold":
            argv.append("--no-cache")
        start = time.monotonic()
        bl.run(
            [*argv, str(context)],
            timeout=COLD_TIMEOUT if step == "cold" else WARM_TIMEOUT,
            env={"DOCKER_BUILDKIT": "1"},
            what=f"BuildKit build of Dockerfile.uv ({step})",
        )
        return time.monotonic() - start, tag

    def build_pydeploy(self, project: Path, step: str) -> tuple[bl.PydeployBuild, str]:
        tag = self._tag("pydeploy", step)
        result = bl.pydeploy_build(
            project,
            base=self.base,
            tag=tag,
            cache_dir=self.cache_dir,
            timeout=COLD_TIMEOUT if step == "cold" else WARM_TIMEOUT,
        )
        self.pydeploy.image(tag)
        return result, tag

    def push(self, side: str, project: Path, address: str, step: str) -> float:
        """Rebuild and push to `address`: pydeploy pushes itself (no engine load); the uv
        side builds with BuildKit, then `docker push`es. Seconds for both together."""
        self.builds += 1
        repository = f"{address}/{bl.PREFIX}-{side}/{self.example}:{self.builds}-push"
        if side == "pydeploy":
            result = bl.pydeploy_build(
                project, base=self.base, tag=repository, cache_dir=self.cache_dir,
                timeout=WARM_TIMEOUT, output="registry",
            )  # fmt: skip
            return result.seconds
        seconds, tag = self.build_uv(project, step, tag=repository)
        start = time.monotonic()
        bl.docker("push", tag, timeout=WARM_TIMEOUT)
        return seconds + time.monotonic() - start

    def push_rows(
        self, dirs: dict[str, Path], index: int
    ) -> dict[str, dict[str, tuple[float, int]]]:
        """The registry rows: each side's current image pushed once (untimed, so the
        registry holds what the change builds on), then each change rebuilt and pushed."""
        registries = {
            side: bl.LocalRegistry(self.work / f"registry-{index}-{side}") for side in PUSH_SIDES
        }
        rows: dict[str, dict[str, tuple[float, int]]] = {step: {} for step in PUSH_STEPS}
        try:
            addresses = {side: registry.start() for side, registry in registries.items()}
            for side in PUSH_SIDES:
                self.push(side, dirs[side], addresses[side], "seed")
            for step in PUSH_STEPS:
                if step == "code-only push":
                    self._edit_code(*(dirs[side] for side in PUSH_SIDES))
                else:
                    for side in PUSH_SIDES:
                        bl.add_dependency(dirs[side], PUSHED_DEPENDENCY)
                    bl.uv_lock(self.uv, dirs["uv"])
                for side in PUSH_SIDES:
                    progress(f"run {index + 1}: {step}: {side} ...")
                    before = registries[side].stored_bytes()
                    seconds = self.push(side, dirs[side], addresses[side], step)
                    uploaded = registries[side].stored_bytes() - before
                    rows[step][side] = (seconds, uploaded)
                    progress(f"run {index + 1}: {step}: {side} {seconds:.1f} s, {uploaded} B")
        finally:
            for registry in registries.values():
                registry.stop()
        return rows

    def empty_caches(self, side: str) -> None:
        """Cold start, done right before that side's cold build so nothing refills the
        caches in between. Seed Dockerfile: its images are its classic-builder cache,
        `--no-cache` covers anything else. uv: BuildKit's cache (layers and the uv cache
        mount, which `--no-cache` keeps) is pruned; only here, or the seed's cold build
        would empty it between the uv side's cold build and its rebuilds. pydeploy: a
        fresh PYDEPLOY_CACHE_DIR, no uv/venv volumes, no builder images, and none of its
        images in the engine (it skips layers the engine has)."""
        if side == "dockerfile":
            self._leftovers(self.baseline.cleanup())
        elif side == "uv":
            self._leftovers(self.uv_images.cleanup())
            bl.docker("builder", "prune", "-af", timeout=300)
        else:
            self._leftovers(self.pydeploy.cleanup())
            progress("emptying pydeploy's caches (after 10 s without another build using them)")
            bl.clear_pydeploy_engine_caches()
            shutil.rmtree(self.cache_dir, ignore_errors=True)
            self.cache_dir.mkdir()

    def smoke(self, tags: dict[str, str]) -> None:
        """Every image must serve the example, or the comparison means nothing."""
        port = bl.free_port()
        name = f"{bl.PREFIX}-smoke-{self.work.name}"
        for side in ("dockerfile", "uv"):
            bl.start_container(
                self.aux, tags[side], name=f"{name}-{side}", port=port,
                command=["gunicorn", "--bind", f"127.0.0.1:{port}",
                         *self.handwritten.gunicorn_args],
            )  # fmt: skip
            bl.docker("rm", "-f", f"{name}-{side}")
        bl.start_container(self.aux, tags["pydeploy"], name=f"{name}-pydeploy", port=port)
        bl.docker("rm", "-f", f"{name}-pydeploy")

    def cleanup(self) -> None:
        self._leftovers(
            self.aux.cleanup()
            + self.pydeploy.cleanup()
            + self.baseline.cleanup()
            + self.uv_images.cleanup()
        )
        # BuildKit's cache (layers, the uv cache mount) is this benchmark's alone.
        bl.docker("builder", "prune", "-af", timeout=300, check=False)
        volumes, images = bl.pydeploy_cache_objects()
        if volumes or images:
            print(
                "note: pydeploy's caches are left in the engine for the next build: "
                + ", ".join(volumes + images),
                file=sys.stderr,
            )

    @staticmethod
    def _leftovers(failed: list[str]) -> None:
        if failed:
            print(f"warning: could not remove {', '.join(failed)}", file=sys.stderr)

    # -- one run -----------------------------------------------------------------------

    def run_once(self, index: int, *, smoke: bool) -> Sample:
        sample = Sample()
        dirs = self.fresh_projects()
        edits: dict[str, Callable[[], None]] = {
            "code-only": lambda: self._edit_code(*dirs.values()),
            "dependency": lambda: self._add_dependency(dirs),
        }
        # Rotate which side goes first, so none always warms the PyPI proxy.
        order = SIDES[index % len(SIDES) :] + SIDES[: index % len(SIDES)]
        tags: dict[str, str] = {}
        for step in STEPS:
            if step in edits:
                edits[step]()
            for side in order:
                if step == "cold":
                    self.empty_caches(side)
                progress(f"run {index + 1}: {step}: {side} ...")
                if side == "dockerfile":
                    seconds, tags[side] = self.build_dockerfile(dirs[side], step)
                elif side == "uv":
                    seconds, tags[side] = self.build_uv(dirs[side], step)
                else:
                    result, tags[side] = self.build_pydeploy(dirs[side], step)
                    seconds = result.seconds
                    sample.timings[step] = result.timings
                    sample.progress[step] = result.progress
                    if step == "cold":
                        sample.warm = result.warm_caches()
                        sample.own_layers = {
                            str(la["role"]): int(la["uncompressed_size"])
                            for la in result.own_layers()
                        }
                sample.seconds[side][step] = seconds
                progress(f"run {index + 1}: {step}: {side} {seconds:.1f} s")
            if step == "cold":
                sample.added = {s: bl.image_size(tags[s]) - self.base_size for s in SIDES}
                if smoke:
                    self.smoke(tags)
        sample.pushes = self.push_rows(dirs, index)
        sample.engine_free = self.engine_free_rows(index)
        sample.fresh = self.fresh_runner_rows(index)
        return sample

    def fresh_runner_rows(self, index: int) -> dict[str, dict[str, float]]:
        """Each side's project built and pushed once (untimed: the registry holds the
        previous build, and pydeploy's record of its layers), then each change built and
        pushed by a fresh runner: pydeploy's engine caches and host cache emptied,
        BuildKit's cache pruned and the uv images removed, right before each build."""
        registry = bl.LocalRegistry(self.work / f"registry-{index}-fresh")
        rows: dict[str, dict[str, float]] = {step: {} for step in FRESH_STEPS}
        try:
            address = registry.start()
            projects = {side: self._fresh_project(side) for side in FRESH_SIDES}
            latest = {side: self._fresh_push(side, projects[side], address) for side in FRESH_SIDES}
            for step in FRESH_STEPS:
                if step == "fresh code-only":
                    self._edit_code(*projects.values())
                else:
                    for side in FRESH_SIDES:
                        bl.add_dependency(projects[side], FRESH_DEPENDENCY)
                    for side in ("uv cache-from", "uv"):
                        bl.uv_lock(self.uv, projects[side])
                for side in FRESH_SIDES:
                    self.empty_caches("uv" if side.startswith("uv") else "pydeploy")
                    progress(f"run {index + 1}: fresh runner, {step}: {side} ...")
                    start = time.monotonic()
                    latest[side] = self._fresh_push(side, projects[side], address, latest[side])
                    rows[step][side] = time.monotonic() - start
                    progress(f"run {index + 1}: {step}: {side} {rows[step][side]:.1f} s")
        finally:
            registry.stop()
        return rows

    def _fresh_project(self, side: str) -> Path:
        project = self.work / "fresh" / side.replace(" ", "-") / self.example
        shutil.rmtree(project, ignore_errors=True)
        shutil.copytree(self.source, project, ignore=shutil.ignore_patterns("__pycache__"))
        if side == "pydeploy":  # the registry cache off; everything else the same
            pyproject = project / "pyproject.toml"
            text = pyproject.read_text(encoding="utf-8")
            pyproject.write_text(
                text.replace("[tool.pydeploy]\n", "[tool.pydeploy]\ncache = false\n", 1)
            )
        elif side.startswith("uv"):
            for package in self.handwritten.server_packages:
                bl.add_dependency(project, package)
            (project / ".dockerignore").write_text(".venv\n**/__pycache__\n")
            bl.uv_lock(self.uv, project)
        return project

    def _fresh_push(self, side: str, project: Path, address: str, previous: str = "") -> str:
        """Build and push; the reference pushed. pydeploy pushes itself; BuildKit builds
        (with --cache-from the previous image and the inline cache on that side), then
        `docker push`."""
        self.builds += 1
        name = side.replace(" ", "-")
        ref = f"{address}/{bl.PREFIX}-fresh-{name}/{self.example}:{self.builds}"
        if side.startswith("pydeploy"):
            bl.pydeploy_build(
                project, base=self.base, tag=ref, cache_dir=self.cache_dir,
                timeout=COLD_TIMEOUT, output="registry",
            )  # fmt: skip
            return ref
        extra = ["--build-arg", "BUILDKIT_INLINE_CACHE=1"] if side == "uv cache-from" else []
        if previous and side == "uv cache-from":
            extra += ["--cache-from", previous]
        self.build_uv(project, "fresh", tag=ref, extra=extra)
        bl.docker("push", ref, timeout=WARM_TIMEOUT)
        return ref

    def engine_free_rows(self, index: int) -> dict[str, dict[str, float]]:
        """pydeploy with and without an engine, each from empty caches (the engine's and
        the host cache; without an engine also uv's own cache), pushing to one local
        registry that also serves the base (pushed there untimed: without an engine, a
        base comes from a registry), then a code-only change on each."""
        registry = bl.LocalRegistry(self.work / f"registry-{index}-engine-free")
        rows: dict[str, dict[str, float]] = {step: {} for step in ENGINE_FREE_STEPS}
        try:
            address = registry.start()
            base_ref = f"{address}/{bl.PREFIX}-base:bench"
            bl.run(
                ["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                 f"docker-daemon:{self.base}", f"docker://{base_ref}"],
                timeout=600, what="skopeo copy of the base into the local registry",
            )  # fmt: skip
            for side in ENGINE_FREE_SIDES:
                project = self.work / "engine-free" / side.replace(" ", "-") / self.example
                shutil.rmtree(project, ignore_errors=True)
                ignore = shutil.ignore_patterns("__pycache__")
                shutil.copytree(self.source, project, ignore=ignore)
                cache = self.work / f"engine-free-cache-{index}-{side.replace(' ', '-')}"
                env: dict[str, str] = {}
                base = self.base
                if side == "engine":
                    self.empty_caches("pydeploy")
                else:
                    env = {"DOCKER_HOST": UNREACHABLE_ENGINE,
                           "UV_CACHE_DIR": str(self.work / f"uv-cache-{index}")}  # fmt: skip
                    base = base_ref
                for step in ENGINE_FREE_STEPS:
                    if step == "code-only push":
                        self._edit_code(project)
                    self.builds += 1
                    tag = f"{address}/{bl.PREFIX}-{side.replace(' ', '-')}/app:{self.builds}"
                    progress(f"run {index + 1}: {step}: pydeploy, {side} ...")
                    result = bl.pydeploy_build(
                        project, base=base, tag=tag, cache_dir=cache, timeout=COLD_TIMEOUT,
                        output="registry", env=env,
                    )  # fmt: skip
                    rows[step][side] = result.seconds
                    progress(f"run {index + 1}: {step}: {side} {result.seconds:.1f} s")
        finally:
            registry.stop()
        return rows

    def _edit_code(self, *projects: Path) -> None:
        for project in projects:
            with bl.app_module_file(project).open("a") as fh:
                fh.write("\nBENCH_EDIT = 1  # a code-only change made by bench_build.py\n")

    def _add_dependency(self, dirs: dict[str, Path]) -> None:
        """What each user does: edit pyproject.toml; the seed's user also edits
        requirements.txt, the uv user runs `uv lock` (untimed, as `uv add` would)."""
        for path in dirs.values():
            bl.add_dependency(path, ADDED_DEPENDENCY)
        with (dirs["dockerfile"] / "requirements.txt").open("a") as fh:
            fh.write(ADDED_DEPENDENCY + "\n")
        bl.uv_lock(self.uv, dirs["uv"])


# --- reporting ------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def verdict(ratio: float, target: float) -> str:
    return "PASS" if ratio <= target else "MISS"


def report(samples: list[Sample], *, example: str, base: str, buildkit: str) -> str:
    med = statistics.median
    lines = [
        f"pydeploy build benchmark: examples/{example}, {len(samples)} run(s), medians",
        f"base image: {base}",
        f"uv + BuildKit: baseline/Dockerfile.uv, uv {UV_VERSION}, {buildkit}",
        "seed Dockerfile: baseline/Dockerfile, classic builder (DOCKER_BUILDKIT=0), pip",
        "each step builds every side back to back; the first side rotates between runs",
        "",
        (
            f"{'step':<34} {'pydeploy':>9} {'uv+BK':>8} {'seed':>8}"
            f"  {'vs uv+BuildKit':<22}  {'vs seed Dockerfile':<22}"
        ),
    ]
    # A cold pydeploy build that found a cache filled (by another build on the engine) is
    # not a cold number: the cold row uses the clean runs only, when there are any.
    clean = [s for s in samples if not s.warm]
    missed = []
    for step in STEPS:
        rows = (clean or samples) if step == "cold" else samples
        values = {side: med(s.seconds[side][step] for s in rows) for side in SIDES}
        verdicts = []
        for baseline in BASELINES:
            ratio = values["pydeploy"] / values[baseline]
            verdicts.append(_verdict_cell(ratio, TARGETS[baseline][step]))
            if verdicts[-1].endswith("MISS") and step not in missed:
                missed.append(step)
        note = ""
        if step == "cold" and not clean:
            note = "  (NOT COLD, see below)"
        elif step == "cold" and len(clean) < len(samples):
            note = f"  (median of the {len(clean)} clean run(s))"
        lines.append(
            f"{LABELS[step]:<34} {values['pydeploy']:>7.2f} s {values['uv']:>6.2f} s"
            f" {values['dockerfile']:>6.2f} s  " + "  ".join(verdicts) + note
        )
    sizes = {side: med(s.added[side] for s in samples) for side in SIDES}
    lines += engine_free_table(samples)
    lines += fresh_table(samples)
    lines += push_table(samples)
    lines += [
        (
            f"{LABELS['size']:<34} {sizes['pydeploy'] / 1e6:>6.1f} MB {sizes['uv'] / 1e6:>5.1f} MB"
            f" {sizes['dockerfile'] / 1e6:>5.1f} MB  "
            + "  ".join(
                _verdict_cell(sizes["pydeploy"] / sizes[b], TARGETS[b]["size"]) for b in BASELINES
            )
        ),
        "",
        "each run, pydeploy / uv+BuildKit / seed seconds:",
        *(
            f"  {LABELS[step]:<36} "
            + ", ".join(
                " / ".join(f"{s.seconds[side][step]:.2f}" for side in SIDES) for s in samples
            )
            for step in STEPS
        ),
        "",
        "size added = `docker image inspect` Size of the image minus that of the base (the",
        "engine's unpacked layer sizes, same measure on every side).",
        "pydeploy's own layers (uncompressed, as it reports them): "
        + ", ".join(f"{role} {size / 1e6:.2f} MB" for role, size in samples[-1].own_layers.items()),
    ]
    for index, sample in enumerate(samples):
        if sample.warm:
            lines += [
                (
                    f"run {index + 1}: the cold pydeploy build was not cold (another pydeploy"
                    " build on this engine filled a cache after it was emptied):"
                ),
                *(f"    {line}" for line in sample.warm),
            ]
    lines += ["", *timing_table(samples[-1])]
    for step in missed:
        lines += ["", f"pydeploy's progress, {LABELS[step]} (last run):"]
        lines += [f"    {line}" for line in samples[-1].progress.get(step, [])]
    return "\n".join(lines)


def push_table(samples: list[Sample]) -> list[str]:
    """The registry rows: medians of rebuild + push seconds and of bytes uploaded."""
    med = statistics.median
    lines = [
        "",
        "rebuild + push to a local docker-registry (uv+BK: build, then `docker push`);",
        "uploaded = growth of the registry's blob storage:",
        (
            f"{'step':<34} {'pydeploy':>9} {'uv+BK':>8}  {'vs uv+BuildKit':<22}"
            "  uploaded pydeploy / uv+BK"
        ),
    ]
    for step in PUSH_STEPS:
        seconds = {side: med(s.pushes[step][side][0] for s in samples) for side in PUSH_SIDES}
        uploaded = {side: med(s.pushes[step][side][1] for s in samples) for side in PUSH_SIDES}
        lines.append(
            f"{PUSH_LABELS[step]:<34} {seconds['pydeploy']:>7.2f} s {seconds['uv']:>6.2f} s  "
            + _verdict_cell(seconds["pydeploy"] / seconds["uv"], PUSH_TARGET)
            + f"  {human_bytes(uploaded['pydeploy'])} / {human_bytes(uploaded['uv'])}"
        )
    return lines


def engine_free_table(samples: list[Sample]) -> list[str]:
    """Issue 15's row: the build without an engine, timed against the engine path."""
    med = statistics.median
    header = f"{'step':<34} {'engine':>9} {'no engine':>10}  ratio (no engine / engine)"
    lines = ["", "pydeploy without an engine vs with one (push to a local registry, same run):",
             header]  # fmt: skip
    for step in ENGINE_FREE_STEPS:
        seconds = {side: med(s.engine_free[step][side] for s in samples)
                   for side in ENGINE_FREE_SIDES}  # fmt: skip
        ratio = seconds["no engine"] / seconds["engine"]
        lines.append(
            f"{ENGINE_FREE_LABELS[step]:<34} {seconds['engine']:>7.2f} s "
            f"{seconds['no engine']:>8.2f} s  {ratio:>6.2f}x"
        )
    return lines


def fresh_table(samples: list[Sample]) -> list[str]:
    """Issue 16's rows: a fresh runner rebuilding and pushing, with and without each
    side's registry cache."""
    med = statistics.median
    lines = [
        "",
        "fresh runner (empty engine caches and host cache / BuildKit cache pruned), rebuild +",
        "push to the registry holding the previous build; pydeploy's registry cache is the",
        "push repository, BuildKit's is --cache-from the previous image (inline cache):",
        (
            f"{'step':<34} {'pd cache':>9} {'pd none':>8} {'uvBK from':>10} {'uvBK none':>10}"
            "  cache/none  vs uv+BK --cache-from"
        ),
    ]
    for step in FRESH_STEPS:
        v = {side: med(s.fresh[step][side] for s in samples) for side in FRESH_SIDES}
        lines.append(
            f"{FRESH_LABELS[step]:<34} {v['pydeploy cache']:>7.2f} s {v['pydeploy']:>6.2f} s"
            f" {v['uv cache-from']:>8.2f} s {v['uv']:>8.2f} s"
            f"  {v['pydeploy cache'] / v['pydeploy']:>9.2f}x"
            f"  {v['pydeploy cache'] / v['uv cache-from']:>6.2f}x"
        )
    return lines


def human_bytes(count: float) -> str:
    if count < 1e6:
        return f"{count / 1e3:.1f} KB"
    return f"{count / 1e6:.2f} MB"


def _verdict_cell(ratio: float, target: float) -> str:
    """`ratio (<= target) PASS|MISS`, one column wide."""
    return f"{ratio:>6.2f}x (<= {target:.1f}x) {verdict(ratio, target)}"


def timing_table(last: Sample) -> list[str]:
    """Where pydeploy's time goes in each step of the benchmark. Its --json `timings` are
    elapsed seconds at the end of each build phase (one clock), so a phase's cost is the
    difference; what the command took beyond the last phase is start-up and output."""
    phases: list[str] = []
    for step in STEPS:
        phases += [name for name in last.timings.get(step, {}) if name not in phases]
    rows = {name: [""] * len(STEPS) for name in [*phases, "(start-up, exit)", "total"]}
    for col, step in enumerate(STEPS):
        previous = 0.0
        for name, elapsed in last.timings.get(step, {}).items():
            rows[name][col] = f"{elapsed - previous:.1f}"
            previous = elapsed
        total = last.seconds["pydeploy"][step]
        rows["(start-up, exit)"][col] = f"{total - previous:.1f}"
        rows["total"][col] = f"{total:.1f}"
    header = f"{'pydeploy phase (s, last run)':<34}" + "".join(f"{s:>12}" for s in STEPS)
    body = [f"{name:<34}" + "".join(f"{v:>12}" for v in vals) for name, vals in rows.items()]
    return [header, *body]


def buildkit_state() -> str:
    """What builds the uv baseline: BuildKit inside the engine, driven by the 20.10 CLI."""
    proc = bl.run(
        [BUILDKIT_CLI, "version", "--format", "{{.Client.Version}}/{{.Server.Version}}"],
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        raise bl.BenchError(
            f"{BUILDKIT_CLI} (Debian's docker.io CLI, BuildKit built in) does not answer:"
            f" {proc.stderr.strip()}"
        )
    client, _, server = proc.stdout.strip().partition("/")
    return f"DOCKER_BUILDKIT=1 {BUILDKIT_CLI} build (CLI {client}, engine {server})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--example", default="fastapi-app", choices=sorted(bl.HANDWRITTEN))
    parser.add_argument("--runs", type=int, default=1, help="repetitions; medians are shown")
    parser.add_argument(
        "--fresh-only", action="store_true", help="only the fresh-runner rows (issue 16)"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    bl.sigterm_as_interrupt()
    bl.compile_pydeploy()
    base = bl.base_image()
    try:
        buildkit = buildkit_state()
    except bl.BenchError as exc:
        print(f"bench_build: {exc}", file=sys.stderr)
        return 1
    load_before = bl.host_load()
    with tempfile.TemporaryDirectory(prefix="pydeploy-bench-build-") as tmp:
        try:
            bench = Bench(args.example, base, Path(tmp))
        except bl.BenchError as exc:
            print(f"bench_build: {exc}", file=sys.stderr)
            return 1
        try:
            if args.fresh_only:
                fresh = [bench.fresh_runner_rows(i) for i in range(args.runs)]
                print("\n".join(fresh_table([Sample(fresh=rows) for rows in fresh])))
                return 0
            samples = [bench.run_once(i, smoke=i == 0) for i in range(args.runs)]
        except bl.BenchError as exc:
            print(f"bench_build: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("bench_build: interrupted", file=sys.stderr)
            return 130
        finally:
            progress("cleaning up")
            bench.cleanup()
    print(report(samples, example=args.example, base=base, buildkit=buildkit))
    print(f"\nhost load average (1 min): {load_before} at the start, {bl.host_load()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
