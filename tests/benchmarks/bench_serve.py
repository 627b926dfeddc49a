"""Throughput benchmark: the server command pydeploy generates against the seed article's
hand-written gunicorn command, in the same image, on the same machine, in one run.

    python tests/benchmarks/bench_serve.py [--example NAME ...] [--runs 3] [--duration 10]

For each example (default: fastapi-app and flask-app) it builds the pydeploy image (or
reuses one a previous `--keep-images` run left), then runs it with host networking,
`--cpus 2` and a free PORT three times per round: with the image's own entrypoint, with
`--entrypoint gunicorn` and the article's arguments (`--chdir /app`, same bind), and the
article's command plus the stdout access log pydeploy's default writes. Each container
gets a wrk warm-up, then one measured wrk run over loopback; the order rotates every
round. It prints the median requests/s and p99 latency of each and the pydeploy /
hand-written ratios against the targets: the default >= 0.9x the article's command (which
logs nothing) and >= 1.0x the same command with the same log (issue 14), the default with
its log off >= 1.0x (issue 5); p99 no worse in each. A benchmark, not a test: it exits 0
whether targets pass or miss.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import benchlib as bl

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
CPUS = "2"
WARMUP_SECONDS = 3


@dataclass(frozen=True)
class Wrk:
    rps: float
    p99: float  # seconds
    errors: int  # non-2xx/3xx responses plus socket errors


@dataclass(frozen=True)
class Variant:
    label: str
    entrypoint: str | None
    args: tuple[str, ...]  # `{port}` is replaced by the container's port


def parse_wrk(output: str) -> Wrk:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    if not rps or not p99:
        raise bl.BenchError(f"cannot read wrk's output:\n{output}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", output))
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket:
        errors += sum(int(n) for n in socket.groups())
    return Wrk(float(rps.group(1)), float(p99.group(1)) * UNITS[p99.group(2)], errors)


def wrk(port: int, *, seconds: int, threads: int, connections: int) -> Wrk:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
            f"http://127.0.0.1:{port}/"]  # fmt: skip
    return parse_wrk(bl.run(argv, timeout=seconds + 60, what="wrk").stdout)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class ServeBench:
    def __init__(self, args: argparse.Namespace, base: str, work: Path) -> None:
        self.args, self.base, self.work = args, base, work
        self.images = bl.Owned()  # images built by this run (unless --keep-images)
        self.containers = bl.Owned()
        self.notes: list[str] = []

    def image_for(self, example: str) -> str:
        """The pydeploy image of the example: reused when a kept one exists, else built
        from a scratch copy with pydeploy's normal caches."""
        tag = f"{bl.PREFIX}-serve/{example}:latest"
        if bl.image_exists(tag) and not self.args.rebuild:
            self.notes.append(f"{example}: reused {tag} (pass --rebuild to build it afresh)")
            return tag
        project = self.work / example
        shutil.copytree(
            bl.EXAMPLES / example, project, ignore=shutil.ignore_patterns("__pycache__")
        )
        progress(f"{example}: pydeploy build ...")
        result = bl.pydeploy_build(project, base=self.base, tag=tag)
        progress(f"{example}: built {result.image_id[:19]} in {result.seconds:.1f} s")
        if not self.args.keep_images:
            self.images.image(tag)
        return tag

    def handwritten_variant(self, example: str, image: str) -> Variant:
        """The article's command. For ASGI it uses `uvicorn.workers.UvicornWorker`, which
        uvicorn deprecated; when the image's uvicorn no longer has it, fall back to the
        maintained `uvicorn_worker.UvicornWorker` and say so."""
        args = bl.HANDWRITTEN[example].gunicorn_args
        if "uvicorn.workers.UvicornWorker" in args:
            probe = bl.run(
                ["docker", "run", "--rm", "--network", "host", "--entrypoint", "python3",
                 image, "-W", "always", "-c",
                 "import uvicorn, uvicorn.workers; print(uvicorn.__version__)"],
                timeout=120, check=False, what="uvicorn.workers probe",
            )  # fmt: skip
            gone = "No module named 'uvicorn.workers'" in probe.stderr
            if probe.returncode != 0 and not gone:
                raise bl.BenchError(f"cannot import uvicorn in {image}:\n{probe.stderr}")
            if gone:
                args = tuple(
                    "uvicorn_worker.UvicornWorker" if a == "uvicorn.workers.UvicornWorker" else a
                    for a in args
                )
                self.notes.append(
                    f"{example}: uvicorn.workers is gone from the image's uvicorn; the "
                    "hand-written command uses uvicorn_worker.UvicornWorker instead"
                )
            else:
                deprecated = "DeprecationWarning" in probe.stderr
                self.notes.append(
                    f"{example}: uvicorn {probe.stdout.strip()}: uvicorn.workers still imports"
                    + (" (with a DeprecationWarning)" if deprecated else "")
                )
        return Variant(
            "gunicorn " + " ".join(args),
            "gunicorn",
            ("--chdir", "/app", "--bind", "0.0.0.0:{port}", *args),
        )

    def measure(self, example: str, image: str, variant: Variant, first: bool) -> Wrk:
        port = bl.free_port()
        name = f"{bl.PREFIX}-serve-{example}-{port}"
        command = [a.replace("{port}", str(port)) for a in variant.args]
        try:
            bl.start_container(
                self.containers, image, name=name, port=port, command=command,
                entrypoint=variant.entrypoint, cpus=CPUS,
            )  # fmt: skip
            if first and variant.entrypoint is None:
                self._note_startup(example, name)
            load = {"threads": self.args.threads, "connections": self.args.connections}
            wrk(port, seconds=WARMUP_SECONDS, **load)
            result = wrk(port, seconds=self.args.duration, **load)
            running = bl.docker("inspect", "--format", "{{.State.Running}}", name).strip()
            if running != "true":
                raise bl.BenchError(f"{name} stopped during the measurement")
            return result
        finally:
            bl.docker("rm", "-f", name, check=False)

    def _note_startup(self, example: str, container: str) -> None:
        """The launcher prints one line with its worker decision: show it."""
        logs = bl.run(["docker", "logs", container], timeout=30, check=False)
        for line in (logs.stdout + logs.stderr).splitlines():
            if "worker" in line.lower():
                self.notes.append(f"{example}: {line.strip()}")
                return

    def cleanup(self) -> None:
        failed = self.containers.cleanup() + self.images.cleanup()
        if failed:
            print(f"warning: could not remove {', '.join(failed)}", file=sys.stderr)


