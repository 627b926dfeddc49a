"""Build-speed and image-size benchmark: pydeploy against the seed article's multi-stage
Dockerfile (baseline/Dockerfile) built with `docker build` on the same base, in one run.

    python tests/benchmarks/bench_build.py [--example fastapi-app] [--runs N]

Each run measures, on both sides and in alternating order: a cold build (empty caches),
a no-change rebuild, a code-only rebuild (one line appended to the app module) and a
rebuild after adding one dependency; plus the image size each adds on top of the base.
It prints one table with the median of the runs, the pydeploy / Dockerfile ratios, the
issue's targets with PASS/MISS, and where pydeploy's time went. A benchmark, not a test:
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
# Steps in the order a run takes them, with the targets (pydeploy / Dockerfile).
STEPS = ("cold", "no-change", "code-only", "dependency")
LABELS = {
    "cold": "cold build (empty caches)",
    "no-change": "no-change rebuild",
    "code-only": "code-only rebuild",
    "dependency": f"dependency added ({ADDED_DEPENDENCY})",
    "size": "size added to base",
}
TARGETS = {"cold": 0.7, "no-change": 1.0, "code-only": 1.0, "dependency": 0.3, "size": 1.0}
COLD_TIMEOUT, WARM_TIMEOUT = 1500.0, 900.0


SIDES = ("pydeploy", "dockerfile")


@dataclass
class Sample:
    """One run's numbers, and what pydeploy said about its own time."""

    seconds: dict[str, dict[str, float]] = field(default_factory=lambda: {s: {} for s in SIDES})
    added: dict[str, int] = field(default_factory=dict)  # side -> bytes on top of the base
    timings: dict[str, dict[str, float]] = field(default_factory=dict)  # step -> --json timings
    progress: dict[str, list[str]] = field(default_factory=dict)  # step -> pydeploy's stderr
    own_layers: dict[str, int] = field(default_factory=dict)  # role -> uncompressed bytes
    warm: list[str] = field(default_factory=list)  # caches the "cold" pydeploy build reused


class Bench:
    """Owns the scratch projects, the docker objects and pydeploy's caches of one run of
    the script."""

    def __init__(self, example: str, base: str, work: Path) -> None:
        self.example, self.base, self.work = example, base, work
        self.source = bl.EXAMPLES / example
        self.handwritten = bl.HANDWRITTEN[example]
        self.baseline = bl.Owned()  # the Dockerfile's images (its only build cache)
        self.pydeploy = bl.Owned()  # images pydeploy loaded into the engine
        self.aux = bl.Owned()  # the CA image, smoke-test containers
        self.ca_image = self._ca_image()
        self.base_size = bl.image_size(base)
        self.cache_dir = work / "cache"
        self.builds = 0

    # -- projects ----------------------------------------------------------------------

    def fresh_projects(self) -> tuple[Path, Path]:
        """Two pristine copies of the example: as is for pydeploy, and with the
        Dockerfile and a requirements.txt for the baseline (which it copies into its
        image, as the article's `COPY . .` does)."""
        pyd, dkr = self.work / "pydeploy" / self.example, self.work / "dockerfile" / self.example
        for path in (pyd, dkr):
            shutil.rmtree(path, ignore_errors=True)
            shutil.copytree(self.source, path, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(bl.BASELINE_DIR / "Dockerfile", dkr / "Dockerfile")
        deps = bl.project_table(dkr)["project"].get("dependencies", [])
        requirements = [*deps, *self.handwritten.server_packages]
        (dkr / "requirements.txt").write_text("\n".join(requirements) + "\n")
        return pyd, dkr

    def _ca_image(self) -> str:
        """A one-file image holding the host CA bundle: the classic builder has no build
        secrets, and this keeps the CA out of the build context the final stage copies."""
        tar_path = self.work / "hostca.tar"
        with tarfile.open(tar_path, "w") as tar:
            tar.add(bl.HOST_CA, arcname="host-ca.crt")
        ref = self.aux.image(f"{bl.PREFIX}-hostca:{self.work.name}")
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

    def empty_caches(self, side: str) -> None:
        """Cold start, done right before that side's cold build so nothing refills the
        caches in between. Docker: the baseline's images are its classic-builder cache;
        `--no-cache` covers anything else, and the BuildKit cache is pruned for good
        measure. pydeploy: a fresh PYDEPLOY_CACHE_DIR, no uv/venv volumes, no builder
        images, and none of its images in the engine (it skips layers the engine has)."""
        if side == "dockerfile":
            self._leftovers(self.baseline.cleanup())
            bl.docker("builder", "prune", "-af", timeout=300)
        else:
            self._leftovers(self.pydeploy.cleanup())
            progress("emptying pydeploy's caches (after 10 s without another build using them)")
            bl.clear_pydeploy_engine_caches()
            shutil.rmtree(self.cache_dir, ignore_errors=True)
            self.cache_dir.mkdir()

    def smoke(self, dockerfile_tag: str, pydeploy_tag: str) -> None:
        """Both images must serve the example, or the comparison means nothing."""
        port = bl.free_port()
        name = f"{bl.PREFIX}-smoke-{self.work.name}"
        bl.start_container(
            self.aux, dockerfile_tag, name=f"{name}-dockerfile", port=port,
            command=["gunicorn", "--bind", f"127.0.0.1:{port}", *self.handwritten.gunicorn_args],
        )  # fmt: skip
        bl.docker("rm", "-f", f"{name}-dockerfile")
        bl.start_container(self.aux, pydeploy_tag, name=f"{name}-pydeploy", port=port)
        bl.docker("rm", "-f", f"{name}-pydeploy")

    def cleanup(self) -> None:
        self._leftovers(self.aux.cleanup() + self.pydeploy.cleanup() + self.baseline.cleanup())
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
        pyd_dir, dkr_dir = self.fresh_projects()
        edits: dict[str, Callable[[], None]] = {
            "code-only": lambda: self._edit_code(pyd_dir, dkr_dir),
            "dependency": lambda: self._add_dependency(pyd_dir, dkr_dir),
        }
        # Alternate which side goes first, so neither always warms the PyPI proxy.
        order = SIDES if index % 2 else SIDES[::-1]
        tags: dict[str, str] = {}
        for step in STEPS:
            if step in edits:
                edits[step]()
            for side in order:
                if step == "cold":
                    self.empty_caches(side)
                progress(f"run {index + 1}: {step}: {side} ...")
                if side == "dockerfile":
                    seconds, tags[side] = self.build_dockerfile(dkr_dir, step)
                else:
                    result, tags[side] = self.build_pydeploy(pyd_dir, step)
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
                    self.smoke(tags["dockerfile"], tags["pydeploy"])
        return sample

    def _edit_code(self, *projects: Path) -> None:
        for project in projects:
            with bl.app_module_file(project).open("a") as fh:
                fh.write("\nBENCH_EDIT = 1  # a code-only change made by bench_build.py\n")

    def _add_dependency(self, pyd_dir: Path, dkr_dir: Path) -> None:
        bl.add_dependency(pyd_dir, ADDED_DEPENDENCY)
        bl.add_dependency(dkr_dir, ADDED_DEPENDENCY)
        with (dkr_dir / "requirements.txt").open("a") as fh:
            fh.write(ADDED_DEPENDENCY + "\n")


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
        f"docker build: classic builder (DOCKER_BUILDKIT=0); BuildKit: {buildkit}",
        "each step builds both sides back to back; odd runs build the Dockerfile first",
        "",
        f"{'step':<34} {'pydeploy':>10} {'Dockerfile':>11} {'ratio':>7} {'target':>8}  result",
    ]
    # A cold pydeploy build that found a cache filled (by another build on the engine) is
    # not a cold number: the cold row uses the clean runs only, when there are any.
    clean = [s for s in samples if not s.warm]
    missed = []
    for step in STEPS:
        rows = (clean or samples) if step == "cold" else samples
        pyd, dkr = (med(s.seconds[side][step] for s in rows) for side in SIDES)
        ratio = pyd / dkr
        result = verdict(ratio, TARGETS[step])
        if step == "cold" and not clean:
            result += " (NOT COLD, see below)"
        elif step == "cold" and len(clean) < len(samples):
            result += f" (median of the {len(clean)} clean run(s))"
        if not result.startswith("PASS"):
            missed.append(step)
        lines.append(
            f"{LABELS[step]:<34} {pyd:>8.1f} s {dkr:>9.1f} s {ratio:>6.2f}x"
            f" {'<= ' + format(TARGETS[step], '.1f') + 'x':>8}  {result}"
        )
    pyd_size, dkr_size = (med(s.added[side] for s in samples) for side in SIDES)
    ratio = pyd_size / dkr_size
    lines += [
        (
            f"{LABELS['size']:<34} {pyd_size / 1e6:>7.2f} MB {dkr_size / 1e6:>8.2f} MB"
            f" {ratio:>6.3f}x {'<= 1.0x':>8}  {verdict(ratio, TARGETS['size'])}"
        ),
        "",
        "each run, pydeploy / Dockerfile seconds:",
        *(
            f"  {LABELS[step]:<36} "
            + ", ".join(
                f"{s.seconds['pydeploy'][step]:.1f} / {s.seconds['dockerfile'][step]:.1f}"
                for s in samples
            )
            for step in STEPS
        ),
        "",
        "size added = `docker image inspect` Size of the image minus that of the base (the",
        "engine's unpacked layer sizes, same measure on both sides).",
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
    proc = bl.run(["docker", "buildx", "version"], timeout=30, check=False)
    if proc.returncode == 0:
        return f"available ({proc.stdout.strip()}) but not used: the baseline needs none of it"
    return "unavailable here (the docker CLI has no buildx component)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--example", default="fastapi-app", choices=sorted(bl.HANDWRITTEN))
    parser.add_argument("--runs", type=int, default=1, help="repetitions; medians are shown")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    bl.sigterm_as_interrupt()
    base = bl.base_image()
    buildkit = buildkit_state()
    load_before = bl.host_load()
    with tempfile.TemporaryDirectory(prefix="pydeploy-bench-build-") as tmp:
        bench = Bench(args.example, base, Path(tmp))
        try:
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