QUIET_LAUNCH = (
    "import json, os, sys; c = json.load(open('/opt/pydeploy/launch.json')); "
    "c['access_log'] = False; json.dump(c, open('/tmp/launch.json', 'w')); "
    "os.execv(sys.executable, [sys.executable, '/opt/pydeploy/launcher.py', "
    "'--config', '/tmp/launch.json'])"
)


def run_example(bench: ServeBench, example: str) -> list[str]:
    image = bench.image_for(example)
    ours = Variant("pydeploy default (image entrypoint)", None, ())
    theirs = bench.handwritten_variant(example, image)
    # The article's command plus the access log pydeploy's default writes to stdout: the
    # like-for-like comparison, and what logging every request costs on its own.
    logged = Variant(
        "the same + --access-logfile -",
        theirs.entrypoint,
        (*theirs.args[:-1], "--access-logfile", "-", theirs.args[-1]),
    )
    # pydeploy's launcher with `[tool.pydeploy.server] access-log = false`, applied to the
    # same image by rewriting its launch.json at start (the launcher still execs gunicorn).
    quiet = Variant(
        "pydeploy, access-log = false",
        "/opt/venv/bin/python",
        ("-c", QUIET_LAUNCH),
    )
    variants = [ours, quiet, theirs, logged]
    results: dict[Variant, list[Wrk]] = {variant: [] for variant in variants}
    for round_ in range(bench.args.runs):
        # Rotate the order each round, so none always runs first (or last) on a warm host.
        for variant in variants[round_ % 4 :] + variants[: round_ % 4]:
            result = bench.measure(example, image, variant, first=round_ == 0)
            results[variant].append(result)
            progress(
                f"{example} round {round_ + 1}: {variant.label}: {result.rps:.0f} req/s, "
                f"p99 {result.p99 * 1e3:.1f} ms, {result.errors} errors"
            )
    rps = {v: statistics.median(r.rps for r in runs) for v, runs in results.items()}
    p99 = {v: statistics.median(r.p99 for r in runs) for v, runs in results.items()}
    rows = [
        f"{example:<12} {v.label:<56} {rps[v]:>7.0f} {p99[v] * 1e3:>8.1f} ms"
        f" {sum(r.errors for r in results[v]):>7}"
        for v in variants
    ]
    # Issue 14's targets: the default (access log on) >= 0.9x the article's command, which
    # logs nothing, and >= 1.0x the same command with the same log; p99 no worse in both.
    # Issue 5's: with the log off, >= 1.0x.
    for mine, other, floor, label in (
        (ours, theirs, 0.9, "ratio pydeploy / hand-written"),
        (ours, logged, 1.0, "ratio pydeploy / hand-written with access log"),
        (quiet, theirs, 1.0, "ratio pydeploy (access-log = false) / hand-written"),
    ):
        rps_ratio, p99_ratio = rps[mine] / rps[other], p99[mine] / p99[other]
        verdict = (
            f"   req/s {'PASS' if rps_ratio >= floor else 'MISS'} (>= {floor:.1f}x),"
            f" p99 {'PASS' if p99_ratio <= 1.0 else 'MISS'} (<= 1.0x)"
        )
        rows.append(f"{'':<12} {label:<56} {rps_ratio:>6.2f}x {p99_ratio:>9.2f}x{verdict}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--example", action="append", choices=sorted(bl.HANDWRITTEN),
        help="example to measure (repeatable; default: all)",
    )  # fmt: skip
    parser.add_argument("--runs", type=int, default=3, help="measured rounds (median shown)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--rebuild", action="store_true", help="never reuse a kept image")
    parser.add_argument("--keep-images", action="store_true", help="keep the built images")
    args = parser.parse_args()
    if min(args.runs, args.duration, args.threads, args.connections) < 1:
        parser.error("--runs, --duration, --threads and --connections must be positive")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    bl.sigterm_as_interrupt()
    bl.compile_pydeploy()
    base = bl.base_image()
    load_before = bl.host_load()
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pydeploy-bench-serve-") as tmp:
        bench = ServeBench(args, base, Path(tmp))
        try:
            for example in args.example or sorted(bl.HANDWRITTEN):
                rows += run_example(bench, example)
        except bl.BenchError as exc:
            print(f"bench_serve: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("bench_serve: interrupted", file=sys.stderr)
            return 130
        finally:
            progress("cleaning up")
            bench.cleanup()
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency over loopback;"
        f" docker run --network host --cpus {CPUS}; {WARMUP_SECONDS} s warm-up per container;"
        f" median of {args.runs} rounds; base {base}"
    )
    print(f"host load average (1 min): {load_before} at the start, {bl.host_load()} at the end")
    print(f"{'example':<12} {'command':<56} {'req/s':>7} {'p99':>11} {'errors':>7}")
    print("\n".join(rows))
    if bench.notes:
        print("\nnotes:\n" + "\n".join(f"  {note}" for note in bench.notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
